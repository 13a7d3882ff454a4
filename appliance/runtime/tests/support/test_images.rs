//! OCI image layouts built by the tests themselves, from the host's
//! busybox-static: single-arch, multi-arch, gzip, zstd, with whiteouts.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const BUSYBOX: &str = "/bin/busybox";

pub fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// How a layer is compressed in the image.
#[derive(Clone, Copy, Debug)]
pub enum Compress {
    Gzip,
    Zstd,
    None,
}

impl Compress {
    fn media_type(self) -> &'static str {
        match self {
            Compress::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compress::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compress::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    fn apply(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Compress::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(tar).expect("gzip");
                gz.finish().expect("gzip")
            }
            Compress::Zstd => zstd::stream::encode_all(tar, 3).expect("zstd"),
            Compress::None => tar.to_vec(),
        }
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

/// A root filesystem layer: busybox, its applet links, /etc basics, a www
/// page, and `/data/old/file` for later layers to hide.
pub fn busybox_layer() -> Vec<u8> {
    let busybox =
        std::fs::read(BUSYBOX).expect("busybox-static is installed (scripts/test installs it)");
    let mut b = tar::Builder::new(Vec::new());
    for dir in [
        "bin/",
        "etc/",
        "tmp/",
        "www/",
        "data/",
        "data/old/",
        "proc/",
        "sys/",
        "dev/",
    ] {
        let mode = if dir == "tmp/" { 0o1777 } else { 0o755 };
        b.append_data(
            &mut header(tar::EntryType::Directory, mode, 0),
            dir,
            std::io::empty(),
        )
        .expect("dir");
    }
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o755, busybox.len() as u64),
        "bin/busybox",
        busybox.as_slice(),
    )
    .expect("busybox");
    for applet in [
        "sh", "echo", "cat", "httpd", "sleep", "ls", "wget", "true", "false", "id",
    ] {
        b.append_link(
            &mut header(tar::EntryType::Symlink, 0o777, 0),
            format!("bin/{applet}"),
            "busybox",
        )
        .expect("link");
    }
    let files: [(&str, &[u8]); 4] = [
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
        ("www/index.html", b"hello from busybox\n"),
        ("data/old/file", b"old\n"),
    ];
    for (path, data) in files {
        b.append_data(
            &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
            path,
            data,
        )
        .expect("file");
    }
    b.into_inner().expect("tar")
}

/// A layer that deletes `www/index.html` (whiteout), makes `data/` opaque
/// and adds `data/new`.
pub fn whiteout_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 0),
        "www/.wh.index.html",
        std::io::empty(),
    )
    .expect("whiteout");
    b.append_data(
        &mut header(tar::EntryType::Directory, 0o755, 0),
        "data/",
        std::io::empty(),
    )
    .expect("dir");
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 0),
        "data/.wh..wh..opq",
        std::io::empty(),
    )
    .expect("opaque");
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 4),
        "data/new",
        &b"new\n"[..],
    )
    .expect("file");
    b.into_inner().expect("tar")
}

/// A tiny layer standing in for another architecture's root filesystem.
pub fn marker_layer(text: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, text.len() as u64),
        "marker",
        text.as_bytes(),
    )
    .expect("file");
    b.into_inner().expect("tar")
}

/// A layer of regular files (their folders must exist below it), and
/// folders given as (path, owner uid and gid, mode).
pub fn file_layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    owned_layer(files, &[])
}

/// [`file_layer`] with folders owned by someone other than root.
pub fn owned_layer(files: &[(&str, &[u8])], dirs: &[(&str, u64, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, owner, mode) in dirs {
        let mut h = header(tar::EntryType::Directory, *mode, 0);
        h.set_uid(*owner);
        h.set_gid(*owner);
        b.append_data(&mut h, path, std::io::empty()).expect("dir");
    }
    for (path, data) in files {
        b.append_data(
            &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
            path,
            *data,
        )
        .expect("file");
    }
    b.into_inner().expect("tar")
}

/// An OCI image layout being written.
pub struct Layout<'a> {
    pub dir: &'a Path,
    index: Vec<serde_json::Value>,
}

/// A manifest written into a layout.
pub struct Written {
    pub manifest_digest: String,
    pub manifest_size: usize,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
}

impl<'a> Layout<'a> {
    pub fn new(dir: &'a Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dir");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Self {
            dir,
            index: Vec::new(),
        }
    }

    pub fn blob(&self, bytes: &[u8]) -> String {
        let digest = sha(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&digest[7..]), bytes).expect("blob");
        digest
    }

    /// Writes an image's config, layers and manifest (not yet tagged).
    pub fn image(
        &self,
        arch: &str,
        variant: Option<&str>,
        layers: &[(Vec<u8>, Compress)],
        cmd: &[&str],
    ) -> Written {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        for (tar, compress) in layers {
            diff_ids.push(sha(tar));
            let blob = compress.apply(tar);
            let digest = self.blob(&blob);
            layer_digests.push(digest.clone());
            descriptors.push(
                json!({"mediaType": compress.media_type(), "digest": digest, "size": blob.len()}),
            );
        }
        let mut config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/", "ExposedPorts": {"80/tcp": {}}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        let config = serde_json::to_vec(&config).expect("config");
        let config_digest = self.blob(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))
        .expect("manifest");
        let manifest_digest = self.blob(&manifest);
        Written {
            manifest_digest,
            manifest_size: manifest.len(),
            config_digest,
            layer_digests,
            diff_ids,
        }
    }

    /// Tags a single manifest.
    pub fn tag(&mut self, written: &Written, tag: &str) {
        self.index.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": written.manifest_digest,
            "size": written.manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.flush();
    }

    /// Tags an index of several platforms' manifests.
    pub fn tag_index(&mut self, platforms: &[(&Written, &str, Option<&str>)], tag: &str) -> String {
        let manifests: Vec<_> = platforms
            .iter()
            .map(|(w, arch, variant)| {
                let mut platform = json!({"architecture": arch, "os": "linux"});
                if let Some(v) = variant {
                    platform["variant"] = json!(v);
                }
                json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": w.manifest_digest,
                    "size": w.manifest_size,
                    "platform": platform,
                })
            })
            .collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .expect("index");
        let digest = self.blob(&index);
        self.index.push(json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.flush();
        digest
    }

    fn flush(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.index});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("index"),
        )
        .expect("index.json");
    }
}

/// Writes a busybox image tagged `1` as an OCI archive in `dir` (the
/// layout beside it) and returns the archive's path, for side-loading.
pub fn busybox_archive(dir: &Path) -> std::path::PathBuf {
    let layout_dir = dir.join("layout");
    let mut layout = Layout::new(&layout_dir);
    let image = layout.image(
        "amd64",
        None,
        &[(busybox_layer(), Compress::Gzip)],
        &["/bin/sh"],
    );
    layout.tag(&image, "1");
    let archive = dir.join("image.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&archive).expect("archive"));
    tar.append_dir_all(".", &layout_dir).expect("tar");
    tar.finish().expect("tar");
    archive
}
