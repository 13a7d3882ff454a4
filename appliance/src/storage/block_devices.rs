//! The block devices an owner can use: disks with their model, serial,
//! size, partitions, filesystems, labels, mount state and free space.
//!
//! Read from sysfs and, where systemd-udevd runs (on the device), from
//! udev's database (`/run/udev/data`), which has what sysfs lacks (a SATA
//! disk's serial, the filesystem). Where udev has nothing, filesystems are
//! probed with `blkid -p`. The disk the system runs from is never listed:
//! nothing here may ever offer it for formatting.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where the facts come from: the real paths on a device, other ones in
/// unit tests (a fake sysfs and udev database).
#[derive(Debug, Clone)]
pub struct Sources {
    /// `/sys/class/block`: every disk and partition.
    pub sys_block: PathBuf,
    /// `/run/udev/data`: udev's properties, `b<major>:<minor>` files.
    pub udev_data: PathBuf,
    /// `/dev`.
    pub dev: PathBuf,
    /// `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// Probe filesystems with `blkid` when udev has no word on them.
    pub probe: bool,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            sys_block: PathBuf::from("/sys/class/block"),
            udev_data: PathBuf::from("/run/udev/data"),
            dev: PathBuf::from("/dev"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            probe: true,
        }
    }
}

/// A whole disk.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Disk {
    /// The kernel's name: `sda`, `nvme0n1`, `mmcblk1`.
    pub name: String,
    /// `/dev/NAME`.
    pub path: String,
    pub model: Option<String>,
    /// What the owner types to confirm a format. `None`: the disk does not
    /// report one (it then cannot be formatted here).
    pub serial: Option<String>,
    pub size_bytes: u64,
    /// A USB stick or card reader rather than a fixed disk.
    pub removable: bool,
    /// Its filesystems: partitions, or the whole disk when it has none.
    pub volumes: Vec<Volume>,
}

/// A partition, or a whole disk holding a filesystem.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub path: String,
    pub size_bytes: u64,
    /// `ext4`, `exfat`, `vfat`, `ntfs`, `btrfs`, `xfs`…; `None` if empty or unknown.
    pub filesystem: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// Where it is mounted, if it is.
    pub mounted_at: Option<String>,
    /// Free space, when mounted.
    pub free_bytes: Option<u64>,
}

