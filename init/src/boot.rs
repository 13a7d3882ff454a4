//! The boot before systemd, step by step, and what happens when a step
//! fails. Each step logs what it does; the pieces it uses (sysfs,
//! superblocks, the kernel command line, the reset, the tools to run)
//! live in their own modules, and every call into the system goes
//! through the `Os` trait, so the whole sequence is tested here with a
//! fake system in a temporary directory.
//!
//! Steps: the kernel's filesystems (`/proc`, `/sys`, `/dev`, `/run`);
//! `/data` (find the partition, grow it, make its filesystem at first
//! boot, mount it, carry out a factory reset); the overlays of `/etc`
//! and `/var`; the boot slot in `/run/ddaemon/boot-slot`; the hostname.
//!
//! When a step fails, it has already undone its own mounts (never a
//! half-mounted `/data`, never one overlay without the other). The
//! sequence then falls back: a tmpfs on `/data` if the partition is not
//! mounted, the steps not yet reached run on that (so `/etc` and `/var`
//! are writable, in memory), and the errors go to
//! `/run/ddaemon/init-error` for the supervisor to show. systemd starts
//! either way.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::cmdline::{self, Slot};
use crate::command::CommandError;
use crate::console::log;
use crate::ext4::{self, Probe, Superblock};
use crate::first_boot;
use crate::hostname;
use crate::mounts::{self, DATA, MountError, OVERLAID, mounted_at};
use crate::os::{Os, Root};
use crate::partitions::{self, Block, DATA_NAME, GROW_THRESHOLD, PartitionError, SECTOR, Table};
use crate::reset::{self, ResetError};

/// Which root slot booted: `a` or `b`, no newline.
pub const BOOT_SLOT: &str = "/run/ddaemon/boot-slot";
/// Why the boot fell back, one problem a line; absent when all went well.
pub const INIT_ERROR: &str = "/run/ddaemon/init-error";
/// The hostname the owner chose (written by the supervisor).
const HOSTNAME_FILE: &str = "/data/ddaemon/hostname";
const CMDLINE: &str = "/proc/cmdline";
const MIB: u64 = 1024 * 1024;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error(transparent)]
    Reset(#[from] ResetError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the data partition {device} has lost its ext4 superblock, but a backup copy remains \
         at block {block}: the filesystem is damaged, so it is left as it is rather than \
         formatted; repair it with `e2fsck -b {block} -B {block_size} {device}`"
    )]
    Damaged {
        device: String,
        block: u64,
        block_size: u64,
    },
    #[error("setting the hostname to {name}: {errno}")]
    Hostname { name: String, errno: nix::Error },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StepError + 'a {
    move |source| StepError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    ApiFilesystems,
    Data,
    Overlays,
    BootSlot,
    Hostname,
}

const STEPS: [Step; 5] = [
    Step::ApiFilesystems,
    Step::Data,
    Step::Overlays,
    Step::BootSlot,
    Step::Hostname,
];

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Self::ApiFilesystems => "mounting /proc, /sys, /dev and /run",
            Self::Data => "setting up /data",
            Self::Overlays => "overlaying /etc and /var",
            Self::BootSlot => "recording the boot slot",
            Self::Hostname => "setting the hostname",
        }
    }

    fn run(self, os: &mut dyn Os, root: &Root) -> Result<(), StepError> {
        match self {
            Self::ApiFilesystems => api_filesystems(os),
            Self::Data => data(os, root),
            Self::Overlays => overlays(os, root),
            Self::BootSlot => boot_slot(os, root),
            Self::Hostname => set_hostname(os, root),
        }
    }
}

/// What the boot before systemd came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// What went wrong, one line each; empty when all went well.
    pub errors: Vec<String>,
}

/// Runs every step, falling back on the first failure.
pub fn run(os: &mut dyn Os, root: &Root) -> Outcome {
    for step in STEPS {
        log!("{}", step.describe());
        if let Err(err) = step.run(os, root) {
            let message = format!("{}: {err}", step.describe());
            log!("FAILED {message}");
            return fallback(os, root, step, message);
        }
    }
    Outcome::default()
}

