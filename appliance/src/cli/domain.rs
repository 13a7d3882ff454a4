//! `ddaemon domain status|set|public|private`, through the running supervisor.

use std::fmt::Write as _;

use hyper::Method;

use super::api_client::{ApiClient, ClientError, collect};
use crate::domain::DomainStatus;

pub async fn status(client: &ApiClient) -> Result<DomainStatus, ClientError> {
    client.get_json("/api/v1/domain").await
}

async fn put(
    client: &ApiClient,
    path: &str,
    body: &serde_json::Value,
) -> Result<DomainStatus, ClientError> {
    let response = client.send_json(Method::PUT, path, body).await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

/// Sets (or, with an empty domain, forgets) the domain and its CA.
pub async fn set(
    client: &ApiClient,
    request: &serde_json::Value,
) -> Result<DomainStatus, ClientError> {
    put(client, "/api/v1/domain", request).await
}

/// Sets up (or turns off) dynamic DNS.
pub async fn set_ddns(
    client: &ApiClient,
    request: &serde_json::Value,
) -> Result<DomainStatus, ClientError> {
    put(client, "/api/v1/domain/ddns", request).await
}

/// Turns an app's public switch on or off.
pub async fn set_public(
    client: &ApiClient,
    app: &str,
    public: bool,
) -> Result<DomainStatus, ClientError> {
    let path = format!("/api/v1/apps/{app}/public");
    put(client, &path, &serde_json::json!({ "public": public })).await
}

/// The status as the Domain page words it.
pub fn status_text(status: &DomainStatus) -> String {
    let mut out = String::new();
    let Some(domain) = &status.domain else {
        out.push_str("No domain is set; apps answer on the home network only.\n");
        return out;
    };
    let _ = writeln!(out, "Domain: {domain}");
    if let Some(directory) = &status.acme_directory {
        let _ = writeln!(out, "Certificates from: {directory}");
    }
    for record in &status.records {
        let _ = writeln!(
            out,
            "DNS record to create: {}  {}  {}",
            record.name, record.kind, record.value
        );
    }
    let forwarding = &status.port_forwarding;
    if forwarding.allowed {
        let mapped = if forwarding.mapped.is_empty() {
            "nothing".to_owned()
        } else {
            forwarding.mapped.join(", ")
        };
        let _ = write!(out, "The router forwards: {mapped}");
        if let Some(error) = &forwarding.error {
            let _ = write!(out, " ({error})");
        }
        out.push('\n');
    }
    if let Some(ddns) = &status.ddns {
        let _ = write!(
            out,
            "Dynamic DNS: {} in zone {} via {}",
            ddns.address.as_deref().unwrap_or("no address yet"),
            ddns.zone,
            ddns.server
        );
        if let Some(error) = &ddns.error {
            let _ = write!(out, " (last update failed: {error})");
        }
        out.push('\n');
    }
    if status.public_apps.is_empty() {
        out.push_str("No app is public.\n");
    }
    for app in &status.public_apps {
        let cert = &app.certificate;
        let _ = write!(out, "{}  certificate {}", app.url, cert.state);
        if let Some(error) = &cert.error {
            let _ = write!(out, " ({error})");
        }
        let dns = if app.resolves_to.is_empty() {
            "does not resolve yet".to_owned()
        } else {
            app.resolves_to.join(", ")
        };
        let _ = writeln!(out, "  DNS {dns}");
    }
    out
}
