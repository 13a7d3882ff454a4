//! What gets mounted where: the mount table as `/proc/self/mountinfo`
//! shows it, and the mounts init makes (the kernel's API filesystems,
//! `/data`, the overlays of `/etc` and `/var`, the tmpfs fallback).
//! Performing a mount is the `Os` trait's job (`os.rs`); deciding when
//! is `boot`'s.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

/// Where the data partition is mounted.
pub const DATA: &str = "/data";

/// The directories that get a writable overlay, upper layer on `/data`.
pub const OVERLAID: [&str; 2] = ["etc", "var"];

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The device number of the mounted filesystem (`8:2`).
    pub major: u32,
    pub minor: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// What was mounted (`/dev/sda2`, `overlay`, `tmpfs`).
    pub source: String,
}

/// Parses `/proc/self/mountinfo`; lines it cannot read are skipped.
///
/// A line: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`
/// (id, parent, major:minor, root, mount point, options, optional
/// fields, `-`, type, source, super options).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let mount_point = unescape(fields.get(4)?);
    let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        mount_point,
        fstype: (*fields.get(dash + 1)?).to_owned(),
        source: unescape(fields.get(dash + 2)?)
            .to_string_lossy()
            .into_owned(),
    })
}

/// Undoes the kernel's octal escapes (`\040` is a space).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|_| b == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match octal {
            Some(value) => {
                out.push(value);
                i += 4;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The filesystem mounted on `target` (the topmost, if several are).
pub fn mounted_at<'a>(table: &'a [MountEntry], target: &Path) -> Option<&'a MountEntry> {
    table.iter().rev().find(|m| m.mount_point == target)
}

/// A mount to make: `mount -t FSTYPE -o DATA SOURCE TARGET` with flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub flags: MsFlags,
    pub data: Option<String>,
}

