//! Backups end to end: a real supervisor with an installed app backs up
//! into a restic repository, and the stock `restic` (Debian's) lists the
//! snapshots with our tags, checks the repository and restores the files
//! byte for byte. Then: an incremental backup adds only the change, an app
//! goes back to an older snapshot, retention forgets and prunes, a kill -9
//! half-way leaves a repository restic still checks, wrong keys and a dead
//! server are refused by field; and a fresh device restores everything
//! from a REST server (`rclone serve restic`) through the setup wizard.

mod common;
#[path = "../runtime/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::test_net::TestNet;
use common::{Daemon, eventually, socket_api as api};
use serde_json::{Value, json};
use support::registry_server::RegistryServer;
use support::test_images::{Compress, Layout, busybox_layer};

fn push_image(registry: &RegistryServer, dir: &Path) {
    let layout_dir = dir.join("layout");
    let mut layout = Layout::new(&layout_dir);
    let image = layout.image(
        "amd64",
        None,
        &[(busybox_layer(), Compress::Gzip)],
        &["/bin/sh"],
    );
    layout.tag(&image, "1");
    registry.push(&layout_dir, "1", "t/notes:1");
}

fn manifest(registry: &str) -> String {
    format!(
        r#"schema_version = 1
id = "notes"
title = "Notes"
description = "keeps files"
category = "tools"
icon = "icon.svg"
version = "1"
upstream = ""
architectures = ["amd64", "arm64"]
start_timeout_secs = 15

[web]
service = "main"
port = 80
has_login = false

[[services]]
name = "main"
image = "{registry}/t/notes:1"
command = ["/bin/sh", "-c", "echo ok > /tmp/index.html; trap 'exit 0' TERM; /bin/httpd -f -p 80 -h /tmp & wait"]
ports = [80]
volumes = [{{ name = "files", path = "/files" }}]
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

fn restic(repo: &str, key: &str, args: &[&str]) -> Output {
    Command::new("restic")
        .args(["-r", repo, "--no-cache"])
        .args(args)
        .env("RESTIC_PASSWORD", key)
        .output()
        .expect("restic")
}

fn set_up(d: &Daemon) {
    let (code, body) = api(
        d,
        "POST",
        "/api/v1/setup",
        Some(
            &json!({"device_name": "ddaemon", "password": common::PASSWORD,
            "password_confirm": common::PASSWORD, "timezone": "UTC"}),
        ),
    );
    assert_eq!(code, 201, "{body}");
}

fn cli_ok(d: &Daemon, args: &[&str]) -> String {
    let o = d.cli(args);
    assert!(
        o.status.success(),
        "ddaemon {args:?}: {}\n{}",
        text(&o),
        d.log()
    );
    text(&o)
}

/// The recovery key `ddaemon backup target` shows once.
fn recovery_key_in(said: &str) -> String {
    said.lines()
        .find_map(|l| l.strip_prefix("Recovery key: "))
        .unwrap_or_else(|| panic!("no recovery key shown: {said}"))
        .trim()
        .to_owned()
}

fn random_file(path: &Path, bytes: usize) {
    let mut data = vec![0u8; bytes];
    getrandom::fill(&mut data).expect("random");
    std::fs::write(path, data).expect("write");
}

async fn installed(d: &Daemon, work: &Path, registry: &str) {
    let path = work.join("notes.toml");
    std::fs::write(&path, manifest(registry)).expect("manifest");
    cli_ok(
        d,
        &["app", "install", "--manifest", &path.to_string_lossy()],
    );
    eventually("notes is installed", Duration::from_secs(60), || {
        let (_, app) = api(d, "GET", "/api/v1/apps/notes", None);
        (app["phase"] == "installed")
            .then_some(())
            .ok_or(format!("{app}"))
    })
    .await;
}

/// A set-up device in its own namespace with the notes app installed,
/// and the registry it came from.
struct Device {
    net: TestNet,
    registry: RegistryServer,
    work: tempfile::TempDir,
    d: Daemon,
}

impl Device {
    async fn with_notes() -> Self {
        let net = TestNet::new();
        let registry = RegistryServer::start_in(Some(&net.device));
        let work = tempfile::tempdir().expect("tempdir");
        push_image(&registry, work.path());
        let d = Daemon::start_in_netns(
            &net.device,
            vec!["--insecure-registry".into(), registry.host.clone()],
        )
        .await;
        set_up(&d);
        installed(&d, work.path(), &registry.host).await;
        Self {
            net,
            registry,
            work,
            d,
        }
    }
}

fn snapshots(repo: &str, key: &str) -> Vec<Value> {
    let o = restic(repo, key, &["snapshots", "--json"]);
    assert!(o.status.success(), "restic snapshots: {}", text(&o));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// The packs the repository's indexes name, as stock `restic` reads them.
fn indexed_packs(repo: &str, key: &str) -> std::collections::HashSet<String> {
    let o = restic(repo, key, &["list", "index"]);
    assert!(o.status.success(), "restic list index: {}", text(&o));
    let mut packs = std::collections::HashSet::new();
    for index in String::from_utf8_lossy(&o.stdout).split_whitespace() {
        let o = restic(repo, key, &["cat", "index", index]);
        assert!(o.status.success(), "restic cat index: {}", text(&o));
        let index: Value = serde_json::from_slice(&o.stdout).expect("index json");
        for pack in index["packs"].as_array().into_iter().flatten() {
            if let Some(id) = pack["id"].as_str() {
                packs.insert(id.to_owned());
            }
        }
    }
    assert!(!packs.is_empty(), "the indexes name no pack");
    packs
}

fn tagged<'a>(list: &'a [Value], tag: &str) -> Vec<&'a Value> {
    list.iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == tag))
        })
        .collect()
}

