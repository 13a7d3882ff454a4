//! NFS's side of the shares marked `nfs`: ddaemon writes
//! `/etc/exports.d/ddaemon.exports` atomically, limited to the networks of
//! the device's own interfaces (the home network, never the container
//! bridge), and asks the kernel server to re-read it with `exportfs -ra`.
//! A re-read that fails puts the previous file back.
//!
//! Every client acts as the share account (`all_squash`): NFS trusts the
//! client's numeric ids, which a laptop on the home network chooses freely.
//! Clients may use any source port (`insecure`): macOS connects from
//! unprivileged ports by default, and once ids are squashed a privileged
//! port proves nothing.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ddaemon_runtime::command::run;
use ddaemon_runtime::fs_atomic::write_atomic_mode;

use crate::state::Share;
use crate::system::systemd::{UnitJob, run_unit_job};

const TIMEOUT: Duration = Duration::from_secs(60);
const NFS_SERVER: &str = "nfs-server.service";

/// Where the exports go and whether `exportfs` runs (only on the device).
#[derive(Debug, Clone)]
pub struct NfsFiles {
    pub exports: PathBuf,
    pub reload: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the NFS server did not take the exports: {0}; the previous ones were put back")]
    Reload(String),
}

/// A network a client may come from: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl NfsFiles {
    /// Writes the exports of `shares` for `networks` and re-reads them if
    /// they changed, or anyway with `force` (at start: the server is off
    /// at boot).
    pub async fn apply(
        &self,
        shares: &[Share],
        networks: &[Network],
        force: bool,
    ) -> Result<(), NfsError> {
        let text = exports_text(shares, networks);
        let previous = std::fs::read_to_string(&self.exports).ok();
        if previous.as_deref() == Some(text.as_str()) && !force {
            return Ok(());
        }
        let io = |source| NfsError::Io {
            path: self.exports.clone(),
            source,
        };
        if let Some(dir) = self.exports.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        write_atomic_mode(&self.exports, text.as_bytes(), 0o644).map_err(io)?;
        if !self.reload {
            return Ok(());
        }
        // The server is off at boot (the image disables it) until there
        // is something to export, and goes off again when nothing is.
        let exported = shares.iter().any(|s| s.nfs) && !networks.is_empty();
        let result = if exported {
            match run_unit_job(NFS_SERVER, UnitJob::Start).await {
                Ok(()) => run("exportfs", &["-ra"], None, TIMEOUT)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(err) => Err(err.to_string()),
            }
        } else {
            run_unit_job(NFS_SERVER, UnitJob::Stop)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(err) = result {
            match previous {
                Some(old) => write_atomic_mode(&self.exports, old.as_bytes(), 0o644).map_err(io)?,
                None => {
                    let _ = std::fs::remove_file(&self.exports);
                }
            }
            let _ = run("exportfs", &["-ra"], None, TIMEOUT).await;
            return Err(NfsError::Reload(err));
        }
        Ok(())
    }
}

/// The exports file: one line per NFS share, each network a client entry.
/// Paths are quoted; the shares' checks already refused what would break
/// the quoting (control characters, backslashes, `"`), on every write.
pub fn exports_text(shares: &[Share], networks: &[Network]) -> String {
    let mut out = String::from("# Written by ddaemon from its shares; edits here are replaced.\n");
    if networks.is_empty() {
        return out;
    }
    for s in shares.iter().filter(|s| s.nfs) {
        let mode = if s.read_only { "ro" } else { "rw" };
        let id = super::SHARE_UID;
        let _ = write!(out, "\"{}\"", s.path);
        for n in networks {
            let _ = write!(
                out,
                " {n}({mode},sync,insecure,no_subtree_check,all_squash,anonuid={id},anongid={id})"
            );
        }
        out.push('\n');
    }
    out
}

/// The networks of the device's own interfaces: not loopback, not the
/// container bridge or its veths, not link-local IPv6.
pub fn home_networks() -> Vec<Network> {
    let mut found: Vec<Network> = ddaemon_runtime::network::home_addresses()
        .into_iter()
        .filter(|(_, a)| !matches!(a.ip, IpAddr::V6(ip) if (ip.segments()[0] & 0xffc0) == 0xfe80))
        .map(|(_, a)| Network {
            addr: masked(a.ip, a.prefix),
            prefix: a.prefix,
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// `ip` with all but its first `prefix` bits cleared.
fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(ip) => {
            let bits = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(ip) & bits).into())
        }
        IpAddr::V6(ip) => {
            let bits = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(ip) & bits).into())
        }
    }
}

impl Network {
    /// Whether `ip` is on this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && masked(ip, self.prefix) == masked(self.addr, self.prefix)
    }
}

/// Where the exports go on a device; elsewhere, a file in the data folder.
pub fn exports_path(on_device: bool, data_dir: &Path) -> PathBuf {
    if on_device {
        PathBuf::from("/etc/exports.d/ddaemon.exports")
    } else {
        data_dir.join("ddaemon/nfs/ddaemon.exports")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(name: &str, read_only: bool, nfs: bool) -> Share {
        Share {
            name: name.into(),
            path: format!("/data/disks/{name}"),
            read_only,
            users: vec!["admin".into()],
            time_machine: false,
            nfs,
        }
    }

    #[test]
    fn only_nfs_shares_are_exported_to_the_home_networks() {
        let nets = [
            Network {
                addr: "192.168.1.0".parse().expect("ip"),
                prefix: 24,
            },
            Network {
                addr: "fd00::".parse().expect("ip"),
                prefix: 64,
            },
        ];
        let text = exports_text(
            &[
                share("Media", true, true),
                share("Private", false, false),
                share("Drop Box", false, true),
            ],
            &nets,
        );
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "\"/data/disks/Media\" 192.168.1.0/24(ro,sync,insecure,no_subtree_check,all_squash,anonuid=1999,anongid=1999) fd00::/64(ro,sync,insecure,no_subtree_check,all_squash,anonuid=1999,anongid=1999)",
                "\"/data/disks/Drop Box\" 192.168.1.0/24(rw,sync,insecure,no_subtree_check,all_squash,anonuid=1999,anongid=1999) fd00::/64(rw,sync,insecure,no_subtree_check,all_squash,anonuid=1999,anongid=1999)",
            ]
        );
    }

    #[test]
    fn without_a_home_network_nothing_is_exported() {
        let text = exports_text(&[share("Media", true, true)], &[]);
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
