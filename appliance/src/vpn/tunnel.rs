//! The WireGuard interface: the kernel's where it has WireGuard (a real
//! device's Debian kernel), `wireguard-go` in user space where not. Both are
//! configured the same way afterwards, with `wg` and `ip`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};

/// Why the tunnel could not be brought up or changed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error(transparent)]
    Command(#[from] ddaemon_runtime::command::CommandError),
    #[error("cannot start wireguard-go: {0} (is it installed?)")]
    Spawn(std::io::Error),
    #[error("wireguard-go did not make {0} (is /dev/net/tun there?)")]
    NoUserspace(String),
}

/// What the rest of the device needs from a WireGuard interface.
pub trait Tunnel: Send + Sync + std::fmt::Debug {
    /// The interface's name.
    fn name(&self) -> &str;
    /// `kernel` or `userspace`, for the page.
    fn kind(&self) -> &'static str;
}

/// The kernel's WireGuard.
#[derive(Debug)]
pub struct KernelTunnel {
    name: String,
}

impl Tunnel for KernelTunnel {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "kernel"
    }
}

impl Drop for KernelTunnel {
    fn drop(&mut self) {
        // A kernel interface outlives the supervisor unless removed.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.name])
            .status();
    }
}

/// `wireguard-go`, which goes away (and its interface with it) when dropped.
#[derive(Debug)]
pub struct UserspaceTunnel {
    name: String,
    _child: Child,
}

impl Tunnel for UserspaceTunnel {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "userspace"
    }
}

/// `wg` and `ip` finish at once; a minute means something hangs.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a tool (`ip`, `wg`), feeding `stdin` if given; its output.
pub(super) async fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, TunnelError> {
    Ok(ddaemon_runtime::command::run(program, args, stdin, TOOL_TIMEOUT).await?)
}

fn uapi_socket(name: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{name}.sock"))
}

/// Makes the interface `name`: the kernel's if it can, else wireguard-go.
pub async fn open(name: &str) -> Result<Box<dyn Tunnel>, TunnelError> {
    // Left over from a supervisor that did not stop cleanly.
    let _ = run("ip", &["link", "del", name], None).await;
    match run("ip", &["link", "add", name, "type", "wireguard"], None).await {
        Ok(_) => {
            return Ok(Box::new(KernelTunnel {
                name: name.to_owned(),
            }));
        }
        Err(err) => tracing::info!(%err, "no WireGuard in the kernel; using wireguard-go"),
    }
    let _ = std::fs::remove_file(uapi_socket(name));
    let child = Command::new("wireguard-go")
        .args(["-f", name])
        .env("WG_PROCESS_FOREGROUND", "1")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(TunnelError::Spawn)?;
    let tunnel = UserspaceTunnel {
        name: name.to_owned(),
        _child: child,
    };
    for _ in 0..100 {
        if uapi_socket(name).exists() {
            return Ok(Box::new(tunnel));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(TunnelError::NoUserspace(name.to_owned()))
}

/// Gives the interface its address, its configuration (a `wg setconf`
/// file: key, port, peers) and brings it up.
pub async fn configure(
    tunnel: &dyn Tunnel,
    address: Ipv4Addr,
    prefix: u8,
    wg_conf: &Path,
) -> Result<(), TunnelError> {
    let name = tunnel.name();
    let cidr = format!("{address}/{prefix}");
    run("ip", &["addr", "replace", &cidr, "dev", name], None).await?;
    let conf = wg_conf.to_string_lossy();
    run("wg", &["setconf", name, &conf], None).await?;
    run("ip", &["link", "set", name, "up"], None).await?;
    Ok(())
}

/// Replaces the peers (and key, port) without dropping live sessions.
pub async fn sync(tunnel: &dyn Tunnel, wg_conf: &Path) -> Result<(), TunnelError> {
    run(
        "wg",
        &["syncconf", tunnel.name(), &wg_conf.to_string_lossy()],
        None,
    )
    .await
    .map(drop)
}

/// Each peer's latest handshake (public key, unix seconds; 0 = never).
pub async fn handshakes(tunnel: &dyn Tunnel) -> Vec<(String, i64)> {
    let Ok(text) = run("wg", &["show", tunnel.name(), "latest-handshakes"], None).await else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (key, at) = line.split_once('\t')?;
            Some((key.to_owned(), at.trim().parse().ok()?))
        })
        .collect()
}
