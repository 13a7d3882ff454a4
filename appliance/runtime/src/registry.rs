//! Fetching images from registries, on the `oci-client` crate.
//!
//! It owns the protocol side of a pull: which scheme a registry gets (HTTPS,
//! or HTTP only for registries the owner marked insecure), credentials,
//! anonymous token auth (done by `oci-client`), resolving a multi-platform
//! index to this machine's platform, and downloading blobs into the
//! `BlobStore` with resume and progress. Every manifest and blob is checked
//! against its digest before it is used.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use futures_util::StreamExt;
use oci_client::Client;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use tokio::io::AsyncWriteExt;

use crate::blob_store::{BlobError, BlobStore};
use crate::digest::Digest;
use crate::image_ref::ImageRef;
use crate::oci_types::{self, Descriptor, ImageConfig, Index, Manifest};

/// A user name and password (or token) for one registry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (host[:port] as in references) reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Credentials by registry host.
    pub credentials: BTreeMap<String, Credentials>,
    /// The platform to pick from indexes; this machine's when `None`.
    pub platform: Option<(String, Option<String>)>,
}

/// The owner's registry settings file (`DATA/ddaemon/registries.json`):
/// registries reached over HTTP, and credentials per registry.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    #[serde(default)]
    pub insecure: Vec<String>,
    #[serde(default)]
    pub credentials: BTreeMap<String, Credentials>,
}

impl RegistrySettings {
    /// Reads the file; a missing file means no settings.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let settings: Self = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: {e}; expected {{\"insecure\": [\"host:port\"], \"credentials\": {{\"host\": {{\"username\": \"...\", \"password\": \"...\"}}}}}}",
                path.display()
            )
        })?;
        if !settings.credentials.is_empty() {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(path = %path.display(), "registry credentials are readable by other users; chmod 600 it");
            }
        }
        Ok(settings)
    }

    /// These settings plus registries marked insecure elsewhere.
    pub fn into_options(self, extra_insecure: &[String]) -> RegistryOptions {
        let mut insecure = self.insecure;
        insecure.extend(extra_insecure.iter().cloned());
        insecure.sort();
        insecure.dedup();
        RegistryOptions {
            insecure,
            credentials: self.credentials,
            platform: None,
        }
    }
}

