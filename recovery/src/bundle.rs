//! Signed update bundles: what `ddaemon-image bundle` writes and what a
//! device checks before it writes a byte of it.
//!
//! A bundle is a plain tar archive, members in this order:
//!
//! 1. `manifest.json`: format, board, version, build time, and each
//!    payload's size and sha256;
//! 2. `manifest.sig`: the ed25519 signature of those exact bytes;
//! 3. the payloads, in the manifest's order: `root.erofs` (the root
//!    filesystem for the inactive slot), `vmlinuz` and `initrd.img`.
//!
//! The signature covers the manifest and the manifest covers the payloads'
//! hashes, so a device can verify everything while streaming: the manifest
//! is checked (signature, board, sizes against the known length) before the
//! first payload byte reaches the sink, and each payload's hash is checked
//! as it ends, before the sink is told to keep it. Tar because any computer
//! can look inside one (`tar tvf`).

use std::io::Read;
use std::path::{Path, PathBuf};

use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// The bundle format this code writes and reads.
pub const FORMAT: u32 = 1;
/// The file name extension of a bundle.
pub const EXTENSION: &str = "ddaemon-update";
/// Where a device keeps the public keys it trusts (hex, one per file,
/// `*.pub`); the image builder puts the signing key's public half there.
pub const TRUSTED_KEYS_DIR: &str = "/usr/share/ddaemon/update-keys";

const MANIFEST: &str = "manifest.json";
const SIGNATURE: &str = "manifest.sig";
/// A manifest is a few hundred bytes; anything larger is not ours.
const MANIFEST_MAX: u64 = 64 * 1024;
const BLOCK: u64 = 512;
const SIGNATURE_LEN: u64 = 64;

/// What a bundle says about itself, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The board id the root filesystem was built for (`x86_64-efi`, `rpi4`…).
    pub board: String,
    /// The system version the bundle installs.
    pub version: String,
    /// Build time, seconds since the epoch.
    pub created: u64,
    pub payloads: Vec<Payload>,
}

/// One file the bundle carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub kind: PayloadKind,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// What a payload is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadKind {
    /// The root filesystem image, written to the inactive slot's partition.
    Root,
    /// The kernel and initramfs the slot boots with.
    Kernel,
    Initrd,
}

impl PayloadKind {
    /// The member's name in the archive.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Root => "root.erofs",
            Self::Kernel => "vmlinuz",
            Self::Initrd => "initrd.img",
        }
    }
}

impl Manifest {
    /// The size of the whole bundle this manifest (and its signature)
    /// makes: tar headers, contents padded to 512 bytes, the end marker.
    pub fn bundle_size(&self, manifest_bytes: u64) -> u64 {
        let member = |size: u64| BLOCK + size.div_ceil(BLOCK) * BLOCK;
        member(manifest_bytes)
            + member(SIGNATURE_LEN)
            + self.payloads.iter().map(|p| member(p.size)).sum::<u64>()
            + 2 * BLOCK
    }

    pub fn payload(&self, kind: PayloadKind) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.kind == kind)
    }
}

/// Why a bundle was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "this is not a ddaemon update bundle ({0}); use a .{EXTENSION} file made by `ddaemon-image bundle`"
    )]
    NotABundle(String),
    #[error(
        "the bundle's signature does not match any key this device trusts: it was not made by whoever built this device's system, or it was altered; nothing was written"
    )]
    BadSignature,
    #[error(
        "the bundle is for the board {bundle}, this device is a {device}: download the update for {device}; nothing was written"
    )]
    WrongBoard { bundle: String, device: String },
    #[error(
        "the bundle uses format {0}, newer than this system reads ({FORMAT}): update in two steps, or use recovery mode"
    )]
    NewerFormat(u32),
    #[error(
        "the bundle is truncated ({got} of {expected} bytes): download it again; nothing was written"
    )]
    Truncated { got: u64, expected: u64 },
    #[error("the bundle ends early: download it again")]
    EndsEarly,
    #[error(
        "the bundle's {0} does not match its signed hash: the file is damaged; download it again"
    )]
    HashMismatch(&'static str),
    #[error("the bundle's manifest is not valid: {0}")]
    Manifest(String),
    #[error("cannot read the bundle: {0}")]
    Read(std::io::Error),
    #[error("{0}")]
    Target(std::io::Error),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Problems with a signing or public key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{path}: not an ed25519 private key in PKCS#8 PEM ({why}); make one with `openssl genpkey -algorithm ed25519 -out {path}`"
    )]
    Private { path: PathBuf, why: String },
    #[error("{path}: not an ed25519 public key (64 hex digits expected)")]
    Public { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The private key a build signs its bundles with.
#[derive(Debug)]
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    /// Reads a PKCS#8 PEM file (`openssl genpkey -algorithm ed25519`).
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        use rustls_pki_types::pem::PemObject as _;
        let private = |why: String| KeyError::Private {
            path: path.to_owned(),
            why,
        };
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(path)
            .map_err(|e| private(e.to_string()))?;
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map(Self)
            .map_err(|e| private(e.to_string()))
    }

    pub fn public_key(&self) -> PublicKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(raw)
    }
}

