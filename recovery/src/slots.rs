//! The two root slots and which one boots next, through the boot method's
//! own mechanism.
//!
//! On UEFI boards that is systemd-boot with Boot Loader Specification boot
//! counting: each slot has one entry, `loader/entries/ddaemon-a.conf` or
//! `-b.conf`, with `sort-key ddaemon` and a `version` that is a generation
//! number (systemd-boot tries the highest first, and `loader.conf` says
//! `default ddaemon-*`). An update writes its entry as `ddaemon-b+1.conf`:
//! one try. systemd-boot renames it `+0-1` as it boots it; if the new
//! system confirms itself, `systemd-bless-boot` renames it `ddaemon-b.conf`
//! for good; if not, an entry with no tries left sorts after every other
//! one, and the next boot is the old slot's. The system's own version rides
//! in a comment line, `#ddaemon-version 1.2.3`, which the boot loader skips.
//!
//! On the Raspberry Pi it is the firmware's `tryboot` (see [`PiTryboot`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A root slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    pub fn letter(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }

    /// The slot's partition name (GPT) and filesystem label.
    pub fn partition_label(self) -> &'static str {
        match self {
            Self::A => "root-a",
            Self::B => "root-b",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "a" | "A" => Some(Self::A),
            "b" | "B" => Some(Self::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.letter().to_uppercase())
    }
}

/// Where a slot stands with the boot loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotState {
    /// Nothing bootable is installed in it.
    Empty,
    /// Confirmed: it booted and its supervisor was healthy.
    Good,
    /// Written and waiting to be tried (`tries_left` > 0), or booted and
    /// not yet confirmed (the running slot with none left).
    Trying,
    /// Tried and never confirmed: the boot loader passes it over.
    Failed,
}

impl SlotState {
    /// The word the API uses for it.
    pub fn word(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Good => "good",
            Self::Trying => "trying",
            Self::Failed => "failed",
        }
    }
}

/// One slot as the System page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotStatus {
    pub slot: Slot,
    pub version: Option<String>,
    pub state: SlotState,
    /// The boot loader starts this one next.
    pub next_boot: bool,
}

/// Why the slots could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("slot {0} holds no confirmed system to switch to")]
    NotBootable(Slot),
    #[error("{0}")]
    Layout(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SlotError + '_ {
    move |source| SlotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The boot method's slot switching.
pub trait BootControl: Send + Sync + std::fmt::Debug {
    /// Both slots, A then B.
    fn status(&self, running: Slot) -> Result<[SlotStatus; 2], SlotError>;
    /// Makes a slot unbootable before it is overwritten.
    fn forget(&self, slot: Slot) -> Result<(), SlotError>;
    /// Where the slot's kernel or initrd goes (the folder exists).
    fn boot_file(&self, slot: Slot, name: &str) -> Result<PathBuf, SlotError>;
    /// Boots `slot` once at the next boot; it stays only if it confirms
    /// itself, else the boot after returns to the slot running now.
    fn try_once(&self, slot: Slot, version: &str) -> Result<(), SlotError>;
    /// Confirms the running slot (where the boot loader leaves that to us;
    /// systemd-bless-boot does it for systemd-boot).
    fn confirm(&self, running: Slot) -> Result<(), SlotError>;
}

/// systemd-boot entries on the mounted EFI system partition.
#[derive(Debug, Clone)]
pub struct SystemdBoot {
    pub esp: PathBuf,
}

/// One of our entries, as its file name and contents say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    file: PathBuf,
    slot: Slot,
    /// `None`: no boot counting (confirmed).
    tries_left: Option<u32>,
    generation: u64,
    version: Option<String>,
    options: String,
}

/// `ddaemon-b+1-0.conf` → (B, Some(1)); `ddaemon-a.conf` → (A, None).
fn parse_entry_name(name: &str) -> Option<(Slot, Option<u32>)> {
    let stem = name.strip_prefix("ddaemon-")?.strip_suffix(".conf")?;
    let (letter, counter) = match stem.split_once('+') {
        Some((l, c)) => (l, Some(c)),
        None => (stem, None),
    };
    let slot = match letter {
        "a" => Slot::A,
        "b" => Slot::B,
        _ => return None,
    };
    let tries_left = match counter {
        None => None,
        Some(c) => Some(c.split('-').next()?.parse().ok()?),
    };
    Some((slot, tries_left))
}

