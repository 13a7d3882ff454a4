//! The owner's domain: apps made public answer at `APP.DOMAIN` over HTTPS,
//! with certificates from an ACME CA obtained and renewed here.
//!
//! It owns the domain settings, the public switch of each app, the ACME
//! account and certificates, and the TLS names they serve; the proxy still
//! does the forwarding. A name that is not public answers nothing: no
//! certificate in the handshake, and 421 over plain HTTP.

pub mod acme;
pub mod certs;
pub mod config;
pub mod ddns;
pub mod dns_update;
mod http;
pub mod port_forward;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Notify};
use utoipa::ToSchema;

pub use acme::{AcmeClient, AcmeError, Challenges};
pub use certs::{CertStore, HeldCert};
pub use config::{DomainConfig, DomainRequest, LETS_ENCRYPT};
pub use ddns::{DdnsRequest, DdnsStatus};
pub use http::public_names;
pub use port_forward::PortForwardStatus;

use crate::field_error::FieldError;
use crate::proxy::{Backend, RouteTable, host_name};
use crate::state::{StateDb, StateError};
use crate::tls::DeviceCa;

/// The first wait after a failed order; it doubles up to [`MAX_BACKOFF`],
/// so a misconfigured name does not run into the CA's rate limits.
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// Why a domain change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("no app is called {0:?}")]
    NoApp(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// A public name's certificate, as the page shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CertificateStatus {
    /// `valid`, `pending` (being obtained) or `failed`.
    pub state: String,
    /// Unix seconds; absent without a certificate.
    pub expires_at: Option<i64>,
    pub serial: Option<String>,
    /// Why the last order failed.
    pub error: Option<String>,
}

/// One app as the Domain page lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublicApp {
    pub app: String,
    /// `https://APP.DOMAIN/`.
    pub url: String,
    pub certificate: CertificateStatus,
    /// The names this resolves to in DNS right now, as the device sees them.
    pub resolves_to: Vec<String>,
}

/// A DNS record the owner creates at their DNS provider.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DnsRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// `GET /api/v1/domain`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DomainStatus {
    /// Absent until the owner sets one.
    pub domain: Option<String>,
    pub acme_directory: Option<String>,
    pub acme_email: Option<String>,
    /// Whether a private CA root is set.
    pub acme_ca: bool,
    /// The records to create: a wildcard covers every app, present and future.
    pub records: Vec<DnsRecord>,
    pub public_apps: Vec<PublicApp>,
    /// Dynamic DNS, when set up.
    pub ddns: Option<DdnsStatus>,
    /// What the router was asked to forward.
    pub port_forwarding: PortForwardStatus,
}

/// What dynamic DNS last did.
#[derive(Debug, Clone, Default)]
struct DdnsRun {
    address: Option<std::net::Ipv4Addr>,
    updated_at: Option<i64>,
    error: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Attempt {
    error: Option<String>,
    next_try: Option<tokio::time::Instant>,
    backoff: Duration,
}

/// The domain service; cheap to clone.
#[derive(Clone)]
pub struct Domain {
    inner: Arc<Inner>,
}

struct Inner {
    db: StateDb,
    dir: PathBuf,
    config: RwLock<Option<DomainConfig>>,
    certs: CertStore,
    challenges: Challenges,
    attempts: RwLock<HashMap<String, Attempt>>,
    routes: RouteTable,
    ca: Arc<DeviceCa>,
    wake: Notify,
    ddns: RwLock<DdnsRun>,
    wake_ddns: Notify,
    /// (external, device) TCP ports to forward: HTTP, and HTTPS if served.
    forward_ports: Vec<(u16, u16)>,
    /// Whether the router may be looked for on the machine's network (not
    /// in a test or workstation run with `--no-container-network`).
    host_network: bool,
    forwarding: RwLock<PortForwardStatus>,
    wake_ports: Notify,
    home: crate::web::peer::HomeNetworks,
    /// One change of the settings at a time.
    changes: Mutex<()>,
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain").finish_non_exhaustive()
    }
}

