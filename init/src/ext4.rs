//! Telling whether a partition holds an ext4 filesystem, from its
//! superblock: the magic number 0xEF53 at byte 1080, the filesystem's
//! size, and (when the primary superblock is gone) the backup copies
//! that show a damaged filesystem rather than an empty partition.
//! Making and resizing filesystems is `first_boot`'s business.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Where the primary superblock starts.
const SUPERBLOCK: usize = 1024;
/// The magic number's offset inside a superblock.
const MAGIC_IN_SUPERBLOCK: usize = 0x38;
/// The magic number's offset from the partition's start: 1080.
pub const MAGIC_OFFSET: usize = SUPERBLOCK + MAGIC_IN_SUPERBLOCK;
/// ext2, ext3 and ext4 share it.
pub const MAGIC: u16 = 0xEF53;

/// The `64bit` incompatible feature: the block count has a high half.
const INCOMPAT_64BIT: u32 = 0x80;

/// True when the bytes from a partition's start carry the ext magic.
pub fn has_magic(start: &[u8]) -> bool {
    le16(start, MAGIC_OFFSET) == Some(MAGIC)
}

/// What the primary superblock says about the filesystem's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks: u64,
}

impl Superblock {
    /// The filesystem's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.block_size.saturating_mul(self.blocks)
    }
}

/// Reads the primary superblock from the bytes at a partition's start
/// (2 KiB is enough); `None` when there is no ext filesystem.
pub fn superblock(start: &[u8]) -> Option<Superblock> {
    if !has_magic(start) {
        return None;
    }
    let log_block_size = le32(start, SUPERBLOCK + 0x18)?;
    // Block sizes run from 1 KiB to 64 KiB.
    if log_block_size > 6 {
        return None;
    }
    let low = u64::from(le32(start, SUPERBLOCK + 0x04)?);
    let incompat = le32(start, SUPERBLOCK + 0x60)?;
    let high = if incompat & INCOMPAT_64BIT != 0 {
        u64::from(le32(start, SUPERBLOCK + 0x150)?)
    } else {
        0
    };
    Some(Superblock {
        block_size: 1024 << log_block_size,
        blocks: high << 32 | low,
    })
}

/// Where block group 1 keeps a backup superblock, for each common block
/// size: (block size, block number, byte offset of its magic number).
/// With 1 KiB blocks the first data block is 1, so group 1 starts at 8193.
pub const BACKUP_SUPERBLOCKS: [(u64, u64, u64); 3] = [
    (1024, 8193, 8193 * 1024 + MAGIC_IN_SUPERBLOCK as u64),
    (2048, 16384, 16384 * 2048 + MAGIC_IN_SUPERBLOCK as u64),
    (4096, 32768, 32768 * 4096 + MAGIC_IN_SUPERBLOCK as u64),
];

/// How much of the partition's start `probe` reads: the image ships the
/// data partition as zeros, and a used filesystem never leaves its first
/// MiB (superblock, group descriptors, bitmaps) blank.
pub const HEAD_BYTES: usize = 1024 * 1024;

/// What a partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// An ext filesystem.
    Ext4(Superblock),
    /// No primary superblock, but a backup one and a start that is not
    /// blank: a damaged filesystem, which must be repaired (`e2fsck -b
    /// BLOCK -B BLOCK_SIZE`), never formatted over.
    Damaged { block: u64, block_size: u64 },
    /// No ext filesystem: a data partition never used (a backup
    /// superblock behind a blank start is an older filesystem that
    /// flashing the image wrote over).
    Empty,
}

/// Decides from the partition's first `HEAD_BYTES` and whether a backup
/// superblock was found (its block number and block size).
pub fn classify(head: &[u8], backup: Option<(u64, u64)>) -> Probe {
    if let Some(sb) = superblock(head) {
        return Probe::Ext4(sb);
    }
    match backup {
        Some((block, block_size)) if head.iter().any(|b| *b != 0) => {
            Probe::Damaged { block, block_size }
        }
        _ => Probe::Empty,
    }
}

/// Looks at a partition (or any file) and says what it holds.
pub fn probe(device: &Path) -> std::io::Result<Probe> {
    let file = File::open(device)?;
    let mut head = vec![0u8; HEAD_BYTES];
    let read = read_at(&file, &mut head, 0)?;
    head.truncate(read);
    let mut backup = None;
    for (block_size, block, offset) in BACKUP_SUPERBLOCKS {
        let mut magic = [0u8; 2];
        if read_at(&file, &mut magic, offset)? == magic.len() && u16::from_le_bytes(magic) == MAGIC
        {
            backup = Some((block, block_size));
            break;
        }
    }
    Ok(classify(&head, backup))
}

