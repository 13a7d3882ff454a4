//! Certificates from the ACME CA, one per public name: kept on disk (key
//! and chain in one file, so a power cut never pairs a key with another
//! key's certificate) and in memory for the TLS handshake.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate the device holds for a public name.
#[derive(Debug, Clone)]
pub struct HeldCert {
    pub key: Arc<CertifiedKey>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Hex, as browsers show it.
    pub serial: String,
}

impl HeldCert {
    /// Whether it is time to renew: with less than a third of its life
    /// left (Let's Encrypt's advice: 30 days of a 90-day certificate).
    pub fn due(&self, now: i64) -> bool {
        let life = (self.not_after - self.not_before).max(0);
        self.not_after - now < life / 3
    }
}

/// Why a certificate could not be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the certificate is unusable: {0}")]
    Bad(String),
}

/// The certificates, by name.
#[derive(Debug, Clone)]
pub struct CertStore {
    dir: PathBuf,
    held: Arc<RwLock<HashMap<String, HeldCert>>>,
}

impl CertStore {
    /// Loads what `dir` holds; unreadable files are logged and skipped (the
    /// name is then simply certified again).
    pub fn load(dir: &Path) -> Self {
        let store = Self {
            dir: dir.to_path_buf(),
            held: Arc::default(),
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return store;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pem"))
                .map(str::to_owned)
            else {
                continue;
            };
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|pem| parse(&pem).map_err(|e| e.to_string()))
            {
                Ok(cert) => {
                    store.insert(name, cert);
                }
                Err(err) => tracing::warn!(path = %path.display(), %err, "ignoring a certificate"),
            }
        }
        store
    }

    fn insert(&self, name: String, cert: HeldCert) {
        self.held
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, cert);
    }

    /// The certificate for `name`, if the device holds one.
    pub fn get(&self, name: &str) -> Option<HeldCert> {
        self.held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The names a certificate is held for.
    pub fn names(&self) -> Vec<String> {
        self.held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Keeps a new certificate: the private key PEM and the chain PEM the CA
    /// sent. Written before it is served, so a restart serves it too.
    pub fn keep(&self, name: &str, key_pem: &str, chain_pem: &str) -> Result<HeldCert, CertError> {
        let pem = format!("{}\n{}", key_pem.trim_end(), chain_pem);
        let cert = parse(&pem)?;
        std::fs::create_dir_all(&self.dir).map_err(|source| CertError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.dir.join(format!("{name}.pem"));
        ddaemon_runtime::fs_atomic::write_atomic(&path, pem.as_bytes())
            .map_err(|source| CertError::Io { path, source })?;
        self.insert(name.to_owned(), cert.clone());
        Ok(cert)
    }

    /// Forgets every certificate not for one of `names` (a domain changed,
    /// an app was removed); the files go too.
    pub fn retain(&self, names: &[String]) {
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        held.retain(|name, _| names.contains(name));
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let keep = file
                .strip_suffix(".pem")
                .is_some_and(|n| names.iter().any(|k| k == n));
            if !keep && let Err(err) = std::fs::remove_file(entry.path()) {
                tracing::warn!(%file, %err, "cannot remove an old certificate");
            }
        }
    }
}

/// Reads a key and its chain from one PEM text.
fn parse(pem: &str) -> Result<HeldCert, CertError> {
    let bad = |e: &dyn std::fmt::Display| CertError::Bad(e.to_string());
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| bad(&e))?;
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let leaf = chain
        .first()
        .ok_or_else(|| CertError::Bad("no certificate in the CA's answer".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(&e))?;
    let validity = parsed.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    let serial = parsed.raw_serial_as_string();
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| bad(&e))?;
    let key = Arc::new(CertifiedKey::new(chain, signing));
    key.keys_match().map_err(|e| bad(&e))?;
    Ok(HeldCert {
        key,
        not_before,
        not_after,
        serial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str, days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now;
        params.not_after = now + time::Duration::days(days);
        let cert = params.self_signed(&key).expect("cert");
        (key.serialize_pem(), cert.pem())
    }

    #[test]
    fn kept_certificates_come_back_after_a_restart_and_renew_at_two_thirds() {
        let dir = tempfile::tempdir().expect("dir");
        let store = CertStore::load(dir.path());
        let (key, chain) = self_signed("wiki.example.org", 90);
        let held = store.keep("wiki.example.org", &key, &chain).expect("keep");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(!held.due(now));
        assert!(!held.due(now + 59 * 86400));
        assert!(held.due(now + 61 * 86400));

        let again = CertStore::load(dir.path());
        let loaded = again.get("wiki.example.org").expect("loaded");
        assert_eq!(loaded.serial, held.serial);

        let (other_key, _) = self_signed("x", 1);
        let err = store
            .keep("mixed.example.org", &other_key, &chain)
            .expect_err("a key that is not the certificate's");
        assert!(matches!(err, CertError::Bad(_)));
        assert!(!dir.path().join("mixed.example.org.pem").exists());

        again.retain(&[]);
        assert!(again.get("wiki.example.org").is_none());
        assert!(!dir.path().join("wiki.example.org.pem").exists());
    }
}
