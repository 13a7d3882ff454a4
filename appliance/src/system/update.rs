//! System updates: a signed bundle from the System page, the API or
//! `ddaemon update apply` goes into the root slot not running, which boots
//! once on trial (see `ddaemon_recovery::slots` for the boot loader's side)
//! and is kept only if this supervisor answers on it.
//!
//! Only a supervisor started as the device's own service (with
//! `--power-control`) on a device that records its boot slot offers
//! updates; anywhere else the status says why not.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ddaemon_recovery::bundle::{BundleError, PublicKey, TRUSTED_KEYS_DIR};
use ddaemon_recovery::install::{Target, install};
use ddaemon_recovery::slots::{BootControl, Slot, SlotError, SlotState, SystemdBoot, switch_to};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where ddaemon-init records the slot that booted.
const BOOT_SLOT: &str = "/run/ddaemon/boot-slot";
/// The board id the image builder wrote.
const BOARD_FILE: &str = "/usr/share/ddaemon/board";

/// Why an update did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("updates are not available here: {0}")]
    Unavailable(String),
    #[error("an update is already being installed; wait for it to finish")]
    Busy,
    #[error(
        "the running system is still on trial: wait until it is confirmed (a minute after it starts) before installing or switching"
    )]
    OnTrial,
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Slot(#[from] SlotError),
}

/// One slot on the System page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct SlotView {
    /// `a` or `b`.
    pub slot: String,
    /// The system version installed in it, if any.
    pub version: Option<String>,
    /// `empty`, `good`, `trying` or `failed`.
    #[schema(value_type = String, example = "good")]
    pub state: SlotState,
    pub running: bool,
    /// The boot loader starts this one next.
    pub next_boot: bool,
}

/// Where an installation stands.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    #[default]
    Idle,
    Installing,
    /// Written; the device restarts into it.
    Installed,
    Failed,
}

/// An installation's progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct UpdateJob {
    pub state: JobState,
    pub version: Option<String>,
    pub written_bytes: u64,
    pub total_bytes: u64,
    pub error: Option<String>,
}

/// `GET /api/v1/system/update`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpdateStatus {
    pub available: bool,
    /// Why not, when not.
    pub unavailable_reason: Option<String>,
    /// The version of the system running now.
    pub running_version: String,
    pub slots: Vec<SlotView>,
    /// A version that was tried and did not start properly: the device
    /// went back to the running one by itself.
    pub rolled_back: Option<String>,
    /// The slot "switch back" would boot, if it holds a confirmed system.
    pub switch_back_to: Option<String>,
    pub job: UpdateJob,
}

/// The device's slots, when it has them.
#[derive(Debug)]
struct Device {
    control: Box<dyn BootControl>,
    running: Slot,
    board: String,
    keys: Vec<PublicKey>,
}

/// Updates on this device.
#[derive(Debug, Clone)]
pub struct Updates {
    device: Result<Arc<Device>, String>,
    job: Arc<Mutex<UpdateJob>>,
    running_version: String,
}

impl Updates {
    /// Finds the boot partition, the running slot, the board and the
    /// trusted keys; `allowed` is `--power-control`.
    pub fn detect(allowed: bool) -> Self {
        let device = if allowed {
            detect_device().map(Arc::new)
        } else {
            Err(
                "this supervisor does not control the machine it runs on (no --power-control)"
                    .into(),
            )
        };
        if let Err(why) = &device {
            tracing::info!(%why, "system updates are off");
        }
        Self {
            device,
            job: Arc::new(Mutex::new(UpdateJob::default())),
            running_version: system_version(Path::new("/usr/lib/os-release"))
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
        }
    }

    /// The version of the running system (the image's, or ddaemon's own
    /// off the device).
    pub fn running_version(&self) -> &str {
        &self.running_version
    }

    pub fn available(&self) -> bool {
        self.device.is_ok()
    }

    /// Why updates cannot be installed here, as [`Updates::install`] would say.
    pub fn check_available(&self) -> Result<(), UpdateError> {
        self.device().map(|_| ())
    }

    fn device(&self) -> Result<&Device, UpdateError> {
        self.device
            .as_deref()
            .map_err(|why| UpdateError::Unavailable(why.clone()))
    }

