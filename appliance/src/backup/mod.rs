//! Backups: encrypted, deduplicated snapshots in a restic repository the
//! owner chooses, that the stock `restic` program can list, check and
//! restore on any computer.
//!
//! One run saves one snapshot of the device's state (a consistent copy of
//! the database, the device CA and ddaemon's other files, recorded as
//! `/state`) and one per app (its data folder, as `/apps/ID`), all tagged
//! `ddaemon` and `run:TIME`, each with its own `state` or `app:ID` tag. A
//! running app is stopped while its data is read, and started again.
//!
//! The repository's password is the recovery key: generated on the device,
//! shown to the owner once, kept in `DATA/ddaemon/backup/recovery_key`.

pub mod repo;
mod run;
pub mod schedule;
pub mod ssh_key;
pub mod target;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::apps::lifecycle::AppManager;
use crate::field_error::FieldError;
use crate::state::{StateDb, StateError};
use repo::{Meter, Place, Repo, RepoError};
pub use repo::{Retention, SnapshotInfo};
pub use schedule::Schedule;
pub use target::Target;

/// What the owner chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupConfig {
    pub target: Target,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub retention: Retention,
}

/// A request to set where and when backups go.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigRequest {
    pub target: Target,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub retention: Retention,
    /// The recovery key of a repository the target already holds (from
    /// another device, or after a factory reset). Leave it out to start a
    /// new repository.
    #[serde(default)]
    pub recovery_key: Option<String>,
}

/// The answer to a configuration.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Configured {
    /// Shown this once: the key that opens the backups, to write down.
    pub recovery_key: Option<String>,
    /// Whether a new repository was created at the target.
    pub created: bool,
}

/// Errors of the backup service.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("backups are not set up yet; choose where they go first")]
    NotConfigured,
    #[error("{0} is already running; wait until it ends")]
    Busy(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Io(String),
    #[error("the app {0} is not installed")]
    NoApp(String),
}

/// What is running now.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    /// `backup`, `check` or `restore`.
    pub kind: String,
    /// What it is doing, in words.
    pub doing: String,
    /// Bytes of the current step done, and its total (0 while unknown).
    pub done: u64,
    pub total: u64,
    pub started_at: i64,
}

/// How an app's pause went during a backup.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pause {
    pub app: String,
    pub seconds: f64,
}

/// One run, for the page: how it went and what it did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunReport {
    pub kind: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// None while running.
    pub ok: Option<bool>,
    pub error: Option<String>,
    pub seconds: f64,
    pub bytes_added: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub snapshots: Vec<String>,
    pub paused: Vec<Pause>,
    pub forgotten: usize,
}

/// The Backups page's data.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupStatus {
    pub configured: bool,
    /// Without passwords or secret keys.
    pub target: Option<Target>,
    pub target_description: Option<String>,
    pub schedule: Option<Schedule>,
    pub retention: Option<Retention>,
    /// Unix time of the next scheduled backup.
    pub next_run: Option<i64>,
    pub job: Option<JobView>,
    /// The latest runs, newest first.
    pub runs: Vec<RunReport>,
    /// The line to add to an SFTP server's `authorized_keys`.
    pub ssh_public_key: Option<String>,
}

#[derive(Debug)]
struct Job {
    kind: &'static str,
    doing: String,
    started_at: i64,
}

#[derive(Debug)]
struct Inner {
    db: StateDb,
    apps: AppManager,
    data_dir: PathBuf,
    work_dir: PathBuf,
    job: Mutex<Option<Job>>,
    meter: Arc<Meter>,
    /// Woken after a whole-device restore: the supervisor restarts to load it.
    restart: Arc<tokio::sync::Notify>,
    /// Woken when the settings change, so the schedule follows at once.
    settings: Arc<tokio::sync::Notify>,
}

/// The backup service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Backups {
    inner: Arc<Inner>,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// A new recovery key: 128 random bits as eight groups of four hex digits.
fn new_recovery_key() -> Result<String, BackupError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| BackupError::Io(e.to_string()))?;
    let hex = hex::encode(bytes);
    Ok(hex
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-"))
}

/// A key as typed: surrounding blanks dropped, nothing else changed (restic
/// takes the same text).
fn typed_key(key: &str) -> Result<String, FieldError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(FieldError::new(
            "recovery_key",
            "is empty; type the key you wrote down, such as 1a2b-3c4d-…",
        ));
    }
    Ok(key.to_owned())
}

