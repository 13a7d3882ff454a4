//! The restic repository, through rustic: open or create it, back a folder
//! up, list, forget and prune, check, restore.
//!
//! Everything here blocks (rustic uses threads and blocking HTTP), so the
//! callers run it on tokio's blocking pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustic_backend::BackendOptions;
use rustic_core::repofile::SnapshotFile;
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, ForgetGroups, Grouped, KeepOptions,
    KeyOptions, LocalDestination, LsOptions, PathList, PruneOptions, ReadSubsetOption, Repository,
    RepositoryOptions, RestoreOptions, RusticError, SnapshotGroupCriterion, SnapshotOptions,
};
use rustic_core::{IndexedIds, OpenStatus, Progress, ProgressBars, ProgressType, RusticProgress};
use serde::Serialize;

use super::target::Address;

/// The tag every ddaemon snapshot carries.
pub const TAG: &str = "ddaemon";
/// The tag of the snapshot holding the device's own state.
pub const STATE_TAG: &str = "state";
/// The prefix of an app's tag (`app:jellyfin`).
pub const APP_TAG_PREFIX: &str = "app:";
/// The prefix of the tag shared by the snapshots of one run (`run:1764250000`).
pub const RUN_TAG_PREFIX: &str = "run:";

/// What can go wrong with the repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("the recovery key does not open the backup repository at {0}")]
    WrongKey(String),
    #[error(
        "there is no backup repository at {0}; check the address, the login in it, and that its disk is attached"
    )]
    Absent(String),
    #[error("{0} cannot be reached: {1}")]
    Unreachable(String, String),
    #[error("no snapshot {0} in the backup repository")]
    NoSnapshot(String),
    #[error("{0}")]
    Failed(String),
}

impl RepoError {
    fn from_rustic(place: &str, err: &RusticError) -> Self {
        let log = err.display_log();
        if err.is_incorrect_password() {
            Self::WrongKey(place.to_owned())
        } else if log.contains("No repository config file found") {
            Self::Absent(place.to_owned())
        } else if log.contains("Backoff failed")
            || log.contains("error sending request")
            || log.contains("rclone exited")
        {
            Self::Unreachable(place.to_owned(), short(&log))
        } else {
            Self::Failed(short(&log))
        }
    }
}

/// rustic's log form, without its "please check the logs" advice.
fn short(log: &str) -> String {
    log.trim_start_matches("Error: ").to_owned()
}

/// How far the current step is, shared with the page.
#[derive(Debug, Default)]
pub struct Meter {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

#[derive(Debug, Clone)]
struct MeterBars(Arc<Meter>);

#[derive(Debug)]
struct MeterProgress(Arc<Meter>);

impl RusticProgress for MeterProgress {
    fn is_hidden(&self) -> bool {
        // Visible, or rustic never scans for the backup's total size.
        false
    }
    fn set_length(&self, len: u64) {
        self.0.total.store(len, Ordering::Relaxed);
    }
    fn set_title(&self, _: &str) {}
    fn inc(&self, inc: u64) {
        self.0.done.fetch_add(inc, Ordering::Relaxed);
    }
    fn finish(&self) {}
}

impl ProgressBars for MeterBars {
    fn progress(&self, kind: ProgressType, _prefix: &str) -> Progress {
        match kind {
            ProgressType::Bytes => {
                self.0.done.store(0, Ordering::Relaxed);
                self.0.total.store(0, Ordering::Relaxed);
                Progress::new(MeterProgress(Arc::clone(&self.0)))
            }
            _ => Progress::hidden(),
        }
    }
}

/// Where the repository is and how to reach it.
#[derive(Debug, Clone)]
pub struct Place {
    pub address: Address,
    /// What the owner calls it, for messages.
    pub name: String,
    /// ddaemon's own backup folder: cache and rclone.conf.
    pub work_dir: PathBuf,
}

impl Place {
    fn rclone_conf(&self) -> PathBuf {
        self.work_dir.join("rclone.conf")
    }

