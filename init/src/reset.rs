//! Carrying out a factory reset the owner asked for: when
//! `/data/ddaemon/factory-reset` exists, everything on `/data` is deleted
//! except `disks/` (attached disks mount there, and what is on them is
//! never the device's to wipe). Asking for a reset (writing the marker)
//! belongs to the supervisor and the reset button (`ddaemon-recovery`).
//!
//! The deletion never follows a symbolic link (links are removed, not
//! their targets) and never crosses into another mounted filesystem (a
//! directory on a different device is left in place). The marker is
//! deleted last, so a power cut halfway leaves it, and the next boot
//! finishes the job.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::console::log;

/// The folder on `/data` that holds the marker.
const STATE_DIR: &str = "ddaemon";
/// The marker's name inside `ddaemon/`.
const MARKER: &str = "factory-reset";
/// Kept by a reset: attached disks' mount points.
const DISKS: &str = "disks";
/// Kept, but emptied: e2fsck wants it there (mkfs made it).
const LOST_FOUND: &str = "lost+found";

/// Why a reset could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("factory reset: {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ResetError + 'a {
    move |source| ResetError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// What a reset did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wiped {
    /// Files, links and directories deleted.
    pub removed: u64,
    /// Directories left because another filesystem is mounted there.
    pub kept_mounts: Vec<PathBuf>,
}

/// True when a reset was asked for: `DATA/ddaemon/factory-reset` exists
/// and `ddaemon` is a real directory (a link there does not count).
pub fn pending(data: &Path) -> bool {
    let state = data.join(STATE_DIR);
    std::fs::symlink_metadata(&state).is_ok_and(|m| m.is_dir())
        && std::fs::symlink_metadata(state.join(MARKER)).is_ok()
}

/// Deletes everything in `data` but `disks/` (and the empty
/// `lost+found/`), the marker last.
pub fn factory_reset(data: &Path) -> Result<Wiped, ResetError> {
    let device = std::fs::symlink_metadata(data)
        .map_err(io("reading", data))?
        .dev();
    let mut wiped = Wiped::default();
    for entry in entries(data)? {
        let name = entry.file_name();
        if name == DISKS || name == STATE_DIR {
            continue;
        }
        let path = entry.path();
        if name == LOST_FOUND && is_real_dir_on(&path, device) {
            for inner in entries(&path)? {
                remove(&inner.path(), device, &mut wiped)?;
            }
            continue;
        }
        remove(&path, device, &mut wiped)?;
    }
    let state = data.join(STATE_DIR);
    if is_real_dir_on(&state, device) {
        for entry in entries(&state)? {
            if entry.file_name() != MARKER {
                remove(&entry.path(), device, &mut wiped)?;
            }
        }
        let marker = state.join(MARKER);
        if std::fs::symlink_metadata(&marker).is_ok() {
            remove(&marker, device, &mut wiped)?;
        }
    }
    // The emptied folder, or a link in its place (removed, not followed).
    if std::fs::symlink_metadata(&state).is_ok() {
        remove(&state, device, &mut wiped)?;
    }
    Ok(wiped)
}

fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, ResetError> {
    let mut list = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        list.push(entry.map_err(io("listing", dir))?);
    }
    Ok(list)
}

fn is_real_dir_on(path: &Path, device: u64) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.dev() == device)
}