    fn job(&self) -> UpdateJob {
        self.job.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_job(&self, change: impl FnOnce(&mut UpdateJob)) {
        change(&mut self.job.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn status(&self) -> UpdateStatus {
        let mut status = UpdateStatus {
            available: self.device.is_ok(),
            unavailable_reason: self.device.as_ref().err().cloned(),
            running_version: self.running_version.clone(),
            slots: Vec::new(),
            rolled_back: None,
            switch_back_to: None,
            job: self.job(),
        };
        let Ok(device) = &self.device else {
            return status;
        };
        match device.control.status(device.running) {
            Ok(slots) => {
                for s in &slots {
                    if s.slot != device.running {
                        if s.state == SlotState::Failed {
                            status.rolled_back = s.version.clone();
                        }
                        if s.state == SlotState::Good && s.version.is_some() {
                            status.switch_back_to = Some(s.slot.letter().into());
                        }
                    }
                    status.slots.push(SlotView {
                        slot: s.slot.letter().into(),
                        version: s.version.clone(),
                        state: s.state,
                        running: s.slot == device.running,
                        next_boot: s.next_boot,
                    });
                }
            }
            Err(err) => status.unavailable_reason = Some(err.to_string()),
        }
        status
    }

    /// Installs a bundle read from `reader` (blocking: call it from a
    /// blocking thread). The device is not restarted here.
    pub fn install(
        &self,
        reader: impl std::io::Read,
        length: Option<u64>,
    ) -> Result<String, UpdateError> {
        let device = self.device()?;
        {
            let mut job = self.job.lock().unwrap_or_else(|p| p.into_inner());
            if job.state == JobState::Installing {
                return Err(UpdateError::Busy);
            }
            // Overwriting the other slot while this one is unconfirmed
            // would leave no confirmed system to come back to.
            running_is_confirmed(device)?;
            *job = UpdateJob {
                state: JobState::Installing,
                ..UpdateJob::default()
            };
        }
        let slot = device.running.other();
        let target = Target {
            control: device.control.as_ref(),
            slot,
            partition: slot_partition(slot),
            board: &device.board,
            keys: &device.keys,
        };
        tracing::warn!(%slot, "installing a system update into slot {slot}");
        let mut last_logged = 0u64;
        let result = install(reader, length, &target, &mut |written, total| {
            self.set_job(|j| {
                j.written_bytes = written;
                j.total_bytes = total;
            });
            if written - last_logged >= 64 << 20 {
                last_logged = written;
                tracing::info!(written, total, "writing the update");
            }
        });
        match result {
            Ok(manifest) => {
                tracing::warn!(version = %manifest.version, %slot, "update installed; slot {slot} boots next, once");
                self.set_job(|j| {
                    j.state = JobState::Installed;
                    j.version = Some(manifest.version.clone());
                });
                Ok(manifest.version)
            }
            Err(err) => {
                tracing::error!(%err, "the update was not installed");
                self.set_job(|j| {
                    j.state = JobState::Failed;
                    j.error = Some(err.to_string());
                });
                Err(err.into())
            }
        }
    }

    /// Makes the other slot, which must hold a confirmed system, boot next
    /// (once, on trial like an update). The device is not restarted here.
    pub fn switch_back(&self) -> Result<String, UpdateError> {
        let device = self.device()?;
        // The job lock keeps an installation from starting meanwhile.
        let job = self.job.lock().unwrap_or_else(|p| p.into_inner());
        if job.state == JobState::Installing {
            return Err(UpdateError::Busy);
        }
        running_is_confirmed(device)?;
        let slot = switch_to(device.control.as_ref(), device.running)?;
        drop(job);
        tracing::warn!(%slot, "switching back to slot {slot} at the next boot");
        Ok(slot.letter().into())
    }
}

fn running_is_confirmed(device: &Device) -> Result<(), UpdateError> {
    let status = device.control.status(device.running)?;
    if status
        .iter()
        .any(|s| s.slot == device.running && s.state == SlotState::Good)
    {
        Ok(())
    } else {
        Err(UpdateError::OnTrial)
    }
}

/// IMAGE_VERSION from an os-release file.
fn system_version(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.strip_prefix("IMAGE_VERSION=")
            .map(|v| v.trim_matches('"').to_owned())
    })
}

fn detect_device() -> Result<Device, String> {
    let running = std::fs::read_to_string(BOOT_SLOT)
        .ok()
        .and_then(|s| Slot::parse(&s))
        .ok_or_else(|| format!("{BOOT_SLOT} does not say which root slot booted"))?;
    let board = board_id()?;
    let keys = PublicKey::load_dir(Path::new(TRUSTED_KEYS_DIR)).map_err(|e| e.to_string())?;
    if keys.is_empty() {
        return Err(format!("no trusted update key in {TRUSTED_KEYS_DIR}"));
    }
    let mounts = crate::storage::block_devices::mounts();
    let mounted = |point: &str| mounts.iter().any(|m| m.point == point);
    let control: Box<dyn BootControl> = if mounted("/efi") {
        Box::new(SystemdBoot {
            esp: PathBuf::from("/efi"),
        })
    } else if mounted("/boot/firmware") {
        // PiTryboot writes the files, but the restart with the tryboot
        // flag and the confirmation after it are not done: no Pi to prove
        // them on. Better no updates than ones that never take.
        return Err(
            "updates on the Raspberry Pi (the firmware's tryboot) are not finished yet".into(),
        );
    } else {
        return Err("the boot partition is not mounted (/efi or /boot/firmware)".into());
    };
    Ok(Device {
        control,
        running,
        board,
        keys,
    })
}

/// The board this image was built for (`/usr/share/ddaemon/board`).
pub fn board_id() -> Result<String, String> {
    std::fs::read_to_string(BOARD_FILE)
        .map(|b| b.trim().to_owned())
        .map_err(|e| format!("{BOARD_FILE}: {e}"))
}

/// The block device of a slot: the partition beside the running root on
/// the same disk (A is partition 2, B partition 3), so a second ddaemon
/// disk plugged in can never be written by mistake; by GPT name only if
/// the root's disk cannot be read.
fn slot_partition(slot: Slot) -> PathBuf {
    let number = if slot == Slot::A { 2 } else { 3 };
    root_disk_partition(Path::new("/sys/class/block"), number)
        .unwrap_or_else(|| Path::new("/dev/disk/by-partlabel").join(slot.partition_label()))
}

/// Partition `number` of the disk holding the root filesystem.
fn root_disk_partition(sys_block: &Path, number: u32) -> Option<PathBuf> {
    let root = crate::storage::block_devices::mounts()
        .into_iter()
        .find(|m| m.point == "/")?;
    sibling_partition(sys_block, &root.device, number)
}

/// In sysfs, the partition `number` on the disk of the device `major:minor`.
fn sibling_partition(sys_block: &Path, device: &str, number: u32) -> Option<PathBuf> {
    let root = std::fs::read_dir(sys_block).ok()?.flatten().find(|e| {
        std::fs::read_to_string(e.path().join("dev")).is_ok_and(|d| d.trim() == device)
    })?;
    // /sys/class/block/vda2 links into …/block/vda/vda2: its parent is the disk.
    let disk = std::fs::canonicalize(root.path())
        .ok()?
        .parent()?
        .to_owned();
    std::fs::read_dir(&disk).ok()?.flatten().find_map(|e| {
        let n: u32 = std::fs::read_to_string(e.path().join("partition"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (n == number).then(|| Path::new("/dev").join(e.file_name()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_os_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("os-release");
        std::fs::write(
            &path,
            "NAME=\"Debian\"\nIMAGE_ID=ddaemon\nIMAGE_VERSION=1.4.2\n",
        )
        .expect("write");
        assert_eq!(system_version(&path).as_deref(), Some("1.4.2"));
        std::fs::write(&path, "NAME=\"Debian\"\n").expect("write");
        assert_eq!(system_version(&path), None);
    }

    #[test]
    fn nothing_is_installed_or_switched_while_the_running_system_is_on_trial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries = dir.path().join("loader/entries");
        std::fs::create_dir_all(&entries).expect("mkdir");
        let options = "root=PARTLABEL=root-a ro";
        std::fs::write(
            entries.join("ddaemon-a.conf"),
            ddaemon_recovery::slots::entry_text(Slot::A, "1.0", 1, options),
        )
        .expect("a");
        // B booted once on trial and is not confirmed yet.
        std::fs::write(
            entries.join("ddaemon-b+0-1.conf"),
            ddaemon_recovery::slots::entry_text(Slot::B, "2.0", 2, options),
        )
        .expect("b");
        let updates = Updates {
            device: Ok(Arc::new(Device {
                control: Box::new(SystemdBoot {
                    esp: dir.path().to_owned(),
                }),
                running: Slot::B,
                board: "x86_64-efi".into(),
                keys: Vec::new(),
            })),
            job: Arc::new(Mutex::new(UpdateJob::default())),
            running_version: "2.0".into(),
        };
        assert!(matches!(
            updates.install(&b""[..], None),
            Err(UpdateError::OnTrial)
        ));
        assert!(matches!(updates.switch_back(), Err(UpdateError::OnTrial)));
        assert!(
            entries.join("ddaemon-a.conf").exists(),
            "the confirmed system's entry is untouched"
        );
    }

    #[test]
    fn the_other_slot_is_found_beside_the_root_on_its_disk() {
        // sysfs as the kernel lays it out: class links into the disk's folder.
        let dir = tempfile::tempdir().expect("tempdir");
        let devices = dir.path().join("devices/vda");
        let class = dir.path().join("class");
        std::fs::create_dir_all(&class).expect("mkdir");
        for (name, dev, partition) in [("vda2", "254:2", 2), ("vda3", "254:3", 3)] {
            std::fs::create_dir_all(devices.join(name)).expect("mkdir");
            std::fs::write(devices.join(name).join("dev"), format!("{dev}\n")).expect("dev");
            std::fs::write(
                devices.join(name).join("partition"),
                format!("{partition}\n"),
            )
            .expect("partition");
            std::os::unix::fs::symlink(devices.join(name), class.join(name)).expect("link");
        }
        // Another disk with the same partition numbers.
        std::fs::create_dir_all(dir.path().join("devices/sdb/sdb3")).expect("mkdir");
        std::fs::write(dir.path().join("devices/sdb/sdb3/partition"), "3\n").expect("p");
        assert_eq!(
            sibling_partition(&class, "254:2", 3),
            Some(PathBuf::from("/dev/vda3"))
        );
        assert_eq!(sibling_partition(&class, "8:19", 3), None);
    }

    #[test]
    fn off_the_device_updates_say_why_not() {
        let updates = Updates::detect(false);
        let status = updates.status();
        assert!(!status.available);
        assert!(
            status
                .unavailable_reason
                .as_deref()
                .is_some_and(|r| r.contains("--power-control")),
            "{status:?}"
        );
        let err = updates.install(&b""[..], None).expect_err("unavailable");
        assert!(matches!(err, UpdateError::Unavailable(_)));
    }
}
