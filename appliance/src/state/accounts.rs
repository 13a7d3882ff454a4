//! Users and their login sessions (`users`, `sessions` tables).
//!
//! Sessions are stored by the SHA-256 of their token, so a copy of the
//! database (a backup, say) does not hold usable cookies.

use rusqlite::{OptionalExtension, params};

use super::{StateDb, StateError, now_unix};

/// A user as stored.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    /// The password's NT hash (SMB logins), once known.
    pub nt_hash: Option<String>,
}

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token_hash: Vec<u8>,
    pub user_id: i64,
    pub csrf_token: String,
    pub expires_at: i64,
    pub client: String,
}

/// A live session joined with its user.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub user_id: i64,
    pub user_name: String,
    pub role: String,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// The columns [`user_row`] reads, in its order.
const USER_COLUMNS: &str = "id, name, password_hash, role, nt_hash";

fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        password_hash: row.get(2)?,
        role: row.get(3)?,
        nt_hash: row.get(4)?,
    })
}

impl StateDb {
    /// Looks a user up by name.
    pub async fn user_by_name(&self, name: String) -> Result<Option<UserRecord>, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                [&name],
                user_row,
            )
            .optional()
            .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<UserRecord>, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
                .map_err(|e| db.sqlite_error(e))?;
            let rows = stmt
                .query_map([], user_row)
                .map_err(|e| db.sqlite_error(e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Records a user's NT hash (learnt at a login, for users set up before
    /// shares existed).
    pub async fn set_nt_hash(&self, user_id: i64, nt_hash: String) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute(
                "UPDATE users SET nt_hash = ?1 WHERE id = ?2",
                params![nt_hash, user_id],
            )
            .map(drop)
            .map_err(|e| db.sqlite_error(e))
        })
        .await?;
        self.accounts.notify_one();
        Ok(())
    }

    /// Stores a new session, pruning expired ones on the way.
    pub async fn insert_session(&self, session: NewSession) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            let now = now_unix();
            let tx = conn.transaction().map_err(|e| db.sqlite_error(e))?;
            tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])
                .map_err(|e| db.sqlite_error(e))?;
            tx.execute(
                "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at, client)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    session.token_hash,
                    session.user_id,
                    session.csrf_token,
                    now,
                    session.expires_at,
                    session.client
                ],
            )
            .map_err(|e| db.sqlite_error(e))?;
            tx.commit().map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Finds the unexpired session with this token hash.
    pub async fn session(&self, token_hash: Vec<u8>) -> Result<Option<SessionRecord>, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.query_row(
                "SELECT s.user_id, u.name, u.role, s.csrf_token, s.expires_at
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = ?1 AND s.expires_at > ?2",
                params![token_hash, now_unix()],
                |row| {
                    Ok(SessionRecord {
                        user_id: row.get(0)?,
                        user_name: row.get(1)?,
                        role: row.get(2)?,
                        csrf_token: row.get(3)?,
                        expires_at: row.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Moves a session's expiry (sliding sessions).
    pub async fn extend_session(
        &self,
        token_hash: Vec<u8>,
        expires_at: i64,
    ) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute(
                "UPDATE sessions SET expires_at = ?2 WHERE token_hash = ?1",
                params![token_hash, expires_at],
            )
            .map(drop)
            .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Deletes a session; deleting one that is gone is not an error.
    pub async fn delete_session(&self, token_hash: Vec<u8>) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])
                .map(drop)
                .map_err(|e| db.sqlite_error(e))
        })
        .await
    }
}
