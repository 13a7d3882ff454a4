//! Attached disks: listed, mounted by filesystem UUID under
//! `/data/disks/<label>` and remembered across reboots, unmounted only when
//! nothing uses them, and formatted (ext4) only on an explicit request that
//! names the disk's serial. Nothing here formats a disk by itself.

pub mod block_devices;
pub mod hotplug;
pub mod nfs;
pub mod samba;
pub mod shares;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ddaemon_runtime::command::{CommandError, run};
use tokio::sync::Mutex;

pub use block_devices::{Disk, Sources, Volume, list_disks};

use crate::state::{RememberedDisk, Share, StateDb, StateError};

/// The Unix account files written through shares belong to (unless the
/// shared folder has another owner): the root folder of a disk formatted
/// here and every file of a FAT-like disk are its.
pub const SHARE_UID: u32 = 1999;
pub const SHARE_ACCOUNT: &str = "ddaemon-share";

/// Filesystems mounted here; others are listed but not offered.
pub const MOUNTABLE: [&str; 7] = ["ext4", "btrfs", "xfs", "exfat", "vfat", "ntfs", "ntfs3"];

/// What went wrong with a disk, naming the field to fix where there is one.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no attached disk has a filesystem with UUID {0}; it may have been unplugged")]
    NoSuchVolume(String),
    #[error("no attached disk is called {0}; it may have been unplugged")]
    NoSuchDisk(String),
    #[error("{0} cannot be mounted here; ddaemon mounts ext4, btrfs, xfs, exfat, vfat and NTFS")]
    Unsupported(String),
    #[error(
        "{devices} carry the same filesystem UUID {uuid}, so neither can be told from the other; unplug one"
    )]
    SameUuid { uuid: String, devices: String },
    #[error("{what} is in use by {users}; stop them first")]
    InUse { what: String, users: String },
    #[error("{disk} has a mounted filesystem ({folder}); unmount it first")]
    Mounted { disk: String, folder: String },
    #[error(
        "{disk} reports no serial number, so a format cannot be confirmed here; format it on a computer instead"
    )]
    NoSerial { disk: String },
    #[error(
        "that is not the serial number of {disk}; type the serial shown for the disk you mean to erase"
    )]
    WrongSerial { disk: String },
    #[error("the label {0:?} is not usable: use up to 16 letters, digits, '-' or '_'")]
    BadLabel(String),
    #[error(transparent)]
    Tool(#[from] CommandError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

impl StorageError {
    /// The request field the error is about, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::NoSerial { .. } | Self::WrongSerial { .. } => Some("serial"),
            Self::BadLabel(_) => Some("label"),
            _ => None,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The attached disks and what is done with them; one operation at a time.
#[derive(Debug, Clone)]
pub struct Storage {
    sources: Arc<Sources>,
    /// `/data/disks`.
    disks_dir: Arc<PathBuf>,
    db: StateDb,
    busy: Arc<Mutex<()>>,
    /// Woken after a mount or unmount (the shares follow the disks).
    changed: Arc<tokio::sync::Notify>,
}

const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
const FORMAT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl Storage {
    pub fn new(sources: Sources, data_dir: &Path, db: StateDb) -> Self {
        Self {
            sources: Arc::new(sources),
            disks_dir: Arc::new(data_dir.join("disks")),
            db,
            busy: Arc::new(Mutex::new(())),
            changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Notified after a disk was mounted or unmounted.
    pub fn changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.changed)
    }

    /// Every attached disk but the system's.
    pub async fn disks(&self) -> Result<Vec<Disk>, StorageError> {
        let sources = self.sources.clone();
        tokio::task::spawn_blocking(move || list_disks(&sources))
            .await
            .map_err(|e| StorageError::Io {
                path: PathBuf::from("/sys/class/block"),
                source: std::io::Error::other(e),
            })?
            .map_err(io(Path::new("/sys/class/block")))
    }

    /// The one volume with this UUID. Two (a cloned disk, two FAT sticks
    /// whose short UUIDs collide) are refused: either could be the other.
    async fn find_volume(&self, uuid: &str) -> Result<(Disk, Volume), StorageError> {
        let mut found: Vec<(Disk, Volume)> = self
            .disks()
            .await?
            .into_iter()
            .flat_map(|d| {
                d.volumes
                    .iter()
                    .filter(|v| v.uuid.as_deref() == Some(uuid))
                    .map(|v| (d.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        match found.len() {
            0 => Err(StorageError::NoSuchVolume(uuid.to_owned())),
            1 => Ok(found.remove(0)),
            _ => Err(StorageError::SameUuid {
                uuid: uuid.to_owned(),
                devices: found
                    .iter()
                    .map(|(_, v)| v.path.clone())
                    .collect::<Vec<_>>()
                    .join(" and "),
            }),
        }
    }

    /// Mounts the filesystem `uuid` under `/data/disks/<label>` and
    /// remembers it; returns the folder. Mounting a mounted one is a no-op.
    pub async fn mount(&self, uuid: &str) -> Result<PathBuf, StorageError> {
        let _busy = self.busy.lock().await;
        let (_, volume) = self.find_volume(uuid).await?;
        if let Some(at) = &volume.mounted_at {
            return Ok(PathBuf::from(at));
        }
        let fs = volume.filesystem.clone().unwrap_or_default();
        if !MOUNTABLE.contains(&fs.as_str()) {
            return Err(StorageError::Unsupported(if fs.is_empty() {
                format!("{} (no filesystem)", volume.path)
            } else {
                format!("{} ({fs})", volume.path)
            }));
        }
        let remembered = self.db.remembered_disks().await?;
        let folder = match remembered.iter().find(|r| r.uuid == uuid) {
            Some(r) => r.folder.clone(),
            None => free_folder_name(&self.disks_dir, &volume, &remembered),
        };
        let target = self.disks_dir.join(&folder);
        mount_volume(&volume, &fs, &target).await?;
        self.db
            .remember_disk(RememberedDisk {
                uuid: uuid.to_owned(),
                folder,
                filesystem: fs,
            })
            .await?;
        tracing::info!(uuid, device = %volume.path, folder = %target.display(), "disk mounted");
        self.changed.notify_one();
        Ok(target)
    }

    /// Unmounts the filesystem `uuid` and forgets it, unless something uses
    /// it: a share of a folder on it, or a running program holding files
    /// in it.
    pub async fn unmount(&self, uuid: &str, shares: &[Share]) -> Result<(), StorageError> {
        let _busy = self.busy.lock().await;
        // A remembered disk that is not attached, or not mounted, is just
        // forgotten: its folder name is free again.
        let volume = match self.find_volume(uuid).await {
            Err(StorageError::NoSuchVolume(_)) if self.db.forget_disk(uuid.to_owned()).await? => {
                return Ok(());
            }
            other => other?.1,
        };
        let Some(at) = volume.mounted_at.clone() else {
            self.db.forget_disk(uuid.to_owned()).await?;
            return Ok(());
        };
        let at = PathBuf::from(at);
        let mut users: Vec<String> = shares
            .iter()
            .filter(|s| Path::new(&s.path).starts_with(&at))
            .map(|s| format!("the share {}", s.name))
            .collect();
        if users.is_empty() {
            users = programs_using(&at);
        }
        if !users.is_empty() {
            return Err(StorageError::InUse {
                what: at.display().to_string(),
                users: users.join(", "),
            });
        }
        run("umount", &[&at.to_string_lossy()], None, MOUNT_TIMEOUT).await?;
        // The folder stays only if something was left in it unmounted.
        let _ = std::fs::remove_dir(&at);
        self.db.forget_disk(uuid.to_owned()).await?;
        tracing::info!(uuid, folder = %at.display(), "disk unmounted");
        self.changed.notify_one();
        Ok(())
    }

    /// Mounts every remembered disk that is attached and not mounted; the
    /// supervisor calls it at start and whenever a disk comes or goes.
    pub async fn mount_remembered(&self) {
        self.release_vanished().await;
        let remembered = match self.db.remembered_disks().await {
            Ok(r) => r,
            Err(err) => {
                tracing::error!(%err, "cannot read the remembered disks");
                return;
            }
        };
        let Ok(disks) = self.disks().await else {
            return;
        };
        for r in remembered {
            let present = disks
                .iter()
                .flat_map(|d| &d.volumes)
                .any(|v| v.uuid.as_deref() == Some(&r.uuid) && v.mounted_at.is_none());
            if present && let Err(err) = self.mount(&r.uuid).await {
                tracing::warn!(%err, uuid = %r.uuid, "a remembered disk could not be mounted");
            }
        }
    }

    /// Lets go of the mounts of disks pulled out without unmounting. The
    /// kernel keeps such a mount, every access an I/O error, and its folder
    /// would hide the disk's return and still look shareable. A lazy
    /// unmount frees the folder: the shares stop offering it and the disk
    /// is mounted there again when it is back. Writes that had not reached
    /// the disk are lost, which the log says.
    async fn release_vanished(&self) {
        let _busy = self.busy.lock().await;
        let mut released = false;
        for m in block_devices::mounts() {
            let point = Path::new(&m.point);
            let vanished = m.source.starts_with("/dev/") && !Path::new(&m.source).exists();
            if !vanished || !point.starts_with(&*self.disks_dir) {
                continue;
            }
            match nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => {
                    tracing::error!(
                        folder = %m.point,
                        device = %m.source,
                        "a disk was pulled out while mounted: what was not yet written to it is lost; \
                         it is mounted here again when it is plugged back in"
                    );
                    let _ = std::fs::remove_dir(point);
                    released = true;
                }
                Err(err) => {
                    tracing::warn!(folder = %m.point, %err, "cannot let go of a pulled-out disk's mount")
                }
            }
        }
        if released {
            self.changed.notify_one();
        }
    }

    /// Erases disk `name` and makes one ext4 filesystem on it, labelled
    /// `label`, then mounts it. `serial` must be the disk's serial number:
    /// the owner's confirmation that this is the disk to erase.
    pub async fn format(
        &self,
        name: &str,
        serial: &str,
        label: &str,
    ) -> Result<PathBuf, StorageError> {
        // A task of its own: a client that goes away (a closed page, the
        // CLI's Ctrl-C) must not stop it half-way through.
        let me = self.clone();
        let (name, serial, label) = (name.to_owned(), serial.to_owned(), label.to_owned());
        tokio::spawn(async move { me.format_now(&name, &serial, &label).await })
            .await
            .map_err(|e| StorageError::Io {
                path: PathBuf::from("/dev"),
                source: std::io::Error::other(e),
            })?
    }

    async fn format_now(
        &self,
        name: &str,
        serial: &str,
        label: &str,
    ) -> Result<PathBuf, StorageError> {
        if label.is_empty()
            || label.len() > 16
            || !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(StorageError::BadLabel(label.to_owned()));
        }
        let uuid = {
            let _busy = self.busy.lock().await;
            let disk = self
                .disks()
                .await?
                .into_iter()
                .find(|d| d.name == name)
                .ok_or_else(|| StorageError::NoSuchDisk(name.to_owned()))?;
            let Some(real) = &disk.serial else {
                return Err(StorageError::NoSerial { disk: disk.name });
            };
            if real.trim() != serial.trim() {
                return Err(StorageError::WrongSerial { disk: disk.name });
            }
            if let Some(v) = disk.volumes.iter().find(|v| v.mounted_at.is_some()) {
                return Err(StorageError::Mounted {
                    disk: disk.name.clone(),
                    folder: v.mounted_at.clone().unwrap_or_default(),
                });
            }
            tracing::warn!(disk = %disk.path, %serial, label, "formatting a disk at the owner's request");
            let t = FORMAT_TIMEOUT;
            run("wipefs", &["--all", "--quiet", &disk.path], None, t).await?;
            run(
                "sfdisk",
                &["--quiet", &disk.path],
                Some("label: gpt\n,,L\n"),
                t,
            )
            .await?;
            // The kernel rereads the table itself, unless it cannot parse
            // GPT; partx tells it the partitions then.
            let _ = run("partx", &["--update", &disk.path], None, MOUNT_TIMEOUT).await;
            let part = partition_path(&disk.path, 1);
            wait_for_node(&part).await?;
            let owner = format!("root_owner={SHARE_UID}:{SHARE_UID}");
            run(
                "mkfs.ext4",
                &["-F", "-q", "-L", label, "-E", &owner, &part],
                None,
                t,
            )
            .await?;
            let probed = run(
                "blkid",
                &["-p", "-o", "value", "-s", "UUID", &part],
                None,
                MOUNT_TIMEOUT,
            )
            .await?;
            let uuid = probed.trim().to_owned();
            if uuid.is_empty() {
                return Err(StorageError::Io {
                    path: PathBuf::from(part),
                    source: std::io::Error::other("the new filesystem has no UUID; format again"),
                });
            }
            uuid
        };
        self.mount(&uuid).await
    }
}

/// `/dev/sdb` → `/dev/sdb1`; `/dev/nvme0n1`, `/dev/loop3` → `…p1`.
fn partition_path(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

/// The kernel makes the partition's node (devtmpfs) once it has reread
/// the table; it may take a moment.
async fn wait_for_node(path: &str) -> Result<(), StorageError> {
    for _ in 0..50 {
        if Path::new(path).exists() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(StorageError::Io {
        path: PathBuf::from(path),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the new partition did not appear; unplug the disk, plug it in again and retry",
        ),
    })
}

/// A folder name from the label (or the UUID), not taken by another
/// remembered disk or by anything already in `/data/disks`.
fn free_folder_name(disks_dir: &Path, volume: &Volume, remembered: &[RememberedDisk]) -> String {
    let base: String = volume
        .label
        .as_deref()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches(|c| c == '-' || c == '.')
        .to_owned();
    let base = if base.is_empty() {
        let uuid = volume.uuid.as_deref().unwrap_or("disk");
        format!("disk-{}", &uuid[..uuid.len().min(8)])
    } else {
        base
    };
    let taken =
        |name: &str| remembered.iter().any(|r| r.folder == name) || disks_dir.join(name).exists();
    let mut name = base.clone();
    let mut n = 2;
    while taken(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

async fn mount_volume(volume: &Volume, fs: &str, target: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(target).map_err(io(target))?;
    // No set-uid programs or device nodes from a disk someone plugged in;
    // FAT-like filesystems have no owners, so files are the owner's group's.
    let fat_like = format!("nosuid,nodev,noexec,uid={SHARE_UID},gid={SHARE_UID},umask=0002");
    let options = match fs {
        "vfat" | "exfat" | "ntfs" | "ntfs3" => fat_like.as_str(),
        _ => "nosuid,nodev",
    };
    let fs_type = if fs == "ntfs" { "ntfs3" } else { fs };
    let mut result = mount_as(fs_type, options, &volume.path, target).await;
    // A kernel without exFAT (this one may lack the module) can still use
    // the FUSE driver, when it is installed.
    if result.is_err() && fs_type == "exfat" && Path::new("/sbin/mount.exfat-fuse").exists() {
        result = mount_as("exfat-fuse", options, &volume.path, target).await;
    }
    if let Err(err) = result {
        let _ = std::fs::remove_dir(target);
        return Err(err.into());
    }
    Ok(())
}

async fn mount_as(
    fs_type: &str,
    options: &str,
    device: &str,
    target: &Path,
) -> Result<String, CommandError> {
    let target = target.to_string_lossy();
    run(
        "mount",
        &["-t", fs_type, "-o", options, device, &target],
        None,
        MOUNT_TIMEOUT,
    )
    .await
}

/// Running programs with a file, folder or working directory inside
/// `dir`, as `name (pid N)`.
fn programs_using(dir: &Path) -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let inside = |link: PathBuf| std::fs::read_link(link).is_ok_and(|t| t.starts_with(dir));
    let mut found = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let base = p.path();
        let uses = inside(base.join("cwd"))
            || inside(base.join("root"))
            || std::fs::read_dir(base.join("fd"))
                .map(|fds| fds.flatten().any(|fd| inside(fd.path())))
                .unwrap_or(false);
        if uses {
            let name = std::fs::read_to_string(base.join("comm"))
                .map(|c| c.trim().to_owned())
                .unwrap_or_else(|_| "a program".into());
            found.push(format!("{name} (pid {pid})"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_follow_the_kernel() {
        assert_eq!(partition_path("/dev/sdb", 1), "/dev/sdb1");
        assert_eq!(partition_path("/dev/nvme0n1", 1), "/dev/nvme0n1p1");
        assert_eq!(partition_path("/dev/loop3", 1), "/dev/loop3p1");
    }

    #[test]
    fn folder_names_come_from_labels_and_never_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let volume = |label: Option<&str>, uuid: &str| Volume {
            name: "sdb1".into(),
            path: "/dev/sdb1".into(),
            size_bytes: 1,
            filesystem: Some("ext4".into()),
            uuid: Some(uuid.into()),
            label: label.map(str::to_owned),
            mounted_at: None,
            free_bytes: None,
        };
        let none: Vec<RememberedDisk> = Vec::new();
        assert_eq!(
            free_folder_name(dir.path(), &volume(Some("My Photos/2024"), "u1"), &none),
            "My-Photos-2024"
        );
        assert_eq!(
            free_folder_name(dir.path(), &volume(None, "1234-abcd-ef"), &none),
            "disk-1234-abc"
        );
        assert_eq!(
            free_folder_name(dir.path(), &volume(Some(".."), "abcd"), &none),
            "disk-abcd"
        );
        let taken = vec![RememberedDisk {
            uuid: "other".into(),
            folder: "Backup".into(),
            filesystem: "ext4".into(),
        }];
        std::fs::create_dir(dir.path().join("Backup-2")).expect("mkdir");
        assert_eq!(
            free_folder_name(dir.path(), &volume(Some("Backup"), "u2"), &taken),
            "Backup-3"
        );
    }
}
