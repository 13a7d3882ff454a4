//! Backups in the state database: the owner's settings (in `settings`, as
//! JSON), the runs (`backup_runs`), and the consistent copy of the database
//! itself that a backup holds.

use std::path::Path;

use rusqlite::{MAIN_DB, params};

use super::{StateDb, StateError, migrations, now_unix};

const BACKUP_CONFIG: &str = "backup_config";

/// One run as stored: its kind, times, and the report as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRunRow {
    pub id: i64,
    pub kind: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub report: String,
}

impl StateDb {
    /// The backup settings, as JSON; none before the owner set them.
    pub async fn backup_config(&self) -> Result<Option<String>, StateError> {
        self.setting(BACKUP_CONFIG).await
    }

    pub async fn set_backup_config(&self, json: String) -> Result<(), StateError> {
        self.set_setting(BACKUP_CONFIG, json).await
    }

    /// Forgets the backup settings.
    pub async fn clear_backup_config(&self) -> Result<(), StateError> {
        self.clear_setting(BACKUP_CONFIG).await
    }

    /// Records that a run started; returns its id.
    pub async fn start_backup_run(&self, kind: &str, report: String) -> Result<i64, StateError> {
        let db = self.clone();
        let kind = kind.to_owned();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO backup_runs (kind, started_at, report) VALUES (?1, ?2, ?3)",
                params![kind, now_unix(), report],
            )
            .map_err(|e| db.sqlite_error(e))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    /// Records how a run ended.
    pub async fn finish_backup_run(&self, id: i64, report: String) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute(
                "UPDATE backup_runs SET finished_at = ?2, report = ?3 WHERE id = ?1",
                params![id, now_unix(), report],
            )
            .map(|_| ())
            .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Records a run that already ended (a whole-device restore, which
    /// replaces the database it started in).
    pub async fn add_finished_backup_run(
        &self,
        kind: &str,
        started_at: i64,
        report: String,
    ) -> Result<(), StateError> {
        let db = self.clone();
        let kind = kind.to_owned();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO backup_runs (kind, started_at, finished_at, report) VALUES (?1, ?2, ?3, ?4)",
                params![kind, started_at, now_unix(), report],
            )
            .map(|_| ())
            .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Runs left unfinished by a supervisor that stopped (a crash, a power
    /// cut, or a restored database copied while its backup ran); returns
    /// their ids, to be recorded as failed.
    pub async fn unfinished_backup_runs(&self) -> Result<Vec<BackupRunRow>, StateError> {
        Ok(self
            .backup_runs(u32::MAX)
            .await?
            .into_iter()
            .filter(|r| r.finished_at.is_none())
            .collect())
    }

    /// The latest runs, newest first.
    pub async fn backup_runs(&self, limit: u32) -> Result<Vec<BackupRunRow>, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            let read = || -> rusqlite::Result<Vec<BackupRunRow>> {
                let mut stmt = conn.prepare(
                    "SELECT id, kind, started_at, finished_at, report FROM backup_runs
                     ORDER BY id DESC LIMIT ?1",
                )?;
                let rows = stmt.query_map([limit], |row| {
                    Ok(BackupRunRow {
                        id: row.get(0)?,
                        kind: row.get(1)?,
                        started_at: row.get(2)?,
                        finished_at: row.get(3)?,
                        report: row.get(4)?,
                    })
                })?;
                rows.collect()
            };
            read().map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Writes a consistent copy of the database to `dest` with SQLite's
    /// online backup API (a raw copy of a live WAL database can be torn).
    pub async fn copy_to(&self, dest: &Path) -> Result<(), StateError> {
        let db = self.clone();
        let dest = dest.to_owned();
        self.call(move |conn| {
            conn.backup(MAIN_DB, &dest, None::<fn(rusqlite::backup::Progress)>)
                .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Replaces the whole database with the copy at `source` (a backup's),
    /// in one step, and brings its schema up to date.
    pub async fn replace_with(&self, source: &Path) -> Result<(), StateError> {
        let db = self.clone();
        let source = source.to_owned();
        self.call(move |conn| {
            conn.restore(MAIN_DB, &source, None::<fn(rusqlite::backup::Progress)>)
                .map_err(|e| db.sqlite_error(e))?;
            migrations::apply(conn, &db.path)?;
            // Browsers logged into the device the backup came from are not
            // logged into this one; and the copy's own backup, still running
            // when it was taken, is told by its snapshots, not by a row
            // that would read "running" for ever.
            conn.execute_batch(
                "DELETE FROM sessions; DELETE FROM backup_runs WHERE finished_at IS NULL;",
            )
            .map_err(|e| db.sqlite_error(e))
        })
        .await?;
        self.accounts.notify_one();
        Ok(())
    }

    /// After a whole-device restore: every app is installed again from its
    /// manifest (images and containers are not in a backup), keeping the
    /// restored data and whether it ran.
    pub async fn reinstall_all_apps(&self) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute(
                "UPDATE apps SET phase = 'installing', step = 'recorded', error = NULL,
                     previous_manifest = NULL, purge = 0",
                [],
            )
            .map(|_| ())
            .map_err(|e| db.sqlite_error(e))
        })
        .await
    }
}

/// The schema version of the database file at `path` (a backup's copy).
pub fn schema_version_of(path: &Path) -> Result<i64, StateError> {
    let sqlite = |source| StateError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sqlite)?;
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)
}

/// The schema version this build writes.
pub fn known_schema_version() -> i64 {
    migrations::current_version()
}
