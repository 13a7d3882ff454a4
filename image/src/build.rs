//! `ddaemon-image build`: from a board file to a flashable disk image.
//!
//! Steps, each printed as it starts: a Debian root filesystem with
//! mmdebstrap (the board's packages plus the appliance's; downloads kept
//! in a cache folder between builds), the ddaemon binaries, catalog and
//! systemd units put in, the root made read-only as erofs, the boot
//! partition made as a FAT file with mtools (kernel, initrd, systemd-boot
//! and its entries), and all of it spliced into the disk by `layout`. No
//! loop devices, no mounts. `SOURCE_DATE_EPOCH` fixes every timestamp.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ddaemon_boards::{Board, BootMethod};

use crate::layout::{self, Role, Sizes};

const MIB: u64 = 1024 * 1024;

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub board: Board,
    /// Where the image and its checksum go.
    pub out_dir: PathBuf,
    /// Scratch space (root filesystem tree, filesystem images).
    pub work_dir: PathBuf,
    /// Downloaded Debian packages, kept between builds.
    pub cache_dir: PathBuf,
    /// The `ddaemon` and `ddaemon-init` binaries for the board.
    pub ddaemon: PathBuf,
    pub init: PathBuf,
    /// The app catalog folder.
    pub catalog: PathBuf,
    pub version: String,
    /// Seconds since the epoch for every timestamp (reproducible builds).
    pub source_date_epoch: u64,
}

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{command} failed: {message}")]
    Command { command: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error("{0}")]
    Unsupported(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_owned(),
        source,
    }
}

fn step(what: &str) {
    eprintln!("\x1b[1m==> {what}\x1b[0m");
}

/// Runs a command to its end; its output goes to the terminal (progress).
fn run(command: &mut Command) -> Result<(), BuildError> {
    let shown = format!("{command:?}");
    let status = command.status().map_err(|e| BuildError::Command {
        command: shown.clone(),
        message: format!("cannot start it ({e}); is it installed?"),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Command {
            command: shown,
            message: format!("it ended with {status}"),
        })
    }
}

/// The packages every image has besides the board's own.
const APPLIANCE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "systemd-resolved",
    "udev",
    "dbus",
    "initramfs-tools",
    "kmod",
    "e2fsprogs",
    "fdisk",
    "gdisk",
    "util-linux",
    "iproute2",
    "nftables",
    "ca-certificates",
    "libseccomp2",
];