/// How far a pull is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PullProgress {
    /// Bytes of layers present (downloaded or already stored).
    pub done: u64,
    /// Bytes of all layers of the image.
    pub total: u64,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("registry error for {image}: {message}")]
    Registry { image: String, message: String },
    #[error(
        "{image} has no build for {wanted}; it is built for: {available}. Pick another image or tag"
    )]
    NoPlatform {
        image: String,
        wanted: String,
        available: String,
    },
    #[error("{image}: the registry sent a manifest that cannot be read: {reason}")]
    BadManifest { image: String, reason: String },
    #[error("{image}: the registry answered digest {got} where {expected} was asked for")]
    DigestMismatch {
        image: String,
        expected: String,
        got: String,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// What a pull resolved: the platform's manifest and its config, both in
/// the blob store.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

/// A registry client.
#[derive(Clone)]
pub struct Registry {
    /// Made at the first pull: making it reads and parses every CA
    /// certificate in the system's store (twice, one per inner client),
    /// which took seconds of the device's boot under emulation.
    client: Arc<OnceLock<Client>>,
    options: RegistryOptions,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("insecure", &self.options.insecure)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A client with these options.
    pub fn new(options: RegistryOptions) -> Self {
        Self {
            client: Arc::new(OnceLock::new()),
            options,
        }
    }

    fn client(&self) -> &Client {
        self.client.get_or_init(|| {
            Client::new(ClientConfig {
                protocol: if self.options.insecure.is_empty() {
                    ClientProtocol::Https
                } else {
                    ClientProtocol::HttpsExcept(self.options.insecure.clone())
                },
                // A registry that does not answer must not hold a pull forever.
                connect_timeout: Some(std::time::Duration::from_secs(10)),
                read_timeout: Some(std::time::Duration::from_secs(60)),
                ..ClientConfig::default()
            })
        })
    }

    fn auth(&self, image: &ImageRef) -> RegistryAuth {
        match self.options.credentials.get(image.registry()) {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    fn registry_error(image: &ImageRef, err: impl std::fmt::Display) -> PullError {
        PullError::Registry {
            image: image.to_string(),
            message: err.to_string(),
        }
    }

    /// Fetches a manifest, checks it against the digest the registry (or the
    /// reference) names, and stores it.
    async fn fetch_manifest(
        &self,
        image: &ImageRef,
        blobs: &BlobStore,
    ) -> Result<(Vec<u8>, Digest), PullError> {
        let (bytes, digest) = self
            .client()
            .pull_manifest_raw(
                image.as_reference(),
                &self.auth(image),
                &oci_types::MANIFEST_TYPES,
            )
            .await
            .map_err(|e| Self::registry_error(image, e))?;
        let actual = Digest::of(&bytes);
        let named = image.digest().map(str::to_owned).unwrap_or(digest);
        if named != actual.to_string() {
            return Err(PullError::DigestMismatch {
                image: image.to_string(),
                expected: named,
                got: actual.to_string(),
            });
        }
        blobs.put(&actual, &bytes)?;
        Ok((bytes.to_vec(), actual))
    }

    /// Resolves `image` to this platform's manifest and config, storing both.
    pub async fn resolve(
        &self,
        image: &ImageRef,
        blobs: &BlobStore,
    ) -> Result<Resolved, PullError> {
        let bad = |reason: String| PullError::BadManifest {
            image: image.to_string(),
            reason,
        };
        let (mut bytes, mut digest) = self.fetch_manifest(image, blobs).await?;
        let mut pinned = image.clone();
        let kind: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let media_type = kind["mediaType"].as_str().unwrap_or_default().to_owned();
        if oci_types::is_index(&media_type) || kind.get("manifests").is_some() {
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
            let (arch, variant) = match &self.options.platform {
                Some((a, v)) => (a.clone(), v.clone()),
                None => {
                    let (a, v) = oci_types::host_platform();
                    (a.to_owned(), v.map(str::to_owned))
                }
            };
            let entry = oci_types::pick_platform(&index.manifests, &arch, variant.as_deref())
                .ok_or_else(|| PullError::NoPlatform {
                    image: image.to_string(),
                    wanted: format!("linux/{arch}"),
                    available: oci_types::platforms_of(&index.manifests).join(", "),
                })?;
            pinned = image.with_digest(&entry.digest.to_string());
            (bytes, digest) = self.fetch_manifest(&pinned, blobs).await?;
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let config_bytes = self
            .fetch_small_blob(&pinned, &manifest.config, blobs)
            .await?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| bad(format!("config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "{} layers but {} layer digests in the config",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        Ok(Resolved {
            manifest_digest: digest,
            manifest,
            config,
        })
    }

    async fn fetch_small_blob(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        blobs: &BlobStore,
    ) -> Result<Vec<u8>, PullError> {
        if blobs.contains(&desc.digest) {
            return Ok(blobs.read_verified(&desc.digest)?);
        }
        let mut bytes = Vec::new();
        self.client()
            .pull_blob(image.as_reference(), &to_oci(desc), &mut bytes)
            .await
            .map_err(|e| Self::registry_error(image, e))?;
        blobs.put(&desc.digest, &bytes)?;
        Ok(bytes)
    }

    /// Downloads the layers of `resolved` that the store lacks, resuming
    /// partial downloads, reporting progress as bytes arrive.
    pub async fn fetch_layers(
        &self,
        image: &ImageRef,
        resolved: &Resolved,
        blobs: &BlobStore,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), PullError> {
        let pinned = image.with_digest(&resolved.manifest_digest.to_string());
        let total: u64 = resolved.manifest.layers.iter().map(|l| l.size).sum();
        let mut done: u64 = resolved
            .manifest
            .layers
            .iter()
            .filter(|l| blobs.contains(&l.digest))
            .map(|l| l.size)
            .sum();
        progress(PullProgress { done, total });
        for layer in &resolved.manifest.layers {
            if blobs.contains(&layer.digest) {
                continue;
            }
            let mut offset = blobs.partial_len(&layer.digest).min(layer.size);
            let response = self
                .client()
                .pull_blob_stream_partial(pinned.as_reference(), &to_oci(layer), offset, None)
                .await
                .map_err(|e| Self::registry_error(image, e))?;
            let stream = match response {
                BlobResponse::Partial(s) => s,
                BlobResponse::Full(s) => {
                    offset = 0; // the registry does not resume; start over
                    s
                }
            };
            done += offset;
            let file = blobs.partial_writer(&layer.digest, offset)?;
            let mut file = tokio::fs::File::from_std(file);
            let mut stream = stream.stream;
            let mut last_report = done;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| Self::registry_error(image, e))?;
                file.write_all(&chunk).await.map_err(|e| BlobError::Io {
                    path: blobs.path(&layer.digest),
                    source: e,
                })?;
                done += chunk.len() as u64;
                if done - last_report >= 256 * 1024 {
                    progress(PullProgress { done, total });
                    last_report = done;
                }
            }
            file.flush().await.map_err(|e| BlobError::Io {
                path: blobs.path(&layer.digest),
                source: e,
            })?;
            drop(file);
            let store = blobs.clone();
            let digest = layer.digest.clone();
            tokio::task::spawn_blocking(move || store.commit_partial(&digest))
                .await
                .map_err(|e| Self::registry_error(image, e))??;
            progress(PullProgress { done, total });
        }
        Ok(())
    }
}

fn to_oci(desc: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.to_string(),
        size: i64::try_from(desc.size).unwrap_or(i64::MAX),
        urls: None,
        annotations: None,
        ..OciDescriptor::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_file_reads_merges_and_names_itself_when_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registries.json");
        assert!(
            RegistrySettings::load(&path)
                .expect("missing is empty")
                .insecure
                .is_empty()
        );
        std::fs::write(
            &path,
            r#"{"insecure": ["10.0.0.5:5000"], "credentials": {"ghcr.io": {"username": "me", "password": "tok"}}}"#,
        )
        .expect("write");
        let options = RegistrySettings::load(&path)
            .expect("load")
            .into_options(&["127.0.0.1:5000".into()]);
        assert_eq!(options.insecure, ["10.0.0.5:5000", "127.0.0.1:5000"]);
        assert_eq!(options.credentials["ghcr.io"].username, "me");
        std::fs::write(&path, r#"{"insecure": ["x"], "passwords": {}}"#).expect("write");
        let err = RegistrySettings::load(&path).expect_err("unknown key");
        assert!(
            err.contains("registries.json") && err.contains("passwords"),
            "{err}"
        );
    }
}
