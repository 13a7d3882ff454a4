//! The setup page clicked through in a real headless Chromium (Debian's),
//! driven by Playwright, with JavaScript off. `scripts/test` installs both.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Daemon, PASSWORD};

fn output_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-output/browser")
}

#[tokio::test]
async fn wizard_logout_login_and_dashboard_screenshot() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        here.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/test (or `npm ci` in {})",
        here.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is not installed at {chromium}: run scripts/test (apt-get install chromium)"
    );
    let d = Daemon::start().await;
    let backups = tempfile::tempdir().expect("tempdir");
    let backup_dir = backups.path().join("repo").to_string_lossy().into_owned();
    let out = output_dir();
    let _ = std::fs::remove_file(out.join("dashboard.png"));
    let base = d.url("");
    let status = tokio::task::spawn_blocking({
        let out = out.clone();
        move || {
            Command::new("node")
                .current_dir(&here)
                .arg("wizard.mjs")
                .arg(&base)
                .arg(&out)
                .arg(PASSWORD)
                .arg(&backup_dir)
                .status()
        }
    })
    .await
    .expect("join")
    .expect("run node");
    assert!(
        status.success(),
        "the browser test failed; daemon log:\n{}",
        d.log()
    );
    let png = std::fs::read(out.join("dashboard.png")).expect("dashboard screenshot saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
}