impl SystemdBoot {
    fn entries_dir(&self) -> PathBuf {
        self.esp.join("loader/entries")
    }

    fn entries(&self) -> Result<Vec<Entry>, SlotError> {
        let dir = self.entries_dir();
        let mut found = Vec::new();
        for item in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let file = item.map_err(io(&dir))?.path();
            let Some((slot, tries_left)) = file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_entry_name)
            else {
                continue;
            };
            let text = std::fs::read_to_string(&file).map_err(io(&file))?;
            let field = |key: &str| {
                text.lines().find_map(|l| {
                    let (k, v) = l.trim().split_once(char::is_whitespace)?;
                    (k == key).then(|| v.trim().to_owned())
                })
            };
            found.push(Entry {
                slot,
                tries_left,
                generation: field("version").and_then(|v| v.parse().ok()).unwrap_or(0),
                version: field("#ddaemon-version"),
                options: field("options").unwrap_or_default(),
                file,
            });
        }
        Ok(found)
    }

    /// The entry for `slot` with the highest generation.
    fn entry(entries: &[Entry], slot: Slot) -> Option<&Entry> {
        entries
            .iter()
            .filter(|e| e.slot == slot)
            .max_by_key(|e| e.generation)
    }

    /// Writes a slot's entry under its new name and removes its old ones.
    fn write_entry(
        &self,
        slot: Slot,
        tries: Option<u32>,
        version: &str,
        entries: &[Entry],
    ) -> Result<(), SlotError> {
        let template = Self::entry(entries, slot.other())
            .or_else(|| Self::entry(entries, slot))
            .ok_or_else(|| {
                SlotError::Layout(format!(
                    "no boot entry in {} to take the kernel options from",
                    self.entries_dir().display()
                ))
            })?;
        let options = template
            .options
            .split_whitespace()
            .map(|word| {
                if word.starts_with("root=PARTLABEL=") {
                    format!("root=PARTLABEL={}", slot.partition_label())
                } else {
                    word.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let generation = entries.iter().map(|e| e.generation).max().unwrap_or(0) + 1;
        let text = entry_text(slot, version, generation, &options);
        let name = match tries {
            Some(n) => format!("ddaemon-{}+{n}.conf", slot.letter()),
            None => format!("ddaemon-{}.conf", slot.letter()),
        };
        let dir = self.entries_dir();
        let target = dir.join(&name);
        write_atomically(&target, text.as_bytes())?;
        for old in entries
            .iter()
            .filter(|e| e.slot == slot && e.file != target)
        {
            std::fs::remove_file(&old.file).map_err(io(&old.file))?;
        }
        sync_dir(&dir)
    }
}

/// A slot's entry: `sort-key` and a generation `version` decide which
/// slot systemd-boot prefers.
pub fn entry_text(slot: Slot, version: &str, generation: u64, options: &str) -> String {
    let l = slot.letter();
    format!(
        "title ddaemon {version} (slot {slot})\n#ddaemon-version {version}\nsort-key ddaemon\nversion {generation}\nlinux /ddaemon/{l}/vmlinuz\ninitrd /ddaemon/{l}/initrd.img\noptions {options}\n"
    )
}

impl BootControl for SystemdBoot {
    fn status(&self, running: Slot) -> Result<[SlotStatus; 2], SlotError> {
        let entries = self.entries()?;
        // What systemd-boot picks: entries with tries left before spent
        // ones, then the highest generation.
        let next = entries
            .iter()
            .max_by_key(|e| (e.tries_left != Some(0), e.generation))
            .map(|e| e.slot);
        let one = |slot: Slot| {
            let entry = Self::entry(&entries, slot);
            let state = match entry.map(|e| e.tries_left) {
                None => SlotState::Empty,
                Some(None) => SlotState::Good,
                Some(Some(0)) if slot == running => SlotState::Trying,
                Some(Some(0)) => SlotState::Failed,
                Some(Some(_)) => SlotState::Trying,
            };
            SlotStatus {
                slot,
                version: entry.and_then(|e| e.version.clone()),
                state,
                next_boot: next == Some(slot),
            }
        };
        Ok([one(Slot::A), one(Slot::B)])
    }

    fn forget(&self, slot: Slot) -> Result<(), SlotError> {
        let dir = self.entries_dir();
        for entry in self.entries()?.iter().filter(|e| e.slot == slot) {
            std::fs::remove_file(&entry.file).map_err(io(&entry.file))?;
        }
        sync_dir(&dir)
    }

    fn boot_file(&self, slot: Slot, name: &str) -> Result<PathBuf, SlotError> {
        let dir = self.esp.join("ddaemon").join(slot.letter());
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(dir.join(name))
    }

    fn try_once(&self, slot: Slot, version: &str) -> Result<(), SlotError> {
        let entries = self.entries()?;
        self.write_entry(slot, Some(1), version, &entries)
    }

    fn confirm(&self, _running: Slot) -> Result<(), SlotError> {
        // systemd-bless-boot renames the entry once boot-complete.target
        // is reached.
        Ok(())
    }
}

/// Switches back to the other slot: it must hold a confirmed system; it
/// is tried once like an update, so a system that no longer starts (its
/// data moved on) returns here by itself.
pub fn switch_to(control: &dyn BootControl, running: Slot) -> Result<Slot, SlotError> {
    let other = running.other();
    let status = control.status(running)?;
    let theirs = &status[usize::from(other == Slot::B)];
    match (&theirs.state, &theirs.version) {
        (SlotState::Good, Some(version)) => {
            control.try_once(other, version)?;
            Ok(other)
        }
        _ => Err(SlotError::NotBootable(other)),
    }
}

/// The Raspberry Pi firmware's `tryboot`: `config.txt` boots the confirmed
/// slot; an update writes `tryboot.txt` naming the new slot's kernel,
/// initrd and command line, and the device reboots with the `tryboot`
/// flag (`reboot "0 tryboot"`), which the firmware honours once. The new
/// system confirms itself by making `tryboot.txt` the new `config.txt`.
/// Not proven on a Pi yet: there is none here.
#[derive(Debug, Clone)]
pub struct PiTryboot {
    /// The mounted FAT boot partition.
    pub boot: PathBuf,
}

impl PiTryboot {
    fn config(&self) -> PathBuf {
        self.boot.join("config.txt")
    }

    /// The slot a config file boots, from its `cmdline=` line.
    fn slot_of(text: &str) -> Option<Slot> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix("cmdline=cmdline-"))
            .and_then(|rest| rest.strip_suffix(".txt"))
            .and_then(Slot::parse)
    }

    fn version_of(&self, slot: Slot) -> Option<String> {
        std::fs::read_to_string(self.boot.join(format!("version-{}.txt", slot.letter())))
            .ok()
            .map(|v| v.trim().to_owned())
    }
}

