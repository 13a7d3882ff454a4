//! The secrets an app's manifest asks for (database passwords and the
//! like): generated on the device at the first install, kept beside the
//! app's data in `DATA/apps/<id>/secrets.json` (mode 0600) so that a
//! reinstall over kept data — and a restored backup — finds the same ones.

use std::collections::BTreeMap;
use std::path::Path;

use ddaemon_runtime::fs_atomic::write_atomic;

use super::manifest::Manifest;

/// The file's name inside the app's folder (not a volume: no container sees it).
pub const SECRETS_FILE: &str = "secrets.json";

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn generate(length: u16) -> std::io::Result<String> {
    let mut out = String::with_capacity(usize::from(length));
    let mut buf = [0u8; 64];
    while out.len() < usize::from(length) {
        getrandom::fill(&mut buf).map_err(std::io::Error::other)?;
        // 62 symbols: bytes of 248 and above would favour the first ones.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() < usize::from(length) {
                out.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// The app's secrets: those already on disk, plus new ones for names the
/// manifest adds (an update may add one). Written before it returns.
pub fn load_or_generate(app_dir: &Path, m: &Manifest) -> std::io::Result<BTreeMap<String, String>> {
    let path = app_dir.join(SECRETS_FILE);
    let mut secrets: BTreeMap<String, String> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::other(format!("{}: {e}; restore it from a backup", path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e),
    };
    let mut changed = false;
    for (name, spec) in &m.secrets {
        if !secrets.contains_key(name) {
            secrets.insert(name.clone(), generate(spec.length)?);
            changed = true;
        }
    }
    if changed {
        std::fs::create_dir_all(app_dir)?;
        // write_atomic's temporary file is created 0600, and keeps that mode.
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(&secrets).map_err(std::io::Error::other)?,
        )?;
    }
    Ok(secrets)
}

/// `value` with every `${secrets.NAME}` replaced (the manifest was
/// validated, so every name is known; an unknown one is left as written).
pub fn substitute(value: &str, secrets: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${secrets.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "${secrets.".len()..];
        match after.find('}') {
            Some(end) if secrets.contains_key(&after[..end]) => {
                out.push_str(&secrets[&after[..end]]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[start..start + 2]);
                rest = &rest[start + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_kept_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = super::super::manifest::test_manifest(
            r#"web = { service = "x", port = 80 }
secrets = { db = { length = 24 } }
services = [{ name = "x", image = "x:1", ports = [80] }]
"#,
        );
        let first = load_or_generate(dir.path(), &m).expect("generate");
        assert_eq!(first["db"].len(), 24);
        assert!(first["db"].bytes().all(|b| b.is_ascii_alphanumeric()));
        let again = load_or_generate(dir.path(), &m).expect("load");
        assert_eq!(first, again, "a second install keeps the secrets");
        m.secrets.insert(
            "other".into(),
            super::super::manifest::SecretSpec { length: 16 },
        );
        let more = load_or_generate(dir.path(), &m).expect("more");
        assert_eq!(more["db"], first["db"]);
        assert_ne!(more["other"], more["db"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(SECRETS_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "only root reads the secrets");
    }

    #[test]
    fn references_are_replaced() {
        let secrets = BTreeMap::from([("pw".to_owned(), "s3cret".to_owned())]);
        assert_eq!(
            substitute("mysql://u:${secrets.pw}@db/${x}", &secrets),
            "mysql://u:s3cret@db/${x}"
        );
        assert_eq!(substitute("${secrets.none}", &secrets), "${secrets.none}");
    }
}
