//! `ddaemon vpn status|on|off|add|rm`, through the running supervisor.

use std::fmt::Write as _;

use hyper::Method;

use super::api_client::{ApiClient, ClientError, collect};
use crate::vpn::{NewPeer, VpnStatus};

pub async fn status(client: &ApiClient) -> Result<VpnStatus, ClientError> {
    client.get_json("/api/v1/vpn").await
}

/// Turns remote access on (peers dial `endpoint`) or off.
pub async fn set(
    client: &ApiClient,
    request: &serde_json::Value,
) -> Result<VpnStatus, ClientError> {
    let response = client
        .send_json(Method::PUT, "/api/v1/vpn", request)
        .await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

pub async fn add(client: &ApiClient, name: &str) -> Result<NewPeer, ClientError> {
    client
        .post_json_as("/api/v1/vpn/peers", &serde_json::json!({ "name": name }))
        .await
}

pub async fn remove(client: &ApiClient, name: &str) -> Result<VpnStatus, ClientError> {
    let response = client
        .empty(Method::DELETE, &format!("/api/v1/vpn/peers/{name}"))
        .await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

/// The status as the page words it.
pub fn status_text(status: &VpnStatus) -> String {
    let mut out = String::new();
    if !status.enabled {
        out.push_str("Remote access is off.\n");
        return out;
    }
    let _ = writeln!(
        out,
        "Remote access is {} ({}): peers dial {}:{} (UDP) and reach the device at {}",
        if status.running { "up" } else { "NOT up" },
        status.kind.as_deref().unwrap_or("no tunnel"),
        status.endpoint,
        status.listen_port,
        status.address
    );
    if let Some(error) = &status.error {
        let _ = writeln!(out, "Why it is not up: {error}");
    }
    if status.peers.is_empty() {
        out.push_str("No peer yet; add one with `ddaemon vpn add NAME`.\n");
    }
    for peer in &status.peers {
        let seen = peer
            .latest_handshake
            .map_or("never connected".to_owned(), |at| {
                format!("last handshake at {at}")
            });
        let _ = writeln!(out, "{}  {}  {seen}", peer.name, peer.address);
    }
    out
}
