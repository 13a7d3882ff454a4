//! Unpacking one image layer (a tar stream, gzip- or zstd-compressed or
//! plain) into its own directory, in the form overlayfs stacks.
//!
//! A layer is hostile input: it comes from any registry or any file an owner
//! side-loads. Nothing here ever writes outside the layer directory:
//!
//! - entry paths must be relative and may not contain `..`; anything else
//!   refuses the whole layer;
//! - every parent directory is opened component by component with
//!   `O_NOFOLLOW` from a descriptor of the layer directory, so a symlink in
//!   the layer (pointing anywhere) is never followed while writing;
//! - every file, link and directory is created relative to its parent's
//!   descriptor, hard-link targets are resolved the same way;
//! - device nodes are skipped, and extended attributes that would steer
//!   overlayfs (`trusted.overlay.*`) are not taken from the archive.
//!
//! OCI whiteouts become what overlayfs understands: `.wh.NAME` a 0/0
//! character device `NAME`, `.wh..wh..opq` the `trusted.overlay.opaque`
//! attribute on its directory. The caller unpacks into a fresh directory and
//! discards it on error, so a refused layer leaves nothing behind.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

/// The attribute that marks an overlayfs directory opaque.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The OCI name of an opaque-directory marker.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// The OCI prefix of a whiteout.
const WHITEOUT_PREFIX: &[u8] = b".wh.";

/// How to unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Give files the owners the archive names (needs root); otherwise they
    /// belong to whoever unpacks.
    pub set_owners: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            set_owners: rustix::process::geteuid().is_root(),
        }
    }
}

/// What unpacking did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// `sha256:` of the uncompressed tar stream: the layer's DiffID, which
    /// the image config lists and the caller must check.
    pub diff_id: String,
    /// Entries written (files, directories, links, whiteouts).
    pub entries: u64,
    /// Entries skipped: device nodes and types a layer should not hold.
    pub skipped: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Why a layer was not unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The archive tries something a layer must not do.
    #[error("layer entry {entry:?}: {reason}; the layer is refused")]
    Hostile { entry: String, reason: &'static str },
    /// Writing an entry failed.
    #[error("layer entry {entry:?}: {source}")]
    Write { entry: String, source: io::Error },
    /// The archive itself could not be read (truncated, corrupt, bad compression).
    #[error("cannot read the layer archive: {0}")]
    Archive(io::Error),
    /// The destination directory could not be opened.
    #[error("cannot open the layer directory {path}: {source}")]
    Destination { path: PathBuf, source: io::Error },
}

/// The compression of a layer, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// Detects the compression from the stream's magic number.
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// Unpacks the layer read from `reader` into the existing, empty directory `dest`.
pub fn unpack_layer(
    reader: impl Read,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let root = rustix::fs::open(
        dest,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Destination {
        path: dest.to_owned(),
        source: e.into(),
    })?;
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf().map_err(UnpackError::Archive)?;
    let decompressed: Box<dyn Read> = match Compression::detect(head) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered).map_err(UnpackError::Archive)?,
        ),
        Compression::None => Box::new(buffered),
    };
    let mut archive = tar::Archive::new(HashingReader::new(decompressed));
    let mut report = UnpackReport::default();
    let mut directories: Vec<(Vec<Vec<u8>>, u64)> = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Archive)? {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        unpack_entry(&root, &mut entry, options, &mut report, &mut directories)?;
    }
    // The DiffID covers the whole stream, including the end-of-archive blocks.
    let mut hashing = archive.into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Archive)?;
    report.diff_id = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));

    // Directory times last: writing their children changed them.
    for (components, mtime) in directories.iter().rev() {
        let parts: Vec<&[u8]> = components.iter().map(Vec::as_slice).collect();
        if let Ok(dir) = open_dir(&root, &parts, false) {
            let _ = rustix::fs::futimens(&dir, &timestamps(*mtime));
        }
    }
    Ok(report)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Splits an archive path into its components, refusing escapes.