#[tokio::test]
async fn stock_restic_reads_our_backups_and_an_app_goes_back_in_time() {
    let Device {
        net,
        registry: _registry,
        work,
        mut d,
    } = Device::with_notes().await;
    let files = d.data().join("apps/notes/files");
    random_file(&files.join("photo.raw"), 3 << 20);
    std::fs::write(files.join("note.txt"), "version 1\n").expect("write");

    // A target inside the device's own data is refused by field; a folder
    // elsewhere gets a new repository and a recovery key shown once.
    let (code, err) = api(
        &d,
        "PUT",
        "/api/v1/backups/config",
        Some(
            &json!({"target": {"kind": "folder", "path": d.data().join("apps").to_string_lossy()}}),
        ),
    );
    assert_eq!(
        (code, err["error"]["field"].as_str()),
        (400, Some("target.path")),
        "{err}"
    );
    let repo_dir = work.path().join("repo");
    let repo = repo_dir.to_string_lossy().into_owned();
    let said = cli_ok(&d, &["backup", "target", "--folder", &repo]);
    let key = recovery_key_in(&said);
    let (_, status) = api(&d, "GET", "/api/v1/backups", None);
    assert!(
        !status.to_string().contains(&key),
        "the key is shown only once: {status}"
    );

    let said = cli_ok(&d, &["backup", "run"]);
    assert!(said.contains("notes was paused for"), "{said}");
    assert_eq!(
        api(&d, "GET", "/api/v1/apps/notes", None).1["running"],
        true
    );

    // Stock restic: the snapshots and their tags, a clean check, and the
    // files back byte for byte.
    let first = snapshots(&repo, &key);
    assert_eq!(first.len(), 2, "{first:?}");
    let app_snap = tagged(&first, "app:notes");
    assert_eq!(app_snap.len(), 1, "{first:?}");
    assert_eq!(app_snap[0]["paths"], json!(["/apps/notes"]));
    assert!(tagged(&first, "ddaemon").len() == 2 && tagged(&first, "state").len() == 1);
    let o = restic(&repo, &key, &["check", "--read-data"]);
    assert!(o.status.success(), "restic check: {}", text(&o));
    let out = work.path().join("out1");
    let o = restic(
        &repo,
        &key,
        &[
            "restore",
            "latest",
            "--tag",
            "app:notes",
            "--target",
            &out.to_string_lossy(),
        ],
    );
    assert!(o.status.success(), "restic restore: {}", text(&o));
    for name in ["photo.raw", "note.txt"] {
        assert_eq!(
            std::fs::read(out.join("apps/notes/files").join(name)).expect("restored"),
            std::fs::read(files.join(name)).expect("original"),
            "{name} byte for byte"
        );
    }
    let o = restic(
        &repo,
        &key,
        &[
            "restore",
            "latest",
            "--tag",
            "state",
            "--target",
            &out.to_string_lossy(),
        ],
    );
    assert!(o.status.success(), "restic restore state: {}", text(&o));
    let db = rusqlite::Connection::open(out.join("state/state.db")).expect("state.db");
    let users: i64 = db
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .expect("a consistent database");
    assert_eq!(users, 1);
    assert!(
        out.join("state/ca").is_dir(),
        "the device CA is in the backup"
    );
    assert!(
        !out.join("state/backup").exists(),
        "the backup's own folder is not"
    );

    // Incremental: one small change adds a little, not the 3 MB again.
    std::fs::write(files.join("note.txt"), "version 2\n").expect("write");
    cli_ok(&d, &["backup", "run"]);
    let (_, status) = api(&d, "GET", "/api/v1/backups", None);
    let added = status["runs"][0]["bytes_added"]
        .as_u64()
        .expect("bytes_added");
    assert!(
        added < 200_000,
        "the second backup added {added} bytes: {status}"
    );
    assert!(
        status["runs"][1]["bytes_added"].as_u64().unwrap_or(0) > 3_000_000,
        "{status}"
    );

    // The app goes back to the first snapshot: its file says version 1.
    let old = app_snap[0]["id"].as_str().expect("id").to_owned();
    let (code, err) = api(
        &d,
        "POST",
        "/api/v1/backups/restore",
        Some(&json!({"app": "notes", "snapshot": tagged(&first, "state")[0]["id"]})),
    );
    assert_eq!(
        (code, err["error"]["field"].as_str()),
        (400, Some("snapshot")),
        "{err}"
    );
    cli_ok(&d, &["backup", "restore", &old[..8], "--app", "notes"]);
    assert_eq!(
        std::fs::read_to_string(files.join("note.txt")).expect("note"),
        "version 1\n"
    );
    assert_eq!(
        api(&d, "GET", "/api/v1/apps/notes", None).1["running"],
        true
    );

    // Retention: keeping only the latest, a third run leaves one snapshot
    // of each path, and the pruned repository still checks.
    cli_ok(
        &d,
        &[
            "backup",
            "target",
            "--folder",
            &repo,
            "--keep-last",
            "1",
            "--keep-daily",
            "0",
            "--keep-weekly",
            "0",
            "--keep-monthly",
            "0",
        ],
    );
    cli_ok(&d, &["backup", "run"]);
    assert_eq!(snapshots(&repo, &key).len(), 2);
    let o = restic(&repo, &key, &["check"]);
    assert!(o.status.success(), "restic check after prune: {}", text(&o));

    // A wrong key for a repository that exists, and a server that does not
    // answer, are refused by field, and the settings stay as they were.
    let (code, err) = api(
        &d,
        "PUT",
        "/api/v1/backups/config",
        Some(&json!({"target": {"kind": "folder", "path": repo}, "recovery_key": "0000-1111"})),
    );
    assert_eq!(
        (code, err["error"]["field"].as_str()),
        (400, Some("recovery_key")),
        "{err}"
    );
    let (code, err) = api(
        &d,
        "PUT",
        "/api/v1/backups/config",
        Some(&json!({"target": {"kind": "rest", "url": "http://127.0.0.1:9/repo"}})),
    );
    assert_eq!(
        (code, err["error"]["field"].as_str()),
        (400, Some("target")),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("cannot be reached"),
        "{err}"
    );
    let (_, status) = api(&d, "GET", "/api/v1/backups", None);
    assert_eq!(status["target"]["path"], repo.as_str(), "{status}");

    // kill -9 half-way through a big backup: restic still checks the
    // repository, and the next backup works.
    random_file(&files.join("big.raw"), 400 << 20);
    let (code, _) = api(&d, "POST", "/api/v1/backups/run", None);
    assert_eq!(code, 202);
    eventually(
        "the backup is writing the app's data",
        Duration::from_secs(60),
        || {
            let (_, s) = api(&d, "GET", "/api/v1/backups", None);
            let job = &s["job"];
            (job["doing"].as_str().unwrap_or("").contains("/apps/notes")
                && job["done"].as_u64().unwrap_or(0) > 20 << 20)
                .then_some(())
                .ok_or(format!("{s}"))
        },
    )
    .await;
    d.kill9();
    let o = restic(&repo, &key, &["check"]);
    assert!(
        o.status.success(),
        "restic check after kill -9: {}",
        text(&o)
    );
    d.restart_in_netns(&net.device).await;
    eventually(
        "the killed backup shows as interrupted",
        Duration::from_secs(10),
        || {
            let (_, s) = api(&d, "GET", "/api/v1/backups", None);
            let error = s["runs"][0]["error"].as_str().unwrap_or("").to_owned();
            error
                .contains("interrupted")
                .then_some(())
                .ok_or(format!("{s}"))
        },
    )
    .await;
    std::fs::remove_file(files.join("big.raw")).expect("rm");
    cli_ok(&d, &["backup", "run"]);
    let o = restic(&repo, &key, &["check"]);
    assert!(
        o.status.success(),
        "restic check after the next backup: {}",
        text(&o)
    );

    // ddaemon's own check passes, then fails once a pack of data is lost,
    // and the failure shows on the dashboard.
    cli_ok(&d, &["backup", "check"]);
    // The killed backup may have left packs no index names; losing one of
    // those is only a warning, so the lost pack is one the index needs.
    let indexed = indexed_packs(&repo, &key);
    let pack = walk_files(&repo_dir.join("data"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| indexed.contains(&*n.to_string_lossy()))
        })
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a data pack the index names");
    std::fs::remove_file(&pack).expect("rm pack");
    let o = d.cli(&["backup", "check"]);
    assert!(!o.status.success(), "a check with a lost pack must fail");
    assert!(text(&o).contains("check found errors"), "{}", text(&o));
    let (_, status) = api(&d, "GET", "/api/v1/backups", None);
    assert_eq!(status["runs"][0]["ok"], false, "{status}");
    let apps_page = page_over_socket(&d, "/apps");
    assert!(
        apps_page.contains("The last check failed"),
        "the dashboard shows the failure: {apps_page}"
    );
}

