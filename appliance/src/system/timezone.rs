//! Time zones, from the system's tz database.
//!
//! A zone is accepted if the tz database on this system has it, which is
//! exactly the set the device can apply. The list offered in setup is the
//! canonical one (`zone1970.tab`) plus `UTC`.

use std::path::{Path, PathBuf};

use crate::field_error::FieldError;

/// The tz database on a Debian system.
pub const SYSTEM_ZONEINFO: &str = "/usr/share/zoneinfo";

/// The time zones this system knows.
#[derive(Debug, Clone)]
pub struct TimeZones {
    root: PathBuf,
    offered: Vec<String>,
}

impl TimeZones {
    /// Reads the zone list under `root` (a `zoneinfo` folder). A missing
    /// database leaves only `UTC`, which needs no file.
    pub fn load(root: &Path) -> Self {
        let mut offered: Vec<String> = std::fs::read_to_string(root.join("zone1970.tab"))
            .map(|tab| {
                tab.lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| l.split('\t').nth(2))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        offered.push("UTC".to_owned());
        offered.sort();
        offered.dedup();
        Self {
            root: root.to_owned(),
            offered,
        }
    }

    /// The zones setup offers, sorted.
    pub fn offered(&self) -> &[String] {
        &self.offered
    }

    /// Checks that `name` is a zone this system can apply.
    pub fn check(&self, name: &str) -> Result<String, FieldError> {
        const FIELD: &str = "timezone";
        let name = name.trim();
        if name == "UTC" {
            return Ok(name.to_owned());
        }
        let well_formed = !name.is_empty()
            && name.len() <= 64
            && name.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
            });
        let known = well_formed && is_tzif(&self.root.join(name));
        if known {
            Ok(name.to_owned())
        } else {
            Err(FieldError::new(
                FIELD,
                format!(
                    "{name:?} is not a known time zone; pick one from the list, such as \"Europe/Berlin\" or \"UTC\""
                ),
            ))
        }
    }
}

fn is_tzif(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"TZif"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_db() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("Europe")).expect("mkdir");
        std::fs::write(dir.path().join("Europe/Berlin"), b"TZif2...").expect("zone");
        std::fs::write(dir.path().join("Europe/notazone"), b"hello").expect("file");
        std::fs::write(
            dir.path().join("zone1970.tab"),
            "# comment\nDE,DK\t+5230+01322\tEurope/Berlin\n",
        )
        .expect("tab");
        dir
    }

    #[test]
    fn offers_canonical_zones_and_utc() {
        let db = fake_db();
        let zones = TimeZones::load(db.path());
        assert_eq!(zones.offered(), ["Europe/Berlin", "UTC"]);
    }

    #[test]
    fn accepts_known_refuses_unknown_and_traversal() {
        let db = fake_db();
        let zones = TimeZones::load(db.path());
        assert_eq!(zones.check("Europe/Berlin").as_deref(), Ok("Europe/Berlin"));
        assert_eq!(zones.check("UTC").as_deref(), Ok("UTC"));
        for bad in [
            "Mars/Olympus",
            "Europe/notazone",
            "../../etc/passwd",
            "Europe/../Europe/Berlin",
            "",
            "/etc/passwd",
        ] {
            assert_eq!(zones.check(bad).expect_err(bad).field, "timezone");
        }
    }

    #[test]
    fn missing_database_still_allows_utc() {
        let zones = TimeZones::load(Path::new("/nonexistent/zoneinfo"));
        assert_eq!(zones.offered(), ["UTC"]);
        assert!(zones.check("UTC").is_ok());
    }
}