/// Left out of the root filesystem: manuals, translations and docs (but
/// not the copyright files), and kernel drivers a home server has no use
/// for (sound cards, TV tuners and webcams).
const PATH_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/lib/modules/*/kernel/sound/*",
    "path-exclude=/usr/lib/modules/*/kernel/drivers/media/*",
];

/// The systemd unit of the supervisor. KillMode=process: a restart of the
/// supervisor must not take the containers' shims with it.
const DDAEMON_SERVICE: &str = "[Unit]
Description=ddaemon supervisor
Wants=network-online.target
After=network-online.target local-fs.target

[Service]
ExecStart=/usr/bin/ddaemon serve --data /data
KillMode=process
Restart=always
RestartSec=2
Environment=MALLOC_ARENA_MAX=2

[Install]
WantedBy=multi-user.target
";

/// Wired networks get an address by DHCP (IPv6 by router advertisements).
const WIRED_NETWORK: &str = "[Match]
Name=en* eth*

[Network]
DHCP=yes
MulticastDNS=no
LLMNR=no
";

impl BuildOptions {
    fn root_dir(&self) -> PathBuf {
        self.work_dir.join("root")
    }

    /// A filesystem UUID that is the same for the same build.
    fn uuid(&self, what: &str) -> String {
        let g = layout::derived_guid(&format!(
            "ddaemon/{}/{}/{what}",
            self.board.id, self.version
        ));
        let h: String = g.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// The image's file name.
    pub fn image_name(&self) -> String {
        format!("ddaemon-{}-{}.img", self.board.id, self.version)
    }

    /// Runs every step; returns the compressed image's path.
    pub fn build(&self) -> Result<PathBuf, BuildError> {
        let started = Instant::now();
        if self.board.boot != BootMethod::Uefi {
            return Err(BuildError::Unsupported(format!(
                "board {}: building for {:?} boot is not done yet; only UEFI boards build",
                self.board.id, self.board.boot
            )));
        }
        for dir in [&self.out_dir, &self.work_dir, &self.cache_dir] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        self.debian_root()?;
        self.install_appliance()?;
        let root_img = self.work_dir.join("root.img");
        step("making the read-only root filesystem (erofs)");
        let _ = std::fs::remove_file(&root_img);
        run(Command::new("mkfs.erofs")
            .arg("-zlz4hc")
            .arg(format!("-T{}", self.source_date_epoch))
            .arg(format!("-U{}", self.uuid("root")))
            .arg("--quiet")
            // The kernel and initrd live on the boot partition.
            .arg("--exclude-regex=^boot/(vmlinuz|initrd\\.img|System\\.map)")
            .arg(&root_img)
            .arg(self.root_dir()))?;
        let root_size = std::fs::metadata(&root_img).map_err(io(&root_img))?.len();
        let boot_img = self.boot_partition()?;
        step("laying out the disk");
        let sizes = Sizes {
            boot: 256 * MIB,
            // Room for a larger update in each slot.
            root: (root_size * 2).div_ceil(MIB).max(512) * MIB,
            data: 64 * MIB,
        };
        let layout = layout::plan(self.board.partition_table, self.board.arch, sizes)?;
        let image = self.out_dir.join(self.image_name());
        layout.write_image(
            &image,
            &format!("ddaemon/{}/{}", self.board.id, self.version),
            &[(Role::Boot, &boot_img), (Role::RootA, &root_img)],
        )?;
        step("compressing");
        let compressed = image.with_extension("img.zst");
        let _ = std::fs::remove_file(&compressed);
        run(Command::new("zstd")
            .args(["-q", "-T0", "-19", "--rm", "-o"])
            .arg(&compressed)
            .arg(&image))?;
        let sum = Command::new("sha256sum")
            .arg(compressed.file_name().unwrap_or_default())
            .current_dir(&self.out_dir)
            .output()
            .map_err(io(&compressed))?;
        let sum_path = compressed.with_extension("zst.sha256");
        std::fs::write(&sum_path, &sum.stdout).map_err(io(&sum_path))?;
        eprintln!(
            "built {} in {:.0} s",
            compressed.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(compressed)
    }

    /// mmdebstrap into `work/root`, with downloads cached. A root made by an
    /// earlier build from the same package list is reused (what is added to
    /// it afterwards is written again every build).
    fn debian_root(&self) -> Result<(), BuildError> {
        let root = self.root_dir();
        let mut packages: Vec<&str> = APPLIANCE_PACKAGES.to_vec();
        let d = &self.board.debian;
        packages.extend(
            d.kernel
                .iter()
                .chain(&d.firmware)
                .chain(&d.extra)
                .map(String::as_str),
        );
        let recipe = format!(
            "{} {} {} {} {} {}\n",
            d.suite,
            self.board.arch.debian_name(),
            d.components.join(","),
            packages.join(","),
            PATH_EXCLUDES.join(","),
            self.source_date_epoch
        );
        let stamp = self.work_dir.join("root.recipe");
        if root.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(recipe.as_str())
        {
            step("reusing the Debian root filesystem of the last build (same packages)");
            return Ok(());
        }
        let _ = std::fs::remove_file(&stamp);
        if root.exists() {
            std::fs::remove_dir_all(&root).map_err(io(&root))?;
        }
        step(&format!(
            "making a Debian {} root filesystem for {} (mmdebstrap)",
            self.board.debian.suite,
            self.board.arch.debian_name()
        ));
        let cache = self.cache_dir.display().to_string();
        run(Command::new("mmdebstrap")
            .env("SOURCE_DATE_EPOCH", self.source_date_epoch.to_string())
            .arg("--variant=minbase")
            .arg(format!("--architectures={}", self.board.arch.debian_name()))
            .arg(format!("--components={}", d.components.join(",")))
            .arg(format!("--include={}", packages.join(",")))
            .args(["--skip=download/empty", "--skip=essential/unlink"])
            .args(PATH_EXCLUDES.iter().map(|p| format!("--dpkgopt={p}")))
            .arg(format!(
                "--setup-hook=mkdir -p '{cache}' \"$1\"/var/cache/apt/archives/"
            ))
            .arg(format!("--setup-hook=sync-in '{cache}' /var/cache/apt/archives/"))
            .arg(format!("--customize-hook=sync-out /var/cache/apt/archives '{cache}'"))
            // The initramfs must mount an erofs root.
            .arg("--customize-hook=echo erofs >> \"$1/etc/initramfs-tools/modules\"; chroot \"$1\" update-initramfs -u")
            .arg(&d.suite)
            .arg(&root)
            .arg("http://deb.debian.org/debian"))?;
        std::fs::write(&stamp, recipe).map_err(io(&stamp))
    }

    /// `path` inside the root filesystem, its folder created.
    fn in_root(&self, path: &str) -> Result<PathBuf, BuildError> {
        let full = self.root_dir().join(path.trim_start_matches('/'));
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        Ok(full)
    }

    fn write(&self, path: &str, text: &str) -> Result<(), BuildError> {
        let full = self.in_root(path)?;
        std::fs::write(&full, text).map_err(io(&full))
    }

    fn copy(&self, from: &Path, to: &str, mode: u32) -> Result<(), BuildError> {
        use std::os::unix::fs::PermissionsExt;
        let full = self.in_root(to)?;
        std::fs::copy(from, &full).map_err(io(from))?;
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).map_err(io(&full))
    }

    /// The binaries, catalog, units and the settings a read-only root needs.
    fn install_appliance(&self) -> Result<(), BuildError> {
        step("installing ddaemon");
        self.copy(&self.ddaemon, "/usr/bin/ddaemon", 0o755)?;
        self.copy(&self.init, "/sbin/ddaemon-init", 0o755)?;
        let share = self.root_dir().join("usr/share/ddaemon");
        let catalog = share.join("catalog");
        if catalog.exists() {
            std::fs::remove_dir_all(&catalog).map_err(io(&catalog))?;
        }
        std::fs::create_dir_all(&share).map_err(io(&share))?;
        run(Command::new("cp")
            .args(["-a", "--no-preserve=ownership"])
            .arg(&self.catalog)
            .arg(self.root_dir().join("usr/share/ddaemon/catalog")))?;
        self.write("/etc/systemd/system/ddaemon.service", DDAEMON_SERVICE)?;
        self.write("/etc/systemd/network/20-wired.network", WIRED_NETWORK)?;
        // The device answers mDNS itself (ddaemon owns port 5353).
        self.write(
            "/etc/systemd/resolved.conf.d/ddaemon.conf",
            "[Resolve]\nMulticastDNS=no\nLLMNR=no\n",
        )?;
        self.write("/etc/hostname", "ddaemon\n")?;
        // Empty: systemd makes a machine id at first boot (in /etc's overlay).
        self.write("/etc/machine-id", "")?;
        std::fs::create_dir_all(self.root_dir().join("data")).map_err(io(&self.root_dir()))?;
        let wants = self
            .root_dir()
            .join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).map_err(io(&wants))?;
        for (unit, target) in [
            ("ddaemon.service", "/etc/systemd/system/ddaemon.service"),
            (
                "systemd-networkd.service",
                "/usr/lib/systemd/system/systemd-networkd.service",
            ),
            (
                "systemd-resolved.service",
                "/usr/lib/systemd/system/systemd-resolved.service",
            ),
        ] {
            let link = wants.join(unit);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).map_err(io(&link))?;
        }
        Ok(())
    }

    /// The FAT boot partition as a file: kernel, initrd, systemd-boot.
    fn boot_partition(&self) -> Result<PathBuf, BuildError> {
        step("making the boot partition (FAT, systemd-boot)");
        let root = self.root_dir();
        let find = |prefix: &str| -> Result<PathBuf, BuildError> {
            let boot = root.join("boot");
            let mut found: Vec<PathBuf> = std::fs::read_dir(&boot)
                .map_err(io(&boot))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect();
            found.sort();
            found.pop().ok_or_else(|| {
                BuildError::Unsupported(format!("no {prefix}* in the root filesystem's /boot"))
            })
        };
        let kernel = find("vmlinuz-")?;
        let initrd = find("initrd.img-")?;
        let efi_arch = match self.board.arch {
            ddaemon_boards::Arch::Amd64 => "x64",
            ddaemon_boards::Arch::Arm64 => "aa64",
        };
        let loader = root.join(format!(
            "usr/lib/systemd/boot/efi/systemd-boot{efi_arch}.efi"
        ));
        let img = self.work_dir.join("boot.img");
        let _ = std::fs::remove_file(&img);
        run(Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "BOOT", "-i", "dd000001", "-C"])
            .arg(&img)
            .arg((256 * 1024).to_string()))?;
        let console = &self.board.console;
        let entry = format!(
            "title ddaemon (slot A)\nlinux /vmlinuz\ninitrd /initrd.img\n\
             options root=PARTLABEL=root-a rootfstype=erofs ro init=/sbin/ddaemon-init console=tty0 console={console} {}\n",
            self.board.cmdline
        );
        let staging = self.work_dir.join("esp");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        for dir in ["EFI/BOOT", "loader/entries"] {
            std::fs::create_dir_all(staging.join(dir)).map_err(io(&staging))?;
        }
        std::fs::copy(
            &loader,
            staging.join(format!("EFI/BOOT/BOOT{}.EFI", efi_arch.to_uppercase())),
        )
        .map_err(io(&loader))?;
        std::fs::copy(&kernel, staging.join("vmlinuz")).map_err(io(&kernel))?;
        std::fs::copy(&initrd, staging.join("initrd.img")).map_err(io(&initrd))?;
        std::fs::write(
            staging.join("loader/loader.conf"),
            "default root-a.conf\ntimeout 0\n",
        )
        .map_err(io(&staging))?;
        std::fs::write(staging.join("loader/entries/root-a.conf"), entry).map_err(io(&staging))?;
        let mut mcopy = Command::new("mcopy");
        mcopy
            .env("SOURCE_DATE_EPOCH", self.source_date_epoch.to_string())
            .args(["-s", "-m", "-i"])
            .arg(&img);
        for entry in ["EFI", "loader", "vmlinuz", "initrd.img"] {
            mcopy.arg(staging.join(entry));
        }
        run(mcopy.arg("::/"))?;
        Ok(img)
    }
}
