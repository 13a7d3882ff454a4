//! Pulling from a real registry (Debian's docker-registry on loopback),
//! filled by skopeo with images these tests build.

mod support;

use std::sync::{Arc, Mutex};

use ddaemon_runtime::digest::Digest;
use ddaemon_runtime::image_ref::ImageRef;
use ddaemon_runtime::image_store::{ImageStore, PullEvent, StoreError};
use ddaemon_runtime::registry::{PullError, Registry, RegistryOptions};
use support::registry_server::RegistryServer;
use support::test_images::{Compress, Layout, busybox_layer, marker_layer, whiteout_layer};

struct Fixture {
    registry: RegistryServer,
    client: Registry,
    _layout_dir: tempfile::TempDir,
    store_dir: tempfile::TempDir,
    store: ImageStore,
    busybox_tar: Vec<u8>,
}

fn fixture() -> Fixture {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = RegistryServer::start();
    let layout_dir = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(layout_dir.path());
    let busybox_tar = busybox_layer();

    let gz = layout.image(
        "amd64",
        None,
        &[(busybox_tar.clone(), Compress::Gzip)],
        &["/bin/sh"],
    );
    layout.tag(&gz, "gzip");
    let zst = layout.image(
        "amd64",
        None,
        &[(busybox_tar.clone(), Compress::Zstd)],
        &["/bin/sh"],
    );
    layout.tag(&zst, "zstd");
    let wh = layout.image(
        "amd64",
        None,
        &[
            (busybox_tar.clone(), Compress::Gzip),
            (whiteout_layer(), Compress::None),
        ],
        &["/bin/sh"],
    );
    layout.tag(&wh, "whiteout");
    let arm = layout.image(
        "arm64",
        Some("v8"),
        &[(marker_layer("arm64"), Compress::Gzip)],
        &["/bin/sh"],
    );
    let arm7 = layout.image(
        "arm",
        Some("v7"),
        &[(marker_layer("armv7"), Compress::Gzip)],
        &["/bin/sh"],
    );
    layout.tag_index(
        &[
            (&arm7, "arm", Some("v7")),
            (&gz, "amd64", None),
            (&arm, "arm64", Some("v8")),
        ],
        "multi",
    );
    layout.tag_index(&[(&arm, "arm64", Some("v8"))], "armonly");
    for tag in ["gzip", "zstd", "whiteout", "multi", "armonly"] {
        registry.push(layout_dir.path(), tag, &format!("test/busybox:{tag}"));
    }
    let client = Registry::new(RegistryOptions {
        insecure: vec![registry.host.clone()],
        ..RegistryOptions::default()
    });
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(store_dir.path()).expect("store");
    Fixture {
        registry,
        client,
        _layout_dir: layout_dir,
        store_dir,
        store,
        busybox_tar,
    }
}

impl Fixture {
    fn image(&self, tag: &str) -> ImageRef {
        ImageRef::parse(&format!("{}/test/busybox:{tag}", self.registry.host)).expect("ref")
    }
}

fn recorder() -> (Arc<Mutex<Vec<PullEvent>>>, impl Fn(PullEvent) + Send + Sync) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    (events, move |e| sink.lock().expect("lock").push(e))
}

