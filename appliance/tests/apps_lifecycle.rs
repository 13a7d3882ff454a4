//! Apps end to end, inside network namespaces the tests create: a registry
//! and the supervisor in the "device" namespace, a client on the "LAN".
//! Install a busybox httpd app from the registry, reach it through the
//! proxy (HTTP, HTTPS with the device CA, WebSocket), on its fallback
//! port; update it, watch a broken update roll back, remove it. Then kill
//! the supervisor at each step of an install and of a removal and check
//! that nothing half-made is left.

mod common;
#[path = "../runtime/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::avahi::AvahiPeer;
use common::test_net::TestNet;
use common::{Daemon, eventually};
use serde_json::Value;
use support::netns;
use support::registry_server::RegistryServer;
use support::test_images::{Compress, Layout, busybox_layer, owned_layer};

const HTTPD: &[&str] = &["/bin/httpd", "-f", "-p", "80", "-h", "/www"];

/// Pushes `t/web:1` and `t/web:2`: busybox httpd serving "version N".
fn push_web_images(registry: &RegistryServer, dir: &Path) {
    let layout_dir = dir.join("web-layout");
    let mut layout = Layout::new(&layout_dir);
    for version in ["1", "2"] {
        let page = format!("version {version}\n");
        let image = layout.image(
            "amd64",
            None,
            &[
                (busybox_layer(), Compress::Gzip),
                (
                    // files/ belongs to nobody, as an app's own user would.
                    owned_layer(
                        &[("www/index.html", page.as_bytes())],
                        &[("www/files/", 65534, 0o750)],
                    ),
                    Compress::Gzip,
                ),
            ],
            HTTPD,
        );
        layout.tag(&image, version);
    }
    for version in ["1", "2"] {
        registry.push(&layout_dir, version, &format!("t/web:{version}"));
    }
}

/// The test app's manifest: image tag `tag`, optionally another command.
fn manifest(id: &str, registry: &str, version: &str, tag: &str, port: u16) -> String {
    format!(
        r#"schema_version = 1
id = "{id}"
title = "Test App"
description = "busybox httpd"
category = "tools"
icon = "icon.svg"
version = "{version}"
upstream = ""
architectures = ["amd64", "arm64"]
start_timeout_secs = 15

[web]
service = "web"
port = 80
has_login = false

[[services]]
name = "web"
image = "{registry}/t/web:{tag}"
# httpd as PID 1 would ignore SIGTERM; real apps stop on it.
command = ["/bin/sh", "-c", "trap 'exit 0' TERM; /bin/httpd -f -p {port} -h /www & wait"]
ports = [80]
volumes = [{{ name = "files", path = "/www/files" }}]
health = {{ http = {{ port = 80, path = "/" }} }}
"#
    )
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// curl inside a namespace; returns its output, success or not.
fn curl(ns: &str, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["curl", "-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl")
}

/// The JSON API over the control socket.
fn api(d: &Daemon, path: &str) -> Value {
    let o = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(d.socket())
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl");
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

fn api_post(d: &Daemon, path: &str, body: &Value) -> Value {
    let o = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(d.socket())
        .args(["-H", "Content-Type: application/json", "--data"])
        .arg(body.to_string())
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl");
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// Sets the device up over the control socket; returns the session cookie
/// (`name=value`) and CSRF token, for the pages.
fn set_up_over_socket(d: &Daemon) -> (String, String) {
    let o = Command::new("curl")
        .args(["-sS", "-i", "--unix-socket"])
        .arg(d.socket())
        .args(["-H", "Content-Type: application/json", "--data"])
        .arg(
            serde_json::json!({"device_name": "ddaemon", "password": common::PASSWORD,
                "password_confirm": common::PASSWORD, "timezone": "UTC"})
            .to_string(),
        )
        .arg("http://localhost/api/v1/setup")
        .output()
        .expect("curl");
    let answer = String::from_utf8_lossy(&o.stdout).into_owned();
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ddaemon_session="))
        .and_then(|v| v.split(';').next())
        .map(|v| format!("ddaemon_session={v}"))
        .unwrap_or_else(|| panic!("no session cookie: {answer}"));
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("no JSON body: {answer}"));
    let csrf = body["csrf_token"].as_str().expect("csrf_token").to_owned();
    (cookie, csrf)
}

/// A page over the control socket with a session cookie, optionally
/// posting a form; returns the status line and headers and the body.
fn page(d: &Daemon, cookie: &str, path: &str, form: &[(&str, &str)]) -> String {
    let mut c = Command::new("curl");
    c.args(["-sS", "-i", "--unix-socket"])
        .arg(d.socket())
        .args(["-H", &format!("Cookie: {cookie}")]);
    for (k, v) in form {
        c.args(["--data-urlencode", &format!("{k}={v}")]);
    }
    let o = c
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The page of `host` through the proxy on the device.
fn through_proxy(net: &TestNet, d: &Daemon, host: &str, path: &str) -> String {
    let o = curl(
        &net.device,
        &[
            "-H",
            &format!("Host: {host}"),
            &format!("http://{}{path}", d.addr),
        ],
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What exists of the containers named `APP.*`: definitions, addresses
/// (leases), network namespaces, root filesystem mounts.
#[derive(Debug, PartialEq, Eq)]
struct Leftovers {
    folders: usize,
    leases: usize,
    namespaces: usize,
    mounts: usize,
}

fn leftovers(d: &Daemon, app: &str) -> Leftovers {
    let prefix = format!("{app}.");
    let containers = d.data().join("containers");
    let folders = std::fs::read_dir(&containers)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0);
    let leases = std::fs::read(containers.join("network.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["leases"].as_object().cloned())
        .map_or(0, |l| l.keys().filter(|k| k.starts_with(&prefix)).count());
    let namespaces = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(&format!("{}{prefix}", d.netns_prefix()))
                })
                .count()
        })
        .unwrap_or(0);
    let mounts = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&*containers.join(&prefix).to_string_lossy()))
        .count();
    Leftovers {
        folders,
        leases,
        namespaces,
        mounts,
    }
}

