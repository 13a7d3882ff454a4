//! Where backups go, and how each kind of place becomes the address of a
//! restic repository.
//!
//! A folder and a REST server are opened directly; SFTP, S3 and any other
//! rclone remote go through `rclone serve restic`, with a configuration file
//! ddaemon writes (mode 0600) so that no secret appears on a command line.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::field_error::FieldError;

/// The rclone remote name ddaemon gives the SFTP and S3 targets it writes.
const REMOTE: &str = "ddaemon-target";

/// A place that holds the backup repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// A folder on an attached disk (or another mounted filesystem).
    Folder { path: String },
    /// A restic REST server (`rest-server`, `rclone serve restic`), with
    /// any login in the URL (`http://user:password@host:8000/repo`).
    Rest { url: String },
    /// An SFTP server, logged into with the device's own SSH key.
    Sftp {
        host: String,
        #[serde(default = "ssh_port")]
        port: u16,
        user: String,
        path: String,
    },
    /// An S3-compatible bucket.
    S3 {
        endpoint: String,
        bucket: String,
        #[serde(default)]
        path: String,
        #[serde(default)]
        region: String,
        access_key_id: String,
        secret_access_key: String,
    },
    /// Any rclone remote: `remote` is `NAME:PATH`, and `config` the remote's
    /// section of an rclone.conf (`rclone config show NAME` prints it).
    Rclone { remote: String, config: String },
}

fn ssh_port() -> u16 {
    22
}

/// How to open a target with rustic: its repository string and the
/// backend options that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub repository: String,
    /// rclone.conf text to write before opening, for rclone targets.
    pub rclone_config: Option<String>,
}

/// Refuses control characters, which would end a line of rclone.conf.
fn plain(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must be on one line, without control characters",
        ));
    }
    Ok(())
}

fn required(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    plain(field, value)
}