/// A dashboard page over the control socket, logged in.
fn page_over_socket(d: &Daemon, path: &str) -> String {
    let o = Command::new("curl")
        .args(["-sS", "-i", "--unix-socket"])
        .arg(d.socket())
        .args(["-H", "Content-Type: application/json", "--data"])
        .arg(json!({"password": common::PASSWORD}).to_string())
        .arg("http://localhost/api/v1/login")
        .output()
        .expect("curl");
    let answer = String::from_utf8_lossy(&o.stdout).into_owned();
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {answer}"))
        .to_owned();
    let o = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(d.socket())
        .args(["-H", &format!("Cookie: {cookie}")])
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `rclone serve restic` on loopback inside `ns`: a restic REST server.
struct RestServer(Child);

impl RestServer {
    fn start(ns: &str, dir: &Path, port: u16) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "rclone", "serve", "restic", "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rclone serve restic");
        Self(child)
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_fresh_device_restores_everything_from_a_rest_server_in_the_wizard() {
    let net = TestNet::new();
    let registry = RegistryServer::start_in(Some(&net.device));
    let work = tempfile::tempdir().expect("tempdir");
    push_image(&registry, work.path());
    let served = work.path().join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    let _server = RestServer::start(&net.device, &served, 8123);
    let url = "http://127.0.0.1:8123/home";
    let args = vec!["--insecure-registry".into(), registry.host.clone()];

    let old = Daemon::start_in_netns(&net.device, args.clone()).await;
    set_up(&old);
    installed(&old, work.path(), &registry.host).await;
    let note = "from the old device\n";
    std::fs::write(old.data().join("apps/notes/files/note.txt"), note).expect("write");
    let said = cli_ok(&old, &["backup", "target", "--rest", url]);
    let key = recovery_key_in(&said);
    cli_ok(&old, &["backup", "run"]);
    drop(old);

    let mut new = Daemon::start_in_netns(&net.device, args).await;
    let target = json!({"kind": "rest", "url": url});
    let (code, err) = api(
        &new,
        "POST",
        "/api/v1/setup/restore",
        Some(&json!({"target": target, "recovery_key": "not-the-key"})),
    );
    assert_eq!(
        (code, err["error"]["field"].as_str()),
        (400, Some("recovery_key")),
        "{err}"
    );
    let (code, err) = api(
        &new,
        "POST",
        "/api/v1/setup/restore",
        Some(&json!({"target": target, "recovery_key": key})),
    );
    assert_eq!(code, 202, "{err}");
    // When the restore is done the supervisor restarts (systemd starts it
    // again on the device; here the test does).
    let exit = new.wait_exit(Duration::from_secs(120));
    assert!(exit.success(), "{exit:?}\n{}", new.log());
    new.restart_in_netns(&net.device).await;
    let (code, _) = api(
        &new,
        "POST",
        "/api/v1/login",
        Some(&json!({"username": "admin", "password": common::PASSWORD})),
    );
    assert_eq!(code, 200, "the old password logs in");
    eventually("notes is installed again", Duration::from_secs(60), || {
        let (_, app) = api(&new, "GET", "/api/v1/apps/notes", None);
        (app["phase"] == "installed" && app["running"] == true)
            .then_some(())
            .ok_or(format!("{app}"))
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(new.data().join("apps/notes/files/note.txt")).expect("note"),
        note
    );
    let (_, status) = api(&new, "GET", "/api/v1/backups", None);
    assert_eq!(
        status["target"]["url"], url,
        "the backups go on to the same place: {status}"
    );
    assert_eq!(
        (&status["runs"][0]["kind"], &status["runs"][0]["ok"]),
        (&json!("restore"), &json!(true)),
        "{status}"
    );
    // The old device's backup was copied while it ran: its row is not
    // left reading "running" (nor "interrupted").
    assert!(
        status["runs"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["ok"] != Value::Null && r["ok"] != false)),
        "{status}"
    );
}

/// OpenSSH's sshd on loopback inside `ns`, letting in `authorized` as root
/// (SFTP only matters here).
struct SftpServer {
    child: Child,
}

impl SftpServer {
    fn start(ns: &str, dir: &Path, port: u16, authorized: &str) -> Self {
        std::fs::create_dir_all("/run/sshd").expect("sshd's privilege separation folder");
        let key = dir.join("host_key");
        let o = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()
            .expect("ssh-keygen");
        assert!(o.status.success(), "{}", text(&o));
        std::fs::write(dir.join("authorized_keys"), format!("{authorized}\n")).expect("keys");
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nSubsystem sftp internal-sftp\n",
                key.display(),
                dir.join("authorized_keys").display(),
                dir.join("sshd.pid").display()
            ),
        )
        .expect("config");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd");
        Self { child }
    }
}

