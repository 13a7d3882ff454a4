//! Device-wide settings (`settings` table) and the one transaction that
//! completes first-boot setup.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{StateDb, StateError, now_unix};

const DEVICE_NAME: &str = "device_name";
const TIMEZONE: &str = "timezone";
const SETUP_COMPLETED_AT: &str = "setup_completed_at";

/// What the setup wizard decided, already validated and with the password hashed.
#[derive(Debug, Clone)]
pub struct SetupRecord {
    pub device_name: String,
    pub timezone: String,
    pub admin_name: String,
    pub password_hash: String,
    /// The password's NT hash, for SMB logins to shares.
    pub nt_hash: String,
}

/// The device settings the pages show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSettings {
    pub device_name: Option<String>,
    pub timezone: Option<String>,
    pub setup_completed_at: Option<i64>,
}

impl DeviceSettings {
    /// Whether first-boot setup has finished.
    pub fn setup_complete(&self) -> bool {
        self.setup_completed_at.is_some()
    }
}

fn get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |row| {
        row.get(0)
    })
    .optional()
}

/// The domain settings (JSON), kept by `crate::domain`.
pub const DOMAIN_CONFIG: &str = "domain_config";

impl StateDb {
    /// One setting's value; none when it was never set.
    pub async fn setting(&self, key: &'static str) -> Result<Option<String>, StateError> {
        let db = self.clone();
        self.call(move |conn| get(conn, key).map_err(|e| db.sqlite_error(e)))
            .await
    }

    /// Sets one setting, replacing what it held.
    pub async fn set_setting(&self, key: &'static str, value: String) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(drop)
            .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Forgets one setting.
    pub async fn clear_setting(&self, key: &'static str) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute("DELETE FROM settings WHERE key = ?1", [key])
                .map(drop)
                .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Reads the device settings.
    pub async fn device_settings(&self) -> Result<DeviceSettings, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            let read = || -> rusqlite::Result<DeviceSettings> {
                Ok(DeviceSettings {
                    device_name: get(conn, DEVICE_NAME)?,
                    timezone: get(conn, TIMEZONE)?,
                    setup_completed_at: get(conn, SETUP_COMPLETED_AT)?.and_then(|v| v.parse().ok()),
                })
            };
            read().map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Records the device name, time zone and admin account in one
    /// transaction: after a crash either all of it is there or none.
    pub async fn complete_setup(&self, record: SetupRecord) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            // IMMEDIATE takes the write lock before the check, so two setups
            // racing each other cannot both pass it.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| db.sqlite_error(e))?;
            if get(&tx, SETUP_COMPLETED_AT)
                .map_err(|e| db.sqlite_error(e))?
                .is_some()
            {
                return Err(StateError::AlreadySetUp);
            }
            let now = now_unix();
            let write = || -> rusqlite::Result<()> {
                let mut put = tx.prepare(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                )?;
                put.execute(params![DEVICE_NAME, record.device_name])?;
                put.execute(params![TIMEZONE, record.timezone])?;
                put.execute(params![SETUP_COMPLETED_AT, now.to_string()])?;
                // Sessions from before (a soft reset re-opens setup) must
                // not outlive the password they were opened with.
                tx.execute("DELETE FROM sessions", [])?;
                tx.execute(
                    "INSERT INTO users (name, password_hash, role, created_at, nt_hash)
                     VALUES (?1, ?2, 'admin', ?3, ?4)
                     ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash,
                         nt_hash = excluded.nt_hash",
                    params![record.admin_name, record.password_hash, now, record.nt_hash],
                )?;
                Ok(())
            };
            write().map_err(|e| db.sqlite_error(e))?;
            tx.commit().map_err(|e| db.sqlite_error(e))
        })
        .await?;
        self.accounts.notify_one();
        Ok(())
    }

    /// The reset button's soft reset: the admin password, the sessions and
    /// the "set up" mark go, so the setup wizard runs again; the device
    /// name (offered again by the wizard), apps and data stay.
    pub async fn soft_reset(&self) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| db.sqlite_error(e))?;
            let write = || -> rusqlite::Result<()> {
                tx.execute("DELETE FROM settings WHERE key = ?1", [SETUP_COMPLETED_AT])?;
                tx.execute("DELETE FROM sessions", [])?;
                tx.execute("DELETE FROM users WHERE role = 'admin'", [])?;
                Ok(())
            };
            write().map_err(|e| db.sqlite_error(e))?;
            tx.commit().map_err(|e| db.sqlite_error(e))
        })
        .await?;
        self.accounts.notify_one();
        Ok(())
    }
}
