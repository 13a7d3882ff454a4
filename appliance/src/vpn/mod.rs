//! WireGuard remote access: the owner's phone or laptop joins a tunnel to
//! the device and reaches every app at `APP.local`, as at home.
//!
//! It owns the tunnel (kernel or user space, see [`tunnel`]), the peers and
//! their keys, and a DNS server on the tunnel that answers the `.local`
//! names. Peers reach the device's own address on the tunnel only; the
//! proxy serves the apps there as on the home network.

pub mod dns;
pub mod tunnel;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use utoipa::ToSchema;

use crate::field_error::FieldError;
use crate::proxy::RouteTable;
use crate::state::{StateDb, StateError};
pub use tunnel::{Tunnel, TunnelError};

/// The device's address on the tunnel's 10.99.0.0/24; peers get `.2` on.
pub const DEVICE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const PREFIX: u8 = 24;
pub const DEFAULT_PORT: u16 = 51820;
const VPN_CONFIG: &str = "vpn_config";

/// Why a change to remote access was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum VpnError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("no peer is called {0:?}")]
    NoPeer(String),
    #[error("the tunnel: {0}")]
    Tunnel(#[from] TunnelError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// One device allowed into the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    pub public_key: String,
    pub address: Ipv4Addr,
    pub created_at: i64,
}

/// The settings, as stored (the device's private key is a file beside).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpnConfig {
    pub enabled: bool,
    /// The name or address peers dial: the network's public side.
    pub endpoint: String,
    pub listen_port: u16,
    #[serde(default)]
    pub peers: Vec<Peer>,
}

/// `PUT /api/v1/vpn`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct VpnRequest {
    pub enabled: bool,
    /// Where peers reach this network: a name (`vpn.example.org`) or the
    /// public address. The router must forward the UDP port to the device.
    #[serde(default)]
    pub endpoint: String,
    /// UDP; unchanged when absent (51820 at first).
    #[serde(default)]
    pub listen_port: Option<u16>,
}

/// `POST /api/v1/vpn/peers`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewPeerRequest {
    /// What the owner calls the device: `phone`, `laptop`.
    pub name: String,
}

/// A new peer's configuration, shown this once (it holds the peer's
/// private key, which the device does not keep).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewPeer {
    pub name: String,
    pub address: String,
    /// A WireGuard configuration file for the peer.
    pub config: String,
    /// The same as a QR code (SVG) for the WireGuard app to scan.
    pub qr_svg: String,
}

/// A peer as the page shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeerView {
    pub name: String,
    pub address: String,
    pub public_key: String,
    /// Unix seconds of the latest handshake; absent if never.
    pub latest_handshake: Option<i64>,
}

/// `GET /api/v1/vpn`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct VpnStatus {
    pub enabled: bool,
    /// Whether the tunnel is up now.
    pub running: bool,
    /// `kernel` or `userspace`.
    pub kind: Option<String>,
    pub interface: String,
    pub address: String,
    pub endpoint: String,
    pub listen_port: u16,
    pub public_key: Option<String>,
    pub peers: Vec<PeerView>,
    /// Why the tunnel is not up, when it should be.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Running {
    tunnel: Option<Box<dyn Tunnel>>,
    dns: Option<tokio::task::JoinHandle<()>>,
    error: Option<String>,
}

/// Remote access; cheap to clone.
#[derive(Clone)]
pub struct Vpn {
    inner: Arc<Inner>,
}

struct Inner {
    db: StateDb,
    dir: PathBuf,
    interface: String,
    routes: RouteTable,
    device_name: RwLock<String>,
    running: Mutex<Running>,
    /// One change of the settings at a time.
    changes: Mutex<()>,
    /// The device's public key, worked out once (its private key never
    /// changes once made).
    device_public: std::sync::OnceLock<String>,
    /// Whether this supervisor may change the machine's network (not a
    /// test or workstation run with `--no-container-network`).
    host_network: bool,
}

impl std::fmt::Debug for Vpn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vpn")
            .field("interface", &self.inner.interface)
            .finish_non_exhaustive()
    }
}

/// `wg genkey`, and its public half.
async fn key_pair() -> Result<(String, String), VpnError> {
    let private = tunnel::run("wg", &["genkey"], None)
        .await?
        .trim()
        .to_owned();
    let public = public_key_of(&private).await?;
    Ok((private, public))
}

