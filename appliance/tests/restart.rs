//! State survives restarts, SIGTERM stops cleanly, and a kill -9 during
//! setup leaves either no setup or a whole one.

mod common;

use std::time::Duration;

use common::{Daemon, PASSWORD};
use serde_json::json;

#[tokio::test]
async fn state_survives_a_restart_and_sigterm_is_clean() {
    let mut d = Daemon::start().await;
    let session = d.set_up().await;
    assert_eq!(
        std::fs::read_to_string(d.data().join("ddaemon/hostname")).expect("hostname"),
        "ddaemon\n",
        "the device name becomes the host name at the next boot"
    );
    d.restart().await; // asserts a clean exit on SIGTERM
    assert!(!d.log().contains("ERROR"), "{}", d.log());
    assert_eq!(d.health().await["setup_complete"], true);
    // The session from before the restart is still valid.
    let r = d.get_as("/api/v1/system", &session.header()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(d.login(PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn sigterm_removes_the_control_socket() {
    let mut d = Daemon::start().await;
    assert!(d.socket().exists());
    assert!(d.terminate().success());
    assert!(!d.socket().exists());
    assert!(d.log().contains("ddaemon stopped"));
}

#[tokio::test]
async fn kill_9_during_setup_leaves_all_or_nothing() {
    // The hash takes tens of milliseconds, the commit microseconds: spread
    // the kills over the whole request so some land before, some during, and
    // some after the write.
    let delays_ms = [0u64, 5, 15, 30, 50, 80, 120, 200, 400];
    let (mut saw_none, mut saw_all) = (0, 0);
    for delay in delays_ms {
        let mut d = Daemon::start().await;
        let url = d.url("/api/v1/setup");
        let http = d.http.clone();
        let request = tokio::spawn(async move {
            http.post(url)
                .json(&json!({"device_name": "crashy", "password": PASSWORD, "password_confirm": PASSWORD, "timezone": "UTC"}))
                .send()
                .await
        });
        tokio::time::sleep(Duration::from_millis(delay)).await;
        d.kill9();
        let _ = request.await;
        d.restart().await;
        if d.health().await["setup_complete"] == true {
            saw_all += 1;
            assert_eq!(
                d.login(PASSWORD).await.status(),
                200,
                "complete setup must have the admin (delay {delay} ms)"
            );
            let system: serde_json::Value = d
                .http
                .get(d.url("/api/v1/system"))
                .header(
                    "cookie",
                    common::Session::from_response(d.login(PASSWORD).await)
                        .await
                        .header(),
                )
                .send()
                .await
                .expect("system")
                .json()
                .await
                .expect("json");
            assert_eq!(system["device_name"], "crashy");
        } else {
            saw_none += 1;
            // Nothing half-set: no admin, and setup can run again.
            assert_eq!(d.login(PASSWORD).await.status(), 409, "delay {delay} ms");
            d.set_up().await;
        }
        let conn = rusqlite::Connection::open(d.data().join("ddaemon/state.db")).expect("open db");
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(ok, "ok");
    }
    eprintln!("kill -9 during setup: {saw_none} left unset, {saw_all} complete");
    assert!(
        saw_none > 0,
        "the earliest kill must land before the commit"
    );
}