/// The safe state after `failed` failed: a `/data` (tmpfs unless the
/// partition is mounted), the remaining steps on it, and the errors in
/// `/run/ddaemon/init-error`.
fn fallback(os: &mut dyn Os, root: &Root, failed: Step, message: String) -> Outcome {
    let mut errors = vec![message];
    log!("falling back to a safe state, so the supervisor can start and show the problem");
    // No mount table means no /proc: nothing else is mounted either.
    let table = os.mounts().unwrap_or_default();
    let mut have_data = mounted_at(&table, Path::new(DATA)).is_some();
    if !have_data {
        log!("mounting a tmpfs on /data: nothing written there survives a reboot");
        match os.mount(&mounts::data_fallback()) {
            Ok(()) => have_data = true,
            Err(err) => {
                log!("FAILED {err}");
                errors.push(format!("mounting a tmpfs on /data: {err}"));
            }
        }
    }
    for step in STEPS
        .into_iter()
        .filter(|s| *s > failed && *s != Step::Data)
    {
        // Overlays on the root filesystem's own (read-only) /data: never.
        if step == Step::Overlays && !have_data {
            log!("leaving /etc and /var read-only: there is no /data for their changes");
            continue;
        }
        log!("{}", step.describe());
        if let Err(err) = step.run(os, root) {
            let message = format!("{}: {err}", step.describe());
            log!("FAILED {message}");
            errors.push(message);
        }
    }
    let path = root.path(INIT_ERROR);
    match write_run_file(&path, &(errors.join("\n") + "\n")) {
        Ok(()) => log!("the problem is recorded in {INIT_ERROR}"),
        Err(err) => log!("FAILED {err}"),
    }
    Outcome { errors }
}

/// `/proc` first (the mount table says which of the others are already
/// there: Debian's initramfs moves all four into the new root). Each is
/// left mounted if a later one fails: they are independent, and systemd
/// needs whichever there are.
fn api_filesystems(os: &mut dyn Os) -> Result<(), StepError> {
    let [proc_fs, others @ ..] = mounts::api_filesystems();
    let table = match os.mounts() {
        Ok(table) => {
            log!("/proc is already mounted");
            table
        }
        Err(_) => {
            log!("mounting proc on /proc");
            os.mount(&proc_fs)?;
            os.mounts()?
        }
    };
    for spec in others {
        match mounted_at(&table, &spec.target) {
            Some(m) => log!(
                "{} is already mounted ({})",
                spec.target.display(),
                m.fstype
            ),
            None => {
                log!("mounting {} on {}", spec.fstype, spec.target.display());
                os.mount(&spec)?;
            }
        }
    }
    Ok(())
}

fn read_cmdline(root: &Root) -> String {
    fs::read_to_string(root.path(CMDLINE)).unwrap_or_else(|err| {
        log!("cannot read {CMDLINE}: {err}");
        String::new()
    })
}

/// Finds, grows, formats (first boot), mounts and resets (when asked)
/// the data partition.
fn data(os: &mut dyn Os, root: &Root) -> Result<(), StepError> {
    let table = os.mounts()?;
    if let Some(m) = mounted_at(&table, Path::new(DATA)) {
        log!(
            "/data is already mounted ({} from {}); leaving it",
            m.fstype,
            m.source
        );
        return Ok(());
    }
    let cmdline = read_cmdline(root);
    let blocks = partitions::read_blocks(&root.path("/sys"))?;
    let root_block = partitions::root_block(&blocks, &table, cmdline::root(&cmdline).as_ref());
    match root_block {
        Some(b) => log!(
            "the root filesystem is on {} (disk /dev/{})",
            b.dev_path(),
            b.disk.as_deref().unwrap_or("?")
        ),
        None => log!("cannot tell which disk holds the root filesystem"),
    }
    let linked = partitions::by_partlabel(&root.path("/dev"), DATA_NAME);
    let part = partitions::find_data(&blocks, root_block, linked.as_deref())?.clone();
    let device = part.dev_path();
    log!(
        "the data partition is {device} (partition {} of /dev/{}, {} MiB)",
        part.partn.unwrap_or(0),
        part.disk.as_deref().unwrap_or("?"),
        part.size * SECTOR / MIB
    );
    let part = grow_partition(os, root, &blocks, part);
    let probe_path = root.path(&device);
    let fs = match ext4::probe(&probe_path).map_err(io("reading", &probe_path))? {
        Probe::Ext4(sb) => {
            log!(
                "{device} holds an ext4 filesystem of {} MiB",
                sb.bytes() / MIB
            );
            Some(sb)
        }
        Probe::Damaged { block, block_size } => {
            return Err(StepError::Damaged {
                device,
                block,
                block_size,
            });
        }
        Probe::Empty => {
            log!("first boot: {device} holds no filesystem yet; making one");
            let cmd = first_boot::make_filesystem(&device);
            log!("running {cmd}");
            os.run(&cmd)?;
            None
        }
    };
    log!("mounting {device} on /data");
    os.mount(&mounts::data(&device))?;
    // From here on a failure unmounts /data again: never half set up.
    if let Err(err) = after_mount(os, root, &part, fs, &device) {
        log!("unmounting /data again");
        if let Err(unmount) = os.unmount(Path::new(DATA)) {
            log!("FAILED {unmount}");
        }
        return Err(err);
    }
    Ok(())
}