/// Every disk but the system's own, by name.
pub fn list_disks(sources: &Sources) -> std::io::Result<Vec<Disk>> {
    let mounts = read_mounts(&sources.mountinfo);
    let entries = block_entries(&sources.sys_block)?;
    // The disks holding the root filesystem or /data are the system's.
    let system_disks: Vec<String> = mounts
        .iter()
        .filter(|m| m.point == "/" || m.point == "/data")
        .filter_map(|m| {
            let e = entries.iter().find(|e| e.dev == m.device)?;
            Some(e.disk.clone().unwrap_or_else(|| e.name.clone()))
        })
        .collect();
    let mut disks = Vec::new();
    for e in entries.iter().filter(|e| e.disk.is_none()) {
        if e.size_bytes == 0 || !listable(&e.name) || system_disks.contains(&e.name) {
            continue;
        }
        let props = udev_properties(&sources.udev_data, &e.dev);
        let device = e.sys.join("device");
        let serial = props
            .get("ID_SERIAL_SHORT")
            .or_else(|| props.get("ID_SERIAL"))
            .cloned()
            .or_else(|| sysfs_serial(&e.sys));
        let model = props
            .get("ID_MODEL")
            .map(|m| m.replace('_', " "))
            .or_else(|| read_trimmed(&device.join("model")));
        let partitions: Vec<&BlockEntry> = entries
            .iter()
            .filter(|p| p.disk.as_deref() == Some(&e.name))
            .collect();
        let volumes = if partitions.is_empty() {
            // A filesystem on the whole disk (many USB sticks), or nothing.
            let v = volume(sources, e, &mounts);
            if v.filesystem.is_some() {
                vec![v]
            } else {
                Vec::new()
            }
        } else {
            partitions
                .into_iter()
                .map(|p| volume(sources, p, &mounts))
                .collect()
        };
        disks.push(Disk {
            name: e.name.clone(),
            path: sources.dev.join(&e.name).display().to_string(),
            model,
            serial: serial.filter(|s| !s.is_empty()),
            size_bytes: e.size_bytes,
            removable: read_trimmed(&e.sys.join("removable")).as_deref() == Some("1"),
            volumes,
        });
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

/// Devices that are never an owner's disk: memory, compressed swap,
/// optical drives, device-mapper, a card's boot areas, an unbacked loop.
fn listable(name: &str) -> bool {
    const NOT_DISKS: [&str; 6] = ["ram", "zram", "sr", "dm-", "md", "nbd"];
    !NOT_DISKS.iter().any(|p| name.starts_with(p))
        && !(name.starts_with("mmcblk") && (name.contains("boot") || name.contains("rpmb")))
}

/// One directory of /sys/class/block.
#[derive(Debug)]
struct BlockEntry {
    name: String,
    sys: PathBuf,
    /// `major:minor`.
    dev: String,
    size_bytes: u64,
    /// For a partition, its disk's name.
    disk: Option<String>,
}

fn block_entries(sys_block: &Path) -> std::io::Result<Vec<BlockEntry>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(sys_block)?.flatten() {
        let sys = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(dev) = read_trimmed(&sys.join("dev")) else {
            continue;
        };
        let sectors: u64 = read_trimmed(&sys.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // A partition's sysfs directory sits inside its disk's.
        let disk = sys.join("partition").exists().then(|| {
            std::fs::canonicalize(&sys)
                .ok()
                .and_then(|p| {
                    p.parent()
                        .and_then(|d| d.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_default()
        });
        out.push(BlockEntry {
            name,
            sys,
            dev,
            size_bytes: sectors * 512,
            disk,
        });
    }
    Ok(out)
}

fn volume(sources: &Sources, e: &BlockEntry, mounts: &[Mount]) -> Volume {
    let props = udev_properties(&sources.udev_data, &e.dev);
    let path = sources.dev.join(&e.name);
    let probed = if props.contains_key("ID_FS_TYPE") || !sources.probe {
        HashMap::new()
    } else {
        probe(&path)
    };
    let get = |udev: &str, blkid: &str| {
        props
            .get(udev)
            .or_else(|| probed.get(blkid))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    // btrfs and FUSE mounts carry an anonymous device number: their
    // source names the device instead.
    let mounted_at = mounts
        .iter()
        .find(|m| m.device == e.dev || Path::new(&m.source) == path)
        .map(|m| m.point.clone());
    let free_bytes = mounted_at.as_ref().and_then(|p| {
        nix::sys::statvfs::statvfs(Path::new(p))
            .ok()
            .map(|s| s.blocks_available() * s.fragment_size())
    });
    Volume {
        name: e.name.clone(),
        path: path.display().to_string(),
        size_bytes: e.size_bytes,
        filesystem: get("ID_FS_TYPE", "TYPE"),
        uuid: get("ID_FS_UUID", "UUID"),
        label: get("ID_FS_LABEL", "LABEL"),
        mounted_at,
        free_bytes,
    }
}

/// `blkid -p -o export`: reads the superblock itself, not a cache.
fn probe(device: &Path) -> HashMap<String, String> {
    std::process::Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(device)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| parse_properties(&String::from_utf8_lossy(&o.stdout), ""))
        .unwrap_or_default()
}

/// udev's properties of a block device (`E:KEY=VALUE` lines).
fn udev_properties(udev_data: &Path, dev: &str) -> HashMap<String, String> {
    std::fs::read_to_string(udev_data.join(format!("b{dev}")))
        .map(|t| parse_properties(&t, "E:"))
        .unwrap_or_default()
}

fn parse_properties(text: &str, prefix: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix)?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// A serial sysfs has: NVMe and virtio disks carry one; a USB disk's is
/// its USB device's, further up the device tree.
fn sysfs_serial(sys: &Path) -> Option<String> {
    for candidate in [sys.join("serial"), sys.join("device/serial")] {
        if let Some(s) = read_trimmed(&candidate).filter(|s| !s.is_empty()) {
            return Some(s);
        }
    }
    let mut dir = std::fs::canonicalize(sys.join("device")).ok()?;
    while dir.pop() {
        if dir.join("idVendor").exists() {
            return read_trimmed(&dir.join("serial")).filter(|s| !s.is_empty());
        }
        if dir == Path::new("/sys/devices") || dir.as_os_str().len() <= 1 {
            break;
        }
    }
    None
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// One line of mountinfo, the fields used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted filesystem: the block device's, except
    /// for filesystems with an anonymous one (btrfs, FUSE).
    pub device: String,
    pub point: String,
    /// What was mounted (`/dev/sdb1`), as the mount was asked for.
    pub source: String,
}

/// The mounts of this process's namespace (`/proc/self/mountinfo`).
pub fn mounts() -> Vec<Mount> {
    read_mounts(Path::new("/proc/self/mountinfo"))
}

/// Where filesystems are mounted now.
pub fn mount_points() -> Vec<String> {
    mounts().into_iter().map(|m| m.point).collect()
}

fn read_mounts(mountinfo: &Path) -> Vec<Mount> {
    // Fields: id parent major:minor root mount-point options [optional…]
    // - fstype source super-options
    std::fs::read_to_string(mountinfo)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let mut fields = head.split_whitespace();
            let device = fields.nth(2)?.to_owned();
            let point = unescape_octal(fields.nth(1)?);
            let source = unescape_octal(tail.split_whitespace().nth(1).unwrap_or_default());
            Some(Mount {
                device,
                point,
                source,
            })
        })
        .collect()
}

/// mountinfo writes a space in a path as `\040` (three octal digits).
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| {
                let value = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                u8::try_from(value).ok()
            });
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs: disk `name` with `parts` partitions.
    fn fake_disk(root: &Path, name: &str, major: u32, parts: u32, size_sectors: u64) {
        let devices = root.join("devices/virtual/block");
        let disk = devices.join(name);
        std::fs::create_dir_all(&disk).expect("mkdir");
        std::fs::write(disk.join("dev"), format!("{major}:0\n")).expect("dev");
        std::fs::write(disk.join("size"), format!("{size_sectors}\n")).expect("size");
        std::fs::write(disk.join("removable"), "1\n").expect("removable");
        std::os::unix::fs::symlink(&disk, root.join("class/block").join(name)).expect("link");
        for p in 1..=parts {
            let part = disk.join(format!("{name}{p}"));
            std::fs::create_dir_all(&part).expect("mkdir");
            std::fs::write(part.join("dev"), format!("{major}:{p}\n")).expect("dev");
            std::fs::write(part.join("size"), format!("{}\n", size_sectors / 4)).expect("size");
            std::fs::write(part.join("partition"), format!("{p}\n")).expect("partition");
            std::os::unix::fs::symlink(&part, root.join("class/block").join(format!("{name}{p}")))
                .expect("link");
        }
    }

    fn sources(root: &Path) -> Sources {
        std::fs::create_dir_all(root.join("class/block")).expect("mkdir");
        std::fs::create_dir_all(root.join("udev")).expect("mkdir");
        Sources {
            sys_block: root.join("class/block"),
            udev_data: root.join("udev"),
            dev: PathBuf::from("/dev"),
            mountinfo: root.join("mountinfo"),
            probe: false,
        }
    }

    #[test]
    fn lists_disks_with_udev_facts_and_hides_the_system_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path());
        fake_disk(dir.path(), "vda", 253, 4, 8_000_000);
        fake_disk(dir.path(), "sda", 8, 1, 2_000_000);
        fake_disk(dir.path(), "sdb", 9, 0, 1_000_000);
        fake_disk(dir.path(), "zram0", 252, 0, 1_000_000);
        std::fs::write(
            dir.path().join("udev/b8:0"),
            "S:disk/by-id/usb-x\nE:ID_MODEL=Ultra_Fit\nE:ID_SERIAL_SHORT=4C530001\n",
        )
        .expect("udev");
        std::fs::write(
            dir.path().join("udev/b8:1"),
            "E:ID_FS_TYPE=exfat\nE:ID_FS_UUID=1234-ABCD\nE:ID_FS_LABEL=Photos\n",
        )
        .expect("udev");
        std::fs::write(
            dir.path().join("mountinfo"),
            "22 1 253:2 / / ro - erofs /dev/vda2 ro\n\
             23 22 253:4 / /data rw - ext4 /dev/vda4 rw\n\
             40 23 8:1 / /data/disks/My\\040Photos rw - exfat /dev/sda1 rw\n",
        )
        .expect("mountinfo");
        let disks = list_disks(&s).expect("list");
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        // vda holds / and /data; zram is memory; sdb is empty (no volumes).
        assert_eq!(names, ["sda", "sdb"]);
        let sda = &disks[0];
        assert_eq!(sda.model.as_deref(), Some("Ultra Fit"));
        assert_eq!(sda.serial.as_deref(), Some("4C530001"));
        assert_eq!(sda.size_bytes, 2_000_000 * 512);
        assert!(sda.removable);
        assert_eq!(sda.volumes.len(), 1);
        let v = &sda.volumes[0];
        assert_eq!(v.filesystem.as_deref(), Some("exfat"));
        assert_eq!(v.uuid.as_deref(), Some("1234-ABCD"));
        assert_eq!(v.label.as_deref(), Some("Photos"));
        assert_eq!(v.mounted_at.as_deref(), Some("/data/disks/My Photos"));
        assert!(disks[1].volumes.is_empty());
        assert_eq!(disks[1].serial, None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_octal("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape_octal("/plain\\"), "/plain\\");
        assert_eq!(unescape_octal("/end\\040"), "/end ");
        assert_eq!(unescape_octal("/big\\477"), "/big\\477");
    }
}
