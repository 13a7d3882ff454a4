//! Which hostname the device gets: the one the owner chose, kept in
//! `/data/ddaemon/hostname` (written by the supervisor), or `ddaemon`.
//! Setting it is the `Os` trait's job; `boot` also writes it to
//! `/etc/hostname`, because systemd sets the hostname from that file
//! when it starts and would otherwise undo this.

/// The hostname when the owner has not chosen one.
pub const DEFAULT: &str = "ddaemon";

/// True for a DNS label: 1 to 63 ASCII letters, digits and hyphens, not
/// starting or ending with a hyphen.
pub fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The hostname to use, given the hostname file's text if there is one,
/// and why the file was passed over when it was.
pub fn choose(file: Option<&str>) -> (String, Option<String>) {
    let Some(text) = file else {
        return (DEFAULT.to_owned(), None);
    };
    let name = text.lines().next().unwrap_or("").trim();
    if is_dns_label(name) {
        (name.to_owned(), None)
    } else {
        (
            DEFAULT.to_owned(),
            Some(format!(
                "{name:?} is not a valid hostname (1 to 63 letters, digits and inner hyphens)"
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for good in ["ddaemon", "a", "my-box", "Box2", "0", &"x".repeat(63)] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in [
            "",
            "-box",
            "box-",
            "my box",
            "box.local",
            "bøx",
            "a_b",
            &"x".repeat(64),
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn the_file_wins_when_valid() {
        assert_eq!(choose(None), ("ddaemon".to_owned(), None));
        assert_eq!(choose(Some("homebox\n")), ("homebox".to_owned(), None));
        assert_eq!(
            choose(Some("  homebox  \nsecond line\n")),
            ("homebox".to_owned(), None)
        );
        let (name, why) = choose(Some("home box\n"));
        assert_eq!(name, "ddaemon");
        assert!(why.is_some_and(|w| w.contains("\"home box\"")));
        assert_eq!(choose(Some("")).0, "ddaemon");
        assert_eq!(choose(Some("\n")).0, "ddaemon");
    }
}
