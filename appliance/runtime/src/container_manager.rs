//! The supervisor's side of containers: creating their folders, starting a
//! shim for each, stopping and removing them, and finding them again after
//! the supervisor restarts. Everything it knows is in the folders under
//! `DATA/containers/`, so a restarted supervisor knows it too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use crate::container_def::{ContainerDef, check_id};
use crate::container_log::tail;
use crate::container_paths::ContainerPaths;
use crate::container_shim::unmount_rootfs;
use crate::container_status::{ContainerStatus, State};
use crate::fs_atomic::write_atomic;
use crate::network::{Network, NetworkError, PublishedPort, hosts_file};

/// The host's name servers a container can use (not the loopback ones,
/// which mean nothing inside the container's own namespace).
fn host_nameservers() -> Vec<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(str::trim)
        .filter(|ns| !ns.starts_with("127.") && *ns != "::1")
        .map(str::to_owned)
        .collect()
}

/// How to start a shim: the `ddaemon` binary and its hidden `shim` command.
#[derive(Debug, Clone)]
pub struct ShimCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// Why a container operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0}")]
    BadId(String),
    #[error("a container named {0} exists already; remove it first or pick another name")]
    Exists(String),
    #[error("no container named {0}; `ddaemon container ls` lists them")]
    NotFound(String),
    #[error("container {id}: {message}")]
    Failed { id: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("network: {0}")]
    Network(#[from] NetworkError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A container as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub image: String,
    pub status: Option<ContainerStatus>,
    /// Whether its shim process is alive.
    pub shim_alive: bool,
}

/// Manages the containers under one folder.
#[derive(Debug, Clone)]
pub struct ContainerManager {
    root: PathBuf,
    shim: ShimCommand,
    /// The bridge network; without it containers have only loopback.
    network: Option<Network>,
}

/// Where a new container sits on the network.
#[derive(Debug, Clone, Default)]
pub struct NetworkRequest {
    /// Containers of one app reach each other by name.
    pub app: Option<String>,
    pub ports: Vec<PublishedPort>,
}

impl ContainerManager {
    /// Containers kept under `root`, shims started with `shim`.
    pub fn open(root: &Path, shim: ShimCommand) -> Result<Self, ContainerError> {
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        Ok(Self {
            root: root.to_owned(),
            shim,
            network: None,
        })
    }

    /// Puts new containers on a bridge whose address is `gateway` (a /24).
    pub fn with_network(mut self, gateway: std::net::Ipv4Addr) -> Self {
        self.network = Some(Network::new(&self.root.join("network.json"), gateway));
        self
    }

    /// The network, if containers have one.
    pub fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    fn paths(&self, id: &str) -> Result<ContainerPaths, ContainerError> {
        check_id(id).map_err(ContainerError::BadId)?;
        Ok(ContainerPaths::new(&self.root.join(id)))
    }

    fn existing(&self, id: &str) -> Result<ContainerPaths, ContainerError> {
        let paths = self.paths(id)?;
        if paths.def().exists() {
            Ok(paths)
        } else {
            Err(ContainerError::NotFound(id.to_owned()))
        }
    }

    /// Records a new container and, with a network, gives it its address
    /// and ports; it does not start it. On failure nothing is left.
    pub async fn create(
        &self,
        def: &ContainerDef,
        request: NetworkRequest,
    ) -> Result<(), ContainerError> {
        let paths = self.paths(&def.id)?;
        if paths.def().exists() {
            return Err(ContainerError::Exists(def.id.clone()));
        }
        let mut def = def.clone();
        if let Some(network) = &self.network {
            if let Err(err) = network
                .attach(&def.id, request.app.clone(), request.ports)
                .await
            {
                let _ = network.detach(&def.id).await;
                return Err(err.into());
            }
            def.network.netns = Some(network.netns_path(&def.id));
            def.network.hosts = network.hosts_for(&def.id)?;
            def.network.nameservers = host_nameservers();
        }
        std::fs::create_dir_all(paths.bundle()).map_err(io_err(&paths.bundle()))?;
        self.write_def(&def)?;
        if let Some(app) = &request.app {
            self.refresh_app_hosts(app).await?;
        }
        Ok(())
    }