impl BootControl for PiTryboot {
    fn status(&self, running: Slot) -> Result<[SlotStatus; 2], SlotError> {
        let config = std::fs::read_to_string(self.config()).unwrap_or_default();
        let confirmed = Self::slot_of(&config).unwrap_or(Slot::A);
        let trying = std::fs::read_to_string(self.boot.join("tryboot.txt"))
            .ok()
            .and_then(|t| Self::slot_of(&t));
        let one = |slot: Slot| {
            let version = self.version_of(slot);
            let state = if version.is_none() {
                SlotState::Empty
            } else if slot == confirmed {
                SlotState::Good
            } else if trying == Some(slot) {
                if slot == running {
                    SlotState::Trying
                } else {
                    SlotState::Failed
                }
            } else {
                SlotState::Good
            };
            SlotStatus {
                slot,
                version,
                state,
                next_boot: slot == confirmed,
            }
        };
        Ok([one(Slot::A), one(Slot::B)])
    }

    fn forget(&self, slot: Slot) -> Result<(), SlotError> {
        let path = self.boot.join(format!("version-{}.txt", slot.letter()));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    fn boot_file(&self, slot: Slot, name: &str) -> Result<PathBuf, SlotError> {
        Ok(self.boot.join(format!("{name}-{}", slot.letter())))
    }

    fn try_once(&self, slot: Slot, version: &str) -> Result<(), SlotError> {
        let config = std::fs::read_to_string(self.config()).map_err(io(&self.config()))?;
        let l = slot.letter();
        let text: String = config
            .lines()
            .map(|line| {
                let key = line.split('=').next().unwrap_or_default().trim();
                match key {
                    "kernel" => format!("kernel=vmlinuz-{l}"),
                    "cmdline" => format!("cmdline=cmdline-{l}.txt"),
                    _ if line.starts_with("initramfs ") => {
                        format!("initramfs initrd.img-{l} followkernel")
                    }
                    _ => line.to_owned(),
                }
            })
            .map(|l| l + "\n")
            .collect();
        let cmdline_path = self
            .boot
            .join(format!("cmdline-{}.txt", slot.other().letter()));
        let cmdline = std::fs::read_to_string(&cmdline_path).map_err(io(&cmdline_path))?;
        let cmdline = cmdline.replace(
            &format!("-0{}", if slot == Slot::A { 3 } else { 2 }),
            &format!("-0{}", if slot == Slot::A { 2 } else { 3 }),
        );
        write_atomically(
            &self.boot.join(format!("cmdline-{l}.txt")),
            cmdline.as_bytes(),
        )?;
        write_atomically(
            &self.boot.join(format!("version-{l}.txt")),
            format!("{version}\n").as_bytes(),
        )?;
        write_atomically(&self.boot.join("tryboot.txt"), text.as_bytes())
    }

    fn confirm(&self, running: Slot) -> Result<(), SlotError> {
        let tryboot = self.boot.join("tryboot.txt");
        let Ok(text) = std::fs::read_to_string(&tryboot) else {
            return Ok(());
        };
        if Self::slot_of(&text) == Some(running) {
            write_atomically(&self.config(), text.as_bytes())?;
        }
        Ok(())
    }
}

/// Writes through a temporary file and a rename, then syncs the file.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), SlotError> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    tmp.write_all(data).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| SlotError::Io {
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), SlotError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_state_is_the_same_word_in_json_and_on_pages() {
        for state in [
            SlotState::Empty,
            SlotState::Good,
            SlotState::Trying,
            SlotState::Failed,
        ] {
            assert_eq!(
                serde_json::to_value(state).expect("json"),
                serde_json::Value::from(state.word())
            );
        }
    }

    const OPTIONS: &str = "root=PARTLABEL=root-a rootfstype=erofs ro init=/sbin/ddaemon-init quiet";

    fn esp() -> (tempfile::TempDir, SystemdBoot) {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries = dir.path().join("loader/entries");
        std::fs::create_dir_all(&entries).expect("mkdir");
        std::fs::write(
            entries.join("ddaemon-a.conf"),
            entry_text(Slot::A, "1.0", 1, OPTIONS),
        )
        .expect("entry");
        let control = SystemdBoot {
            esp: dir.path().to_owned(),
        };
        (dir, control)
    }

    fn names(control: &SystemdBoot) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(control.entries_dir())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    /// What systemd-boot does with a counted entry as it boots it.
    fn boot_loader_tries(control: &SystemdBoot, from: &str, to: &str) {
        let dir = control.entries_dir();
        std::fs::rename(dir.join(from), dir.join(to)).expect("rename");
    }

    #[test]
    fn entry_names_carry_the_counter() {
        assert_eq!(parse_entry_name("ddaemon-a.conf"), Some((Slot::A, None)));
        assert_eq!(
            parse_entry_name("ddaemon-b+1.conf"),
            Some((Slot::B, Some(1)))
        );
        assert_eq!(
            parse_entry_name("ddaemon-b+0-1.conf"),
            Some((Slot::B, Some(0)))
        );
        assert_eq!(parse_entry_name("debian.conf"), None);
        assert_eq!(parse_entry_name("ddaemon-c.conf"), None);
    }

    #[test]
    fn an_update_is_tried_once_then_kept_or_passed_over() {
        let (_dir, control) = esp();
        let status = control.status(Slot::A).expect("status");
        assert_eq!(status[0].state, SlotState::Good);
        assert!(status[0].next_boot);
        assert_eq!(status[1].state, SlotState::Empty);

        control.try_once(Slot::B, "2.0").expect("try");
        assert_eq!(names(&control), ["ddaemon-a.conf", "ddaemon-b+1.conf"]);
        let text =
            std::fs::read_to_string(control.entries_dir().join("ddaemon-b+1.conf")).expect("entry");
        assert!(
            text.contains("options root=PARTLABEL=root-b rootfstype=erofs"),
            "{text}"
        );
        assert!(text.contains("linux /ddaemon/b/vmlinuz"), "{text}");
        assert!(text.contains("version 2\n"), "{text}");
        let status = control.status(Slot::A).expect("status");
        assert_eq!(status[1].state, SlotState::Trying);
        assert!(status[1].next_boot, "the new slot boots next");

        // Booted, and the supervisor never became healthy: B is passed over.
        boot_loader_tries(&control, "ddaemon-b+1.conf", "ddaemon-b+0-1.conf");
        assert_eq!(
            control.status(Slot::B).expect("status")[1].state,
            SlotState::Trying
        );
        let status = control.status(Slot::A).expect("status");
        assert_eq!(status[1].state, SlotState::Failed);
        assert_eq!(status[1].version.as_deref(), Some("2.0"));
        assert!(status[0].next_boot, "back to A");
        assert!(matches!(
            switch_to(&control, Slot::A),
            Err(SlotError::NotBootable(Slot::B))
        ));

        // A second update replaces the failed entry; this one is blessed.
        control.forget(Slot::B).expect("forget");
        assert_eq!(names(&control), ["ddaemon-a.conf"]);
        control.try_once(Slot::B, "2.1").expect("try");
        boot_loader_tries(&control, "ddaemon-b+1.conf", "ddaemon-b+0-1.conf");
        boot_loader_tries(&control, "ddaemon-b+0-1.conf", "ddaemon-b.conf");
        let status = control.status(Slot::B).expect("status");
        assert_eq!(status[1].state, SlotState::Good);
        assert!(status[1].next_boot);

        // Switch back: A is tried once, and wins by generation.
        assert_eq!(switch_to(&control, Slot::B).expect("switch"), Slot::A);
        assert_eq!(names(&control), ["ddaemon-a+1.conf", "ddaemon-b.conf"]);
        let status = control.status(Slot::B).expect("status");
        assert!(status[0].next_boot);
        assert_eq!(status[0].version.as_deref(), Some("1.0"));
        let text =
            std::fs::read_to_string(control.entries_dir().join("ddaemon-a+1.conf")).expect("entry");
        assert!(text.contains("root=PARTLABEL=root-a "), "{text}");
    }

    #[test]
    fn tryboot_writes_a_config_for_the_other_slot_and_confirms_by_adopting_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let boot = dir.path();
        std::fs::write(
            boot.join("config.txt"),
            "arm_64bit=1\nkernel=vmlinuz-a\ninitramfs initrd.img-a followkernel\ncmdline=cmdline-a.txt\n",
        )
        .expect("config");
        std::fs::write(boot.join("cmdline-a.txt"), "root=PARTUUID=dd000001-02 ro\n")
            .expect("cmdline");
        std::fs::write(boot.join("version-a.txt"), "1.0\n").expect("version");
        let control = PiTryboot {
            boot: boot.to_owned(),
        };
        control.try_once(Slot::B, "2.0").expect("try");
        let tryboot = std::fs::read_to_string(boot.join("tryboot.txt")).expect("tryboot");
        assert!(tryboot.contains("kernel=vmlinuz-b\n"), "{tryboot}");
        assert!(
            tryboot.contains("initramfs initrd.img-b followkernel\n"),
            "{tryboot}"
        );
        assert_eq!(
            std::fs::read_to_string(boot.join("cmdline-b.txt")).expect("cmdline"),
            "root=PARTUUID=dd000001-03 ro\n"
        );
        let status = control.status(Slot::A).expect("status");
        assert_eq!(
            status[1].state,
            SlotState::Failed,
            "not running it: it failed"
        );
        let status = control.status(Slot::B).expect("status");
        assert_eq!(status[1].state, SlotState::Trying);
        control.confirm(Slot::B).expect("confirm");
        let status = control.status(Slot::B).expect("status");
        assert_eq!(status[1].state, SlotState::Good);
        assert!(status[1].next_boot);
    }
}
