//! Side-loading: OCI archives and docker-save tarballs, made by skopeo (a
//! real peer) and by hand, and refusing damaged ones.

mod support;

use std::process::Command;

use ddaemon_runtime::image_load::{LoadError, load_archive};
use ddaemon_runtime::image_store::ImageStore;
use support::test_images::{Compress, Layout, busybox_layer};

fn layout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(dir.path());
    let image = layout.image(
        "amd64",
        None,
        &[(busybox_layer(), Compress::Gzip)],
        &["/bin/sh"],
    );
    layout.tag(&image, "gzip");
    dir
}

fn skopeo(from: String, to: String) {
    let out = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(from)
        .arg(to)
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn busybox_ok(store: &ImageStore, reference: &str) {
    let img = store.get(reference).expect("loaded image is listed");
    let dir = &store.layer_dirs(&img)[0];
    assert_eq!(
        std::fs::read(dir.join("bin/busybox")).expect("unpacked"),
        std::fs::read("/bin/busybox").expect("host busybox")
    );
}

#[tokio::test]
async fn loads_an_oci_archive_and_a_docker_save_tarball_made_by_skopeo() {
    let src = layout();
    let out = tempfile::tempdir().expect("tempdir");
    let oci = out.path().join("oci.tar");
    let docker = out.path().join("docker.tar");
    skopeo(
        format!("oci:{}:gzip", src.path().display()),
        format!("oci-archive:{}:local/busybox:oci", oci.display()),
    );
    skopeo(
        format!("oci:{}:gzip", src.path().display()),
        format!("docker-archive:{}:local/busybox:docker", docker.display()),
    );
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(store_dir.path()).expect("store");

    let loaded = load_archive(&store, &oci, None).await.expect("oci archive");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].reference, "docker.io/local/busybox:oci");
    busybox_ok(&store, "local/busybox:oci");

    let loaded = load_archive(&store, &docker, None)
        .await
        .expect("docker save");
    assert_eq!(loaded[0].reference, "docker.io/local/busybox:docker");
    busybox_ok(&store, "local/busybox:docker");
    assert_eq!(
        store.config(&loaded[0]).expect("config").architecture,
        "amd64"
    );
}

#[tokio::test]
async fn a_bare_tag_takes_the_given_name_and_compressed_archives_load() {
    let src = layout();
    let out = tempfile::tempdir().expect("tempdir");
    // Our own tar of the layout, gzip-compressed, as `tar czf` would make it.
    let archive = out.path().join("layout.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&archive).expect("file"),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(".", src.path()).expect("tar");
    tar.into_inner().expect("tar").finish().expect("gzip");

    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(store_dir.path()).expect("store");
    let loaded = load_archive(&store, &archive, Some("home/busybox"))
        .await
        .expect("load");
    assert_eq!(loaded[0].reference, "docker.io/home/busybox:gzip");
    busybox_ok(&store, "home/busybox:gzip");
}

#[tokio::test]
async fn a_damaged_archive_is_refused_and_records_nothing() {
    let src = layout();
    // Flip a byte inside the (largest) layer blob, keeping its file name.
    let blobs = src.path().join("blobs/sha256");
    let largest = std::fs::read_dir(&blobs)
        .expect("blobs")
        .map(|e| e.expect("entry").path())
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a blob");
    let mut bytes = std::fs::read(&largest).expect("read");
    bytes[100] ^= 0xff;
    std::fs::write(&largest, bytes).expect("write");
    let out = tempfile::tempdir().expect("tempdir");
    let archive = out.path().join("bad.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&archive).expect("file"));
    tar.append_dir_all(".", src.path()).expect("tar");
    tar.finish().expect("tar");

    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(store_dir.path()).expect("store");
    let err = load_archive(&store, &archive, Some("x/y"))
        .await
        .expect_err("damaged");
    assert!(matches!(err, LoadError::Damaged(_)), "{err}");
    assert!(err.to_string().contains("altered or broken"), "{err}");
    assert!(store.list().expect("list").is_empty());

    let junk = out.path().join("junk.bin");
    std::fs::write(&junk, vec![7u8; 4096]).expect("junk");
    let err = load_archive(&store, &junk, None).await.expect_err("junk");
    assert!(
        matches!(err, LoadError::NotAnArchive(_) | LoadError::Damaged(_)),
        "{err}"
    );
}
