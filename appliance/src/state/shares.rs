//! Shared folders (`shares` table), served over Samba and, when asked, NFS.

use rusqlite::{ErrorCode, params};

use super::{StateDb, StateError, now_unix};

/// One shared folder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Share {
    /// The name clients see (`\\DEVICE\NAME`, `smb://DEVICE.local/NAME`).
    pub name: String,
    /// The folder shared: on an attached disk or in an app's data folder.
    pub path: String,
    pub read_only: bool,
    /// The users who may open it.
    pub users: Vec<String>,
    /// Offered to Macs as a Time Machine backup target.
    pub time_machine: bool,
    /// Also exported over NFS (to the local network).
    pub nfs: bool,
}

impl StateDb {
    /// Every share, by name.
    pub async fn shares(&self) -> Result<Vec<Share>, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT name, path, read_only, users, time_machine, nfs FROM shares ORDER BY name",
                )
                .map_err(|e| db.sqlite_error(e))?;
            let rows = stmt
                .query_map([], |r| {
                    let users: String = r.get(3)?;
                    Ok(Share {
                        name: r.get(0)?,
                        path: r.get(1)?,
                        read_only: r.get(2)?,
                        users: users
                            .split(',')
                            .filter(|u| !u.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        time_machine: r.get(4)?,
                        nfs: r.get(5)?,
                    })
                })
                .map_err(|e| db.sqlite_error(e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Adds one; a taken name (in any case) is `StateError::Taken`.
    pub async fn add_share(&self, share: Share) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            match conn.execute(
                "INSERT INTO shares (name, path, read_only, users, time_machine, nfs, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    share.name,
                    share.path,
                    share.read_only,
                    share.users.join(","),
                    share.time_machine,
                    share.nfs,
                    now_unix()
                ],
            ) {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    Err(StateError::Taken(share.name))
                }
                Err(e) => Err(db.sqlite_error(e)),
            }
        })
        .await
    }

    /// Removes one; returns it if it existed.
    pub async fn remove_share(&self, name: String) -> Result<Option<Share>, StateError> {
        let Some(share) = self
            .shares()
            .await?
            .into_iter()
            .find(|s| s.name.eq_ignore_ascii_case(&name))
        else {
            return Ok(None);
        };
        let db = self.clone();
        let key = share.name.clone();
        self.call(move |conn| {
            conn.execute("DELETE FROM shares WHERE name = ?1", [key])
                .map(drop)
                .map_err(|e| db.sqlite_error(e))
        })
        .await?;
        Ok(Some(share))
    }
}