impl Domain {
    /// The domain as the state database holds it.
    pub async fn load(
        db: StateDb,
        data_dir: &Path,
        routes: RouteTable,
        ca: Arc<DeviceCa>,
        forward_ports: Vec<(u16, u16)>,
        host_network: bool,
    ) -> Result<Self, StateError> {
        let config = match db.setting(crate::state::DOMAIN_CONFIG).await? {
            Some(json) => match serde_json::from_str(&json) {
                Ok(config) => Some(config),
                Err(err) => {
                    tracing::error!(%err, "the domain settings are unreadable; no app is public");
                    None
                }
            },
            None => None,
        };
        let dir = data_dir.join("ddaemon/acme");
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                certs: CertStore::load(&dir.join("certs")),
                dir,
                config: RwLock::new(config),
                challenges: Challenges::default(),
                attempts: RwLock::default(),
                routes,
                ca,
                wake: Notify::new(),
                ddns: RwLock::default(),
                wake_ddns: Notify::new(),
                forward_ports,
                host_network,
                forwarding: RwLock::default(),
                wake_ports: Notify::new(),
                home: crate::web::peer::HomeNetworks::default(),
                changes: Mutex::new(()),
            }),
        })
    }

    /// The settings, if a domain is set.
    pub fn config(&self) -> Option<DomainConfig> {
        self.inner
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Who is at home, and who on the internet.
    pub fn home(&self) -> &crate::web::peer::HomeNetworks {
        &self.inner.home
    }

    pub fn challenges(&self) -> &Challenges {
        &self.inner.challenges
    }

    /// `APP.DOMAIN` for a public app.
    pub fn public_url(&self, app: &str) -> Option<String> {
        let config = self.config()?;
        config
            .public_apps
            .contains(app)
            .then(|| format!("https://{app}.{}/", config.domain))
    }

    /// The app a Host header names on the public side, if it is public.
    pub fn public_backend(&self, host: &str) -> Option<Backend> {
        let name = host_name(host);
        let app = self.public_app_of(&name)?;
        self.inner.routes.lookup(&format!("{app}.local"), None)
    }

    /// `APP` when `name` is `APP.DOMAIN` and the app is public.
    fn public_app_of(&self, name: &str) -> Option<String> {
        let guard = self.inner.config.read().unwrap_or_else(|p| p.into_inner());
        let config = guard.as_ref()?;
        let app = name.strip_suffix(&config.domain)?.strip_suffix('.')?;
        config.public_apps.contains(app).then(|| app.to_owned())
    }

    /// Saves the domain settings and starts certifying under them.
    pub async fn configure(&self, request: DomainRequest) -> Result<DomainStatus, DomainError> {
        {
            let _one = self.inner.changes.lock().await;
            let config = request.check(self.config().as_ref())?;
            self.save(config).await?;
        }
        // The status looks names up in DNS: not while holding the lock.
        Ok(self.status().await)
    }

    /// Turns an app's public switch on or off.
    pub async fn set_public(&self, app: &str, public: bool) -> Result<DomainStatus, DomainError> {
        self.switch_public(app, public).await?;
        Ok(self.status().await)
    }

    async fn switch_public(&self, app: &str, public: bool) -> Result<(), DomainError> {
        let _one = self.inner.changes.lock().await;
        let Some(mut config) = self.config() else {
            return Err(FieldError::new(
                "public",
                "no domain is set; set one on the Domain page first",
            )
            .into());
        };
        if public {
            if !self
                .inner
                .forward_ports
                .iter()
                .any(|(external, _)| *external == 443)
            {
                return Err(FieldError::new(
                    "public",
                    "this supervisor serves no HTTPS (it was started with --no-tls), and public apps answer only over HTTPS",
                )
                .into());
            }
            config::check_app_label(app)?;
            if self
                .inner
                .routes
                .lookup(&format!("{app}.local"), None)
                .is_none()
            {
                return Err(DomainError::NoApp(app.to_owned()));
            }
            config.public_apps.insert(app.to_owned());
        } else {
            config.public_apps.remove(app);
        }
        tracing::info!(%app, public, domain = %config.domain, "public switch");
        self.save(Some(config)).await?;
        Ok(())
    }

    /// Makes a removed app private, so that installing it again does not
    /// put it on the internet unasked.
    pub async fn forget_app(&self, app: &str) {
        if self.config().is_some_and(|c| c.public_apps.contains(app))
            && let Err(err) = self.switch_public(app, false).await
        {
            tracing::error!(%app, %err, "cannot make a removed app private");
        }
    }

    async fn save(&self, config: Option<DomainConfig>) -> Result<(), StateError> {
        match &config {
            Some(config) => {
                let json = serde_json::to_string(config)
                    .map_err(|e| StateError::Task(format!("domain settings: {e}")))?;
                self.inner
                    .db
                    .set_setting(crate::state::DOMAIN_CONFIG, json)
                    .await?;
            }
            None => {
                self.inner
                    .db
                    .clear_setting(crate::state::DOMAIN_CONFIG)
                    .await?
            }
        }
        let names = config.as_ref().map(public_names_of).unwrap_or_default();
        // Failed orders wait out their backoff (the CA limits failures)
        // unless what they depended on changed: the CA, or the zone that
        // DNS-01 writes to.
        let ca_of = |c: Option<&DomainConfig>| {
            c.map(|c| (c.acme_directory.clone(), c.acme_ca.clone(), c.ddns.clone()))
        };
        let ca_changed = ca_of(self.config().as_ref()) != ca_of(config.as_ref());
        *self.inner.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        // (after the swap: the names kept are those under the new domain)
        // Certificates for names no longer wanted go; a switch turned
        // off keeps its certificate while the domain stays (turning it on
        // again then needs no new order).
        self.inner.certs.retain(&self.held_under_domain());
        {
            let mut attempts = self
                .inner
                .attempts
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if ca_changed {
                attempts.clear();
            } else {
                attempts.retain(|name, _| names.contains(name));
            }
        }
        self.inner.wake.notify_one();
        self.inner.wake_ports.notify_one();
        Ok(())
    }

    /// The certificates held for names under the current domain.
    fn held_under_domain(&self) -> Vec<String> {
        let Some(domain) = self.config().map(|c| c.domain) else {
            return Vec::new();
        };
        self.inner
            .certs
            .names()
            .into_iter()
            .filter(|n| {
                n.strip_suffix(domain.as_str())
                    .is_some_and(|a| a.ends_with('.'))
            })
            .collect()
    }

    /// What the Domain page and `GET /api/v1/domain` show.
    pub async fn status(&self) -> DomainStatus {
        let Some(config) = self.config() else {
            return DomainStatus {
                domain: None,
                acme_directory: None,
                acme_email: None,
                acme_ca: false,
                records: Vec::new(),
                public_apps: Vec::new(),
                ddns: None,
                port_forwarding: PortForwardStatus::default(),
            };
        };
        let run = self
            .inner
            .ddns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let target = match (&config.ddns, run.address) {
            (Some(_), Some(address)) => address.to_string(),
            _ => "the public address of your internet connection".to_owned(),
        };
        let records = vec![DnsRecord {
            name: format!("*.{}", config.domain),
            kind: "A".into(),
            value: target,
        }];
        // Every name is looked up at once: the page waits for the slowest
        // answer, not for their sum.
        let domain = &config.domain;
        let lookups = config.public_apps.iter().map(|app| async move {
            let name = format!("{app}.{domain}");
            PublicApp {
                app: app.clone(),
                url: format!("https://{name}/"),
                certificate: self.certificate_status(&name),
                resolves_to: resolve(&name).await,
            }
        });
        let public_apps = futures_util::future::join_all(lookups).await;
        DomainStatus {
            domain: Some(config.domain),
            acme_directory: Some(config.acme_directory),
            acme_email: config.acme_email,
            acme_ca: config.acme_ca.is_some(),
            records,
            public_apps,
            ddns: config.ddns.map(|d| DdnsStatus {
                server: d.server,
                zone: d.zone,
                key_name: d.key_name,
                address_from: d.address_from,
                address: run.address.map(|a| a.to_string()),
                updated_at: run.updated_at,
                error: run.error,
            }),
            port_forwarding: self
                .inner
                .forwarding
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Keeps the router's forwarding in step: mapped while the owner allows
    /// it and an app is public, renewed before the lease ends, removed
    /// otherwise.
    pub fn start_port_forwarding(&self) {
        let domain = self.clone();
        tokio::spawn(async move {
            let mut mapped = false;
            loop {
                let config = domain.config();
                let allowed = config.as_ref().is_some_and(|c| c.port_forwarding);
                let want = allowed && config.as_ref().is_some_and(|c| !c.public_apps.is_empty());
                if allowed && !domain.inner.host_network {
                    *domain.inner.forwarding.write().unwrap_or_else(|p| p.into_inner()) =
                        PortForwardStatus {
                            allowed,
                            error: Some(
                                "this supervisor runs without the machine's network (--no-container-network), so it asks no router".into(),
                            ),
                            ..PortForwardStatus::default()
                        };
                } else if allowed || mapped {
                    let mut status = port_forward::apply(want, &domain.inner.forward_ports).await;
                    status.allowed = allowed;
                    match (&status.error, want) {
                        (Some(error), _) => tracing::error!(%error, "port forwarding"),
                        (None, true) => {
                            tracing::info!(mapped = ?status.mapped, "the router forwards the public ports")
                        }
                        (None, false) if mapped => {
                            tracing::info!("the router no longer forwards the public ports")
                        }
                        (None, false) => {}
                    }
                    mapped = want && status.error.is_none();
                    *domain
                        .inner
                        .forwarding
                        .write()
                        .unwrap_or_else(|p| p.into_inner()) = status;
                } else {
                    *domain
                        .inner
                        .forwarding
                        .write()
                        .unwrap_or_else(|p| p.into_inner()) = PortForwardStatus::default();
                }
                tokio::select! {
                    () = tokio::time::sleep(port_forward::RENEW_EVERY) => {}
                    () = domain.inner.wake_ports.notified() => {}
                }
            }
        });
    }

    /// Sets up dynamic DNS (or, with an empty server, turns it off). The
    /// first update is made before anything is saved, so a wrong key or
    /// server is refused on its field.
    pub async fn configure_ddns(&self, request: DdnsRequest) -> Result<DomainStatus, DomainError> {
        self.set_up_ddns(request).await?;
        Ok(self.status().await)
    }

    async fn set_up_ddns(&self, request: DdnsRequest) -> Result<(), DomainError> {
        let _one = self.inner.changes.lock().await;
        let Some(mut config) = self.config() else {
            return Err(FieldError::new(
                "server",
                "no domain is set; set one on the Domain page first",
            )
            .into());
        };
        let ddns = request.check(&config.domain, config.ddns.as_ref())?;
        if ddns.as_ref().is_some_and(|d| d.address_from == "upnp") && !self.inner.host_network {
            return Err(FieldError::new(
                "address_from",
                "this supervisor runs without the machine's network (--no-container-network), so it asks no router",
            )
            .into());
        }
        let mut run = DdnsRun::default();
        if let Some(ddns) = &ddns {
            let address = ddns.current_address().await?;
            ddns.push(&config.domain, address).await?;
            tracing::info!(%address, zone = %ddns.zone, server = %ddns.server, "dynamic DNS set up");
            run.address = Some(address);
            run.updated_at = Some(time::OffsetDateTime::now_utc().unix_timestamp());
        }
        config.ddns = ddns;
        self.save(Some(config)).await?;
        *self.inner.ddns.write().unwrap_or_else(|p| p.into_inner()) = run;
        self.inner.wake_ddns.notify_one();
        Ok(())
    }

    /// Keeps the records at the public address: looks every `every`, and
    /// updates when the address changed.
    pub fn start_ddns(&self, every: Duration) {
        let domain = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = domain.inner.wake_ddns.notified() => continue,
                }
                domain.follow_address().await;
            }
        });
    }

    async fn follow_address(&self) {
        let Some(config) = self.config() else { return };
        let Some(ddns) = &config.ddns else { return };
        let known = self
            .inner
            .ddns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .address;
        let result = match ddns.current_address().await {
            Ok(address) if Some(address) == known => Ok(None),
            Ok(address) => ddns
                .push(&config.domain, address)
                .await
                .map(|()| Some(address)),
            Err(err) => Err(err),
        };
        let mut run = self.inner.ddns.write().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(None) => run.error = None,
            Ok(Some(address)) => {
                match known {
                    Some(old) => {
                        tracing::info!(from = %old, to = %address, "the public address changed; DNS updated")
                    }
                    None => tracing::info!(%address, "DNS points at the public address"),
                }
                run.address = Some(address);
                run.updated_at = Some(time::OffsetDateTime::now_utc().unix_timestamp());
                run.error = None;
            }
            Err(err) => {
                tracing::error!(%err, "dynamic DNS update failed");
                run.error = Some(err.to_string());
            }
        }
    }

    fn certificate_status(&self, name: &str) -> CertificateStatus {
        let held = self.inner.certs.get(name);
        let error = self
            .inner
            .attempts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .and_then(|a| a.error.clone());
        let state = match (&held, &error) {
            (Some(cert), _)
                if cert.not_after > time::OffsetDateTime::now_utc().unix_timestamp() =>
            {
                "valid"
            }
            (_, Some(_)) => "failed",
            _ => "pending",
        };
        CertificateStatus {
            state: state.into(),
            expires_at: held.as_ref().map(|c| c.not_after),
            serial: held.map(|c| c.serial),
            error,
        }
    }

    /// Obtains and renews certificates until the supervisor stops: at
    /// once when settings change, otherwise every `check_every`.
    pub fn start(&self, check_every: Duration) {
        let domain = self.clone();
        tokio::spawn(async move {
            loop {
                let next = domain.certify_due().await;
                let sleep = next
                    .map(|at| at.saturating_duration_since(tokio::time::Instant::now()))
                    .map_or(check_every, |d| d.min(check_every));
                tokio::select! {
                    () = tokio::time::sleep(sleep) => {}
                    () = domain.inner.wake.notified() => {}
                }
            }
        });
    }

    /// Orders what is missing or due; returns when a failed name may be
    /// tried again.
    async fn certify_due(&self) -> Option<tokio::time::Instant> {
        let config = self.config()?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let due: Vec<String> = public_names_of(&config)
            .into_iter()
            .filter(|name| self.inner.certs.get(name).is_none_or(|c| c.due(now)))
            .collect();
        if due.is_empty() {
            return None;
        }
        let mut retry_at = None;
        let mut client = None;
        for name in due {
            let waiting = self
                .inner
                .attempts
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .and_then(|a| a.next_try)
                .filter(|at| *at > tokio::time::Instant::now());
            if let Some(at) = waiting {
                retry_at = Some(retry_at.map_or(at, |r: tokio::time::Instant| r.min(at)));
                continue;
            }
            let result = match &client {
                Some(client) => self.certify(client, &name, config.ddns.as_ref()).await,
                None => {
                    match AcmeClient::open(&self.inner.dir, &config, self.inner.challenges.clone())
                        .await
                    {
                        Ok(opened) => {
                            let result = self.certify(&opened, &name, config.ddns.as_ref()).await;
                            client = Some(opened);
                            result
                        }
                        Err(err) => Err(err.to_string()),
                    }
                }
            };
            let mut attempts = self
                .inner
                .attempts
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let attempt = attempts.entry(name.clone()).or_default();
            match result {
                Ok(()) => *attempt = Attempt::default(),
                Err(error) => {
                    attempt.backoff = (attempt.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                    let at = tokio::time::Instant::now() + attempt.backoff;
                    tracing::error!(%name, %error, retry_in = ?attempt.backoff, "no certificate");
                    attempt.error = Some(error);
                    attempt.next_try = Some(at);
                    retry_at = Some(retry_at.map_or(at, |r: tokio::time::Instant| r.min(at)));
                }
            }
        }
        retry_at
    }

    async fn certify(
        &self,
        client: &AcmeClient,
        name: &str,
        dns: Option<&ddns::DdnsConfig>,
    ) -> Result<(), String> {
        let challenge = if dns.is_some() { "dns-01" } else { "http-01" };
        tracing::info!(%name, challenge, "ordering a certificate");
        let (key, chain) = client.obtain(name, dns).await.map_err(|e| e.to_string())?;
        let held = self
            .inner
            .certs
            .keep(name, &key, &chain)
            .map_err(|e| e.to_string())?;
        tracing::info!(%name, serial = %held.serial, expires_at = held.not_after, "certificate obtained");
        Ok(())
    }

    /// The TLS certificate chooser: public names get the CA's certificate,
    /// `.local` names the device CA's.
    pub fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(TlsNames {
            domain: self.clone(),
            public_only: false,
        })
    }

    /// The chooser for clients on the internet: public names only (the
    /// device CA makes no certificate for whatever name they ask).
    pub fn public_resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(TlsNames {
            domain: self.clone(),
            public_only: true,
        })
    }
}

fn public_names_of(config: &DomainConfig) -> Vec<String> {
    config
        .public_apps
        .iter()
        .map(|app| format!("{app}.{}", config.domain))
        .collect()
}

/// What `name` resolves to, as text; empty when it does not.
async fn resolve(name: &str) -> Vec<String> {
    let lookup = tokio::net::lookup_host((name, 443));
    match tokio::time::timeout(Duration::from_secs(3), lookup).await {
        Ok(Ok(addrs)) => {
            let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            ips.sort();
            ips.dedup();
            ips
        }
        _ => Vec::new(),
    }
}

struct TlsNames {
    domain: Domain,
    public_only: bool,
}

impl std::fmt::Debug for TlsNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsNames")
    }
}

impl ResolvesServerCert for TlsNames {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let Some(name) = name.filter(|n| !n.ends_with(".local")) else {
            if self.public_only {
                return None;
            }
            return self.domain.inner.ca.resolve(hello);
        };
        // A name under the domain gets its certificate only while public;
        // any other name gets nothing.
        self.domain.public_app_of(&name)?;
        self.domain.inner.certs.get(&name).map(|c| c.key)
    }
}