#[tokio::test]
async fn gzip_and_zstd_images_pull_unpack_and_share_their_layer() {
    let f = fixture();
    let (events, progress) = recorder();
    let gz = f
        .store
        .pull(&f.client, &f.image("gzip"), &progress)
        .await
        .expect("pull gzip");
    let busybox = std::fs::read("/bin/busybox").expect("busybox");
    let layer = f.store.layer_dirs(&gz)[0].clone();
    assert_eq!(
        std::fs::read(layer.join("bin/busybox")).expect("unpacked"),
        busybox,
        "byte for byte"
    );
    assert_eq!(
        std::fs::read_link(layer.join("bin/sh"))
            .expect("link")
            .to_str(),
        Some("busybox")
    );
    let config = f.store.config(&gz).expect("config");
    assert_eq!(config.architecture, "amd64");
    assert_eq!(
        config.config.and_then(|c| c.cmd),
        Some(vec!["/bin/sh".to_owned()])
    );

    // Progress: bytes only grow and end at the total.
    let events = events.lock().expect("lock").clone();
    let downloads: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            PullEvent::Downloading(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert!(
        downloads.windows(2).all(|w| w[0].done <= w[1].done),
        "{downloads:?}"
    );
    let last = downloads.last().expect("some progress");
    assert_eq!(last.done, last.total);
    assert_eq!(last.total, gz.size);
    assert!(events.contains(&PullEvent::Unpacking { index: 1, count: 1 }));

    // The zstd image holds the same tar: one unpacked directory serves both.
    let zst = f
        .store
        .pull(&f.client, &f.image("zstd"), &|_| {})
        .await
        .expect("pull zstd");
    assert_ne!(zst.layers, gz.layers, "different compressed blobs");
    assert_eq!(zst.diff_ids, gz.diff_ids, "same content");
    assert_eq!(f.store.layer_dirs(&zst), f.store.layer_dirs(&gz));
    assert_eq!(zst.diff_ids[0], Digest::of(&f.busybox_tar));

    // Pulling again downloads nothing: the first report is already complete.
    let (events, progress) = recorder();
    f.store
        .pull(&f.client, &f.image("gzip"), &progress)
        .await
        .expect("pull again");
    let first = events.lock().expect("lock").iter().find_map(|e| match e {
        PullEvent::Downloading(p) => Some(p.clone()),
        _ => None,
    });
    assert!(first.is_some_and(|p| p.done == p.total));
    assert_eq!(f.store.list().expect("list").len(), 2);
}

#[tokio::test]
async fn a_multi_arch_index_resolves_to_this_machine() {
    let f = fixture();
    let multi = f
        .store
        .pull(&f.client, &f.image("multi"), &|_| {})
        .await
        .expect("pull multi");
    let config = f.store.config(&multi).expect("config");
    assert_eq!(config.architecture, "amd64", "this machine is x86_64");
    assert!(f.store.layer_dirs(&multi)[0].join("bin/busybox").exists());

    // The same index asked for arm64 picks the v8 build.
    let arm_client = Registry::new(RegistryOptions {
        insecure: vec![f.registry.host.clone()],
        platform: Some(("arm64".into(), Some("v8".into()))),
        ..RegistryOptions::default()
    });
    let arm = f
        .store
        .pull(&arm_client, &f.image("multi"), &|_| {})
        .await
        .expect("pull arm");
    let dir = &f.store.layer_dirs(&arm)[0];
    assert_eq!(
        std::fs::read_to_string(dir.join("marker")).expect("marker"),
        "arm64"
    );

    // An index without our platform says which ones it has.
    let err = f
        .store
        .pull(&f.client, &f.image("armonly"), &|_| {})
        .await
        .expect_err("no amd64");
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::Pull(PullError::NoPlatform { .. })),
        "{text}"
    );
    assert!(
        text.contains("linux/arm64/v8") && text.contains("linux/amd64"),
        "{text}"
    );
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_arrive_as_overlayfs_markers() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let f = fixture();
    let img = f
        .store
        .pull(&f.client, &f.image("whiteout"), &|_| {})
        .await
        .expect("pull");
    let dirs = f.store.layer_dirs(&img);
    assert_eq!(dirs.len(), 2);
    let top = &dirs[1];
    let hidden = std::fs::symlink_metadata(top.join("www/index.html")).expect("whiteout node");
    assert!(hidden.file_type().is_char_device() && hidden.rdev() == 0);
    let mut value = [0u8; 4];
    let n = rustix::fs::getxattr(top.join("data"), "trusted.overlay.opaque", &mut value)
        .expect("opaque");
    assert_eq!(&value[..n], b"y");
    assert_eq!(
        std::fs::read_to_string(top.join("data/new")).expect("new"),
        "new\n"
    );
}