impl Target {
    /// Checks every field; `data_dir` is the device's own data, which a
    /// backup must not be written into (it would back itself up and be
    /// lost with the disk it protects), except an attached disk under it.
    pub fn validate(&self, data_dir: &Path) -> Result<(), FieldError> {
        match self {
            Self::Folder { path } => {
                required("target.path", path)?;
                let p = Path::new(path);
                if !p.is_absolute() {
                    return Err(FieldError::new(
                        "target.path",
                        "must be an absolute path, such as /data/disks/Backup/ddaemon",
                    ));
                }
                if p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(FieldError::new("target.path", "must not contain .."));
                }
                if p.starts_with(data_dir) && !p.starts_with(data_dir.join("disks")) {
                    return Err(FieldError::new(
                        "target.path",
                        format!(
                            "is inside the device's own data ({}); choose a folder on an attached disk, under {}",
                            data_dir.display(),
                            data_dir.join("disks").display()
                        ),
                    ));
                }
                Ok(())
            }
            Self::Rest { url } => {
                required("target.url", url)?;
                let parsed = reqwest::Url::parse(url).map_err(|e| {
                    FieldError::new(
                        "target.url",
                        format!("is not a URL ({e}); write it like http://host:8000/repo"),
                    )
                })?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    return Err(FieldError::new(
                        "target.url",
                        "must be an http:// or https:// address with a host",
                    ));
                }
                Ok(())
            }
            Self::Sftp {
                host,
                port,
                user,
                path,
            } => {
                required("target.host", host)?;
                if host.contains([' ', '/', '@']) {
                    return Err(FieldError::new(
                        "target.host",
                        "must be a host name or address only, such as nas.local",
                    ));
                }
                if *port == 0 {
                    return Err(FieldError::new(
                        "target.port",
                        "must be between 1 and 65535",
                    ));
                }
                required("target.user", user)?;
                required("target.path", path)?;
                Ok(())
            }
            Self::S3 {
                endpoint,
                bucket,
                path,
                region,
                access_key_id,
                secret_access_key,
            } => {
                required("target.endpoint", endpoint)?;
                required("target.bucket", bucket)?;
                if bucket.contains(['/', ':']) {
                    return Err(FieldError::new(
                        "target.bucket",
                        "is the bucket's name only; put folders in path",
                    ));
                }
                plain("target.path", path)?;
                plain("target.region", region)?;
                required("target.access_key_id", access_key_id)?;
                required("target.secret_access_key", secret_access_key)
            }
            Self::Rclone { remote, config } => {
                required("target.remote", remote)?;
                let Some((name, _)) = remote.split_once(':') else {
                    return Err(FieldError::new(
                        "target.remote",
                        "must be NAME:PATH, such as gdrive:backups/ddaemon",
                    ));
                };
                if name.is_empty() || name.starts_with(':') {
                    return Err(FieldError::new(
                        "target.remote",
                        "must start with the remote's name",
                    ));
                }
                if !config.lines().any(|l| l.trim() == format!("[{name}]")) {
                    return Err(FieldError::new(
                        "target.config",
                        format!(
                            "must hold the [{name}] section of your rclone.conf (`rclone config show {name}` prints it)"
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The repository address; `ssh_key` is the device's SFTP key file.
    pub fn address(&self, ssh_key: &Path) -> Address {
        match self {
            Self::Folder { path } => Address {
                // "local:" keeps a colon in the folder's name from being
                // read as a backend's name.
                repository: format!("local:{path}"),
                rclone_config: None,
            },
            Self::Rest { url } => Address {
                repository: format!("rest:{url}"),
                rclone_config: None,
            },
            Self::Sftp {
                host,
                port,
                user,
                path,
            } => {
                let mut conf = format!("[{REMOTE}]\ntype = sftp\n");
                let _ = writeln!(conf, "host = {host}\nport = {port}\nuser = {user}");
                let _ = writeln!(conf, "key_file = {}", ssh_key.display());
                // A server that offers only SFTP cannot run md5sum for rclone.
                conf.push_str("disable_hashcheck = true\n");
                Address {
                    repository: format!("rclone:{REMOTE}:{path}"),
                    rclone_config: Some(conf),
                }
            }
            Self::S3 {
                endpoint,
                bucket,
                path,
                region,
                access_key_id,
                secret_access_key,
            } => {
                let mut conf = format!("[{REMOTE}]\ntype = s3\nprovider = Other\n");
                let _ = writeln!(conf, "endpoint = {endpoint}");
                if !region.is_empty() {
                    let _ = writeln!(conf, "region = {region}");
                }
                let _ = writeln!(conf, "access_key_id = {access_key_id}");
                let _ = writeln!(conf, "secret_access_key = {secret_access_key}");
                let path = path.trim_matches('/');
                Address {
                    repository: format!("rclone:{REMOTE}:{bucket}/{path}"),
                    rclone_config: Some(conf),
                }
            }
            Self::Rclone { remote, config } => Address {
                repository: format!("rclone:{remote}"),
                rclone_config: Some(format!("{}\n", config.trim_end())),
            },
        }
    }

    /// The target as the page may show it: passwords and secret keys left out.
    pub fn redacted(&self) -> Self {
        match self {
            Self::Rest { url } => {
                let mut shown = url.clone();
                if let Ok(mut parsed) = reqwest::Url::parse(url)
                    && parsed.password().is_some()
                {
                    let _ = parsed.set_password(Some("***"));
                    shown = parsed.to_string();
                }
                Self::Rest { url: shown }
            }
            Self::S3 {
                endpoint,
                bucket,
                path,
                region,
                access_key_id,
                ..
            } => Self::S3 {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                path: path.clone(),
                region: region.clone(),
                access_key_id: access_key_id.clone(),
                secret_access_key: "***".into(),
            },
            Self::Rclone { remote, .. } => Self::Rclone {
                remote: remote.clone(),
                config: "***".into(),
            },
            other => other.clone(),
        }
    }

    /// In a few words, for logs and the page.
    pub fn describe(&self) -> String {
        match self {
            Self::Folder { path } => format!("the folder {path}"),
            Self::Rest { .. } => {
                let Self::Rest { url } = self.redacted() else {
                    return String::new();
                };
                format!("the REST server {url}")
            }
            Self::Sftp {
                host, user, path, ..
            } => format!("SFTP {user}@{host}:{path}"),
            Self::S3 { bucket, path, .. } => format!("the S3 bucket {bucket}/{path}"),
            Self::Rclone { remote, .. } => format!("the rclone remote {remote}"),
        }
    }

    /// The folder of a folder target.
    pub fn folder(&self) -> Option<PathBuf> {
        match self {
            Self::Folder { path } => Some(PathBuf::from(path)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(t: &Target) -> &'static str {
        t.validate(Path::new("/data")).expect_err("refused").field
    }

    #[test]
    fn bad_targets_name_their_field() {
        let folder = |p: &str| Target::Folder { path: p.into() };
        assert_eq!(field_of(&folder("relative/dir")), "target.path");
        assert_eq!(field_of(&folder("/data/apps")), "target.path");
        assert_eq!(field_of(&folder("/mnt/a/../b")), "target.path");
        assert!(
            folder("/data/disks/Backup/ddaemon")
                .validate(Path::new("/data"))
                .is_ok()
        );
        assert_eq!(
            field_of(&Target::Rest {
                url: "nas:8000".into()
            }),
            "target.url"
        );
        let sftp = Target::Sftp {
            host: "nas.local".into(),
            port: 22,
            user: "me".into(),
            path: "backups\nx".into(),
        };
        assert_eq!(field_of(&sftp), "target.path");
        let rclone = Target::Rclone {
            remote: "gdrive:ddaemon".into(),
            config: "[other]\ntype = drive\n".into(),
        };
        assert_eq!(field_of(&rclone), "target.config");
    }

    #[test]
    fn secrets_are_left_out_of_what_is_shown() {
        let rest = Target::Rest {
            url: "http://me:hunter2@nas:8000/repo".into(),
        };
        assert!(
            !serde_json::to_string(&rest.redacted())
                .expect("json")
                .contains("hunter2")
        );
        assert!(!rest.describe().contains("hunter2"));
        let sftp = Target::Sftp {
            host: "nas.local".into(),
            port: 2222,
            user: "me".into(),
            path: "backups".into(),
        };
        let a = sftp.address(Path::new("/data/ddaemon/backup/ssh_key"));
        assert_eq!(a.repository, "rclone:ddaemon-target:backups");
        let conf = a.rclone_config.expect("config");
        assert!(
            conf.contains("port = 2222\n")
                && conf.contains("key_file = /data/ddaemon/backup/ssh_key\n")
        );
    }
}