impl Drop for SftpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sftp_through_rclone_and_a_full_disk() {
    let Device {
        net,
        registry: _registry,
        work,
        d,
    } = Device::with_notes().await;
    let files = d.data().join("apps/notes/files");
    random_file(&files.join("photo.raw"), 2 << 20);

    // SFTP: the device's own key, which the page shows, lets it in; the
    // repository on the server is restic's.
    let (_, key_view) = api(&d, "GET", "/api/v1/backups/ssh-key", None);
    let public = key_view["public_key"].as_str().expect("public key");
    let sshd_dir = work.path().join("sshd");
    std::fs::create_dir_all(&sshd_dir).expect("mkdir");
    let _sshd = SftpServer::start(&net.device, &sshd_dir, 2222, public);
    let remote = work.path().join("sftp-repo");
    let remote_path = remote.to_string_lossy().into_owned();
    let mut said = String::new();
    eventually(
        "sshd answers and the target is set",
        Duration::from_secs(30),
        || {
            let o = d.cli(&[
                "backup",
                "target",
                "--sftp",
                &format!("root@127.0.0.1:{remote_path}"),
                "--port",
                "2222",
            ]);
            said = text(&o);
            o.status.success().then_some(()).ok_or(said.clone())
        },
    )
    .await;
    let key = recovery_key_in(&said);
    cli_ok(&d, &["backup", "run"]);
    let list = snapshots(&remote_path, &key);
    assert_eq!(tagged(&list, "app:notes").len(), 1, "{list:?}");
    let o = restic(&remote_path, &key, &["check", "--read-data"]);
    assert!(o.status.success(), "restic check: {}", text(&o));

