//! The JSON API over real HTTP against a spawned `ddaemon serve`.

mod common;

use common::{Daemon, PASSWORD, error_of, set_cookie_line};
use serde_json::{Value, json};

fn setup_body(name: &str, pw: &str, confirm: &str, tz: &str) -> Value {
    json!({"device_name": name, "password": pw, "password_confirm": confirm, "timezone": tz})
}

#[tokio::test]
async fn setup_happy_path_logs_the_admin_in() {
    let d = Daemon::start().await;
    let h = d.health().await;
    assert_eq!(h["status"], "ok");
    assert_eq!(h["setup_complete"], false);
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));

    let r = d
        .post_json(
            "/api/v1/setup",
            &setup_body("Living-Room", PASSWORD, PASSWORD, "Europe/Berlin"),
        )
        .await;
    assert_eq!(r.status(), 201);
    let line = set_cookie_line(r.headers(), "ddaemon_session").expect("session cookie");
    assert!(line.contains("HttpOnly"), "{line}");
    assert!(line.contains("SameSite=Strict"), "{line}");
    assert!(
        !line.contains("Secure"),
        "plain HTTP must not mark the cookie Secure: {line}"
    );
    let session = common::Session::from_response(r).await;

    assert_eq!(d.health().await["setup_complete"], true);
    let system: Value = d
        .get_as("/api/v1/system", &session.header())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        system["device_name"], "living-room",
        "names are stored lower-case"
    );
    assert_eq!(system["timezone"], "Europe/Berlin");
    assert!(system["memory"]["total_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(system["disk"]["total_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(system["uptime_seconds"].as_u64().is_some());
}

#[tokio::test]
async fn each_bad_setup_input_names_its_field_and_changes_nothing() {
    let d = Daemon::start().await;
    let cases = [
        (setup_body("ddaemon", "short", "short", "UTC"), "password"),
        (
            setup_body("ddaemon", PASSWORD, "correct horse batterx", "UTC"),
            "password_confirm",
        ),
        (
            setup_body("my_device", PASSWORD, PASSWORD, "UTC"),
            "device_name",
        ),
        (setup_body("-pi", PASSWORD, PASSWORD, "UTC"), "device_name"),
        (setup_body("", PASSWORD, PASSWORD, "UTC"), "device_name"),
        (
            setup_body("ddaemon", PASSWORD, PASSWORD, "Mars/Olympus"),
            "timezone",
        ),
        (
            setup_body("ddaemon", PASSWORD, PASSWORD, "../../../etc/passwd"),
            "timezone",
        ),
        (
            json!({"device_name": "ddaemon", "password_confirm": PASSWORD, "timezone": "UTC"}),
            "password",
        ),
        (
            json!({"device_name": "ddaemon", "password": PASSWORD, "password_confirm": PASSWORD, "timezone": "UTC", "admin": true}),
            "admin",
        ),
        (
            json!({"device_name": 7, "password": PASSWORD, "password_confirm": PASSWORD, "timezone": "UTC"}),
            "device_name",
        ),
    ];
    for (body, field) in cases {
        let r = d.post_json("/api/v1/setup", &body).await;
        assert!(set_cookie_line(r.headers(), "ddaemon_session").is_none());
        let (status, code, got_field, message) = error_of(r).await;
        assert_eq!(status, 400, "{body}");
        assert!(code == "invalid_input" || code == "invalid_json", "{code}");
        assert_eq!(got_field.as_deref(), Some(field), "{body} -> {message}");
        assert!(!message.is_empty());
        assert_eq!(
            d.health().await["setup_complete"],
            false,
            "nothing half-set after {body}"
        );
    }
    // No admin exists: a login finds no set-up device.
    let (status, code, _, _) = error_of(d.login(PASSWORD).await).await;
    assert_eq!((status, code.as_str()), (409, "setup_required"));

    let r = d
        .http
        .post(d.url("/api/v1/setup"))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.status(),
        415,
        "a body without the JSON media type is refused"
    );

    // And the refused attempts did not block a good one.
    d.set_up().await;
}

#[tokio::test]
async fn second_setup_is_a_conflict_and_keeps_the_first_password() {
    let d = Daemon::start().await;
    d.set_up().await;
    let r = d
        .post_json(
            "/api/v1/setup",
            &setup_body("other", "another password", "another password", "UTC"),
        )
        .await;
    let (status, code, _, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (409, "already_set_up"));
    // A repeat is a conflict even when its body is bad.
    let r = d
        .post_json("/api/v1/setup", &json!({"password": "x"}))
        .await;
    assert_eq!(r.status(), 409);
    assert_eq!(d.login(PASSWORD).await.status(), 200);
    assert_eq!(d.login("another password").await.status(), 401);
}