fn none() -> Leftovers {
    Leftovers {
        folders: 0,
        leases: 0,
        namespaces: 0,
        mounts: 0,
    }
}

fn one() -> Leftovers {
    Leftovers {
        folders: 1,
        leases: 1,
        namespaces: 1,
        mounts: 1,
    }
}

/// A WebSocket echo server in the device namespace; returns its address.
fn start_echo_server(ns: &str) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    netns::spawn_in(ns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            use futures_util::{SinkExt, StreamExt};
            let listener = tokio::net::TcpListener::bind("192.168.77.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_text() || message.is_binary() {
                            let _ = ws.send(message).await;
                        }
                    }
                });
            }
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("echo server address")
}

/// Opens a WebSocket to `ws://HOST/` through the proxy at `proxy` (from
/// inside the device namespace), sends `text`, returns the answer.
fn websocket_round_trip(ns: &str, proxy: std::net::SocketAddr, host: &str, text: &str) -> String {
    let host = host.to_owned();
    let text = text.to_owned();
    netns::run_in(ns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            use futures_util::{SinkExt, StreamExt};
            let stream = tokio::net::TcpStream::connect(proxy)
                .await
                .expect("connect");
            let (mut ws, response) = tokio_tungstenite::client_async(
                format!("ws://{host}:{}/echo", proxy.port()),
                stream,
            )
            .await
            .expect("WebSocket handshake through the proxy");
            assert_eq!(response.status(), 101);
            ws.send(tokio_tungstenite::tungstenite::Message::text(text))
                .await
                .expect("send");
            let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("an answer in time")
                .expect("a message")
                .expect("no error");
            answer.into_text().expect("text").to_string()
        })
    })
}

