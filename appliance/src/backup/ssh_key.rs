//! The device's own SSH key, with which it logs into an SFTP backup target.
//!
//! Ed25519, generated on the device at first use. The private key is kept
//! as PKCS#8 PEM (mode 0600), which rclone's SSH library reads; the owner is
//! shown the public key as one `authorized_keys` line.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::KeyPair as _;

/// The PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the seed's
/// 32 bytes follow.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The key's files.
#[derive(Debug, Clone)]
pub struct SshKey {
    pub private: PathBuf,
}

impl SshKey {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            private: dir.join("ssh_key"),
        }
    }

    /// The public key as an `authorized_keys` line, creating the key first
    /// if there is none.
    pub fn public_line(&self, comment: &str) -> std::io::Result<String> {
        let seed = self.seed_or_create()?;
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| std::io::Error::other(format!("SSH key: {e}")))?;
        let mut blob = Vec::with_capacity(51);
        for part in [b"ssh-ed25519".as_slice(), pair.public_key().as_ref()] {
            blob.extend_from_slice(&u32::try_from(part.len()).unwrap_or(0).to_be_bytes());
            blob.extend_from_slice(part);
        }
        Ok(format!("ssh-ed25519 {} {comment}", STANDARD.encode(blob)))
    }

    /// The private key's seed, created (and written atomically) if absent.
    pub fn seed_or_create(&self) -> std::io::Result<[u8; 32]> {
        match std::fs::read_to_string(&self.private) {
            Ok(pem) => parse_pem(&pem).ok_or_else(|| {
                std::io::Error::other(format!("{} is not an Ed25519 key", self.private.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
                let mut der = PKCS8_ED25519_PREFIX.to_vec();
                der.extend_from_slice(&seed);
                let pem = format!(
                    "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                    STANDARD.encode(der)
                );
                ddaemon_runtime::fs_atomic::write_atomic_mode(
                    &self.private,
                    pem.as_bytes(),
                    0o600,
                )?;
                Ok(seed)
            }
            Err(e) => Err(e),
        }
    }
}

fn parse_pem(pem: &str) -> Option<[u8; 32]> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body.trim()).ok()?;
    der.strip_prefix(&PKCS8_ED25519_PREFIX)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SshKey::in_dir(dir.path());
        let first = key.public_line("ddaemon").expect("key");
        assert!(
            first.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"),
            "{first}"
        );
        assert_eq!(key.public_line("ddaemon").expect("again"), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key.private)
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