    // Any rclone remote, from the owner's own rclone.conf section (here
    // the same server, as an owner would have it configured).
    let own = work.path().join("rclone.conf");
    std::fs::write(
        &own,
        format!(
            "[nas]\ntype = sftp\nhost = 127.0.0.1\nport = 2222\nuser = root\nkey_file = {}\n",
            d.data().join("ddaemon/backup/ssh_key").display()
        ),
    )
    .expect("rclone.conf");
    let elsewhere = work.path().join("rclone-repo");
    let said = cli_ok(
        &d,
        &[
            "backup",
            "target",
            "--rclone",
            &format!("nas:{}", elsewhere.display()),
            "--rclone-config",
            &own.to_string_lossy(),
        ],
    );
    assert!(said.contains("the recovery key you wrote down"), "{said}");
    cli_ok(&d, &["backup", "run"]);
    let listed = cli_ok(&d, &["backup", "ls"]);
    assert!(
        listed.contains("app notes") && listed.contains("device state"),
        "{listed}"
    );
    let list = snapshots(&elsewhere.to_string_lossy(), &key);
    assert_eq!(tagged(&list, "app:notes").len(), 1, "{list:?}");

    // A full disk: the backup fails saying so, and what was saved before
    // is intact.
    let small = work.path().join("small");
    std::fs::create_dir_all(&small).expect("mkdir");
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&small)
        .output()
        .expect("mount");
    assert!(o.status.success(), "{}", text(&o));
    let _unmount = Unmount(small.clone());
    let repo = small.join("repo").to_string_lossy().into_owned();
    std::fs::remove_file(files.join("photo.raw")).expect("rm");
    // The device keeps one recovery key: the new repository opens with
    // the one already written down.
    let said = cli_ok(&d, &["backup", "target", "--folder", &repo]);
    assert!(said.contains("the recovery key you wrote down"), "{said}");
    cli_ok(&d, &["backup", "run"]);
    random_file(&files.join("video.raw"), 6 << 20);
    let o = d.cli(&["backup", "run"]);
    assert!(!o.status.success(), "a backup onto a full disk must fail");
    assert!(
        text(&o).contains("No space left on device"),
        "the error says why: {}",
        text(&o)
    );
    let o = restic(&repo, &key, &["check"]);
    assert!(
        o.status.success(),
        "restic check after a full disk: {}",
        text(&o)
    );
    let list = snapshots(&repo, &key);
    assert_eq!(
        tagged(&list, "app:notes").len(),
        1,
        "the first backup of the app is intact, the failed one not recorded: {list:?}"
    );
}