    fn backend_options(&self) -> Result<BackendOptions, RepoError> {
        // A dead server fails in seconds rather than after rustic's five
        // doubling retries.
        let mut options = BTreeMap::from([("retry".to_owned(), "2".to_owned())]);
        if let Some(conf) = &self.address.rclone_config {
            ddaemon_runtime::fs_atomic::write_atomic_mode(
                &self.rclone_conf(),
                conf.as_bytes(),
                0o600,
            )
            .map_err(|e| RepoError::Failed(format!("cannot write rclone.conf: {e}")))?;
            options.insert(
                "rclone-command".to_owned(),
                format!(
                    "rclone --config {} serve restic --addr localhost:0",
                    self.rclone_conf().display()
                ),
            );
        }
        Ok(BackendOptions::default()
            .repository(self.address.repository.clone())
            .options(options))
    }
}

/// For an rclone target, a quick look at the remote's top with rclone
/// itself: when it fails, its own last words say why (a key the SFTP
/// server does not accept, a wrong secret), which rustic would only log.
pub fn probe_rclone(place: &Place) -> Result<(), RepoError> {
    let Some(remote) = place.address.repository.strip_prefix("rclone:") else {
        return Ok(());
    };
    let Some((name, _)) = remote.split_once(':') else {
        return Ok(());
    };
    place.backend_options()?;
    let output = std::process::Command::new("rclone")
        .arg("--config")
        .arg(place.rclone_conf())
        .args([
            "lsf",
            "--max-depth",
            "1",
            "--contimeout",
            "15s",
            "--low-level-retries",
            "1",
            "--retries",
            "1",
        ])
        .arg(format!("{name}:"))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| RepoError::Failed(format!("rclone cannot be run ({e}); install rclone")))?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let last = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim();
    Err(RepoError::Unreachable(
        place.name.clone(),
        format!("rclone says: {last}"),
    ))
}

/// An open repository.
#[derive(Debug)]
pub struct Repo {
    inner: Repository<OpenStatus>,
    place: String,
}

/// Opens the repository at `place` with `key`; with `create`, makes one if
/// there is none (the bool says whether it did).
pub fn open(
    place: &Place,
    key: &str,
    create: bool,
    meter: Arc<Meter>,
) -> Result<(Repo, bool), RepoError> {
    let name = place.name.clone();
    let err = |e: Box<RusticError>| RepoError::from_rustic(&name, &e);
    if let Some(dir) = place.address.repository.strip_prefix("local:")
        && create
    {
        std::fs::create_dir(dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| RepoError::Failed(format!("cannot create {dir}: {e}")))?;
    }
    let backends = place.backend_options()?.to_backends().map_err(err)?;
    let options = RepositoryOptions::default().cache_dir(place.work_dir.join("cache"));
    let repo = Repository::new_with_progress(&options, &backends, MeterBars(meter)).map_err(err)?;
    let credentials = Credentials::password(key);
    let exists = repo.config_id().map_err(err)?.is_some();
    let (inner, created) = match (exists, create) {
        (true, _) => (repo.open(&credentials).map_err(err)?, false),
        (false, true) => {
            // rustic takes any failed look at `config` for "none"; a
            // server that hiccups must not get a new repository written
            // over the keys of one that is there.
            match backends.repository().list(rustic_core::FileType::Key) {
                Ok(keys) if keys.is_empty() => {}
                Ok(_) => {
                    return Err(RepoError::Failed(format!(
                        "{name} holds restic keys but its config could not be read; try again later"
                    )));
                }
                Err(e) => return Err(err(e)),
            }
            (
                repo.init(
                    &credentials,
                    &KeyOptions::default(),
                    &ConfigOptions::default(),
                )
                .map_err(err)?,
                true,
            )
        }
        (false, false) => return Err(RepoError::Absent(name)),
    };
    Ok((Repo { inner, place: name }, created))
}

/// One snapshot, as the page and the CLI show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SnapshotInfo {
    /// The full id (`restic restore ID` takes it, or its first 8 characters).
    pub id: String,
    /// RFC 3339.
    pub time: String,
    pub unix: i64,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
    /// The app whose data it holds; none for the device's state.
    pub app: Option<String>,
    /// The run it belongs to (shared by one backup's snapshots).
    pub run: Option<String>,
    /// The device that made it.
    pub host: String,
    /// Bytes read.
    pub total_bytes: u64,
    /// New bytes this snapshot stored (before compression).
    pub bytes_added: u64,
}

fn tagged<'a>(s: &'a SnapshotFile, prefix: &str) -> Option<&'a str> {
    s.tags.iter().find_map(|t| t.strip_prefix(prefix))
}

