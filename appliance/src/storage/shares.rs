//! Shared folders: checked, stored, and handed to Samba (and, with `nfs`,
//! to NFS later). A share is a folder on a mounted disk or in an app's data
//! folder; nothing else of the device is ever shared.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::block_devices::mount_points;
use super::nfs::{NfsError, NfsFiles, home_networks};
use super::samba::{SambaError, SambaFiles};
use crate::field_error::FieldError;
use crate::mdns::{DeviceService, Mdns};
use crate::state::{Share, StateDb, StateError};

/// Names Samba keeps for itself.
const RESERVED: [&str; 5] = ["global", "homes", "printers", "print$", "ipc$"];

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("a share called {0} exists; pick another name")]
    Taken(String),
    #[error("no share is called {0}")]
    NotFound(String),
    #[error(transparent)]
    Samba(#[from] SambaError),
    #[error(transparent)]
    Nfs(#[from] NfsError),
    #[error(transparent)]
    State(StateError),
    #[error("the change stopped half-way: {0}")]
    Interrupted(String),
}

impl From<StateError> for ShareError {
    fn from(err: StateError) -> Self {
        match err {
            StateError::Taken(name) => Self::Taken(name),
            other => Self::State(other),
        }
    }
}

/// A share as asked for.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShare {
    #[schema(example = "Media")]
    pub name: String,
    /// A folder on an attached disk (`/data/disks/…`) or in an app's data
    /// folder (`/data/apps/…`).
    #[schema(example = "/data/disks/Media")]
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
    /// Who may open it; every user when left out.
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub time_machine: bool,
    #[serde(default)]
    pub nfs: bool,
}

/// The shares and their Samba files; one change at a time.
#[derive(Debug, Clone)]
pub struct Shares {
    db: StateDb,
    data_dir: Arc<PathBuf>,
    samba: Arc<SambaFiles>,
    nfs: Arc<NfsFiles>,
    mdns: Mdns,
    busy: Arc<Mutex<()>>,
}

impl Shares {
    /// Shares announced through `mdns` (which says nothing unless it runs).
    pub fn new(db: StateDb, data_dir: &Path, samba: SambaFiles, nfs: NfsFiles, mdns: Mdns) -> Self {
        Self {
            db,
            data_dir: Arc::new(data_dir.to_owned()),
            samba: Arc::new(samba),
            nfs: Arc::new(nfs),
            mdns,
            busy: Arc::new(Mutex::new(())),
        }
    }

    pub async fn list(&self) -> Result<Vec<Share>, ShareError> {
        Ok(self.db.shares().await?)
    }

    /// Writes Samba's files from the stored shares and users; with
    /// `force`, smbd is reloaded (or started, or stopped) even if they did
    /// not change.
    pub async fn sync(&self, force: bool) -> Result<(), ShareError> {
        let _busy = self.busy.lock().await;
        self.apply(force).await
    }

    /// Samba gets only the shares that still pass the checks: a disk that
    /// is not mounted (its empty folder is on the system's disk) or a
    /// folder replaced by a link elsewhere is left out until it is right.
    async fn apply(&self, force: bool) -> Result<(), ShareError> {
        let mounts = mount_points();
        let servable: Vec<Share> = self
            .db
            .shares()
            .await?
            .into_iter()
            .filter(|s| match self.check_path(&s.path, &mounts) {
                Ok(resolved) if resolved == Path::new(&s.path) => true,
                Ok(resolved) => {
                    tracing::warn!(share = %s.name, path = %s.path, now = %resolved.display(), "a shared folder now leads elsewhere: not served");
                    false
                }
                Err(err) => {
                    tracing::warn!(share = %s.name, %err, "a shared folder is not there: not served");
                    false
                }
            })
            .collect();
        let users = self.db.users().await?;
        let samba = self.samba.apply(&servable, &users, force).await;
        let networks = home_networks();
        let nfs = self.nfs.apply(&servable, &networks, force).await;
        // What is announced is what each server took, whatever the other did.
        self.mdns.set_device_services(file_services(
            &servable,
            samba.is_ok(),
            nfs.is_ok() && !networks.is_empty(),
        ));
        samba?;
        nfs?;
        Ok(())
    }

