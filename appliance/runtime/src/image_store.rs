//! The image store under `DATA/images/`: which images the device has, their
//! blobs, and their layers unpacked once each.
//!
//! ```text
//! images/
//!   blobs/sha256/<hex>      manifests, configs, compressed layers (blob_store)
//!   layers/<diff-id hex>/   one unpacked layer, shared by every image using it
//!   refs.json               reference -> manifest, config, layers (written atomically)
//! ```
//!
//! A layer directory appears only complete: it is unpacked into a temporary
//! sibling, its DiffID checked against the image config, then renamed. An
//! image is recorded in `refs.json` only once all of its layers are there,
//! so a crash at any point leaves either no image or a whole one, plus
//! leftovers that the next open or garbage collection removes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::blob_store::{BlobError, BlobStore};
use crate::clock::now_unix;
use crate::digest::Digest;
use crate::fs_atomic::{sync_dir, write_atomic};
use crate::image_ref::{BadImageRef, ImageRef};
use crate::layer_unpack::{UnpackError, UnpackOptions, unpack_layer};
use crate::oci_types::{ImageConfig, Manifest};
use crate::registry::{PullError, PullProgress, Registry, Resolved};

const REFS_FILE: &str = "refs.json";
const TMP_PREFIX: &str = ".tmp-";

/// A stage of a pull, for progress displays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum PullEvent {
    /// Reading the manifest and config.
    Resolving,
    /// Layer bytes present of all layer bytes.
    Downloading(PullProgress),
    /// Unpacking layer `index` (1-based) of `count`.
    Unpacking { index: usize, count: usize },
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Reference(#[from] BadImageRef),
    #[error("layer {blob}: {source}")]
    Unpack { blob: Digest, source: UnpackError },
    #[error(
        "layer {blob} unpacks to {actual}, but the image config says {expected}; the image is refused"
    )]
    DiffId {
        blob: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("no image {0} on this device; `ddaemon image ls` lists them")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} cannot be read: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An image the device has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredImage {
    /// The reference it was pulled or loaded as.
    pub reference: String,
    pub manifest: Digest,
    pub config: Digest,
    /// Compressed layer blobs, bottom first.
    pub layers: Vec<Digest>,
    /// Uncompressed layer digests, bottom first (the unpacked directories).
    pub diff_ids: Vec<Digest>,
    /// Bytes of compressed layers.
    pub size: u64,
    /// Seconds since the epoch.
    pub stored_at: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RefsFile {
    schema_version: u32,
    images: BTreeMap<String, StoredImage>,
}

/// What garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub layers_removed: usize,
}

/// The store.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    /// Serialises changes (pull, load, remove, gc) so that garbage
    /// collection never removes what a pull is writing.
    changes: tokio::sync::Mutex<()>,
}

