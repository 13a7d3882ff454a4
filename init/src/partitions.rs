//! Finding block devices through sysfs: which disk holds the root
//! filesystem, which partition is `data`, what kind of partition table
//! the disk has and how much room follows the data partition. All of it
//! reads a sysfs tree given by path (a fake one in tests) or decides
//! over what was read. Changing partitions is `first_boot`'s business.

use std::path::{Path, PathBuf};

use crate::cmdline::RootSpec;
use crate::console::log;
use crate::mounts::MountEntry;

/// The name of the data partition (GPT partition name).
pub const DATA_NAME: &str = "data";

/// The data partition's number on an MBR disk (no partition names):
/// boot, root A, root B, data.
pub const MBR_DATA_NUMBER: u32 = 4;

/// sysfs counts sizes and starts in 512-byte sectors, whatever the disk's.
pub const SECTOR: u64 = 512;

/// Below this much room after the data partition it is not worth growing.
pub const GROW_THRESHOLD: u64 = 16 * 1024 * 1024 / SECTOR;

/// An MBR table cannot describe anything past 2^32 sectors (2 TiB).
const MBR_LIMIT: u64 = 1 << 32;

/// A block device (a disk or a partition) as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Block {
    /// Kernel name: `sda4`, `mmcblk0p4`, `nvme0n1p4`.
    pub name: String,
    /// Device node name under `/dev` (`DEVNAME=`).
    pub devname: String,
    pub major: u32,
    pub minor: u32,
    /// `PARTN=`, set for partitions.
    pub partn: Option<u32>,
    /// `PARTNAME=`: the GPT partition name, when there is one.
    pub partname: Option<String>,
    /// `PARTUUID=`, which newer kernels add.
    pub partuuid: Option<String>,
    /// The kernel name of the disk a partition is on.
    pub disk: Option<String>,
    /// First sector (partitions).
    pub start: u64,
    /// Size in sectors.
    pub size: u64,
}

impl Block {
    /// The device node: `/dev/sda4`.
    pub fn dev_path(&self) -> String {
        format!("/dev/{}", self.devname)
    }

    fn is_on(&self, disk: &str) -> bool {
        self.disk.as_deref() == Some(disk)
    }
}

/// The fields of a `uevent` file (`KEY=value` lines) a `Block` keeps.
pub fn parse_uevent(name: &str, text: &str) -> Block {
    let mut block = Block {
        name: name.to_owned(),
        devname: name.to_owned(),
        ..Block::default()
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key {
            "MAJOR" => block.major = value.parse().unwrap_or(0),
            "MINOR" => block.minor = value.parse().unwrap_or(0),
            "DEVNAME" if !value.is_empty() => block.devname = value.to_owned(),
            "PARTN" => block.partn = value.parse().ok(),
            "PARTNAME" if !value.is_empty() => block.partname = Some(value.to_owned()),
            "PARTUUID" if !value.is_empty() => block.partuuid = Some(value.to_owned()),
            _ => {}
        }
    }
    block
}

/// Why the data partition could not be found.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: expected a number, found {found:?}")]
    NotANumber { path: PathBuf, found: String },
    #[error("no partition named \"data\" was found{detail}")]
    NotFound { detail: String },
    #[error(
        "partitions {names} are all named \"data\" and the disk holding the root filesystem \
         is unknown, so which one is this device's cannot be told"
    )]
    Ambiguous { names: String },
}

fn read(path: &Path) -> Result<String, PartitionError> {
    std::fs::read_to_string(path).map_err(|source| PartitionError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_number(path: &Path) -> Result<u64, PartitionError> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| PartitionError::NotANumber {
        path: path.to_owned(),
        found: text.trim().to_owned(),
    })
}

/// Every block device in `SYS/class/block` (`SYS` is `/sys` on a device).
pub fn read_blocks(sys: &Path) -> Result<Vec<Block>, PartitionError> {
    let class = sys.join("class/block");
    let entries = std::fs::read_dir(&class).map_err(|source| PartitionError::Read {
        path: class.clone(),
        source,
    })?;
    let mut blocks = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PartitionError::Read {
            path: class.clone(),
            source,
        })?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // One odd device must not hide the others; a skipped data or
        // root partition shows up as "not found", never as a wrong pick.
        match read_block(sys, &name) {
            Ok(block) => blocks.push(block),
            Err(err) => log!("skipping block device {name}: {err}"),
        }
    }
    blocks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(blocks)
}