/// A public key a device trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// Every `*.pub` file of a folder (none if it does not exist).
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, KeyError> {
        let io = |source| KeyError::Io {
            path: dir.to_owned(),
            source,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let path = entry.map_err(io)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pub") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| KeyError::Io {
                path: path.clone(),
                source,
            })?;
            keys.push(Self::from_hex(&text).ok_or(KeyError::Public { path })?);
        }
        Ok(keys)
    }

    fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, sig)
            .is_ok()
    }
}

/// Writes a signed bundle to `out` (through a temporary file beside it, so
/// a half-written bundle never carries the final name).
pub fn write_bundle(
    out: &Path,
    board: &str,
    version: &str,
    created: u64,
    payloads: &[(PayloadKind, &Path)],
    key: &SigningKey,
) -> Result<Manifest, BundleError> {
    let file_err = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::File { path, source }
    };
    let mut listed = Vec::new();
    for (kind, path) in payloads {
        let (size, sha256) = digest(path).map_err(file_err(path))?;
        listed.push(Payload {
            kind: *kind,
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        board: board.to_owned(),
        version: version.to_owned(),
        created,
        payloads: listed,
    };
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Manifest(e.to_string()))?;
    let sig = key.0.sign(&text);
    let dir = out.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(file_err(dir))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp));
    let mut add = |name: &str, size: u64, data: &mut dyn Read| {
        let mut header = tar::Header::new_ustar();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(created);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, data)
            .map_err(file_err(out))
    };
    add(MANIFEST, text.len() as u64, &mut text.as_slice())?;
    add(SIGNATURE, sig.as_ref().len() as u64, &mut sig.as_ref())?;
    for (kind, path) in payloads {
        let mut file = std::fs::File::open(path).map_err(file_err(path))?;
        let size = file.metadata().map_err(file_err(path))?.len();
        add(kind.file_name(), size, &mut file)?;
    }
    let buffered = tar.into_inner().map_err(file_err(out))?;
    let tmp = buffered.into_inner().map_err(|e| BundleError::File {
        path: out.to_owned(),
        source: e.into_error(),
    })?;
    // Readable by all, like any download (a temporary file starts 0600).
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(file_err(out))?;
    tmp.as_file().sync_all().map_err(file_err(out))?;
    tmp.persist(out).map_err(|e| BundleError::File {
        path: out.to_owned(),
        source: e.error,
    })?;
    Ok(manifest)
}

/// Where a verified bundle's payloads go (the inactive slot).
pub trait PayloadSink {
    /// The manifest is signed and for this board: last chance to refuse
    /// (the slot too small, say) before anything is written.
    fn accept(&mut self, manifest: &Manifest) -> std::io::Result<()>;
    /// A piece of a payload, in order.
    fn write(&mut self, kind: PayloadKind, chunk: &[u8]) -> std::io::Result<()>;
    /// The payload is complete and its hash matched.
    fn finish(&mut self, kind: PayloadKind) -> std::io::Result<()>;
}

