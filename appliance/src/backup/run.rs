//! The runs themselves: a backup, a check, and restores of one app or of
//! the whole device.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::runtime::Handle;

use super::repo::{APP_TAG_PREFIX, Moment, RepoError, STATE_TAG, Source};
use super::{BackupConfig, BackupError, Backups, ConfigRequest, Pause, RunReport};
use crate::field_error::FieldError;

/// ddaemon's files under `DATA/ddaemon` that a backup leaves out: the live
/// database (a consistent copy goes instead), the backup's own folder (its
/// cache, and the key that opens the backup anyway), and a pending factory
/// reset (restored, it would wipe the device at the next boot).
const NOT_SAVED: [&str; 5] = [
    "state.db",
    "state.db-wal",
    "state.db-shm",
    "backup",
    "factory-reset",
];

/// How much of the backed-up data a check reads back and verifies.
const CHECK_READ_PERCENT: f64 = 5.0;

fn io(what: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |e| BackupError::Io(format!("{}: {e}", what.display()))
}

/// Copies the folder `from` into `to` (files, folders and symlinks, with
/// their modes), leaving out the top-level names in `skip`.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).map_err(io(to))?;
    let mode = std::fs::metadata(from)
        .map_err(io(from))?
        .permissions()
        .mode();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type().map_err(io(&src))?;
        if kind.is_dir() {
            copy_tree(&src, &dst, &[])?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(&src).map_err(io(&src))?;
            std::os::unix::fs::symlink(link, &dst).map_err(io(&dst))?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).map_err(io(&src))?;
        }
    }
    Ok(())
}

fn remove_if_present(dir: &Path) -> Result<(), BackupError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(dir)(e)),
        _ => Ok(()),
    }
}

/// Runs filesystem work (a copy, a deletion of a large folder) on the
/// blocking pool, away from the threads that serve the page.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackupError::Io(e.to_string()))?
}

fn aside_of(live: &Path) -> PathBuf {
    live.with_file_name(format!(
        ".{}.before-restore",
        live.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ))
}

/// Puts `fresh` in the place of `live` (a folder or a file): the old one is
/// moved aside first and deleted last, so at every moment one whole version
/// is in place, and a swap a power cut interrupted is undone the next time.
fn swap_in(fresh: &Path, live: &Path) -> Result<(), BackupError> {
    let aside = aside_of(live);
    if !live.exists() && aside.exists() {
        // The only copy is the one set aside: put it back before anything.
        std::fs::rename(&aside, live).map_err(io(&aside))?;
    }
    remove_any(&aside)?;
    // The restored files reach the disk before the old ones can go.
    sync_filesystem(fresh)?;
    if live.exists() {
        std::fs::rename(live, &aside).map_err(io(live))?;
    }
    if let Err(e) = std::fs::rename(fresh, live) {
        let _ = std::fs::rename(&aside, live);
        return Err(io(fresh)(e));
    }
    remove_any(&aside)
}

fn remove_any(path: &Path) -> Result<(), BackupError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => remove_if_present(path),
        Ok(_) => std::fs::remove_file(path).map_err(io(path)),
        Err(_) => Ok(()),
    }
}

fn sync_filesystem(path: &Path) -> Result<(), BackupError> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).map_err(io(path))?;
    nix::unistd::syncfs(file.as_raw_fd()).map_err(|e| io(path)(e.into()))
}

impl Backups {
    fn restoring_dir(&self, app: &str) -> PathBuf {
        self.inner
            .data_dir
            .join("apps")
            .join(format!(".{app}.restoring"))
    }

    pub(super) async fn backup(
        &self,
        config: BackupConfig,
        mut report: RunReport,
    ) -> (RunReport, Result<(), BackupError>) {
        let result = self.backup_into(&config, &mut report).await;
        (report, result)
    }

