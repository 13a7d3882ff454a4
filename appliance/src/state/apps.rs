//! Installed apps (`apps` table): each app's manifest and where it stands.
//!
//! A row is written before every step of an install, update or removal is
//! acted on, so the supervisor that starts after a crash knows what was
//! under way and can finish it or undo it.

use rusqlite::{ErrorCode, OptionalExtension, Row, params};

use super::{StateDb, StateError, now_unix};
use crate::apps::manifest::Manifest;

/// What is happening to an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppPhase {
    Installing,
    Installed,
    Updating,
    Removing,
}

/// The last step of the current phase that was started (for `installed`,
/// the one that finished it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppStep {
    /// The phase is recorded; nothing done yet.
    Recorded,
    /// Images are being pulled.
    Pulling,
    /// Containers are being created.
    Creating,
    /// Containers are being started.
    Starting,
    /// Waiting for the web service's health check.
    Waiting,
    /// The app runs and answered.
    Healthy,
    /// Containers are being stopped and removed.
    Removing,
}

fn text<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl std::fmt::Display for AppPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&text(*self))
    }
}

impl std::fmt::Display for AppStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&text(*self))
    }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

/// One installed (or installing) app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub manifest: Manifest,
    /// During an update: the manifest to roll back to.
    pub previous: Option<Manifest>,
    pub phase: AppPhase,
    pub step: AppStep,
    /// Whether the owner wants it running (false after "stop").
    pub running: bool,
    /// The device port that reaches its web page (`http://DEVICE.local:PORT`).
    pub port: u16,
    /// A removal that also deletes the app's data.
    pub purge: bool,
    /// Why the last operation failed, for the page.
    pub error: Option<String>,
    pub installed_at: i64,
}

impl AppRecord {
    pub fn id(&self) -> &str {
        &self.manifest.id
    }
}

const COLUMNS: &str =
    "manifest, previous_manifest, phase, step, running, port, purge, error, installed_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<AppRecord> {
    let corrupt = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unreadable {what}").into(),
        )
    };
    let manifest: String = row.get(0)?;
    let previous: Option<String> = row.get(1)?;
    let phase: String = row.get(2)?;
    let step: String = row.get(3)?;
    Ok(AppRecord {
        manifest: serde_json::from_str(&manifest).map_err(|_| corrupt(0, "manifest"))?,
        previous: match previous {
            Some(p) => Some(serde_json::from_str(&p).map_err(|_| corrupt(1, "manifest"))?),
            None => None,
        },
        phase: parse(&phase).ok_or_else(|| corrupt(2, "phase"))?,
        step: parse(&step).ok_or_else(|| corrupt(3, "step"))?,
        running: row.get(4)?,
        port: row.get(5)?,
        purge: row.get(6)?,
        error: row.get(7)?,
        installed_at: row.get(8)?,
    })
}

fn manifest_json(m: &Manifest) -> String {
    serde_json::to_string(m).unwrap_or_default()
}

impl StateDb {
    /// Every app, by id.
    pub async fn apps(&self) -> Result<Vec<AppRecord>, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare(&format!("SELECT {COLUMNS} FROM apps ORDER BY id"))
                .map_err(|e| db.sqlite_error(e))?;
            let rows = stmt
                .query_map([], from_row)
                .map_err(|e| db.sqlite_error(e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// One app.
    pub async fn app(&self, id: String) -> Result<Option<AppRecord>, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM apps WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()
            .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Records a new app; an id or port in use is `StateError::Taken`.
    pub async fn insert_app(&self, record: AppRecord) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            let now = now_unix();
            match conn.execute(
                "INSERT INTO apps (id, manifest, previous_manifest, phase, step, running, port, purge, error, installed_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
                params![
                    record.manifest.id,
                    manifest_json(&record.manifest),
                    record.previous.as_ref().map(manifest_json),
                    text(record.phase),
                    text(record.step),
                    record.running,
                    record.port,
                    record.purge,
                    record.error,
                    now,
                ],
            ) {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    Err(StateError::Taken(record.manifest.id))
                }
                Err(e) => Err(db.sqlite_error(e)),
            }
        })
        .await
    }

    /// Writes an app's whole row (everything but the id and install time).
    pub async fn update_app(&self, record: AppRecord) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute(
                "UPDATE apps SET manifest = ?2, previous_manifest = ?3, phase = ?4, step = ?5,
                 running = ?6, port = ?7, purge = ?8, error = ?9, updated_at = ?10 WHERE id = ?1",
                params![
                    record.manifest.id,
                    manifest_json(&record.manifest),
                    record.previous.as_ref().map(manifest_json),
                    text(record.phase),
                    text(record.step),
                    record.running,
                    record.port,
                    record.purge,
                    record.error,
                    now_unix(),
                ],
            )
            .map(drop)
            .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Forgets an app.
    pub async fn delete_app(&self, id: String) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute("DELETE FROM apps WHERE id = ?1", [id])
                .map(drop)
                .map_err(|e| db.sqlite_error(e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_steps_round_trip_as_text() {
        assert_eq!(text(AppPhase::Installing), "installing");
        assert_eq!(parse::<AppStep>("waiting"), Some(AppStep::Waiting));
        assert_eq!(parse::<AppStep>("nonsense"), None);
    }
}