impl SnapshotInfo {
    fn of(s: &SnapshotFile) -> Self {
        Self {
            id: s.id.to_hex().as_str().to_owned(),
            time: s.time.timestamp().to_string(),
            unix: s.time.timestamp().as_second(),
            tags: s.tags.iter().cloned().collect(),
            paths: s.paths.iter().cloned().collect(),
            app: tagged(s, APP_TAG_PREFIX).map(str::to_owned),
            run: tagged(s, RUN_TAG_PREFIX).map(str::to_owned),
            host: s.hostname.clone(),
            total_bytes: s.summary.as_ref().map_or(0, |m| m.total_bytes_processed),
            bytes_added: s.summary.as_ref().map_or(0, |m| m.data_added),
        }
    }
}

/// What one folder's backup did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Saved {
    pub snapshot: SnapshotInfo,
    pub files_new: u64,
    pub files_changed: u64,
}

/// Retention: how many of the latest, daily, weekly and monthly snapshots
/// of each app and of the state are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The latest ones, whatever their day (a backup made by hand before
    /// a change is not forgotten the same night).
    #[serde(default = "three")]
    pub last: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            last: three(),
            daily: 7,
            weekly: 4,
            monthly: 12,
        }
    }
}

fn three() -> u32 {
    3
}

fn i32_of(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl Repo {
    fn err(&self) -> impl Fn(Box<RusticError>) -> RepoError + '_ {
        |e| RepoError::from_rustic(&self.place, &e)
    }

    /// Every ddaemon snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>, RepoError> {
        let mut all = self
            .inner
            .get_matching_snapshots(|s| s.tags.contains(TAG))
            .map_err(self.err())?;
        all.sort();
        Ok(all.iter().map(SnapshotInfo::of).collect())
    }

    /// Backs up each source, in order, as one run; `around` is called
    /// before and after each (to stop an app and start it again), also
    /// after a failed one.
    pub fn backup(
        self,
        host: &str,
        run: &str,
        sources: Vec<Source>,
        mut around: impl FnMut(Moment, &Source),
    ) -> Result<(Self, Vec<Saved>), RepoError> {
        let place = self.place.clone();
        let err = |e: Box<RusticError>| RepoError::from_rustic(&place, &e);
        let indexed = self.inner.to_indexed_ids().map_err(err)?;
        let time = rustic_core::jiff::Zoned::now();
        let mut saved = Vec::new();
        let mut failed = Vec::new();
        for source in sources {
            around(Moment::Before, &source);
            let result = backup_one(&indexed, host, run, &time, &source);
            around(Moment::After, &source);
            // One folder that cannot be read must not keep the others
            // from being saved.
            match result {
                Ok(s) => saved.push(s),
                Err(e) => failed.push(format!("{}: {}", source.recorded, err(e))),
            }
        }
        if !failed.is_empty() {
            return Err(RepoError::Failed(failed.join("; ")));
        }
        // Back to the plain open state for what follows (forget, prune).
        let inner = indexed.drop_index();
        Ok((Self { inner, place }, saved))
    }

    /// Forgets the snapshots retention no longer keeps (each app's and the
    /// state's counted apart) and deletes the data only they used.
    pub fn forget_and_prune(&self, host: &str, keep: Retention) -> Result<usize, RepoError> {
        let options = KeepOptions::default()
            .keep_last(Some(i32_of(keep.last)))
            .keep_daily(Some(i32_of(keep.daily)))
            .keep_weekly(Some(i32_of(keep.weekly)))
            .keep_monthly(Some(i32_of(keep.monthly)));
        // Another device's snapshots in the same repository follow its
        // own retention, not this one's.
        let snapshots = self
            .inner
            .get_matching_snapshots(|s| s.tags.contains(TAG) && s.hostname == host)
            .map_err(self.err())?;
        // Grouped by paths: /state and each /apps/ID keep their own count.
        let groups = ForgetGroups::from_grouped_snapshots_with_retention(
            Grouped::from_items(snapshots, SnapshotGroupCriterion::default()),
            &options,
            &rustic_core::jiff::Zoned::now(),
        )
        .map_err(self.err())?;
        let forget = groups.into_forget_ids();
        if forget.is_empty() {
            return Ok(0);
        }
        self.inner.delete_snapshots(&forget).map_err(self.err())?;
        // rustic takes no lock, and another device or restic may be
        // writing: unused data is only marked, and deleted by a prune a
        // day later (restic counts the marked packs as harmless extras).
        let prune = PruneOptions::default();
        let plan = self.inner.prune_plan(&prune).map_err(self.err())?;
        self.inner.prune(&prune, plan).map_err(self.err())?;
        Ok(forget.len())
    }

    /// Checks the repository's structure, and reads back and verifies
    /// `read_percent` % of its data (a different part each time, so a
    /// weekly check reads everything over the months).
    pub fn check(&self, read_percent: f64) -> Result<(), RepoError> {
        let options = CheckOptions::default()
            .read_data(read_percent > 0.0)
            .read_data_subset(ReadSubsetOption::Percentage(read_percent));
        let results = self.inner.check(options).map_err(self.err())?;
        if results.is_ok().is_err() {
            let found: Vec<String> = results
                .0
                .iter()
                .filter(|(level, _)| format!("{level:?}") == "Error")
                .map(|(_, e)| e.to_string())
                .collect();
            return Err(RepoError::Failed(format!(
                "the check found errors: {}",
                found.join("; ")
            )));
        }
        Ok(())
    }

    /// The snapshot whose id starts with `id`.
    pub fn snapshot(&self, id: &str) -> Result<SnapshotInfo, RepoError> {
        if id.len() < 4 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(RepoError::NoSnapshot(id.to_owned()));
        }
        self.inner
            .get_snapshot_from_str(id, |s| s.tags.contains(TAG))
            .map(|s| SnapshotInfo::of(&s))
            .map_err(|_| RepoError::NoSnapshot(id.to_owned()))
    }

    /// Restores the folder `path` of snapshot `id` into `dest` (its contents
    /// become `dest`'s), which must be empty or absent.
    pub fn restore(self, id: &str, path: &str, dest: &Path) -> Result<Self, RepoError> {
        let place = self.place.clone();
        let err = |e: Box<RusticError>| RepoError::from_rustic(&place, &e);
        let indexed = self.inner.to_indexed().map_err(err)?;
        let result = (|| {
            let node = indexed
                .node_from_snapshot_path(&format!("{id}:{path}"), |s| s.tags.contains(TAG))
                .map_err(err)?;
            let nodes = indexed.ls(&node, &LsOptions::default()).map_err(err)?;
            let dest = LocalDestination::new(&dest.to_string_lossy(), true, !node.is_dir())
                .map_err(err)?;
            let options = RestoreOptions::default().numeric_id(true);
            let plan = indexed
                .prepare_restore(&options, nodes.clone(), &dest, false)
                .map_err(err)?;
            indexed.restore(plan, &options, nodes, &dest).map_err(err)
        })();
        let inner = indexed.drop_index();
        result.map(|()| Self { inner, place })
    }
}

