//! Samba's side of the shares: ddaemon writes, each atomically,
//! - `ddaemon.conf`, included by the device's smb.conf inside `[global]`:
//!   the global settings ddaemon owns and one section per share;
//! - `smbpasswd`, the users' NT hashes (Samba's smbpasswd passdb);
//! - `passwd` and `group` in libnss-extrausers' folder, the Unix accounts
//!   Samba maps its users (and the owners of shared folders) to;
//!
//! then checks the configuration with `testparm` and asks smbd to reload.
//! A reload that fails puts the previous configuration back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ddaemon_runtime::command::{CommandError, run};
use ddaemon_runtime::fs_atomic::{write_atomic, write_atomic_mode};

use crate::state::{Share, UserRecord};
use crate::system::systemd::{UnitJob, run_unit_job};

/// Unix ids of ddaemon's users: 2000 + their id.
const USER_ID_BASE: u32 = 2000;

fn unix_id(user: &UserRecord) -> u32 {
    USER_ID_BASE + u32::try_from(user.id).unwrap_or(0)
}

/// How smbd learns that its configuration changed.
#[derive(Debug, Clone)]
pub enum Reload {
    /// `systemctl reload-or-restart smbd` (the device).
    Systemd,
    /// SIGHUP to the pid in this file (a smbd a test started).
    PidFile(PathBuf),
    /// Files only (no smbd here).
    None,
}

/// Where Samba's files go.
#[derive(Debug, Clone)]
pub struct SambaFiles {
    /// `DATA/ddaemon/samba`: ddaemon.conf and smbpasswd.
    pub dir: PathBuf,
    /// libnss-extrausers' folder (`/var/lib/extrausers`).
    pub unix_users: PathBuf,
    pub reload: Reload,
}

#[derive(Debug, thiserror::Error)]
pub enum SambaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Samba refused the configuration: {0}")]
    Rejected(String),
    #[error("smbd did not reload: {0}; the previous configuration was put back")]
    Reload(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SambaError + '_ {
    move |source| SambaError::Io {
        path: path.to_owned(),
        source,
    }
}

impl SambaFiles {
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("ddaemon.conf")
    }

    /// Writes every file for `shares` and `users` and reloads smbd if its
    /// configuration changed, or anyway with `force` (at start: smbd is
    /// off at boot until there is something to share).
    pub async fn apply(
        &self,
        shares: &[Share],
        users: &[UserRecord],
        force: bool,
    ) -> Result<(), SambaError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        std::fs::create_dir_all(&self.unix_users).map_err(io(&self.unix_users))?;
        let owners = folder_owners(shares);
        let (passwd, group) = unix_accounts(users, &owners);
        // Account names are public (every program looks them up); the
        // NT hashes are password equivalents, for root only.
        write_atomic_mode(&self.unix_users.join("passwd"), passwd.as_bytes(), 0o644)
            .map_err(io(&self.unix_users))?;
        write_atomic_mode(&self.unix_users.join("group"), group.as_bytes(), 0o644)
            .map_err(io(&self.unix_users))?;
        let smbpasswd = self.dir.join("smbpasswd");
        write_atomic(&smbpasswd, smbpasswd_file(users).as_bytes()).map_err(io(&smbpasswd))?;

        let config = config_text(&smbpasswd, shares, &owners);
        let path = self.config_path();
        let previous = std::fs::read_to_string(&path).ok();
        if previous.as_deref() == Some(config.as_str()) {
            return if force {
                self.reload(shares.is_empty())
                    .await
                    .map_err(SambaError::Reload)
            } else {
                Ok(())
            };
        }
        check(&self.dir, &config).await?;
        write_atomic_mode(&path, config.as_bytes(), 0o644).map_err(io(&path))?;
        if let Err(err) = self.reload(shares.is_empty()).await {
            match previous {
                Some(text) => {
                    write_atomic_mode(&path, text.as_bytes(), 0o644).map_err(io(&path))?
                }
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
            let _ = self.reload(shares.is_empty()).await;
            return Err(SambaError::Reload(err));
        }
        Ok(())
    }

    /// With nothing shared, the device's smbd is stopped instead.
    async fn reload(&self, nothing_shared: bool) -> Result<(), String> {
        match &self.reload {
            Reload::None => Ok(()),
            Reload::Systemd => {
                let job = if nothing_shared {
                    UnitJob::Stop
                } else {
                    UnitJob::ReloadOrRestart
                };
                run_unit_job("smbd.service", job)
                    .await
                    .map_err(|e| e.to_string())
            }
            // No pid file: no smbd runs, and the next one reads the files.
            Reload::PidFile(file) if !file.exists() => Ok(()),
            Reload::PidFile(file) => {
                let pid: i32 = std::fs::read_to_string(file)
                    .map_err(|e| format!("{}: {e}", file.display()))?
                    .trim()
                    .parse()
                    .map_err(|_| format!("{} holds no pid", file.display()))?;
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGHUP,
                )
                .map_err(|e| format!("smbd (pid {pid}): {e}"))
            }
        }
    }
}

