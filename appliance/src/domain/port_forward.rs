//! Port forwarding help: where the owner allows it, the router is asked
//! over UPnP-IGD to forward 80 and 443 to the device while any app is
//! public, and the mappings are removed when none is.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use igd_next::PortMappingProtocol;
use igd_next::aio::tokio::{Tokio, search_gateway};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How long a mapping lasts unless renewed; renewed well before.
pub const LEASE: Duration = Duration::from_secs(3600);
pub const RENEW_EVERY: Duration = Duration::from_secs(1200);
const DESCRIPTION: &str = "ddaemon public apps";

/// What the Domain page shows about the router.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PortForwardStatus {
    /// Whether the owner lets the device ask the router.
    pub allowed: bool,
    /// The router's control address, once found.
    pub router: Option<String>,
    /// The router's public address, as it says.
    pub external_address: Option<String>,
    /// What the router forwards now, e.g. `TCP 80 -> 192.168.1.20:80`.
    pub mapped: Vec<String>,
    pub error: Option<String>,
}

type Gateway = igd_next::aio::Gateway<Tokio>;

async fn find_router() -> Result<Gateway, String> {
    let options = igd_next::SearchOptions {
        timeout: Some(Duration::from_secs(5)),
        ..igd_next::SearchOptions::default()
    };
    search_gateway(options)
        .await
        .map_err(|e| format!("no router answered UPnP ({e}); turn UPnP on in the router, or forward the ports by hand"))
}

/// The device's address on the router's network: the source it would use.
async fn own_address_towards(router: SocketAddr) -> Result<IpAddr, String> {
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| e.to_string())?;
    socket.connect(router).await.map_err(|e| e.to_string())?;
    socket
        .local_addr()
        .map(|a| a.ip())
        .map_err(|e| e.to_string())
}

/// The router's public address (for dynamic DNS's `upnp` source).
pub async fn external_address() -> Result<IpAddr, String> {
    let router = find_router().await?;
    router
        .get_external_ip()
        .await
        .map_err(|e| format!("the router did not say its public address: {e}"))
}

/// Maps external 80 and 443 to the device's `ports` (HTTP, HTTPS), or,
/// with `want` false, removes those mappings.
pub async fn apply(want: bool, ports: &[(u16, u16)]) -> PortForwardStatus {
    let mut status = PortForwardStatus {
        allowed: true,
        ..PortForwardStatus::default()
    };
    let router = match find_router().await {
        Ok(router) => router,
        Err(err) => {
            status.error = Some(err);
            return status;
        }
    };
    status.router = Some(router.addr.to_string());
    status.external_address = router.get_external_ip().await.ok().map(|ip| ip.to_string());
    let own = match own_address_towards(router.addr).await {
        Ok(ip) => ip,
        Err(err) => {
            status.error = Some(format!(
                "cannot tell this device's address towards the router: {err}"
            ));
            return status;
        }
    };
    let mut errors = Vec::new();
    for &(external, internal) in ports {
        if want {
            let local = SocketAddr::new(own, internal);
            match router
                .add_port(
                    PortMappingProtocol::TCP,
                    external,
                    local,
                    LEASE.as_secs() as u32,
                    DESCRIPTION,
                )
                .await
            {
                Ok(()) => status.mapped.push(format!("TCP {external} -> {local}")),
                Err(err) => errors.push(format!("the router refused to forward {external}: {err}")),
            }
        } else if let Err(err) = router.remove_port(PortMappingProtocol::TCP, external).await {
            // Nothing to remove is the usual case after a restart.
            tracing::debug!(%external, %err, "no mapping removed");
        }
    }
    if !errors.is_empty() {
        status.error = Some(errors.join("; "));
    }
    status
}
