//! `ddaemon container ls|run|start|stop|rm|logs`, through the running supervisor.

use hyper::Method;

use super::api_client::{ApiClient, ClientError, collect};
use crate::system::format_duration;
use crate::web::api_containers::ContainerView;

/// The containers as a table.
pub async fn list(client: &ApiClient) -> Result<String, ClientError> {
    let all: Vec<ContainerView> = client.get_json("/api/v1/containers").await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut out = format!(
        "{:<24} {:<40} {:<12} {:>8} {}\n",
        "NAME", "IMAGE", "STATE", "RESTARTS", "UP / EXIT"
    );
    for c in all {
        let detail = match (c.state.as_str(), c.started_at, c.exit_code) {
            ("running", Some(at), _) => format_duration(u64::try_from(now - at).unwrap_or(0)),
            (_, _, Some(code)) => format!("exit {code}"),
            _ => c.error.unwrap_or_default(),
        };
        out.push_str(&format!(
            "{:<24} {:<40} {:<12} {:>8} {}\n",
            c.name, c.image, c.state, c.restarts, detail
        ));
    }
    Ok(out)
}

/// Creates and starts a container.
pub async fn run(
    client: &ApiClient,
    request: &serde_json::Value,
) -> Result<ContainerView, ClientError> {
    let response = client.post_json("/api/v1/containers", request).await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

/// `start` or `stop`.
pub async fn action(
    client: &ApiClient,
    name: &str,
    action: &str,
) -> Result<ContainerView, ClientError> {
    let response = client
        .empty(Method::POST, &format!("/api/v1/containers/{name}/{action}"))
        .await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

/// Deletes a container.
pub async fn remove(client: &ApiClient, name: &str) -> Result<(), ClientError> {
    client
        .empty(Method::DELETE, &format!("/api/v1/containers/{name}"))
        .await?;
    Ok(())
}

/// The end of a container's output.
pub async fn logs(client: &ApiClient, name: &str, bytes: u64) -> Result<Vec<u8>, ClientError> {
    let response = client
        .empty(
            Method::GET,
            &format!("/api/v1/containers/{name}/logs?bytes={bytes}"),
        )
        .await?;
    Ok(collect(response).await?.to_vec())
}
