//! Public apps with real certificates: the supervisor orders them from
//! pebble (an RFC 8555 test CA, Debian's `pebble`) over HTTP-01 on
//! loopback, serves them at `APP.example.test`, renews them before they
//! expire, and stops answering the name when the app is made private.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Daemon, eventually};
use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits (up to 20 s) until a server listens on loopback `port`; fails
/// with its log otherwise.
fn wait_for_port(port: u16, log: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not start: {}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pebble and its DNS (`pebble-challtestsrv`, answering 127.0.0.1 for
/// every name), killed when dropped.
struct Pebble {
    children: Vec<Child>,
    directory: String,
    management: u16,
    /// The certificate of pebble's own HTTPS listener (not the CA that
    /// signs what it issues).
    listener_ca: std::path::PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pebble {
    /// Validates HTTP-01 on `http_port`; issues certificates valid for
    /// `validity_secs`; asks the DNS server on `dns_port` (its own mock
    /// when none).
    fn start(dir: &Path, http_port: u16, validity_secs: u64, dns_port: Option<u16>) -> Self {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("params");
        let cert = params.self_signed(&key).expect("self-signed");
        let (cert_path, key_path) = (dir.join("pebble-cert.pem"), dir.join("pebble-key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        let (acme, management, dns, dns_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert_path, "privateKey": key_path,
            "httpPort": http_port, "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_secs,
        }});
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write config");
        let log = |name: &str| {
            std::fs::File::create(dir.join(name))
                .map(Stdio::from)
                .expect("log file")
        };
        let mut children = Vec::new();
        let dns = match dns_port {
            Some(port) => port,
            None => {
                children.push(
                    Command::new("pebble-challtestsrv")
                        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                        .args(["-dns01", &format!("127.0.0.1:{dns}")])
                        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                        .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
                        .stdout(log("challtestsrv.log"))
                        .stderr(log("challtestsrv.err"))
                        .spawn()
                        .expect("pebble-challtestsrv (Debian's pebble package)"),
                );
                dns
            }
        };
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // Validate at once rather than after a random pause.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble (Debian's pebble package)");
        children.push(pebble);
        let pebble = Self {
            children,
            directory: format!("https://localhost:{acme}/dir"),
            management,
            listener_ca: cert_path,
        };
        wait_for_port(acme, &dir.join("pebble.log"));
        pebble
    }

    /// The root that signs the certificates pebble issues (made afresh at
    /// each start).
    fn issuing_root(&self, dir: &Path) -> std::path::PathBuf {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&self.listener_ca)
            .arg(format!("https://localhost:{}/roots/0", self.management))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "pebble's root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.join("pebble-root.pem");
        std::fs::write(&path, &out.stdout).expect("write root");
        path
    }
}

/// An app on loopback that says who it is.
async fn app_backend() -> SocketAddr {
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            let proto = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            format!("hello from the wiki over {proto}")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// `curl` over HTTPS to `name` at the supervisor's TLS port, trusting only
/// `root`.
fn curl_https(d: &Daemon, root: &Path, name: &str, path: &str) -> std::process::Output {
    let port = d.tls_addr.port();
    Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(root)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .expect("curl")
}

/// The serial of the certificate the supervisor presents for `name`.
fn served_serial(d: &Daemon, name: &str) -> Option<String> {
    let script = format!(
        "openssl s_client -connect {} -servername {name} </dev/null 2>/dev/null | openssl x509 -noout -serial",
        d.tls_addr
    );
    let out = Command::new("sh").args(["-c", &script]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix("serial=")
        .map(|s| s.to_ascii_lowercase())
}

/// A plain HTTP request to the supervisor, for the name `host`.
async fn as_host(d: &Daemon, path: &str, host: &str) -> reqwest::Response {
    d.http
        .get(d.url(path))
        .header("host", host)
        .send()
        .await
        .expect("plain HTTP request")
}

/// Adds an external app (the owner's own device) routed at `NAME.local`.
async fn add_app(d: &Daemon, session: &common::Session, name: &str, target: SocketAddr) {
    let added = d
        .http
        .post(d.url("/api/v1/external-apps"))
        .header("cookie", session.header())
        .header("x-csrf-token", &session.csrf)
        .json(&json!({"name": name, "target": target.to_string()}))
        .send()
        .await
        .expect("add app");
    let status = added.status();
    assert!(
        status.is_success(),
        "{}",
        added.text().await.unwrap_or_default()
    );
}

fn domain_status(d: &Daemon) -> Value {
    let out = d.cli(&["domain", "status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// The app's certificate status once `done` says so (within 60 s).
async fn certificate_when(d: &Daemon, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut cert = Value::Null;
    eventually(what, Duration::from_secs(60), || {
        cert = cert_of(&domain_status(d), "wiki");
        done(&cert)
            .then_some(())
            .ok_or_else(|| format!("{cert}\n{}", d.log()))
    })
    .await;
    cert
}

fn cert_of(status: &Value, app: &str) -> Value {
    status["public_apps"]
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["app"] == app))
        .map(|a| a["certificate"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_app_gets_a_real_certificate_renews_it_and_goes_private() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut d = Daemon::start_with(
        tempfile::tempdir().expect("data"),
        vec!["--acme-check-every".into(), "1".into()],
    )
    .await;
    // Certificates live 40 s here, so the renewal at a third of their
    // life left comes within the test.
    let pebble = Pebble::start(work.path(), d.addr.port(), 40, None);
    let session = d.set_up().await;
    let backend = app_backend().await;
    add_app(&d, &session, "wiki", backend).await;

    // Bad input names its field and changes nothing.
    let no_domain = d.cli(&["domain", "public", "wiki"]);
    assert!(!no_domain.status.success());
    let text = String::from_utf8_lossy(&no_domain.stderr);
    assert!(text.contains("public: no domain is set"), "{text}");
    let bad = d.cli(&["domain", "set", "wiki.local"]);
    let text = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && text.contains("domain:"), "{text}");
    let bad_ca = d.cli(&[
        "domain",
        "set",
        "example.test",
        "--acme-directory",
        "http://localhost/dir",
    ]);
    let text = String::from_utf8_lossy(&bad_ca.stderr);
    assert!(
        !bad_ca.status.success() && text.contains("acme_directory:"),
        "{text}"
    );
    assert!(
        domain_status(&d)["domain"].is_null(),
        "refusals left the domain unset"
    );

    let ca = pebble.listener_ca.to_string_lossy().into_owned();
    let set = d.cli(&[
        "domain",
        "set",
        "Example.TEST",
        "--acme-directory",
        &pebble.directory,
        "--acme-email",
        "owner@example.test",
        "--acme-ca",
        &ca,
    ]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let text = String::from_utf8_lossy(&set.stdout);
    assert!(
        text.contains("Domain: example.test") && text.contains("*.example.test"),
        "{text}"
    );
    let missing = d.cli(&["domain", "public", "nosuchapp"]);
    assert!(!missing.status.success());

    // Public: a certificate from the CA, served for the name.
    let public = d.cli(&["domain", "public", "wiki"]);
    assert!(
        public.status.success(),
        "{}",
        String::from_utf8_lossy(&public.stderr)
    );
    let first = certificate_when(&d, "a certificate for wiki.example.test", |c| {
        c["state"] == "valid"
    })
    .await;
    let root = pebble.issuing_root(work.path());
    let out = curl_https(&d, &root, "wiki.example.test", "/hello");
    assert!(
        out.status.success(),
        "HTTPS to the public name failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the wiki over https"
    );
    let first_serial = first["serial"]
        .as_str()
        .expect("serial")
        .replace(':', "")
        .to_ascii_lowercase();
    assert_eq!(
        served_serial(&d, "wiki.example.test").map(|s| s.trim_start_matches('0').to_owned()),
        Some(first_serial.trim_start_matches('0').to_owned())
    );

    // Plain HTTP on the public name goes to HTTPS; the dashboard is not
    // reachable under the domain.
    let plain = as_host(&d, "/hello?x=1", "wiki.example.test").await;
    assert_eq!(plain.status().as_u16(), 308);
    assert_eq!(
        plain.headers()["location"],
        "https://wiki.example.test/hello?x=1"
    );
    let dashboard = as_host(&d, "/apps", "example.test").await;
    assert_eq!(dashboard.status().as_u16(), 421);

    // The page shows it, and warns: this app has no login of its own.
    let page = d
        .http
        .get(d.url("/domain"))
        .header("cookie", session.header())
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("page text");
    assert!(page.contains("https://wiki.example.test/"), "{page}");
    assert!(page.contains("Make private"), "{page}");

    // Renewal before expiry: a new certificate while the first is valid.
    let expires = first["expires_at"].as_i64().expect("expires_at");
    let renewed = certificate_when(&d, "the certificate to be renewed", |c| {
        c["serial"] != first["serial"] && c["state"] == "valid"
    })
    .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        now < expires,
        "renewed only after the old certificate expired"
    );
    let out = curl_https(&d, &root, "wiki.example.test", "/hello");
    assert!(
        out.status.success(),
        "after renewal: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A restart serves the kept certificate without a new order.
    d.restart().await;
    let after_restart = cert_of(&domain_status(&d), "wiki");
    assert_eq!(after_restart["serial"], renewed["serial"]);
    let out = curl_https(&d, &root, "wiki.example.test", "/hello");
    assert!(
        out.status.success(),
        "after a restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Private: the name answers nothing, over HTTPS or HTTP.
    let private = d.cli(&["domain", "private", "wiki"]);
    assert!(
        private.status.success(),
        "{}",
        String::from_utf8_lossy(&private.stderr)
    );
    let out = curl_https(&d, &root, "wiki.example.test", "/hello");
    assert!(
        !out.status.success(),
        "a private app still answered over HTTPS"
    );
    let plain = as_host(&d, "/hello", "wiki.example.test").await;
    assert_eq!(plain.status().as_u16(), 421);
    // Still there on the home network.
    let local = as_host(&d, "/hello", "wiki.local").await;
    assert_eq!(
        local.text().await.expect("text"),
        "hello from the wiki over http"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_ca_is_reported_on_the_name() {
    let d = Daemon::start_with(
        tempfile::tempdir().expect("data"),
        vec!["--acme-check-every".into(), "1".into()],
    )
    .await;
    let session = d.set_up().await;
    let backend = app_backend().await;
    add_app(&d, &session, "wiki", backend).await;
    let dead = format!("https://127.0.0.1:{}/dir", free_port());
    let set = d.cli(&["domain", "set", "example.test", "--acme-directory", &dead]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(d.cli(&["domain", "public", "wiki"]).status.success());
    let cert = certificate_when(&d, "the failure to show", |c| c["state"] == "failed").await;
    assert!(
        cert["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{cert}"
    );
    let text = String::from_utf8_lossy(&d.cli(&["domain", "status"]).stdout).into_owned();
    assert!(text.contains("certificate failed"), "{text}");

    // Removing the app makes it private, so installing it again does not
    // put it on the internet unasked.
    let removed = d
        .http
        .delete(d.url("/api/v1/external-apps/wiki"))
        .header("cookie", session.header())
        .header("x-csrf-token", &session.csrf)
        .send()
        .await
        .expect("remove");
    assert!(removed.status().is_success());
    assert_eq!(domain_status(&d)["public_apps"], json!([]));
}

/// BIND 9 (Debian's `bind9`) serving `example.test` on loopback and
/// taking updates signed with one TSIG key; killed when dropped.
struct Bind {
    child: Child,
    port: u16,
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bind {
    fn start(dir: &Path, key_file: &Path) -> Self {
        let port = free_port();
        let d = dir.display();
        std::fs::write(
            dir.join("example.test.zone"),
            "$TTL 300\n@ IN SOA ns.example.test. admin.example.test. ( 1 3600 600 86400 300 )\n\
             @ IN NS ns.example.test.\nns IN A 127.0.0.1\n",
        )
        .expect("zone file");
        let config = format!(
            "options {{ directory \"{d}\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};\n\
             pid-file \"{d}/named.pid\"; session-keyfile \"{d}/session.key\"; managed-keys-directory \"{d}\";\n\
             recursion no; dnssec-validation no; }};\n\
             include \"{}\";\n\
             zone \"example.test\" {{ type primary; file \"{d}/example.test.zone\"; allow-update {{ key \"ddns-key\"; }}; }};\n",
            key_file.display()
        );
        std::fs::write(dir.join("named.conf"), config).expect("named.conf");
        let log = std::fs::File::create(dir.join("named.log")).expect("log");
        let child = Command::new("/usr/sbin/named")
            .args(["-g", "-n", "1", "-c"])
            .arg(dir.join("named.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("named (Debian's bind9 package)");
        let bind = Self { child, port };
        wait_for_port(port, &dir.join("named.log"));
        bind
    }

    /// What `name`'s A records are, as `dig` asks the server.
    fn lookup(&self, name: &str) -> String {
        let out = Command::new("dig")
            .args([
                "+short",
                "+tcp",
                "-p",
                &self.port.to_string(),
                "@127.0.0.1",
                name,
                "A",
            ])
            .output()
            .expect("dig (Debian's bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn tsig_key(dir: &Path, file: &str) -> std::path::PathBuf {
    let out = Command::new("tsig-keygen")
        .arg("ddns-key")
        .output()
        .expect("tsig-keygen (Debian's bind9)");
    assert!(out.status.success());
    let path = dir.join(file);
    std::fs::write(&path, out.stdout).expect("key file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_dns_keeps_the_wildcard_at_the_public_address() {
    let work = tempfile::tempdir().expect("tempdir");
    let key = tsig_key(work.path(), "ddns.key");
    let wrong_key = tsig_key(work.path(), "wrong.key");
    let bind = Bind::start(work.path(), &key);
    // The network's public address, as a router's status page would say it.
    let public = std::sync::Arc::new(std::sync::Mutex::new("203.0.113.7".to_owned()));
    let served = public.clone();
    let app = axum::Router::new().route(
        "/ip",
        axum::routing::get(move || {
            let served = served.clone();
            async move { format!("{}\n", served.lock().map(|s| s.clone()).unwrap_or_default()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address_url = format!("http://{}/ip", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let d = Daemon::start_with(
        tempfile::tempdir().expect("data"),
        vec!["--ddns-check-every".into(), "1".into()],
    )
    .await;
    let _session = d.set_up().await;
    assert!(d.cli(&["domain", "set", "example.test"]).status.success());
    let server = format!("127.0.0.1:{}", bind.port);
    let ddns = |key: &Path| {
        d.cli(&[
            "domain",
            "ddns",
            "--server",
            &server,
            "--key-file",
            &key.to_string_lossy(),
            "--address-from",
            &address_url,
        ])
    };

    // A key the server does not know: refused on its field, nothing saved.
    let refused = ddns(&wrong_key);
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && text.contains("key_secret") && text.contains("NOTAUTH"),
        "{text}"
    );
    assert!(domain_status(&d)["ddns"].is_null());
    assert_eq!(bind.lookup("wiki.example.test"), "");

    let set = ddns(&key);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert_eq!(bind.lookup("wiki.example.test"), "203.0.113.7");
    assert_eq!(bind.lookup("anything.example.test"), "203.0.113.7");
    assert_eq!(domain_status(&d)["records"][0]["value"], "203.0.113.7");

    // The address changes: the record follows, and the log says so.
    *public.lock().expect("lock") = "198.51.100.9".into();
    eventually(
        "the record to follow the new address",
        Duration::from_secs(20),
        || {
            let now = bind.lookup("wiki.example.test");
            (now == "198.51.100.9").then_some(()).ok_or(now)
        },
    )
    .await;
    assert!(
        d.log().contains("the public address changed"),
        "{}",
        d.log()
    );

    // A source that answers nonsense is reported, and the record stays.
    *public.lock().expect("lock") = "<html>login</html>".into();
    eventually("the failure to show", Duration::from_secs(20), || {
        let status = domain_status(&d);
        let error = status["ddns"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        error
            .contains("not an IPv4 address")
            .then_some(())
            .ok_or(error)
    })
    .await;
    assert_eq!(bind.lookup("wiki.example.test"), "198.51.100.9");

    // Off: nothing is updated any more.
    assert!(d.cli(&["domain", "ddns", "--off"]).status.success());
    assert!(domain_status(&d)["ddns"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dynamic_dns_the_certificate_comes_through_the_zone() {
    let work = tempfile::tempdir().expect("tempdir");
    let key = tsig_key(work.path(), "ddns.key");
    let bind = Bind::start(work.path(), &key);
    let d = Daemon::start_with(
        tempfile::tempdir().expect("data"),
        vec!["--acme-check-every".into(), "1".into()],
    )
    .await;
    // The CA asks BIND, and can reach no HTTP port of the device: only
    // DNS-01 can succeed.
    let pebble = Pebble::start(work.path(), free_port(), 3600, Some(bind.port));
    let session = d.set_up().await;
    let backend = app_backend().await;
    add_app(&d, &session, "wiki", backend).await;
    let ca = pebble.listener_ca.to_string_lossy().into_owned();
    let set = d.cli(&[
        "domain",
        "set",
        "example.test",
        "--acme-directory",
        &pebble.directory,
        "--acme-ca",
        &ca,
    ]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let server = format!("127.0.0.1:{}", bind.port);
    let ddns = d.cli(&[
        "domain",
        "ddns",
        "--server",
        &server,
        "--key-file",
        &key.to_string_lossy(),
        "--address-from",
        "127.0.0.1",
    ]);
    assert!(
        ddns.status.success(),
        "{}",
        String::from_utf8_lossy(&ddns.stderr)
    );
    assert!(d.cli(&["domain", "public", "wiki"]).status.success());
    certificate_when(&d, "a certificate through DNS-01", |c| {
        c["state"] == "valid"
    })
    .await;
    assert!(d.log().contains("dns-01"), "{}", d.log());
    let root = pebble.issuing_root(work.path());
    let out = curl_https(&d, &root, "wiki.example.test", "/hello");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The challenge's record is cleaned up.
    let txt = Command::new("dig")
        .args([
            "+short",
            "+tcp",
            "-p",
            &bind.port.to_string(),
            "@127.0.0.1",
            "_acme-challenge.wiki.example.test",
            "TXT",
        ])
        .output()
        .expect("dig");
    assert_eq!(String::from_utf8_lossy(&txt.stdout).trim(), "");
}
