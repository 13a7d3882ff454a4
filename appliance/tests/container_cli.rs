//! `ddaemon container ...` through a running supervisor, including a
//! supervisor restart while a container runs.

mod common;
#[path = "../runtime/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::Daemon;
use support::test_images::busybox_archive;

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn run_logs_restart_the_supervisor_stop_and_remove() {
    let mut d = Daemon::start().await;
    let archive = busybox_archive(d.data());
    let o = d.cli(&[
        "image",
        "load",
        archive.to_str().expect("utf8"),
        "--name",
        "test/busybox",
    ]);
    assert!(o.status.success(), "{}", out(&o));

    let o = d.cli(&[
        "container",
        "run",
        "--name",
        "ticker",
        "--restart",
        "always",
        "-e",
        "WHO=world",
        "test/busybox:1",
        "/bin/sh",
        "-c",
        "echo hello $WHO; exec sleep 1000",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("ticker running"), "{}", out(&o));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = d.cli(&["container", "logs", "ticker"]);
        if out(&o).contains("hello world") {
            break;
        }
        assert!(Instant::now() < deadline, "no output: {}", out(&o));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = out(&d.cli(&["container", "ls"]));
    assert!(
        listed.contains("ticker") && listed.contains("running"),
        "{listed}"
    );

    // The supervisor restarts; the container goes on and is still managed.
    d.restart().await;
    let listed = out(&d.cli(&["container", "ls"]));
    assert!(
        listed.contains("ticker") && listed.contains("running"),
        "{listed}"
    );
    assert!(
        !d.log().contains("restarted containers"),
        "nothing needed restarting"
    );
    let o = d.cli(&["container", "stop", "ticker"]);
    assert!(out(&o).contains("ticker stopped"), "{}", out(&o));
    let o = d.cli(&["container", "start", "ticker"]);
    assert!(out(&o).contains("ticker running"), "{}", out(&o));
    let o = d.cli(&["container", "rm", "ticker"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(!out(&d.cli(&["container", "ls"])).contains("ticker"));

    // Bad input names the field and leaves nothing behind.
    let o = d.cli(&["container", "run", "--name", "Bad Name", "test/busybox:1"]);
    assert!(
        !o.status.success() && out(&o).contains("not a container name"),
        "{}",
        out(&o)
    );
    let o = d.cli(&["container", "run", "--name", "ghost", "nothing/here:1"]);
    assert!(
        !o.status.success() && out(&o).contains("pull it first"),
        "{}",
        out(&o)
    );
    let o = d.cli(&[
        "container",
        "run",
        "--name",
        "nocmd",
        "--restart",
        "sometimes",
        "test/busybox:1",
    ]);
    assert!(
        !o.status.success() && out(&o).contains("restart policy"),
        "{}",
        out(&o)
    );
    assert!(!out(&d.cli(&["container", "ls"])).contains("ghost"));
}
