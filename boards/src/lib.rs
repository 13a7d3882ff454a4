//! Board descriptions for ddaemon: one TOML file per board in `boards/`
//! beside this crate (`x86_64-efi`, `rpi4`, `rpi5`, `qemu-arm64`), holding
//! everything that differs between boards: architecture and Rust target,
//! Debian packages, partition table kind, boot method, console, kernel
//! command line, device tree, reset button and status LED. The image
//! builder reads it to build; `ddaemon-init` and the supervisor read it to
//! know which button and LED to watch.
//!
//! Parsing checks what `serde` cannot (that the Rust target fits the
//! architecture, that a Pi has its device tree and an MBR, ...) and names
//! the field of every problem.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The board format this build reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The board files shipped with the source, for tools run from the tree.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("boards")
}

/// A CPU architecture, as Debian names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// The Rust targets that build for it.
    pub fn rust_targets(self) -> &'static [&'static str] {
        match self {
            Self::Amd64 => &["x86_64-unknown-linux-gnu", "x86_64-unknown-linux-musl"],
            Self::Arm64 => &["aarch64-unknown-linux-gnu", "aarch64-unknown-linux-musl"],
        }
    }

    pub fn debian_name(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }
}

/// How the disk's partitions are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTable {
    Gpt,
    Mbr,
}

/// What starts the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMethod {
    /// UEFI firmware loads systemd-boot from the FAT partition.
    Uefi,
    /// The Pi's boot ROM and firmware read `config.txt` from the FAT partition.
    RaspberryPiFirmware,
}

/// The Debian packages that make the board's part of the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianPackages {
    /// The Debian release (`trixie`).
    pub suite: String,
    /// Archive components (`main`, `non-free-firmware`).
    pub components: Vec<String>,
    pub kernel: Vec<String>,
    pub firmware: Vec<String>,
    #[serde(default)]
    pub extra: Vec<String>,
}

/// The button that, held at power-on, starts a factory reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ResetButton {
    /// A GPIO line (libgpiod naming).
    Gpio {
        chip: String,
        line: u32,
        #[serde(default)]
        active_low: bool,
    },
    /// The ACPI power button (a PC).
    PowerButton,
}

/// The LED that shows the device's state (`/sys/class/leds/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusLed {
    pub name: String,
}

/// One board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub schema_version: u32,
    /// The file's name without `.toml`; images are named after it.
    pub id: String,
    pub title: String,
    pub arch: Arch,
    pub rust_target: String,
    pub partition_table: PartitionTable,
    pub boot: BootMethod,
    /// The serial console (`ttyS0,115200`), where boot messages go.
    pub console: String,
    /// Added to the kernel command line.
    #[serde(default)]
    pub cmdline: String,
    /// The board's own device tree (Pi boards): the build checks the
    /// kernel ships it; the firmware picks the tree for the exact model.
    #[serde(default)]
    pub device_tree: Option<String>,
    /// Raspberry Pi Imager's device tags for the board (`pi4-64bit`), put
    /// in the image's `os_list` entry.
    #[serde(default)]
    pub imager_devices: Vec<String>,
    /// The kernel modules the initramfs holds to reach the root disk (its
    /// storage controllers); empty: Debian's broad set (`MODULES=most`),
    /// several times larger and slower to load.
    #[serde(default)]
    pub initramfs_modules: Vec<String>,
    pub debian: DebianPackages,
    pub reset_button: ResetButton,
    #[serde(default)]
    pub status_led: Option<StatusLed>,
    /// What has been shown to work on this board, and what has not.
    pub proven: String,
}

/// One problem with a board file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

/// Why a board file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {}", problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("no board {id:?}; the boards are {}", known.join(", "))]
    Unknown { id: String, known: Vec<String> },
}

/// Parses and checks a board file's text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Board, BoardError> {
    let invalid = |problems| BoardError::Invalid {
        path: path.to_owned(),
        problems,
    };
    let board: Board = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        invalid(vec![Problem {
            field: line.map_or("file".into(), |l| format!("line {l}")),
            message: e.message().to_owned(),
        }])
    })?;
    let problems = check(&board, path);
    if problems.is_empty() {
        Ok(board)
    } else {
        Err(invalid(problems))
    }
}

