//! `ddaemon update status|apply|switch-back` and `ddaemon health`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::api_client::{ApiClient, ClientError, collect};
use crate::system::UpdateStatus;
use ddaemon_recovery::slots::SlotState;

/// The update status as the System page words it.
pub fn status_text(status: &UpdateStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Running    version {}", status.running_version);
    for slot in &status.slots {
        let what = match (&slot.version, slot.state) {
            (None, _) => "empty".to_owned(),
            (Some(v), SlotState::Good) => format!("version {v}"),
            (Some(v), SlotState::Trying) => format!("version {v}, on trial"),
            (Some(v), _) => format!("version {v}, did not start properly"),
        };
        let mut notes = Vec::new();
        if slot.running {
            notes.push("running");
        }
        if slot.next_boot {
            notes.push("starts next");
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        let _ = writeln!(out, "Slot {}     {what}{notes}", slot.slot.to_uppercase());
    }
    if let Some(v) = &status.rolled_back {
        let _ = writeln!(
            out,
            "Rolled back: version {v} did not start properly; the device went back by itself."
        );
    }
    if !status.available {
        let _ = writeln!(
            out,
            "Updates are not available here: {}",
            status.unavailable_reason.as_deref().unwrap_or("unknown")
        );
    }
    out
}

pub async fn status(client: &ApiClient) -> Result<UpdateStatus, ClientError> {
    client.get_json("/api/v1/system/update").await
}

/// Sends a bundle file; the supervisor writes it and restarts unless
/// `restart` is false. Returns the supervisor's answer.
pub async fn apply(
    client: &ApiClient,
    file: &Path,
    restart: bool,
) -> Result<serde_json::Value, ClientError> {
    let length = std::fs::metadata(file)
        .map_err(|source| ClientError::File {
            path: file.to_owned(),
            source,
        })?
        .len();
    let response = client
        .post_file(
            &format!("/api/v1/system/update?length={length}&restart={restart}"),
            file,
        )
        .await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

/// Has the device download a bundle from `url` and install it.
pub async fn apply_url(
    client: &ApiClient,
    url: &str,
    restart: bool,
) -> Result<serde_json::Value, ClientError> {
    let response = client
        .post_json(
            &format!("/api/v1/system/update/from-url?restart={restart}"),
            &serde_json::json!({ "url": url }),
        )
        .await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

pub async fn switch_back(
    client: &ApiClient,
    restart: bool,
) -> Result<serde_json::Value, ClientError> {
    let response = client
        .post_json(
            &format!("/api/v1/system/update/switch-back?restart={restart}"),
            &serde_json::json!({}),
        )
        .await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

/// A supervisor unit restarted this often has failed: no use waiting.
const GIVE_UP_AFTER_RESTARTS: u32 = 3;

/// Waits until the supervisor answers its health check, for at most
/// `wait`: the boot check that decides whether an updated system is kept.
/// With `unit`, gives up early once systemd has restarted that unit
/// [`GIVE_UP_AFTER_RESTARTS`] times (a supervisor that keeps crashing).
pub async fn wait_healthy(
    client: &ApiClient,
    wait: Duration,
    unit: Option<&str>,
) -> Result<(), ClientError> {
    let started = Instant::now();
    loop {
        let answer = client.get_json::<serde_json::Value>("/api/v1/health").await;
        if let Ok(health) = &answer
            && health["status"] == "ok"
        {
            return Ok(());
        }
        if let Some(unit) = unit {
            let restarts = restarts_of(unit).await;
            if restarts >= GIVE_UP_AFTER_RESTARTS {
                return Err(ClientError::Http(format!(
                    "{unit} was restarted {restarts} times: it keeps failing"
                )));
            }
        }
        if started.elapsed() >= wait {
            return match answer {
                Ok(health) => Err(ClientError::Http(format!(
                    "the supervisor is not healthy after {wait:?}: {health}"
                ))),
                Err(err) => Err(err),
            };
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How often systemd restarted `unit` since it was started (0 when unknown).
async fn restarts_of(unit: &str) -> u32 {
    tokio::process::Command::new("systemctl")
        .args(["show", "--property=NRestarts", "--value", unit])
        .output()
        .await
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}