pub fn safe_components(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.starts_with(b"/") {
        return Err("absolute paths are not allowed in a layer");
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("the path climbs out of the layer with '..'"),
            _ if part.contains(&0) => return Err("the path contains a NUL byte"),
            _ => out.push(part),
        }
    }
    Ok(out)
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Opens the directory at `components` below `root` without following any
/// symlink, creating missing ones when `create` is set.
fn open_dir(root: &OwnedFd, components: &[&[u8]], create: bool) -> io::Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut current = rustix::fs::openat(root, ".", flags, Mode::empty())?;
    for part in components {
        let next = match rustix::fs::openat(&current, os(part), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&current, os(part), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                rustix::fs::openat(&current, os(part), flags, Mode::empty())?
            }
            Err(e) => return Err(e.into()),
        };
        current = next;
    }
    Ok(current)
}

/// Opens an entry's parent directory, creating it if missing; a symlink or
/// file where a directory should be is refused rather than followed.
fn parent_dir(root: &OwnedFd, parents: &[&[u8]], name: &str) -> Result<OwnedFd, UnpackError> {
    open_dir(root, parents, true).map_err(|err| match Errno::from_io_error(&err) {
        Some(Errno::LOOP) | Some(Errno::NOTDIR) => UnpackError::Hostile {
            entry: name.to_owned(),
            reason: "a parent in the path is a symlink or a file, not a directory",
        },
        _ => UnpackError::Write {
            entry: name.to_owned(),
            source: err,
        },
    })
}

/// Removes whatever is at `name` in `parent` (an empty directory included),
/// so that a later entry replaces an earlier one as tar does.
fn remove_existing(parent: &OwnedFd, name: &[u8]) -> io::Result<()> {
    match rustix::fs::statat(parent, os(name), AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            rustix::fs::unlinkat(parent, os(name), AtFlags::REMOVEDIR).map_err(io::Error::from)
        }
        Ok(_) => rustix::fs::unlinkat(parent, os(name), AtFlags::empty()).map_err(io::Error::from),
    }
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Owner, mode and extended attributes of one entry, read before its data.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Self, UnpackError> {
        let header = entry.header();
        let hostile = |reason| UnpackError::Hostile {
            entry: name.to_owned(),
            reason,
        };
        let archive_err = |e: io::Error| UnpackError::Archive(e);
        let uid = u32::try_from(header.uid().map_err(archive_err)?)
            .map_err(|_| hostile("the owner id is out of range"))?;
        let gid = u32::try_from(header.gid().map_err(archive_err)?)
            .map_err(|_| hostile("the group id is out of range"))?;
        let mode = header.mode().map_err(archive_err)? & 0o7777;
        let mtime = header.mtime().map_err(archive_err)?;
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(archive_err)? {
            for extension in extensions {
                let extension = extension.map_err(archive_err)?;
                let Ok(key) = extension.key() else { continue };
                if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                    // Overlay attributes from an archive could hide or
                    // redirect files of lower layers.
                    if attr.starts_with("trusted.overlay.") {
                        tracing::warn!(
                            entry = name,
                            attr,
                            "ignoring an overlay attribute in a layer"
                        );
                        continue;
                    }
                    xattrs.push((attr.to_owned(), extension.value_bytes().to_vec()));
                }
            }
        }
        Ok(Self {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        })
    }

    /// Applies owner, then mode (a chown clears set-uid bits), then attributes.
    fn apply(
        &self,
        fd: impl AsFd,
        options: &UnpackOptions,
        set_times: bool,
        name: &str,
    ) -> Result<(), UnpackError> {
        let write = |source: io::Error| UnpackError::Write {
            entry: name.to_owned(),
            source,
        };
        if options.set_owners {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(self.uid)),
                Some(rustix::fs::Gid::from_raw(self.gid)),
            )
            .map_err(|e| write(e.into()))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(self.mode)).map_err(|e| write(e.into()))?;
        for (attr, value) in &self.xattrs {
            if let Err(err) = rustix::fs::fsetxattr(&fd, attr.as_str(), value, XattrFlags::empty())
            {
                // A filesystem without that namespace (security.selinux on a
                // non-SELinux host) must not stop the pull.
                tracing::warn!(entry = name, attr = attr.as_str(), %err, "extended attribute not kept");
            }
        }
        if set_times {
            rustix::fs::futimens(&fd, &timestamps(self.mtime)).map_err(|e| write(e.into()))?;
        }
        Ok(())
    }
}