/// Grows the data partition to the disk's end when there is more than
/// 16 MiB after it (first boot, or a bigger disk). A failure is logged
/// and not fatal: the data is untouched, and the next boot tries again.
/// Returns the partition as the kernel now sees it.
fn grow_partition(os: &mut dyn Os, root: &Root, blocks: &[Block], part: Block) -> Block {
    let disk = part
        .disk
        .as_deref()
        .and_then(|d| blocks.iter().find(|b| b.name == d));
    let (Some(disk), Some(number)) = (disk, part.partn) else {
        return part;
    };
    let disk_dev = disk.dev_path();
    let mut first_sector = [0u8; 512];
    let table = match fs::File::open(root.path(&disk_dev))
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut first_sector, 0))
    {
        Ok(()) => partitions::table_kind(&first_sector),
        Err(err) => {
            log!("cannot read the partition table of {disk_dev}: {err}");
            Table::Unknown
        }
    };
    let Some(room) = partitions::room_after(blocks, &part, disk.size, table) else {
        log!(
            "{} is not the last partition on {disk_dev}; not growing it",
            part.dev_path()
        );
        return part;
    };
    if room <= GROW_THRESHOLD {
        return part;
    }
    if table == Table::Unknown {
        log!(
            "{disk_dev} has no partition table init knows; not growing {}",
            part.dev_path()
        );
        return part;
    }
    log!(
        "growing {} by {} MiB to the end of {disk_dev}",
        part.dev_path(),
        room * SECTOR / MIB
    );
    for cmd in first_boot::grow_partition(table, &disk_dev, number) {
        log!("running {cmd}");
        if let Err(err) = os.run(&cmd) {
            log!("FAILED {err}; the data partition keeps its size until the next boot");
            break;
        }
    }
    match partitions::read_block(&root.path("/sys"), &part.name) {
        Ok(now) => now,
        Err(err) => {
            log!("cannot read the new size of {}: {err}", part.dev_path());
            part
        }
    }
}

/// With `/data` mounted: grow the filesystem when the partition grew,
/// then carry out a factory reset when one was asked for.
fn after_mount(
    os: &mut dyn Os,
    root: &Root,
    part: &Block,
    fs: Option<Superblock>,
    device: &str,
) -> Result<(), StepError> {
    let partition_bytes = part.size * SECTOR;
    if let Some(sb) = fs.filter(|sb| partition_bytes > sb.bytes() + GROW_THRESHOLD * SECTOR) {
        log!(
            "growing the filesystem on {device} from {} MiB to its partition's {} MiB",
            sb.bytes() / MIB,
            partition_bytes / MIB
        );
        let cmd = first_boot::grow_filesystem(device);
        log!("running {cmd}");
        if let Err(err) = os.run(&cmd) {
            log!("FAILED {err}; the filesystem keeps its size until the next boot");
        }
    }
    let data = root.path(DATA);
    if reset::pending(&data) {
        log!("a factory reset was asked for: deleting everything on /data but /data/disks");
        let wiped = reset::factory_reset(&data)?;
        log!(
            "factory reset done: {} files and folders deleted{}",
            wiped.removed,
            if wiped.kept_mounts.is_empty() {
                String::new()
            } else {
                format!(", {} mount points left", wiped.kept_mounts.len())
            }
        );
    }
    Ok(())
}

/// Both overlays or neither: if the second cannot be mounted, the first
/// is unmounted again.
fn overlays(os: &mut dyn Os, root: &Root) -> Result<(), StepError> {
    let table = os.mounts()?;
    let mut made = Vec::new();
    let result = mount_overlays(os, root, &table, &mut made);
    if result.is_err() {
        for target in made.iter().rev() {
            log!("unmounting the overlay on {} again", target.display());
            if let Err(err) = os.unmount(target) {
                log!("FAILED {err}");
            }
        }
    }
    result
}

fn mount_overlays(
    os: &mut dyn Os,
    root: &Root,
    table: &[mounts::MountEntry],
    made: &mut Vec<PathBuf>,
) -> Result<(), StepError> {
    for name in OVERLAID {
        let spec = mounts::overlay(name);
        if mounted_at(table, &spec.target).is_some_and(|m| m.fstype == "overlay") {
            log!("/{name} is already an overlay; leaving it");
            continue;
        }
        for dir in mounts::overlay_dirs(name) {
            let path = root.path(&dir);
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&path)
                .map_err(io("creating", &path))?;
        }
        log!("mounting an overlay on /{name} (changes go to /data/overlay/{name}/upper)");
        os.mount(&spec)?;
        made.push(spec.target);
    }
    machine_id(root)
}

/// An empty `/etc/machine-id` tells systemd this is a first boot; it
/// makes the id and bind-mounts it over the file, which must exist.
fn machine_id(root: &Root) -> Result<(), StepError> {
    let path = root.path("/etc/machine-id");
    match fs::symlink_metadata(&path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            log!("creating an empty /etc/machine-id for systemd to fill");
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&path)
                .map(drop)
                .map_err(io("creating", &path))
        }
        Err(err) => Err(io("reading", &path)(err)),
    }
}

