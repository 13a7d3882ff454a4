//! What the supervisor asks for when it creates a container: the image's
//! layers and run config, and the overrides an app or the owner sets.
//! Stored as `container.json` in the container's folder; the shim reads it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::oci_types::RunConfig;

/// When a container that stopped by itself is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// When it exits with a non-zero code or is killed.
    OnFailure,
    /// Whenever it stops, unless it was asked to stop.
    Always,
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "no" => Ok(Self::No),
            "on-failure" => Ok(Self::OnFailure),
            "always" => Ok(Self::Always),
            other => Err(format!(
                "{other:?} is not a restart policy; use no, on-failure or always"
            )),
        }
    }
}

/// A folder of the device mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

/// Resource limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    /// Thousandths of a CPU (1500 = one and a half CPUs).
    pub cpu_millis: Option<u64>,
    pub pids: Option<i64>,
}

/// The network a container joins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// A network namespace prepared by the supervisor (`/run/netns/...`);
    /// without one the container gets a namespace with only loopback.
    pub netns: Option<PathBuf>,
    /// Lines for the container's `/etc/hosts`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Name servers for its `/etc/resolv.conf`.
    #[serde(default)]
    pub nameservers: Vec<String>,
}

/// Everything needed to run one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerDef {
    pub id: String,
    /// The image reference, for display.
    pub image: String,
    /// Unpacked layer folders, bottom first.
    pub layers: Vec<PathBuf>,
    /// The image's own run config.
    pub image_config: RunConfig,
    /// Replaces the image's Cmd.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Replaces the image's Entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=value`, added to (and overriding) the image's.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub binds: Vec<BindMount>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Seconds between SIGTERM and SIGKILL on stop.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_secs: u64,
    #[serde(default)]
    pub network: NetworkAttachment,
    /// Capabilities added to Docker's default set (`NET_ADMIN`, without
    /// the `CAP_` prefix); the caller decides which are allowed.
    #[serde(default)]
    pub extra_capabilities: Vec<String>,
}

fn default_stop_timeout() -> u64 {
    10
}

/// Checks a container id: it names folders and cgroups.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a container name; use 1 to 63 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

impl ContainerDef {
    /// A container of an image with its defaults: the caller sets overrides.
    pub fn for_image(id: &str, image: &str, layers: Vec<PathBuf>, image_config: RunConfig) -> Self {
        Self {
            id: id.to_owned(),
            image: image.to_owned(),
            layers,
            image_config,
            command: None,
            entrypoint: None,
            env: Vec::new(),
            working_dir: None,
            user: None,
            binds: Vec::new(),
            limits: Limits::default(),
            restart: RestartPolicy::No,
            stop_timeout_secs: default_stop_timeout(),
            network: NetworkAttachment::default(),
            extra_capabilities: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("jellyfin").is_ok());
        assert!(check_id("mastodon_web.1").is_ok());
        for bad in ["", "-x", "UPPER", "a/b", "..", &"a".repeat(64)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn restart_policies_parse() {
        assert_eq!("on-failure".parse(), Ok(RestartPolicy::OnFailure));
        assert!("sometimes".parse::<RestartPolicy>().is_err());
    }
}
