//! A container's output, kept to a bounded size: when `output.log` reaches
//! its cap it becomes `output.log.1` (replacing the previous one) and a new
//! file starts.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The default cap per file.
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// An append-only log that rotates at a size.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    written: u64,
}

impl RotatingLog {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            max_bytes,
            file,
            written,
        })
    }

    /// Appends `bytes`, rotating first if they would pass the cap.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.written > 0 && self.written + bytes.len() as u64 > self.max_bytes {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.written = 0;
        }
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// The last `max` bytes of a container's output, older file first.
pub fn tail(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut old = path.to_owned().into_os_string();
    old.push(".1");
    let mut out = std::fs::read(&old).unwrap_or_default();
    match std::fs::read(path) {
        Ok(current) => out.extend_from_slice(&current),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let cut = out
        .len()
        .saturating_sub(usize::try_from(max).unwrap_or(usize::MAX));
    Ok(out.split_off(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_cap_and_keeps_one_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("output.log");
        let mut log = RotatingLog::open(&path, 10).expect("open");
        log.write(b"aaaaaaaa\n").expect("write");
        log.write(b"bbbbbbbb\n").expect("write");
        log.write(b"cccccccc\n").expect("write");
        assert_eq!(std::fs::read(&path).expect("current"), b"cccccccc\n");
        assert_eq!(
            std::fs::read(dir.path().join("output.log.1")).expect("old"),
            b"bbbbbbbb\n"
        );
        assert_eq!(tail(&path, 1000).expect("tail"), b"bbbbbbbb\ncccccccc\n");
        assert_eq!(tail(&path, 4).expect("tail"), b"ccc\n");
    }
}
