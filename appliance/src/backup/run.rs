//! The runs themselves: a backup, a check, and restores of one app or of
//! the whole device.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::runtime::Handle;

use super::repo::{APP_TAG_PREFIX, Moment, RepoError, STATE_TAG, Source};
use super::{BackupConfig, BackupError, Backups, ConfigRequest, Pause, RunReport};
use crate::field_error::FieldError;

/// ddaemon's files under `DATA/ddaemon` that a backup leaves out: the live
/// database (a consistent copy goes instead) and the backup's own folder
/// (its cache, and the key that opens the backup anyway).
const NOT_SAVED: [&str; 4] = ["state.db", "state.db-wal", "state.db-shm", "backup"];

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

/// Puts `fresh` in the place of `live`: the old folder is moved aside
/// first, so at every moment one whole version is in place.
fn swap_in(fresh: &Path, live: &Path) -> Result<(), BackupError> {
    let aside = live.with_file_name(format!(
        ".{}.before-restore",
        live.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    remove_if_present(&aside)?;
    if live.exists() {
        std::fs::rename(live, &aside).map_err(io(live))?;
    }
    std::fs::rename(fresh, live).map_err(io(fresh))?;
    remove_if_present(&aside)
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
        remove_if_present(&staging)?;
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
                log.forgotten = repo.forget_and_prune(retention)?;
                Ok(log)
            })
            .await;
        let _ = std::fs::remove_dir_all(&staging);
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
                    .with_repo(&config, None, |repo| repo.check(false))
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
        remove_if_present(&fresh)?;
        let (id, path, dest) = (snapshot.to_owned(), format!("/apps/{app}"), fresh.clone());
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
        let swapped = swap_in(&fresh, &self.inner.apps.app_dir(app));
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
        self.start_restore_device(None).await
    }

    /// Starts restoring the whole device from the backup run whose state
    /// snapshot is `snapshot` (the latest when none): every app's data, then
    /// the state database and ddaemon's files; then the supervisor restarts
    /// to load them, and installs each app again from its manifest.
    pub async fn start_restore_device(&self, snapshot: Option<String>) -> Result<(), BackupError> {
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
        // Each app's latest snapshot up to the state's: its own run's, or an
        // earlier one where that run failed before reaching the app.
        let mut apps: Vec<(String, String)> = Vec::new();
        for s in all.iter().filter(|s| s.unix <= state.unix) {
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
            if result.is_ok() {
                tracing::warn!("the device was restored; restarting to load it");
                this.inner.restart.notify_one();
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
        remove_if_present(&staged)?;
        let mut wanted = vec![(state.to_owned(), "/state".to_owned(), staged.clone())];
        for (app, id) in apps {
            let fresh = self.restoring_dir(app);
            remove_if_present(&fresh)?;
            wanted.push((id.clone(), format!("/apps/{app}"), fresh));
        }
        self.say(format!("restoring the state and {} apps", apps.len()));
        self.with_repo(config, None, move |mut repo| {
            for (id, path, dest) in wanted {
                repo = repo.restore(&id, &path, &dest)?;
            }
            Ok(())
        })
        .await?;
        // Everything is on the disk; now put it in place.
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
        for (app, _) in apps {
            swap_in(&self.restoring_dir(app), &self.inner.apps.app_dir(app))?;
        }
        self.inner.db.replace_with(&staged.join("state.db")).await?;
        self.inner.db.reinstall_all_apps().await?;
        let ddaemon_dir = self.inner.data_dir.join("ddaemon");
        for entry in std::fs::read_dir(&staged).map_err(io(&staged))? {
            let entry = entry.map_err(io(&staged))?;
            let name = entry.file_name();
            if NOT_SAVED.iter().any(|s| name == *s) {
                continue;
            }
            let live = ddaemon_dir.join(&name);
            let fresh = ddaemon_dir.join(format!(".{}.restoring", name.to_string_lossy()));
            remove_if_present(&fresh)?;
            if entry.file_type().map_err(io(&entry.path()))?.is_dir() {
                copy_tree(&entry.path(), &fresh, &[])?;
                swap_in(&fresh, &live)?;
            } else {
                std::fs::copy(entry.path(), &fresh).map_err(io(&fresh))?;
                std::fs::rename(&fresh, &live).map_err(io(&live))?;
            }
        }
        let _ = std::fs::remove_dir_all(&staged);
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
}