/// Lazily unmounts its folder when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        common::unmount_under(&self.0);
    }
}

/// Writes the benchmark's mixed data set under `dir`: incompressible
/// media, compressible text, and many small files; `scale` MiB in all.
fn mixed_data_set(dir: &Path, scale_mib: usize) {
    let media = dir.join("media");
    let text = dir.join("text");
    let small = dir.join("small");
    for d in [&media, &text, &small] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    // Half media in 32 MiB files, a quarter text in 16 MiB files, a quarter
    // in 16 KiB files.
    for i in 0..(scale_mib / 2 / 32) {
        random_file(&media.join(format!("clip{i}.raw")), 32 << 20);
    }
    for i in 0..(scale_mib / 4 / 16) {
        let mut raw = vec![0u8; 8 << 20];
        getrandom::fill(&mut raw).expect("random");
        std::fs::write(text.join(format!("log{i}.txt")), hex::encode(raw)).expect("write");
    }
    for i in 0..(scale_mib / 4 * 64) {
        let sub = small.join(format!("{}", i / 1000));
        std::fs::create_dir_all(&sub).expect("mkdir");
        random_file(&sub.join(format!("f{i}.bin")), 16 << 10);
    }
}

fn timed(what: &str, mut command: Command) -> f64 {
    let started = std::time::Instant::now();
    let o = command.output().expect(what);
    assert!(o.status.success(), "{what}: {}", text(&o));
    started.elapsed().as_secs_f64()
}