/// Clears the job when a run ends, however it ends.
struct JobGuard(Arc<Inner>);

impl Drop for JobGuard {
    fn drop(&mut self) {
        *self.0.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Backups {
    pub fn new(db: StateDb, apps: AppManager, data_dir: &Path) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                apps,
                data_dir: data_dir.to_owned(),
                work_dir: data_dir.join("ddaemon/backup"),
                job: Mutex::new(None),
                meter: Arc::default(),
                restart: Arc::default(),
                settings: Arc::default(),
            }),
        }
    }

    /// Woken when the backup settings change.
    pub fn settings_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.inner.settings)
    }

    /// Woken when the supervisor must restart to load restored state.
    pub fn restart_requested(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.inner.restart)
    }

    fn key_file(&self) -> PathBuf {
        self.inner.work_dir.join("recovery_key")
    }

    fn ssh_key(&self) -> ssh_key::SshKey {
        ssh_key::SshKey::in_dir(&self.inner.work_dir)
    }

    fn place(&self, target: &Target) -> Place {
        Place {
            address: target.address(&self.ssh_key().private),
            name: target.describe(),
            work_dir: self.inner.work_dir.clone(),
        }
    }

    fn ensure_work_dir(&self) -> Result<(), BackupError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.inner.work_dir)
            .map_err(|e| BackupError::Io(format!("{}: {e}", self.inner.work_dir.display())))
    }

    /// The settings, if the owner made them.
    pub async fn config(&self) -> Result<Option<BackupConfig>, BackupError> {
        let Some(json) = self.inner.db.backup_config().await? else {
            return Ok(None);
        };
        match serde_json::from_str(&json) {
            Ok(config) => Ok(Some(config)),
            Err(err) => {
                tracing::error!(%err, "the backup settings cannot be read; backups are off until they are set again");
                Ok(None)
            }
        }
    }

    fn device_key(&self) -> Option<String> {
        std::fs::read_to_string(self.key_file())
            .ok()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
    }

    /// Chooses the target, schedule and retention. The target is opened
    /// (or a repository created there) before anything is saved, so a
    /// target that does not work is refused with why.
    pub async fn configure(&self, request: ConfigRequest) -> Result<Configured, BackupError> {
        request.target.validate(&self.inner.data_dir)?;
        request.schedule.validate()?;
        let r = request.retention;
        if r.last + r.daily + r.weekly + r.monthly == 0 {
            return Err(FieldError::new(
                "retention",
                "keeps nothing; keep at least the latest snapshot",
            )
            .into());
        }
        if let Some(folder) = request.target.folder()
            && !folder.parent().is_some_and(Path::is_dir)
        {
            // Only the last folder is made: a missing parent is a disk
            // that is not attached, or a typing mistake.
            return Err(FieldError::new(
                "target.path",
                format!(
                    "{} does not exist; attach the disk or choose a folder whose parent exists",
                    folder
                        .parent()
                        .map_or(folder.clone(), Path::to_path_buf)
                        .display()
                ),
            )
            .into());
        }
        let given = request.recovery_key.as_deref().map(typed_key).transpose()?;
        self.ensure_work_dir()?;
        if matches!(request.target, Target::Sftp { .. }) {
            self.ssh_key()
                .seed_or_create()
                .map_err(|e| BackupError::Io(e.to_string()))?;
        }
        let _job = self.begin("check", "opening the backup target".into())?;
        let (key, generated) = match (&given, self.device_key()) {
            (Some(k), _) => (k.clone(), false),
            (None, Some(k)) => (k, false),
            (None, None) => (new_recovery_key()?, true),
        };
        if generated {
            // Kept before any repository is made with it: a client that goes
            // away mid-way must not leave a repository nobody has the key of.
            self.keep_key(&key)?;
        }
        let place = self.place(&request.target);
        let meter = Arc::clone(&self.inner.meter);
        let create = given.is_none();
        let opening = {
            let key = key.clone();
            tokio::task::spawn_blocking(move || {
                repo::probe_rclone(&place)?;
                repo::open(&place, &key, create, meter).map(|(_, c)| c)
            })
            .await
            .map_err(|e| BackupError::Io(e.to_string()))?
        };
        let created = match opening {
            Ok(created) => created,
            Err(RepoError::WrongKey(place)) if given.is_none() => {
                return Err(FieldError::new(
                    "recovery_key",
                    format!("{place} already holds a backup repository made with another key; type its recovery key"),
                )
                .into());
            }
            Err(RepoError::WrongKey(place)) => {
                return Err(FieldError::new(
                    "recovery_key",
                    format!("does not open the backups at {place}; check it against the one you wrote down"),
                )
                .into());
            }
            Err(RepoError::Absent(place)) => {
                return Err(FieldError::new(
                    "target",
                    format!("{place} holds no backup repository; check the address (to start new backups there, leave the recovery key empty)"),
                )
                .into());
            }
            Err(RepoError::Unreachable(place, why)) => {
                return Err(
                    FieldError::new("target", format!("{place} cannot be reached: {why}")).into(),
                );
            }
            Err(other) => return Err(other.into()),
        };
        self.keep_key(&key)?;
        let config = BackupConfig {
            target: request.target,
            schedule: request.schedule,
            retention: request.retention,
        };
        self.inner
            .db
            .set_backup_config(
                serde_json::to_string(&config).map_err(|e| BackupError::Io(e.to_string()))?,
            )
            .await?;
        tracing::info!(target = %config.target.describe(), created, "backups set up");
        self.inner.settings.notify_one();
        Ok(Configured {
            recovery_key: generated.then_some(key),
            created,
        })
    }

    fn keep_key(&self, key: &str) -> Result<(), BackupError> {
        ddaemon_runtime::fs_atomic::write_atomic_mode(
            &self.key_file(),
            format!("{key}\n").as_bytes(),
            0o600,
        )
        .map_err(|e| BackupError::Io(format!("cannot keep the recovery key: {e}")))
    }

    fn begin(&self, kind: &'static str, doing: String) -> Result<JobGuard, BackupError> {
        let mut job = self.inner.job.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = job.as_ref() {
            return Err(BackupError::Busy(format!("a {}", running.kind)));
        }
        self.inner.meter.done.store(0, Ordering::Relaxed);
        self.inner.meter.total.store(0, Ordering::Relaxed);
        *job = Some(Job {
            kind,
            doing,
            started_at: now_unix(),
        });
        Ok(JobGuard(Arc::clone(&self.inner)))
    }

    fn say(&self, doing: String) {
        if let Some(job) = self
            .inner
            .job
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            job.doing = doing;
        }
        self.inner.meter.done.store(0, Ordering::Relaxed);
        self.inner.meter.total.store(0, Ordering::Relaxed);
    }

    /// What the page shows.
    pub async fn status(&self) -> Result<BackupStatus, BackupError> {
        let config = self.config().await?;
        let job = self
            .inner
            .job
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|j| JobView {
                kind: j.kind.to_owned(),
                doing: j.doing.clone(),
                done: self.inner.meter.done.load(Ordering::Relaxed),
                total: self.inner.meter.total.load(Ordering::Relaxed),
                started_at: j.started_at,
            });
        let timezone = self.inner.db.device_settings().await?.timezone;
        let runs = self.runs(10).await?;
        let ssh_public_key = self
            .ssh_key()
            .private
            .exists()
            .then(|| self.ssh_key().public_line("ddaemon-backup").ok());
        Ok(BackupStatus {
            configured: config.is_some(),
            target: config.as_ref().map(|c| c.target.redacted()),
            target_description: config.as_ref().map(|c| c.target.describe()),
            schedule: config.as_ref().map(|c| c.schedule.clone()),
            retention: config.as_ref().map(|c| c.retention),
            next_run: config
                .as_ref()
                .and_then(|c| c.schedule.next_after(now_unix(), timezone.as_deref())),
            job,
            runs,
            ssh_public_key: ssh_public_key.flatten(),
        })
    }

    /// The line to add to an SFTP server's `authorized_keys` (the key is
    /// made if there is none).
    pub fn ssh_public_key(&self) -> Result<String, BackupError> {
        self.ensure_work_dir()?;
        self.ssh_key()
            .public_line("ddaemon-backup")
            .map_err(|e| BackupError::Io(e.to_string()))
    }

    /// The latest runs, newest first.
    pub async fn runs(&self, limit: u32) -> Result<Vec<RunReport>, BackupError> {
        Ok(self
            .inner
            .db
            .backup_runs(limit)
            .await?
            .into_iter()
            .map(|row| {
                let mut report: RunReport = serde_json::from_str(&row.report).unwrap_or_default();
                report.kind = row.kind;
                report.started_at = row.started_at;
                report.finished_at = row.finished_at;
                report
            })
            .collect())
    }

    /// Opens the configured repository (on the blocking pool) and runs `f`.
    async fn with_repo<T: Send + 'static>(
        &self,
        config: &BackupConfig,
        key: Option<String>,
        f: impl FnOnce(Repo) -> Result<T, RepoError> + Send + 'static,
    ) -> Result<T, BackupError> {
        let key = key.or_else(|| self.device_key()).ok_or_else(|| {
            BackupError::Io(format!(
                "the recovery key is missing from {}; set the target again with the key you wrote down",
                self.key_file().display()
            ))
        })?;
        let place = self.place(&config.target);
        let meter = Arc::clone(&self.inner.meter);
        Ok(tokio::task::spawn_blocking(move || {
            let (repo, _) = repo::open(&place, &key, false, meter)?;
            f(repo)
        })
        .await
        .map_err(|e| BackupError::Io(e.to_string()))??)
    }

    async fn configured(&self) -> Result<BackupConfig, BackupError> {
        self.config().await?.ok_or(BackupError::NotConfigured)
    }

    /// Every ddaemon snapshot in the repository, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotInfo>, BackupError> {
        let config = self.configured().await?;
        self.with_repo(&config, None, |repo| repo.snapshots()).await
    }

    /// Starts a backup in the background; its progress shows in
    /// [`status`](Self::status).
    pub async fn start_backup(&self) -> Result<(), BackupError> {
        let config = self.configured().await?;
        let guard = self.begin("backup", "starting".into())?;
        let this = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            this.record("backup", |report| this.backup(config, report))
                .await;
        });
        Ok(())
    }

    /// Runs `work` as a recorded run: its report is saved when it starts
    /// and when it ends, and a failure is logged for the journal.
    async fn record<F>(&self, kind: &str, work: impl FnOnce(RunReport) -> F)
    where
        F: std::future::Future<Output = (RunReport, Result<(), BackupError>)>,
    {
        let started = Instant::now();
        let report = RunReport {
            kind: kind.to_owned(),
            started_at: now_unix(),
            ..RunReport::default()
        };
        let id = match self
            .inner
            .db
            .start_backup_run(kind, serde_json::to_string(&report).unwrap_or_default())
            .await
        {
            Ok(id) => id,
            Err(err) => {
                tracing::error!(%err, kind, "cannot record the run");
                return;
            }
        };
        let (mut report, outcome) = work(report).await;
        report.seconds = started.elapsed().as_secs_f64();
        match &outcome {
            Ok(()) => {
                report.ok = Some(true);
                tracing::info!(
                    kind,
                    seconds = report.seconds,
                    bytes_added = report.bytes_added,
                    "backup run finished"
                );
            }
            Err(err) => {
                report.ok = Some(false);
                report.error = Some(err.to_string());
                tracing::error!(kind, %err, "backup run failed");
            }
        }
        if let Err(err) = self
            .inner
            .db
            .finish_backup_run(id, serde_json::to_string(&report).unwrap_or_default())
            .await
        {
            tracing::error!(%err, kind, "cannot record the run's end");
        }
    }
}

impl Backups {
    /// Records the runs a stopped supervisor left unfinished as failed.
    pub async fn close_interrupted_runs(&self) -> Result<(), BackupError> {
        for row in self.inner.db.unfinished_backup_runs().await? {
            let mut report: RunReport = serde_json::from_str(&row.report).unwrap_or_default();
            report.ok = Some(false);
            report.error = Some("interrupted: the supervisor stopped before it ended".into());
            tracing::warn!(kind = %row.kind, started_at = row.started_at, "a backup run was interrupted");
            self.inner
                .db
                .finish_backup_run(row.id, serde_json::to_string(&report).unwrap_or_default())
                .await?;
        }
        Ok(())
    }

    /// Whether a run is under way.
    pub fn busy(&self) -> bool {
        self.inner
            .job
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Waits until no run is under way.
    pub async fn wait_idle(&self) {
        while self.busy() {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// When a run of `kind` last succeeded (Unix seconds).
    pub async fn last_success(&self, kind: &str) -> Result<i64, BackupError> {
        Ok(self
            .runs(100)
            .await?
            .into_iter()
            .find(|r| r.kind == kind && r.ok == Some(true))
            .and_then(|r| r.finished_at)
            .unwrap_or(0))
    }
}