/// Removes `path` and, when it is a directory of this filesystem, what is
/// in it. Returns whether it is gone (a mount point inside stays).
fn remove(path: &Path, device: u64, wiped: &mut Wiped) -> Result<bool, ResetError> {
    // symlink_metadata: a link is looked at, never followed.
    let meta = std::fs::symlink_metadata(path).map_err(io("reading", path))?;
    if !meta.is_dir() {
        std::fs::remove_file(path).map_err(io("deleting", path))?;
        wiped.removed += 1;
        return Ok(true);
    }
    if meta.dev() != device {
        log!(
            "factory reset: leaving {} (another filesystem is mounted there)",
            path.display()
        );
        wiped.kept_mounts.push(path.to_owned());
        return Ok(false);
    }
    let mut empty = true;
    for entry in entries(path)? {
        empty &= remove(&entry.path(), device, wiped)?;
    }
    if empty {
        std::fs::remove_dir(path).map_err(io("deleting", path))?;
        wiped.removed += 1;
    }
    Ok(empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("dir");
        }
        std::fs::write(path, text).expect("write");
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn nothing_is_pending_without_the_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!pending(dir.path()));
        write(&dir.path().join("ddaemon/state.db"), "x");
        assert!(!pending(dir.path()));
        write(&dir.path().join("ddaemon/factory-reset"), "");
        assert!(pending(dir.path()));
    }

    #[test]
    fn a_marker_behind_a_link_does_not_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = dir.path().join("elsewhere");
        write(&elsewhere.join("factory-reset"), "");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data");
        symlink(&elsewhere, data.join("ddaemon")).expect("link");
        assert!(!pending(&data));
    }

    #[test]
    fn wipes_all_but_disks_and_never_follows_links_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let outside = dir.path().join("outside");
        write(&outside.join("precious"), "keep me");
        write(&data.join("ddaemon/factory-reset"), "");
        write(&data.join("ddaemon/state.db"), "state");
        write(&data.join("ddaemon/ca/key.pem"), "secret");
        write(&data.join("apps/photos/db/photos.sqlite"), "photos");
        write(&data.join("images/blobs/sha256/abc"), "layer");
        write(&data.join("overlay/etc/upper/hostname"), "box\n");
        std::fs::create_dir_all(data.join("overlay/var/work/work")).expect("dir");
        write(&data.join("disks/usb/movie.mkv"), "movie");
        write(&data.join("lost+found/#1234"), "orphan");
        write(&data.join("top-level-file"), "x");
        // Links out of /data, at the top and deep down, to a directory
        // and to a file; and a dangling one.
        symlink(&outside, data.join("escape")).expect("link");
        symlink(&outside, data.join("apps/photos/escape")).expect("link");
        symlink(outside.join("precious"), data.join("apps/precious")).expect("link");
        symlink(dir.path().join("nowhere"), data.join("dangling")).expect("link");
        // A link inside disks/ stays, as everything there.
        symlink(&outside, data.join("disks/outside")).expect("link");

        let wiped = factory_reset(&data).expect("reset");

        assert_eq!(listing(&data), ["disks", "lost+found"]);
        assert!(listing(&data.join("lost+found")).is_empty());
        assert_eq!(listing(&data.join("disks")), ["outside", "usb"]);
        assert_eq!(
            std::fs::read_to_string(data.join("disks/usb/movie.mkv"))
                .ok()
                .as_deref(),
            Some("movie")
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("precious"))
                .ok()
                .as_deref(),
            Some("keep me")
        );
        assert!(!pending(&data));
        assert!(wiped.kept_mounts.is_empty());
        assert!(wiped.removed >= 20, "{wiped:?}");
    }

    #[test]
    fn a_reset_without_state_or_disks_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(&dir.path().join("apps/x"), "x");
        factory_reset(dir.path()).expect("reset");
        assert!(listing(dir.path()).is_empty());
        // And again on an empty /data.
        factory_reset(dir.path()).expect("reset");
    }

    #[test]
    fn a_state_link_is_removed_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let outside = dir.path().join("outside");
        write(&outside.join("state.db"), "theirs");
        write(&outside.join("factory-reset"), "");
        std::fs::create_dir(&data).expect("data");
        symlink(&outside, data.join("ddaemon")).expect("link");
        factory_reset(&data).expect("reset");
        assert!(listing(&data).is_empty());
        assert_eq!(listing(&outside), ["factory-reset", "state.db"]);
    }

    #[test]
    fn a_missing_data_folder_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = factory_reset(&dir.path().join("nope"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("nope"), "{err}");
    }
}
