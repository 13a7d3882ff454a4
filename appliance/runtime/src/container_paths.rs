//! The folder of one container, `DATA/containers/<id>/`, and what lives in it.

use std::path::{Path, PathBuf};

/// The files of one container.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    root: PathBuf,
}

impl ContainerPaths {
    /// The folder `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// What the supervisor asked for.
    pub fn def(&self) -> PathBuf {
        self.root.join("container.json")
    }
    /// The OCI bundle: `config.json` and the root filesystem mount point.
    pub fn bundle(&self) -> PathBuf {
        self.root.join("bundle")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.root.join("bundle/rootfs")
    }
    /// The overlay's writable layer: what the container changed.
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }
    /// libcontainer's own state.
    pub fn runtime_state(&self) -> PathBuf {
        self.root.join("runtime")
    }
    /// The container's output.
    pub fn log(&self) -> PathBuf {
        self.root.join("output.log")
    }
    /// The shim's own messages.
    pub fn shim_log(&self) -> PathBuf {
        self.root.join("shim.log")
    }
    /// What the shim reports.
    pub fn status(&self) -> PathBuf {
        self.root.join("status.json")
    }
    /// Generated `/etc/hosts` and `/etc/resolv.conf`.
    pub fn hosts(&self) -> PathBuf {
        self.root.join("hosts")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.root.join("resolv.conf")
    }
}