fn check(b: &Board, path: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut bad = |field: &str, message: String| {
        problems.push(Problem {
            field: field.to_owned(),
            message,
        })
    };
    if b.schema_version != SCHEMA_VERSION {
        bad(
            "schema_version",
            format!("is {}, this build reads {SCHEMA_VERSION}", b.schema_version),
        );
    }
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if b.id != stem {
        bad(
            "id",
            format!(
                "is {:?} but the file is {stem}.toml; keep them the same",
                b.id
            ),
        );
    }
    if !b
        .id
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
        || b.id.is_empty()
    {
        bad("id", "use lower-case letters, digits, '-' and '_'".into());
    }
    if !b.arch.rust_targets().contains(&b.rust_target.as_str()) {
        bad(
            "rust_target",
            format!(
                "{:?} does not build for {}; use one of {}",
                b.rust_target,
                b.arch.debian_name(),
                b.arch.rust_targets().join(", ")
            ),
        );
    }
    if b.boot == BootMethod::RaspberryPiFirmware {
        if b.partition_table != PartitionTable::Mbr {
            bad(
                "partition_table",
                "the Pi firmware boots from an MBR table; use \"mbr\"".into(),
            );
        }
        if b.device_tree.is_none() {
            bad(
                "device_tree",
                "a Pi needs its device tree file, e.g. \"bcm2711-rpi-4-b.dtb\"".into(),
            );
        }
        if b.arch != Arch::Arm64 {
            bad("arch", "ddaemon runs 64-bit Pis only; use \"arm64\"".into());
        }
        if b.imager_devices.is_empty() {
            bad(
                "imager_devices",
                "name the Raspberry Pi Imager device tags, e.g. [\"pi4-64bit\"]".into(),
            );
        }
    }
    if b.device_tree
        .as_deref()
        .is_some_and(|d| !d.ends_with(".dtb"))
    {
        bad("device_tree", "name a .dtb file".into());
    }
    let console_ok = b
        .console
        .split_once(',')
        .is_some_and(|(dev, baud)| !dev.is_empty() && baud.parse::<u32>().is_ok());
    if !console_ok {
        bad(
            "console",
            "give DEVICE,BAUD as the kernel's console= takes it, e.g. \"ttyS0,115200\"".into(),
        );
    }
    if b.cmdline.contains("root=") || b.cmdline.contains("init=") {
        bad(
            "cmdline",
            "root= and init= are the image builder's; leave them out".into(),
        );
    }
    if let Some(m) = b.initramfs_modules.iter().find(|m| {
        m.is_empty()
            || !m
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
    }) {
        bad(
            "initramfs_modules",
            format!("{m:?} is not a kernel module name (as modprobe takes it, e.g. \"nvme\")"),
        );
    }
    if b.debian.kernel.is_empty() {
        bad("debian.kernel", "name the kernel package".into());
    }
    if !b.debian.components.iter().any(|c| c == "main") {
        bad("debian.components", "include \"main\"".into());
    }
    if let ResetButton::Gpio { chip, .. } = &b.reset_button
        && !chip.starts_with("gpiochip")
    {
        bad(
            "reset_button.chip",
            "name the GPIO chip as libgpiod does, e.g. \"gpiochip0\"".into(),
        );
    }
    if b.proven.trim().is_empty() {
        bad(
            "proven",
            "say what has been shown to work on this board, and what has not".into(),
        );
    }
    problems
}

/// Reads one board file.
pub fn load_file(path: &Path) -> Result<Board, BoardError> {
    let text = std::fs::read_to_string(path).map_err(|source| BoardError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Every board in `dir`, by id.
pub fn load_all(dir: &Path) -> Result<Vec<Board>, BoardError> {
    let io = |source| BoardError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load_file(p)).collect()
}

/// The board `id` from `dir`.
pub fn load(dir: &Path, id: &str) -> Result<Board, BoardError> {
    let all = load_all(dir)?;
    let known = all.iter().map(|b| b.id.clone()).collect();
    all.into_iter()
        .find(|b| b.id == id)
        .ok_or_else(|| BoardError::Unknown {
            id: id.to_owned(),
            known,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_boards_parse() {
        let boards = load_all(&source_dir()).expect("boards");
        let ids: Vec<&str> = boards.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, ["qemu-arm64", "rpi4", "rpi5", "x86_64-efi"]);
        // The image carries each board re-serialised; the device reads it back.
        for board in &boards {
            let text = toml::to_string(board).expect("serialise");
            let path = PathBuf::from(format!("{}.toml", board.id));
            assert_eq!(&parse(&text, &path).expect("reparse"), board);
        }
        let pi = load(&source_dir(), "rpi4").expect("rpi4");
        assert_eq!(pi.partition_table, PartitionTable::Mbr);
        assert!(
            pi.debian
                .components
                .contains(&"non-free-firmware".to_owned())
        );
        assert!(matches!(
            pi.reset_button,
            ResetButton::Gpio { line: 21, .. }
        ));
        let err = load(&source_dir(), "pi3").expect_err("unknown");
        assert!(err.to_string().contains("x86_64-efi"), "{err}");
    }

    #[test]
    fn bad_boards_name_the_field_and_the_fix() {
        let text = std::fs::read_to_string(source_dir().join("rpi4.toml")).expect("rpi4");
        let broken = text
            .replace("partition_table = \"mbr\"", "partition_table = \"gpt\"")
            .replace(
                "rust_target = \"aarch64-unknown-linux-gnu\"",
                "rust_target = \"x86_64-unknown-linux-gnu\"",
            )
            .replace("device_tree = \"bcm2711-rpi-4-b.dtb\"\n", "")
            .replace("chip = \"gpiochip0\"", "chip = \"0\"")
            .replace("imager_devices = [\"pi4-64bit\"]\n", "")
            .replace(
                "proven = ",
                "initramfs_modules = [\"nvme; rm -rf /\"]\nproven = ",
            )
            .replace("cmdline = \"quiet\"", "cmdline = \"quiet root=/dev/sda2\"");
        let err = parse(&broken, Path::new("boards/rpi4.toml")).expect_err("broken");
        let BoardError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for f in [
            "partition_table",
            "rust_target",
            "device_tree",
            "reset_button.chip",
            "cmdline",
            "imager_devices",
            "initramfs_modules",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(err.to_string().contains("use \"mbr\""), "{err}");
        let err = parse(&text, Path::new("boards/rpi9.toml")).expect_err("id");
        assert!(err.to_string().contains("keep them the same"), "{err}");
        let err = parse(
            &text.replace("arch = \"arm64\"", "arch = \"riscv\""),
            Path::new("rpi4.toml"),
        )
        .expect_err("unknown arch");
        assert!(err.to_string().contains("line"), "{err}");
        let err = parse(&format!("{text}\ncolour = 1\n"), Path::new("rpi4.toml"))
            .expect_err("unknown key");
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