/// `testparm` on the new configuration alone, before it is installed.
async fn check(dir: &Path, config: &str) -> Result<(), SambaError> {
    let candidate = dir.join("ddaemon.conf.check");
    std::fs::write(&candidate, format!("[global]\n{config}")).map_err(io(&candidate))?;
    let result = run(
        "testparm",
        &[
            "--suppress-prompt",
            "--debuglevel=1",
            &candidate.to_string_lossy(),
        ],
        None,
        Duration::from_secs(30),
    )
    .await;
    let _ = std::fs::remove_file(&candidate);
    match result {
        // Without testparm (Samba not installed) there is nothing to serve.
        Err(CommandError::Spawn { .. }) => Ok(()),
        Err(CommandError::Failed { stderr, .. }) => Err(SambaError::Rejected(stderr)),
        Err(err) => Err(SambaError::Rejected(err.to_string())),
        Ok(_) => Ok(()),
    }
}

/// The owner (uid, gid) of each share's folder: files written through a
/// share belong to whoever owns the folder (an app's own user, say).
fn folder_owners(shares: &[Share]) -> BTreeMap<String, (u32, u32)> {
    shares
        .iter()
        .filter_map(|s| {
            let m = std::fs::metadata(&s.path).ok()?;
            Some((s.name.clone(), (m.uid(), m.gid())))
        })
        .collect()
}

/// The Unix account name Samba acts as for files owned by `uid`. Never
/// root: a folder of the system's is served as the share account, which
/// may read what everyone may.
fn owner_name(uid: u32) -> String {
    if uid == 0 || uid == super::SHARE_UID {
        super::SHARE_ACCOUNT.to_owned()
    } else {
        format!("ddaemon-owner-{uid}")
    }
}

/// extrausers' passwd and group: the share account, one account per
/// ddaemon user, and one per other owner of a shared folder.
fn unix_accounts(users: &[UserRecord], owners: &BTreeMap<String, (u32, u32)>) -> (String, String) {
    let share = super::SHARE_UID;
    let mut passwd = format!(
        "{}:x:{share}:{share}:files written through shares:/nonexistent:/usr/sbin/nologin\n",
        super::SHARE_ACCOUNT
    );
    let mut group = format!("{}:x:{share}:\n", super::SHARE_ACCOUNT);
    for u in users {
        let id = unix_id(u);
        let _ = writeln!(
            passwd,
            "{}:x:{id}:{id}:ddaemon user:/nonexistent:/usr/sbin/nologin",
            u.name
        );
        let _ = writeln!(group, "{}:x:{id}:", u.name);
    }
    let mut seen = std::collections::BTreeSet::new();
    for (uid, gid) in owners.values() {
        if *uid == 0 || *uid == share || !seen.insert(*uid) {
            continue;
        }
        let _ = writeln!(
            passwd,
            "{}:x:{uid}:{gid}:owner of a shared folder:/nonexistent:/usr/sbin/nologin",
            owner_name(*uid)
        );
    }
    (passwd, group)
}

