//! Password rules and argon2id hashing.
//!
//! Hashing is CPU- and memory-heavy by design, so it runs on the blocking pool
//! and at most two at a time: a flood of logins must not starve a Pi.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::field_error::FieldError;

/// The shortest password the setup accepts.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// The longest; hashing a megabyte-long "password" is a denial of service.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Checks a new password and its confirmation.
/// The NT hash of a password (MD4 of its UTF-16LE form), hex: what SMB
/// logins are checked against. It is as good as the password to an SMB
/// server, so it is kept like a secret (the state database, 0600 files).
pub fn nt_hash(password: &str) -> String {
    use md4::Digest as _;
    let utf16: Vec<u8> = password.encode_utf16().flat_map(u16::to_le_bytes).collect();
    hex::encode_upper(md4::Md4::digest(&utf16))
}

pub fn check_new_password(password: &str, confirm: &str) -> Result<(), FieldError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(FieldError::new(
            "password",
            format!(
                "the password has {chars} characters; use at least {MIN_PASSWORD_CHARS} (a few words in a row are easy to remember)"
            ),
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(FieldError::new(
            "password",
            format!(
                "the password is longer than {MAX_PASSWORD_CHARS} characters; use a shorter one"
            ),
        ));
    }
    if password != confirm {
        return Err(FieldError::new(
            "password_confirm",
            "the two passwords differ; type the same password in both fields",
        ));
    }
    Ok(())
}

/// Hashes and verifies passwords with argon2id, bounded in concurrency.
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(2)),
        }
    }
}

/// Hashing failed (only on an OS without randomness or a broken hash string).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

fn argon2() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane. Fine on a Pi 4.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl PasswordHasher {
    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || {
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).map_err(|e| HashError(e.to_string()))?;
            let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
            argon2()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError(e.to_string()))
        })
        .await
    }

    /// Whether `password` matches the stored PHC string.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, HashError> {
        self.run(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| HashError(e.to_string()))?;
            Ok(argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }

    /// Runs `work` on the blocking pool once a slot is free. The slot travels
    /// into the blocking task: if the caller goes away, the hash still runs
    /// to its end and keeps its slot until then, so hanging up cannot start
    /// more hashes than there are slots.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| HashError(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| HashError(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_password_names_the_field_and_the_minimum() {
        let err = check_new_password("short", "short").expect_err("too short");
        assert_eq!(err.field, "password");
        assert!(err.message.contains("at least 10"), "{}", err.message);
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // Nine characters, but more than ten bytes in UTF-8.
        assert!(check_new_password("ééééééééé", "ééééééééé").is_err());
        assert!(check_new_password("éééééééééé", "éééééééééé").is_ok());
    }

    #[test]
    fn mismatch_names_the_confirmation() {
        let err = check_new_password("correct horse", "correct horsf").expect_err("differ");
        assert_eq!(err.field, "password_confirm");
    }

    #[tokio::test]
    async fn hash_is_argon2id_and_verifies_only_the_right_password() {
        let hasher = PasswordHasher::default();
        let phc = hasher
            .hash("correct horse battery".into())
            .await
            .expect("hash");
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(
            hasher
                .verify("correct horse battery".into(), phc.clone())
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("correct horse batterx".into(), phc)
                .await
                .expect("verify")
        );
    }
}
