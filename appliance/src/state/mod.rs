//! The supervisor's own state: one SQLite database under `DATA/ddaemon/`.
//!
//! It owns the connection, its durability settings and the schema migrations;
//! the tables' meaning lives with the modules that use them (`settings`,
//! `accounts`, `apps`). Apps, shares and backups add their tables through new
//! migrations here. It does not hold secrets other than password hashes (an app's
//! generated secrets live with its data, under `DATA/apps/<id>/`).

mod accounts;
mod apps;
mod backups;
mod disks;
mod external_apps;
mod migrations;
mod settings;
mod shares;

pub use accounts::{NewSession, SessionRecord, UserRecord};
pub use apps::{AppPhase, AppRecord, AppStep};
pub use backups::{BackupRunRow, known_schema_version, schema_version_of};
pub use disks::RememberedDisk;
pub use external_apps::ExternalApp;
pub use settings::{DOMAIN_CONFIG, DeviceSettings, SetupRecord};
pub use shares::Share;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// File name of the database inside `DATA/ddaemon/`.
pub const DB_FILE: &str = "state.db";

/// Errors reading or writing the state database.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state folder could not be created.
    #[error("cannot create the state folder {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite refused an operation.
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The database was written by a newer ddaemon than this one.
    #[error(
        "state database {path} has schema version {found}, but this ddaemon knows only up to {known}; \
         run the newer ddaemon again or restore a backup"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// A name is taken.
    #[error("{0} is already in use")]
    Taken(String),
    /// The device was already set up when setup was asked for again.
    #[error("the device is already set up")]
    AlreadySetUp,
    /// A blocking task running a query panicked or was cancelled.
    #[error("a state database task failed: {0}")]
    Task(String),
}

/// A shared handle to the state database; cheap to clone.
///
/// All access goes through one connection behind a mutex, run on tokio's
/// blocking pool: a home server's request rate never needs a pool, and one
/// writer means SQLite never returns `SQLITE_BUSY` to us.
#[derive(Clone, Debug)]
pub struct StateDb {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
    /// Woken when users or their passwords change (Samba follows them).
    accounts: Arc<tokio::sync::Notify>,
}

impl StateDb {
    /// Opens (creating if needed) the database in `state_dir` and brings its
    /// schema up to date.
    pub fn open(state_dir: &Path) -> Result<Self, StateError> {
        create_private_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        let sqlite = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sqlite)?;
        // WAL keeps readers and the writer apart; synchronous=FULL makes every
        // committed transaction survive a power cut, not only stay consistent.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        migrations::apply(&mut conn, &path)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path),
            accounts: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Notified after users or their passwords change.
    pub fn accounts_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.accounts)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StateError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a transaction open
            // (rusqlite rolls back on drop), so a poisoned lock is safe to reuse.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|err| StateError::Task(err.to_string()))?
    }

    /// Wraps a rusqlite error with this database's path.
    pub fn sqlite_error(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.as_ref().clone(),
            source,
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StateError::CreateDir {
            path: dir.to_owned(),
            source,
        })
}

/// Seconds since the Unix epoch, the unit every timestamp in the database uses.
pub use ddaemon_runtime::clock::now_unix;
