//! `ddaemon app install|ls|start|stop|restart|update|remove|logs`, through
//! the running supervisor. Install, update and remove follow the change
//! until it ends, printing each step.

use std::time::Duration;

use hyper::{Method, StatusCode};

use super::api_client::{ApiClient, ClientError, collect};
use crate::system::format_bytes;
use crate::web::api_apps::AppView;

/// The installed apps as a table.
pub async fn list(client: &ApiClient) -> Result<String, ClientError> {
    let all: Vec<AppView> = client.get_json("/api/v1/apps").await?;
    let mut out = format!(
        "{:<16} {:<12} {:<10} {:<10} {:>5}  {}\n",
        "APP", "VERSION", "PHASE", "STATE", "PORT", "ADDRESS"
    );
    for a in all {
        out.push_str(&format!(
            "{:<16} {:<12} {:<10} {:<10} {:>5}  {}{}\n",
            a.id,
            a.version,
            a.phase,
            a.state,
            a.port,
            a.url,
            a.update_available
                .map(|v| format!("  (update: {v})"))
                .unwrap_or_default()
        ));
    }
    Ok(out)
}

/// What a followed change ended as.
#[derive(Debug)]
pub enum Outcome {
    /// The app is installed and answering (after an install or update).
    Ready(Box<AppView>),
    /// The app is gone (after a removal).
    Gone,
}

fn progress_line(a: &AppView) -> String {
    let mut line = format!("{} {}: {}", a.phase, a.step, a.detail);
    if a.total > 0 {
        line.push_str(&format!(
            " ({} of {})",
            format_bytes(a.done),
            format_bytes(a.total)
        ));
    }
    line
}

/// Polls an app until its change ends, printing progress to stderr.
/// An install that failed (and was undone) or an update that was rolled
/// back is an error naming why.
pub async fn follow(client: &ApiClient, id: &str) -> Result<Outcome, ClientError> {
    let mut last = String::new();
    loop {
        match client
            .get_json::<AppView>(&format!("/api/v1/apps/{id}"))
            .await
        {
            Ok(a) if a.phase == "installed" => {
                return match a.error {
                    Some(message) => Err(ClientError::Api {
                        status: StatusCode::UNPROCESSABLE_ENTITY,
                        message,
                    }),
                    None => Ok(Outcome::Ready(Box::new(a))),
                };
            }
            Ok(a) => {
                let line = progress_line(&a);
                // Byte counts change constantly: print a step once, and
                // downloads every tenth.
                let key = format!(
                    "{} {} {} {}",
                    a.phase,
                    a.step,
                    a.detail,
                    a.done * 10 / a.total.max(1)
                );
                if key != last {
                    eprintln!("{line}");
                    last = key;
                }
            }
            Err(ClientError::Api { status, message }) if status == StatusCode::NOT_FOUND => {
                return if message.contains("failed") {
                    Err(ClientError::Api { status, message })
                } else {
                    Ok(Outcome::Gone)
                };
            }
            Err(other) => return Err(other),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Starts an install from the catalog or a manifest file's text.
pub async fn install(
    client: &ApiClient,
    request: &serde_json::Value,
) -> Result<AppView, ClientError> {
    let response = client.post_json("/api/v1/apps", request).await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

/// Starts an update, to the catalog's version or a manifest.
pub async fn update(
    client: &ApiClient,
    id: &str,
    manifest: Option<String>,
) -> Result<AppView, ClientError> {
    let response = client
        .post_json(
            &format!("/api/v1/apps/{id}/update"),
            &serde_json::json!({ "manifest": manifest }),
        )
        .await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

/// `start`, `stop` or `restart`.
pub async fn action(client: &ApiClient, id: &str, action: &str) -> Result<AppView, ClientError> {
    let response = client
        .empty(Method::POST, &format!("/api/v1/apps/{id}/{action}"))
        .await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

/// Starts a removal.
pub async fn remove(client: &ApiClient, id: &str, purge: bool) -> Result<(), ClientError> {
    client
        .empty(Method::DELETE, &format!("/api/v1/apps/{id}?purge={purge}"))
        .await?;
    Ok(())
}

/// The end of a service's output.
pub async fn logs(
    client: &ApiClient,
    id: &str,
    service: Option<&str>,
    bytes: u64,
) -> Result<Vec<u8>, ClientError> {
    let mut path = format!("/api/v1/apps/{id}/logs?bytes={bytes}");
    if let Some(s) = service {
        path.push_str(&format!("&service={s}"));
    }
    let response = client.empty(Method::GET, &path).await?;
    Ok(collect(response).await?.to_vec())
}