    /// Unmounts a disk unless a share uses it; the shares cannot change
    /// meanwhile.
    pub async fn unmount_disk(
        &self,
        storage: &super::Storage,
        uuid: &str,
    ) -> Result<(), super::StorageError> {
        let _busy = self.busy.lock().await;
        let shares = self.db.shares().await?;
        storage.unmount(uuid, &shares).await
    }

    /// Checks and adds a share, then serves it; nothing is kept if Samba
    /// refuses it.
    /// Adds a share; it runs to its end (or its undoing) even if the
    /// client that asked goes away.
    pub async fn add(&self, request: NewShare) -> Result<Share, ShareError> {
        let me = self.clone();
        tokio::spawn(async move { me.add_now(request).await })
            .await
            .map_err(|e| ShareError::Interrupted(e.to_string()))?
    }

    async fn add_now(&self, request: NewShare) -> Result<Share, ShareError> {
        let _busy = self.busy.lock().await;
        let share = self.check(request).await?;
        self.db.add_share(share.clone()).await?;
        if let Err(err) = self.apply(false).await {
            let _ = self.db.remove_share(share.name.clone()).await;
            let _ = self.apply(false).await;
            return Err(err);
        }
        tracing::info!(name = %share.name, path = %share.path, "share added");
        Ok(share)
    }

    /// Stops sharing `name` (the folder and its files stay).
    pub async fn remove(&self, name: &str) -> Result<Share, ShareError> {
        let me = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move { me.remove_now(&name).await })
            .await
            .map_err(|e| ShareError::Interrupted(e.to_string()))?
    }

    async fn remove_now(&self, name: &str) -> Result<Share, ShareError> {
        let _busy = self.busy.lock().await;
        let share = self
            .db
            .remove_share(name.to_owned())
            .await?
            .ok_or_else(|| ShareError::NotFound(name.to_owned()))?;
        if let Err(err) = self.apply(false).await {
            // The servers kept their previous files: so does the record.
            let _ = self.db.add_share(share.clone()).await;
            let _ = self.apply(false).await;
            return Err(err);
        }
        tracing::info!(name = %share.name, "share removed");
        Ok(share)
    }

    async fn check(&self, r: NewShare) -> Result<Share, ShareError> {
        let name = r.name.trim().to_owned();
        check_name(&name)?;
        let path = self.check_path(&r.path, &mount_points())?;
        let known: Vec<String> = self.db.users().await?.into_iter().map(|u| u.name).collect();
        let users = if r.users.is_empty() {
            known.clone()
        } else {
            r.users
        };
        if let Some(unknown) = users.iter().find(|u| !known.contains(u)) {
            return Err(FieldError::new(
                "users",
                format!(
                    "there is no user {unknown:?}; the users are: {}",
                    known.join(", ")
                ),
            )
            .into());
        }
        if users.is_empty() {
            return Err(
                FieldError::new("users", "there are no users yet; finish the setup first").into(),
            );
        }
        if !r.read_only
            && std::fs::metadata(&path)
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                .unwrap_or(0)
                == 0
        {
            return Err(FieldError::new(
                "read_only",
                format!(
                    "{} belongs to the system (root): nothing could be written through the share. \
                     Share it read-only, or share a folder of a disk formatted here",
                    path.display()
                ),
            )
            .into());
        }
        if r.time_machine && r.read_only {
            return Err(FieldError::new(
                "time_machine",
                "Time Machine writes its backups: a Time Machine share cannot be read-only",
            )
            .into());
        }
        Ok(Share {
            name,
            path: path.display().to_string(),
            read_only: r.read_only,
            users,
            time_machine: r.time_machine,
            nfs: r.nfs,
        })
    }

    /// The folder, resolved (no `..` or link leads out), inside a mounted
    /// disk's folder or an app's data folder.
    fn check_path(&self, path: &str, mounts: &[String]) -> Result<PathBuf, FieldError> {
        let disks = self.data_dir.join("disks");
        let apps = self.data_dir.join("apps");
        let allowed = || {
            format!(
                "share a folder on an attached disk ({}/…) or in an app's data folder ({}/…)",
                disks.display(),
                apps.display()
            )
        };
        let resolved = std::fs::canonicalize(path)
            .map_err(|e| FieldError::new("path", format!("{path}: {e}; {}", allowed())))?;
        if !resolved.is_dir() {
            return Err(FieldError::new("path", format!("{path} is not a folder")));
        }
        // The path goes into smb.conf as is: a line break, Samba's `%`
        // substitutions or a continuing `\` would change what it says.
        let Some(text) = resolved.to_str() else {
            return Err(FieldError::new(
                "path",
                format!(
                    "{} is not valid UTF-8; rename the folder",
                    resolved.display()
                ),
            ));
        };
        // Nor can NFS's exports file take a `"`: it ends the quoted path.
        if text
            .chars()
            .any(|c| c.is_control() || matches!(c, '%' | '\\' | '"'))
        {
            return Err(FieldError::new(
                "path",
                format!(
                    "{text:?} has a character Samba or NFS would misread (a control character, %, \\ or \"); rename the folder"
                ),
            ));
        }
        let under = |root: &Path| {
            std::fs::canonicalize(root)
                .ok()
                .and_then(|root| resolved.strip_prefix(&root).ok().map(Path::to_owned))
        };
        if let Some(rest) = under(&disks) {
            // Only a mounted disk: an empty folder under disks/ is the
            // device's own disk.
            let top = rest.components().next().map(|c| disks.join(c.as_os_str()));
            let mounted = top.is_some_and(|t| mounts.iter().any(|m| Path::new(m) == t));
            if !mounted {
                return Err(FieldError::new(
                    "path",
                    format!("{path} is not on a mounted disk; mount the disk first"),
                ));
            }
            return Ok(resolved);
        }
        if under(&apps).is_some_and(|rest| rest.components().count() >= 1) {
            return Ok(resolved);
        }
        Err(FieldError::new(
            "path",
            format!("{path} cannot be shared; {}", allowed()),
        ))
    }
}

