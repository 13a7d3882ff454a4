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
