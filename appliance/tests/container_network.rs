//! Container networking for real, inside network namespaces this test
//! creates and removes: the supervisor's "device" namespace and a "LAN"
//! client joined by a veth pair. The host's own network is never touched.

mod common;
#[path = "../runtime/tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use common::test_net::TestNet;
use common::{Daemon, eventually};
use support::test_images::busybox_archive;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn bridge_published_ports_nat_and_names_within_an_app() {
    let net = TestNet::new();
    let d = Daemon::start_in_netns(&net.device, vec![]).await;
    let archive = busybox_archive(d.data());
    assert!(
        d.cli(&[
            "image",
            "load",
            archive.to_str().expect("utf8"),
            "--name",
            "t/bb"
        ])
        .status
        .success()
    );

    let httpd = ["/bin/httpd", "-f", "-p", "80", "-h", "/www"];
    let mut run = vec![
        "container",
        "run",
        "--name",
        "web",
        "--app",
        "shop",
        "-p",
        "8080:80",
        "t/bb:1",
    ];
    run.extend(httpd);
    let o = d.cli(&run);
    assert!(o.status.success(), "{}\n{}", text(&o), d.log());
    let mut run = vec![
        "container",
        "run",
        "--name",
        "db",
        "--app",
        "shop",
        "t/bb:1",
    ];
    run.extend(httpd);
    assert!(d.cli(&run).status.success());

    // Through the bridge, from the device itself.
    eventually(
        "the container answers on the bridge",
        Duration::from_secs(15),
        || {
            let o = net.busybox(&net.device, &["wget", "-qO-", "http://10.88.0.2/"]);
            text(&o)
                .contains("hello from busybox")
                .then_some(())
                .ok_or(text(&o))
        },
    )
    .await;
    // Through the published port, from another machine on the LAN.
    eventually(
        "the published port answers from the LAN",
        Duration::from_secs(15),
        || {
            let o = net.busybox(&net.lan, &["wget", "-qO-", "http://192.168.77.1:8080/"]);
            text(&o)
                .contains("hello from busybox")
                .then_some(())
                .ok_or(text(&o))
        },
    )
    .await;
    // A port nobody published stays closed.
    let o = net.busybox(
        &net.lan,
        &["wget", "-qO-", "-T", "2", "http://192.168.77.1:8081/"],
    );
    assert!(!o.status.success());

    // Containers of one app reach each other by name: web, created first,
    // learned db's name when db joined.
    let o = d.cli(&[
        "container",
        "run",
        "--name",
        "probe",
        "--app",
        "shop",
        "t/bb:1",
        "/bin/sh",
        "-c",
        "wget -qO- http://web/ && wget -qO- http://db/ && echo by-name-ok; cat /etc/hosts",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    eventually(
        "probe reaches web and db by name",
        Duration::from_secs(15),
        || {
            let o = d.cli(&["container", "logs", "probe"]);
            text(&o)
                .contains("by-name-ok")
                .then_some(())
                .ok_or(text(&o))
        },
    )
    .await;
    let hosts = std::fs::read_to_string(d.data().join("containers/web/hosts")).expect("web hosts");
    assert!(
        hosts.contains("\tdb") && hosts.contains("\tprobe"),
        "{hosts}"
    );

    // Outbound traffic is masqueraded: the LAN host sees the device's address.
    let lan_www = d.data().join("lan-www");
    std::fs::create_dir_all(&lan_www).expect("lan www");
    std::fs::write(lan_www.join("index.html"), "lan says hi\n").expect("page");
    let mut lan_server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.lan,
            "/bin/busybox",
            "httpd",
            "-f",
            "-vv",
            "-p",
            "9000",
            "-h",
        ])
        .arg(&lan_www)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lan httpd");
    let o = d.cli(&[
        "container",
        "run",
        "--name",
        "outbound",
        "t/bb:1",
        "/bin/sh",
        "-c",
        "wget -qO- http://192.168.77.2:9000/",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    eventually(
        "the container reaches the LAN",
        Duration::from_secs(15),
        || {
            let o = d.cli(&["container", "logs", "outbound"]);
            text(&o)
                .contains("lan says hi")
                .then_some(())
                .ok_or(text(&o))
        },
    )
    .await;
    let _ = lan_server.kill();
    let lan_log = lan_server.wait_with_output().expect("lan httpd output");
    let lan_log = String::from_utf8_lossy(&lan_log.stderr);
    assert!(
        lan_log.contains("192.168.77.1"),
        "the LAN host saw the device's address: {lan_log}"
    );

    // A published port is one container's only.
    let o = d.cli(&[
        "container",
        "run",
        "--name",
        "thief",
        "-p",
        "8080:80",
        "t/bb:1",
    ]);
    assert!(
        !o.status.success() && text(&o).contains("already published"),
        "{}",
        text(&o)
    );

    // Addresses survive a supervisor restart; removal frees them.
    let lease = std::fs::read_to_string(d.data().join("containers/network.json")).expect("leases");
    assert!(lease.contains("10.88.0.2"), "{lease}");
    for name in ["web", "db", "probe", "outbound"] {
        let o = d.cli(&["container", "rm", name]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let lease = std::fs::read_to_string(d.data().join("containers/network.json")).expect("leases");
    assert!(!lease.contains("10.88.0"), "{lease}");
    let o = net.busybox(
        &net.lan,
        &["wget", "-qO-", "-T", "2", "http://192.168.77.1:8080/"],
    );
    assert!(!o.status.success(), "the port closed with the container");
}