/// Samba's smbpasswd file: `name:uid:LM:NT:[flags]:LCT-time:`. No LM
/// hashes, ever; a user whose NT hash is not known yet (set up before
/// shares existed, not logged in since) is left out. The last-change time
/// is fixed and not zero: zero means "must change the password", which an
/// SMB client cannot do here; fixed keeps the file unchanged between syncs.
fn smbpasswd_file(users: &[UserRecord]) -> String {
    let mut out = String::new();
    for u in users {
        let Some(nt) = &u.nt_hash else { continue };
        let id = unix_id(u);
        let _ = writeln!(
            out,
            "{}:{id}:{}:{nt}:[U          ]:LCT-60000000:",
            u.name,
            "X".repeat(32)
        );
    }
    out
}

/// The model smbd tells Macs (`fruit:model`), also announced over mDNS.
pub const FRUIT_MODEL: &str = "MacSamba";

/// `ddaemon.conf`: global settings, then a section per share.
fn config_text(
    smbpasswd: &Path,
    shares: &[Share],
    owners: &BTreeMap<String, (u32, u32)>,
) -> String {
    let mut out = String::from("# Written by ddaemon from its shares; edits here are replaced.\n");
    let _ = writeln!(out, "   passdb backend = smbpasswd:{}", smbpasswd.display());
    out.push_str(
        "   map to guest = never\n   restrict anonymous = 2\n   server min protocol = SMB2_10\n   \
         disable netbios = yes\n   load printers = no\n   printing = bsd\n   printcap name = /dev/null\n   \
         disable spoolss = yes\n   multicast dns register = no\n",
    );
    if shares.iter().any(|s| s.time_machine) {
        // What macOS needs to find and use a Time Machine share.
        let _ = writeln!(
            out,
            "   fruit:model = {FRUIT_MODEL}\n   fruit:metadata = stream"
        );
    }
    for s in shares {
        let _ = writeln!(out, "\n[{}]", s.name);
        let _ = writeln!(out, "   path = {}", s.path);
        let _ = writeln!(
            out,
            "   read only = {}",
            if s.read_only { "yes" } else { "no" }
        );
        let _ = writeln!(out, "   valid users = {}", s.users.join(" "));
        if let Some((uid, _)) = owners.get(&s.name) {
            let _ = writeln!(out, "   force user = {}", owner_name(*uid));
        }
        out.push_str("   browseable = yes\n");
        if s.time_machine {
            out.push_str(
                "   vfs objects = catia fruit streams_xattr\n   fruit:time machine = yes\n",
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, name: &str, nt: Option<&str>) -> UserRecord {
        UserRecord {
            id,
            name: name.into(),
            password_hash: String::new(),
            role: "admin".into(),
            nt_hash: nt.map(str::to_owned),
        }
    }

    #[test]
    fn smbpasswd_lines_have_no_lm_hash_and_skip_unknown_hashes() {
        let text = smbpasswd_file(&[
            user(1, "admin", Some("8846F7EAEE8FB117AD06BDD830B7586C")),
            user(2, "later", None),
        ]);
        assert_eq!(
            text,
            "admin:2001:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX:8846F7EAEE8FB117AD06BDD830B7586C:[U          ]:LCT-60000000:\n"
        );
    }

    #[test]
    fn the_nt_hash_is_md4_of_utf16() {
        // The well-known NT hash of "password".
        assert_eq!(
            crate::auth::nt_hash("password"),
            "8846F7EAEE8FB117AD06BDD830B7586C"
        );
    }

    #[test]
    fn shares_become_sections_with_their_owner() {
        let shares = vec![Share {
            name: "Media".into(),
            path: "/data/disks/Media".into(),
            read_only: true,
            users: vec!["admin".into()],
            time_machine: false,
            nfs: false,
        }];
        let owners = BTreeMap::from([("Media".to_owned(), (1000, 1000))]);
        let text = config_text(Path::new("/data/ddaemon/samba/smbpasswd"), &shares, &owners);
        assert!(text.contains("passdb backend = smbpasswd:/data/ddaemon/samba/smbpasswd"));
        assert!(text.contains("[Media]\n   path = /data/disks/Media\n   read only = yes\n   valid users = admin\n   force user = ddaemon-owner-1000\n"));
        assert!(!text.contains("fruit"));
        let (passwd, _) = unix_accounts(&[user(1, "admin", None)], &owners);
        assert!(passwd.contains("admin:x:2001:2001:"));
        assert!(passwd.contains("ddaemon-owner-1000:x:1000:1000:"));
    }
}