#[tokio::test]
async fn install_reach_update_roll_back_and_remove_an_app() {
    let net = TestNet::new();
    let registry = RegistryServer::start_in(Some(&net.device));
    let work = tempfile::tempdir().expect("tempdir");
    push_web_images(&registry, work.path());
    let d = Daemon::start_in_netns(
        &net.device,
        vec!["--insecure-registry".into(), registry.host.clone()],
    )
    .await;
    let write = |name: &str, text: String| {
        let path = work.path().join(name);
        std::fs::write(&path, text).expect("manifest");
        path.to_string_lossy().into_owned()
    };

    // A manifest with a problem is refused, naming the field; nothing stays.
    let bad = write(
        "bad.toml",
        manifest("testapp", &registry.host, "1", "1", 80).replace("port = 80\n", "port = 81\n"),
    );
    let o = d.cli(&["app", "install", "--manifest", &bad]);
    assert!(!o.status.success());
    assert!(text(&o).contains("web.port"), "{}", text(&o));
    assert_eq!(api(&d, "/api/v1/apps"), serde_json::json!([]));

    // Install, following the steps.
    let v1 = write("v1.toml", manifest("testapp", &registry.host, "1", "1", 80));
    let o = d.cli(&["app", "install", "--manifest", &v1]);
    assert!(o.status.success(), "{}\n{}", text(&o), d.log());
    let out = text(&o);
    for step in ["installing Test App 1", "is running: http://testapp.local"] {
        assert!(out.contains(step), "{step} missing from:\n{out}");
    }
    assert!(through_proxy(&net, &d, "testapp.local", "/").contains("version 1"));
    assert!(
        through_proxy(&net, &d, "testapp.ddaemon.local", "/").contains("version 1"),
        "APP.DEVICE.local works too"
    );
    assert_eq!(leftovers(&d, "testapp"), one());

    // The owner's pages show it running, with its addresses.
    let (cookie, csrf) = set_up_over_socket(&d);
    let list = page(&d, &cookie, "/apps", &[]);
    assert!(
        list.contains("href=\"/apps/testapp\"") && list.contains("http://testapp.local"),
        "{list}"
    );
    let app_page = page(&d, &cookie, "/apps/testapp", &[]);
    for wanted in [
        "running",
        ">Open<",
        "http://ddaemon.local:81",
        "Remove Test App",
    ] {
        assert!(app_page.contains(wanted), "{wanted} missing: {app_page}");
    }

    // Its data folder is a volume: what the owner puts there is served.
    let files = d.data().join("apps/testapp/files");
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&files).expect("volume folder");
        assert_eq!(
            (meta.uid(), meta.mode() & 0o7777),
            (65534, 0o750),
            "a new volume takes the owner and mode of its path in the image"
        );
    }
    std::fs::write(files.join("note.txt"), "kept\n").expect("note");
    assert!(through_proxy(&net, &d, "testapp.local", "/files/note.txt").contains("kept"));

    // HTTPS with the device CA, as a client that trusts it.
    let ca = d.data().join("ddaemon/ca/ca.pem");
    let o = curl(
        &net.device,
        &[
            "--cacert",
            &ca.to_string_lossy(),
            "--resolve",
            &format!("testapp.local:{}:127.0.0.1", d.tls_addr.port()),
            &format!("https://testapp.local:{}/", d.tls_addr.port()),
        ],
    );
    assert!(text(&o).contains("version 1"), "{}", text(&o));

    // The fallback port, from another machine on the LAN.
    let app = api(&d, "/api/v1/apps/testapp");
    let port = app["port"].as_u64().expect("port");
    assert!((8100..=8999).contains(&port), "{app}");
    let o = curl(&net.lan, &[&format!("http://192.168.77.1:{port}/")]);
    assert!(text(&o).contains("version 1"), "{}", text(&o));

    // WebSocket through the proxy, to an echo server on the LAN side.
    let echo = start_echo_server(&net.device);
    let added = api_post(
        &d,
        "/api/v1/external-apps",
        &serde_json::json!({"name": "echo", "target": echo.to_string()}),
    );
    assert_eq!(added["name"], "echo", "{added}");
    let answer = websocket_round_trip(&net.device, d.addr, "echo.local", "hello over ws");
    assert_eq!(answer, "hello over ws");

    // Update to a new image tag; the data stays.
    let v2 = write("v2.toml", manifest("testapp", &registry.host, "2", "2", 80));
    let o = d.cli(&["app", "update", "testapp", "--manifest", &v2]);
    assert!(o.status.success(), "{}\n{}", text(&o), d.log());
    assert!(through_proxy(&net, &d, "testapp.local", "/").contains("version 2"));
    assert!(through_proxy(&net, &d, "testapp.local", "/files/note.txt").contains("kept"));
    let o = curl(&net.lan, &[&format!("http://192.168.77.1:{port}/")]);
    assert!(
        text(&o).contains("version 2"),
        "the fallback port follows: {}",
        text(&o)
    );

    // An update that never answers (httpd on the wrong port) rolls back.
    let broken = write("v3.toml", manifest("testapp", &registry.host, "3", "2", 81));
    let o = d.cli(&["app", "update", "testapp", "--manifest", &broken]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("rolled back to 2"), "{}", text(&o));
    assert!(through_proxy(&net, &d, "testapp.local", "/").contains("version 2"));
    let app = api(&d, "/api/v1/apps/testapp");
    assert_eq!(app["version"], "2", "{app}");
    assert_eq!(app["state"], "running", "{app}");

    // Stop from the page, start from the CLI.
    let answer = page(
        &d,
        &cookie,
        "/apps/testapp/action",
        &[("csrf_token", &csrf), ("action", "stop")],
    );
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    assert_eq!(api(&d, "/api/v1/apps/testapp")["state"], "stopped");
    assert!(page(&d, &cookie, "/apps/testapp", &[]).contains(">Start<"));
    let page = through_proxy(&net, &d, "testapp.local", "/");
    assert!(
        page.contains("Test App"),
        "a friendly page while it is down: {page}"
    );
    let o = d.cli(&["app", "start", "testapp"]);
    assert!(o.status.success(), "{}", text(&o));
    eventually("the app answers again", Duration::from_secs(20), || {
        let page = through_proxy(&net, &d, "testapp.local", "/");
        page.contains("version 2").then_some(()).ok_or(page)
    })
    .await;
    let o = d.cli(&["app", "logs", "testapp"]);
    assert!(o.status.success(), "{}", text(&o));

    // Remove: the name stops answering, the data stays.
    let o = d.cli(&["app", "remove", "testapp"]);
    assert!(o.status.success(), "{}\n{}", text(&o), d.log());
    assert!(!through_proxy(&net, &d, "testapp.local", "/").contains("version"));
    assert_eq!(api(&d, "/api/v1/apps"), serde_json::json!([]));
    assert_eq!(leftovers(&d, "testapp"), none());
    assert!(
        files.join("note.txt").exists(),
        "data is kept without --purge"
    );
    assert!(
        !d.log().contains("ERROR"),
        "no errors in the log:\n{}",
        d.log()
    );
}

