//! A real `ddaemon serve` on a free loopback port, with its own data folder,
//! for tests that talk to it over HTTP as the page or a client would.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod avahi;
pub mod test_net;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery";

/// Waits until `check` passes, trying every 250 ms; past `within`, fails
/// with what `check` last said.
pub async fn eventually(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => panic!("{what}: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A running supervisor. Dropping it stops it.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// The HTTPS address.
    pub tls_addr: SocketAddr,
    child: Option<Child>,
    pub http: reqwest::Client,
    extra_args: Vec<String>,
    /// A network namespace the supervisor runs in; `None` keeps it in the
    /// test's own, with container networking off (the host network is
    /// never touched).
    netns: Option<String>,
    /// Extra environment for the next start (crash tests set a crash point).
    pub env: Vec<(String, String)>,
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

impl Daemon {
    /// Starts a supervisor on a fresh data folder.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir).await
    }

    /// Starts a supervisor on an existing data folder.
    pub async fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_with(dir, Vec::new()).await
    }

    /// Starts a supervisor inside the network namespace `netns`, with the
    /// container bridge on; the test reaches it through the CLI.
    pub async fn start_in_netns(netns: &str, extra_args: Vec<String>) -> Self {
        Self::start_in_netns_on(netns, free_port(), extra_args).await
    }

    /// The same, listening on `addr` (inside the namespace), HTTPS on the
    /// same address.
    pub async fn start_in_netns_on(netns: &str, addr: SocketAddr, extra_args: Vec<String>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut daemon = Self {
            dir,
            addr,
            // HTTPS on the same address as HTTP (all interfaces, or loopback).
            tls_addr: SocketAddr::new(addr.ip(), free_port().port()),
            child: None,
            http: reqwest::Client::new(),
            extra_args,
            netns: Some(netns.to_owned()),
            env: Vec::new(),
        };
        daemon.spawn().await;
        daemon
    }

    /// Starts a supervisor with extra `serve` arguments.
    pub async fn start_with(dir: tempfile::TempDir, extra_args: Vec<String>) -> Self {
        // The workspace has one TLS crypto provider, ring, and installs it
        // explicitly (the registry client turns off the implicit default).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        let mut daemon = Self {
            dir,
            addr: free_port(),
            tls_addr: free_port(),
            child: None,
            http,
            extra_args,
            netns: None,
            env: Vec::new(),
        };
        daemon.spawn().await;
        daemon
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// The prefix of the network namespaces of this supervisor's
    /// containers (`ddaemon-TAG-`; the tag is a hash of its network state
    /// file's path).
    pub fn netns_prefix(&self) -> String {
        use sha2::Digest as _;
        let state = self.dir.path().join("containers/network.json");
        let hash = sha2::Sha256::digest(state.as_os_str().as_encoded_bytes());
        format!("ddaemon-{}-", hex::encode(&hash[..3]))
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("ddaemon.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log file");
        let mut command = match &self.netns {
            // nsenter switches only the network namespace; `ip netns exec`
            // would also remount /sys and hide the cgroup hierarchy.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg(env!("CARGO_BIN_EXE_ddaemon"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_ddaemon")),
        };
        if self.netns.is_none() {
            // Nothing reaches the host's own network: no bridge, no mDNS.
            command
                .arg("serve")
                .arg("--no-container-network")
                .arg("--no-mdns");
        } else {
            command.arg("serve");
        }
        let child = command
            .arg("--data")
            .arg(self.dir.path())
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--socket")
            .arg(self.socket())
            .arg("--listen-tls")
            .arg(self.tls_addr.to_string())
            .arg("--catalog")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/catalog"))
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ddaemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.netns.is_some() {
                if self.socket().exists() && self.cli(&["status"]).status.success() {
                    return;
                }
            } else if let Ok(r) = self.http.get(self.url("/api/v1/health")).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "ddaemon exited with {status} before answering:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ddaemon did not answer in 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the `ddaemon` CLI against this supervisor's socket.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        // The socket goes right after the command group, before any
        // trailing command line a container is given.
        let (group, rest) = args.split_first().expect("a command");
        Command::new(env!("CARGO_BIN_EXE_ddaemon"))
            .arg(group)
            .arg("--socket")
            .arg(self.socket())
            .args(rest)
            .output()
            .expect("run ddaemon")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("running")
    }

    /// Stops with SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().expect("wait")
    }

    /// Kills with SIGKILL, as a power cut would stop it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the supervisor ends by itself (a crash test's crash
    /// point) and returns how it ended.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ddaemon did not end within {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts again on the same data folder, now inside the network
    /// namespace `netns` (mDNS and the container bridge on); from then
    /// on the test reaches it through the CLI.
    pub async fn restart_in_netns(&mut self, netns: &str) {
        if self.child.is_some() {
            let status = self.terminate();
            assert!(
                status.success(),
                "SIGTERM must stop ddaemon cleanly, got {status}"
            );
        }
        self.netns = Some(netns.to_owned());
        self.spawn().await;
    }

    /// Starts again on the same data folder and port.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.terminate();
            assert!(
                status.success(),
                "SIGTERM must stop ddaemon cleanly, got {status}"
            );
        }
        self.spawn().await;
    }

    pub async fn health(&self) -> Value {
        self.http
            .get(self.url("/api/v1/health"))
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("health json")
    }

    /// `GET path` sending `cookie` (a whole `name=value`).
    pub async fn get_as(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .expect("get")
    }

    /// A form posted the way a browser posts it, with `cookie`.
    pub async fn post_form_as(
        &self,
        path: &str,
        cookie: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("cookie", cookie)
            .form(form)
            .send()
            .await
            .expect("post form")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("post")
    }

    /// Completes setup and returns the session (cookie value, CSRF token).
    pub async fn set_up(&self) -> Session {
        let r = self
            .post_json(
                "/api/v1/setup",
                &json!({"device_name": "ddaemon", "password": PASSWORD, "password_confirm": PASSWORD, "timezone": "UTC"}),
            )
            .await;
        assert_eq!(r.status(), 201, "setup failed");
        Session::from_response(r).await
    }

    pub async fn login(&self, password: &str) -> reqwest::Response {
        self.post_json("/api/v1/login", &json!({ "password": password }))
            .await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // Container namespaces are named files under /run/netns; they
        // outlive the test's own namespaces unless removed.
        if self.netns.is_some() {
            let prefix = self.netns_prefix();
            for entry in std::fs::read_dir("/run/netns")
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) {
                    let _ = Command::new("ip").args(["netns", "del", &name]).status();
                }
            }
        }
        // Shims live in their own session by design; end the ones this
        // test started, and their containers.
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("containers")) {
            for entry in entries.flatten() {
                let Ok(text) = std::fs::read_to_string(entry.path().join("status.json")) else {
                    continue;
                };
                let Ok(status) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                // Only a shim still started for this folder (pids get reused).
                let ours = |pid: i64| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| {
                            String::from_utf8_lossy(&c).contains(&*entry.path().to_string_lossy())
                        })
                        .unwrap_or(false)
                };
                if let Some(shim) = status["shim_pid"].as_i64().filter(|p| ours(*p)) {
                    if let Some(pid) = status["pid"].as_i64() {
                        let _ = Command::new("kill")
                            .arg("-KILL")
                            .arg(pid.to_string())
                            .status();
                    }
                    let _ = Command::new("kill")
                        .arg("-KILL")
                        .arg(shim.to_string())
                        .status();
                }
            }
        }
        // A container's root filesystem outlives its killed shim; without
        // this every run would leave overlays mounted under /tmp.
        unmount_under(self.dir.path());
    }
}