/// First and incremental backup of the same 2 GiB mixed data set, by
/// ddaemon and by the stock restic, each to its own folder. A measurement,
/// not a check: `scripts/bench-backup` runs it on a release build.
#[tokio::test]
#[ignore = "a benchmark; run by scripts/bench-backup"]
async fn bench_backup_against_restic() {
    let mib: usize = std::env::var("BENCH_BACKUP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let Device {
        net: _net,
        registry: _registry,
        work,
        d,
    } = Device::with_notes().await;
    let files = d.data().join("apps/notes/files");
    mixed_data_set(&files, mib);
    let ours = work.path().join("ours").to_string_lossy().into_owned();
    let theirs = work.path().join("theirs").to_string_lossy().into_owned();
    let key = recovery_key_in(&cli_ok(&d, &["backup", "target", "--folder", &ours]));
    let o = restic(&theirs, &key, &["init"]);
    assert!(o.status.success(), "restic init: {}", text(&o));
    let restic_backup = || {
        let mut c = Command::new("restic");
        c.args(["-r", &theirs, "backup", "--quiet", "--host", "bench"])
            .arg(&files)
            .env("RESTIC_PASSWORD", &key)
            .env("RESTIC_CACHE_DIR", work.path().join("restic-cache"));
        c
    };
    let ddaemon_backup = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ddaemon"));
        c.args(["backup", "run", "--socket"]).arg(d.socket());
        c
    };
    let first_ours = timed("ddaemon backup", ddaemon_backup());
    let first_theirs = timed("restic backup", restic_backup());
    // About 1 % changes: a new clip and a hundred small files rewritten.
    random_file(&files.join("media/new.raw"), (mib << 20) / 100);
    for i in 0..100 {
        random_file(
            &files.join(format!("small/{}/f{i}.bin", i / 1000)),
            16 << 10,
        );
    }
    let next_ours = timed("ddaemon backup", ddaemon_backup());
    let next_theirs = timed("restic backup", restic_backup());
    let rate = |s: f64| mib as f64 / s;
    println!(
        "backup of {mib} MiB: first ddaemon {first_ours:.1} s ({:.0} MiB/s), restic {first_theirs:.1} s \
         ({:.0} MiB/s), ddaemon/restic throughput {:.2}; incremental ddaemon {next_ours:.1} s, \
         restic {next_theirs:.1} s, ratio {:.2}",
        rate(first_ours),
        rate(first_theirs),
        first_theirs / first_ours,
        next_theirs / next_ours
    );
    for dir in [&ours, &theirs] {
        let o = Command::new("du").args(["-sm", dir]).output().expect("du");
        println!(
            "repository size: {}",
            String::from_utf8_lossy(&o.stdout).trim()
        );
    }
}

#[tokio::test]
async fn a_scheduled_backup_runs_at_its_time() {
    let d = Daemon::start().await;
    set_up(&d);
    let work = tempfile::tempdir().expect("tempdir");
    let repo = work.path().join("repo").to_string_lossy().into_owned();
    // The next minute, in the device's time zone (UTC), not so near that
    // it passes while the target is being set.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let next = now + if now % 60 > 50 { 120 } else { 60 };
    let time = format!("{:02}:{:02}", next / 3600 % 24, next / 60 % 60);
    cli_ok(
        &d,
        &["backup", "target", "--folder", &repo, "--time", &time],
    );
    let (_, status) = api(&d, "GET", "/api/v1/backups", None);
    let at = status["next_run"].as_u64().expect("next_run");
    assert!(
        at <= next && at + 60 > next,
        "the next run is at {time}: {status}"
    );
    eventually("the scheduled backup ran", Duration::from_secs(120), || {
        let (_, s) = api(&d, "GET", "/api/v1/backups", None);
        let run = &s["runs"][0];
        (run["kind"] == "backup" && run["ok"] == true)
            .then_some(())
            .ok_or(format!("{s}"))
    })
    .await;
    let listed = cli_ok(&d, &["backup", "ls"]);
    assert!(listed.contains("device state"), "{listed}");
}
