//! External apps (`external_apps` table): names the proxy sends to a
//! `host:port` on the home network, for services not run as containers.

use rusqlite::{ErrorCode, params};

use super::{StateDb, StateError, now_unix};

/// One external app.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ExternalApp {
    /// Answers at `NAME.local`.
    pub name: String,
    pub title: String,
    /// `address:port` on the home network.
    pub target: String,
}

impl StateDb {
    /// Every external app, by name.
    pub async fn external_apps(&self) -> Result<Vec<ExternalApp>, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare("SELECT name, title, target FROM external_apps ORDER BY name")
                .map_err(|e| db.sqlite_error(e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(ExternalApp {
                        name: r.get(0)?,
                        title: r.get(1)?,
                        target: r.get(2)?,
                    })
                })
                .map_err(|e| db.sqlite_error(e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Adds one; a taken name is `StateError::Taken`.
    pub async fn add_external_app(&self, app: ExternalApp) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            match conn.execute(
                "INSERT INTO external_apps (name, title, target, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![app.name, app.title, app.target, now_unix()],
            ) {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
                    Err(StateError::Taken(app.name))
                }
                Err(e) => Err(db.sqlite_error(e)),
            }
        })
        .await
    }

    /// Removes one; returns whether it existed.
    pub async fn remove_external_app(&self, name: String) -> Result<bool, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute("DELETE FROM external_apps WHERE name = ?1", [name])
                .map(|n| n > 0)
                .map_err(|e| db.sqlite_error(e))
        })
        .await
    }
}
