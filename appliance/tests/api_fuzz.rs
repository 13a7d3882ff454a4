//! The API fuzzed from its own OpenAPI document with schemathesis, without a
//! session and with one: no answer is a 5xx, every answer matches the
//! document, and nothing changes without a session.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Daemon;

fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return path.into();
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-tools/venv/bin/schemathesis");
    if venv.exists() {
        return venv;
    }
    "schemathesis".into()
}

/// What a request without a session could have changed.
fn snapshot(data: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(data.join("ddaemon/state.db")).expect("open state");
    let mut rows = Vec::new();
    for sql in [
        "SELECT key || '=' || value FROM settings ORDER BY key",
        "SELECT name || ':' || role || ':' || password_hash FROM users ORDER BY name",
        "SELECT 'sessions=' || count(*) FROM sessions",
    ] {
        let mut stmt = conn.prepare(sql).expect("prepare");
        let found = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        rows.extend(found);
    }
    rows
}

fn run(d: &Daemon, config: Option<&Path>, extra: &[&str]) {
    let mut cmd = Command::new(schemathesis());
    if let Some(config) = config {
        cmd.arg("--config-file").arg(config);
    }
    cmd.arg("run")
        .arg(d.url("/api/v1/openapi.json"))
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args([
            "--max-examples",
            "60",
            "--workers",
            "1",
            "--no-color",
            "--warnings",
            "off",
        ])
        .args(extra);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(err) => panic!(
            "cannot run schemathesis ({err}): run scripts/test, which installs it, or set SCHEMATHESIS"
        ),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

#[tokio::test]
async fn fuzzing_finds_no_server_error_and_no_change_without_a_session() {
    let d = Daemon::start().await;
    let session = d.set_up().await;
    let before = snapshot(d.data());

    run(&d, None, &[]);
    assert_eq!(
        snapshot(d.data()),
        before,
        "a request without a session changed the state"
    );

    // Schemathesis fills the OpenAPI security schemes from its config, so it
    // also knows which requests it sent without them (the ignored_auth check).
    let config = d.data().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[auth.openapi.session]\napi_key = \"{}\"\n\n[auth.openapi.csrf]\napi_key = \"{}\"\n",
            session.cookie, session.csrf
        ),
    )
    .expect("write config");
    // Logout last: it ends the session the other calls need.
    run(&d, Some(&config), &["--exclude-path", "/api/v1/logout"]);
    run(&d, Some(&config), &["--include-path", "/api/v1/logout"]);

    let log = d.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}
