//! Image references, read the way Docker reads them: `jellyfin/jellyfin`
//! is `docker.io/jellyfin/jellyfin:latest`, `nginx` is
//! `docker.io/library/nginx:latest`, and a digest pins the content.

use std::fmt;

use oci_client::Reference;

/// A parsed, fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

/// A reference that cannot be parsed.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{input:?} is not an image reference ({reason}); write it like \"jellyfin/jellyfin:10.9\" or \"ghcr.io/owner/name@sha256:...\""
)]
pub struct BadImageRef {
    pub input: String,
    pub reason: String,
}

impl ImageRef {
    /// Parses a reference as Docker would.
    pub fn parse(input: &str) -> Result<Self, BadImageRef> {
        let bad = |reason: &str| BadImageRef {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let (registry, repository, tag, digest) = split(input.trim()).map_err(bad)?;
        if let Some(digest) = &digest {
            crate::digest::Digest::parse(digest).map_err(|e| bad(&e.to_string()))?;
        }
        let inner = match (tag, digest) {
            (Some(tag), Some(digest)) => {
                Reference::with_tag_and_digest(registry, repository, tag, digest)
            }
            (None, Some(digest)) => Reference::with_digest(registry, repository, digest),
            (tag, None) => {
                Reference::with_tag(registry, repository, tag.unwrap_or_else(|| "latest".into()))
            }
        };
        Ok(Self { inner })
    }

    /// The registry host, as written (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path (`library/nginx`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The registry client's form.
    pub fn as_reference(&self) -> &Reference {
        &self.inner
    }

    /// The same image pinned to `digest` (keeping the tag for display).
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            inner: self.inner.clone_with_digest(digest.to_owned()),
        }
    }
}

/// A path component: `[a-z0-9]+` joined by `.`, `_`, `__` or any run of `-`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// A registry: host name labels or an IP address, and an optional port.
fn is_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !host.is_empty()
        && host.split('.').all(label)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|x| x.is_ascii_digit()))
}

/// Docker's grammar, without a regular expression (the registry client's
/// costs megabytes of memory to compile): `[registry/]path[:tag][@digest]`,
/// filled in with `docker.io`, `library/` and `latest`.
#[allow(clippy::type_complexity)]
fn split(input: &str) -> Result<(String, String, Option<String>, Option<String>), &'static str> {
    if input.is_empty() {
        return Err("it is empty");
    }
    let (rest, digest) = match input.split_once('@') {
        Some((r, d)) => (r, Some(d.to_owned())),
        None => (input, None),
    };
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .next()
                .is_some_and(|x| x.is_ascii_alphanumeric() || x == b'_')
            && t.bytes()
                .all(|x| x.is_ascii_alphanumeric() || b"_.-".contains(&x));
        if !ok {
            return Err("the tag may have letters, digits, '_', '.' and '-', at most 128");
        }
    }
    if name.len() > 255 {
        return Err("the name is longer than 255 characters");
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components.first().copied().unwrap_or_default();
    let has_domain = components.len() > 1
        && (first.contains('.') || first.contains(':') || first == "localhost");
    let registry = if has_domain {
        components.remove(0);
        if !is_domain(first) {
            return Err("the registry is not a host name with an optional port");
        }
        if first == "index.docker.io" {
            "docker.io"
        } else {
            first
        }
    } else {
        "docker.io"
    };
    if components
        .iter()
        .any(|c| c.bytes().any(|x| x.is_ascii_uppercase()))
    {
        return Err("the repository name must be lower-case");
    }
    if !components.iter().all(|c| is_path_component(c)) {
        return Err("the repository has a character or separator Docker does not allow");
    }
    let mut repository = components.join("/");
    if registry == "docker.io" && components.len() == 1 {
        repository = format!("library/{repository}");
    }
    Ok((
        registry.to_owned(),
        repository,
        tag.map(str::to_owned),
        digest,
    ))
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(input: &str) -> (String, String, Option<String>, Option<String>) {
        let r = ImageRef::parse(input).expect(input);
        (
            r.registry().to_owned(),
            r.repository().to_owned(),
            r.tag().map(str::to_owned),
            r.digest().map(str::to_owned),
        )
    }

    #[test]
    fn docker_defaults() {
        assert_eq!(
            parts("jellyfin/jellyfin"),
            (
                "docker.io".into(),
                "jellyfin/jellyfin".into(),
                Some("latest".into()),
                None
            )
        );
        assert_eq!(
            parts("nginx"),
            (
                "docker.io".into(),
                "library/nginx".into(),
                Some("latest".into()),
                None
            )
        );
        assert_eq!(
            parts("lscr.io/linuxserver/calibre-web:latest"),
            (
                "lscr.io".into(),
                "linuxserver/calibre-web".into(),
                Some("latest".into()),
                None
            )
        );
        assert_eq!(
            parts("127.0.0.1:5000/test/busybox:1.36"),
            (
                "127.0.0.1:5000".into(),
                "test/busybox".into(),
                Some("1.36".into()),
                None
            )
        );
    }

    #[test]
    fn digests_pin_and_are_checked() {
        let digest = format!("sha256:{}", "0".repeat(64));
        let (reg, repo, _, d) = parts(&format!("ghcr.io/o/n@{digest}"));
        assert_eq!(
            (reg.as_str(), repo.as_str(), d),
            ("ghcr.io", "o/n", Some(digest))
        );
        assert!(ImageRef::parse("ghcr.io/o/n@sha256:abc").is_err());
    }

    #[test]
    fn nonsense_is_refused_with_the_input_named() {
        let err = ImageRef::parse("UPPER/Case").expect_err("uppercase repo");
        assert!(err.to_string().contains("UPPER/Case"), "{err}");
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("a b").is_err());
        for bad in [
            "a//b",
            "-a/b",
            "a/b:",
            "a/b:-x",
            "a__-b",
            "host:port/x",
            "a/b@",
            ":tag",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_grammar_matches_docker() {
        for (input, whole) in [
            ("index.docker.io/nginx:1", "docker.io/library/nginx:1"),
            ("localhost/app:dev", "localhost/app:dev"),
            ("localhost:5000/a/b/c", "localhost:5000/a/b/c:latest"),
            (
                "my-registry.example.com:443/team/app_x.y__z---w:v1.2-rc_3",
                "my-registry.example.com:443/team/app_x.y__z---w:v1.2-rc_3",
            ),
            (
                "postgres:16.6-alpine",
                "docker.io/library/postgres:16.6-alpine",
            ),
        ] {
            assert_eq!(
                ImageRef::parse(input)
                    .map(|r| r.to_string())
                    .ok()
                    .as_deref(),
                Some(whole),
                "{input}"
            );
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("ghcr.io/o/n:1.0@{digest}")).expect("tag and digest");
        assert_eq!((r.tag(), r.digest()), (Some("1.0"), Some(digest.as_str())));
    }
}