    async fn backup_into(
        &self,
        config: &BackupConfig,
        report: &mut RunReport,
    ) -> Result<(), BackupError> {
        self.say("copying the device's state".into());
        let staging = self.inner.work_dir.join("staging");
        {
            let staging = staging.clone();
            blocking(move || remove_if_present(&staging)).await?;
        }
        let state = staging.join("state");
        std::fs::create_dir_all(&state).map_err(io(&state))?;
        self.inner.db.copy_to(&state.join("state.db")).await?;
        let ddaemon_dir = self.inner.data_dir.join("ddaemon");
        {
            let (from, to) = (ddaemon_dir.clone(), state.clone());
            tokio::task::spawn_blocking(move || copy_tree(&from, &to, &NOT_SAVED))
                .await
                .map_err(|e| BackupError::Io(e.to_string()))??;
        }
        let mut sources = vec![Source {
            folder: state,
            recorded: "/state".into(),
            tag: STATE_TAG.into(),
        }];
        for app in self
            .inner
            .apps
            .list()
            .await
            .map_err(|e| BackupError::Io(e.to_string()))?
        {
            let folder = self.inner.apps.app_dir(app.id());
            if folder.is_dir() {
                sources.push(Source {
                    folder,
                    recorded: format!("/apps/{}", app.id()),
                    tag: format!("{APP_TAG_PREFIX}{}", app.id()),
                });
            }
        }
        let host = self
            .inner
            .db
            .device_settings()
            .await?
            .device_name
            .unwrap_or_else(|| crate::system::DEFAULT_DEVICE_NAME.to_owned());
        let run = report.started_at.to_string();
        let retention = config.retention;
        let this = self.clone();
        let handle = Handle::current();
        let mut log = report.clone();
        let outcome = self
            .with_repo(config, None, move |repo| {
                let mut paused: Option<(String, Instant)> = None;
                let around = |moment: Moment, source: &Source| match moment {
                    Moment::Before => {
                        this.say(format!("backing up {}", source.recorded));
                        if let Some(app) = source.tag.strip_prefix(APP_TAG_PREFIX) {
                            match handle.block_on(this.inner.apps.pause(app)) {
                                Ok(true) => paused = Some((app.to_owned(), Instant::now())),
                                Ok(false) => {}
                                Err(err) => tracing::warn!(app, %err, "cannot stop the app for its backup; saving it running"),
                            }
                        }
                    }
                    Moment::After => if let Some((app, since)) = paused.take() {
                        if let Err(err) = handle.block_on(this.inner.apps.resume(&app)) {
                            tracing::error!(app, %err, "cannot start the app again after its backup");
                        }
                        log.paused.push(Pause {
                            app,
                            seconds: since.elapsed().as_secs_f64(),
                        });
                    },
                };
                let (repo, saved) = repo.backup(&host, &run, sources, around)?;
                for s in &saved {
                    log.bytes_added += s.snapshot.bytes_added;
                    log.files_new += s.files_new;
                    log.files_changed += s.files_changed;
                    log.snapshots.push(s.snapshot.id.clone());
                }
                this.say("forgetting old snapshots".into());
                log.forgotten = repo.forget_and_prune(&host, retention)?;
                Ok(log)
            })
            .await;
        blocking(move || remove_if_present(&staging)).await?;
        *report = outcome?;
        Ok(())
    }

