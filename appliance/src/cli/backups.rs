//! `ddaemon backup target|run|ls|restore|check|status`, through the running
//! supervisor.

use std::fmt::Write as _;
use std::time::Duration;

use hyper::Method;

use super::api_client::{ApiClient, ClientError, collect};
use crate::backup::{BackupStatus, ConfigRequest, Configured, SnapshotInfo};
use crate::system::format_bytes as human_bytes;

pub async fn status(client: &ApiClient) -> Result<BackupStatus, ClientError> {
    client.get_json("/api/v1/backups").await
}

pub async fn configure(
    client: &ApiClient,
    request: &ConfigRequest,
) -> Result<Configured, ClientError> {
    let response = client
        .send_json(Method::PUT, "/api/v1/backups/config", request)
        .await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

pub async fn snapshots(client: &ApiClient) -> Result<Vec<SnapshotInfo>, ClientError> {
    client.get_json("/api/v1/backups/snapshots").await
}

/// Starts `what` (`run`, `check`, or `restore` with its request).
pub async fn start(
    client: &ApiClient,
    what: &str,
    body: &serde_json::Value,
) -> Result<(), ClientError> {
    client
        .post_json(&format!("/api/v1/backups/{what}"), body)
        .await
        .map(drop)
}

/// Prints the job's progress until it ends; the status after it.
pub async fn follow(client: &ApiClient) -> Result<BackupStatus, ClientError> {
    let mut last = String::new();
    loop {
        let now = status(client).await?;
        let Some(job) = &now.job else {
            return Ok(now);
        };
        let line = if job.total > 0 {
            format!(
                "{}: {} of {}",
                job.doing,
                human_bytes(job.done),
                human_bytes(job.total)
            )
        } else {
            job.doing.clone()
        };
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The snapshots as the Backups page words them.
pub fn snapshots_text(list: &[SnapshotInfo]) -> String {
    let mut out = String::new();
    if list.is_empty() {
        out.push_str("No backup yet.\n");
    }
    for s in list {
        let what = s
            .app
            .as_deref()
            .map_or_else(|| "device state".to_owned(), |a| format!("app {a}"));
        let _ = writeln!(
            out,
            "{}  {}  {}  {} read, {} new",
            &s.id[..8.min(s.id.len())],
            s.time,
            what,
            human_bytes(s.total_bytes),
            human_bytes(s.bytes_added)
        );
    }
    out
}
