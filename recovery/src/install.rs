//! Installing a verified bundle into the slot not running.
//!
//! The order keeps the old system bootable whatever happens: the slot's
//! boot entry is removed first (so the boot loader never starts a
//! half-written slot), the root filesystem is streamed onto its partition
//! and read back against its signed hash, the kernel and initrd land
//! beside it under temporary names and are renamed when whole, and only
//! then is the slot marked to be tried once. A power cut at any point
//! leaves the running slot as the one that boots.

use std::fs::File;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use crate::bundle::{self, BundleError, Manifest, PayloadKind, PayloadSink, PublicKey};
use crate::slots::{BootControl, Slot, SlotError};

/// Where an update goes.
#[derive(Debug)]
pub struct Target<'a> {
    pub control: &'a dyn BootControl,
    /// The slot not running.
    pub slot: Slot,
    /// Its partition (a block device; a file in tests).
    pub partition: PathBuf,
    /// The board this device is.
    pub board: &'a str,
    pub keys: &'a [PublicKey],
}

/// Streams a bundle into the target slot, reads the slot back, and marks
/// it to be tried once.
/// `progress` hears the payload bytes written so far and the total.
pub fn install(
    reader: impl std::io::Read,
    length: Option<u64>,
    target: &Target<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Manifest, BundleError> {
    let mut sink = SlotSink {
        target,
        root: None,
        boot_file: None,
        written: 0,
        total: 0,
        progress,
    };
    let manifest = bundle::read_bundle(reader, length, target.keys, target.board, &mut sink)?;
    verify_slot(&target.partition, &manifest)?;
    target
        .control
        .try_once(target.slot, &manifest.version)
        .map_err(slot_error)?;
    Ok(manifest)
}

fn slot_error(e: SlotError) -> BundleError {
    BundleError::Target(std::io::Error::other(e.to_string()))
}

struct SlotSink<'a, 'p> {
    target: &'a Target<'a>,
    root: Option<File>,
    /// The kernel or initrd being written: its temporary file and final path.
    boot_file: Option<(tempfile::NamedTempFile, PathBuf)>,
    written: u64,
    total: u64,
    progress: &'p mut dyn FnMut(u64, u64),
}

/// The size of a block device or file.
fn size_of(file: &mut File) -> std::io::Result<u64> {
    let size = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    Ok(size)
}

impl PayloadSink for SlotSink<'_, '_> {
    fn accept(&mut self, manifest: &Manifest) -> std::io::Result<()> {
        let root = manifest.payload(PayloadKind::Root).map_or(0, |p| p.size);
        let path = &self.target.partition;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let room = size_of(&mut file)?;
        if root > room {
            return Err(std::io::Error::other(format!(
                "the update's root filesystem ({} MiB) does not fit slot {} ({} MiB): this bundle needs a fresh image",
                root >> 20,
                self.target.slot,
                room >> 20
            )));
        }
        self.target
            .control
            .forget(self.target.slot)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.total = manifest.payloads.iter().map(|p| p.size).sum();
        self.root = Some(file);
        Ok(())
    }

    fn write(&mut self, kind: PayloadKind, chunk: &[u8]) -> std::io::Result<()> {
        match kind {
            PayloadKind::Root => match &mut self.root {
                Some(file) => file.write_all(chunk)?,
                None => return Err(std::io::Error::other("the slot is not open")),
            },
            PayloadKind::Kernel | PayloadKind::Initrd => {
                if self.boot_file.is_none() {
                    let path = self
                        .target
                        .control
                        .boot_file(self.target.slot, kind.file_name())
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    let dir = path.parent().unwrap_or(Path::new("/"));
                    self.boot_file = Some((tempfile::NamedTempFile::new_in(dir)?, path));
                }
                if let Some((tmp, _)) = &mut self.boot_file {
                    tmp.write_all(chunk)?;
                }
            }
        }
        self.written += chunk.len() as u64;
        (self.progress)(self.written, self.total);
        Ok(())
    }

    fn finish(&mut self, kind: PayloadKind) -> std::io::Result<()> {
        match kind {
            PayloadKind::Root => {
                let Some(file) = self.root.take() else {
                    return Err(std::io::Error::other("the slot is not open"));
                };
                file.sync_all()?;
                Ok(())
            }
            PayloadKind::Kernel | PayloadKind::Initrd => {
                let Some((tmp, path)) = self.boot_file.take() else {
                    // An empty payload never opened a file.
                    return Ok(());
                };
                tmp.as_file().sync_all()?;
                tmp.persist(&path).map_err(|e| e.error)?;
                // The rename itself must be on disk before the entry that
                // names the file is.
                match path.parent() {
                    Some(dir) => File::open(dir)?.sync_all(),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Reads the slot back and compares it with the manifest: what the
/// storage kept, not what was sent to it.
pub fn verify_slot(partition: &Path, manifest: &Manifest) -> Result<(), BundleError> {
    let Some(root) = manifest.payload(PayloadKind::Root) else {
        return Ok(());
    };
    let mut file = File::open(partition).map_err(|source| BundleError::File {
        path: partition.to_owned(),
        source,
    })?;
    // Read the storage, not the page cache the write just filled (written
    // and synced pages can be dropped; a failure only weakens the check).
    let _ = nix::fcntl::posix_fadvise(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    let (_, sha256) =
        bundle::digest_reader(&mut file, root.size).map_err(|source| BundleError::File {
            path: partition.to_owned(),
            source,
        })?;
    if sha256 != root.sha256 {
        return Err(BundleError::Target(std::io::Error::other(format!(
            "slot {} does not read back what was written: the storage may be failing",
            partition.display()
        ))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::SigningKey;
    use crate::slots::{SlotState, SystemdBoot, entry_text};

    fn key() -> SigningKey {
        SigningKey::from_pem_file(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/keys/development-only.pem"),
        )
        .expect("key")
    }

    #[test]
    fn a_bundle_lands_in_the_other_slot_and_is_tried_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let esp = dir.path().join("esp");
        std::fs::create_dir_all(esp.join("loader/entries")).expect("mkdir");
        std::fs::write(
            esp.join("loader/entries/ddaemon-a.conf"),
            entry_text(Slot::A, "1.0", 1, "root=PARTLABEL=root-a ro"),
        )
        .expect("entry");
        let control = SystemdBoot { esp: esp.clone() };
        let root: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(dir.path().join("root"), &root).expect("root");
        std::fs::write(dir.path().join("kernel"), b"new kernel").expect("kernel");
        std::fs::write(dir.path().join("initrd"), b"new initrd").expect("initrd");
        let bundle_path = dir.path().join("u.ddaemon-update");
        bundle::write_bundle(
            &bundle_path,
            "x86_64-efi",
            "2.0",
            0,
            &[
                (PayloadKind::Root, &dir.path().join("root")),
                (PayloadKind::Kernel, &dir.path().join("kernel")),
                (PayloadKind::Initrd, &dir.path().join("initrd")),
            ],
            &key(),
        )
        .expect("bundle");
        let keys = [key().public_key()];

        // A slot too small is refused before anything changes.
        let small = dir.path().join("small");
        std::fs::write(&small, vec![0u8; 1000]).expect("small");
        let target = Target {
            control: &control,
            slot: Slot::B,
            partition: small.clone(),
            board: "x86_64-efi",
            keys: &keys,
        };
        let file = File::open(&bundle_path).expect("open");
        let err = install(file, None, &target, &mut |_, _| {}).expect_err("too small");
        assert!(err.to_string().contains("does not fit slot B"), "{err}");
        assert_eq!(std::fs::read(&small).expect("read"), vec![0u8; 1000]);

        let partition = dir.path().join("root-b");
        std::fs::write(&partition, vec![0xeeu8; 2_000_000]).expect("partition");
        let target = Target {
            partition: partition.clone(),
            ..target
        };
        let mut last = (0, 0);
        let file = File::open(&bundle_path).expect("open");
        let manifest =
            install(file, None, &target, &mut |done, total| last = (done, total)).expect("install");
        verify_slot(&partition, &manifest).expect("reads back");
        assert_eq!(last.0, last.1, "progress reaches the total");
        let written = std::fs::read(&partition).expect("read");
        assert_eq!(&written[..root.len()], root.as_slice());
        assert_eq!(
            std::fs::read(esp.join("ddaemon/b/vmlinuz")).expect("kernel"),
            b"new kernel"
        );
        let status = control.status(Slot::A).expect("status");
        assert_eq!(status[1].state, SlotState::Trying);
        assert_eq!(status[1].version.as_deref(), Some("2.0"));
        assert!(status[1].next_boot);

        // Damaged storage: the read-back sees it.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&partition)
            .expect("open");
        f.write_all(b"rot").expect("write");
        assert!(verify_slot(&partition, &manifest).is_err());
    }
}