async fn public_key_of(private: &str) -> Result<String, VpnError> {
    let key = tunnel::run("wg", &["pubkey"], Some(&format!("{private}\n"))).await?;
    Ok(key.trim().to_owned())
}

fn check_name(name: &str) -> Result<(), FieldError> {
    let good = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if good {
        Ok(())
    } else {
        Err(FieldError::new(
            "name",
            "use up to 32 letters, digits, - or _, e.g. phone or work-laptop",
        ))
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), FieldError> {
    let good = !endpoint.is_empty()
        && endpoint.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || b == b'.'
                || b == b'-'
                || b == b':'
                || b == b'['
                || b == b']'
        });
    if good {
        Ok(())
    } else {
        Err(FieldError::new(
            "endpoint",
            "give the name or public address your network is reached at, e.g. vpn.example.org or 203.0.113.7",
        ))
    }
}

impl Vpn {
    pub async fn load(
        db: StateDb,
        data_dir: &Path,
        interface: &str,
        routes: RouteTable,
        device_name: &str,
        host_network: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                dir: data_dir.join("ddaemon/wireguard"),
                interface: interface.to_owned(),
                routes,
                device_name: RwLock::new(device_name.to_owned()),
                running: Mutex::new(Running::default()),
                changes: Mutex::new(()),
                device_public: std::sync::OnceLock::new(),
                host_network,
            }),
        }
    }

    /// The device name `NAME.local` answers to on the tunnel.
    pub fn set_device_name(&self, name: &str) {
        *self
            .inner
            .device_name
            .write()
            .unwrap_or_else(|p| p.into_inner()) = name.to_owned();
    }

    async fn config(&self) -> Result<Option<VpnConfig>, VpnError> {
        Ok(match self.inner.db.setting(VPN_CONFIG).await? {
            Some(json) => Some(
                serde_json::from_str(&json)
                    .map_err(|e| StateError::Task(format!("remote access settings: {e}")))?,
            ),
            None => None,
        })
    }

    async fn save(&self, config: &VpnConfig) -> Result<(), VpnError> {
        let json = serde_json::to_string(config).map_err(|e| StateError::Task(e.to_string()))?;
        self.inner.db.set_setting(VPN_CONFIG, json).await?;
        Ok(())
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VpnError + '_ {
        move |source| VpnError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The device's private key, made on first use.
    async fn device_key(&self) -> Result<String, VpnError> {
        let path = self.inner.dir.join("private.key");
        match std::fs::read_to_string(&path) {
            Ok(key) if !key.trim().is_empty() => return Ok(key.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Self::io(&path)(e)),
        }
        let (private, _) = key_pair().await?;
        std::fs::create_dir_all(&self.inner.dir).map_err(Self::io(&self.inner.dir))?;
        ddaemon_runtime::fs_atomic::write_atomic(&path, format!("{private}\n").as_bytes())
            .map_err(Self::io(&path))?;
        Ok(private)
    }

    /// The device's public key, made with its private key on first use.
    async fn device_public_key(&self) -> Result<String, VpnError> {
        if let Some(key) = self.inner.device_public.get() {
            return Ok(key.clone());
        }
        let key = public_key_of(&self.device_key().await?).await?;
        Ok(self.inner.device_public.get_or_init(|| key).clone())
    }

    /// Writes the `wg setconf` file for `config`; returns its path.
    async fn write_wg_conf(&self, config: &VpnConfig) -> Result<PathBuf, VpnError> {
        let mut text = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {}\n",
            self.device_key().await?,
            config.listen_port
        );
        for peer in &config.peers {
            text.push_str(&format!(
                "\n[Peer]\n# {}\nPublicKey = {}\nAllowedIPs = {}/32\n",
                peer.name, peer.public_key, peer.address
            ));
        }
        let path = self.inner.dir.join("wg.conf");
        ddaemon_runtime::fs_atomic::write_atomic(&path, text.as_bytes())
            .map_err(Self::io(&path))?;
        Ok(path)
    }

    /// Brings the tunnel up if the owner turned it on (at start).
    pub async fn start(&self) {
        match self.config().await {
            Ok(Some(config)) if config.enabled && self.inner.host_network => {
                if let Err(err) = self.bring_up(&config).await {
                    tracing::error!(%err, "remote access is not available");
                }
            }
            Ok(_) => {}
            Err(err) => tracing::error!(%err, "remote access settings unreadable"),
        }
    }

    async fn bring_up(&self, config: &VpnConfig) -> Result<(), VpnError> {
        let mut running = self.inner.running.lock().await;
        if let Some(task) = running.dns.take() {
            task.abort();
        }
        running.tunnel = None;
        let result = async {
            let conf = self.write_wg_conf(config).await?;
            let tunnel = tunnel::open(&self.inner.interface).await?;
            tunnel::configure(tunnel.as_ref(), DEVICE_ADDRESS, PREFIX, &conf).await?;
            let known = self.known_names();
            let dns = dns::serve(DEVICE_ADDRESS, known)
                .await
                .map_err(Self::io(Path::new("udp 10.99.0.1:53")))?;
            Ok::<_, VpnError>((tunnel, dns))
        }
        .await;
        match result {
            Ok((tunnel, dns)) => {
                tracing::info!(interface = %tunnel.name(), kind = tunnel.kind(), port = config.listen_port, "remote access is up");
                running.tunnel = Some(tunnel);
                running.dns = Some(dns);
                running.error = None;
                Ok(())
            }
            Err(err) => {
                running.error = Some(err.to_string());
                Err(err)
            }
        }
    }

    fn known_names(&self) -> dns::Known {
        let vpn = self.clone();
        Arc::new(move |name: &str| {
            let device = vpn
                .inner
                .device_name
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            name == format!("{device}.local")
                || vpn.inner.routes.lookup(name, Some(&device)).is_some()
        })
    }

    async fn take_down(&self) {
        let mut running = self.inner.running.lock().await;
        if let Some(task) = running.dns.take() {
            task.abort();
        }
        running.tunnel = None;
        running.error = None;
    }

    /// Turns remote access on or off, or changes where peers dial.
    pub async fn configure(&self, request: VpnRequest) -> Result<VpnStatus, VpnError> {
        {
            let _one = self.inner.changes.lock().await;
            let previous = self.config().await?;
            let mut config = previous.clone().unwrap_or(VpnConfig {
                enabled: false,
                endpoint: String::new(),
                listen_port: DEFAULT_PORT,
                peers: Vec::new(),
            });
            let endpoint = request.endpoint.trim().to_owned();
            if request.enabled || !endpoint.is_empty() {
                check_endpoint(if endpoint.is_empty() {
                    &config.endpoint
                } else {
                    &endpoint
                })?;
            }
            if request.enabled && !self.inner.host_network {
                return Err(FieldError::new(
                    "enabled",
                    "this supervisor runs without the machine's network (--no-container-network), so it makes no tunnel",
                )
                .into());
            }
            if request.listen_port == Some(0) {
                return Err(FieldError::new(
                    "listen_port",
                    "give a UDP port from 1 to 65535, e.g. 51820",
                )
                .into());
            }
            config.enabled = request.enabled;
            if !endpoint.is_empty() {
                config.endpoint = endpoint;
            }
            config.listen_port = request.listen_port.unwrap_or(config.listen_port);
            self.save(&config).await?;
            if config.enabled {
                if let Err(err) = self.bring_up(&config).await {
                    // Nothing half-done: the settings go back to what they were.
                    match &previous {
                        Some(previous) => self.save(previous).await?,
                        None => self.inner.db.clear_setting(VPN_CONFIG).await?,
                    }
                    return Err(err);
                }
            } else {
                self.take_down().await;
                tracing::info!("remote access is off");
            }
        }
        Ok(self.status().await)
    }

    /// Adds a peer; its configuration (with its private key) is in the
    /// answer only.
    pub async fn add_peer(&self, name: &str) -> Result<NewPeer, VpnError> {
        let _one = self.inner.changes.lock().await;
        let name = name.trim();
        check_name(name)?;
        let Some(mut config) = self.config().await?.filter(|c| c.enabled) else {
            return Err(FieldError::new("name", "remote access is off; turn it on first").into());
        };
        if config.peers.iter().any(|p| p.name == name) {
            return Err(FieldError::new(
                "name",
                format!("{name} is already a peer; choose another name or remove it first"),
            )
            .into());
        }
        let used: Vec<Ipv4Addr> = config.peers.iter().map(|p| p.address).collect();
        let address = (2..=254u8)
            .map(|n| Ipv4Addr::new(10, 99, 0, n))
            .find(|a| !used.contains(a))
            .ok_or_else(|| {
                FieldError::new("name", "the tunnel is full (253 peers); remove one first")
            })?;
        let (private, public) = key_pair().await?;
        let device_public = self.device_public_key().await?;
        config.peers.push(Peer {
            name: name.to_owned(),
            public_key: public,
            address,
            created_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        });
        self.save(&config).await?;
        if let Err(err) = self.apply(&config).await {
            // The peer's key was never shown: it must not stay half-added.
            config.peers.retain(|p| p.name != name);
            self.save(&config).await?;
            return Err(err);
        }
        tracing::info!(peer = %name, %address, "remote access peer added");
        let endpoint = if config.endpoint.contains(':') && !config.endpoint.starts_with('[') {
            format!("[{}]:{}", config.endpoint, config.listen_port)
        } else {
            format!("{}:{}", config.endpoint, config.listen_port)
        };
        let text = format!(
            "[Interface]\nPrivateKey = {private}\nAddress = {address}/32\nDNS = {DEVICE_ADDRESS}\n\n\
             [Peer]\nPublicKey = {device_public}\nEndpoint = {endpoint}\nAllowedIPs = {DEVICE_ADDRESS}/32\nPersistentKeepalive = 25\n"
        );
        let qr_svg = qrcode::QrCode::new(text.as_bytes())
            .map(|code| {
                code.render::<qrcode::render::svg::Color<'_>>()
                    .min_dimensions(240, 240)
                    .build()
            })
            .unwrap_or_default();
        Ok(NewPeer {
            name: name.to_owned(),
            address: address.to_string(),
            config: text,
            qr_svg,
        })
    }

    /// Removes a peer; it cannot connect any more.
    pub async fn remove_peer(&self, name: &str) -> Result<VpnStatus, VpnError> {
        let _one = self.inner.changes.lock().await;
        let mut config = self
            .config()
            .await?
            .ok_or_else(|| VpnError::NoPeer(name.to_owned()))?;
        let before = config.peers.len();
        config.peers.retain(|p| p.name != name);
        if config.peers.len() == before {
            return Err(VpnError::NoPeer(name.to_owned()));
        }
        self.save(&config).await?;
        self.apply(&config).await?;
        tracing::info!(peer = %name, "remote access peer removed");
        drop(_one);
        Ok(self.status().await)
    }

    /// Gives a running tunnel the peers of `config`.
    async fn apply(&self, config: &VpnConfig) -> Result<(), VpnError> {
        let conf = self.write_wg_conf(config).await?;
        let running = self.inner.running.lock().await;
        if let Some(tunnel) = &running.tunnel {
            tunnel::sync(tunnel.as_ref(), &conf).await?;
        }
        Ok(())
    }

    pub async fn status(&self) -> VpnStatus {
        let config = self.config().await.ok().flatten();
        let running = self.inner.running.lock().await;
        let handshakes = match &running.tunnel {
            Some(tunnel) => tunnel::handshakes(tunnel.as_ref()).await,
            None => Vec::new(),
        };
        // Only once a key exists: the status never makes one.
        let public_key = match self.inner.device_public.get() {
            Some(key) => Some(key.clone()),
            None if self.inner.dir.join("private.key").exists() => {
                self.device_public_key().await.ok()
            }
            None => None,
        };
        let config = config.unwrap_or(VpnConfig {
            enabled: false,
            endpoint: String::new(),
            listen_port: DEFAULT_PORT,
            peers: Vec::new(),
        });
        VpnStatus {
            enabled: config.enabled,
            running: running.tunnel.is_some(),
            kind: running.tunnel.as_ref().map(|t| t.kind().to_owned()),
            interface: self.inner.interface.clone(),
            address: DEVICE_ADDRESS.to_string(),
            endpoint: config.endpoint,
            listen_port: config.listen_port,
            public_key,
            peers: config
                .peers
                .into_iter()
                .map(|p| {
                    let latest = handshakes
                        .iter()
                        .find(|(k, _)| *k == p.public_key)
                        .map(|(_, at)| *at)
                        .filter(|at| *at > 0);
                    PeerView {
                        name: p.name,
                        address: p.address.to_string(),
                        public_key: p.public_key,
                        latest_handshake: latest,
                    }
                })
                .collect(),
            error: running.error.clone(),
        }
    }
}