/// Verifies a bundle while streaming its payloads into `sink`.
///
/// `length` is the bundle's size when known (a file, or an upload's
/// Content-Length): a bundle shorter than its manifest says is refused
/// before a payload byte is written. When it returns `Ok`, every payload
/// went to the sink whole and matched its signed hash.
pub fn read_bundle<R: Read>(
    reader: R,
    length: Option<u64>,
    keys: &[PublicKey],
    board: &str,
    sink: &mut dyn PayloadSink,
) -> Result<Manifest, BundleError> {
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(BundleError::Read)?;
    let mut next = |what: &str| -> Result<tar::Entry<'_, R>, BundleError> {
        match entries.next() {
            Some(Ok(entry)) => Ok(entry),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(BundleError::EndsEarly)
            }
            Some(Err(e)) => Err(BundleError::NotABundle(format!("{what}: {e}"))),
            None => Err(BundleError::NotABundle(format!("{what} is missing"))),
        }
    };
    let manifest_text = {
        let mut entry = next(MANIFEST)?;
        let name = member_name(&entry);
        if name != MANIFEST {
            return Err(BundleError::NotABundle(format!(
                "its first member is {name}, not {MANIFEST}"
            )));
        }
        read_small(&mut entry, MANIFEST_MAX)?
    };
    let sig = {
        let mut entry = next(SIGNATURE)?;
        let name = member_name(&entry);
        if name != SIGNATURE {
            return Err(BundleError::NotABundle(format!(
                "its second member is {name}, not {SIGNATURE}"
            )));
        }
        read_small(&mut entry, 1024)?
    };
    if !keys.iter().any(|k| k.verifies(&manifest_text, &sig)) {
        return Err(BundleError::BadSignature);
    }
    // Signed: from here the manifest is the builder's own words.
    let manifest = parse_manifest(&manifest_text)?;
    if manifest.board != board {
        return Err(BundleError::WrongBoard {
            bundle: manifest.board,
            device: board.to_owned(),
        });
    }
    let expected = manifest.bundle_size(manifest_text.len() as u64);
    if let Some(got) = length
        && got < expected
    {
        return Err(BundleError::Truncated { got, expected });
    }
    sink.accept(&manifest).map_err(BundleError::Target)?;
    let mut buf = vec![0u8; 1 << 20];
    for payload in &manifest.payloads {
        let mut entry = next(payload.kind.file_name())?;
        let name = member_name(&entry);
        if name != payload.kind.file_name()
            || entry.size() != payload.size
            || entry.header().entry_type() != tar::EntryType::Regular
        {
            return Err(BundleError::Manifest(format!(
                "member {name} is not the {} of {} bytes the manifest lists",
                payload.kind.file_name(),
                payload.size
            )));
        }
        let mut hasher = sha2::Sha256::new();
        let mut done = 0u64;
        while done < payload.size {
            let n = entry.read(&mut buf).map_err(BundleError::Read)?;
            if n == 0 {
                return Err(BundleError::EndsEarly);
            }
            hasher.update(&buf[..n]);
            sink.write(payload.kind, &buf[..n])
                .map_err(BundleError::Target)?;
            done += n as u64;
        }
        if hex::encode(hasher.finalize()) != payload.sha256 {
            return Err(BundleError::HashMismatch(payload.kind.file_name()));
        }
        sink.finish(payload.kind).map_err(BundleError::Target)?;
    }
    Ok(manifest)
}

fn member_name<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    entry
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "an unreadable name".into())
}

fn read_small<R: Read>(entry: &mut tar::Entry<'_, R>, max: u64) -> Result<Vec<u8>, BundleError> {
    // entry.size(), not the header's: a PAX record may say otherwise.
    let size = entry.size();
    if size > max || entry.header().entry_type() != tar::EntryType::Regular {
        return Err(BundleError::NotABundle(format!(
            "{} is not a small regular file ({size} bytes)",
            member_name(entry)
        )));
    }
    let mut data = Vec::new();
    entry
        .by_ref()
        .take(max + 1)
        .read_to_end(&mut data)
        .map_err(BundleError::Read)?;
    if (data.len() as u64) < size {
        return Err(BundleError::EndsEarly);
    }
    Ok(data)
}

