//! Content-addressed blobs under `DATA/images/blobs/`.
//!
//! A blob is only ever visible under its digest once its content has been
//! hashed and matched: downloads go to `partial/<hex>` (kept across crashes
//! so that a pull resumes where it stopped), are verified, fsynced and
//! renamed into `sha256/<hex>`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::fs_atomic::sync_dir;

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The content does not hash to the digest it was announced with.
    #[error("blob {expected} has the wrong content (it hashes to {actual}); it was discarded")]
    Mismatch { expected: Digest, actual: Digest },
    /// The store's files could not be read or written.
    #[error("image store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The blob folder.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

impl BlobStore {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        for sub in ["sha256", "partial"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// Where a complete blob lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("sha256").join(digest.hex())
    }

    fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("partial").join(digest.hex())
    }

    /// Whether the blob is complete in the store.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Bytes of an interrupted download already on disk.
    pub fn partial_len(&self, digest: &Digest) -> u64 {
        std::fs::metadata(self.partial_path(digest)).map_or(0, |m| m.len())
    }

    /// Opens the partial file to append to, truncating it to `keep` bytes
    /// (0 starts over, for a registry that does not resume).
    pub fn partial_writer(&self, digest: &Digest, keep: u64) -> Result<File, BlobError> {
        let path = self.partial_path(digest);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.set_len(keep).map_err(io_err(&path))?;
        Ok(file)
    }

    /// Verifies a finished download and moves it into place.
    pub fn commit_partial(&self, digest: &Digest) -> Result<PathBuf, BlobError> {
        let partial = self.partial_path(digest);
        let file = File::open(&partial).map_err(io_err(&partial))?;
        file.sync_all().map_err(io_err(&partial))?;
        let (actual, _) = Digest::of_reader(io::BufReader::new(file)).map_err(io_err(&partial))?;
        if &actual != digest {
            let _ = std::fs::remove_file(&partial);
            return Err(BlobError::Mismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let target = self.path(digest);
        std::fs::rename(&partial, &target).map_err(io_err(&target))?;
        sync_dir(&self.root.join("sha256")).map_err(io_err(&target))?;
        Ok(target)
    }

    /// Stores `bytes`, which must hash to `digest`.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<PathBuf, BlobError> {
        let actual = Digest::of(bytes);
        if &actual != digest {
            return Err(BlobError::Mismatch {
                expected: digest.clone(),
                actual,
            });
        }
        if self.contains(digest) {
            return Ok(self.path(digest));
        }
        let mut writer = self.partial_writer(digest, 0)?;
        let partial = self.partial_path(digest);
        writer.write_all(bytes).map_err(io_err(&partial))?;
        drop(writer);
        self.commit_partial(digest)
    }

    /// Stores whatever `reader` yields under the digest it hashes to; for
    /// side-loaded archives, where the content names itself.
    pub fn import(&self, mut reader: impl Read) -> Result<(Digest, u64), BlobError> {
        let staging = self.root.join("partial");
        let mut tmp = tempfile::Builder::new()
            .prefix("import-")
            .tempfile_in(&staging)
            .map_err(io_err(&staging))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(io_err(&staging))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(io_err(&staging))?;
            total += n as u64;
        }
        let digest = Digest::from_hasher(hasher);
        let target = self.path(&digest);
        if !target.exists() {
            tmp.as_file().sync_all().map_err(io_err(&staging))?;
            tmp.persist(&target).map_err(|e| BlobError::Io {
                path: target.clone(),
                source: e.error,
            })?;
            sync_dir(&self.root.join("sha256")).map_err(io_err(&target))?;
        }
        Ok((digest, total))
    }

    /// Reads a small blob (a manifest or config) whole, checking its digest
    /// again: these decide what is unpacked and run.
    pub fn read_verified(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(BlobError::Mismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Every complete blob.
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let dir = self.root.join("sha256");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            if let Some(name) = entry.file_name().to_str()
                && let Ok(digest) = Digest::parse(&format!("sha256:{name}"))
            {
                out.push(digest);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a blob and any partial download of it.
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        for path in [self.path(digest), self.partial_path(digest)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_appears_only_once_verified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path()).expect("open");
        let digest = Digest::of(b"layer bytes");
        let mut w = store.partial_writer(&digest, 0).expect("writer");
        w.write_all(b"layer ").expect("write");
        drop(w);
        assert!(!store.contains(&digest), "half a download is not a blob");
        assert_eq!(store.partial_len(&digest), 6);
        // Resume where it stopped.
        let mut w = store.partial_writer(&digest, 6).expect("writer");
        w.write_all(b"bytes").expect("write");
        drop(w);
        store.commit_partial(&digest).expect("commit");
        assert!(store.contains(&digest));
        assert_eq!(store.read_verified(&digest).expect("read"), b"layer bytes");
        assert_eq!(store.list().expect("list"), vec![digest]);
    }

    #[test]
    fn wrong_content_is_discarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path()).expect("open");
        let digest = Digest::of(b"expected");
        let mut w = store.partial_writer(&digest, 0).expect("writer");
        w.write_all(b"tampered").expect("write");
        drop(w);
        assert!(matches!(
            store.commit_partial(&digest),
            Err(BlobError::Mismatch { .. })
        ));
        assert!(!store.contains(&digest));
        assert_eq!(store.partial_len(&digest), 0, "the bad download is gone");
        assert!(store.put(&digest, b"tampered").is_err());
    }

    #[test]
    fn import_names_content_by_its_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = BlobStore::open(dir.path()).expect("open");
        let (digest, len) = store.import(&b"side-loaded"[..]).expect("import");
        assert_eq!(digest, Digest::of(b"side-loaded"));
        assert_eq!(len, 11);
        assert_eq!(store.read_verified(&digest).expect("read"), b"side-loaded");
    }
}
