//! Installing, starting, stopping, updating and removing apps.
//!
//! Every step is written to the `apps` table before it is acted on, and
//! every step can be run again: a supervisor that starts after a crash
//! finishes an install it finds under way (or undoes it if it cannot),
//! rolls an interrupted update back to the version that worked, and
//! finishes a removal. Containers of app `A` are named `A.SERVICE`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ddaemon_runtime::container_def::{BindMount, ContainerDef, Limits, RestartPolicy};
use ddaemon_runtime::container_manager::{ContainerError, ContainerManager, NetworkRequest};
use ddaemon_runtime::image_ref::ImageRef;
use ddaemon_runtime::image_store::{ImageStore, PullEvent, StoreError};
use ddaemon_runtime::network::{Protocol, PublishedPort};
use ddaemon_runtime::registry::Registry;
use serde::Serialize;

use super::health::{Target, probe};
use super::manifest::{HealthCheck, Manifest, Service};
use super::secrets;
use crate::mdns::Mdns;
use crate::proxy::{Backend, RouteTable};
use crate::state::{AppPhase, AppRecord, AppStep, StateDb, StateError};

/// The device ports handed out as apps' fallback ports.
pub const FALLBACK_PORTS: std::ops::RangeInclusive<u16> = 8100..=8999;

/// How long an app may take to answer after its containers start, unless
/// its manifest says otherwise.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);

/// For crash tests: the supervisor kills itself (SIGKILL, as a power cut
/// would stop it) right after recording this step (`pulling`, `creating`,
/// `starting`, `waiting`, `removing`).
pub const CRASH_AT_STEP_VAR: &str = "DDAEMON_TEST_CRASH_AT_STEP";

