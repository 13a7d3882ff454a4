//! WireGuard remote access between two network namespaces, with the
//! user-space implementation (Debian's `wireguard-go`; this host's kernel
//! has no WireGuard): the peer configuration the device hands out brings up
//! a tunnel from a "laptop", which then resolves `testapp.local` through the
//! tunnel's DNS and opens it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::test_net::{Guard, TestNet, device_with_app, in_ns, ok};
use common::{eventually, socket_api as api};
use serde_json::{Value, json};

/// wireguard-go's control sockets, left behind when it is killed.
struct Sockets(Vec<String>);

impl Drop for Sockets {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
        }
    }
}

/// The laptop's side: wireguard-go with the configuration the device gave,
/// set up the way `wg-quick up` would (address, keys, route to the tunnel).
fn laptop_tunnel(net: &TestNet, name: &str, config: &str, dir: &std::path::Path) -> Guard {
    let conf = dir.join("laptop.conf");
    std::fs::write(&conf, config).expect("write peer config");
    let stripped = ok(&Command::new("wg-quick")
        .arg("strip")
        .arg(&conf)
        .output()
        .expect("wg-quick (Debian's wireguard-tools)"));
    let wg_conf = dir.join("laptop.wg");
    std::fs::write(&wg_conf, stripped).expect("write stripped config");
    let address = config
        .lines()
        .find_map(|l| l.strip_prefix("Address = "))
        .expect("the config has an Address");
    let child = Command::new("ip")
        .args(["netns", "exec", &net.lan, "wireguard-go", "-f", name])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wireguard-go");
    let guard = Guard(child);
    let socket = std::path::PathBuf::from(format!("/var/run/wireguard/{name}.sock"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "wireguard-go did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&in_ns(
        &net.lan,
        "ip",
        &["addr", "add", address, "dev", name],
    ));
    ok(&in_ns(
        &net.lan,
        "wg",
        &["setconf", name, &wg_conf.to_string_lossy()],
    ));
    ok(&in_ns(&net.lan, "ip", &["link", "set", name, "up"]));
    ok(&in_ns(
        &net.lan,
        "ip",
        &["route", "add", "10.99.0.1/32", "dev", name],
    ));
    guard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reaches_an_app_by_its_local_name_through_the_tunnel() {
    let net = TestNet::new();
    let work = tempfile::tempdir().expect("tempdir");
    let tag = std::process::id() % 100_000;
    let (device_if, laptop_if) = (format!("ddwgd{tag}"), format!("ddwgl{tag}"));
    let _sockets = Sockets(vec![device_if.clone(), laptop_if.clone()]);

    // The app: a web server on the device's loopback.
    let (d, _app) = device_with_app(
        &net,
        work.path(),
        "testapp",
        "hello through the tunnel\n",
        vec!["--wg-interface".into(), device_if.clone()],
    )
    .await;

    // Refusals name their field.
    let no_tunnel = d.cli(&["vpn", "add", "laptop"]);
    let text = String::from_utf8_lossy(&no_tunnel.stderr);
    assert!(
        !no_tunnel.status.success() && text.contains("remote access is off"),
        "{text}"
    );
    let bad = d.cli(&["vpn", "on", "--endpoint", "my house"]);
    let text = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && text.contains("endpoint:"),
        "{text}"
    );

    let on = d.cli(&["vpn", "on", "--endpoint", "192.168.77.1", "--port", "51820"]);
    let text = ok(&on);
    assert!(
        text.contains("Remote access is up (userspace)"),
        "{text}\n{}",
        d.log()
    );
    let bad_name = d.cli(&["vpn", "add", "my laptop"]);
    let text = String::from_utf8_lossy(&bad_name.stderr);
    assert!(
        !bad_name.status.success() && text.contains("name:"),
        "{text}"
    );

    let (code, peer) = api(
        &d,
        "POST",
        "/api/v1/vpn/peers",
        Some(&json!({"name": "laptop"})),
    );
    assert_eq!(code, 201, "{peer}");
    let config = peer["config"].as_str().expect("config");
    assert!(
        config.contains("Endpoint = 192.168.77.1:51820") && config.contains("DNS = 10.99.0.1"),
        "{config}"
    );
    assert!(
        peer["qr_svg"].as_str().is_some_and(|s| s.contains("<svg")),
        "a QR code to scan"
    );
    let (_, status) = api(&d, "GET", "/api/v1/vpn", None);
    assert!(
        !status.to_string().contains("PrivateKey"),
        "the peer's key is not kept: {status}"
    );

    let _laptop = laptop_tunnel(&net, &laptop_if, config, work.path());

    // Through the tunnel: the name resolves, and the app opens.
    let mut resolved = String::new();
    eventually(
        "testapp.local to resolve through the tunnel",
        Duration::from_secs(20),
        || {
            resolved = String::from_utf8_lossy(
                &in_ns(
                    &net.lan,
                    "dig",
                    &[
                        "+short",
                        "+time=2",
                        "+tries=1",
                        "@10.99.0.1",
                        "testapp.local",
                        "A",
                    ],
                )
                .stdout,
            )
            .trim()
            .to_owned();
            (resolved == "10.99.0.1")
                .then_some(())
                .ok_or(resolved.clone())
        },
    )
    .await;
    let device = in_ns(
        &net.lan,
        "dig",
        &["+short", "@10.99.0.1", "home.local", "A"],
    );
    assert_eq!(String::from_utf8_lossy(&device.stdout).trim(), "10.99.0.1");
    let unknown = in_ns(&net.lan, "dig", &["@10.99.0.1", "nosuchapp.local", "A"]);
    assert!(String::from_utf8_lossy(&unknown.stdout).contains("NXDOMAIN"));
    let page = ok(&in_ns(
        &net.lan,
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            "testapp.local:8080:10.99.0.1",
            "http://testapp.local:8080/",
        ],
    ));
    assert_eq!(page, "hello through the tunnel\n");

    let (_, status) = api(&d, "GET", "/api/v1/vpn", None);
    let seen = &status["peers"][0];
    assert_eq!(seen["name"], "laptop");
    assert!(
        seen["latest_handshake"].as_i64().is_some(),
        "the handshake shows: {status}"
    );

    // A removed peer is shut out.
    ok(&d.cli(&["vpn", "rm", "laptop"]));
    let shut = in_ns(
        &net.lan,
        "curl",
        &["-sS", "--max-time", "5", "http://10.99.0.1:8080/"],
    );
    assert!(!shut.status.success(), "a removed peer still got through");

    // Off takes the tunnel down.
    let off = ok(&d.cli(&["vpn", "off"]));
    assert!(off.contains("Remote access is off"), "{off}");
    let (_, status): (u16, Value) = api(&d, "GET", "/api/v1/vpn", None);
    assert_eq!(status["running"], false);
}