/// One block device from `SYS/class/block/NAME`.
pub fn read_block(sys: &Path, name: &str) -> Result<Block, PartitionError> {
    let dir = sys.join("class/block").join(name);
    let mut block = parse_uevent(name, &read(&dir.join("uevent"))?);
    block.size = read_number(&dir.join("size"))?;
    if block.partn.is_some() {
        block.start = read_number(&dir.join("start"))?;
        // A partition's directory sits inside its disk's:
        // /sys/devices/…/block/sda/sda4.
        let real = std::fs::canonicalize(&dir).map_err(|source| PartitionError::Read {
            path: dir.clone(),
            source,
        })?;
        block.disk = real
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .map(str::to_owned);
    }
    Ok(block)
}

/// The partition `DEV/disk/by-partlabel/data` points to (its kernel
/// name), when udev in the initramfs made the link.
pub fn by_partlabel(dev: &Path, label: &str) -> Option<String> {
    let link = std::fs::read_link(dev.join("disk/by-partlabel").join(label)).ok()?;
    link.file_name()?.to_str().map(str::to_owned)
}

/// The block device the root filesystem is on: the device number of
/// the mount on `/`, or failing that what `root=` names.
pub fn root_block<'a>(
    blocks: &'a [Block],
    mounts: &[MountEntry],
    root: Option<&RootSpec>,
) -> Option<&'a Block> {
    let by_number = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == Path::new("/"))
        .filter(|m| m.major != 0)
        .and_then(|m| {
            blocks
                .iter()
                .find(|b| b.major == m.major && b.minor == m.minor)
        });
    by_number.or_else(|| match root? {
        RootSpec::PartLabel(label) => blocks
            .iter()
            .find(|b| b.partname.as_deref() == Some(label.as_str())),
        RootSpec::PartUuid(uuid) => blocks.iter().find(|b| {
            b.partuuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
        }),
        RootSpec::Device(path) => {
            let name = path.trim_start_matches("/dev/");
            blocks.iter().find(|b| b.devname == name)
        }
        RootSpec::Other(_) => None,
    })
}

/// Picks this device's data partition.
///
/// In order: the partition `/dev/disk/by-partlabel/data` points to; a
/// partition named `data` (on the root filesystem's disk when that is
/// known, so a second ddaemon disk plugged in is never taken); and on a
/// disk without partition names (MBR) partition 4 of the root's disk.
pub fn find_data<'a>(
    blocks: &'a [Block],
    root: Option<&Block>,
    by_partlabel: Option<&str>,
) -> Result<&'a Block, PartitionError> {
    let root_disk = root.and_then(|r| r.disk.as_deref());
    let ours = |b: &&Block| root_disk.is_none_or(|disk| b.is_on(disk));
    let named: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.partn.is_some() && b.partname.as_deref() == Some(DATA_NAME))
        .filter(ours)
        .collect();
    if let Some(linked) = by_partlabel.and_then(|name| named.iter().find(|b| b.name == name)) {
        return Ok(linked);
    }
    match named.as_slice() {
        [one] => return Ok(one),
        [] => {}
        many => {
            let names = many
                .iter()
                .map(|b| b.dev_path())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(PartitionError::Ambiguous { names });
        }
    }
    let Some(disk) = root_disk else {
        return Err(PartitionError::NotFound {
            detail: ", and the disk holding the root filesystem is unknown".into(),
        });
    };
    let on_disk: Vec<&Block> = blocks.iter().filter(|b| b.is_on(disk)).collect();
    if on_disk.iter().any(|b| b.partname.is_some()) {
        return Err(PartitionError::NotFound {
            detail: format!(" on /dev/{disk}, the disk holding the root filesystem"),
        });
    }
    on_disk
        .into_iter()
        .find(|b| b.partn == Some(MBR_DATA_NUMBER))
        .ok_or_else(|| PartitionError::NotFound {
            detail: format!(
                " on /dev/{disk}, and it has no partition names (MBR) nor a partition {MBR_DATA_NUMBER}"
            ),
        })
}

/// The kind of partition table, from a disk's first sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Gpt,
    Mbr,
    Unknown,
}