/// Lazily unmounts everything mounted at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let mut points = mount_points_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(Path::new(p).components().count()));
    for point in points {
        let _ = nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The mount points at or below `dir`, as mountinfo spells them (tempdirs
/// have nothing it would escape).
pub fn mount_points_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect()
}

/// A logged-in client's credentials.
#[derive(Debug, Clone)]
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

impl Session {
    pub async fn from_response(r: reqwest::Response) -> Self {
        let cookie = cookie_value(r.headers(), "ddaemon_session").expect("session cookie set");
        let body: Value = r.json().await.expect("json");
        let csrf = body["csrf_token"].as_str().expect("csrf_token").to_owned();
        Self { cookie, csrf }
    }

    pub fn header(&self) -> String {
        format!("ddaemon_session={}", self.cookie)
    }
}

/// The `Set-Cookie` line for `name`, whole.
pub fn set_cookie_line(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value a `Set-Cookie` gives `name`.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let line = set_cookie_line(headers, name)?;
    let value = line.split(';').next()?.split_once('=')?.1.to_owned();
    (!value.is_empty()).then_some(value)
}

/// The error body's `code` and `field`.
pub async fn error_of(r: reqwest::Response) -> (u16, String, Option<String>, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("error body is JSON");
    let e = &body["error"];
    (
        status,
        e["code"].as_str().unwrap_or_default().to_owned(),
        e["field"].as_str().map(str::to_owned),
        e["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The JSON API over the control socket: status and body.
pub fn socket_api(d: &Daemon, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-w", "\n%{http_code}", "-X", method, "--unix-socket"])
        .arg(d.socket());
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data"])
            .arg(b.to_string());
    }
    let o = c
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}
