//! Who is on the other end of a connection.

use std::net::{IpAddr, SocketAddr};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request};
use axum::response::IntoResponse;
use axum::serve::IncomingStream;
use tokio::net::UnixListener;

use super::api_error::ApiError;
use axum::middleware::Next;
use axum::response::Response;

/// The caller, as the listener saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A network client.
    Remote {
        ip: IpAddr,
        /// Whether the connection is TLS (cookies then get `Secure`).
        tls: bool,
    },
    /// A process on the device talking over the root-only Unix socket: the
    /// socket's file mode already proved it is root, and no browser can reach
    /// it, so it acts as the admin without a session or CSRF token.
    LocalRoot,
}

impl Peer {
    /// The client's address, for rate limiting and logs.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Remote { ip, .. } => Some(*ip),
            Self::LocalRoot => None,
        }
    }

    /// Whether cookies must carry `Secure`.
    pub fn tls(&self) -> bool {
        matches!(self, Self::Remote { tls: true, .. })
    }
}

/// Tags requests on a plain TCP listener with their client address.
pub async fn tag_tcp(mut request: Request, next: Next) -> Response {
    let peer = match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => Peer::Remote {
            ip: addr.ip().to_canonical(),
            tls: false,
        },
        // Only reachable if the router is served without connect info, which
        // `serve` never does; refuse to guess an identity.
        None => Peer::Remote {
            ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            tls: false,
        },
    };
    request.extensions_mut().insert(peer);
    next.run(request).await
}

/// Who connected to the control socket, from the kernel (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy)]
pub struct SocketCaller {
    uid: Option<u32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for SocketCaller {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Self {
            uid: stream.io().peer_cred().ok().map(|cred| cred.uid()),
        }
    }
}

/// Admits callers on the control socket only if they are root or the
/// supervisor's own user: the file mode should already ensure it, but a
/// supervisor started by another user, or a socket path with loose rights,
/// must not hand out admin rights.
pub async fn tag_unix(mut request: Request, next: Next) -> Response {
    let uid = request
        .extensions()
        .get::<ConnectInfo<SocketCaller>>()
        .and_then(|ConnectInfo(caller)| caller.uid);
    let own = rustix_euid();
    match uid {
        Some(uid) if uid == 0 || uid == own => {
            request.extensions_mut().insert(Peer::LocalRoot);
            next.run(request).await
        }
        _ => ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "not_root",
            "only root may use the control socket; run the command as root",
        )
        .into_response(),
    }
}

fn rustix_euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Which clients are at home: loopback, private and link-local addresses
/// (the home network, containers, the WireGuard tunnel), and any address on
/// a network of the device's own interfaces (a home's global IPv6 prefix).
/// Everyone else is on the internet, and sees only the public apps.
#[derive(Debug, Clone, Default)]
pub struct HomeNetworks {
    cached: std::sync::Arc<std::sync::RwLock<Option<ReadAt>>>,
}

/// The interfaces' networks, and when they were read.
type ReadAt = (std::time::Instant, Vec<crate::storage::nfs::Network>);

/// How long the interfaces' networks are trusted before being read again.
const HOME_REFRESH: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether `ip` is loopback, private or link-local, whatever the interfaces.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

impl HomeNetworks {
    /// Whether a client at `ip` is at home.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if is_private(ip) {
            return true;
        }
        let fresh = self
            .cached
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < HOME_REFRESH)
            .map(|(_, networks)| networks.clone());
        let networks = match fresh {
            Some(networks) => networks,
            None => {
                let networks = crate::storage::nfs::home_networks();
                *self.cached.write().unwrap_or_else(|p| p.into_inner()) =
                    Some((std::time::Instant::now(), networks.clone()));
                networks
            }
        };
        networks.iter().any(|n| n.contains(ip))
    }
}

/// Refuses clients that are not at home (recovery mode: a router may still
/// forward ports to the device from before it restarted).
pub async fn home_only(
    axum::extract::State(home): axum::extract::State<HomeNetworks>,
    request: Request,
    next: Next,
) -> Response {
    let at_home = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(addr)| home.contains(addr.ip()));
    if !at_home {
        return ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "not_at_home",
            "recovery mode answers only the home network",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod home_tests {
    use super::*;

    #[test]
    fn private_and_on_link_clients_are_home_and_the_internet_is_not() {
        for home in [
            "127.0.0.1",
            "192.168.1.20",
            "10.99.0.2",
            "172.20.0.5",
            "169.254.1.1",
            "::1",
            "fd00::5",
            "fe80::1",
            "::ffff:192.168.1.20",
        ] {
            assert!(is_private(home.parse().expect(home)), "{home}");
        }
        for internet in [
            "45.45.45.2",
            "8.8.8.8",
            "100.64.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(internet.parse().expect(internet)), "{internet}");
        }
        let net = crate::storage::nfs::Network {
            addr: "2001:db8:1::".parse().expect("net"),
            prefix: 64,
        };
        assert!(net.contains("2001:db8:1::42".parse().expect("ip")));
        assert!(!net.contains("2001:db8:2::42".parse().expect("ip")));
    }
}