/// Writes `a` or `b` to `/run/ddaemon/boot-slot`. An unknown slot is
/// logged, not an error: it changes nothing about this boot.
fn boot_slot(os: &mut dyn Os, root: &Root) -> Result<(), StepError> {
    let cmdline = read_cmdline(root);
    let slot = cmdline::slot(&cmdline).or_else(|| slot_of_root_device(os, root, &cmdline));
    let Some(slot) = slot else {
        log!(
            "cannot tell which root slot booted (root={}); not writing {BOOT_SLOT}",
            cmdline::value(&cmdline, "root").unwrap_or_default()
        );
        return Ok(());
    };
    log!("booted from root slot {}", slot.as_str().to_uppercase());
    write_run_file(&root.path(BOOT_SLOT), slot.as_str())
}

/// The slot from the root partition itself, for `root=` forms without a
/// label (the Pi's `PARTUUID=`): its GPT name, or on an MBR disk its
/// number (the layout is boot, root A, root B, data).
fn slot_of_root_device(os: &dyn Os, root: &Root, cmdline: &str) -> Option<Slot> {
    let blocks = partitions::read_blocks(&root.path("/sys")).ok()?;
    let table = os.mounts().ok()?;
    let block = partitions::root_block(&blocks, &table, cmdline::root(cmdline).as_ref())?;
    match (&block.partname, block.partn) {
        (Some(name), _) => Slot::from_partition_name(name),
        (None, Some(2)) => Some(Slot::A),
        (None, Some(3)) => Some(Slot::B),
        (None, _) => None,
    }
}

/// Sets the hostname from `/data/ddaemon/hostname`, or `ddaemon`, and
/// keeps `/etc/hostname` the same (systemd sets the hostname from it).
fn set_hostname(os: &mut dyn Os, root: &Root) -> Result<(), StepError> {
    let path = root.path(HOSTNAME_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => {
            log!("cannot read {HOSTNAME_FILE}: {err}");
            None
        }
    };
    let (name, passed_over) = hostname::choose(text.as_deref());
    if let Some(why) = passed_over {
        log!("{HOSTNAME_FILE}: {why}; using {name}");
    }
    log!("hostname: {name}");
    os.set_hostname(&name)
        .map_err(|errno| StepError::Hostname {
            name: name.clone(),
            errno,
        })?;
    let etc = root.path("/etc/hostname");
    if fs::read_to_string(&etc).ok().as_deref().map(str::trim) != Some(name.as_str()) {
        log!("writing {name} to /etc/hostname");
        if let Err(err) = write_atomically(&etc, &format!("{name}\n")) {
            log!("FAILED {err}; systemd may set the hostname from the old /etc/hostname");
        }
    }
    Ok(())
}

/// Writes a file under `/run` (a tmpfs: atomicity buys nothing).
fn write_run_file(path: &Path, text: &str) -> Result<(), StepError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    fs::write(path, text).map_err(io("writing", path))
}

