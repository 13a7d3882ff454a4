//! The disk's partitions, as DESIGN.md lays them out — boot (FAT), root A,
//! root B, data — their offsets and sizes, and the partition table that
//! lists them (GPT, or the MBR the Raspberry Pi firmware reads), written
//! straight into the image file: no loop devices, no mounts.
//!
//! Everything is aligned to 1 MiB. The data partition is small in the
//! image; `ddaemon-init` grows it to fill the disk at first boot.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use ddaemon_boards::{Arch, PartitionTable};
use sha2::{Digest, Sha256};

/// Bytes per sector: what every table here counts in.
pub const SECTOR: u64 = 512;
/// Partitions start on MiB boundaries (flash erase blocks, 4K sectors).
pub const ALIGN: u64 = 1024 * 1024;
const GPT_ENTRIES: u64 = 128;
const GPT_ENTRY_SIZE: u64 = 128;
/// Sectors the GPT entry array takes (128 × 128 bytes).
const GPT_ENTRY_SECTORS: u64 = GPT_ENTRIES * GPT_ENTRY_SIZE / SECTOR;

/// What a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Boot,
    RootA,
    RootB,
    Data,
}

impl Role {
    /// The GPT partition name, also the filesystem label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Boot => "boot",
            Self::RootA => "root-a",
            Self::RootB => "root-b",
            Self::Data => "data",
        }
    }
}

/// How big each partition is in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub boot: u64,
    /// Each root slot: room for this root filesystem and a larger update.
    pub root: u64,
    /// The data partition as shipped (grown at first boot).
    pub data: u64,
}

/// One partition, in bytes from the start of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub role: Role,
    pub start: u64,
    pub size: u64,
}

impl Partition {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// Where everything goes on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub table: PartitionTable,
    pub arch: Arch,
    pub partitions: Vec<Partition>,
    /// The whole image.
    pub disk_size: u64,
}

/// Why a layout cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{field}: {message}")]
    Size {
        field: &'static str,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{role}: the filesystem ({size} bytes) is larger than its partition ({room} bytes)")]
    TooBig {
        role: &'static str,
        size: u64,
        room: u64,
    },
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// Lays out boot, root A, root B and data, 1 MiB aligned, after the
/// table's own first MiB, with room at the end for GPT's backup.
pub fn plan(table: PartitionTable, arch: Arch, sizes: Sizes) -> Result<Layout, LayoutError> {
    for (field, value, min) in [
        ("boot", sizes.boot, 32 * ALIGN),
        ("root", sizes.root, 64 * ALIGN),
        ("data", sizes.data, 16 * ALIGN),
    ] {
        if value < min {
            return Err(LayoutError::Size {
                field,
                message: format!("{value} bytes is below the least workable {min}"),
            });
        }
    }
    let mut start = ALIGN;
    let mut partitions = Vec::new();
    for (role, size) in [
        (Role::Boot, sizes.boot),
        (Role::RootA, sizes.root),
        (Role::RootB, sizes.root),
        (Role::Data, sizes.data),
    ] {
        let size = round_up(size, ALIGN);
        partitions.push(Partition { role, start, size });
        start += size;
    }
    // The last MiB holds GPT's backup entries and header (and keeps MBR
    // disks the same size).
    let disk_size = start + ALIGN;
    if table == PartitionTable::Mbr && disk_size / SECTOR > u64::from(u32::MAX) {
        return Err(LayoutError::Size {
            field: "partition_table",
            message: "an MBR table cannot address past 2 TiB; use gpt".into(),
        });
    }
    Ok(Layout {
        table,
        arch,
        partitions,
        disk_size,
    })
}

/// A GUID in the on-disk byte order (the first three fields little-endian).
fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut raw = [0u8; 16];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap_or(0);
    }
    let mut out = raw;
    out[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    out[4..6].copy_from_slice(&[raw[5], raw[4]]);
    out[6..8].copy_from_slice(&[raw[7], raw[6]]);
    out
}

