//! The parts of the OCI (and Docker v2) image formats we read: index,
//! manifest, descriptors and the image config. Unknown fields are ignored,
//! as the specs ask of readers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Every manifest kind we accept, for the registry's `Accept` header.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Points at a blob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What an index entry runs on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A multi-platform index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// One platform's image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The image config: how to run it and which layers make it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
    #[serde(default)]
    pub created: Option<String>,
}

/// The defaults a container of this image runs with.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// The uncompressed digests of the layers, bottom first.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// Whether a media type names an index rather than a single manifest.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// The architecture names OCI uses for this machine.
pub fn host_platform() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        other => (other, None),
    }
}

/// Picks this machine's entry from an index: linux, our architecture, and
/// for arm64 the v8 variant or none.
pub fn pick_platform<'a>(
    entries: &'a [Descriptor],
    arch: &str,
    variant: Option<&str>,
) -> Option<&'a Descriptor> {
    entries.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == "linux"
                && p.architecture == arch
                && match (p.variant.as_deref(), variant) {
                    (None, _) => true,
                    (Some(have), Some(want)) => have == want,
                    (Some(_), None) => false,
                }
        })
    })
}

/// `os/arch[/variant]` of each entry, for telling the owner what exists.
pub fn platforms_of(entries: &[Descriptor]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
            annotations: None,
        }
    }

    #[test]
    fn picks_the_host_platform() {
        let entries = vec![
            entry("arm", Some("v7"), 1),
            entry("arm64", Some("v8"), 2),
            entry("amd64", None, 3),
        ];
        assert_eq!(
            pick_platform(&entries, "amd64", None).map(|d| d.digest.clone()),
            Some(Digest::of(&[3]))
        );
        assert_eq!(
            pick_platform(&entries, "arm64", Some("v8")).map(|d| d.digest.clone()),
            Some(Digest::of(&[2]))
        );
        assert!(pick_platform(&entries, "riscv64", None).is_none());
        assert_eq!(
            platforms_of(&entries),
            ["linux/arm/v7", "linux/arm64/v8", "linux/amd64"]
        );
    }

    #[test]
    fn reads_a_docker_config() {
        let json = r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/init"],"Env":["PATH=/bin"],"ExposedPorts":{"80/tcp":{}},"WorkingDir":"/app"},"rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]},"history":[]}"#;
        let config: ImageConfig = serde_json::from_str(json).expect("parse");
        let run = config.config.expect("run config");
        assert_eq!(run.entrypoint, Some(vec!["/init".to_owned()]));
        assert_eq!(run.working_dir.as_deref(), Some("/app"));
        assert_eq!(config.rootfs.diff_ids.len(), 1);
    }
}
