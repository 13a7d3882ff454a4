//! The device CA and the certificates it issues.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, GeneralSubtree, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, NameConstraints, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why the CA could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate authority: {0}")]
    Cert(String),
}

fn cert_err(e: impl std::fmt::Display) -> CaError {
    CaError::Cert(e.to_string())
}

/// The device's certificate authority.
pub struct DeviceCa {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    default_name: Mutex<String>,
    issued: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCa").finish_non_exhaustive()
    }
}

impl DeviceCa {
    /// Loads the CA from `dir`, creating it on first use.
    pub fn load_or_create(dir: &Path, device_name: &str) -> Result<Self, CaError> {
        use std::os::unix::fs::DirBuilderExt;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CaError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key.pem");
        let (ca_pem, key_pem) = if cert_path.exists() && key_path.exists() {
            (
                std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?,
                std::fs::read_to_string(&key_path).map_err(io(&key_path))?,
            )
        } else {
            let key = KeyPair::generate().map_err(cert_err)?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(
                DnType::CommonName,
                format!("ddaemon {device_name} local CA"),
            );
            dn.push(DnType::OrganizationName, "ddaemon");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            // Only names under .local: trusting this CA trusts nothing else.
            params.name_constraints = Some(NameConstraints {
                permitted_subtrees: vec![GeneralSubtree::DnsName("local".into())],
                excluded_subtrees: vec![],
            });
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2044, 1, 1);
            let cert = params.self_signed(&key).map_err(cert_err)?;
            let (ca_pem, key_pem) = (cert.pem(), key.serialize_pem());
            // The key first, private from its first byte; the certificate
            // last, so a crash between leaves no certificate without a key.
            // write_atomic's temporary file is created 0600, before any byte.
            ddaemon_runtime::fs_atomic::write_atomic(&key_path, key_pem.as_bytes())
                .map_err(io(&key_path))?;
            ddaemon_runtime::fs_atomic::write_atomic(&cert_path, ca_pem.as_bytes())
                .map_err(io(&cert_path))?;
            tracing::info!(path = %cert_path.display(), "device certificate authority created");
            (ca_pem, key_pem)
        };
        let key = KeyPair::from_pem(&key_pem).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(cert_err)?;
        let ca_der = rustls_pemfile_der(&ca_pem)?;
        Ok(Self {
            issuer,
            ca_pem,
            ca_der,
            default_name: Mutex::new(format!("{device_name}.local")),
            issued: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, for owners to install.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The name used when a client sends no SNI.
    pub fn set_device_name(&self, device_name: &str) {
        *self.default_name.lock().unwrap_or_else(|p| p.into_inner()) =
            format!("{device_name}.local");
    }

    /// A certificate for `name` (a `.local` name), issued once and cached.
    pub fn certified_key(&self, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !name.ends_with(".local") || name.len() > 253 {
            return Err(CaError::Cert(format!(
                "{name:?} is not a .local name; the device CA signs only those"
            )));
        }
        if let Some(found) = self
            .issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
        {
            return Ok(Arc::clone(found));
        }
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::new(vec![name.clone()]).map_err(cert_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, name.clone());
        params.subject_alt_names =
            vec![SanType::DnsName(name.clone().try_into().map_err(cert_err)?)];
        let now = time_now();
        params.not_before = now - std::time::Duration::from_secs(3600);
        // Browsers refuse leaf certificates valid for more than 398 days.
        params.not_after = now + std::time::Duration::from_secs(397 * 24 * 3600);
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(cert_err)?;
        let certified = Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), self.ca_der.clone()],
            signing,
        ));
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, Arc::clone(&certified));
        Ok(certified)
    }
}

impl ResolvesServerCert for DeviceCa {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = match hello.server_name() {
            Some(name) => name.to_owned(),
            None => self
                .default_name
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        };
        match self.certified_key(&name) {
            Ok(key) => Some(key),
            Err(err) => {
                tracing::debug!(%err, "TLS handshake refused");
                None
            }
        }
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn rustls_pemfile_der(pem: &str) -> Result<CertificateDer<'static>, CaError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(cert_err)
}
