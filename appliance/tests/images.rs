//! `ddaemon image pull|ls|rm|load` and `/api/v1/images` against a real
//! registry on loopback, through a running supervisor.

mod common;
#[path = "../runtime/tests/support/mod.rs"]
mod support;

use common::{Daemon, error_of};
use serde_json::{Value, json};
use support::registry_server::RegistryServer;
use support::test_images::{Compress, Layout, busybox_layer};

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn pull_list_load_and_remove_through_the_cli_and_api() {
    let registry = RegistryServer::start();
    let layout_dir = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(layout_dir.path());
    let image = layout.image(
        "amd64",
        None,
        &[(busybox_layer(), Compress::Gzip)],
        &["/bin/sh"],
    );
    layout.tag(&image, "1");
    registry.push(layout_dir.path(), "1", "test/busybox:1");
    let reference = format!("{}/test/busybox:1", registry.host);

    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(
        dir,
        vec!["--insecure-registry".into(), registry.host.clone()],
    )
    .await;
    let session = d.set_up().await;

    let out = d.cli(&["image", "pull", &reference]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&reference) && stdout.contains(&image.manifest_digest),
        "{stdout}"
    );
    assert!(
        stderr.contains("unpacking layer 1 of 1"),
        "progress is shown: {stderr}"
    );
    assert!(stderr.contains("100%"), "{stderr}");

    let out = d.cli(&["image", "ls"]);
    assert!(text(&out).0.contains(&reference));
    let listed: Value = d
        .get_as("/api/v1/images", &session.header())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed[0]["reference"], reference);
    assert_eq!(listed[0]["digest"], image.manifest_digest);

    // Side-load the same image under another name, as a docker-save tarball.
    let archive = layout_dir.path().join("saved.tar");
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:1", layout_dir.path().display()))
        .arg(format!(
            "docker-archive:{}:offline/busybox:1",
            archive.display()
        ))
        .output()
        .expect("skopeo");
    assert!(out.status.success());
    let out = d.cli(&["image", "load", archive.to_str().expect("utf8")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("loaded docker.io/offline/busybox:1"),
        "{stdout}"
    );

    // Removing one keeps the layer the other uses.
    let out = d.cli(&["image", "rm", &reference]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("removed"), "{stdout}");
    let out = d.cli(&["image", "ls"]);
    let (stdout, _) = text(&out);
    assert!(
        !stdout.contains(&reference) && stdout.contains("offline/busybox"),
        "{stdout}"
    );

    let out = d.cli(&["image", "rm", &reference]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("no image"), "{}", text(&out).1);
}

#[tokio::test]
async fn bad_references_and_unreachable_registries_say_what_is_wrong() {
    let d = Daemon::start().await;
    let session = d.set_up().await;
    let r = d
        .http
        .post(d.url("/api/v1/images/pull"))
        .header("cookie", session.header())
        .header("x-csrf-token", &session.csrf)
        .json(&json!({"reference": "Not A/Reference"}))
        .send()
        .await
        .expect("post");
    let (status, _, field, message) = error_of(r).await;
    assert_eq!(
        (status, field.as_deref()),
        (400, Some("reference")),
        "{message}"
    );

    // A registry that is not marked insecure is reached only over HTTPS,
    // which fails here: the failure comes as the last line of the stream.
    let registry = RegistryServer::start();
    let out = d.cli(&["image", "pull", &format!("{}/test/none:1", registry.host)]);
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    assert!(stderr.contains("registry error"), "{stderr}");
    assert!(d.cli(&["image", "ls"]).status.success());
}
