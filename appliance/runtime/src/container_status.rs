//! What the shim reports about its container, in `status.json`, written
//! atomically at every change so the supervisor (running or restarted) can
//! read it at any time.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fs_atomic::write_atomic;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The shim is setting it up.
    Creating,
    Running,
    /// Waiting out the backoff before the next start.
    Restarting,
    /// Asked to stop; waiting for it to exit.
    Stopping,
    /// Ended by itself and not restarted.
    Exited,
    /// Ended because it was asked to.
    Stopped,
    /// Could not be started.
    Failed,
}

impl State {
    /// Whether the shim has finished with this container.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Exited | Self::Stopped | Self::Failed)
    }
}

/// The shim's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    pub state: State,
    /// The shim's process id, to signal it and to tell if it lives.
    pub shim_pid: i32,
    /// The container's init process, while it runs.
    pub pid: Option<i32>,
    /// How the last run ended: the exit code, or 128 + the signal.
    pub exit_code: Option<i32>,
    /// How many times the restart policy started it again.
    pub restarts: u32,
    /// Seconds since the epoch.
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

impl ContainerStatus {
    /// Reads a status file.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// Writes a status file atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(path, &bytes)
    }
}
