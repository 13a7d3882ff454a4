//! Who is on the other end of a connection.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
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