/// What the shares offer over mDNS: with `smb`, SMB when anything is
/// shared and, for Time Machine, `_adisk._tcp` listing its shares with the
/// flags macOS reads (and the model Samba tells it, `fruit:model`); with
/// `nfs`, `_nfs._tcp` per export.
fn file_services(shares: &[Share], smb: bool, nfs: bool) -> Vec<DeviceService> {
    let mut out = Vec::new();
    if smb && !shares.is_empty() {
        out.push(DeviceService {
            kind: "_smb._tcp",
            instance: None,
            port: 445,
            txt: Vec::new(),
        });
        let disks: Vec<(String, String)> = shares
            .iter()
            .filter(|s| s.time_machine)
            .enumerate()
            .map(|(i, s)| (format!("dk{i}"), format!("adVN={},adVF=0x82", s.name)))
            .collect();
        if !disks.is_empty() {
            let mut txt = vec![("sys".to_owned(), "waMa=0,adVF=0x100".to_owned())];
            txt.extend(disks);
            out.push(DeviceService {
                kind: "_adisk._tcp",
                instance: None,
                port: 9,
                txt,
            });
            out.push(DeviceService {
                kind: "_device-info._tcp",
                instance: None,
                port: 0,
                txt: vec![("model".to_owned(), super::samba::FRUIT_MODEL.to_owned())],
            });
        }
    }
    if nfs {
        out.extend(shares.iter().filter(|s| s.nfs).map(|s| DeviceService {
            kind: "_nfs._tcp",
            instance: Some(s.name.clone()),
            port: 2049,
            txt: vec![("path".to_owned(), s.path.clone())],
        }));
    }
    out
}

fn check_name(name: &str) -> Result<(), FieldError> {
    let ok = (1..=32).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))
        && !name.starts_with(['.', ' '])
        && !name.ends_with(' ');
    if !ok {
        return Err(FieldError::new(
            "name",
            "use 1 to 32 letters, digits, spaces, '-', '_' or '.', not starting with '.' or a space",
        ));
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(FieldError::new(
            "name",
            format!("{name} is a name Samba keeps for itself; pick another"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_names_samba_accepts() {
        for good in ["Media", "Time Machine", "photos_2024", "a.b-c"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            " x",
            "x ",
            "a/b",
            "a:b",
            "homes",
            "IPC$",
            &"x".repeat(33),
        ] {
            assert_eq!(check_name(bad).map_err(|e| e.field), Err("name"), "{bad}");
        }
    }
}