/// Reads as much as there is at `offset` (less near the end).
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let Some(rest) = buf.get_mut(done..) else {
            break;
        };
        match file.read_at(rest, offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const PROBE_BYTES: usize = 2048;

    /// A synthetic superblock: `log` block size, `blocks`, 64-bit or not.
    fn fake(log: u32, blocks: u64, is_64bit: bool) -> Vec<u8> {
        let mut b = vec![0u8; PROBE_BYTES];
        let mut put = |at: usize, bytes: &[u8]| {
            if let Some(slot) = b.get_mut(at..at + bytes.len()) {
                slot.copy_from_slice(bytes);
            }
        };
        put(MAGIC_OFFSET, &MAGIC.to_le_bytes());
        put(SUPERBLOCK + 0x18, &log.to_le_bytes());
        put(SUPERBLOCK + 0x04, &(blocks as u32).to_le_bytes());
        if is_64bit {
            put(SUPERBLOCK + 0x60, &INCOMPAT_64BIT.to_le_bytes());
            put(SUPERBLOCK + 0x150, &((blocks >> 32) as u32).to_le_bytes());
        }
        b
    }

    #[test]
    fn the_magic_is_at_byte_1080() {
        let mut b = vec![0u8; 2048];
        assert!(!has_magic(&b));
        b[1080] = 0x53;
        b[1081] = 0xEF;
        assert!(has_magic(&b));
        // Big-endian is not it.
        b[1080] = 0xEF;
        b[1081] = 0x53;
        assert!(!has_magic(&b));
        // Too short to hold a superblock.
        assert!(!has_magic(&[0x53; 1081]));
        assert!(!has_magic(&[]));
    }

    #[test]
    fn reads_the_size() {
        assert_eq!(
            superblock(&fake(2, 1000, false)).map(|s| s.bytes()),
            Some(4096 * 1000)
        );
        let big = 3 << 32 | 7;
        assert_eq!(
            superblock(&fake(2, big, true)),
            Some(Superblock {
                block_size: 4096,
                blocks: big
            })
        );
        // Without the 64bit feature the high half is not read.
        let mut b = fake(0, 5, false);
        b[SUPERBLOCK + 0x150] = 1;
        assert_eq!(superblock(&b).map(|s| s.blocks), Some(5));
        assert_eq!(superblock(&fake(40, 5, false)), None);
        assert_eq!(superblock(&[0u8; 2048]), None);
    }

    #[test]
    fn an_empty_partition_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("sda4");
        std::fs::File::create(&dev)
            .and_then(|f| f.set_len(64 << 20))
            .expect("partition");
        assert_eq!(probe(&dev).ok(), Some(Probe::Empty));
        // Shorter than a superblock: still empty, not an error.
        std::fs::write(&dev, b"short").expect("write");
        assert_eq!(probe(&dev).ok(), Some(Probe::Empty));
        assert!(probe(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_backup_superblock_behind_a_blank_start_is_an_old_filesystem() {
        let blank = vec![0u8; HEAD_BYTES];
        assert_eq!(classify(&blank, None), Probe::Empty);
        // Flashing the image zeroed the start of an old data partition.
        assert_eq!(classify(&blank, Some((32768, 4096))), Probe::Empty);
        let mut used = blank.clone();
        used[4096] = 1;
        assert_eq!(
            classify(&used, Some((32768, 4096))),
            Probe::Damaged {
                block: 32768,
                block_size: 4096
            }
        );
        assert_eq!(classify(&used, None), Probe::Empty);
        let sb = fake(2, 10, false);
        assert!(matches!(classify(&sb, Some((32768, 4096))), Probe::Ext4(_)));
    }

    #[test]
    fn finds_what_mkfs_made_and_a_damaged_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("sda4");
        std::fs::File::create(&dev)
            .and_then(|f| f.set_len(600 << 20))
            .expect("partition");
        let o = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-L", "data"])
            .arg(&dev)
            .output()
            .expect("mkfs.ext4 (apt-get install e2fsprogs)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            probe(&dev).ok(),
            Some(Probe::Ext4(Superblock {
                block_size: 4096,
                blocks: (600 << 20) / 4096
            }))
        );
        // Lose the primary superblock: the backup in group 1 remains.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&dev)
            .expect("open");
        f.write_all_at(&[0u8; 1024], 1024).expect("wipe");
        assert_eq!(
            probe(&dev).ok(),
            Some(Probe::Damaged {
                block: 32768,
                block_size: 4096
            })
        );
        // The image flashed over it: its first 64 MiB are zeros again.
        f.write_all_at(&vec![0u8; 64 << 20], 0).expect("flash");
        assert_eq!(probe(&dev).ok(), Some(Probe::Empty));
    }
}
