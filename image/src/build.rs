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
use ddaemon_recovery::bundle::{self, PayloadKind, SigningKey};
use ddaemon_recovery::slots::{self, Slot};

use crate::imager::{ImagerEntry, date_of};
use crate::layout::{self, Role, Sizes};

const MIB: u64 = 1024 * 1024;
/// The FAT boot partition: kernel, initrd and firmware, twice over for
/// the A/B slots' kernels.
const BOOT_SIZE: u64 = 256 * MIB;

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
    /// Where the image will be downloaded from (the Pi Imager entry's
    /// URL); `None` points at the built file.
    pub url_base: Option<String>,
    /// The ed25519 key (PKCS#8 PEM) that signs the update bundles; its
    /// public half goes into the image as the key it trusts.
    pub signing_key: PathBuf,
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
    #[error(transparent)]
    Bundle(#[from] ddaemon_recovery::bundle::BundleError),
    #[error(transparent)]
    Key(#[from] ddaemon_recovery::bundle::KeyError),
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

/// The timestamp inside the Debian root (its initramfs, apt's records).
/// Fixed rather than the build's own epoch, so a root is reused across
/// commits while its recipe holds, and still the same for the same recipe;
/// the erofs and FAT timestamps are the build's (`source_date_epoch`).
const ROOT_EPOCH: u64 = 1_735_689_600; // 2025-01-01

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
    // The initramfs is compressed with zstd only when zstd is there (gzip
    // otherwise, slower to unpack at every boot).
    "zstd",
    // Shares (issue 7) and remote access (issue 9); their services stay
    // off until the owner makes a share or a tunnel.
    "samba",
    // The Unix accounts of Samba's users, which ddaemon writes itself.
    "libnss-extrausers",
    "nfs-kernel-server",
    "wireguard-tools",
    // Backups (issue 8) to SFTP, S3 and other remotes go through
    // `rclone serve restic` (about 13 MB compressed).
    "rclone",
];

/// Run in the root once Debian is installed (mmdebstrap customize hooks;
/// `$1` is the root). Part of the root's recipe: changing one rebuilds it.
const CUSTOMIZE_HOOKS: &[&str] = &[
    // ddaemon starts smbd and the NFS server when there is something to
    // share; NetBIOS and the AD domain controller are never wanted.
    // rpcbind only serves NFSv3; it listens on port 111 for nothing until then.
    "chroot \"$1\" systemctl disable smbd.service nfs-server.service rpcbind.service rpcbind.socket",
    "chroot \"$1\" systemctl mask nmbd.service samba-ad-dc.service",
    // Nothing at boot the device does not use: NFS client mounts (the NFS
    // server starts what it needs itself), ext4 online scrubs (they need
    // LVM), and apt's daily downloads and dpkg backups (the root is a
    // read-only image replaced whole by updates). Each cost the boot
    // CPU time under emulation while the supervisor started.
    "chroot \"$1\" systemctl disable nfs-client.target e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer",
];

/// Left out of the root filesystem: manuals, translations and docs (but
/// not the copyright files), and kernel drivers a home server has no use
/// for (sound cards, TV tuners and webcams, InfiniBand fabrics, industrial
/// sensors, ISDN).
const PATH_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/lib/modules/*/kernel/sound/*",
    "path-exclude=/usr/lib/modules/*/kernel/drivers/media/*",
    "path-exclude=/usr/lib/modules/*/kernel/drivers/infiniband/*",
    "path-exclude=/usr/lib/modules/*/kernel/drivers/iio/*",
    "path-exclude=/usr/lib/modules/*/kernel/drivers/isdn/*",
];

/// The device's smb.conf: everything comes from ddaemon's include file.
const SMB_CONF: &str = "# Written by the image; ddaemon writes the included file.
[global]
   server string = ddaemon
   include = /data/ddaemon/samba/ddaemon.conf
";

/// NFSv3's mount service on its registered port (20048) rather than one
/// rpcbind picks at random: a firewall rule, or a forwarded port, can name
/// it. NFSv4 needs only 2049.
const NFS_CONF: &str = "# Written by the image.
[mountd]
port=20048
";

/// The systemd unit of the supervisor. KillMode=process: a restart of the
/// supervisor must not take the containers' shims with it.
const DDAEMON_SERVICE: &str = "[Unit]
Description=ddaemon supervisor
# Not even network.target: the supervisor listens on every address and
# follows address changes itself (mDNS re-announces), so waiting for
# systemd-networkd to start (about a second under emulation) would only
# delay the setup page.
After=local-fs.target
# A supervisor that cannot start (five starts in two minutes) is given up
# on, and recovery mode answers on its port instead. On a boot that is
# trying an update, the boot check gives up first (three restarts) and
# the device goes back to the other slot.
StartLimitIntervalSec=120
StartLimitBurst=5
OnFailure=ddaemon-recovery.service

[Service]
ExecStart=/usr/bin/ddaemon serve --data /data --power-control
KillMode=process
Restart=always
# Straight back to starting: since systemd 254 the default restart passes
# through the failed state, which would start recovery mode (OnFailure=)
# at the first crash, and keep the boot check from counting restarts.
RestartMode=direct
RestartSec=2
Environment=MALLOC_ARENA_MAX=2

[Install]
WantedBy=multi-user.target
";

/// Recovery mode, when the supervisor cannot start (see ddaemon.service):
/// the owner can still install an update, switch slots, reset the device
/// and download the logs from the same address.
const RECOVERY_SERVICE: &str = "[Unit]
Description=ddaemon recovery mode (the supervisor could not start)
Conflicts=ddaemon.service
After=ddaemon.service

[Service]
ExecStart=/usr/bin/ddaemon serve --recovery-unattended --data /data --power-control
Restart=always
RestartSec=2
";

/// Confirms a boot that is being tried (an update, or a switch back) once
/// the supervisor answers. It gates boot-complete.target, after which
/// systemd-bless-boot keeps the boot entry; if the supervisor does not
/// answer in time the device restarts, and the boot loader, finding the
/// entry's one try spent, starts the previous system. A supervisor that
/// systemd has had to restart three times is given up on at once. Only on
/// a counted boot (the loader says so in LoaderBootCountPath).
const BOOT_CHECK_SERVICE: &str = "[Unit]
Description=ddaemon: keep this system only if the supervisor answers
After=ddaemon.service
Before=boot-complete.target
ConditionPathExists=/sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
FailureAction=reboot

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ddaemon health --wait 90 --unit ddaemon.service
";

/// The boot partition where the supervisor writes a new slot's kernel and
/// boot entry (and systemd-bless-boot finds the entries). Mounted when
/// first used (the automount below), not on the way to local-fs.target:
/// waiting for udev to name the partition and loading the FAT driver
/// held up every unit after local-fs.target, the supervisor's included,
/// by about 4 s under emulation.
fn boot_mount_unit(at: &str) -> String {
    format!(
        "[Unit]
Description=Boot partition (the A/B slots' kernels and entries)

[Mount]
What=/dev/disk/by-label/BOOT
Where={at}
Type=vfat
Options=umask=0077,noatime
"
    )
}

fn boot_automount_unit(at: &str) -> String {
    format!(
        "[Unit]
Description=Boot partition, mounted when first used

[Automount]
Where={at}

[Install]
WantedBy=local-fs.target
"
    )
}

/// Debian's unit with one change: it is not ordered before
/// sysinit.target. Refreshing the boot loader's seed file reads the boot
/// partition, which would put its mount back on the way to every service;
/// the loader refreshes the file itself at each boot anyway.
const BOOT_RANDOM_SEED_SERVICE: &str = "[Unit]
Description=Update Boot Loader Random Seed
Documentation=man:systemd-boot-random-seed.service(8) man:random(4)
DefaultDependencies=no
After=local-fs.target systemd-random-seed.service
Conflicts=shutdown.target
Before=shutdown.target
ConditionVirtualization=!container
ConditionPathExists=!/etc/initrd-release
ConditionPathExists=|/sys/firmware/efi/efivars/LoaderFeatures-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
ConditionPathExists=|/sys/firmware/efi/efivars/StubFeatures-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=bootctl --graceful random-seed
";

/// Modules the kernel would load by name for nothing. A blacklisted
/// module still loads when a driver needs it (a Wi-Fi card's driver
/// pulls cfg80211 in), only not by alias: systemd-networkd's start asked
/// for nl80211 and so loaded cfg80211 on every boot (a second of the boot
/// under emulation), and udev loaded the parallel-port driver.
const MODPROBE_CONF: &str = "# Written by the image.
blacklist cfg80211
blacklist parport_pc
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

    /// What the disk's GUIDs (or MBR disk id) derive from.
    fn disk_seed(&self) -> String {
        format!("ddaemon/{}/{}", self.board.id, self.version)
    }

    /// The image's file name.
    pub fn image_name(&self) -> String {
        format!("ddaemon-{}-{}.img", self.board.id, self.version)
    }

    /// The update bundle's file name.
    pub fn bundle_name(&self) -> String {
        format!(
            "ddaemon-{}-{}.{}",
            self.board.id,
            self.version,
            ddaemon_recovery::bundle::EXTENSION
        )
    }

    /// The root tree as erofs, `work/root.img`.
    fn root_filesystem(&self) -> Result<PathBuf, BuildError> {
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
        Ok(root_img)
    }

    /// The signed update bundle of a root filesystem and the root tree's
    /// kernel and initrd.
    fn write_bundle(&self, root_img: &Path, key: &SigningKey) -> Result<PathBuf, BuildError> {
        step("writing the signed update bundle");
        let boot = self.root_dir().join("boot");
        let kernel = newest(&boot, "vmlinuz-")?;
        let initrd = newest(&boot, "initrd.img-")?;
        let out = self.out_dir.join(self.bundle_name());
        bundle::write_bundle(
            &out,
            &self.board.id,
            &self.version,
            self.source_date_epoch,
            &[
                (PayloadKind::Root, root_img),
                (PayloadKind::Kernel, &kernel),
                (PayloadKind::Initrd, &initrd),
            ],
            key,
        )?;
        Ok(out)
    }

    /// `ddaemon-image bundle`: an update bundle from the last build's Debian
    /// root with this version stamped in and, for tests and custom builds,
    /// the files of `add` laid over it. The last build's tree is left as
    /// it was: the bundle's tree is a hard-linked copy whose files are
    /// replaced, never written through.
    pub fn bundle(&self, add: Option<&Path>) -> Result<PathBuf, BuildError> {
        let built = self.root_dir();
        if !built.join("usr").exists() {
            return Err(BuildError::Unsupported(format!(
                "no built root for {} in {}: run `scripts/build-image {}` first",
                self.board.id,
                self.work_dir.display(),
                self.board.id
            )));
        }
        let key = SigningKey::from_pem_file(&self.signing_key)?;
        // A scratch folder of its own, removed however this ends, so that
        // two bundles can be made at once (the boot tests do).
        let scratch = tempfile::Builder::new()
            .prefix("bundle-")
            .tempdir_in(&self.work_dir)
            .map_err(io(&self.work_dir))?;
        let mut copy = self.clone();
        copy.work_dir = scratch.path().to_owned();
        step("copying the root (hard links)");
        run(Command::new("cp")
            .arg("-al")
            .arg(&built)
            .arg(copy.root_dir()))?;
        copy.install_appliance(&key)?;
        if let Some(add) = add {
            step(&format!("laying {} over the root", add.display()));
            // --remove-destination: replace the hard links, never write
            // through them into the last build's tree.
            run(Command::new("cp")
                .args(["-r", "--remove-destination", "--no-preserve=ownership"])
                .arg(format!("{}/.", add.display()))
                .arg(copy.root_dir()))?;
        }
        std::fs::create_dir_all(&self.out_dir).map_err(io(&self.out_dir))?;
        let root_img = copy.root_filesystem()?;
        let out = copy.write_bundle(&root_img, &key)?;
        scratch.close().map_err(io(&copy.work_dir))?;
        Ok(out)
    }

    /// Makes (or reuses) the Debian root filesystem and nothing else.
    pub fn debian_root_only(&self) -> Result<(), BuildError> {
        for dir in [&self.work_dir, &self.cache_dir] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        self.debian_root()
    }

    /// Runs every step; returns the compressed image's path.
    pub fn build(&self) -> Result<PathBuf, BuildError> {
        let started = Instant::now();
        for dir in [&self.out_dir, &self.work_dir, &self.cache_dir] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let compressed = self
            .out_dir
            .join(self.image_name())
            .with_extension("img.xz");
        let inputs = self.inputs_digest()?;
        let stamp = self.work_dir.join("image.inputs");
        if compressed.exists()
            && std::fs::read_to_string(&stamp).ok().as_deref() == Some(inputs.as_str())
        {
            step(&format!(
                "{} is up to date (nothing it is made from changed)",
                compressed.display()
            ));
            return Ok(compressed);
        }
        let _ = std::fs::remove_file(&stamp);
        self.debian_root()?;
        let key = SigningKey::from_pem_file(&self.signing_key)?;
        self.install_appliance(&key)?;
        let root_img = self.root_filesystem()?;
        let root_size = std::fs::metadata(&root_img).map_err(io(&root_img))?.len();
        let boot_img = self.boot_partition()?;
        step("laying out the disk");
        let sizes = Sizes {
            boot: BOOT_SIZE,
            // Room for a larger update in each slot.
            root: (root_size * 2).div_ceil(MIB).max(512) * MIB,
            data: 64 * MIB,
        };
        let layout = layout::plan(self.board.partition_table, self.board.arch, sizes)?;
        let image = self.out_dir.join(self.image_name());
        layout.write_image(
            &image,
            &self.disk_seed(),
            &[(Role::Boot, &boot_img), (Role::RootA, &root_img)],
        )?;
        let (extract_size, extract_sha256) = digest_file(&image)?;
        // xz: what Raspberry Pi Imager, balenaEtcher and GNOME Disks all
        // decompress while writing.
        step("compressing (xz)");
        let _ = std::fs::remove_file(&compressed);
        run(Command::new("xz")
            .args(["-q", "-T0", "-6", "--force"])
            .arg(&image))?;
        let (download_size, download_sha256) = digest_file(&compressed)?;
        let file_name = compressed
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let sum_path = self.out_dir.join(format!("{file_name}.sha256"));
        std::fs::write(&sum_path, format!("{download_sha256}  {file_name}\n"))
            .map_err(io(&sum_path))?;
        if self.board.boot == BootMethod::RaspberryPiFirmware {
            let url = match &self.url_base {
                Some(base) => format!("{}/{file_name}", base.trim_end_matches('/')),
                None => {
                    let full = std::fs::canonicalize(&compressed).map_err(io(&compressed))?;
                    format!("file://{}", full.display())
                }
            };
            let name = format!("ddaemon for {}", self.board.title);
            let entry = ImagerEntry {
                name: &name,
                description: "A home server for self-hosted apps: open http://ddaemon.local after the first boot.",
                url: &url,
                release_date: &date_of(self.source_date_epoch),
                extract_size,
                extract_sha256: &extract_sha256,
                download_size,
                download_sha256: &download_sha256,
                devices: &self.board.imager_devices,
            };
            let json_path = self.out_dir.join(format!(
                "ddaemon-{}-{}.os_list.json",
                self.board.id, self.version
            ));
            let text = serde_json::to_string_pretty(&entry.os_list()).unwrap_or_default();
            std::fs::write(&json_path, text + "\n").map_err(io(&json_path))?;
            eprintln!(
                "Raspberry Pi Imager: rpi-imager --repo {}",
                json_path.display()
            );
        }
        let bundle = self.write_bundle(&root_img, &key)?;
        eprintln!("update bundle: {}", bundle.display());
        std::fs::write(&stamp, inputs).map_err(io(&stamp))?;
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
        let d = &self.board.debian;
        let packages = self.packages();
        let recipe = self.root_recipe();
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
        let initramfs =
            std::fs::canonicalize(self.write_initramfs_files()?).map_err(io(&self.work_dir))?;
        run(Command::new("mmdebstrap")
            .env("SOURCE_DATE_EPOCH", ROOT_EPOCH.to_string())
            .arg("--variant=minbase")
            .arg(format!("--architectures={}", self.board.arch.debian_name()))
            .arg(format!("--components={}", d.components.join(",")))
            .arg(format!("--include={}", packages.join(",")))
            .args(["--skip=download/empty", "--skip=essential/unlink"])
            .args(PATH_EXCLUDES.iter().map(|p| format!("--dpkgopt={p}")))
            .arg(format!(
                "--setup-hook=mkdir -p '{cache}' \"$1\"/var/cache/apt/archives/"
            ))
            .arg(format!(
                "--setup-hook=sync-in '{cache}' /var/cache/apt/archives/"
            ))
            .arg(format!(
                "--customize-hook=sync-out /var/cache/apt/archives '{cache}'"
            ))
            // After Debian's essential packages, before the kernel: the
            // initramfs settings are in place when the kernel's installation
            // makes the (only) initramfs; a second run would cost minutes
            // under qemu-user for arm64.
            .arg("--essential-hook=mkdir -p \"$1/etc/initramfs-tools\"")
            .arg(format!(
                "--essential-hook=copy-in {0}/hooks {0}/conf.d /etc/initramfs-tools/",
                initramfs.display()
            ))
            .args(
                CUSTOMIZE_HOOKS
                    .iter()
                    .map(|h| format!("--customize-hook={h}")),
            )
            .arg(&d.suite)
            .arg(&root)
            .arg("http://deb.debian.org/debian"))?;
        std::fs::write(&stamp, recipe).map_err(io(&stamp))
    }

    fn packages(&self) -> Vec<&str> {
        let mut packages: Vec<&str> = APPLIANCE_PACKAGES.to_vec();
        if self.board.boot == BootMethod::Uefi {
            // systemd-bless-boot: confirms a tried boot entry.
            packages.push("systemd-boot");
        }
        let d = &self.board.debian;
        packages.extend(
            d.kernel
                .iter()
                .chain(&d.firmware)
                .chain(&d.extra)
                .map(String::as_str),
        );
        packages
    }

    /// The initramfs hook: the modules it must hold to mount the root.
    fn initramfs_hook(&self) -> String {
        let mut modules = vec!["erofs"];
        modules.extend(self.board.initramfs_modules.iter().map(String::as_str));
        format!(
            "#!/bin/sh\n# ddaemon: what the initramfs needs to mount the read-only root.\n\
             [ \"$1\" = prereqs ] && exit 0\n\
             . /usr/share/initramfs-tools/hook-functions\n\
             manual_add_modules {}\n",
            modules.join(" ")
        )
    }

    /// initramfs-tools settings: only the board's modules when it lists
    /// them (a smaller initramfs boots faster), Debian's broad set otherwise.
    fn initramfs_conf(&self) -> String {
        let modules = if self.board.initramfs_modules.is_empty() {
            "most"
        } else {
            "list"
        };
        format!("MODULES={modules}\nCOMPRESS=zstd\n")
    }

    /// The initramfs files copied into the root before the kernel is installed.
    fn write_initramfs_files(&self) -> Result<PathBuf, BuildError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.work_dir.join("initramfs");
        for sub in ["hooks", "conf.d"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir))?;
        }
        let hook = dir.join("hooks/ddaemon");
        std::fs::write(&hook, self.initramfs_hook()).map_err(io(&hook))?;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .map_err(io(&hook))?;
        let conf = dir.join("conf.d/ddaemon");
        std::fs::write(&conf, self.initramfs_conf()).map_err(io(&conf))?;
        Ok(dir)
    }

    /// Everything the Debian root is made from.
    fn root_recipe(&self) -> String {
        let d = &self.board.debian;
        format!(
            "{} {} {} {} {} {} {} {} {ROOT_EPOCH}\n",
            d.suite,
            self.board.arch.debian_name(),
            d.components.join(","),
            self.packages().join(","),
            PATH_EXCLUDES.join(","),
            self.initramfs_hook(),
            self.initramfs_conf(),
            CUSTOMIZE_HOOKS.join(";"),
        )
    }

    /// A digest of every input of the image: the root's recipe, the board,
    /// the binaries (this builder's own included), the catalog's files.
    fn inputs_digest(&self) -> Result<String, BuildError> {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.root_recipe());
        h.update(format!(
            "{:?} {:?} {} {}",
            self.board, self.url_base, self.version, self.source_date_epoch
        ));
        let builder = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
        for file in [&self.ddaemon, &self.init, &builder] {
            h.update(digest_file(file)?.1);
        }
        let mut files = Vec::new();
        list_files(&self.catalog, &mut files)?;
        files.sort();
        for file in files {
            h.update(
                file.strip_prefix(&self.catalog)
                    .unwrap_or(&file)
                    .to_string_lossy()
                    .as_bytes(),
            );
            h.update(digest_file(&file)?.1);
        }
        Ok(hex::encode(h.finalize()))
    }

    /// `path` inside the root filesystem, its folder created.
    fn in_root(&self, path: &str) -> Result<PathBuf, BuildError> {
        let full = self.root_dir().join(path.trim_start_matches('/'));
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        Ok(full)
    }

    /// Users and groups also come from libnss-extrausers' files, where
    /// ddaemon keeps the Unix accounts of its Samba users.
    fn with_extrausers(&self) -> Result<(), BuildError> {
        let path = self.in_root("/etc/nsswitch.conf")?;
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let changed: String = text
            .lines()
            .map(|l| {
                let database = l.split(':').next().unwrap_or_default().trim();
                if ["passwd", "group", "shadow"].contains(&database) && !l.contains("extrausers") {
                    format!("{l} extrausers\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        self.write("/etc/nsswitch.conf", &changed)
    }

    /// Replaces a file (a new inode: a bundle's tree shares its files
    /// with the build's by hard links).
    fn write(&self, path: &str, text: &str) -> Result<(), BuildError> {
        let full = self.in_root(path)?;
        let _ = std::fs::remove_file(&full);
        std::fs::write(&full, text).map_err(io(&full))
    }

    fn copy(&self, from: &Path, to: &str, mode: u32) -> Result<(), BuildError> {
        use std::os::unix::fs::PermissionsExt;
        let full = self.in_root(to)?;
        let _ = std::fs::remove_file(&full);
        std::fs::copy(from, &full).map_err(io(from))?;
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).map_err(io(&full))
    }

    /// The binaries, catalog, units and the settings a read-only root needs.
    fn install_appliance(&self, key: &SigningKey) -> Result<(), BuildError> {
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
        self.write(
            "/etc/systemd/system/ddaemon-recovery.service",
            RECOVERY_SERVICE,
        )?;
        self.write("/etc/systemd/network/20-wired.network", WIRED_NETWORK)?;
        // The device answers mDNS itself (ddaemon owns port 5353).
        self.write(
            "/etc/systemd/resolved.conf.d/ddaemon.conf",
            "[Resolve]\nMulticastDNS=no\nLLMNR=no\n",
        )?;
        self.write("/etc/hostname", "ddaemon\n")?;
        self.write("/etc/modprobe.d/ddaemon.conf", MODPROBE_CONF)?;
        // smbd serves what ddaemon writes: its globals, shares and users.
        self.write("/etc/samba/smb.conf", SMB_CONF)?;
        self.write("/etc/nfs.conf.d/ddaemon.conf", NFS_CONF)?;
        self.with_extrausers()?;
        self.write("/usr/share/ddaemon/board", &format!("{}\n", self.board.id))?;
        // The supervisor reads the reset button and status LED from it.
        let board_toml = toml::to_string(&self.board)
            .map_err(|e| BuildError::Unsupported(format!("board {}: {e}", self.board.id)))?;
        self.write(
            &format!("/usr/share/ddaemon/boards/{}.toml", self.board.id),
            &board_toml,
        )?;
        if self.board.reset_button == ddaemon_boards::ResetButton::PowerButton {
            // The supervisor counts the presses (five: soft reset) and shuts
            // down on a lone one itself.
            self.write(
                "/etc/systemd/logind.conf.d/ddaemon.conf",
                "[Login]\nHandlePowerKey=ignore\n",
            )?;
        }
        self.write(
            &format!("{}/build.pub", bundle::TRUSTED_KEYS_DIR),
            &format!("{}\n", key.public_key().to_hex()),
        )?;
        // Debian's os-release with the image's own name and version, which
        // the System page shows (and systemd-boot's menu would).
        let os_release = self.in_root("/usr/lib/os-release")?;
        let debian = std::fs::read_to_string(&os_release).map_err(io(&os_release))?;
        let mut text: String = debian
            .lines()
            .filter(|l| !l.starts_with("IMAGE_ID=") && !l.starts_with("IMAGE_VERSION="))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(&format!(
            "IMAGE_ID=ddaemon\nIMAGE_VERSION={}\n",
            self.version
        ));
        self.write("/usr/lib/os-release", &text)?;
        let (mount_point, unit_name) = match self.board.boot {
            BootMethod::Uefi => ("/efi", "efi"),
            BootMethod::RaspberryPiFirmware => ("/boot/firmware", "boot-firmware"),
        };
        std::fs::create_dir_all(self.in_root(mount_point)?).map_err(io(&self.root_dir()))?;
        self.write(
            &format!("/etc/systemd/system/{unit_name}.mount"),
            &boot_mount_unit(mount_point),
        )?;
        let automount = format!("{unit_name}.automount");
        self.write(
            &format!("/etc/systemd/system/{automount}"),
            &boot_automount_unit(mount_point),
        )?;
        if self.board.boot == BootMethod::Uefi {
            self.write(
                "/etc/systemd/system/systemd-boot-random-seed.service",
                BOOT_RANDOM_SEED_SERVICE,
            )?;
        }
        self.write(
            "/etc/systemd/system/ddaemon-boot-check.service",
            BOOT_CHECK_SERVICE,
        )?;
        // Empty: systemd makes a machine id at first boot (in /etc's overlay).
        self.write("/etc/machine-id", "")?;
        std::fs::create_dir_all(self.root_dir().join("data")).map_err(io(&self.root_dir()))?;
        let wants = self
            .root_dir()
            .join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).map_err(io(&wants))?;
        let link = |dir: &str, unit: &str| -> Result<(), BuildError> {
            let link = self.in_root(&format!("/etc/systemd/system/{dir}/{unit}"))?;
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), &link)
                .map_err(io(&link))
        };
        link("local-fs.target.wants", &automount)?;
        // boot-complete.target is reached, and the boot confirmed, only
        // once the supervisor answers.
        link(
            "boot-complete.target.requires",
            "ddaemon-boot-check.service",
        )?;
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

    /// The FAT boot partition as a file: kernel, initrd, and what the
    /// board's firmware starts (systemd-boot, or the Pi's firmware files).
    fn boot_partition(&self) -> Result<PathBuf, BuildError> {
        let staging = self.work_dir.join("boot");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        let root = self.root_dir();
        let kernel = newest(&root.join("boot"), "vmlinuz-")?;
        let initrd = newest(&root.join("boot"), "initrd.img-")?;
        // Slot A's kernel and initrd; an update puts slot B's beside them.
        let (kernel_at, initrd_at) = match self.board.boot {
            BootMethod::Uefi => ("ddaemon/a/vmlinuz", "ddaemon/a/initrd.img"),
            BootMethod::RaspberryPiFirmware => ("vmlinuz-a", "initrd.img-a"),
        };
        std::fs::create_dir_all(staging.join("ddaemon/a")).map_err(io(&staging))?;
        std::fs::copy(&kernel, staging.join(kernel_at)).map_err(io(&kernel))?;
        std::fs::copy(&initrd, staging.join(initrd_at)).map_err(io(&initrd))?;
        if self.board.boot == BootMethod::RaspberryPiFirmware {
            std::fs::remove_dir_all(staging.join("ddaemon")).map_err(io(&staging))?;
        }
        let console = &self.board.console;
        // gpt_auto off: systemd would otherwise try to automount the boot
        // partition on /efi, which a read-only root cannot hold.
        let options = |root_device: &str, tty: &str| {
            format!(
                "root={root_device} rootfstype=erofs ro init=/sbin/ddaemon-init systemd.gpt_auto=no console={tty} console={console} {}",
                self.board.cmdline
            )
        };
        match self.board.boot {
            BootMethod::Uefi => {
                step("making the boot partition (FAT, systemd-boot)");
                self.systemd_boot(&staging, &options("PARTLABEL=root-a", "tty0"))?;
            }
            BootMethod::RaspberryPiFirmware => {
                step("making the boot partition (FAT, Raspberry Pi firmware)");
                // No partition names on MBR: the root is partition 2 by the disk's id.
                let partuuid = format!("{:08x}-02", layout::mbr_disk_id(&self.disk_seed()));
                self.pi_firmware(
                    &staging,
                    &kernel,
                    &options(&format!("PARTUUID={partuuid}"), "tty1"),
                )?;
            }
        }
        let img = self.work_dir.join("boot.img");
        let _ = std::fs::remove_file(&img);
        run(Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "BOOT", "-i", "dd000001", "-C"])
            .arg(&img)
            .arg((BOOT_SIZE / 1024).to_string()))?;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&staging)
            .map_err(io(&staging))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        // Sorted: the FAT's directory order is the same every build.
        entries.sort();
        run(Command::new("mcopy")
            .env("SOURCE_DATE_EPOCH", self.source_date_epoch.to_string())
            .args(["-s", "-m", "-i"])
            .arg(&img)
            .args(&entries)
            .arg("::/"))?;
        Ok(img)
    }

    /// systemd-boot as the removable-media loader, one entry for slot A.
    fn systemd_boot(&self, staging: &Path, options: &str) -> Result<(), BuildError> {
        let efi_arch = match self.board.arch {
            ddaemon_boards::Arch::Amd64 => "x64",
            ddaemon_boards::Arch::Arm64 => "aa64",
        };
        let loader = self.root_dir().join(format!(
            "usr/lib/systemd/boot/efi/systemd-boot{efi_arch}.efi"
        ));
        for dir in ["EFI/BOOT", "loader/entries"] {
            std::fs::create_dir_all(staging.join(dir)).map_err(io(staging))?;
        }
        std::fs::copy(
            &loader,
            staging.join(format!("EFI/BOOT/BOOT{}.EFI", efi_arch.to_uppercase())),
        )
        .map_err(io(&loader))?;
        // The first of our entries in systemd-boot's order: a slot that was
        // tried and never confirmed sorts last (see ddaemon_recovery::slots).
        std::fs::write(
            staging.join("loader/loader.conf"),
            "default ddaemon-*\ntimeout 0\n",
        )
        .map_err(io(staging))?;
        let entry = slots::entry_text(Slot::A, &self.version, 1, options);
        std::fs::write(staging.join("loader/entries/ddaemon-a.conf"), entry).map_err(io(staging))
    }

    /// The Pi's boot files: Debian's raspi-firmware blobs, the kernel's
    /// Broadcom device trees, `config.txt` and `cmdline.txt`, laid out as
    /// Debian's own raspi-firmware hook does on a Pi.
    fn pi_firmware(&self, staging: &Path, kernel: &Path, options: &str) -> Result<(), BuildError> {
        let root = self.root_dir();
        let firmware = root.join("usr/lib/raspi-firmware");
        copy_files(&firmware, staging, |_| true)?;
        // vmlinuz-6.12.x-arm64 → /usr/lib/linux-image-6.12.x-arm64/broadcom
        let version = kernel
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .unwrap_or_default();
        let dtbs = root.join(format!("usr/lib/linux-image-{version}/broadcom"));
        copy_files(&dtbs, staging, |name| name.ends_with(".dtb"))?;
        let Some(device_tree) = &self.board.device_tree else {
            return Err(BuildError::Unsupported(format!(
                "board {}: a Raspberry Pi board needs device_tree",
                self.board.id
            )));
        };
        if !staging.join(device_tree).exists() {
            return Err(BuildError::Unsupported(format!(
                "board {}: device_tree {device_tree} is not among the kernel's device trees in {}",
                self.board.id,
                dtbs.display()
            )));
        }
        // No device_tree= line: the firmware picks the mainline tree that
        // fits the model it runs on (a Pi 400 or a CM4 as well as a 4 B).
        let config = format!(
            "# Written by ddaemon's image builder for {title}.
# The 64-bit Debian kernel, with the mainline device trees beside it.
arm_64bit=1
upstream_kernel=1
kernel=vmlinuz-a
initramfs initrd.img-a followkernel
cmdline=cmdline-a.txt
# The serial console on the header's pins 8 and 10.
enable_uart=1
disable_splash=1
",
            title = self.board.title
        );
        std::fs::write(staging.join("config.txt"), config).map_err(io(staging))?;
        std::fs::write(staging.join("cmdline-a.txt"), format!("{options}\n"))
            .map_err(io(staging))?;
        std::fs::write(staging.join("version-a.txt"), format!("{}\n", self.version))
            .map_err(io(staging))
    }
}

/// A file's size and sha256 (hex).
fn digest_file(path: &Path) -> Result<(u64, String), BuildError> {
    ddaemon_recovery::bundle::digest(path).map_err(io(path))
}

/// Every regular file under `dir`, recursively.
fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BuildError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let kind = entry.file_type().map_err(io(dir))?;
        if kind.is_dir() {
            list_files(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// The last (by name) file in `dir` whose name starts with `prefix`.
fn newest(dir: &Path, prefix: &str) -> Result<PathBuf, BuildError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| BuildError::Unsupported(format!("no {prefix}* in {}", dir.display())))
}

/// Copies the regular files of `from` whose names pass `keep` into `to`.
fn copy_files(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) -> Result<(), BuildError> {
    let mut copied = 0;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if entry.file_type().map_err(io(from))?.is_file() && keep(name) {
            std::fs::copy(entry.path(), to.join(name)).map_err(io(&entry.path()))?;
            copied += 1;
        }
    }
    if copied == 0 {
        return Err(BuildError::Unsupported(format!(
            "nothing to copy from {}",
            from.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(board: &str, work: &Path) -> BuildOptions {
        BuildOptions {
            board: ddaemon_boards::load(&ddaemon_boards::source_dir(), board).expect("board"),
            out_dir: work.join("out"),
            work_dir: work.to_owned(),
            cache_dir: work.join("cache"),
            ddaemon: work.join("ddaemon"),
            init: work.join("ddaemon-init"),
            catalog: work.join("catalog"),
            version: "1.0".into(),
            source_date_epoch: 0,
            url_base: None,
            signing_key: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("keys/development-only.pem"),
        }
    }

    /// A root with what Debian's kernel and raspi-firmware packages install.
    fn fake_pi_root(work: &Path, trees: &[&str]) {
        let root = work.join("root");
        for dir in [
            "boot",
            "usr/lib/raspi-firmware",
            "usr/lib/linux-image-6.12.1-arm64/broadcom",
        ] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        for file in [
            "boot/vmlinuz-6.12.1-arm64",
            "boot/initrd.img-6.12.1-arm64",
            "usr/lib/raspi-firmware/start4.elf",
            "usr/lib/raspi-firmware/fixup4.dat",
        ] {
            std::fs::write(root.join(file), file).expect("write");
        }
        for tree in trees {
            let path = root
                .join("usr/lib/linux-image-6.12.1-arm64/broadcom")
                .join(tree);
            std::fs::write(path, "dtb").expect("write");
        }
    }

    #[test]
    fn the_pi_boot_partition_boots_the_root_by_the_disks_own_id() {
        let work = tempfile::tempdir().expect("tempdir");
        fake_pi_root(work.path(), &["bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb"]);
        let o = options("rpi4", work.path());
        let staging = work.path().join("boot");
        std::fs::create_dir_all(&staging).expect("mkdir");
        let kernel = work.path().join("root/boot/vmlinuz-6.12.1-arm64");
        o.pi_firmware(&staging, &kernel, "root=X")
            .expect("firmware");
        for file in [
            "start4.elf",
            "fixup4.dat",
            "bcm2711-rpi-4-b.dtb",
            "bcm2711-rpi-400.dtb",
        ] {
            assert!(staging.join(file).exists(), "{file} on the boot partition");
        }
        let config = std::fs::read_to_string(staging.join("config.txt")).expect("config.txt");
        for line in [
            "arm_64bit=1",
            "kernel=vmlinuz-a",
            "initramfs initrd.img-a followkernel",
            "cmdline=cmdline-a.txt",
        ] {
            assert!(config.lines().any(|l| l == line), "{line} in:\n{config}");
        }
        // The partition table the image gets carries the id the command line names.
        let id = layout::mbr_disk_id(&o.disk_seed());
        let plan = layout::plan(
            o.board.partition_table,
            o.board.arch,
            Sizes {
                boot: BOOT_SIZE,
                root: 512 * MIB,
                data: 64 * MIB,
            },
        )
        .expect("plan");
        let table = plan.table_bytes(&o.disk_seed());
        let mbr = &table[0].1;
        assert_eq!(
            u32::from_le_bytes([mbr[440], mbr[441], mbr[442], mbr[443]]),
            id
        );
    }

    #[test]
    fn a_kernel_without_the_boards_device_tree_is_refused_by_name() {
        let work = tempfile::tempdir().expect("tempdir");
        fake_pi_root(work.path(), &["bcm2837-rpi-3-b.dtb"]);
        let o = options("rpi5", work.path());
        let staging = work.path().join("boot");
        std::fs::create_dir_all(&staging).expect("mkdir");
        let kernel = work.path().join("root/boot/vmlinuz-6.12.1-arm64");
        let err = o
            .pi_firmware(&staging, &kernel, "root=X")
            .expect_err("no bcm2712 tree");
        assert!(err.to_string().contains("bcm2712-rpi-5-b.dtb"), "{err}");
    }
}