    /// Starts a check of the repository in the background.
    pub async fn start_check(&self) -> Result<(), BackupError> {
        let config = self.configured().await?;
        let guard = self.begin("check", "checking the backups".into())?;
        let this = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            this.record("check", |report| async {
                let result = this
                    .with_repo(&config, None, |repo| repo.check(CHECK_READ_PERCENT))
                    .await;
                (report, result)
            })
            .await;
        });
        Ok(())
    }

    /// Starts putting one app's data back as it was in `snapshot`: the app
    /// is stopped, its folder replaced whole, and started again.
    pub async fn start_restore_app(&self, app: &str, snapshot: &str) -> Result<(), BackupError> {
        let config = self.configured().await?;
        let record = self
            .inner
            .apps
            .get(app)
            .await
            .map_err(|e| BackupError::Io(e.to_string()))?
            .ok_or_else(|| BackupError::NoApp(app.to_owned()))?;
        let id = snapshot.to_owned();
        let found = self
            .with_repo(&config, None, move |repo| repo.snapshot(&id))
            .await;
        let found = match found {
            Err(BackupError::Repo(RepoError::NoSnapshot(_))) => {
                return Err(FieldError::new(
                    "snapshot",
                    format!("{snapshot} is not a ddaemon snapshot in this repository"),
                )
                .into());
            }
            other => other?,
        };
        if found.app.as_deref() != Some(record.id()) {
            return Err(FieldError::new(
                "snapshot",
                format!(
                    "{} holds {}, not {}",
                    &found.id[..8],
                    found
                        .app
                        .as_deref()
                        .map_or("the device's state".into(), |a| format!("the app {a}")),
                    record.id()
                ),
            )
            .into());
        }
        let guard = self.begin("restore", format!("restoring {}", record.id()))?;
        let this = self.clone();
        let app = record.id().to_owned();
        tokio::spawn(async move {
            let _guard = guard;
            this.record("restore", |report| async {
                let result = this.restore_app(&config, &app, &found.id).await;
                (report, result)
            })
            .await;
        });
        Ok(())
    }

    async fn restore_app(
        &self,
        config: &BackupConfig,
        app: &str,
        snapshot: &str,
    ) -> Result<(), BackupError> {
        let fresh = self.restoring_dir(app);
        let result = self.restore_app_from(config, app, snapshot, &fresh).await;
        if result.is_err() {
            // A failed restore must not leave its copy filling the disk.
            blocking(move || remove_if_present(&fresh)).await?;
        }
        result
    }

    async fn restore_app_from(
        &self,
        config: &BackupConfig,
        app: &str,
        snapshot: &str,
        fresh: &Path,
    ) -> Result<(), BackupError> {
        {
            let fresh = fresh.to_owned();
            blocking(move || remove_if_present(&fresh)).await?;
        }
        let (id, path, dest) = (
            snapshot.to_owned(),
            format!("/apps/{app}"),
            fresh.to_owned(),
        );
        self.with_repo(config, None, move |repo| {
            repo.restore(&id, &path, &dest).map(drop)
        })
        .await?;
        let was_running = self
            .inner
            .apps
            .pause(app)
            .await
            .map_err(|e| BackupError::Io(e.to_string()))?;
        let (from, to) = (fresh.to_owned(), self.inner.apps.app_dir(app));
        let swapped = blocking(move || swap_in(&from, &to)).await;
        if was_running && let Err(err) = self.inner.apps.resume(app).await {
            tracing::error!(app, %err, "cannot start the app after its restore");
        }
        swapped?;
        tracing::info!(app, snapshot, "app data restored");
        Ok(())
    }

    /// The setup wizard's "restore from a backup": opens `target` with the
    /// owner's recovery key and restores the whole device from its latest
    /// backup. Only before setup.
    pub async fn start_restore_new_device(
        &self,
        target: super::Target,
        recovery_key: String,
    ) -> Result<(), BackupError> {
        self.configure(ConfigRequest {
            target,
            schedule: super::Schedule::default(),
            retention: super::Retention::default(),
            recovery_key: Some(recovery_key),
        })
        .await?;
        let started = self.restore_device_from(None, true).await;
        if started.is_err() {
            self.forget_config().await;
        }
        started
    }

    /// Undoes the wizard's configuration after its restore failed: a device
    /// then set up afresh must not back up into, and prune, the backups it
    /// could not restore.
    async fn forget_config(&self) {
        if let Err(err) = self.inner.db.clear_backup_config().await {
            tracing::error!(%err, "cannot clear the backup settings");
        }
        let _ = std::fs::remove_file(self.key_file());
    }

    /// Starts restoring the whole device from the backup run whose state
    /// snapshot is `snapshot` (the latest when none): every app's data, then
    /// the state database and ddaemon's files; then the supervisor restarts
    /// to load them, and installs each app again from its manifest.
    pub async fn start_restore_device(&self, snapshot: Option<String>) -> Result<(), BackupError> {
        self.restore_device_from(snapshot, false).await
    }

    async fn restore_device_from(
        &self,
        snapshot: Option<String>,
        new_device: bool,
    ) -> Result<(), BackupError> {
        let config = self.configured().await?;
        let all = self.snapshots().await?;
        let state = match &snapshot {
            Some(id) => all
                .iter()
                .find(|s| s.id.starts_with(id.as_str()) && id.len() >= 4),
            None => all
                .iter()
                .rev()
                .find(|s| s.tags.iter().any(|t| t == STATE_TAG)),
        };
        let Some(state) = state
            .filter(|s| s.tags.iter().any(|t| t == STATE_TAG))
            .cloned()
        else {
            return Err(FieldError::new(
                "snapshot",
                match snapshot {
                    Some(id) => format!(
                        "{id} is not a snapshot of the device's state; pick one tagged state"
                    ),
                    None => "the repository holds no backup of a device's state".into(),
                },
            )
            .into());
        };
        // Each app's latest snapshot up to the state's, from the same
        // device: its own run's, or an earlier one where that run failed
        // before reaching the app.
        let mut apps: Vec<(String, String)> = Vec::new();
        for s in all
            .iter()
            .filter(|s| s.unix <= state.unix && s.host == state.host)
        {
            if let Some(app) = &s.app {
                apps.retain(|(a, _)| a != app);
                apps.push((app.clone(), s.id.clone()));
            }
        }
        let guard = self.begin("restore", "restoring the device".into())?;
        let this = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let (started, started_at) = (Instant::now(), super::now_unix());
            let result = this.restore_device(&config, &state.id, &apps).await;
            // Recorded afterwards: the run's row would otherwise be in the
            // database the restore replaced.
            let report = RunReport {
                kind: "restore".into(),
                ok: Some(result.is_ok()),
                error: result.as_ref().err().map(ToString::to_string),
                seconds: started.elapsed().as_secs_f64(),
                snapshots: std::iter::once(state.id.clone())
                    .chain(apps.iter().map(|(_, id)| id.clone()))
                    .collect(),
                ..RunReport::default()
            };
            if let Err(err) = &result {
                tracing::error!(%err, "the restore failed");
            }
            if let Err(err) = this
                .inner
                .db
                .add_finished_backup_run(
                    "restore",
                    started_at,
                    serde_json::to_string(&report).unwrap_or_default(),
                )
                .await
            {
                tracing::error!(%err, "cannot record the restore");
            }
            match &result {
                Ok(()) => {
                    tracing::warn!("the device was restored; restarting to load it");
                    this.inner.restart.notify_one();
                }
                Err(_) if new_device => this.forget_config().await,
                Err(_) => {}
            }
        });
        Ok(())
    }

    async fn restore_device(
        &self,
        config: &BackupConfig,
        state: &str,
        apps: &[(String, String)],
    ) -> Result<(), BackupError> {
        let staged = self.inner.work_dir.join("restoring");
        let mut fresh_dirs = vec![staged.clone()];
        fresh_dirs.extend(apps.iter().map(|(app, _)| self.restoring_dir(app)));
        let result = self
            .restore_device_from_staging(config, state, apps, &staged)
            .await;
        if let Err(err) = &result {
            tracing::error!(%err, "the whole-device restore failed; nothing was changed unless the log says so");
        }
        // Whatever happened, the copies go (after a success they were
        // moved in place, so only leftovers remain).
        blocking(move || {
            for dir in fresh_dirs {
                remove_if_present(&dir)?;
            }
            Ok(())
        })
        .await?;
        result
    }

    async fn restore_device_from_staging(
        &self,
        config: &BackupConfig,
        state: &str,
        apps: &[(String, String)],
        staged: &Path,
    ) -> Result<(), BackupError> {
        let mut wanted = vec![(state.to_owned(), "/state".to_owned(), staged.to_owned())];
        for (app, id) in apps {
            wanted.push((id.clone(), format!("/apps/{app}"), self.restoring_dir(app)));
        }
        {
            let dirs: Vec<PathBuf> = wanted.iter().map(|(_, _, d)| d.clone()).collect();
            blocking(move || {
                for dir in dirs {
                    remove_if_present(&dir)?;
                }
                Ok(())
            })
            .await?;
        }
        self.say(format!("restoring the state and {} apps", apps.len()));
        self.with_repo(config, None, move |mut repo| {
            for (id, path, dest) in wanted {
                repo = repo.restore(&id, &path, &dest)?;
            }
            Ok(())
        })
        .await?;
        // Refused before anything is touched: a database from a newer
        // ddaemon would stop this one from starting at all.
        let found = crate::state::schema_version_of(&staged.join("state.db"))?;
        let known = crate::state::known_schema_version();
        if found > known {
            return Err(BackupError::Io(format!(
                "this backup was made by a newer ddaemon (state version {found}, this one knows {known}); update this device first, then restore"
            )));
        }
        // ddaemon's own files are staged beside the live ones, so putting
        // them in place is only renames.
        let ddaemon_dir = self.inner.data_dir.join("ddaemon");
        let moves = {
            let (staged, ddaemon_dir) = (staged.to_owned(), ddaemon_dir.clone());
            blocking(move || {
                let mut moves = Vec::new();
                for entry in std::fs::read_dir(&staged).map_err(io(&staged))? {
                    let entry = entry.map_err(io(&staged))?;
                    let name = entry.file_name();
                    if NOT_SAVED.iter().any(|s| name == *s) {
                        continue;
                    }
                    let fresh = ddaemon_dir.join(format!(".{}.restoring", name.to_string_lossy()));
                    remove_any(&fresh)?;
                    if entry.file_type().map_err(io(&entry.path()))?.is_dir() {
                        copy_tree(&entry.path(), &fresh, &[])?;
                    } else {
                        std::fs::copy(entry.path(), &fresh).map_err(io(&fresh))?;
                    }
                    moves.push((fresh, ddaemon_dir.join(&name)));
                }
                Ok(moves)
            })
            .await?
        };
        // From here the device changes. If anything fails, the supervisor
        // restarts, and starts again the apps that were running.
        let changed = self.put_in_place(apps, moves, staged).await;
        if changed.is_err() {
            tracing::error!(
                "the restore failed half-way; restarting the supervisor to start the apps again"
            );
            self.inner.restart.notify_one();
        }
        changed?;
        // The restored settings hold the target; keep the key that opened it.
        let restored = self.config().await?;
        if restored.as_ref().map(|c| &c.target) != Some(&config.target) {
            self.inner
                .db
                .set_backup_config(
                    serde_json::to_string(config).map_err(|e| BackupError::Io(e.to_string()))?,
                )
                .await?;
        }
        tracing::info!(state, apps = apps.len(), "device restored from backup");
        Ok(())
    }

    async fn put_in_place(
        &self,
        apps: &[(String, String)],
        moves: Vec<(PathBuf, PathBuf)>,
        staged: &Path,
    ) -> Result<(), BackupError> {
        for installed in self
            .inner
            .apps
            .list()
            .await
            .map_err(|e| BackupError::Io(e.to_string()))?
        {
            if let Err(err) = self.inner.apps.pause(installed.id()).await {
                tracing::warn!(app = %installed.id(), %err, "cannot stop the app before the restore");
            }
        }
        let mut swaps: Vec<(PathBuf, PathBuf)> = apps
            .iter()
            .map(|(app, _)| (self.restoring_dir(app), self.inner.apps.app_dir(app)))
            .collect();
        swaps.extend(moves);
        blocking(move || {
            for (fresh, live) in swaps {
                swap_in(&fresh, &live)?;
            }
            Ok(())
        })
        .await?;
        // The database last: until it is replaced, a restart finds the old
        // device, whole.
        self.inner.db.replace_with(&staged.join("state.db")).await?;
        self.inner.db.reinstall_all_apps().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(path: &Path, text: &str) {
        std::fs::create_dir_all(path).expect("mkdir");
        std::fs::write(path.join("note.txt"), text).expect("write");
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path.join("note.txt")).unwrap_or_default()
    }

    #[test]
    fn a_swap_replaces_whole_and_a_failed_one_keeps_the_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (live, fresh) = (dir.path().join("app"), dir.path().join(".app.restoring"));
        put(&live, "old");
        put(&fresh, "restored");
        swap_in(&fresh, &live).expect("swap");
        assert_eq!(read(&live), "restored");
        assert!(!fresh.exists() && !aside_of(&live).exists());
        // Nothing to swap in: an error, and the live folder as it was.
        assert!(swap_in(&fresh, &live).is_err());
        assert_eq!(read(&live), "restored");
        assert!(!aside_of(&live).exists());
    }

    #[test]
    fn a_swap_cut_short_is_undone_before_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (live, fresh) = (dir.path().join("app"), dir.path().join(".app.restoring"));
        // A power cut after the live folder was moved aside.
        put(&aside_of(&live), "old");
        put(&fresh, "restored");
        swap_in(&fresh, &live).expect("swap");
        assert_eq!(read(&live), "restored");
        assert!(!aside_of(&live).exists());
        // And when the restored copy is not there, the old one comes back.
        put(&aside_of(&live), "old");
        std::fs::remove_dir_all(&live).expect("rm");
        assert!(swap_in(&fresh, &live).is_err());
        assert_eq!(read(&live), "old");
    }
}