/// Reads the table kind from the first 512 bytes of a disk: a GPT disk
/// carries a protective MBR with one partition of type 0xEE.
pub fn table_kind(first_sector: &[u8]) -> Table {
    if first_sector.get(510..512) != Some(&[0x55, 0xAA][..]) {
        return Table::Unknown;
    }
    let protective = (0..4).any(|i| first_sector.get(446 + 16 * i + 4) == Some(&0xEE));
    if protective { Table::Gpt } else { Table::Mbr }
}

/// Sectors free after `part` on its disk, or `None` when another
/// partition follows it (then it cannot grow). An MBR table cannot use
/// the disk past 2 TiB.
pub fn room_after(blocks: &[Block], part: &Block, disk_size: u64, table: Table) -> Option<u64> {
    let disk = part.disk.as_deref()?;
    let followed = blocks
        .iter()
        .any(|b| b.is_on(disk) && b.name != part.name && b.start > part.start);
    if followed {
        return None;
    }
    let usable = match table {
        Table::Mbr => disk_size.min(MBR_LIMIT),
        Table::Gpt | Table::Unknown => disk_size,
    };
    Some(usable.saturating_sub(part.start + part.size))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mounts::parse_mountinfo;

    /// A partition of a fake disk.
    pub(crate) struct FakePart {
        pub name: String,
        pub number: u32,
        pub label: Option<&'static str>,
        pub start: u64,
        pub size: u64,
    }

    /// Builds a fake sysfs under `sys`: disks as (name, size in sectors,
    /// partitions), laid out as the kernel does (`class/block/*` links
    /// into `devices/…/block/DISK/PART`).
    pub(crate) fn fake_sys(sys: &Path, disks: &[(&str, u64, Vec<FakePart>)]) {
        let class = sys.join("class/block");
        std::fs::create_dir_all(&class).expect("class dir");
        for (major, (disk, size, parts)) in (8u32..).zip(disks) {
            let disk_dir = sys.join("devices/pci0000:00/block").join(disk);
            std::fs::create_dir_all(&disk_dir).expect("disk dir");
            std::fs::write(
                disk_dir.join("uevent"),
                format!("MAJOR={major}\nMINOR=0\nDEVNAME={disk}\nDEVTYPE=disk\nDISKSEQ=1\n"),
            )
            .expect("uevent");
            std::fs::write(disk_dir.join("size"), format!("{size}\n")).expect("size");
            std::os::unix::fs::symlink(&disk_dir, class.join(disk)).expect("link");
            for p in parts {
                let dir = disk_dir.join(&p.name);
                std::fs::create_dir_all(&dir).expect("part dir");
                let mut uevent = format!(
                    "MAJOR={major}\nMINOR={}\nDEVNAME={}\nDEVTYPE=partition\nPARTN={}\n",
                    p.number, p.name, p.number
                );
                if let Some(label) = p.label {
                    uevent.push_str(&format!("PARTNAME={label}\n"));
                }
                std::fs::write(dir.join("uevent"), uevent).expect("uevent");
                std::fs::write(dir.join("size"), format!("{}\n", p.size)).expect("size");
                std::fs::write(dir.join("start"), format!("{}\n", p.start)).expect("start");
                std::fs::write(dir.join("partition"), format!("{}\n", p.number))
                    .expect("partition");
                std::os::unix::fs::symlink(&dir, class.join(&p.name)).expect("link");
            }
        }
    }

    pub(crate) const MIB: u64 = 2048;

    /// The image's GPT layout: boot, root-a, root-b, data, 100 MiB each.
    pub(crate) fn gpt_disk(disk: &str, prefix: &str) -> Vec<FakePart> {
        [("boot", 1), ("root-a", 2), ("root-b", 3), ("data", 4)]
            .into_iter()
            .map(|(label, n)| FakePart {
                name: format!("{disk}{prefix}{n}"),
                number: n,
                label: Some(label),
                start: u64::from(n) * 100 * MIB,
                size: 100 * MIB,
            })
            .collect()
    }

    fn names(blocks: &[Block]) -> Vec<&str> {
        blocks.iter().map(|b| b.name.as_str()).collect()
    }

    #[test]
    fn parses_a_partition_uevent() {
        let b = parse_uevent(
            "nvme0n1p4",
            "MAJOR=259\nMINOR=4\nDEVNAME=nvme0n1p4\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=4\nPARTNAME=data\n",
        );
        assert_eq!((b.major, b.minor, b.partn), (259, 4, Some(4)));
        assert_eq!(b.partname.as_deref(), Some("data"));
        assert_eq!(b.dev_path(), "/dev/nvme0n1p4");
        let disk = parse_uevent("sda", "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n");
        assert_eq!((disk.partn, disk.partname), (None, None));
        let mbr = parse_uevent(
            "mmcblk0p4",
            "MAJOR=179\nMINOR=4\nDEVNAME=mmcblk0p4\nPARTN=4\n",
        );
        assert_eq!(mbr.partname, None);
    }

    #[test]
    fn reads_disks_and_partitions_from_sysfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_sys(dir.path(), &[("sda", 2000 * MIB, gpt_disk("sda", ""))]);
        let blocks = read_blocks(dir.path()).expect("blocks");
        assert_eq!(names(&blocks), ["sda", "sda1", "sda2", "sda3", "sda4"]);
        let data = blocks.iter().find(|b| b.name == "sda4").expect("sda4");
        assert_eq!(data.disk.as_deref(), Some("sda"));
        assert_eq!(
            (data.start, data.size, data.partn),
            (400 * MIB, 100 * MIB, Some(4))
        );
        let disk = blocks.iter().find(|b| b.name == "sda").expect("sda");
        assert_eq!((disk.size, disk.disk.as_deref()), (2000 * MIB, None));
    }

    #[test]
    fn a_broken_sysfs_entry_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_sys(dir.path(), &[("sda", 2000 * MIB, gpt_disk("sda", ""))]);
        std::fs::write(dir.path().join("class/block/sda4/size"), "lots\n").expect("write");
        let err = read_block(dir.path(), "sda4")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("sda4/size") && err.contains("lots"), "{err}");
        // The others are still read.
        let blocks = read_blocks(dir.path()).expect("blocks");
        assert_eq!(names(&blocks), ["sda", "sda1", "sda2", "sda3"]);
        let err = read_blocks(&dir.path().join("nowhere"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("nowhere/class/block"), "{err}");
    }

    #[test]
    fn finds_the_data_partition_by_name_on_the_root_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The device's own NVMe disk and a second ddaemon disk on USB.
        fake_sys(
            dir.path(),
            &[
                ("nvme0n1", 2000 * MIB, gpt_disk("nvme0n1", "p")),
                ("sdb", 2000 * MIB, gpt_disk("sdb", "")),
            ],
        );
        let blocks = read_blocks(dir.path()).expect("blocks");
        let mounts =
            parse_mountinfo("22 1 8:2 / / ro,relatime shared:1 - erofs /dev/nvme0n1p2 ro\n");
        let root = root_block(&blocks, &mounts, None);
        assert_eq!(root.map(|b| b.name.as_str()), Some("nvme0n1p2"));
        let data = find_data(&blocks, root, None).expect("data");
        assert_eq!(data.dev_path(), "/dev/nvme0n1p4");
        // The udev link may point at the other disk's data: not ours.
        let data = find_data(&blocks, root, Some("sdb4")).expect("data");
        assert_eq!(data.name, "nvme0n1p4");
        // Without knowing the root's disk, two "data" partitions are ambiguous.
        let err = find_data(&blocks, None, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/dev/nvme0n1p4, /dev/sdb4"), "{err}");
        // ...unless udev's link says which.
        let data = find_data(&blocks, None, Some("sdb4")).expect("data");
        assert_eq!(data.name, "sdb4");
    }

    #[test]
    fn the_root_disk_comes_from_root_when_the_mount_table_does_not_say() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_sys(dir.path(), &[("sda", 2000 * MIB, gpt_disk("sda", ""))]);
        let blocks = read_blocks(dir.path()).expect("blocks");
        // An overlay or a filesystem without a device reports major 0.
        let mounts = parse_mountinfo("1 0 0:30 / / rw - overlay overlay rw\n");
        let spec = RootSpec::PartLabel("root-b".into());
        assert_eq!(
            root_block(&blocks, &mounts, Some(&spec)).map(|b| b.name.as_str()),
            Some("sda3")
        );
        let spec = RootSpec::Device("/dev/sda2".into());
        assert_eq!(
            root_block(&blocks, &[], Some(&spec)).map(|b| b.name.as_str()),
            Some("sda2")
        );
        let spec = RootSpec::Other("UUID=x".into());
        assert_eq!(root_block(&blocks, &[], Some(&spec)), None);
        assert_eq!(root_block(&blocks, &[], None), None);
    }

    #[test]
    fn matches_partuuid_when_the_kernel_reports_it() {
        let mut b = parse_uevent(
            "mmcblk0p2",
            "MAJOR=179\nMINOR=2\nPARTN=2\nPARTUUID=dd000001-02\n",
        );
        b.disk = Some("mmcblk0".into());
        let blocks = [b];
        let spec = RootSpec::PartUuid("DD000001-02".into());
        assert_eq!(
            root_block(&blocks, &[], Some(&spec)).map(|b| b.name.as_str()),
            Some("mmcblk0p2")
        );
    }

    #[test]
    fn an_mbr_disk_uses_partition_four_of_the_root_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parts: Vec<FakePart> = (1..=4)
            .map(|n| FakePart {
                name: format!("mmcblk0p{n}"),
                number: n,
                label: None,
                start: u64::from(n) * 100 * MIB,
                size: 100 * MIB,
            })
            .collect();
        fake_sys(
            dir.path(),
            &[
                ("mmcblk0", 30_000 * MIB, parts),
                ("sda", 2000 * MIB, gpt_disk("sda", "")),
            ],
        );
        let blocks = read_blocks(dir.path()).expect("blocks");
        let mounts = parse_mountinfo("22 1 8:2 / / ro - erofs /dev/mmcblk0p2 ro\n");
        let root = root_block(&blocks, &mounts, None);
        assert_eq!(root.map(|b| b.name.as_str()), Some("mmcblk0p2"));
        let data = find_data(&blocks, root, None).expect("data");
        assert_eq!(data.dev_path(), "/dev/mmcblk0p4");
    }

    #[test]
    fn a_gpt_root_disk_without_data_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut parts = gpt_disk("sda", "");
        parts.truncate(3);
        parts.push(FakePart {
            name: "sda4".into(),
            number: 4,
            label: Some("home"),
            start: 400 * MIB,
            size: 100 * MIB,
        });
        fake_sys(dir.path(), &[("sda", 2000 * MIB, parts)]);
        let blocks = read_blocks(dir.path()).expect("blocks");
        let root = blocks.iter().find(|b| b.name == "sda2");
        let err = find_data(&blocks, root, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("no partition named \"data\"") && err.contains("/dev/sda"),
            "{err}"
        );
        let err = find_data(&blocks, None, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown"), "{err}");
    }

    #[test]
    fn reads_the_udev_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let links = dir.path().join("disk/by-partlabel");
        std::fs::create_dir_all(&links).expect("dir");
        std::os::unix::fs::symlink("../../nvme0n1p4", links.join("data")).expect("link");
        assert_eq!(
            by_partlabel(dir.path(), "data").as_deref(),
            Some("nvme0n1p4")
        );
        assert_eq!(by_partlabel(dir.path(), "root-a"), None);
    }

    #[test]
    fn tells_gpt_from_mbr() {
        let mut sector = [0u8; 512];
        assert_eq!(table_kind(&sector), Table::Unknown);
        sector[510] = 0x55;
        sector[511] = 0xAA;
        sector[446 + 4] = 0x0C;
        assert_eq!(table_kind(&sector), Table::Mbr);
        sector[446 + 4] = 0xEE;
        assert_eq!(table_kind(&sector), Table::Gpt);
        assert_eq!(table_kind(&sector[..100]), Table::Unknown);
    }

    #[test]
    fn room_after_the_last_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_sys(dir.path(), &[("sda", 2000 * MIB, gpt_disk("sda", ""))]);
        let blocks = read_blocks(dir.path()).expect("blocks");
        let data = blocks.iter().find(|b| b.name == "sda4").expect("sda4");
        assert_eq!(
            room_after(&blocks, data, 2000 * MIB, Table::Gpt),
            Some(1500 * MIB)
        );
        assert_eq!(room_after(&blocks, data, 500 * MIB, Table::Gpt), Some(0));
        assert_eq!(room_after(&blocks, data, 400 * MIB, Table::Gpt), Some(0));
        let root = blocks.iter().find(|b| b.name == "sda2").expect("sda2");
        assert_eq!(room_after(&blocks, root, 2000 * MIB, Table::Gpt), None);
        // 4 TiB behind an MBR: only the first 2 TiB count.
        let four_tib = 4 << 31;
        assert_eq!(
            room_after(&blocks, data, four_tib, Table::Mbr),
            Some((1 << 32) - 500 * MIB)
        );
        const { assert!(GROW_THRESHOLD == 16 * MIB) };
    }
}