#[tokio::test]
async fn wrong_passwords_get_401_then_the_sixth_gets_429_with_the_wait() {
    let d = Daemon::start().await;
    d.set_up().await;
    for i in 1..=5 {
        let (status, code, field, _) = error_of(d.login("not the password").await).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "wrong_password"),
            "attempt {i}"
        );
        assert_eq!(field.as_deref(), Some("password"));
    }
    let r = d.login("not the password").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After header");
    assert!((1..=60).contains(&retry), "{retry}");
    let (_, code, _, message) = error_of(r).await;
    assert_eq!(code, "rate_limited");
    assert!(
        message.contains(&format!("try again in {retry} s")),
        "{message}"
    );
    // While locked out even the right password is not checked.
    assert_eq!(d.login(PASSWORD).await.status(), 429);
}

/// Every operation the OpenAPI document marks as needing a session refuses
/// without one, and every state-changing one refuses without the CSRF token.
#[tokio::test]
async fn protected_endpoints_need_a_session_and_state_changes_need_csrf() {
    let d = Daemon::start().await;
    let session = d.set_up().await;
    let doc: Value = d
        .http
        .get(d.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let mut protected = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let needs_session = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|req| req.get("session").is_some()));
            if !needs_session {
                continue;
            }
            protected += 1;
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = d
                .http
                .request(m.clone(), d.url(path))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("send");
            let (status, code, _, _) = error_of(r).await;
            assert_eq!(
                (status, code.as_str()),
                (401, "unauthorized"),
                "{method} {path} without a session"
            );

            let stale = d
                .http
                .request(m.clone(), d.url(path))
                .header("cookie", "ddaemon_session=0000")
                .send()
                .await
                .expect("send");
            assert_eq!(
                stale.status(),
                401,
                "{method} {path} with a made-up session"
            );

            if m != reqwest::Method::GET && m != reqwest::Method::HEAD {
                for token in [None, Some("wrong")] {
                    let mut req = d
                        .http
                        .request(m.clone(), d.url(path))
                        .header("cookie", session.header());
                    if let Some(t) = token {
                        req = req.header("x-csrf-token", t);
                    }
                    let (status, code, _, _) = error_of(req.send().await.expect("send")).await;
                    assert_eq!(
                        (status, code.as_str()),
                        (403, "csrf_failed"),
                        "{method} {path} csrf {token:?}"
                    );
                }
            }
        }
    }
    assert!(protected >= 2, "the document lists the protected endpoints");
    // The session survived all that.
    let r = d.get_as("/api/v1/system", &session.header()).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let d = Daemon::start().await;
    d.set_up().await;
    let session = common::Session::from_response(d.login(PASSWORD).await).await;
    let r = d
        .http
        .post(d.url("/api/v1/logout"))
        .header("cookie", session.header())
        .header("x-csrf-token", &session.csrf)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 204);
    let cleared = set_cookie_line(r.headers(), "ddaemon_session").expect("cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // A copy of the old cookie is worthless now.
    let r = d.get_as("/api/v1/system", &session.header()).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_post_from_another_site_is_refused() {
    let d = Daemon::start().await;
    let r = d
        .http
        .post(d.url("/api/v1/setup"))
        .header("origin", "http://evil.example")
        .json(&setup_body("ddaemon", PASSWORD, PASSWORD, "UTC"))
        .send()
        .await
        .expect("post");
    let (status, code, _, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (403, "cross_site_refused"));
    assert_eq!(d.health().await["setup_complete"], false);
    // The same request from the device's own page goes through.
    let r = d
        .http
        .post(d.url("/api/v1/setup"))
        .header("origin", d.url(""))
        .json(&setup_body("ddaemon", PASSWORD, PASSWORD, "UTC"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn unknown_api_paths_and_methods_answer_json() {
    let d = Daemon::start().await;
    let (status, code, _, _) =
        error_of(d.http.get(d.url("/api/v1/nope")).send().await.expect("get")).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, _, _) = error_of(
        d.http
            .delete(d.url("/api/v1/health"))
            .send()
            .await
            .expect("del"),
    )
    .await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
}

#[tokio::test]
async fn cli_status_over_the_root_only_socket() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let d = Daemon::start().await;
    let meta = std::fs::metadata(d.socket()).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "only root may connect"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddaemon"))
        .args(["status", "--socket"])
        .arg(d.socket())
        .output()
        .expect("run status");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not set up yet"), "{text}");

    d.set_up().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddaemon"))
        .args(["status", "--json", "--socket"])
        .arg(d.socket())
        .output()
        .expect("run status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["device_name"], "ddaemon");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddaemon"))
        .args(["status", "--socket", "/nonexistent/ddaemon.sock"])
        .output()
        .expect("run status");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `ddaemon serve` running"), "{err}");
}

#[tokio::test]
async fn parallel_wrong_logins_cannot_outrun_the_limit() {
    let d = Daemon::start().await;
    d.set_up().await;
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (d.http.clone(), d.url("/api/v1/login"));
            tokio::spawn(async move {
                http.post(url)
                    .json(&json!({"password": "not the password"}))
                    .send()
                    .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.expect("join").expect("login").status().as_u16());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + refused, 20, "{statuses:?}");
    assert!(
        checked <= 5,
        "only five passwords may be checked per window, {checked} were"
    );
}

#[tokio::test]
async fn a_foreign_host_name_is_refused_against_dns_rebinding() {
    let d = Daemon::start().await;
    let r = d
        .http
        .get(d.url("/api/v1/health"))
        .header("host", "evil.example")
        .send()
        .await
        .expect("get");
    let (status, code, _, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (421, "unknown_host"));
    let r = d
        .http
        .post(d.url("/api/v1/setup"))
        .header("host", "evil.example:80")
        .json(&setup_body("ddaemon", PASSWORD, PASSWORD, "UTC"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 421);
    assert_eq!(d.health().await["setup_complete"], false);
    for host in ["ddaemon.local", "ddaemon", "localhost:8080"] {
        let r = d
            .http
            .get(d.url("/api/v1/health"))
            .header("host", host)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "{host}");
    }
}

#[tokio::test]
async fn a_used_session_is_extended_and_its_cookie_sent_again() {
    let d = Daemon::start().await;
    let session = d.set_up().await;
    // Age the session by a day, as if it had been opened yesterday.
    let db = rusqlite::Connection::open(d.data().join("ddaemon/state.db")).expect("db");
    db.execute("UPDATE sessions SET expires_at = expires_at - 86400", [])
        .expect("age");
    let r = d.get_as("/api/v1/system", &session.header()).await;
    assert_eq!(r.status(), 200);
    let line = set_cookie_line(r.headers(), "ddaemon_session").expect("cookie sent again");
    assert!(
        line.contains(&format!("ddaemon_session={}", session.cookie)),
        "{line}"
    );
    assert!(line.contains("Max-Age=604800"), "{line}");
    // A fresh session is not re-sent on every request.
    let r = d.get_as("/api/v1/system", &session.header()).await;
    assert!(set_cookie_line(r.headers(), "ddaemon_session").is_none());
}

#[tokio::test]
async fn the_control_socket_refuses_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start().await;
    // Loosen the file and folder modes, as a mistake might: the kernel's
    // peer credentials must still keep other users out.
    std::fs::set_permissions(d.data(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ddaemon"))
        .args(["status", "--socket"])
        .arg(d.socket())
        .output()
        .expect("run setpriv");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only root may use the control socket"),
        "{err}"
    );
}

#[tokio::test]
async fn power_actions_are_refused_where_the_supervisor_does_not_own_the_machine() {
    // The test's supervisor runs without --power-control: asking it to shut
    // down must never reach this machine's systemd.
    let d = Daemon::start().await;
    let session = d.set_up().await;
    for action in ["restart", "power-off"] {
        let r = d
            .http
            .post(d.url("/api/v1/system/power"))
            .header("cookie", session.header())
            .header("x-csrf-token", &session.csrf)
            .json(&json!({ "action": action }))
            .send()
            .await
            .expect("post");
        let (status, code, _, message) = error_of(r).await;
        assert_eq!(
            (status, code.as_str()),
            (409, "power_unavailable"),
            "{action}"
        );
        assert!(message.contains("--power-control"), "{message}");
    }
    let r = d
        .http
        .post(d.url("/api/v1/system/power"))
        .header("cookie", session.header())
        .header("x-csrf-token", &session.csrf)
        .json(&json!({ "action": "halt" }))
        .send()
        .await
        .expect("post");
    let (status, _, field, _) = error_of(r).await;
    assert_eq!((status, field.as_deref()), (400, Some("action")));
    let page = d
        .get_as("/system", &session.header())
        .await
        .text()
        .await
        .expect("page");
    assert!(
        page.contains("does not control the machine it runs on"),
        "the System page says why there is no Restart button"
    );
    assert!(!page.contains("value=\"power-off\""), "{page}");
}