/// A version-4-shaped GUID derived from `seed`, so the same inputs give the
/// same image (reproducible builds) while different disks differ.
pub fn derived_guid(seed: &str) -> [u8; 16] {
    let hash = Sha256::digest(seed.as_bytes());
    let mut g = [0u8; 16];
    g.copy_from_slice(&hash[..16]);
    g[7] = (g[7] & 0x0f) | 0x40; // version 4 (byte 7 is the high byte of field 3 on disk)
    g[8] = (g[8] & 0x3f) | 0x80; // RFC 4122 variant
    g
}

/// The GPT type of a partition (the Discoverable Partitions types for root).
fn gpt_type(role: Role, arch: Arch) -> [u8; 16] {
    guid_bytes(match (role, arch) {
        (Role::Boot, _) => "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        (Role::RootA | Role::RootB, Arch::Amd64) => "4F68BCE3-E8CD-4C31-9787-DA3AF6F9B9DE",
        (Role::RootA | Role::RootB, Arch::Arm64) => "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        (Role::Data, _) => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    })
}

fn mbr_entry(boot: bool, kind: u8, start_lba: u64, sectors: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0] = if boot { 0x80 } else { 0 };
    // CHS fields: "use LBA" (0xFE 0xFF 0xFF), as every modern tool writes.
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = kind;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    let start = u32::try_from(start_lba).unwrap_or(u32::MAX);
    let count = u32::try_from(sectors).unwrap_or(u32::MAX);
    e[8..12].copy_from_slice(&start.to_le_bytes());
    e[12..16].copy_from_slice(&count.to_le_bytes());
    e
}

/// The MBR disk id `table_bytes` writes for `seed`: the first half of
/// `PARTUUID=xxxxxxxx-NN` on an MBR disk.
pub fn mbr_disk_id(seed: &str) -> u32 {
    let id = derived_guid(&format!("{seed}/disk"));
    u32::from_le_bytes([id[0], id[1], id[2], id[3]])
}

fn mbr(entries: &[[u8; 16]], disk_id: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[440..444].copy_from_slice(&disk_id.to_le_bytes());
    for (i, e) in entries.iter().take(4).enumerate() {
        s[446 + i * 16..462 + i * 16].copy_from_slice(e);
    }
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

impl Layout {
    pub fn get(&self, role: Role) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// The partition table's sectors: (byte offset, bytes) to write.
    /// `seed` makes the disk and partition GUIDs (or the MBR disk id).
    pub fn table_bytes(&self, seed: &str) -> Vec<(u64, Vec<u8>)> {
        match self.table {
            PartitionTable::Mbr => {
                let entries: Vec<[u8; 16]> = self
                    .partitions
                    .iter()
                    .map(|p| {
                        let kind = if p.role == Role::Boot { 0x0c } else { 0x83 };
                        mbr_entry(
                            p.role == Role::Boot,
                            kind,
                            p.start / SECTOR,
                            p.size / SECTOR,
                        )
                    })
                    .collect();
                vec![(0, mbr(&entries, mbr_disk_id(seed)).to_vec())]
            }
            PartitionTable::Gpt => self.gpt_bytes(seed),
        }
    }

    fn gpt_bytes(&self, seed: &str) -> Vec<(u64, Vec<u8>)> {
        let last_lba = self.disk_size / SECTOR - 1;
        let first_usable = 2 + GPT_ENTRY_SECTORS;
        let last_usable = last_lba - 1 - GPT_ENTRY_SECTORS;
        let mut entries = vec![0u8; (GPT_ENTRIES * GPT_ENTRY_SIZE) as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut entries[i * GPT_ENTRY_SIZE as usize..(i + 1) * GPT_ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&gpt_type(p.role, self.arch));
            e[16..32].copy_from_slice(&derived_guid(&format!("{seed}/{}", p.role.name())));
            e[32..40].copy_from_slice(&(p.start / SECTOR).to_le_bytes());
            e[40..48].copy_from_slice(&(p.end() / SECTOR - 1).to_le_bytes());
            // Attributes: none; the root slots are told apart by name.
            for (j, unit) in p.role.name().encode_utf16().enumerate() {
                e[56 + j * 2..58 + j * 2].copy_from_slice(&unit.to_le_bytes());
            }
        }
        let entries_crc = crc32fast::hash(&entries);
        let disk_guid = derived_guid(&format!("{seed}/disk"));
        let header = |my_lba: u64, other_lba: u64, entries_lba: u64| {
            let mut h = vec![0u8; SECTOR as usize];
            h[0..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my_lba.to_le_bytes());
            h[32..40].copy_from_slice(&other_lba.to_le_bytes());
            h[40..48].copy_from_slice(&first_usable.to_le_bytes());
            h[48..56].copy_from_slice(&last_usable.to_le_bytes());
            h[56..72].copy_from_slice(&disk_guid);
            h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
            h[80..84].copy_from_slice(&(GPT_ENTRIES as u32).to_le_bytes());
            h[84..88].copy_from_slice(&(GPT_ENTRY_SIZE as u32).to_le_bytes());
            h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
            let crc = crc32fast::hash(&h[..92]);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            h
        };
        let protective = mbr(
            &[mbr_entry(
                false,
                0xee,
                1,
                (last_lba).min(u64::from(u32::MAX)),
            )],
            0,
        );
        let backup_entries_lba = last_lba - GPT_ENTRY_SECTORS;
        vec![
            (0, protective.to_vec()),
            (SECTOR, header(1, last_lba, 2)),
            (2 * SECTOR, entries.clone()),
            (backup_entries_lba * SECTOR, entries),
            (last_lba * SECTOR, header(last_lba, 1, backup_entries_lba)),
        ]
    }

    /// Writes the image: a sparse file of the disk's size, the partition
    /// table, and each given filesystem image copied in at its partition's
    /// offset. Partitions without content stay zero.
    pub fn write_image(
        &self,
        out: &Path,
        seed: &str,
        contents: &[(Role, &Path)],
    ) -> Result<(), LayoutError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LayoutError::Io { path, source }
        };
        for (role, path) in contents {
            let size = std::fs::metadata(path).map_err(io(path))?.len();
            let room = self.get(*role).map_or(0, |p| p.size);
            if size > room {
                return Err(LayoutError::TooBig {
                    role: role.name(),
                    size,
                    room,
                });
            }
        }
        let mut disk = File::create(out).map_err(io(out))?;
        disk.set_len(self.disk_size).map_err(io(out))?;
        for (offset, bytes) in self.table_bytes(seed) {
            disk.seek(SeekFrom::Start(offset)).map_err(io(out))?;
            disk.write_all(&bytes).map_err(io(out))?;
        }
        for (role, path) in contents {
            let Some(p) = self.get(*role) else { continue };
            let mut src = File::open(path).map_err(io(path))?;
            disk.seek(SeekFrom::Start(p.start)).map_err(io(out))?;
            std::io::copy(&mut src, &mut disk).map_err(io(out))?;
        }
        disk.sync_all().map_err(io(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = ALIGN;

    fn sizes() -> Sizes {
        Sizes {
            boot: 256 * MIB,
            root: 1024 * MIB,
            data: 64 * MIB + 1,
        }
    }

    #[test]
    fn partitions_are_aligned_consecutive_and_sized() {
        let l = plan(PartitionTable::Gpt, Arch::Amd64, sizes()).expect("layout");
        let roles: Vec<Role> = l.partitions.iter().map(|p| p.role).collect();
        assert_eq!(roles, [Role::Boot, Role::RootA, Role::RootB, Role::Data]);
        assert_eq!(l.partitions[0].start, MIB, "the first MiB is the table's");
        for w in l.partitions.windows(2) {
            assert_eq!(w[0].end(), w[1].start, "no gaps, no overlaps");
        }
        for p in &l.partitions {
            assert_eq!(p.start % MIB, 0);
            assert_eq!(p.size % MIB, 0);
        }
        assert_eq!(
            l.get(Role::Data).map(|p| p.size),
            Some(65 * MIB),
            "rounded up"
        );
        assert_eq!(l.disk_size, (1 + 256 + 1024 + 1024 + 65 + 1) * MIB);
    }

    #[test]
    fn sizes_too_small_are_refused_by_name() {
        let err = plan(
            PartitionTable::Mbr,
            Arch::Arm64,
            Sizes {
                boot: MIB,
                ..sizes()
            },
        )
        .expect_err("tiny boot");
        assert!(err.to_string().starts_with("boot:"), "{err}");
    }

    #[test]
    fn guids_are_mixed_endian_and_stable() {
        let esp = guid_bytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(&esp[..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(&esp[8..], &[0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
        assert_eq!(derived_guid("a"), derived_guid("a"));
        assert_ne!(derived_guid("a"), derived_guid("b"));
    }

    fn sfdisk_json(image: &Path) -> serde_json::Value {
        let o = std::process::Command::new("sfdisk")
            .arg("--json")
            .arg(image)
            .output()
            .expect("sfdisk (apt-get install fdisk)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("json")
    }

    #[test]
    fn sfdisk_and_sgdisk_read_the_gpt_we_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = plan(PartitionTable::Gpt, Arch::Amd64, sizes()).expect("layout");
        let fs = dir.path().join("root.img");
        std::fs::write(&fs, b"root filesystem bytes").expect("fs");
        let img = dir.path().join("disk.img");
        l.write_image(&img, "test", &[(Role::RootA, &fs)])
            .expect("write");
        let v = sfdisk_json(&img);
        let table = &v["partitiontable"];
        assert_eq!(table["label"], "gpt");
        let parts = table["partitions"].as_array().expect("partitions");
        assert_eq!(parts.len(), 4);
        for (p, want) in parts.iter().zip(&l.partitions) {
            assert_eq!(p["start"].as_u64(), Some(want.start / SECTOR));
            assert_eq!(p["size"].as_u64(), Some(want.size / SECTOR));
            assert_eq!(p["name"].as_str(), Some(want.role.name()));
        }
        assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(parts[1]["type"], "4F68BCE3-E8CD-4C31-9787-DA3AF6F9B9DE");
        // sgdisk checks both headers' and the entries' CRCs.
        let o = std::process::Command::new("sgdisk")
            .arg("--verify")
            .arg(&img)
            .output()
            .expect("sgdisk (apt-get install gdisk)");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("No problems found"), "{out}");
        // The content sits at its partition's offset.
        let bytes = std::fs::read(&img).expect("image");
        let at = usize::try_from(l.partitions[1].start).expect("offset");
        assert_eq!(&bytes[at..at + 21], b"root filesystem bytes");
    }

    #[test]
    fn sfdisk_reads_the_mbr_the_pi_boots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = plan(PartitionTable::Mbr, Arch::Arm64, sizes()).expect("layout");
        let img = dir.path().join("disk.img");
        l.write_image(&img, "pi", &[]).expect("write");
        let v = sfdisk_json(&img);
        let table = &v["partitiontable"];
        assert_eq!(table["label"], "dos");
        let parts = table["partitions"].as_array().expect("partitions");
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0]["type"], "c", "FAT32 (LBA)");
        assert_eq!(parts[0]["bootable"], true);
        assert_eq!(parts[3]["type"], "83");
        assert_eq!(
            parts[3]["start"].as_u64(),
            Some(l.partitions[3].start / SECTOR)
        );
    }

    #[test]
    fn a_filesystem_larger_than_its_partition_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = plan(PartitionTable::Gpt, Arch::Amd64, sizes()).expect("layout");
        let fs = dir.path().join("boot.img");
        std::fs::File::create(&fs)
            .and_then(|f| f.set_len(257 * MIB))
            .expect("big fs");
        let img = dir.path().join("disk.img");
        let err = l
            .write_image(&img, "t", &[(Role::Boot, &fs)])
            .expect_err("too big");
        assert!(err.to_string().starts_with("boot:"), "{err}");
        assert!(!img.exists(), "nothing written");
    }
}