    fn write_def(&self, def: &ContainerDef) -> Result<(), ContainerError> {
        let paths = self.paths(&def.id)?;
        let bytes = serde_json::to_vec_pretty(def).map_err(|e| ContainerError::Failed {
            id: def.id.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&paths.def(), &bytes).map_err(io_err(&paths.def()))
    }

    /// Gives every container of `app` the current list of its peers, in its
    /// definition and, for running ones, in the mounted `/etc/hosts` (written
    /// in place: the bind mount holds the file, not its name).
    async fn refresh_app_hosts(&self, app: &str) -> Result<(), ContainerError> {
        let Some(network) = &self.network else {
            return Ok(());
        };
        for (id, peers) in network.app_hosts(app)? {
            let Ok(mut def) = self.def(&id) else { continue };
            def.network.hosts = peers;
            self.write_def(&def)?;
            let hosts_path = self.paths(&id)?.hosts();
            if hosts_path.exists() {
                std::fs::write(&hosts_path, hosts_file(&def.network.hosts))
                    .map_err(io_err(&hosts_path))?;
            }
        }
        Ok(())
    }

    /// The definition of a container.
    pub fn def(&self, id: &str) -> Result<ContainerDef, ContainerError> {
        let paths = self.existing(id)?;
        let bytes = std::fs::read(paths.def()).map_err(io_err(&paths.def()))?;
        serde_json::from_slice(&bytes).map_err(|e| ContainerError::Failed {
            id: id.to_owned(),
            message: format!("container.json cannot be read: {e}"),
        })
    }

    /// The shim's last report, if it wrote one.
    pub fn status(&self, id: &str) -> Result<Option<ContainerStatus>, ContainerError> {
        let paths = self.existing(id)?;
        Ok(ContainerStatus::read(&paths.status()).ok())
    }

    fn shim_alive(&self, paths: &ContainerPaths, status: Option<&ContainerStatus>) -> bool {
        let Some(status) = status else { return false };
        if kill(Pid::from_raw(status.shim_pid), None).is_err() {
            return false;
        }
        // The pid may have been reused: it is our shim only if it was started
        // for this folder.
        std::fs::read(format!("/proc/{}/cmdline", status.shim_pid))
            .map(|cmdline| {
                let needle = paths.root().as_os_str().as_encoded_bytes();
                cmdline.windows(needle.len()).any(|w| w == needle)
            })
            .unwrap_or(false)
    }

    /// Starts the container's shim (if it is not running) and waits until
    /// the container runs or has failed.
    pub async fn start(&self, id: &str) -> Result<ContainerStatus, ContainerError> {
        let paths = self.existing(id)?;
        let current = ContainerStatus::read(&paths.status()).ok();
        if self.shim_alive(&paths, current.as_ref())
            && let Some(status) = current
        {
            return Ok(status);
        }
        // After a reboot the namespace is gone while the lease stays: plumb
        // it again (attaching is idempotent).
        if let Some(network) = &self.network
            && let Some(lease) = network.lease(id)?
        {
            network.attach(id, lease.app, lease.ports).await?;
        }
        let _ = std::fs::remove_file(paths.status());
        let shim_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths.shim_log())
            .map_err(io_err(&paths.shim_log()))?;
        let mut command = tokio::process::Command::new(&self.shim.program);
        command
            .args(&self.shim.args)
            .arg(paths.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(shim_log)
            .env_remove("JOURNAL_STREAM");
        // The child handle is dropped: tokio reaps the shim when it ends,
        // and the shim lives on by itself if the supervisor goes first.
        command.spawn().map_err(io_err(&self.shim.program))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(status) = ContainerStatus::read(&paths.status())
                && status.state != State::Creating
            {
                if status.state == State::Failed {
                    return Err(ContainerError::Failed {
                        id: id.to_owned(),
                        message: status.error.unwrap_or_else(|| "it failed to start".into()),
                    });
                }
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(ContainerError::Failed {
                    id: id.to_owned(),
                    message: format!(
                        "it did not start within a minute; see {}",
                        paths.shim_log().display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks the shim to stop the container and waits until it has.
    pub async fn stop(&self, id: &str) -> Result<Option<ContainerStatus>, ContainerError> {
        let paths = self.existing(id)?;
        let def = self.def(id)?;
        let status = ContainerStatus::read(&paths.status()).ok();
        if !self.shim_alive(&paths, status.as_ref()) {
            return Ok(status);
        }
        if let Some(s) = &status {
            let _ = kill(Pid::from_raw(s.shim_pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(def.stop_timeout_secs + 15);
        loop {
            let now = ContainerStatus::read(&paths.status()).ok();
            if !self.shim_alive(&paths, now.as_ref()) {
                return Ok(now);
            }
            if Instant::now() > deadline {
                return Err(ContainerError::Failed {
                    id: id.to_owned(),
                    message: "it did not stop in time".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops and deletes a container and its writable layer.
    pub async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        self.existing(id)?;
        self.remove_leftovers(id).await
    }

    /// Deletes whatever exists of a container — shim, mounts, address,
    /// folder — even one a crash left half-created or half-removed.
    /// Removing what is not there is not an error.
    pub async fn remove_leftovers(&self, id: &str) -> Result<(), ContainerError> {
        let paths = self.paths(id)?;
        if paths.def().exists() {
            self.stop(id).await?;
        } else if let Ok(status) = ContainerStatus::read(&paths.status())
            && self.shim_alive(&paths, Some(&status))
        {
            let _ = kill(Pid::from_raw(status.shim_pid), Signal::SIGKILL);
        }
        unmount_rootfs(&paths);
        let app = match &self.network {
            Some(network) => {
                let app = network.lease(id)?.and_then(|l| l.app);
                network.detach(id).await?;
                app
            }
            None => None,
        };
        match std::fs::remove_dir_all(paths.root()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(paths.root())(e)),
        }
        if let Some(app) = app {
            self.refresh_app_hosts(&app).await?;
        }
        Ok(())
    }

    /// The names of every container, including ones a crash left without a
    /// definition (a folder or an address only).
    pub fn all_ids(&self) -> Result<Vec<String>, ContainerError> {
        let mut ids = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let entry = entry.map_err(io_err(&self.root))?;
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
                && let Some(id) = entry.file_name().to_str()
                && check_id(id).is_ok()
            {
                ids.insert(id.to_owned());
            }
        }
        if let Some(network) = &self.network {
            ids.extend(network.leased_ids()?);
        }
        Ok(ids.into_iter().collect())
    }

    /// Every container.
    pub fn list(&self) -> Result<Vec<ContainerInfo>, ContainerError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let entry = entry.map_err(io_err(&self.root))?;
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Ok(info) = self.info(&id) {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One container, as `list` shows it.
    pub fn info(&self, id: &str) -> Result<ContainerInfo, ContainerError> {
        let def = self.def(id)?;
        let paths = self.paths(id)?;
        let status = ContainerStatus::read(&paths.status()).ok();
        Ok(ContainerInfo {
            shim_alive: self.shim_alive(&paths, status.as_ref()),
            id: def.id,
            image: def.image,
            status,
        })
    }

    /// The last `max_bytes` of a container's output.
    pub fn logs(&self, id: &str, max_bytes: u64) -> Result<Vec<u8>, ContainerError> {
        let paths = self.existing(id)?;
        tail(&paths.log(), max_bytes).map_err(io_err(&paths.log()))
    }

    /// After a supervisor start: containers whose shim died while they
    /// should run are marked failed and, if their policy says so, started
    /// again. Returns the ids started again.
    pub async fn reattach(&self) -> Result<Vec<String>, ContainerError> {
        let mut restarted = Vec::new();
        for info in self.list()? {
            let Some(mut status) = info.status else {
                continue;
            };
            if info.shim_alive || status.state.is_final() {
                continue;
            }
            tracing::warn!(id = %info.id, "the container's shim is gone");
            if let Some(pid) = status.pid {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            status.state = State::Failed;
            status.error = Some("its shim process ended unexpectedly".into());
            let paths = self.paths(&info.id)?;
            let _ = status.write(&paths.status());
            if self.def(&info.id)?.restart != crate::container_def::RestartPolicy::No {
                self.start(&info.id).await?;
                restarted.push(info.id);
            }
        }
        Ok(restarted)
    }
}