/// Writes a file that must survive a power cut whole: a new file beside
/// it, synced, renamed over it.
fn write_atomically(path: &Path, text: &str) -> Result<(), StepError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.ddaemon-init"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&temp)
        .map_err(io("creating", &temp))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("writing", &temp))?;
    fs::rename(&temp, path).map_err(io("renaming into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Cmd;
    use crate::mounts::{MountEntry, MountSpec, parse_mountinfo};
    use crate::partitions::tests::{FakePart, MIB as SECTORS_PER_MIB, fake_sys, gpt_disk};
    use std::os::unix::fs::FileExt;

    /// What Debian's initramfs leaves: the erofs root from sda2 (8:2 in
    /// the fake sysfs) and the four kernel filesystems moved into it.
    const INITRAMFS: &str = "\
22 1 8:2 / / ro,relatime shared:1 - erofs /dev/sda2 ro
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
24 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 22 0:5 / /dev rw,nosuid,relatime shared:8 - devtmpfs udev rw,mode=755
27 22 0:24 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,mode=755
";

    const X86_CMDLINE: &str = "BOOT_IMAGE=/vmlinuz root=PARTLABEL=root-a rootfstype=erofs ro init=/sbin/ddaemon-init quiet\n";

    /// A recording stand-in for the system over a temporary root.
    struct FakeOs {
        root: PathBuf,
        table: Vec<MountEntry>,
        /// Every mount, unmount and command, in order.
        events: Vec<String>,
        fail_mount: Option<&'static str>,
        fail_program: Option<&'static str>,
        /// What `partx` makes the kernel see: (partition, new size in sectors).
        partx_grows: Option<(&'static str, u64)>,
        hostname: Option<String>,
    }

    impl Os for FakeOs {
        fn mounts(&self) -> Result<Vec<MountEntry>, MountError> {
            if mounted_at(&self.table, Path::new("/proc")).is_none() {
                return Err(MountError::Table {
                    path: "/proc/self/mountinfo".into(),
                    source: io::ErrorKind::NotFound.into(),
                });
            }
            Ok(self.table.clone())
        }

        fn mount(&mut self, spec: &MountSpec) -> Result<(), MountError> {
            self.events.push(format!(
                "mount {} {} {}",
                spec.fstype,
                spec.source,
                spec.target.display()
            ));
            if self.fail_mount.is_some_and(|t| Path::new(t) == spec.target) {
                return Err(MountError::Mount {
                    device: spec.source.clone(),
                    fstype: spec.fstype.clone(),
                    target: spec.target.clone(),
                    errno: nix::Error::EINVAL,
                });
            }
            self.table.push(MountEntry {
                major: 0,
                minor: 0,
                mount_point: spec.target.clone(),
                fstype: spec.fstype.clone(),
                source: spec.source.clone(),
            });
            Ok(())
        }

        fn unmount(&mut self, target: &Path) -> Result<(), MountError> {
            self.events.push(format!("umount {}", target.display()));
            let at = self.table.iter().rposition(|m| m.mount_point == target);
            match at {
                Some(i) => {
                    self.table.remove(i);
                    Ok(())
                }
                None => Err(MountError::Unmount {
                    target: target.to_owned(),
                    errno: nix::Error::EINVAL,
                }),
            }
        }

        fn run(&mut self, cmd: &Cmd) -> Result<String, CommandError> {
            self.events.push(cmd.to_string());
            if self.fail_program == Some(cmd.program.as_str()) {
                return Err(CommandError::Failed {
                    command: cmd.to_string(),
                    status: "exit status: 1".into(),
                    stderr: "it broke".into(),
                });
            }
            let last = cmd.args.last().map(String::as_str).unwrap_or_default();
            match cmd.program.as_str() {
                "mkfs.ext4" => put_ext4(&Root::at(&self.root).path(last), 64 * MIB),
                "partx" => {
                    if let Some((part, size)) = self.partx_grows {
                        let path = self.root.join("sys/class/block").join(part).join("size");
                        fs::write(path, format!("{size}\n")).expect("grow");
                    }
                }
                _ => {}
            }
            Ok(String::new())
        }

        fn set_hostname(&mut self, name: &str) -> Result<(), nix::Error> {
            self.hostname = Some(name.to_owned());
            Ok(())
        }
    }

    /// Writes an ext4 primary superblock of `bytes` (4 KiB blocks).
    fn put_ext4(device: &Path, bytes: u64) {
        let mut sb = [0u8; 1024];
        sb[0x04..0x08].copy_from_slice(&((bytes / 4096) as u32).to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        let f = OpenOptions::new().write(true).open(device).expect("device");
        f.write_all_at(&sb, 1024).expect("superblock");
    }

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("dir");
        }
        fs::write(path, text).expect("write");
    }

    /// A device as the image leaves it, in a temporary directory.
    struct Device {
        dir: tempfile::TempDir,
        os: FakeOs,
    }

    impl Device {
        fn root(&self) -> Root {
            Root::at(self.dir.path())
        }

        fn path(&self, path: &str) -> PathBuf {
            self.root().path(path)
        }

        fn read(&self, path: &str) -> Option<String> {
            fs::read_to_string(self.path(path)).ok()
        }

        fn boot(&mut self) -> Outcome {
            let root = self.root();
            run(&mut self.os, &root)
        }

        fn events(&self) -> Vec<&str> {
            self.os.events.iter().map(String::as_str).collect()
        }

        fn mounted(&self, target: &str) -> Option<&str> {
            mounted_at(&self.os.table, Path::new(target)).map(|m| m.fstype.as_str())
        }
    }

    /// The disk's first sector: a protective MBR (GPT) or a plain one.
    fn first_sector(gpt: bool) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xAA;
        s[446 + 4] = if gpt { 0xEE } else { 0x0C };
        s
    }

    fn device(disk: &str, disk_mib: u64, parts: Vec<FakePart>, gpt: bool, cmdline: &str) -> Device {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Root::at(dir.path());
        fake_sys(
            &root.path("/sys"),
            &[(disk, disk_mib * SECTORS_PER_MIB, parts)],
        );
        write(&root.path("/proc/cmdline"), cmdline);
        fs::create_dir_all(root.path("/dev")).expect("dev");
        fs::write(root.path(format!("/dev/{disk}")), first_sector(gpt)).expect("disk");
        for n in 1..=4 {
            let sep = if disk.ends_with(|c: char| c.is_ascii_digit()) {
                "p"
            } else {
                ""
            };
            let part = root.path(format!("/dev/{disk}{sep}{n}"));
            fs::File::create(&part)
                .and_then(|f| f.set_len(MIB))
                .expect("partition");
        }
        write(&root.path("/etc/hostname"), "ddaemon\n");
        write(&root.path("/etc/machine-id"), "");
        for d in ["/var/lib", "/data", "/run"] {
            fs::create_dir_all(root.path(d)).expect("dir");
        }
        let os = FakeOs {
            root: dir.path().to_owned(),
            table: parse_mountinfo(INITRAMFS),
            events: Vec::new(),
            fail_mount: None,
            fail_program: None,
            partx_grows: None,
            hostname: None,
        };
        Device { dir, os }
    }

    /// An x86 device: GPT disk `sda`, data 100 MiB at 400 MiB.
    fn x86(disk_mib: u64) -> Device {
        let mut d = device("sda", disk_mib, gpt_disk("sda", ""), true, X86_CMDLINE);
        d.os.partx_grows = Some(("sda4", (disk_mib - 401) * SECTORS_PER_MIB));
        d
    }

    /// An x86 device booted before: the data partition fills the disk and
    /// holds a filesystem as big as it.
    fn x86_used() -> Device {
        let d = x86(501);
        put_ext4(&d.path("/dev/sda4"), 100 * MIB);
        d
    }

    const GROW_GPT: [&str; 3] = [
        "sfdisk --no-reread --no-tell-kernel --relocate gpt-bak-std /dev/sda",
        "echo ', +' | sfdisk --no-reread --no-tell-kernel -N 4 /dev/sda",
        "partx -u --nr 4 /dev/sda",
    ];
    const MKFS: &str =
        "mkfs.ext4 -q -F -L data -E lazy_itable_init=1,lazy_journal_init=1 /dev/sda4";
    const MOUNT_DATA: &str = "mount ext4 /dev/sda4 /data";
    const OVERLAYS: [&str; 2] = ["mount overlay overlay /etc", "mount overlay overlay /var"];

    #[test]
    fn first_boot_grows_formats_mounts_and_overlays() {
        let mut d = x86(2000);
        let outcome = d.boot();
        assert_eq!(outcome, Outcome::default());
        let mut expected = GROW_GPT.to_vec();
        expected.extend([MKFS, MOUNT_DATA]);
        expected.extend(OVERLAYS);
        assert_eq!(d.events(), expected);
        for dir in ["etc/upper", "etc/work", "var/upper", "var/work"] {
            assert!(d.path(&format!("/data/overlay/{dir}")).is_dir(), "{dir}");
        }
        assert_eq!(d.read("/etc/machine-id").as_deref(), Some(""));
        assert_eq!(d.read(BOOT_SLOT).as_deref(), Some("a"));
        assert_eq!(d.os.hostname.as_deref(), Some("ddaemon"));
        assert_eq!(d.read("/etc/hostname").as_deref(), Some("ddaemon\n"));
        assert_eq!(d.read(INIT_ERROR), None);
    }

    #[test]
    fn a_later_boot_only_mounts() {
        let mut d = x86_used();
        write(&d.path("/data/overlay/etc/upper/passwd"), "kept");
        assert_eq!(d.boot(), Outcome::default());
        let mut expected = vec![MOUNT_DATA];
        expected.extend(OVERLAYS);
        assert_eq!(d.events(), expected);
        assert_eq!(
            d.read("/data/overlay/etc/upper/passwd").as_deref(),
            Some("kept")
        );
    }

    #[test]
    fn a_bigger_disk_grows_the_partition_then_the_filesystem() {
        let mut d = x86(2000);
        put_ext4(&d.path("/dev/sda4"), 100 * MIB);
        assert_eq!(d.boot(), Outcome::default());
        let mut expected = GROW_GPT.to_vec();
        expected.extend([MOUNT_DATA, "resize2fs /dev/sda4"]);
        expected.extend(OVERLAYS);
        assert_eq!(d.events(), expected);
    }

    #[test]
    fn a_failed_grow_is_not_fatal() {
        let mut d = x86(2000);
        d.os.fail_program = Some("sfdisk");
        assert_eq!(d.boot(), Outcome::default());
        let mut expected = vec![GROW_GPT[0], MKFS, MOUNT_DATA];
        expected.extend(OVERLAYS);
        assert_eq!(d.events(), expected);
    }

    #[test]
    fn mounts_the_kernel_filesystems_only_when_missing() {
        let mut d = x86_used();
        api_filesystems(&mut d.os).expect("already there");
        assert!(d.events().is_empty());
        d.os.table.clear();
        api_filesystems(&mut d.os).expect("mounted");
        assert_eq!(
            d.events(),
            [
                "mount proc proc /proc",
                "mount sysfs sysfs /sys",
                "mount devtmpfs devtmpfs /dev",
                "mount tmpfs tmpfs /run",
            ]
        );
    }

    #[test]
    fn a_failed_mkfs_falls_back_to_a_tmpfs_data() {
        let mut d = x86(2000);
        d.os.fail_program = Some("mkfs.ext4");
        let outcome = d.boot();
        assert_eq!(outcome.errors.len(), 1, "{outcome:?}");
        let error = &outcome.errors[0];
        assert!(error.starts_with("setting up /data: `mkfs.ext4"), "{error}");
        assert!(error.contains("it broke"), "{error}");
        let mut expected = GROW_GPT.to_vec();
        expected.extend([MKFS, "mount tmpfs tmpfs /data"]);
        expected.extend(OVERLAYS);
        assert_eq!(d.events(), expected);
        assert_eq!(d.read(INIT_ERROR), Some(format!("{error}\n")));
        // The rest of the boot still happened.
        assert_eq!(d.read(BOOT_SLOT).as_deref(), Some("a"));
        assert_eq!(d.os.hostname.as_deref(), Some("ddaemon"));
    }

    #[test]
    fn a_failed_data_mount_leaves_no_data_mount_behind() {
        let mut d = x86_used();
        d.os.fail_mount = Some("/data");
        let outcome = d.boot();
        assert_eq!(outcome.errors.len(), 2, "{outcome:?}");
        assert!(
            outcome.errors[0].contains("mounting /dev/sda4 (ext4) on /data"),
            "{outcome:?}"
        );
        // The fake refuses the tmpfs too: systemd still gets its turn,
        // and the overlays are not put on the root filesystem's /data.
        assert!(outcome.errors[1].contains("tmpfs on /data"), "{outcome:?}");
        assert_eq!(
            d.events(),
            ["mount ext4 /dev/sda4 /data", "mount tmpfs tmpfs /data"]
        );
        assert_eq!(d.mounted("/data"), None);
        assert!(!d.path("/data/overlay").exists());
        assert!(d.read(INIT_ERROR).is_some_and(|e| e.lines().count() >= 2));
    }

    #[test]
    fn one_overlay_without_the_other_is_undone() {
        let mut d = x86_used();
        d.os.fail_mount = Some("/var");
        let outcome = d.boot();
        assert_eq!(outcome.errors.len(), 1, "{outcome:?}");
        assert!(
            outcome.errors[0]
                .starts_with("overlaying /etc and /var: mounting overlay (overlay) on /var"),
            "{outcome:?}"
        );
        let mut expected = vec![MOUNT_DATA];
        expected.extend(OVERLAYS);
        expected.push("umount /etc");
        assert_eq!(d.events(), expected);
        assert_eq!(d.mounted("/etc"), None);
        assert_eq!(d.mounted("/var"), None);
        // The data partition itself was fine: it stays.
        assert_eq!(d.mounted("/data"), Some("ext4"));
        assert!(d.read(INIT_ERROR).is_some_and(|e| e.contains("/var")));
        assert_eq!(d.read(BOOT_SLOT).as_deref(), Some("a"));
    }

    /// An ext4 backup superblock at block 32768 of the data partition (what
    /// survives when the primary one is lost or an image is flashed over
    /// an old card); returns the partition for more writes.
    fn plant_backup_superblock(d: &Device) -> std::fs::File {
        let f = OpenOptions::new()
            .write(true)
            .open(d.path("/dev/sda4"))
            .expect("device");
        f.write_all_at(&0xEF53u16.to_le_bytes(), 32768 * 4096 + 0x38)
            .expect("backup");
        f
    }

    #[test]
    fn a_damaged_filesystem_is_never_formatted() {
        let mut d = x86(501);
        let f = plant_backup_superblock(&d);
        // Group descriptors after the lost superblock: a used filesystem.
        f.write_all_at(&[1u8; 64], 4096).expect("descriptors");
        let outcome = d.boot();
        assert_eq!(outcome.errors.len(), 1, "{outcome:?}");
        assert!(
            outcome.errors[0].contains("e2fsck -b 32768 -B 4096 /dev/sda4"),
            "{outcome:?}"
        );
        assert!(
            !d.events().iter().any(|e| e.starts_with("mkfs")),
            "{:?}",
            d.events()
        );
        assert_eq!(d.mounted("/data"), Some("tmpfs"));
    }

    #[test]
    fn a_card_flashed_over_an_old_one_is_formatted() {
        // The old data partition's backup superblock survives past the
        // image's end; the image's own (blank) data partition hides it.
        let mut d = x86(501);
        plant_backup_superblock(&d);
        assert_eq!(d.boot(), Outcome::default());
        assert!(d.events().contains(&MKFS), "{:?}", d.events());
        assert_eq!(d.mounted("/data"), Some("ext4"));
    }

    #[test]
    fn a_factory_reset_wipes_data_but_disks() {
        let mut d = x86_used();
        write(&d.path("/data/ddaemon/factory-reset"), "");
        write(&d.path("/data/ddaemon/hostname"), "oldname\n");
        write(&d.path("/data/apps/photos/db"), "photos");
        write(&d.path("/data/overlay/etc/upper/passwd"), "changed");
        write(&d.path("/data/disks/usb/movie.mkv"), "movie");
        assert_eq!(d.boot(), Outcome::default());
        assert!(!d.path("/data/apps").exists());
        assert!(!d.path("/data/ddaemon").exists());
        assert_eq!(
            d.read("/data/disks/usb/movie.mkv").as_deref(),
            Some("movie")
        );
        // A fresh first boot of the data: empty overlays, default name.
        assert!(d.path("/data/overlay/etc/upper").is_dir());
        assert_eq!(d.read("/data/overlay/etc/upper/passwd"), None);
        assert_eq!(d.os.hostname.as_deref(), Some("ddaemon"));
    }

    #[test]
    fn the_owner_chooses_the_hostname() {
        let mut d = x86_used();
        write(&d.path("/data/ddaemon/hostname"), "homebox\n");
        assert_eq!(d.boot(), Outcome::default());
        assert_eq!(d.os.hostname.as_deref(), Some("homebox"));
        assert_eq!(d.read("/etc/hostname").as_deref(), Some("homebox\n"));

        let mut d = x86_used();
        write(&d.path("/data/ddaemon/hostname"), "home box\n");
        assert_eq!(d.boot(), Outcome::default());
        assert_eq!(d.os.hostname.as_deref(), Some("ddaemon"));
        assert_eq!(d.read("/etc/hostname").as_deref(), Some("ddaemon\n"));
    }

    #[test]
    fn a_machine_id_is_left_alone_or_made_empty() {
        let mut d = x86_used();
        write(
            &d.path("/etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        );
        d.boot();
        assert_eq!(
            d.read("/etc/machine-id").as_deref(),
            Some("0123456789abcdef0123456789abcdef\n")
        );

        let mut d = x86_used();
        fs::remove_file(d.path("/etc/machine-id")).expect("remove");
        assert_eq!(d.boot(), Outcome::default());
        assert_eq!(d.read("/etc/machine-id").as_deref(), Some(""));
    }

    #[test]
    fn a_pi_with_an_mbr_disk() {
        let parts: Vec<FakePart> = (1..=4)
            .map(|n| FakePart {
                name: format!("mmcblk0p{n}"),
                number: n,
                label: None,
                start: u64::from(n) * 100 * SECTORS_PER_MIB,
                size: 100 * SECTORS_PER_MIB,
            })
            .collect();
        let cmdline = "console=ttyS1,115200 root=PARTUUID=dd000001-02 rootfstype=erofs ro init=/sbin/ddaemon-init\n";
        let mut d = device("mmcblk0", 30_000, parts, false, cmdline);
        d.os.table = parse_mountinfo(&INITRAMFS.replace("/dev/sda2", "/dev/mmcblk0p2"));
        assert_eq!(d.boot(), Outcome::default());
        let mut expected = vec![
            "echo ', +' | sfdisk --no-reread --no-tell-kernel -N 4 /dev/mmcblk0",
            "partx -u --nr 4 /dev/mmcblk0",
            "mkfs.ext4 -q -F -L data -E lazy_itable_init=1,lazy_journal_init=1 /dev/mmcblk0p4",
            "mount ext4 /dev/mmcblk0p4 /data",
        ];
        expected.extend(OVERLAYS);
        assert_eq!(d.events(), expected);
        // root=PARTUUID=…-02 has no label; partition 2 is slot A.
        assert_eq!(d.read(BOOT_SLOT).as_deref(), Some("a"));
    }

    #[test]
    fn slot_b_is_recorded() {
        let mut d = x86_used();
        write(
            &d.path("/proc/cmdline"),
            &X86_CMDLINE.replace("root-a", "root-b"),
        );
        d.os.table = parse_mountinfo(&INITRAMFS.replace("8:2", "8:3"));
        assert_eq!(d.boot(), Outcome::default());
        assert_eq!(d.read(BOOT_SLOT).as_deref(), Some("b"));
    }

    #[test]
    fn a_mounted_data_is_left_as_it_is() {
        let mut d = x86(2000);
        d.os.table.push(MountEntry {
            major: 8,
            minor: 4,
            mount_point: "/data".into(),
            fstype: "ext4".into(),
            source: "/dev/sda4".into(),
        });
        assert_eq!(d.boot(), Outcome::default());
        assert_eq!(d.events(), OVERLAYS);
    }
}
