//! The device itself: its name, time zone, and what the System page shows
//! (version, uptime, memory, disk use).
//!
//! Later it owns updates, the reset button, hostname changes through
//! systemd and log download; today it reads, and validates what setup writes.

mod device_name;
mod humanize;
mod info;
mod timezone;

pub use device_name::{DEFAULT_DEVICE_NAME, normalize_device_name};
pub use humanize::{format_bytes, format_duration};
pub use info::{DiskUse, MemoryUse, SystemInfo, read_system_info};
pub use timezone::{SYSTEM_ZONEINFO, TimeZones};