#[tokio::test]
async fn a_tampered_blob_is_refused_and_nothing_is_recorded() {
    let f = fixture();
    let image = f.image("gzip");
    let reference = f
        .client
        .resolve(&image, f.store.blobs())
        .await
        .expect("resolve");
    let layer = &reference.manifest.layers[0];
    // Swap the registry's stored bytes for others of the same length.
    let data = f.registry.blob_data_path(layer.digest.hex());
    let mut bytes = std::fs::read(&data).expect("registry blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes).expect("tamper");
    let err = f
        .store
        .pull(&f.client, &image, &|_| {})
        .await
        .expect_err("tampered");
    assert!(
        err.to_string().contains("wrong content") || err.to_string().contains("digest"),
        "{err}"
    );
    assert!(!f.store.blobs().contains(&layer.digest));
    assert!(f.store.list().expect("list").is_empty());
    assert!(
        std::fs::read_dir(f.store_dir.path().join("layers"))
            .expect("layers")
            .next()
            .is_none(),
        "no layer was unpacked"
    );
}

#[tokio::test]
async fn an_interrupted_download_resumes() {
    let f = fixture();
    let image = f.image("gzip");
    let resolved = f
        .client
        .resolve(&image, f.store.blobs())
        .await
        .expect("resolve");
    let layer = &resolved.manifest.layers[0];
    let bytes = std::fs::read(f.registry.blob_data_path(layer.digest.hex())).expect("blob");
    // What a crash half way through the download leaves behind.
    {
        use std::io::Write;
        let mut partial = f
            .store
            .blobs()
            .partial_writer(&layer.digest, 0)
            .expect("partial");
        partial.write_all(&bytes[..bytes.len() / 2]).expect("write");
    }
    let (events, progress) = recorder();
    let img = f
        .store
        .pull(&f.client, &image, &progress)
        .await
        .expect("resumed pull");
    assert!(f.store.blobs().contains(&layer.digest));
    let first = events.lock().expect("lock").iter().find_map(|e| match e {
        PullEvent::Downloading(p) if p.done > 0 => Some(p.done),
        _ => None,
    });
    assert!(
        first.is_some_and(|d| d >= (bytes.len() / 2) as u64),
        "started from the half already there"
    );
    assert!(f.store.layer_dirs(&img)[0].join("bin/busybox").exists());
}

#[tokio::test]
async fn remove_then_gc_frees_what_no_image_uses() {
    let f = fixture();
    let gz = f
        .store
        .pull(&f.client, &f.image("gzip"), &|_| {})
        .await
        .expect("pull");
    let wh = f
        .store
        .pull(&f.client, &f.image("whiteout"), &|_| {})
        .await
        .expect("pull");
    assert_eq!(
        f.store.gc().await.expect("gc").layers_removed,
        0,
        "nothing unused yet"
    );
    f.store.remove(&wh.reference).await.expect("remove");
    let report = f.store.gc().await.expect("gc");
    assert_eq!(
        report.layers_removed, 1,
        "only the whiteout layer was unique to it"
    );
    assert!(
        report.blobs_removed >= 3,
        "its manifest, config and top layer: {report:?}"
    );
    assert!(
        f.store.layer_dirs(&gz)[0].join("bin/busybox").exists(),
        "the shared layer stays"
    );
    assert!(f.store.config(&gz).is_ok());
    let err = f.store.get(&wh.reference).expect_err("gone");
    assert!(err.to_string().contains("ddaemon image ls"), "{err}");
}

#[tokio::test]
async fn plain_http_needs_the_registry_marked_insecure() {
    let f = fixture();
    let strict = Registry::new(RegistryOptions::default());
    let err = f
        .store
        .pull(&strict, &f.image("gzip"), &|_| {})
        .await
        .expect_err("https only");
    assert!(
        matches!(err, StoreError::Pull(PullError::Registry { .. })),
        "{err}"
    );
    assert!(f.store.list().expect("list").is_empty());
}