/// Why an app operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{id} is already installed; update or remove it instead")]
    Installed { id: String },
    #[error("no app {0} is installed")]
    NotInstalled(String),
    #[error("{id} is busy being {phase}; wait until that finishes")]
    Busy { id: String, phase: String },
    #[error("{field}: {message}")]
    Refused { field: String, message: String },
    #[error("apps need the container network, which this supervisor runs without")]
    NoNetwork,
    #[error("no free port left in {}-{}", FALLBACK_PORTS.start(), FALLBACK_PORTS.end())]
    NoPort,
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Image(#[from] StoreError),
    #[error("{0}")]
    Failed(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AppError + '_ {
    move |source| AppError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What an app is doing now, for the page and the CLI.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Activity {
    /// Short text: "pulling docker.io/library/ghost:5.101".
    pub detail: String,
    /// Bytes downloaded and to download, while pulling.
    pub done: u64,
    pub total: u64,
    /// Why the last install, update or action failed; an install that
    /// failed has been undone, an update rolled back.
    pub failure: Option<String>,
}

/// The apps on the device; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: StateDb,
    images: Arc<ImageStore>,
    registry: Registry,
    containers: ContainerManager,
    routes: RouteTable,
    /// `DATA/apps`.
    apps_dir: PathBuf,
    activity: Mutex<HashMap<String, Activity>>,
    /// One install, update or removal at a time: they share ports, the
    /// image store and the bridge.
    changes: tokio::sync::Mutex<()>,
    mdns: Mdns,
    crash_at: Option<String>,
}

/// The host's architecture as manifests name it.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The container that runs `service` of `app`.
pub fn container_id(app: &str, service: &str) -> String {
    format!("{app}.{service}")
}

/// Services in an order where each comes after what it depends on (the
/// manifest was validated: no cycles).
fn start_order(m: &Manifest) -> Vec<&Service> {
    let mut ordered: Vec<&Service> = Vec::new();
    while ordered.len() < m.services.len() {
        let before = ordered.len();
        for s in &m.services {
            if !ordered.iter().any(|o| o.name == s.name)
                && s.depends_on
                    .iter()
                    .all(|d| ordered.iter().any(|o| o.name == d.service))
            {
                ordered.push(s);
            }
        }
        if ordered.len() == before {
            // Unreachable for a valid manifest; never loop forever.
            let rest: Vec<&Service> = m
                .services
                .iter()
                .filter(|s| !ordered.iter().any(|o| o.name == s.name))
                .collect();
            ordered.extend(rest);
        }
    }
    ordered
}

/// Gives a new volume folder the owner and mode its path has in the image,
/// as Docker does for a named volume: an app that runs as its own user can
/// then write where its image meant it to.
fn take_image_ownership(dir: &Path, layers: &[PathBuf], target: &str) -> Result<(), AppError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let inside = target.trim_start_matches('/');
    // The top layer that has the path decides (a whiteout there means the
    // image deleted it).
    let found = layers
        .iter()
        .rev()
        .find_map(|layer| std::fs::symlink_metadata(layer.join(inside)).ok());
    let Some(meta) = found.filter(|m| m.is_dir()) else {
        return Ok(());
    };
    nix::unistd::chown(
        dir,
        Some(nix::unistd::Uid::from_raw(meta.uid())),
        Some(nix::unistd::Gid::from_raw(meta.gid())),
    )
    .map_err(|e| io_err(dir)(e.into()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io_err(dir))
}

impl AppManager {
    pub fn new(
        db: StateDb,
        images: Arc<ImageStore>,
        registry: Registry,
        containers: ContainerManager,
        routes: RouteTable,
        mdns: Mdns,
        data_dir: &Path,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                images,
                registry,
                containers,
                routes,
                apps_dir: data_dir.join("apps"),
                activity: Mutex::new(HashMap::new()),
                changes: tokio::sync::Mutex::new(()),
                mdns,
                crash_at: std::env::var(CRASH_AT_STEP_VAR).ok(),
            }),
        }
    }

    /// What an app is doing, or last failed at.
    pub fn activity(&self, id: &str) -> Option<Activity> {
        self.lock_activity().get(id).cloned()
    }

    fn lock_activity(&self) -> std::sync::MutexGuard<'_, HashMap<String, Activity>> {
        self.inner
            .activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn set_activity(&self, id: &str, change: impl FnOnce(&mut Activity)) {
        change(self.lock_activity().entry(id.to_owned()).or_default());
    }

    /// Says what the app is doing now (no download under way).
    fn say(&self, id: &str, detail: String) {
        self.set_activity(id, |a| {
            a.detail = detail;
            (a.done, a.total) = (0, 0);
        });
    }

    /// The folder of an app's data.
    pub fn app_dir(&self, id: &str) -> PathBuf {
        self.inner.apps_dir.join(id)
    }

    pub fn containers(&self) -> &ContainerManager {
        &self.inner.containers
    }

    /// Writes the record, then (in crash tests) dies if asked to at this step.
    async fn record(&self, record: &AppRecord) -> Result<(), AppError> {
        self.inner.db.update_app(record.clone()).await?;
        self.after_recording(record.step);
        Ok(())
    }

    fn after_recording(&self, step: AppStep) {
        if self.inner.crash_at.as_deref() == Some(step.to_string().as_str()) {
            tracing::warn!(?step, "crashing on purpose ({CRASH_AT_STEP_VAR})");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }

    fn check_installable(&self, m: &Manifest) -> Result<(), AppError> {
        if !m.architectures.iter().any(|a| a == host_architecture()) {
            return Err(AppError::Refused {
                field: "architectures".into(),
                message: format!(
                    "{} runs on {}, this device is {}",
                    m.title,
                    m.architectures.join(", "),
                    host_architecture()
                ),
            });
        }
        if self.inner.containers.network().is_none() {
            return Err(AppError::NoNetwork);
        }
        Ok(())
    }

    async fn free_port(&self, m: &Manifest) -> Result<u16, AppError> {
        let apps = self.inner.db.apps().await?;
        let exposed: Vec<u16> = apps
            .iter()
            .flat_map(|a| a.manifest.services.iter())
            .chain(m.services.iter())
            .flat_map(|s| s.expose.iter().map(|e| e.port))
            .collect();
        FALLBACK_PORTS
            .clone()
            .find(|p| !apps.iter().any(|a| a.port == *p) && !exposed.contains(p))
            .ok_or(AppError::NoPort)
    }

    /// Records a new app and installs it in the background; progress shows
    /// in [`activity`](Self::activity) and the record's step.
    pub async fn install(&self, manifest: Manifest) -> Result<AppRecord, AppError> {
        self.check_installable(&manifest)?;
        let id = manifest.id.clone();
        let _changes = self.inner.changes.lock().await;
        if self.inner.db.app(id.clone()).await?.is_some() {
            return Err(AppError::Installed { id });
        }
        let app_dir = self.app_dir(&id);
        let record = AppRecord {
            port: self.free_port(&manifest).await?,
            manifest,
            previous: None,
            phase: AppPhase::Installing,
            step: AppStep::Recorded,
            running: true,
            // A failed install deletes the folder only if it made it.
            purge: !app_dir.exists(),
            error: None,
            installed_at: ddaemon_runtime::clock::now_unix(),
        };
        self.inner.db.insert_app(record.clone()).await?;
        self.lock_activity().insert(id.clone(), Activity::default());
        tracing::info!(app = %id, port = record.port, "installing");
        self.spawn_continue(id);
        Ok(record)
    }

    /// Runs the unfinished phase of an app in the background.
    fn spawn_continue(&self, id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(err) = me.continue_phase(&id).await {
                tracing::error!(app = %id, %err, "cannot finish the app's change");
                me.set_activity(&id, |a| a.failure = Some(err.to_string()));
            }
        });
    }

    async fn continue_phase(&self, id: &str) -> Result<(), AppError> {
        let _changes = self.inner.changes.lock().await;
        let Some(record) = self.inner.db.app(id.to_owned()).await? else {
            return Ok(());
        };
        match record.phase {
            AppPhase::Installed => Ok(()),
            // A failed install was being undone: finish undoing it.
            AppPhase::Installing if record.step == AppStep::Removing => {
                self.tear_down(record).await
            }
            AppPhase::Installing => match self.bring_up(record.clone(), None).await {
                Ok(()) => Ok(()),
                Err(err) => {
                    tracing::warn!(app = %id, %err, "install failed; undoing it");
                    self.set_activity(id, |a| {
                        a.failure = Some(format!("the install failed: {err}"));
                    });
                    self.tear_down(record).await
                }
            },
            AppPhase::Updating => match self.bring_up(record.clone(), None).await {
                Ok(()) => Ok(()),
                Err(err) => self.roll_back(record, &err.to_string()).await,
            },
            AppPhase::Removing => self.tear_down(record).await,
        }
    }

    /// Pull, create, start, wait: the steps of an install or update, each
    /// recorded first, each safe to run again.
    /// Pulls, creates, starts and waits for an app's containers; the
    /// record ends `installed` with `outcome_error` (a rollback says why
    /// in the same write, so nobody ever sees it installed without it).
    async fn bring_up(
        &self,
        mut record: AppRecord,
        outcome_error: Option<String>,
    ) -> Result<(), AppError> {
        let m = record.manifest.clone();
        let id = m.id.clone();
        record.step = AppStep::Pulling;
        self.record(&record).await?;
        for s in &m.services {
            let image = ImageRef::parse(&s.image).map_err(|e| AppError::Refused {
                field: format!("services.{}.image", s.name),
                message: e.to_string(),
            })?;
            if self.inner.images.get(&image.to_string()).is_ok() {
                continue;
            }
            self.say(&id, format!("pulling {image}"));
            let me = self.clone();
            let app = id.clone();
            let progress = move |event: PullEvent| {
                if let PullEvent::Downloading(p) = event {
                    me.set_activity(&app, |a| (a.done, a.total) = (p.done, p.total));
                }
            };
            self.inner
                .images
                .pull(&self.inner.registry, &image, &progress)
                .await?;
        }

        record.step = AppStep::Creating;
        self.record(&record).await?;
        self.say(&id, "creating containers".into());
        let secrets = secrets::load_or_generate(&self.app_dir(&id), &m)
            .map_err(io_err(&self.app_dir(&id)))?;
        // Containers of this app that the manifest no longer has (an update
        // dropped a service, or a crash left one half-made) go first.
        let wanted: Vec<String> = m
            .services
            .iter()
            .map(|s| container_id(&id, &s.name))
            .collect();
        for stray in self.app_container_ids(&id)? {
            if !wanted.contains(&stray) {
                self.inner.containers.remove_leftovers(&stray).await?;
            }
        }
        for s in &m.services {
            self.create_service(&record, s, &secrets).await?;
        }
        self.route(&record)?;

        record.step = AppStep::Starting;
        self.record(&record).await?;
        let deadline = Instant::now()
            + m.start_timeout_secs
                .map_or(DEFAULT_START_TIMEOUT, |s| Duration::from_secs(u64::from(s)));
        for s in start_order(&m) {
            for dep in &s.depends_on {
                if dep.condition == "healthy" {
                    self.say(&id, format!("waiting for {} to be ready", dep.service));
                    self.wait_healthy(&id, &dep.service, &m, deadline).await?;
                }
            }
            self.say(&id, format!("starting {}", s.name));
            self.inner
                .containers
                .start(&container_id(&id, &s.name))
                .await?;
        }

        record.step = AppStep::Waiting;
        self.record(&record).await?;
        self.say(&id, "waiting for the app to answer".into());
        self.wait_healthy(&id, &m.web.service, &m, deadline).await?;

        let previous = record.previous.take();
        record.phase = AppPhase::Installed;
        record.step = AppStep::Healthy;
        record.purge = false;
        record.error = outcome_error;
        record.running = true;
        self.record(&record).await?;
        self.set_activity(&id, |a| *a = Activity::default());
        tracing::info!(app = %id, version = %m.version, "app installed and answering");
        if let Some(previous) = previous {
            self.forget_unused_images(&previous).await;
        }
        Ok(())
    }

    async fn create_service(
        &self,
        record: &AppRecord,
        s: &Service,
        secrets: &BTreeMap<String, String>,
    ) -> Result<(), AppError> {
        let m = &record.manifest;
        let cid = container_id(&m.id, &s.name);
        let image_ref = ImageRef::parse(&s.image)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| s.image.clone());
        let image = self.inner.images.get(&image_ref)?;
        let config = self.inner.images.config(&image)?;
        let mut def = ContainerDef::for_image(
            &cid,
            &image.reference,
            self.inner.images.layer_dirs(&image),
            config.config.unwrap_or_default(),
        );
        def.command = s.command.clone();
        def.env = s
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", secrets::substitute(v, secrets)))
            .collect();
        def.user = s.user.clone();
        def.restart = RestartPolicy::Always;
        def.extra_capabilities = s.capabilities.clone();
        def.limits = Limits {
            pids: Some(4096),
            ..Limits::default()
        };
        for v in &s.volumes {
            let source = self.app_dir(&m.id).join(&v.name);
            if !source.exists() {
                std::fs::create_dir_all(&source).map_err(io_err(&source))?;
                take_image_ownership(&source, &def.layers, &v.path)?;
            }
            def.binds.push(BindMount {
                source,
                target: v.path.clone(),
                read_only: v.read_only,
            });
        }
        let mut ports: Vec<PublishedPort> = s
            .expose
            .iter()
            .map(|e| PublishedPort {
                host_port: e.port,
                container_port: e.port,
                protocol: e.protocol,
            })
            .collect();
        if s.name == m.web.service {
            ports.push(PublishedPort {
                host_port: record.port,
                container_port: m.web.port,
                protocol: Protocol::Tcp,
            });
        }
        let same_ports = |network: &ddaemon_runtime::network::Network| {
            network
                .lease(&cid)
                .ok()
                .flatten()
                .is_some_and(|lease| lease.ports == ports)
        };
        match self.inner.containers.def(&cid) {
            // Made by an earlier run of this step: keep it. (Its network
            // part is the manager's, filled in at creation.)
            Ok(existing)
                if ContainerDef {
                    network: existing.network.clone(),
                    ..def.clone()
                } == existing
                    && self.inner.containers.network().is_some_and(same_ports) =>
            {
                return Ok(());
            }
            // Made for another version (an update replaces it), or half-made
            // by a crash: start it over.
            _ => self.inner.containers.remove_leftovers(&cid).await?,
        }
        self.inner
            .containers
            .create(
                &def,
                NetworkRequest {
                    app: Some(m.id.clone()),
                    ports,
                },
            )
            .await?;
        Ok(())
    }

    /// The containers named `ID.*`, whatever state they are in.
    fn app_container_ids(&self, id: &str) -> Result<Vec<String>, AppError> {
        let prefix = format!("{id}.");
        Ok(self
            .inner
            .containers
            .all_ids()?
            .into_iter()
            .filter(|c| c.starts_with(&prefix))
            .collect())
    }

    fn target(&self, cid: &str) -> Result<Target, AppError> {
        let network = self.inner.containers.network().ok_or(AppError::NoNetwork)?;
        let lease = network
            .lease(cid)
            .map_err(ContainerError::from)?
            .ok_or_else(|| AppError::Failed(format!("{cid} has no address")))?;
        let pid = self.inner.containers.status(cid)?.and_then(|s| s.pid);
        Ok(Target {
            address: lease.address,
            pid,
        })
    }

    /// Waits until `service` passes its health check (the web service
    /// without one: until its web port accepts connections).
    async fn wait_healthy(
        &self,
        app: &str,
        service: &str,
        m: &Manifest,
        deadline: Instant,
    ) -> Result<(), AppError> {
        let s = m
            .services
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| AppError::Failed(format!("no service {service}")))?;
        let check = match (&s.health, service == m.web.service) {
            (Some(check), _) => check.clone(),
            (None, true) => HealthCheck::Tcp(m.web.port),
            (None, false) => return Ok(()),
        };
        let cid = container_id(app, service);
        loop {
            if let Some(status) = self.inner.containers.status(&cid)?
                && status.state.is_final()
            {
                let logs = self.inner.containers.logs(&cid, 400).unwrap_or_default();
                return Err(AppError::Failed(format!(
                    "{service} stopped ({}); its last output: {}",
                    status.error.unwrap_or_else(|| format!(
                        "exit code {}",
                        status.exit_code.map_or("unknown".into(), |c| c.to_string())
                    )),
                    String::from_utf8_lossy(&logs).trim()
                )));
            }
            let Err(last) = probe(&check, self.target(&cid)?).await else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return Err(AppError::Failed(format!(
                    "{service} did not become healthy in time: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn route(&self, record: &AppRecord) -> Result<(), AppError> {
        let m = &record.manifest;
        let cid = container_id(&m.id, &m.web.service);
        let address = self.target(&cid)?.address;
        self.inner.routes.set(Backend {
            app: m.id.clone(),
            title: m.title.clone(),
            addr: SocketAddr::from((address, m.web.port)),
        });
        self.inner.mdns.announce(&m.id, &m.title);
        Ok(())
    }

    fn unroute(&self, id: &str) {
        self.inner.routes.remove(id);
        self.inner.mdns.withdraw(id);
    }

    /// Undoes an install, or finishes a removal: containers, addresses,
    /// route, name, images no other app uses, and (when `purge` is set) the
    /// data; then the record.
    async fn tear_down(&self, mut record: AppRecord) -> Result<(), AppError> {
        let id = record.manifest.id.clone();
        if record.step != AppStep::Removing {
            record.step = AppStep::Removing;
            self.record(&record).await?;
        }
        self.say(&id, "removing".into());
        self.unroute(&id);
        for s in start_order(&record.manifest).into_iter().rev() {
            self.inner
                .containers
                .remove_leftovers(&container_id(&id, &s.name))
                .await?;
        }
        for stray in self.app_container_ids(&id)? {
            self.inner.containers.remove_leftovers(&stray).await?;
        }
        if record.purge {
            let dir = self.app_dir(&id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&dir)(e)),
            }
        }
        self.inner.db.delete_app(id.clone()).await?;
        if record.phase == AppPhase::Removing {
            self.lock_activity().remove(&id);
            tracing::info!(app = %id, purge = record.purge, "app removed");
        }
        self.forget_unused_images(&record.manifest).await;
        if let Some(previous) = &record.previous {
            self.forget_unused_images(previous).await;
        }
        Ok(())
    }

    /// After a failed or interrupted update: the previous version's
    /// containers again, from images still on the device.
    async fn roll_back(&self, mut record: AppRecord, why: &str) -> Result<(), AppError> {
        let id = record.manifest.id.clone();
        let Some(previous) = record.previous.take() else {
            return Err(AppError::Failed(format!(
                "{id}: an update without a previous version to return to"
            )));
        };
        tracing::warn!(app = %id, %why, "update failed; rolling back to {}", previous.version);
        let failed = std::mem::replace(&mut record.manifest, previous);
        let message = format!(
            "the update to {} failed and was rolled back to {}: {why}",
            failed.version, record.manifest.version
        );
        record.error = Some(message.clone());
        // Still `updating` until the old version runs: another crash
        // during the rollback rolls back again.
        record.previous = Some(record.manifest.clone());
        self.record(&record).await?;
        let mut attempt = record.clone();
        attempt.previous = None;
        let result = Box::pin(self.bring_up(attempt, Some(message.clone()))).await;
        self.set_activity(&id, |a| a.failure = Some(message));
        self.forget_unused_images(&failed).await;
        result
    }

    /// Deletes the images of `m` that no installed app uses, and the data
    /// only they used. A failure is logged: it only costs disk space.
    async fn forget_unused_images(&self, m: &Manifest) {
        let apps = self.inner.db.apps().await.unwrap_or_default();
        let in_use = |image: &str| {
            apps.iter().any(|a| {
                a.manifest
                    .services
                    .iter()
                    .chain(a.previous.iter().flat_map(|p| p.services.iter()))
                    .any(|s| s.image == image)
            })
        };
        let mut removed = false;
        for s in &m.services {
            if in_use(&s.image) {
                continue;
            }
            if let Ok(r) = ImageRef::parse(&s.image)
                && self.inner.images.remove(&r.to_string()).await.is_ok()
            {
                removed = true;
            }
        }
        if removed && let Err(err) = self.inner.images.gc().await {
            tracing::warn!(%err, "cannot delete unused image data");
        }
    }

    /// Starts every container of an app, in dependency order.
    pub async fn start(&self, id: &str) -> Result<(), AppError> {
        let mut record = self.settled(id).await?;
        record.running = true;
        self.inner.db.update_app(record.clone()).await?;
        let m = &record.manifest;
        for s in start_order(m) {
            self.inner
                .containers
                .start(&container_id(id, &s.name))
                .await?;
        }
        self.route(&record)?;
        Ok(())
    }

    /// Stops every container of an app, dependents first. The app stays
    /// stopped across restarts of the device until started.
    pub async fn stop(&self, id: &str) -> Result<(), AppError> {
        let mut record = self.settled(id).await?;
        record.running = false;
        self.inner.db.update_app(record.clone()).await?;
        for s in start_order(&record.manifest).into_iter().rev() {
            self.inner
                .containers
                .stop(&container_id(id, &s.name))
                .await?;
        }
        Ok(())
    }

    /// Stops a running app's containers for a moment (a backup or restore
    /// of its data) without recording it as stopped: if the supervisor dies
    /// meanwhile, it starts the app again. Returns whether it was running.
    pub async fn pause(&self, id: &str) -> Result<bool, AppError> {
        let record = self.settled(id).await?;
        if !record.running {
            return Ok(false);
        }
        for s in start_order(&record.manifest).into_iter().rev() {
            self.inner
                .containers
                .stop(&container_id(id, &s.name))
                .await?;
        }
        Ok(true)
    }

    /// Starts what [`pause`](Self::pause) stopped.
    pub async fn resume(&self, id: &str) -> Result<(), AppError> {
        let record = self.settled(id).await?;
        for s in start_order(&record.manifest) {
            self.inner
                .containers
                .start(&container_id(id, &s.name))
                .await?;
        }
        Ok(())
    }

    /// Stops and starts an app.
    pub async fn restart(&self, id: &str) -> Result<(), AppError> {
        self.stop(id).await?;
        self.start(id).await
    }

    /// An installed app with no change under way.
    async fn settled(&self, id: &str) -> Result<AppRecord, AppError> {
        let record = self
            .inner
            .db
            .app(id.to_owned())
            .await?
            .ok_or_else(|| AppError::NotInstalled(id.to_owned()))?;
        if record.phase != AppPhase::Installed {
            return Err(AppError::Busy {
                id: id.to_owned(),
                phase: record.phase.to_string(),
            });
        }
        Ok(record)
    }

    /// Moves an app to `manifest` (a newer version) in the background,
    /// keeping its data; if the new version does not become healthy the
    /// previous one is put back.
    pub async fn update(&self, manifest: Manifest) -> Result<AppRecord, AppError> {
        self.check_installable(&manifest)?;
        let _changes = self.inner.changes.lock().await;
        let mut record = self.settled(&manifest.id).await?;
        if record.manifest == manifest {
            return Err(AppError::Refused {
                field: "version".into(),
                message: format!(
                    "{} {} is what is installed already",
                    manifest.title, manifest.version
                ),
            });
        }
        record.previous = Some(std::mem::replace(&mut record.manifest, manifest));
        record.phase = AppPhase::Updating;
        record.step = AppStep::Recorded;
        record.error = None;
        self.record(&record).await?;
        self.lock_activity()
            .insert(record.id().to_owned(), Activity::default());
        tracing::info!(app = %record.id(), "updating");
        self.spawn_continue(record.id().to_owned());
        Ok(record)
    }

    /// Removes an app in the background; its data stays unless `purge`.
    pub async fn remove(&self, id: &str, purge: bool) -> Result<AppRecord, AppError> {
        let _changes = self.inner.changes.lock().await;
        let mut record = self.settled(id).await?;
        record.phase = AppPhase::Removing;
        record.step = AppStep::Recorded;
        record.purge = purge;
        self.record(&record).await?;
        tracing::info!(app = %id, purge, "removing");
        self.spawn_continue(id.to_owned());
        Ok(record)
    }

    /// After the supervisor starts: routes the installed apps, starts
    /// those meant to run whose containers are down, and continues (or
    /// undoes) whatever change a crash interrupted.
    pub async fn recover(&self) -> Result<(), AppError> {
        for record in self.inner.db.apps().await? {
            let id = record.id().to_owned();
            if record.phase != AppPhase::Installed {
                tracing::warn!(app = %id, phase = ?record.phase, step = ?record.step, "continuing an interrupted change");
                self.spawn_continue(id);
                continue;
            }
            if let Err(err) = self.route(&record) {
                tracing::warn!(app = %id, %err, "cannot route the app");
            }
            if record.running {
                for s in start_order(&record.manifest) {
                    let cid = container_id(&id, &s.name);
                    let alive = self
                        .inner
                        .containers
                        .info(&cid)
                        .map(|i| i.shim_alive)
                        .unwrap_or(false);
                    if !alive && let Err(err) = self.inner.containers.start(&cid).await {
                        tracing::warn!(app = %id, container = %cid, %err, "cannot start");
                    }
                }
            }
        }
        Ok(())
    }

    /// Every app record.
    pub async fn list(&self) -> Result<Vec<AppRecord>, AppError> {
        Ok(self.inner.db.apps().await?)
    }

    /// One app record.
    pub async fn get(&self, id: &str) -> Result<Option<AppRecord>, AppError> {
        Ok(self.inner.db.app(id.to_owned()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_start_first() {
        let m = crate::apps::manifest::test_manifest(
            r#"web = { service = "web", port = 80 }
[[services]]
name = "web"
image = "x:1"
ports = [80]
depends_on = [{ service = "db", condition = "started" }, { service = "cache", condition = "started" }]
[[services]]
name = "cache"
image = "x:1"
depends_on = [{ service = "db", condition = "started" }]
[[services]]
name = "db"
image = "x:1"
"#,
        );
        let order: Vec<&str> = start_order(&m).iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["db", "cache", "web"]);
    }
}
