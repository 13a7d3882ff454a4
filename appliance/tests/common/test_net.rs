//! Two network namespaces joined by a veth pair — the supervisor's
//! "device" (192.168.77.1) and a "LAN" client (192.168.77.2) — created for
//! one test and removed when it ends. The host's own network is never
//! touched.

use std::process::Command;

/// Two namespaces joined by a veth pair, removed when dropped.
pub struct TestNet {
    pub device: String,
    pub lan: String,
    /// The veth ends: in the device namespace, and on the LAN side.
    pub device_link: String,
    pub lan_link: String,
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNet {
    pub fn new() -> Self {
        // Tests of one binary may run on threads of one process.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 1_000_000);
        let (a, b) = (format!("ddta{tag}"), format!("ddtb{tag}"));
        let net = Self {
            device: format!("ddt-dev-{tag}"),
            lan: format!("ddt-lan-{tag}"),
            device_link: a.clone(),
            lan_link: b.clone(),
        };
        ip(&["netns", "add", &net.device]);
        ip(&["netns", "add", &net.lan]);
        ip(&[
            "link",
            "add",
            &a,
            "netns",
            &net.device,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &net.lan,
        ]);
        ip(&[
            "-n",
            &net.device,
            "addr",
            "add",
            "192.168.77.1/24",
            "dev",
            &a,
        ]);
        ip(&["-n", &net.lan, "addr", "add", "192.168.77.2/24", "dev", &b]);
        for (ns, dev) in [(&net.device, &a), (&net.lan, &b)] {
            ip(&["-n", ns, "link", "set", dev, "multicast", "on", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            // mDNS goes to 224.0.0.251 over the veth.
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        net
    }

    /// Runs busybox in a namespace.
    pub fn busybox(&self, ns: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", ns, "timeout", "10", "/bin/busybox"])
            .args(args)
            .output()
            .expect("busybox")
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in [&self.device, &self.lan] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `program` inside the namespace `ns` (at most 15 s); its output.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "15", program])
        .args(args)
        .output()
        .expect("ip netns exec")
}

/// The output's text, after asserting it succeeded.
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process killed when dropped.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A supervisor in the device namespace on 0.0.0.0:8080, set up as
/// `home`, with an external app `app` whose page (`index.html` saying
/// `page`) busybox serves on the device's 127.0.0.1:8081. Keep the guard:
/// it is the app.
pub async fn device_with_app(
    net: &TestNet,
    work: &std::path::Path,
    app: &str,
    page: &str,
    extra_args: Vec<String>,
) -> (super::Daemon, Guard) {
    let site = work.join("site");
    std::fs::create_dir_all(&site).expect("site");
    std::fs::write(site.join("index.html"), page).expect("index");
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.device,
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "127.0.0.1:8081",
            "-h",
        ])
        .arg(&site)
        .spawn()
        .expect("busybox httpd");
    let guard = Guard(server);
    let d = super::Daemon::start_in_netns_on(
        &net.device,
        "0.0.0.0:8080".parse().expect("addr"),
        extra_args,
    )
    .await;
    let setup = serde_json::json!({"device_name": "home", "password": super::PASSWORD,
        "password_confirm": super::PASSWORD, "timezone": "UTC"});
    let (code, body) = super::socket_api(&d, "POST", "/api/v1/setup", Some(&setup));
    assert_eq!(code, 201, "{body}");
    let external = serde_json::json!({"name": app, "target": "127.0.0.1:8081"});
    let (code, body) = super::socket_api(&d, "POST", "/api/v1/external-apps", Some(&external));
    assert_eq!(code, 201, "{body}");
    (d, guard)
}
