//! `ddaemon disk ls|mount|unmount|format`, through the running supervisor.

use std::fmt::Write as _;

use super::api_client::{ApiClient, ClientError, collect};
use crate::storage::Disk;
use crate::system::format_bytes;
use crate::web::api_disks::Mounted;

pub async fn list(client: &ApiClient) -> Result<Vec<Disk>, ClientError> {
    client.get_json("/api/v1/disks").await
}

/// The disks as the Storage page words them.
pub fn disks_text(disks: &[Disk]) -> String {
    let mut out = String::new();
    if disks.is_empty() {
        out.push_str("No disk is attached (the system's own disk is not listed).\n");
    }
    for d in disks {
        let _ = writeln!(
            out,
            "{}  {}  {}  serial {}{}",
            d.name,
            d.model.as_deref().unwrap_or("(no model)"),
            format_bytes(d.size_bytes),
            d.serial.as_deref().unwrap_or("(none)"),
            if d.removable { "  removable" } else { "" }
        );
        if d.volumes.is_empty() {
            let _ = writeln!(out, "    no filesystem");
        }
        for v in &d.volumes {
            let state = match (&v.mounted_at, v.free_bytes) {
                (Some(at), Some(free)) => format!("mounted at {at}, {} free", format_bytes(free)),
                (Some(at), None) => format!("mounted at {at}"),
                (None, _) => "not mounted".to_owned(),
            };
            let _ = writeln!(
                out,
                "    {}  {}  {}  label {}  uuid {}  {state}",
                v.name,
                v.filesystem.as_deref().unwrap_or("(no filesystem)"),
                format_bytes(v.size_bytes),
                v.label.as_deref().unwrap_or("(none)"),
                v.uuid.as_deref().unwrap_or("(none)"),
            );
        }
    }
    out
}

pub async fn mount(client: &ApiClient, uuid: &str) -> Result<Mounted, ClientError> {
    client
        .post_json_as("/api/v1/disks/mount", &serde_json::json!({ "uuid": uuid }))
        .await
}

pub async fn unmount(client: &ApiClient, uuid: &str) -> Result<(), ClientError> {
    let response = client
        .post_json(
            "/api/v1/disks/unmount",
            &serde_json::json!({ "uuid": uuid }),
        )
        .await?;
    collect(response).await.map(drop)
}

pub async fn format(
    client: &ApiClient,
    disk: &str,
    serial: &str,
    label: &str,
) -> Result<Mounted, ClientError> {
    client
        .post_json_as(
            "/api/v1/disks/format",
            &serde_json::json!({ "disk": disk, "serial": serial, "label": label }),
        )
        .await
}
