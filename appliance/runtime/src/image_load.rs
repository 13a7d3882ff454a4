//! Side-loading images for homes without internet: an OCI image layout
//! archive (`skopeo copy ... oci-archive:`) or a `docker save` tarball,
//! plain or compressed.
//!
//! The archive is read once, front to back: every file is streamed into the
//! blob store under the digest its content has (a blob whose path names
//! another digest refuses the archive), the small JSON files are kept. Then
//! each tagged image is checked to have all of its blobs and recorded like
//! a pulled one.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::blob_store::BlobStore;
use crate::digest::Digest;
use crate::image_ref::ImageRef;
use crate::image_store::{ImageStore, StoreError, StoredImage};
use crate::layer_unpack::Compression;
use crate::oci_types::{self, Descriptor, ImageConfig, Index, Manifest};
use crate::registry::Resolved;

/// The largest JSON file read from an archive (index, manifest.json).
const MAX_JSON: u64 = 4 * 1024 * 1024;

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the file is not an image archive: {0}")]
    NotAnArchive(String),
    #[error("the archive is damaged: {0}")]
    Damaged(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn damaged(what: impl Into<String>) -> LoadError {
    LoadError::Damaged(what.into())
}

/// What an archive held, read once.
#[derive(Debug, Default)]
struct Contents {
    /// Archive path -> digest of its content.
    files: BTreeMap<String, Digest>,
    /// Small JSON files by archive path.
    json: BTreeMap<String, Vec<u8>>,
}

fn read_archive(reader: impl Read, blobs: &BlobStore) -> Result<Contents, LoadError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered
        .fill_buf()
        .map_err(|e| LoadError::NotAnArchive(e.to_string()))?;
    let plain: Box<dyn Read> = match Compression::detect(head) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| damaged(e.to_string()))?,
        ),
        Compression::None => Box::new(buffered),
    };
    let mut archive = tar::Archive::new(plain);
    let mut contents = Contents::default();
    let entries = archive
        .entries()
        .map_err(|e| LoadError::NotAnArchive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| damaged(e.to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if path.ends_with(".json") || path == "oci-layout" || path == "repositories" {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_JSON + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| damaged(e.to_string()))?;
            if bytes.len() as u64 > MAX_JSON {
                return Err(damaged(format!("{path} is larger than {MAX_JSON} bytes")));
            }
            // Docker's config files are blobs too (named <hex>.json).
            let digest = Digest::of(&bytes);
            blobs.put(&digest, &bytes).map_err(StoreError::from)?;
            contents.files.insert(path.clone(), digest);
            contents.json.insert(path, bytes);
            continue;
        }
        let (digest, _) = blobs.import(&mut entry).map_err(StoreError::from)?;
        if let Some(hex) = path.strip_prefix("blobs/sha256/")
            && hex != digest.hex()
        {
            return Err(damaged(format!(
                "{path} holds content with digest {digest}; the archive was altered or broken"
            )));
        }
        contents.files.insert(path, digest);
    }
    Ok(contents)
}

fn parse<T: serde::de::DeserializeOwned>(contents: &Contents, path: &str) -> Result<T, LoadError> {
    let bytes = contents
        .json
        .get(path)
        .ok_or_else(|| damaged(format!("{path} is missing")))?;
    serde_json::from_slice(bytes).map_err(|e| damaged(format!("{path}: {e}")))
}

/// Loads every tagged image of the archive at `path`. `name` names images
/// an OCI archive tags with a bare tag (`latest`) rather than a full reference.
pub async fn load_archive(
    store: &ImageStore,
    path: &Path,
    name: Option<&str>,
) -> Result<Vec<StoredImage>, LoadError> {
    let file = std::fs::File::open(path)
        .map_err(|e| LoadError::NotAnArchive(format!("{}: {e}", path.display())))?;
    let _guard = store.lock_changes().await;
    let blobs = store.blobs().clone();
    let contents = tokio::task::spawn_blocking(move || read_archive(file, &blobs))
        .await
        .map_err(|e| damaged(e.to_string()))??;
    let mut loaded = Vec::new();
    if contents.json.contains_key("index.json") && contents.json.contains_key("oci-layout") {
        let index: Index = parse(&contents, "index.json")?;
        for entry in &index.manifests {
            let annotations = entry.annotations.clone().unwrap_or_default();
            let reference = annotations
                .get("io.containerd.image.name")
                .cloned()
                .or_else(|| {
                    annotations
                        .get("org.opencontainers.image.ref.name")
                        .map(|tag| match (name, tag.contains('/') || tag.contains(':')) {
                            (_, true) => tag.clone(),
                            (Some(n), false) => format!("{n}:{tag}"),
                            (None, false) => format!("{tag}:latest"),
                        })
                })
                .ok_or_else(|| {
                    damaged("an image in index.json has no name; tag it when you export it")
                })?;
            let reference = ImageRef::parse(&reference)
                .map_err(StoreError::from)?
                .to_string();
            let resolved = resolve_oci(store, entry)?;
            loaded.push(store.record(reference, &resolved, &|_| {}).await?);
        }
    } else if contents.json.contains_key("manifest.json") {
        loaded.extend(load_docker_save(store, &contents).await?);
    } else {
        return Err(LoadError::NotAnArchive(
            "it has neither index.json (an OCI archive) nor manifest.json (docker save)".into(),
        ));
    }
    if loaded.is_empty() {
        return Err(damaged("the archive names no image"));
    }
    Ok(loaded)
}