#[tokio::test]
async fn kill_9_at_each_step_leaves_a_whole_app_or_none() {
    let net = TestNet::new();
    let registry = RegistryServer::start_in(Some(&net.device));
    let work = tempfile::tempdir().expect("tempdir");
    push_web_images(&registry, work.path());
    let mut d = Daemon::start_in_netns(
        &net.device,
        vec!["--insecure-registry".into(), registry.host.clone()],
    )
    .await;
    let v1 = work.path().join("v1.toml");
    std::fs::write(&v1, manifest("crashapp", &registry.host, "1", "1", 80)).expect("manifest");
    let v1 = v1.to_string_lossy().into_owned();
    let crash_at = |d: &mut Daemon, step: &str| {
        d.env = vec![("DDAEMON_TEST_CRASH_AT_STEP".to_owned(), step.to_owned())];
    };

    for step in ["pulling", "creating", "starting", "waiting"] {
        crash_at(&mut d, step);
        d.restart().await;
        let o = d.cli(&["app", "install", "--no-wait", "--manifest", &v1]);
        assert!(o.status.success(), "{step}: {}", text(&o));
        let status = d.wait_exit(Duration::from_secs(60));
        assert!(!status.success(), "{step}: the crash point was reached");
        d.env.clear();
        d.restart().await;
        // The interrupted install resumes and ends installed and answering.
        eventually(
            &format!("crashed at {step}: the app ends installed"),
            Duration::from_secs(60),
            || {
                let app = api(&d, "/api/v1/apps/crashapp");
                (app["phase"] == "installed" && app["state"] == "running")
                    .then_some(())
                    .ok_or(format!("{app}\n{}", d.log()))
            },
        )
        .await;
        assert!(
            through_proxy(&net, &d, "crashapp.local", "/").contains("version 1"),
            "{step}"
        );
        assert_eq!(leftovers(&d, "crashapp"), one(), "after a crash at {step}");
        let o = d.cli(&["app", "remove", "--purge", "crashapp"]);
        assert!(o.status.success(), "{step}: {}", text(&o));
        assert_eq!(leftovers(&d, "crashapp"), none(), "removed after {step}");
        assert!(!d.data().join("apps/crashapp").exists(), "purged");
    }

    // A removal cut short finishes on the next start.
    let o = d.cli(&["app", "install", "--manifest", &v1]);
    assert!(o.status.success(), "{}", text(&o));
    crash_at(&mut d, "removing");
    d.restart().await;
    let o = d.cli(&["app", "remove", "--no-wait", "crashapp"]);
    assert!(o.status.success(), "{}", text(&o));
    let status = d.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "the crash point was reached");
    d.env.clear();
    d.restart().await;
    eventually("the removal finishes", Duration::from_secs(60), || {
        let apps = api(&d, "/api/v1/apps");
        (apps == serde_json::json!([]))
            .then_some(())
            .ok_or(apps.to_string())
    })
    .await;
    assert_eq!(leftovers(&d, "crashapp"), none());
    assert!(
        !through_proxy(&net, &d, "crashapp.local", "/").contains("version"),
        "the name is gone"
    );
}