impl ImageStore {
    /// Opens (creating) the store at `root` and clears leftovers of
    /// interrupted unpacks.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let blobs = BlobStore::open(&root.join("blobs"))?;
        let layers = root.join("layers");
        std::fs::create_dir_all(&layers).map_err(io_err(&layers))?;
        for entry in std::fs::read_dir(&layers).map_err(io_err(&layers))? {
            let entry = entry.map_err(io_err(&layers))?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
        Ok(Self {
            root: root.to_owned(),
            blobs,
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// The blob store inside.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    fn refs_path(&self) -> PathBuf {
        self.root.join(REFS_FILE)
    }

    fn read_refs(&self) -> Result<RefsFile, StoreError> {
        let path = self.refs_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RefsFile {
                schema_version: 1,
                images: BTreeMap::new(),
            }),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn write_refs(&self, refs: &RefsFile) -> Result<(), StoreError> {
        let path = self.refs_path();
        let bytes = serde_json::to_vec_pretty(refs).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes).map_err(io_err(&path))
    }

    /// The directory of an unpacked layer.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// Pulls `image` from its registry: resolve, download what is missing,
    /// unpack, record.
    pub async fn pull(
        &self,
        registry: &Registry,
        image: &ImageRef,
        progress: &(dyn Fn(PullEvent) + Send + Sync),
    ) -> Result<StoredImage, StoreError> {
        let _guard = self.changes.lock().await;
        progress(PullEvent::Resolving);
        let resolved = registry.resolve(image, &self.blobs).await?;
        registry
            .fetch_layers(image, &resolved, &self.blobs, &|p| {
                progress(PullEvent::Downloading(p))
            })
            .await?;
        self.record(image.to_string(), &resolved, progress).await
    }

    /// Unpacks the layers of an image whose blobs are all in the store and
    /// records it under `reference`; the caller holds the change lock.
    pub(crate) async fn record(
        &self,
        reference: String,
        resolved: &Resolved,
        progress: &(dyn Fn(PullEvent) + Send + Sync),
    ) -> Result<StoredImage, StoreError> {
        let count = resolved.manifest.layers.len();
        for (i, (layer, diff_id)) in resolved
            .manifest
            .layers
            .iter()
            .zip(&resolved.config.rootfs.diff_ids)
            .enumerate()
        {
            progress(PullEvent::Unpacking {
                index: i + 1,
                count,
            });
            self.unpack_once(&layer.digest, diff_id).await?;
        }
        let stored = StoredImage {
            reference: reference.clone(),
            manifest: resolved.manifest_digest.clone(),
            config: resolved.manifest.config.digest.clone(),
            layers: resolved
                .manifest
                .layers
                .iter()
                .map(|l| l.digest.clone())
                .collect(),
            diff_ids: resolved.config.rootfs.diff_ids.clone(),
            size: resolved.manifest.layers.iter().map(|l| l.size).sum(),
            stored_at: now_unix(),
        };
        let mut refs = self.read_refs()?;
        refs.schema_version = 1;
        refs.images.insert(reference, stored.clone());
        self.write_refs(&refs)?;
        tracing::info!(image = %stored.reference, manifest = %stored.manifest, "image stored");
        Ok(stored)
    }

    async fn unpack_once(&self, blob: &Digest, diff_id: &Digest) -> Result<(), StoreError> {
        let target = self.layer_dir(diff_id);
        if target.is_dir() {
            return Ok(());
        }
        let layers = self.root.join("layers");
        let tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempdir_in(&layers)
            .map_err(io_err(&layers))?;
        let blob_path = self.blobs.path(blob);
        let dest = tmp.path().to_owned();
        let blob_digest = blob.clone();
        let report = tokio::task::spawn_blocking(move || {
            let file = File::open(&blob_path).map_err(io_err(&blob_path))?;
            unpack_layer(io::BufReader::new(file), &dest, &UnpackOptions::default()).map_err(
                |source| StoreError::Unpack {
                    blob: blob_digest,
                    source,
                },
            )
        })
        .await
        .map_err(|e| StoreError::Io {
            path: target.clone(),
            source: io::Error::other(e.to_string()),
        })??;
        let actual = Digest::parse(&report.diff_id).map_err(|e| StoreError::Corrupt {
            path: target.clone(),
            reason: e.to_string(),
        })?;
        if &actual != diff_id {
            return Err(StoreError::DiffId {
                blob: blob.clone(),
                expected: diff_id.clone(),
                actual,
            });
        }
        // The layer's root directory gets the usual mode; the temporary
        // directory was created private.
        let keep = tmp.keep();
        std::fs::set_permissions(&keep, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io_err(&keep))?;
        std::fs::rename(&keep, &target).map_err(io_err(&target))?;
        sync_dir(&layers).map_err(io_err(&layers))?;
        Ok(())
    }

    /// Every stored image, by reference.
    pub fn list(&self) -> Result<Vec<StoredImage>, StoreError> {
        Ok(self.read_refs()?.images.into_values().collect())
    }

    /// The image stored under `reference` (short forms like `busybox` work).
    pub fn get(&self, reference: &str) -> Result<StoredImage, StoreError> {
        let refs = self.read_refs()?;
        if let Some(found) = refs.images.get(reference) {
            return Ok(found.clone());
        }
        let canonical = ImageRef::parse(reference)?.to_string();
        refs.images
            .get(&canonical)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(reference.to_owned()))
    }

    /// The run config of a stored image.
    pub fn config(&self, image: &StoredImage) -> Result<ImageConfig, StoreError> {
        let bytes = self.blobs.read_verified(&image.config)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: self.blobs.path(&image.config),
            reason: e.to_string(),
        })
    }

    /// The manifest of a stored image.
    pub fn manifest(&self, image: &StoredImage) -> Result<Manifest, StoreError> {
        let bytes = self.blobs.read_verified(&image.manifest)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: self.blobs.path(&image.manifest),
            reason: e.to_string(),
        })
    }

    /// The unpacked layer directories, bottom first, for overlayfs.
    pub fn layer_dirs(&self, image: &StoredImage) -> Vec<PathBuf> {
        image.diff_ids.iter().map(|d| self.layer_dir(d)).collect()
    }

    /// Forgets an image; its data goes at the next garbage collection.
    pub async fn remove(&self, reference: &str) -> Result<StoredImage, StoreError> {
        let _guard = self.changes.lock().await;
        let found = self.get(reference)?;
        let mut refs = self.read_refs()?;
        refs.images.remove(&found.reference);
        self.write_refs(&refs)?;
        Ok(found)
    }

    /// Removes blobs and layers no stored image uses, and partial downloads.
    pub async fn gc(&self) -> Result<GcReport, StoreError> {
        let _guard = self.changes.lock().await;
        let refs = self.read_refs()?;
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        for image in refs.images.values() {
            keep_blobs.insert(image.manifest.clone());
            keep_blobs.insert(image.config.clone());
            keep_blobs.extend(image.layers.iter().cloned());
            keep_layers.extend(image.diff_ids.iter().map(|d| d.hex().to_owned()));
        }
        let mut report = GcReport::default();
        for blob in self.blobs.list()? {
            if !keep_blobs.contains(&blob) {
                self.blobs.remove(&blob)?;
                report.blobs_removed += 1;
            }
        }
        let partial = self.root.join("blobs/partial");
        for entry in std::fs::read_dir(&partial).map_err(io_err(&partial))? {
            let path = entry.map_err(io_err(&partial))?.path();
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
        let layers = self.root.join("layers");
        for entry in std::fs::read_dir(&layers).map_err(io_err(&layers))? {
            let entry = entry.map_err(io_err(&layers))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep_layers.contains(&name) {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
                report.layers_removed += 1;
            }
        }
        Ok(report)
    }

    /// Holds off other changes (garbage collection above all) while a
    /// side-load puts blobs in and records its images.
    pub(crate) async fn lock_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }
}
