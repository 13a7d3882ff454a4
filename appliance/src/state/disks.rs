//! Attached disks the owner mounted (`disks` table): each is mounted again,
//! in the same folder, whenever it is plugged in.

use rusqlite::params;

use super::{StateDb, StateError, now_unix};

/// A disk to mount whenever it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberedDisk {
    /// The filesystem's UUID.
    pub uuid: String,
    /// The folder's name under `/data/disks`.
    pub folder: String,
    pub filesystem: String,
}

impl StateDb {
    /// Every remembered disk, by folder.
    pub async fn remembered_disks(&self) -> Result<Vec<RememberedDisk>, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare("SELECT uuid, folder, filesystem FROM disks ORDER BY folder")
                .map_err(|e| db.sqlite_error(e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(RememberedDisk {
                        uuid: r.get(0)?,
                        folder: r.get(1)?,
                        filesystem: r.get(2)?,
                    })
                })
                .map_err(|e| db.sqlite_error(e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Remembers a disk (replacing what was remembered for its UUID).
    pub async fn remember_disk(&self, disk: RememberedDisk) -> Result<(), StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO disks (uuid, folder, filesystem, added_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (uuid) DO UPDATE SET folder = ?2, filesystem = ?3",
                params![disk.uuid, disk.folder, disk.filesystem, now_unix()],
            )
            .map(drop)
            .map_err(|e| db.sqlite_error(e))
        })
        .await
    }

    /// Forgets a disk; returns whether it was remembered.
    pub async fn forget_disk(&self, uuid: String) -> Result<bool, StateError> {
        let db = self.clone();
        self.call(move |conn| {
            conn.execute("DELETE FROM disks WHERE uuid = ?1", [uuid])
                .map(|n| n > 0)
                .map_err(|e| db.sqlite_error(e))
        })
        .await
    }
}
