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
        let trimmed = input.trim();
        let inner: Reference =
            trimmed
                .parse()
                .map_err(|e: oci_client::ParseError| BadImageRef {
                    input: input.to_owned(),
                    reason: e.to_string(),
                })?;
        if let Some(digest) = inner.digest() {
            crate::digest::Digest::parse(digest).map_err(|e| BadImageRef {
                input: input.to_owned(),
                reason: e.to_string(),
            })?;
        }
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
    }
}
