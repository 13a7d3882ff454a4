//! Ordered schema migrations, tracked in SQLite's `user_version`.
//!
//! Each entry moves the schema one version up inside its own transaction, so
//! a power cut leaves the database at the previous version or the next, never
//! between. Entries are never edited once released: a change is a new entry.

use std::path::Path;

use rusqlite::Connection;

use super::StateError;

/// Migration `i` takes the schema from version `i` to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: device settings, accounts and sessions.
    "CREATE TABLE settings (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) STRICT;
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'user')),
        created_at    INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE sessions (
        token_hash BLOB PRIMARY KEY NOT NULL,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        client     TEXT NOT NULL
    ) STRICT;
    CREATE INDEX sessions_by_expiry ON sessions(expires_at);",
    // 2: names the proxy routes to services on the LAN that are not containers.
    "CREATE TABLE external_apps (
        name       TEXT PRIMARY KEY NOT NULL,
        title      TEXT NOT NULL,
        target     TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT;",
    // 3: installed apps and where each stands in its install, update or removal.
    "CREATE TABLE apps (
        id                TEXT PRIMARY KEY NOT NULL,
        manifest          TEXT NOT NULL,
        previous_manifest TEXT,
        phase             TEXT NOT NULL CHECK (phase IN ('installing', 'installed', 'updating', 'removing')),
        step              TEXT NOT NULL,
        running           INTEGER NOT NULL,
        port              INTEGER NOT NULL UNIQUE,
        purge             INTEGER NOT NULL DEFAULT 0,
        error             TEXT,
        installed_at      INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL
    ) STRICT;",
    // 4: attached disks the owner mounted, mounted again whenever they are there.
    "CREATE TABLE disks (
        uuid       TEXT PRIMARY KEY NOT NULL,
        folder     TEXT NOT NULL UNIQUE,
        filesystem TEXT NOT NULL,
        added_at   INTEGER NOT NULL
    ) STRICT;",
    // 5: shared folders (Samba, NFS), and the users' NT hashes, which SMB
    // logins are checked against.
    "CREATE TABLE shares (
        name         TEXT PRIMARY KEY NOT NULL COLLATE NOCASE,
        path         TEXT NOT NULL,
        read_only    INTEGER NOT NULL,
        users        TEXT NOT NULL,
        time_machine INTEGER NOT NULL,
        nfs          INTEGER NOT NULL,
        created_at   INTEGER NOT NULL
    ) STRICT;
    ALTER TABLE users ADD COLUMN nt_hash TEXT;",
    // 6: backups, checks and restores that ran (their report is JSON: what
    // the page shows of a run).
    "CREATE TABLE backup_runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        report      TEXT NOT NULL
    ) STRICT;",
];

/// The schema version this build writes.
pub fn current_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Applies every migration the database has not seen yet.
pub fn apply(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    let sqlite = |source| StateError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    let known = current_version();
    if found > known {
        return Err(StateError::TooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    for (version, sql) in
        (found..known).zip(MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0)))
    {
        let tx = conn.transaction().map_err(sqlite)?;
        tx.execute_batch(sql).map_err(sqlite)?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        tracing::info!(version = version + 1, "state schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_reaches_current_version_and_reopening_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).expect("open");
        apply(&mut conn, &path).expect("first apply");
        apply(&mut conn, &path).expect("second apply");
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(v, current_version());
        conn.execute("INSERT INTO settings VALUES ('k', 'v')", [])
            .expect("settings table exists");
    }

    #[test]
    fn database_from_a_newer_build_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", current_version() + 1)
            .expect("set version");
        let err = apply(&mut conn, &path).expect_err("must refuse");
        assert!(matches!(err, StateError::TooNew { .. }), "{err}");
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .expect("count");
        assert_eq!(tables, 0, "nothing may be created in a newer database");
    }
}