/// Before or after one source's backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    Before,
    After,
}

/// A folder to back up.
#[derive(Debug, Clone)]
pub struct Source {
    pub folder: PathBuf,
    /// The path the snapshot records (`/state`, `/apps/ID`).
    pub recorded: String,
    /// Its own tag (`state` or `app:ID`).
    pub tag: String,
}

fn backup_one(
    repo: &Repository<impl IndexedIds>,
    host: &str,
    run: &str,
    time: &rustic_core::jiff::Zoned,
    source: &Source,
) -> Result<Saved, Box<RusticError>> {
    // sanitize() fails on a missing folder instead of saving an empty
    // snapshot.
    let paths = PathList::from_string(&source.folder.to_string_lossy())?
        .sanitize()
        .map_err(|e| {
            RusticError::with_source(
                rustic_core::ErrorKind::InvalidInput,
                "cannot read the folder to back up",
                e,
            )
        })?;
    let options = BackupOptions::default().as_path(Some(PathBuf::from(&source.recorded)));
    let snapshot = SnapshotOptions::default()
        .host(Some(host.to_owned()))
        .label(Some(TAG.to_owned()))
        .time(Some(time.clone()))
        .add_tags(&format!("{TAG},{},{RUN_TAG_PREFIX}{run}", source.tag))?
        .to_snapshot()?;
    let done = repo.backup(&options, &paths, snapshot)?;
    let summary = done.summary.clone().unwrap_or_default();
    Ok(Saved {
        snapshot: SnapshotInfo::of(&done),
        files_new: summary.files_new,
        files_changed: summary.files_changed,
    })
}
