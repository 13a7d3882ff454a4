//! Port forwarding help against a real UPnP-IGD router: Debian's
//! `miniupnpd` (nftables) in a "router" namespace between the device's
//! home network and an "internet" namespace. Making an app public maps
//! 80 and 443 to the device, a request from the internet side reaches the
//! supervisor, and making the last app private removes the mappings.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::test_net::{Guard, TestNet, device_with_app, in_ns, ip};
use common::{eventually, socket_api as api};
use serde_json::Value;

/// The "internet" side's namespace, removed when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// What the router says it forwards, as `upnpc -l` (Debian's miniupnpc)
/// lists it from the device.
fn router_mappings(net: &TestNet) -> String {
    String::from_utf8_lossy(&in_ns(&net.device, "upnpc", &["-l"]).stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_forwards_the_public_ports_while_an_app_is_public() {
    let net = TestNet::new();
    let work = tempfile::tempdir().expect("tempdir");
    let tag = std::process::id() % 100_000;
    // The router is the LAN namespace (192.168.77.2); its WAN faces an
    // "internet" namespace with a public-looking address (miniupnpd
    // refuses to work behind a private one).
    let isp = Netns(format!("ddt-isp-{tag}"));
    ip(&["netns", "add", &isp.0]);
    let (wan, far) = (format!("ddwan{tag}"), format!("ddisp{tag}"));
    ip(&[
        "link", "add", &wan, "netns", &net.lan, "type", "veth", "peer", "name", &far, "netns",
        &isp.0,
    ]);
    ip(&["-n", &net.lan, "addr", "add", "45.45.45.1/24", "dev", &wan]);
    ip(&["-n", &net.lan, "link", "set", &wan, "up"]);
    ip(&["-n", &isp.0, "addr", "add", "45.45.45.2/24", "dev", &far]);
    ip(&["-n", &isp.0, "link", "set", &far, "up"]);
    ip(&[
        "-n",
        &net.device,
        "route",
        "add",
        "default",
        "via",
        "192.168.77.2",
    ]);
    let forward = in_ns(&net.lan, "sysctl", &["-w", "net.ipv4.ip_forward=1"]);
    assert!(forward.status.success());
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &net.lan, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    {
        use std::io::Write as _;
        let rules = "table inet filter {\n\
            chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }\n\
            chain miniupnpd { }\n\
            chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }\n\
            chain prerouting_miniupnpd { }\n\
            chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }\n\
            chain postrouting_miniupnpd { }\n}\n";
        nft.stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("rules");
    }
    assert!(
        nft.wait().expect("nft").success(),
        "the router's nftables tables"
    );
    let conf = work.path().join("miniupnpd.conf");
    std::fs::write(
        &conf,
        format!(
            "ext_ifname={wan}\nlistening_ip={}\nhttp_port=0\nenable_upnp=yes\nenable_natpmp=yes\n\
             secure_mode=yes\nsystem_uptime=yes\nuuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
             allow 1024-65535 192.168.77.0/24 1-65535\nallow 80 192.168.77.0/24 1-65535\n\
             allow 443 192.168.77.0/24 1-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
            net.lan_link
        ),
    )
    .expect("miniupnpd.conf");
    let _router = Guard(
        Command::new("ip")
            .args(["netns", "exec", &net.lan, "miniupnpd", "-d", "-f"])
            .arg(&conf)
            .arg("-P")
            .arg(work.path().join("miniupnpd.pid"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(work.path().join("miniupnpd.log"))
                    .map(Stdio::from)
                    .expect("log"),
            )
            .spawn()
            .expect("miniupnpd (Debian's miniupnpd-nftables)"),
    );

    let (d, _app) = device_with_app(&net, work.path(), "wiki", "the wiki\n", Vec::new()).await;
    let set = d.cli(&["domain", "set", "example.test", "--port-forwarding", "true"]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(
        !router_mappings(&net).contains("->192.168.77.1:8080"),
        "nothing is public yet"
    );

    assert!(d.cli(&["domain", "public", "wiki"]).status.success());
    let tls_port = d.tls_addr.port();
    eventually(
        "the router to forward 80 and 443",
        Duration::from_secs(30),
        || {
            let list = router_mappings(&net);
            let both = list.contains("80->192.168.77.1:8080")
                && list.contains(&format!("443->192.168.77.1:{tls_port}"));
            both.then_some(())
                .ok_or_else(|| format!("{list}\n{}", d.log()))
        },
    )
    .await;
    let (_, status): (u16, Value) = api(&d, "GET", "/api/v1/domain", None);
    let forwarding = &status["port_forwarding"];
    assert_eq!(forwarding["external_address"], "45.45.45.1", "{status}");
    assert_eq!(
        forwarding["mapped"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );

    // From the internet side, the public name reaches the supervisor
    // (plain HTTP answers with the way to HTTPS).
    let from_outside = in_ns(
        &isp.0,
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            "Host: wiki.example.test",
            "http://45.45.45.1/",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&from_outside.stdout),
        "308 https://wiki.example.test/",
        "{}",
        String::from_utf8_lossy(&from_outside.stderr)
    );

    // Nothing else answers from the internet: not the dashboard (by the
    // address, or by its .local name), not a private app's .local name.
    for host in ["45.45.45.1", "home.local", "wiki.local", "example.test"] {
        let refused = in_ns(
            &isp.0,
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                &format!("Host: {host}"),
                "http://45.45.45.1/apps",
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&refused.stdout),
            "421",
            "Host: {host}"
        );
    }
    // Over HTTPS the device CA gives no certificate to the internet.
    let handshake = in_ns(
        &isp.0,
        "sh",
        &[
            "-c",
            "openssl s_client -connect 45.45.45.1:443 -servername home.local </dev/null 2>&1",
        ],
    );
    let text = String::from_utf8_lossy(&handshake.stdout).into_owned();
    assert!(
        !text.contains("BEGIN CERTIFICATE") && !text.contains("Server certificate"),
        "{text}"
    );
    // The home network still reaches the dashboard.
    let at_home = in_ns(
        &net.lan,
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://192.168.77.1:8080/login",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&at_home.stdout), "200");

    // The last public app made private: the mappings go.
    assert!(d.cli(&["domain", "private", "wiki"]).status.success());
    eventually(
        "the mappings to be removed",
        Duration::from_secs(30),
        || {
            let list = router_mappings(&net);
            (!list.contains("->192.168.77.1:"))
                .then_some(())
                .ok_or(list)
        },
    )
    .await;
    let text = String::from_utf8_lossy(&d.cli(&["domain", "status"]).stdout).into_owned();
    assert!(text.contains("The router forwards: nothing"), "{text}");
}
