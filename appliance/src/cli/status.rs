//! `ddaemon status`: what the System page shows, on the terminal.

use std::fmt::Write as _;
use std::path::Path;

use super::api_client::{ApiClient, ClientError};
use crate::system::{SystemInfo, format_bytes, format_duration};

/// Fetches the system facts and prints them (or the JSON with `json`).
pub async fn print_status(socket: &Path, json: bool) -> Result<(), ClientError> {
    let info: SystemInfo = ApiClient::new(socket).get_json("/api/v1/system").await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info).map_err(ClientError::Decode)?
        );
    } else {
        print!("{}", status_text(&info));
    }
    Ok(())
}

/// The facts as aligned lines.
pub fn status_text(info: &SystemInfo) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<10} {v}");
    };
    match &info.device_name {
        Some(name) => line("Device", format!("{name} ({name}.local)")),
        None => line("Device", "not set up yet (open the setup page)".into()),
    }
    line("Hostname", info.hostname.clone());
    line("Version", format!("ddaemon {}", info.version));
    line(
        "Time zone",
        info.timezone.clone().unwrap_or_else(|| "UTC".into()),
    );
    line("Uptime", format_duration(info.uptime_seconds));
    line(
        "Memory",
        info.memory.as_ref().map_or("unknown".into(), |m| {
            format!(
                "{} used of {}",
                format_bytes(m.used_bytes),
                format_bytes(m.total_bytes)
            )
        }),
    );
    line(
        "Disk",
        info.disk.as_ref().map_or("unknown".into(), |d| {
            format!(
                "{} used of {} ({})",
                format_bytes(d.used_bytes),
                format_bytes(d.total_bytes),
                d.path
            )
        }),
    );
    out
}