fn read_blob<T: serde::de::DeserializeOwned>(
    blobs: &BlobStore,
    digest: &Digest,
) -> Result<T, LoadError> {
    let bytes = blobs
        .read_verified(digest)
        .map_err(|_| damaged(format!("blob {digest} is missing from the archive")))?;
    serde_json::from_slice(&bytes).map_err(|e| damaged(format!("blob {digest}: {e}")))
}

fn resolve_oci(store: &ImageStore, entry: &Descriptor) -> Result<Resolved, LoadError> {
    let blobs = store.blobs();
    let mut manifest_digest = entry.digest.clone();
    if oci_types::is_index(&entry.media_type) {
        let index: Index = read_blob(blobs, &entry.digest)?;
        let (arch, variant) = oci_types::host_platform();
        let chosen =
            oci_types::pick_platform(&index.manifests, arch, variant).ok_or_else(|| {
                damaged(format!(
                    "no image for linux/{arch} in the archive; it has {}",
                    oci_types::platforms_of(&index.manifests).join(", ")
                ))
            })?;
        manifest_digest = chosen.digest.clone();
    }
    let manifest: Manifest = read_blob(blobs, &manifest_digest)?;
    finish(blobs, manifest_digest, manifest)
}

fn finish(
    blobs: &BlobStore,
    manifest_digest: Digest,
    manifest: Manifest,
) -> Result<Resolved, LoadError> {
    let config: ImageConfig = read_blob(blobs, &manifest.config.digest)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(damaged(
            "the image config and manifest disagree on the number of layers",
        ));
    }
    for layer in &manifest.layers {
        if !blobs.contains(&layer.digest) {
            return Err(damaged(format!(
                "layer {} is missing from the archive",
                layer.digest
            )));
        }
    }
    Ok(Resolved {
        manifest_digest,
        manifest,
        config,
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

async fn load_docker_save(
    store: &ImageStore,
    contents: &Contents,
) -> Result<Vec<StoredImage>, LoadError> {
    let entries: Vec<DockerSaveEntry> = parse(contents, "manifest.json")?;
    let blobs = store.blobs();
    let lookup = |path: &str| {
        contents.files.get(path).cloned().ok_or_else(|| {
            damaged(format!(
                "{path} is named in manifest.json but not in the archive"
            ))
        })
    };
    let mut loaded = Vec::new();
    for entry in entries {
        let config_digest = lookup(&entry.config)?;
        let config_bytes = blobs
            .read_verified(&config_digest)
            .map_err(StoreError::from)?;
        let mut layers = Vec::new();
        for path in &entry.layers {
            let digest = lookup(path)?;
            let size = std::fs::metadata(blobs.path(&digest))
                .map(|m| m.len())
                .unwrap_or(0);
            layers.push(Descriptor {
                media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
                digest,
                size,
                platform: None,
                annotations: None,
            });
        }
        // docker save has no manifest of its own; write the one a registry
        // would have served, so the image is stored like any other.
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci_types::OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: oci_types::OCI_CONFIG.into(),
                digest: config_digest,
                size: config_bytes.len() as u64,
                platform: None,
                annotations: None,
            },
            layers,
        };
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| damaged(e.to_string()))?;
        let manifest_digest = Digest::of(&manifest_bytes);
        blobs
            .put(&manifest_digest, &manifest_bytes)
            .map_err(StoreError::from)?;
        let resolved = finish(blobs, manifest_digest, manifest)?;
        for tag in entry.repo_tags.unwrap_or_default() {
            let reference = ImageRef::parse(&tag).map_err(StoreError::from)?.to_string();
            loaded.push(store.record(reference, &resolved, &|_| {}).await?);
        }
    }
    Ok(loaded)
}
