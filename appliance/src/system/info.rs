//! What the System page shows, read from the kernel.

use std::path::Path;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Memory in use, from `/proc/meminfo`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct MemoryUse {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
}

/// Space on the filesystem holding the data folder.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct DiskUse {
    /// The data folder measured.
    pub path: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
}

/// The System page and `ddaemon status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SystemInfo {
    /// The name chosen in setup (`NAME.local`); absent before setup.
    pub device_name: Option<String>,
    /// The kernel's host name.
    pub hostname: String,
    /// ddaemon's version.
    pub version: String,
    /// The time zone chosen in setup.
    pub timezone: Option<String>,
    /// Seconds since the kernel booted.
    pub uptime_seconds: u64,
    /// Seconds since the supervisor started.
    pub daemon_uptime_seconds: u64,
    /// Absent where `/proc/meminfo` cannot be read.
    pub memory: Option<MemoryUse>,
    /// Absent where the data folder cannot be measured.
    pub disk: Option<DiskUse>,
}

/// Reads what the kernel says now. Never fails: a part it cannot read is left out.
pub fn read_system_info(
    device_name: Option<String>,
    timezone: Option<String>,
    data_dir: &Path,
    daemon_uptime_seconds: u64,
) -> SystemInfo {
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let uptime_seconds = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| parse_uptime(&s))
        .unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo(&s));
    let disk = nix::sys::statvfs::statvfs(data_dir).ok().map(|st| {
        let frag = st.fragment_size();
        let total = st.blocks().saturating_mul(frag);
        let free = st.blocks_free().saturating_mul(frag);
        let available = st.blocks_available().saturating_mul(frag);
        DiskUse {
            path: data_dir.display().to_string(),
            total_bytes: total,
            available_bytes: available,
            used_bytes: total.saturating_sub(free),
        }
    });
    SystemInfo {
        device_name,
        hostname,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        timezone,
        uptime_seconds,
        daemon_uptime_seconds,
        memory,
        disk,
    }
}

fn parse_uptime(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(secs as u64)
}

fn parse_meminfo(text: &str) -> Option<MemoryUse> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some(MemoryUse {
        total_bytes: total,
        available_bytes: available,
        used_bytes: total.saturating_sub(available),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:        4000000 kB\nMemFree:  100 kB\nMemAvailable:    1000000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some(MemoryUse {
                total_bytes: 4_096_000_000,
                available_bytes: 1_024_000_000,
                used_bytes: 3_072_000_000
            })
        );
        assert_eq!(parse_meminfo("nonsense"), None);
    }

    #[test]
    fn parses_uptime() {
        assert_eq!(parse_uptime("3661.52 7000.00\n"), Some(3661));
        assert_eq!(parse_uptime(""), None);
    }

    #[test]
    fn reads_this_machine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let info = read_system_info(Some("pi".into()), None, dir.path(), 5);
        assert!(info.uptime_seconds > 0);
        let mem = info.memory.expect("this machine has /proc/meminfo");
        assert!(mem.total_bytes >= mem.used_bytes);
        let disk = info.disk.expect("a temp dir can be measured");
        assert!(disk.total_bytes > 0 && disk.total_bytes >= disk.used_bytes);
    }
}