fn parse_manifest(text: &[u8]) -> Result<Manifest, BundleError> {
    // The format first, so a newer bundle gets the helpful message rather
    // than a complaint about fields this version does not know.
    let format = serde_json::from_slice::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("format").and_then(serde_json::Value::as_u64))
        .ok_or_else(|| BundleError::Manifest("no format number".into()))?;
    if format > u64::from(FORMAT) {
        return Err(BundleError::NewerFormat(
            u32::try_from(format).unwrap_or(u32::MAX),
        ));
    }
    let manifest: Manifest =
        serde_json::from_slice(text).map_err(|e| BundleError::Manifest(e.to_string()))?;
    // Format 1 carries a whole slot: an entry must never point at a
    // kernel or initrd left over from an earlier install.
    for kind in [PayloadKind::Root, PayloadKind::Kernel, PayloadKind::Initrd] {
        if manifest.payload(kind).is_none_or(|p| p.size == 0) {
            return Err(BundleError::Manifest(format!(
                "it carries no {}",
                kind.file_name()
            )));
        }
    }
    Ok(manifest)
}

/// A file's size and sha256 (hex).
pub fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    digest_reader(&mut file, u64::MAX)
}

/// The size and sha256 of at most `limit` bytes of a reader.
pub fn digest_reader(reader: &mut dyn Read, limit: u64) -> std::io::Result<(u64, String)> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    while size < limit {
        let want = usize::try_from((limit - size).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// A sink that writes nothing: `ddaemon update verify`.
#[derive(Debug, Default)]
pub struct Discard;

impl PayloadSink for Discard {
    fn accept(&mut self, _: &Manifest) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: PayloadKind, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn finish(&mut self, _: PayloadKind) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The development key: tests and `scripts/test` sign with it.
    fn dev_key() -> SigningKey {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/keys/development-only.pem");
        SigningKey::from_pem_file(&path).expect("development key")
    }

    #[derive(Default)]
    struct Collect {
        accepted: bool,
        data: HashMap<PayloadKind, Vec<u8>>,
        finished: Vec<PayloadKind>,
    }

    impl PayloadSink for Collect {
        fn accept(&mut self, _: &Manifest) -> std::io::Result<()> {
            self.accepted = true;
            Ok(())
        }
        fn write(&mut self, kind: PayloadKind, chunk: &[u8]) -> std::io::Result<()> {
            self.data.entry(kind).or_default().extend_from_slice(chunk);
            Ok(())
        }
        fn finish(&mut self, kind: PayloadKind) -> std::io::Result<()> {
            self.finished.push(kind);
            Ok(())
        }
    }

    fn make(dir: &Path, board: &str) -> (PathBuf, Vec<u8>) {
        let root: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.join("root"), &root).expect("root");
        std::fs::write(dir.join("kernel"), b"kernel").expect("kernel");
        std::fs::write(dir.join("initrd"), b"initrd!").expect("initrd");
        let out = dir.join(format!("b.{EXTENSION}"));
        write_bundle(
            &out,
            board,
            "9.9",
            1_700_000_000,
            &[
                (PayloadKind::Root, &dir.join("root")),
                (PayloadKind::Kernel, &dir.join("kernel")),
                (PayloadKind::Initrd, &dir.join("initrd")),
            ],
            &dev_key(),
        )
        .expect("write");
        (out, root)
    }

    fn read(
        path: &Path,
        keys: &[PublicKey],
        board: &str,
    ) -> (Result<Manifest, BundleError>, Collect) {
        let bytes = std::fs::read(path).expect("bundle");
        let mut sink = Collect::default();
        let r = read_bundle(
            bytes.as_slice(),
            Some(bytes.len() as u64),
            keys,
            board,
            &mut sink,
        );
        (r, sink)
    }

    #[test]
    fn a_signed_bundle_streams_every_payload_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, root) = make(dir.path(), "x86_64-efi");
        let len = std::fs::metadata(&path).expect("meta").len();
        let (manifest, sink) = read(&path, &[dev_key().public_key()], "x86_64-efi");
        let manifest = manifest.expect("accepted");
        assert_eq!(manifest.version, "9.9");
        assert_eq!(sink.data[&PayloadKind::Root], root);
        assert_eq!(sink.data[&PayloadKind::Kernel], b"kernel");
        assert_eq!(
            sink.finished,
            [PayloadKind::Root, PayloadKind::Kernel, PayloadKind::Initrd]
        );
        let text_len = serde_json::to_vec_pretty(&manifest).expect("json").len() as u64;
        assert_eq!(manifest.bundle_size(text_len), len, "the size it predicts");
        // `tar` reads it too.
        let listing = std::process::Command::new("tar")
            .arg("tf")
            .arg(&path)
            .output()
            .expect("tar");
        assert_eq!(
            String::from_utf8_lossy(&listing.stdout),
            "manifest.json\nmanifest.sig\nroot.erofs\nvmlinuz\ninitrd.img\n"
        );
    }

    #[test]
    fn refusals_come_before_any_payload_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = make(dir.path(), "x86_64-efi");
        let good = [dev_key().public_key()];

        let other = PublicKey([7; 32]);
        let (r, sink) = read(&path, &[other], "x86_64-efi");
        assert!(matches!(r, Err(BundleError::BadSignature)), "{r:?}");
        assert!(!sink.accepted && sink.data.is_empty());

        let (r, sink) = read(&path, &good, "rpi4");
        let err = r.expect_err("wrong board");
        assert!(
            err.to_string()
                .contains("for the board x86_64-efi, this device is a rpi4")
        );
        assert!(!sink.accepted && sink.data.is_empty());

        // Cut in the root payload: the known length gives it away first.
        let bytes = std::fs::read(&path).expect("read");
        let cut = &bytes[..bytes.len() / 2];
        let mut sink = Collect::default();
        let r = read_bundle(cut, Some(cut.len() as u64), &good, "x86_64-efi", &mut sink);
        assert!(matches!(r, Err(BundleError::Truncated { .. })), "{r:?}");
        assert!(!sink.accepted && sink.data.is_empty());
        // Without a length, streaming finds the end and never finishes a payload.
        let mut sink = Collect::default();
        let r = read_bundle(cut, None, &good, "x86_64-efi", &mut sink);
        assert!(r.is_err(), "{r:?}");
        assert!(sink.finished.is_empty());

        // One flipped byte in the root: the hash catches it, nothing finished.
        let mut bad = bytes.clone();
        let at = bad.len() / 3;
        bad[at] ^= 0xff;
        let mut sink = Collect::default();
        let r = read_bundle(
            bad.as_slice(),
            Some(bad.len() as u64),
            &good,
            "x86_64-efi",
            &mut sink,
        );
        assert!(
            matches!(r, Err(BundleError::HashMismatch("root.erofs"))),
            "{r:?}"
        );
        assert!(sink.finished.is_empty());

        // A flipped byte in the manifest breaks the signature.
        let mut bad = bytes.clone();
        let at = bytes
            .windows(5)
            .position(|w| w == b"\"9.9\"")
            .expect("version in the manifest");
        bad[at + 1] = b'8';
        let mut sink = Collect::default();
        let r = read_bundle(bad.as_slice(), None, &good, "x86_64-efi", &mut sink);
        assert!(matches!(r, Err(BundleError::BadSignature)), "{r:?}");

        let r = read_bundle(&b"hello"[..], None, &good, "x86_64-efi", &mut Discard);
        assert!(r.is_err());
    }

    #[test]
    fn key_files_name_themselves_when_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "not a key").expect("write");
        let err = SigningKey::from_pem_file(&path).expect_err("bad key");
        assert!(
            err.to_string()
                .contains("openssl genpkey -algorithm ed25519"),
            "{err}"
        );
        std::fs::write(dir.path().join("a.pub"), dev_key().public_key().to_hex()).expect("pub");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("txt");
        assert_eq!(
            PublicKey::load_dir(dir.path()).expect("keys"),
            [dev_key().public_key()]
        );
        std::fs::write(dir.path().join("b.pub"), "zz").expect("pub");
        assert!(PublicKey::load_dir(dir.path()).is_err());
    }
}