fn unpack_entry<R: Read>(
    root: &OwnedFd,
    entry: &mut tar::Entry<'_, R>,
    options: &UnpackOptions,
    report: &mut UnpackReport,
    directories: &mut Vec<(Vec<Vec<u8>>, u64)>,
) -> Result<(), UnpackError> {
    let raw_path = entry.path_bytes().into_owned();
    let name = String::from_utf8_lossy(&raw_path).into_owned();
    let hostile = |reason| UnpackError::Hostile {
        entry: name.clone(),
        reason,
    };
    let write = |source: io::Error| UnpackError::Write {
        entry: name.clone(),
        source,
    };
    let components = safe_components(&raw_path).map_err(hostile)?;
    let Some((file_name, parents)) = components.split_last() else {
        return Ok(()); // the layer root itself
    };
    let kind = entry.header().entry_type();

    if file_name.starts_with(WHITEOUT_PREFIX) {
        let parent = parent_dir(root, parents, &name)?;
        if *file_name == OPAQUE_MARKER {
            rustix::fs::fsetxattr(&parent, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| write(e.into()))?;
        } else {
            let hidden = &file_name[WHITEOUT_PREFIX.len()..];
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(hostile("a whiteout names no file"));
            }
            remove_existing(&parent, hidden).map_err(&write)?;
            rustix::fs::mknodat(
                &parent,
                os(hidden),
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|e| write(e.into()))?;
        }
        report.entries += 1;
        return Ok(());
    }

    match kind {
        tar::EntryType::Directory => {
            let meta = Meta::read(entry, &name)?;
            let parent = parent_dir(root, parents, &name)?;
            match rustix::fs::statat(&parent, os(file_name), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                Ok(_) => {
                    remove_existing(&parent, file_name).map_err(&write)?;
                    rustix::fs::mkdirat(&parent, os(file_name), Mode::from_raw_mode(0o700))
                        .map_err(|e| write(e.into()))?;
                }
                Err(Errno::NOENT) => {
                    rustix::fs::mkdirat(&parent, os(file_name), Mode::from_raw_mode(0o700))
                        .map_err(|e| write(e.into()))?
                }
                Err(e) => return Err(write(e.into())),
            }
            let dir = open_dir(&parent, &[file_name], false).map_err(&write)?;
            meta.apply(&dir, options, false, &name)?;
            directories.push((components.iter().map(|c| c.to_vec()).collect(), meta.mtime));
        }
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            let meta = Meta::read(entry, &name)?;
            let parent = parent_dir(root, parents, &name)?;
            remove_existing(&parent, file_name).map_err(&write)?;
            let fd = rustix::fs::openat(
                &parent,
                os(file_name),
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| write(e.into()))?;
            let mut file = File::from(fd);
            report.bytes += io::copy(entry, &mut file).map_err(UnpackError::Archive)?;
            meta.apply(&file, options, true, &name)?;
        }
        tar::EntryType::Symlink => {
            let meta = Meta::read(entry, &name)?;
            // The target is stored as given and never followed here.
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| hostile("a symlink without a target"))?
                .into_owned();
            let parent = parent_dir(root, parents, &name)?;
            remove_existing(&parent, file_name).map_err(&write)?;
            rustix::fs::symlinkat(os(&target), &parent, os(file_name))
                .map_err(|e| write(e.into()))?;
            if options.set_owners {
                rustix::fs::chownat(
                    &parent,
                    os(file_name),
                    Some(rustix::fs::Uid::from_raw(meta.uid)),
                    Some(rustix::fs::Gid::from_raw(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| write(e.into()))?;
            }
            rustix::fs::utimensat(
                &parent,
                os(file_name),
                &timestamps(meta.mtime),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| write(e.into()))?;
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| hostile("a hard link without a target"))?
                .into_owned();
            let target_components = safe_components(&target).map_err(hostile)?;
            let Some((target_name, target_parents)) = target_components.split_last() else {
                return Err(hostile("a hard link to the layer root"));
            };
            if target_components == components {
                return Err(hostile("a hard link to itself"));
            }
            let target_parent = open_dir(root, target_parents, false).map_err(|_| {
                hostile("a hard link whose target is not an earlier file of this layer")
            })?;
            let parent = parent_dir(root, parents, &name)?;
            remove_existing(&parent, file_name).map_err(&write)?;
            rustix::fs::linkat(
                &target_parent,
                os(target_name),
                &parent,
                os(file_name),
                AtFlags::empty(),
            )
            .map_err(|_| {
                hostile("a hard link whose target is not an earlier file of this layer")
            })?;
        }
        tar::EntryType::Fifo => {
            let meta = Meta::read(entry, &name)?;
            let parent = parent_dir(root, parents, &name)?;
            remove_existing(&parent, file_name).map_err(&write)?;
            rustix::fs::mknodat(
                &parent,
                os(file_name),
                FileType::Fifo,
                Mode::from_raw_mode(0o600),
                0,
            )
            .map_err(|e| write(e.into()))?;
            let fd = rustix::fs::openat(
                &parent,
                os(file_name),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| write(e.into()))?;
            // fchmod and fchown do not work on O_PATH descriptors; the
            // /proc/self/fd path of the descriptor names exactly this node.
            let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            rustix::fs::chmod(path.as_str(), Mode::from_raw_mode(meta.mode))
                .map_err(|e| write(e.into()))?;
            if options.set_owners {
                rustix::fs::chown(
                    path.as_str(),
                    Some(rustix::fs::Uid::from_raw(meta.uid)),
                    Some(rustix::fs::Gid::from_raw(meta.gid)),
                )
                .map_err(|e| write(e.into()))?;
            }
        }
        tar::EntryType::Char | tar::EntryType::Block => {
            tracing::debug!(entry = %name, "skipping a device node");
            report.skipped += 1;
            return Ok(());
        }
        other => {
            tracing::debug!(entry = %name, kind = ?other, "skipping an entry of an unexpected kind");
            report.skipped += 1;
            return Ok(());
        }
    }
    report.entries += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    /// Appends one raw entry, with the name bytes exactly as given (the tar
    /// crate's builder refuses hostile names, which is what we need to write).
    fn raw_entry(
        out: &mut Vec<u8>,
        path: &[u8],
        kind: tar::EntryType,
        link: &[u8],
        data: &[u8],
        mode: u32,
    ) {
        let mut header = tar::Header::new_ustar();
        header.as_ustar_mut().expect("ustar").name[..path.len()].copy_from_slice(path);
        header.as_ustar_mut().expect("ustar").linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(1000);
        header.set_gid(1000);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn finish(mut out: Vec<u8>) -> Vec<u8> {
        out.resize(out.len() + 1024, 0);
        out
    }

    struct Sandbox {
        _dir: tempfile::TempDir,
        layer: PathBuf,
        outside: PathBuf,
    }

    fn sandbox() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = dir.path().join("layer");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&layer).expect("layer dir");
        std::fs::create_dir(&outside).expect("outside dir");
        std::fs::write(outside.join("canary"), b"untouched").expect("canary");
        Sandbox {
            _dir: dir,
            layer,
            outside,
        }
    }

    impl Sandbox {
        fn assert_outside_untouched(&self) {
            let names: Vec<_> = std::fs::read_dir(&self.outside)
                .expect("read outside")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(names, ["canary"], "something was written outside the layer");
            assert_eq!(
                std::fs::read(self.outside.join("canary")).expect("canary"),
                b"untouched"
            );
            let top: Vec<_> = std::fs::read_dir(self.layer.parent().expect("parent"))
                .expect("read top")
                .map(|e| {
                    e.expect("entry")
                        .file_name()
                        .into_string()
                        .unwrap_or_default()
                })
                .collect();
            assert_eq!(top.len(), 2, "only layer/ and outside/ may exist: {top:?}");
        }
    }

    fn unpack(bytes: &[u8], dest: &Path) -> Result<UnpackReport, UnpackError> {
        unpack_layer(bytes, dest, &UnpackOptions::default())
    }

    fn header(kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h
    }

    fn benign_layer() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = header(tar::EntryType::Directory);
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_mtime(1_600_000_000);
        dir.set_size(0);
        builder
            .append_data(&mut dir, "bin/", io::empty())
            .expect("dir");
        let mut file = header(tar::EntryType::Regular);
        file.set_mode(0o4755);
        file.set_uid(1000);
        file.set_gid(1001);
        file.set_mtime(1_500_000_000);
        file.set_size(5);
        builder
            .append_pax_extensions([
                ("SCHILY.xattr.user.origin", b"test".as_slice()),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y".as_slice()),
            ])
            .expect("pax");
        builder
            .append_data(&mut file, "bin/busybox", &b"hello"[..])
            .expect("file");
        let mut link = header(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        builder
            .append_link(&mut link, "bin/sh", "/bin/busybox")
            .expect("symlink");
        let mut hard = header(tar::EntryType::Link);
        hard.set_size(0);
        builder
            .append_link(&mut hard, "bin/ls", "bin/busybox")
            .expect("hardlink");
        let mut dev = header(tar::EntryType::Char);
        dev.set_size(0);
        dev.set_device_major(1).expect("major");
        dev.set_device_minor(3).expect("minor");
        builder
            .append_data(&mut dev, "dev/null", io::empty())
            .expect("dev");
        builder.into_inner().expect("tar")
    }

    #[test]
    fn unpacks_files_links_modes_owners_and_xattrs() {
        let sb = sandbox();
        let layer = benign_layer();
        let report = unpack(&layer, &sb.layer).expect("unpack");
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
        assert_eq!(report.diff_id, expected);
        assert_eq!(report.skipped, 1, "the device node is skipped");
        assert!(!sb.layer.join("dev/null").exists());

        let busybox = sb.layer.join("bin/busybox");
        assert_eq!(std::fs::read(&busybox).expect("read"), b"hello");
        let meta = std::fs::metadata(&busybox).expect("meta");
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o4755,
            "set-uid survives the chown"
        );
        assert_eq!(meta.mtime(), 1_500_000_000);
        if rustix::process::geteuid().is_root() {
            assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
        }
        let attr =
            rustix::fs::getxattr(&busybox, "user.origin", &mut [0u8; 16]).expect("user xattr kept");
        assert_eq!(attr, 4);
        assert!(
            rustix::fs::getxattr(&busybox, "trusted.overlay.opaque", &mut [0u8; 4]).is_err(),
            "overlay attributes from the archive are dropped"
        );
        assert_eq!(
            std::fs::read_link(sb.layer.join("bin/sh")).expect("link"),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            std::fs::metadata(sb.layer.join("bin/ls"))
                .expect("ls")
                .ino(),
            meta.ino()
        );
        assert_eq!(
            std::fs::metadata(sb.layer.join("bin"))
                .expect("bin")
                .mtime(),
            1_600_000_000
        );
        sb.assert_outside_untouched();
    }

    #[test]
    fn gzip_zstd_and_plain_give_the_same_tree_and_diff_id() {
        let plain = benign_layer();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &plain).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let zst = zstd::stream::encode_all(plain.as_slice(), 3).expect("zstd");
        let mut ids = Vec::new();
        for bytes in [&plain, &gz, &zst] {
            let sb = sandbox();
            ids.push(unpack(bytes, &sb.layer).expect("unpack").diff_id);
            assert_eq!(
                std::fs::read(sb.layer.join("bin/busybox")).expect("read"),
                b"hello"
            );
        }
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    }

    #[test]
    fn whiteouts_and_opaque_dirs_become_overlayfs_markers() {
        assert!(
            rustix::process::geteuid().is_root(),
            "whiteout device nodes and trusted.* attributes need root: run the tests as root (scripts/test does)"
        );
        let sb = sandbox();
        let mut tar = Vec::new();
        raw_entry(
            &mut tar,
            b"etc/.wh.motd",
            tar::EntryType::Regular,
            b"",
            b"",
            0o644,
        );
        raw_entry(
            &mut tar,
            b"var/cache/.wh..wh..opq",
            tar::EntryType::Regular,
            b"",
            b"",
            0o644,
        );
        unpack(&finish(tar), &sb.layer).expect("unpack");
        let motd = std::fs::symlink_metadata(sb.layer.join("etc/motd")).expect("whiteout");
        assert!(motd.file_type().is_char_device());
        assert_eq!(motd.rdev(), 0);
        let mut value = [0u8; 4];
        let n = rustix::fs::getxattr(sb.layer.join("var/cache"), OPAQUE_XATTR, &mut value)
            .expect("opaque");
        assert_eq!(&value[..n], b"y");
        assert!(!sb.layer.join("var/cache/.wh..wh..opq").exists());
    }

    #[test]
    fn escapes_are_refused_and_nothing_is_written_outside() {
        let cases: Vec<(&str, Vec<u8>)> = {
            let outside = b"../outside/evil";
            let mut v = Vec::new();
            let mut t = Vec::new();
            raw_entry(
                &mut t,
                b"/etc/evil",
                tar::EntryType::Regular,
                b"",
                b"x",
                0o644,
            );
            v.push(("absolute path", t));
            let mut t = Vec::new();
            raw_entry(&mut t, outside, tar::EntryType::Regular, b"", b"x", 0o644);
            v.push(("dot-dot", t));
            let mut t = Vec::new();
            raw_entry(
                &mut t,
                b"a/b/../../../outside/evil",
                tar::EntryType::Regular,
                b"",
                b"x",
                0o644,
            );
            v.push(("nested dot-dot", t));
            v
        };
        for (what, tar) in cases {
            let sb = sandbox();
            let err = unpack(&finish(tar), &sb.layer).expect_err(what);
            assert!(matches!(err, UnpackError::Hostile { .. }), "{what}: {err}");
            sb.assert_outside_untouched();
        }
    }

    #[test]
    fn symlink_and_hardlink_escapes_are_refused() {
        let sb = sandbox();
        let outside = sb.outside.to_str().expect("utf8").as_bytes().to_vec();
        let canary = [outside.as_slice(), b"/canary"].concat();

        // A symlink to outside, then a file written "through" it.
        let mut tar = Vec::new();
        raw_entry(
            &mut tar,
            b"escape",
            tar::EntryType::Symlink,
            &outside,
            b"",
            0o777,
        );
        raw_entry(
            &mut tar,
            b"escape/evil",
            tar::EntryType::Regular,
            b"",
            b"x",
            0o644,
        );
        let err = unpack(&finish(tar), &sb.layer).expect_err("write through symlink");
        assert!(matches!(err, UnpackError::Hostile { .. }), "{err}");
        sb.assert_outside_untouched();

        // A whiteout through the same symlink.
        let sb = sandbox();
        let mut tar = Vec::new();
        raw_entry(
            &mut tar,
            b"escape",
            tar::EntryType::Symlink,
            &outside,
            b"",
            0o777,
        );
        raw_entry(
            &mut tar,
            b"escape/.wh.canary",
            tar::EntryType::Regular,
            b"",
            b"",
            0o644,
        );
        assert!(unpack(&finish(tar), &sb.layer).is_err());
        sb.assert_outside_untouched();

        // A hard link to a file outside, by .. and through a symlink.
        for target in [
            b"../outside/canary".to_vec(),
            b"escape/canary".to_vec(),
            canary.clone(),
        ] {
            let sb = sandbox();
            let mut tar = Vec::new();
            raw_entry(
                &mut tar,
                b"escape",
                tar::EntryType::Symlink,
                &outside,
                b"",
                0o777,
            );
            raw_entry(
                &mut tar,
                b"stolen",
                tar::EntryType::Link,
                &target,
                b"",
                0o644,
            );
            let err = unpack(&finish(tar), &sb.layer).expect_err("hardlink escape");
            assert!(matches!(err, UnpackError::Hostile { .. }), "{err}");
            assert!(!sb.layer.join("stolen").exists());
            sb.assert_outside_untouched();
        }

        // A symlink to outside replaced by a file: the file lands in the
        // layer, the outside target is untouched.
        let sb = sandbox();
        let mut tar = Vec::new();
        raw_entry(&mut tar, b"x", tar::EntryType::Symlink, &canary, b"", 0o777);
        raw_entry(
            &mut tar,
            b"x",
            tar::EntryType::Regular,
            b"",
            b"overwritten",
            0o644,
        );
        unpack(&finish(tar), &sb.layer).expect("replace symlink");
        assert_eq!(
            std::fs::read(sb.layer.join("x")).expect("x"),
            b"overwritten"
        );
        sb.assert_outside_untouched();
    }

    #[test]
    fn a_truncated_archive_is_an_archive_error() {
        let sb = sandbox();
        let layer = benign_layer();
        let err = unpack(&layer[..700], &sb.layer).expect_err("truncated");
        assert!(matches!(err, UnpackError::Archive(_)), "{err}");
        let gz = {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut gz, &layer).expect("gzip");
            gz.finish().expect("gzip")
        };
        let sb = sandbox();
        assert!(unpack(&gz[..gz.len() / 2], &sb.layer).is_err());
    }

    #[test]
    fn safe_components_normalises_and_refuses() {
        assert_eq!(
            safe_components(b"./a//b/./c").expect("ok"),
            [b"a".as_slice(), b"b", b"c"]
        );
        assert!(safe_components(b"/a").is_err());
        assert!(safe_components(b"a/../b").is_err());
        assert!(safe_components(b"").expect("root").is_empty());
    }
}