impl MountSpec {
    fn new(source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Self {
        Self {
            source: source.to_owned(),
            target: PathBuf::from(target),
            fstype: fstype.to_owned(),
            flags,
            data: data.map(str::to_owned),
        }
    }
}

/// The kernel's filesystems systemd and init need, `/proc` first (it
/// tells which of the others are already there). The options are the
/// ones systemd would use.
pub fn api_filesystems() -> [MountSpec; 4] {
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    [
        MountSpec::new("proc", "/proc", "proc", hardened, None),
        MountSpec::new("sysfs", "/sys", "sysfs", hardened, None),
        MountSpec::new(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        MountSpec::new(
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
    ]
}

/// The data partition on `/data`.
pub fn data(device: &str) -> MountSpec {
    MountSpec::new(device, DATA, "ext4", MsFlags::MS_NOATIME, None)
}

/// The fallback `/data` when the partition cannot be used: in memory,
/// so the supervisor can start and show the problem.
pub fn data_fallback() -> MountSpec {
    MountSpec::new(
        "tmpfs",
        DATA,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
}

/// The upper and work directories of `/NAME`'s overlay.
pub fn overlay_dirs(name: &str) -> [String; 2] {
    [
        format!("{DATA}/overlay/{name}/upper"),
        format!("{DATA}/overlay/{name}/work"),
    ]
}

/// The writable overlay on `/NAME`: the read-only root's `/NAME` below,
/// `/data/overlay/NAME/upper` above.
pub fn overlay(name: &str) -> MountSpec {
    let [upper, work] = overlay_dirs(name);
    let target = format!("/{name}");
    let options = format!("lowerdir={target},upperdir={upper},workdir={work}");
    MountSpec::new(
        "overlay",
        &target,
        "overlay",
        MsFlags::empty(),
        Some(&options),
    )
}

/// Why a mount or an unmount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mounting {device} ({fstype}) on {target}: {errno}")]
    Mount {
        device: String,
        fstype: String,
        target: PathBuf,
        errno: nix::Error,
    },
    #[error("unmounting {target}: {errno}")]
    Unmount { target: PathBuf, errno: nix::Error },
    #[error("reading the mount table {path}: {source}")]
    Table {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a Debian initramfs leaves behind on an x86 device, trimmed.
    const MOUNTINFO: &str = "\
22 1 259:2 / / ro,relatime shared:1 - erofs /dev/nvme0n1p2 ro,user_xattr,acl,cache_strategy=readaround
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
24 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 22 0:5 / /dev rw,nosuid,relatime shared:8 - devtmpfs udev rw,size=4011636k,nr_inodes=1002909,mode=755
26 25 0:23 / /dev/pts rw,nosuid,noexec,relatime shared:9 - devpts devpts rw,gid=5,mode=620,ptmxmode=000
27 22 0:24 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=804392k,mode=755
30 22 8:17 / /mnt/my\\040disk rw,relatime - ext4 /dev/sdb1 rw
31 27 0:40 / /run rw,relatime - tmpfs tmpfs rw
";

    #[test]
    fn parses_mountinfo() {
        let table = parse_mountinfo(MOUNTINFO);
        assert_eq!(table.len(), 8);
        assert_eq!(
            table.first(),
            Some(&MountEntry {
                major: 259,
                minor: 2,
                mount_point: "/".into(),
                fstype: "erofs".into(),
                source: "/dev/nvme0n1p2".into(),
            })
        );
        let disk = mounted_at(&table, Path::new("/mnt/my disk"));
        assert_eq!(disk.map(|m| m.source.as_str()), Some("/dev/sdb1"));
    }

    #[test]
    fn optional_fields_may_be_absent_or_many() {
        let table = parse_mountinfo(
            "1 0 8:1 / /a rw - ext4 /dev/sda1 rw\n2 0 8:2 / /b rw shared:1 master:2 - xfs /dev/sda2 rw\n",
        );
        let types: Vec<&str> = table.iter().map(|m| m.fstype.as_str()).collect();
        assert_eq!(types, ["ext4", "xfs"]);
    }

    #[test]
    fn broken_lines_are_skipped() {
        assert!(
            parse_mountinfo("garbage\n1 0 x:y / / rw - ext4 /dev/sda1 rw\n\n1 0 8:1 / / rw ext4\n")
                .is_empty()
        );
    }

    #[test]
    fn the_topmost_mount_wins() {
        let table = parse_mountinfo(MOUNTINFO);
        let run = mounted_at(&table, Path::new("/run"));
        assert_eq!(run.map(|m| m.minor), Some(40));
        assert!(mounted_at(&table, Path::new("/data")).is_none());
        assert!(mounted_at(&table, Path::new("/dev/pts")).is_some());
    }

    #[test]
    fn proc_comes_first() {
        let targets: Vec<PathBuf> = api_filesystems().into_iter().map(|m| m.target).collect();
        assert_eq!(
            targets,
            [
                Path::new("/proc"),
                Path::new("/sys"),
                Path::new("/dev"),
                Path::new("/run")
            ]
        );
        let run = api_filesystems().into_iter().next_back();
        assert_eq!(run.and_then(|m| m.data).as_deref(), Some("mode=0755"));
    }

    #[test]
    fn overlays_stack_data_on_the_read_only_root() {
        let etc = overlay("etc");
        assert_eq!(etc.target, Path::new("/etc"));
        assert_eq!(etc.fstype, "overlay");
        assert_eq!(
            etc.data.as_deref(),
            Some("lowerdir=/etc,upperdir=/data/overlay/etc/upper,workdir=/data/overlay/etc/work")
        );
        assert_eq!(
            overlay_dirs("var"),
            ["/data/overlay/var/upper", "/data/overlay/var/work"]
        );
    }

    #[test]
    fn data_is_ext4_without_atime() {
        let m = data("/dev/sda4");
        assert_eq!(
            (m.source.as_str(), m.fstype.as_str()),
            ("/dev/sda4", "ext4")
        );
        assert_eq!(m.target, Path::new("/data"));
        assert!(m.flags.contains(MsFlags::MS_NOATIME));
        assert_eq!(data_fallback().fstype, "tmpfs");
    }
}
