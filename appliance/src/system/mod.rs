//! The device itself: its name, time zone, and what the System page shows
//! (version, uptime, memory, disk use).
//!
//! It restarts and shuts the device down when the owner asks, and installs
//! signed system updates into the slot not running. Later it owns the reset
//! button, hostname changes through systemd and log download.

mod device_name;
mod humanize;
mod info;
mod power;
pub mod reset_button;
pub mod systemd;
mod timezone;
mod update;

pub use device_name::{DEFAULT_DEVICE_NAME, normalize_device_name};
pub use humanize::{format_bytes, format_duration};
pub use info::{DiskUse, MemoryUse, SystemInfo, read_system_info};
pub use power::{Power, PowerAction, PowerError};
pub use timezone::{SYSTEM_ZONEINFO, TimeZones};
pub use update::{JobState, SlotView, UpdateError, UpdateJob, UpdateStatus, Updates, board_id};