/// Whether an `avahi-browse -p` line resolved to the device: its LAN
/// address, or its IPv6 link-local one (Avahi picks either).
fn on_the_device(line: &str) -> bool {
    (line.contains(";192.168.77.1;") || line.contains(";fe80::")) && line.contains(";80;")
}

#[tokio::test]
async fn app_names_over_mdns_as_a_real_avahi_peer_sees_them() {
    let net = TestNet::new();
    let registry = RegistryServer::start_in(Some(&net.device));
    let work = tempfile::tempdir().expect("tempdir");
    push_web_images(&registry, work.path());
    let mut avahi = AvahiPeer::start(&net);
    let mut d = Daemon::start_in_netns(
        &net.device,
        vec!["--insecure-registry".into(), registry.host.clone()],
    )
    .await;

    // The device itself, before setup: ddaemon.local.
    eventually(
        "Avahi resolves ddaemon.local",
        Duration::from_secs(30),
        || match avahi.resolve("ddaemon.local") {
            Some(a) if a == "192.168.77.1" => Ok(()),
            other => Err(format!("{other:?}\n{}", d.log())),
        },
    )
    .await;

    let install = |id: &str| {
        let path = work.path().join(format!("{id}.toml"));
        std::fs::write(&path, manifest(id, &registry.host, "1", "1", 80)).expect("manifest");
        let o = d.cli(&["app", "install", "--manifest", &path.to_string_lossy()]);
        assert!(o.status.success(), "{}\n{}", text(&o), d.log());
    };
    install("mdnsapp");
    eventually(
        "Avahi resolves mdnsapp.local",
        Duration::from_secs(30),
        || match avahi.resolve("mdnsapp.local") {
            Some(a) if a == "192.168.77.1" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let services = avahi.browse("_http._tcp");
    assert!(
        services.lines().any(|l| l.starts_with("=;")
                // Avahi escapes the space in the title.
                && l.contains(";Test\\032App;")
                && l.contains("mdnsapp.local;")
                && on_the_device(l)),
        "the app's _http._tcp service: {services}"
    );
    assert!(
        !services.contains("10.88."),
        "no container address is announced: {services}"
    );

    // Someone else on the network already answers as clash.local: the app
    // takes clash-2.local, which the page shows and the proxy serves.
    avahi.publish_address("clash.local", "192.168.77.2");
    eventually(
        "Avahi holds clash.local",
        Duration::from_secs(20),
        || match avahi.resolve("clash.local") {
            Some(a) if a == "192.168.77.2" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    install("clash");
    eventually(
        "ddaemon renames to clash-2",
        Duration::from_secs(30),
        || {
            let app = api(&d, "/api/v1/apps/clash");
            (app["url"] == "http://clash-2.local")
                .then_some(())
                .ok_or(format!("{app}\n{}", d.log()))
        },
    )
    .await;
    eventually(
        "Avahi resolves clash-2.local",
        Duration::from_secs(30),
        || match avahi.resolve("clash-2.local") {
            Some(a) if a == "192.168.77.1" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(
        avahi.resolve("clash.local").as_deref(),
        Some("192.168.77.2")
    );
    assert!(through_proxy(&net, &d, "clash-2.local", "/").contains("version 1"));

    // Removed: the name is withdrawn (goodbye packets empty Avahi's cache).
    let o = d.cli(&["app", "remove", "--purge", "mdnsapp"]);
    assert!(o.status.success(), "{}", text(&o));
    eventually(
        "mdnsapp.local is gone",
        Duration::from_secs(30),
        || match avahi.resolve("mdnsapp.local") {
            None => Ok(()),
            Some(a) => Err(a),
        },
    )
    .await;
    let services = avahi.browse("_http._tcp");
    assert!(
        !services.contains("mdnsapp.local"),
        "its service is gone too: {services}"
    );
    // Two apps had one title; each service kept a name of its own.
    assert!(
        services
            .lines()
            .any(|l| l.contains(";clash-2.local;") && on_the_device(l)),
        "{services}"
    );

    // The device's address changes: the names follow.
    // (Deleting a primary address takes its secondaries with it: delete first.)
    common::test_net::ip(&[
        "-n",
        &net.device,
        "addr",
        "del",
        "192.168.77.1/24",
        "dev",
        &net.device_link,
    ]);
    common::test_net::ip(&[
        "-n",
        &net.device,
        "addr",
        "add",
        "192.168.77.9/24",
        "dev",
        &net.device_link,
    ]);
    // Both names: Avahi must have dropped the old address (the new
    // announcement flushes it; no goodbye can leave from an address that
    // is gone), or the shutdown check below would still see it.
    eventually(
        "clash-2.local and ddaemon.local follow the new address",
        Duration::from_secs(60),
        || match (
            avahi.resolve("clash-2.local"),
            avahi.resolve("ddaemon.local"),
        ) {
            (Some(a), Some(b)) if a == "192.168.77.9" && b == "192.168.77.9" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;

    // Shutdown says goodbye for every name.
    assert!(d.terminate().success());
    eventually(
        "the names are gone after shutdown",
        Duration::from_secs(20),
        || match (
            avahi.resolve("clash-2.local"),
            avahi.resolve("ddaemon.local"),
        ) {
            (None, None) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

/// The supervisor's resident memory, idle, with no app and with five apps
/// running. A measurement, not a check: `scripts/bench-memory` runs it on a
/// release build and prints the figures for BENCHMARKS.md.
#[tokio::test]
#[ignore = "a benchmark; run by scripts/bench-memory"]
async fn bench_supervisor_memory_with_five_apps() {
    fn status_kib(pid: i32, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
    let rss_kib = |pid| status_kib(pid, "VmRSS:");
    let net = TestNet::new();
    let registry = RegistryServer::start_in(Some(&net.device));
    let work = tempfile::tempdir().expect("tempdir");
    push_web_images(&registry, work.path());
    let d = Daemon::start_in_netns(
        &net.device,
        vec!["--insecure-registry".into(), registry.host.clone()],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = rss_kib(d.pid());
    for n in 1..=5 {
        let id = format!("bench{n}");
        let path = work.path().join(format!("{id}.toml"));
        std::fs::write(&path, manifest(&id, &registry.host, "1", "1", 80)).expect("manifest");
        let o = d.cli(&["app", "install", "--manifest", &path.to_string_lossy()]);
        assert!(o.status.success(), "{}", text(&o));
    }
    for n in 1..=5 {
        assert!(through_proxy(&net, &d, &format!("bench{n}.local"), "/").contains("version 1"));
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let busy = rss_kib(d.pid());
    let (anon, file) = (
        status_kib(d.pid(), "RssAnon:"),
        status_kib(d.pid(), "RssFile:"),
    );
    let shims: u64 = std::fs::read_dir(d.data().join("containers"))
        .expect("containers")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status.json")).ok())
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .filter_map(|s| s["shim_pid"].as_i64())
        .map(|pid| rss_kib(pid as i32))
        .sum();
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "supervisor RSS idle: {:.1} MiB with no app, {:.1} MiB with five apps running \
         ({:.1} MiB anonymous, {:.1} MiB of mapped files, mostly its own binary); \
         their five shims: {:.1} MiB together",
        mib(idle),
        mib(busy),
        mib(anon),
        mib(file),
        mib(shims)
    );
}
