//! The commands that give the data partition its room and filesystem:
//! growing the partition to the disk's end (first boot, and later boots
//! on a bigger disk), making the ext4 filesystem, and growing it. This
//! module says what to run; `boot` runs it and decides when.

use std::time::Duration;

use crate::command::Cmd;
use crate::partitions::Table;

/// Grows partition `number` of `disk` (`/dev/sda`) to the end of the disk.
///
/// A GPT disk first gets its backup header moved to the disk's real end
/// (the image put it at the image's end). The root partition on the same
/// disk is mounted, so the kernel cannot re-read the whole table: sfdisk
/// is told not to try, and `partx` updates only this partition.
pub fn grow_partition(table: Table, disk: &str, number: u32) -> Vec<Cmd> {
    let number = number.to_string();
    let mut commands = Vec::new();
    if table == Table::Gpt {
        commands.push(Cmd::new("sfdisk").args([
            "--no-reread",
            "--no-tell-kernel",
            "--relocate",
            "gpt-bak-std",
            disk,
        ]));
    }
    commands.push(
        Cmd::new("sfdisk")
            .args(["--no-reread", "--no-tell-kernel", "-N", &number, disk])
            .stdin(", +\n"),
    );
    commands.push(Cmd::new("partx").args(["-u", "--nr", &number, disk]));
    commands
}

/// Makes the data filesystem. Lazy inode table and journal init keep it
/// to seconds on a large disk (the kernel finishes the work in the
/// background). `-F` because `boot` has already decided the partition
/// holds no ext filesystem (`ext4::probe`); a stale signature of some
/// other kind left by the flashing tool must not stop first boot with a
/// question nobody can answer.
pub fn make_filesystem(device: &str) -> Cmd {
    Cmd::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-L",
            "data",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
            device,
        ])
        .timeout(Duration::from_secs(10 * 60))
}

/// Grows the mounted data filesystem to fill its partition (online).
pub fn grow_filesystem(device: &str) -> Cmd {
    Cmd::new("resize2fs")
        .args([device])
        .timeout(Duration::from_secs(30 * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn lines(commands: &[Cmd]) -> Vec<String> {
        commands.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn gpt_moves_its_backup_header_first() {
        assert_eq!(
            lines(&grow_partition(Table::Gpt, "/dev/nvme0n1", 4)),
            [
                "sfdisk --no-reread --no-tell-kernel --relocate gpt-bak-std /dev/nvme0n1",
                "echo ', +' | sfdisk --no-reread --no-tell-kernel -N 4 /dev/nvme0n1",
                "partx -u --nr 4 /dev/nvme0n1",
            ]
        );
    }

    #[test]
    fn mbr_has_no_backup_header() {
        assert_eq!(
            lines(&grow_partition(Table::Mbr, "/dev/mmcblk0", 4)),
            [
                "echo ', +' | sfdisk --no-reread --no-tell-kernel -N 4 /dev/mmcblk0",
                "partx -u --nr 4 /dev/mmcblk0",
            ]
        );
    }

    #[test]
    fn filesystem_commands() {
        assert_eq!(
            make_filesystem("/dev/sda4").to_string(),
            "mkfs.ext4 -q -F -L data -E lazy_itable_init=1,lazy_journal_init=1 /dev/sda4"
        );
        assert_eq!(
            grow_filesystem("/dev/sda4").to_string(),
            "resize2fs /dev/sda4"
        );
    }

    /// The table-changing commands on disk image files (sfdisk accepts
    /// them; partx needs a real block device and is left out), as the
    /// image builder lays the disk out, then the disk made bigger.
    fn grows_an_image(label: &str, table: Table) {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = dir.path().join("disk.img");
        let disk_name = disk.to_string_lossy().into_owned();
        let f = std::fs::File::create(&disk).expect("disk");
        f.set_len(100 << 20).expect("size");
        let layout = format!(
            "label: {label}\nsize=10MiB, name=boot\nsize=20MiB, name=root-a\n\
             size=20MiB, name=root-b\nsize=16MiB, name=data\n"
        );
        let ok = crate::command::run(&Cmd::new("sfdisk").args(["-q", &disk_name]).stdin(&layout));
        assert!(ok.is_ok(), "{ok:?}");
        f.set_len(300 << 20).expect("grow the disk");
        for cmd in grow_partition(table, &disk_name, 4) {
            if cmd.program == "partx" {
                continue;
            }
            let ok = crate::command::run(&cmd);
            assert!(ok.is_ok(), "{ok:?}");
        }
        let o = Command::new("sfdisk")
            .arg("-d")
            .arg(&disk)
            .output()
            .expect("sfdisk (apt-get install fdisk)");
        let dump = String::from_utf8_lossy(&o.stdout);
        // `DISK4 : start=      104448, size=      509919, type=…`
        let field = |line: &str, key: &str| -> Option<u64> {
            line.split(',')
                .filter_map(|f| f.split_once('='))
                .find(|(k, _)| k.rsplit(':').next().map(str::trim) == Some(key))
                .and_then(|(_, v)| v.trim().parse().ok())
        };
        let data = dump
            .lines()
            .find(|l| l.starts_with(&format!("{disk_name}4 ")))
            .expect("partition 4 in the dump");
        let last = (
            field(data, "start").expect("start"),
            field(data, "size").expect("size"),
        );
        let end = (last.0 + last.1) * 512;
        assert!(end <= 300 << 20 && (300 << 20) - end < 1 << 20, "{dump}");
        if table == Table::Gpt {
            let o = Command::new("sgdisk")
                .arg("-v")
                .arg(&disk)
                .output()
                .expect("sgdisk (apt-get install gdisk)");
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(text.contains("No problems found"), "{text}");
        }
    }

    #[test]
    fn grows_a_gpt_image() {
        grows_an_image("gpt", Table::Gpt);
    }

    #[test]
    fn grows_an_mbr_image() {
        grows_an_image("dos", Table::Mbr);
    }
}
