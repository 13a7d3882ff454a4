//! The pages work as plain HTML forms, with JavaScript off.

mod common;

use common::{Daemon, PASSWORD, cookie_value, set_cookie_line};

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn form_token(html: &str) -> String {
    let marker = "name=\"form_token\" value=\"";
    let start = html.find(marker).expect("form has a token") + marker.len();
    html[start..start + 64].to_owned()
}

#[tokio::test]
async fn every_page_leads_to_the_wizard_until_set_up() {
    let d = Daemon::start().await;
    for path in [
        "/",
        "/apps",
        "/storage",
        "/backups",
        "/domain",
        "/system",
        "/login",
        "/no-such-page",
    ] {
        let mut r = d.http.get(d.url(path)).send().await.expect("get");
        // `/` first goes to the dashboard, which then goes to setup.
        if location(&r) == "/apps" {
            r = d.http.get(d.url("/apps")).send().await.expect("get");
        }
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(location(&r), "/setup", "{path}");
    }
    let r = d.http.get(d.url("/setup")).send().await.expect("get");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    let html = r.text().await.expect("html");
    assert!(
        html.contains("value=\"ddaemon\""),
        "the name field offers the default"
    );
    assert!(
        html.contains("<option value=\"Europe/Berlin\""),
        "time zones are listed"
    );
    assert!(!html.contains("<script"), "the wizard needs no JavaScript");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "nothing is fetched from elsewhere"
    );
}

#[tokio::test]
async fn wizard_form_validates_then_logs_in_and_logout_ends_the_session() {
    let d = Daemon::start().await;
    let r = d.http.get(d.url("/setup")).send().await.expect("get");
    let form_cookie = cookie_value(r.headers(), "ddaemon_form").expect("form cookie");
    let token = form_token(&r.text().await.expect("html"));
    assert_eq!(token, form_cookie);
    let cookie = format!("ddaemon_form={form_cookie}");

    // A body that is not a form gets the page back with a message.
    let r = d
        .http
        .post(d.url("/setup"))
        .header("cookie", &cookie)
        .header("content-type", "text/plain")
        .body("device_name=x")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .expect("html")
            .contains("The form could not be read")
    );

    // Without the cookie (a forged cross-site form) nothing happens.
    let fields = [
        ("device_name", "kitchen"),
        ("password", PASSWORD),
        ("password_confirm", PASSWORD),
        ("timezone", "UTC"),
        ("form_token", token.as_str()),
    ];
    let r = d
        .http
        .post(d.url("/setup"))
        .form(&fields)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    assert_eq!(d.health().await["setup_complete"], false);

    // A short password: the page comes back with the message by the field,
    // the name kept, and nothing saved.
    let short = [
        ("device_name", "kitchen"),
        ("password", "short"),
        ("password_confirm", "short"),
        ("timezone", "UTC"),
        ("form_token", token.as_str()),
    ];
    let r = d.post_form_as("/setup", &cookie, &short).await;
    assert_eq!(r.status(), 400);
    let html = r.text().await.expect("html");
    assert!(html.contains("id=\"password-error\""), "{html}");
    assert!(html.contains("at least 10"));
    assert!(html.contains("value=\"kitchen\""));
    assert_eq!(d.health().await["setup_complete"], false);

    let r = d.post_form_as("/setup", &cookie, &fields).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/apps");
    let session = cookie_value(r.headers(), "ddaemon_session").expect("logged in");
    let session_cookie = format!("ddaemon_session={session}");

    let r = d.get_as("/system", &session_cookie).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.expect("html");
    for expected in [
        "kitchen.local",
        "Uptime",
        "Memory",
        "Disk",
        env!("CARGO_PKG_VERSION"),
    ] {
        assert!(html.contains(expected), "System page lacks {expected}");
    }
    for section in ["Apps", "Storage", "Backups", "Domain", "System"] {
        assert!(
            html.contains(&format!(">{section}</a>")),
            "menu lacks {section}"
        );
    }
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("logout form") + marker.len();
    let csrf = html[start..start + 64].to_owned();

    // Logout without the token is refused; with it, the session ends.
    let r = d
        .http
        .post(d.url("/logout"))
        .header("cookie", &session_cookie)
        .form(&[("csrf_token", "nope")])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 403);
    let r = d
        .http
        .post(d.url("/logout"))
        .header("cookie", &session_cookie)
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login");
    assert!(
        set_cookie_line(r.headers(), "ddaemon_session").is_some_and(|l| l.contains("Max-Age=0"))
    );
    let r = d.get_as("/system", &session_cookie).await;
    assert_eq!(location(&r), "/login");
}

#[tokio::test]
async fn login_form_reports_wrong_password_and_the_wait() {
    let d = Daemon::start().await;
    d.set_up().await;
    let r = d.http.get(d.url("/login")).send().await.expect("get");
    let form_cookie = cookie_value(r.headers(), "ddaemon_form").expect("form cookie");
    let cookie = format!("ddaemon_form={form_cookie}");
    let wrong = [
        ("password", "not it at all"),
        ("form_token", form_cookie.as_str()),
    ];
    for _ in 0..5 {
        let r = d.post_form_as("/login", &cookie, &wrong).await;
        assert_eq!(r.status(), 401);
        assert!(r.text().await.expect("html").contains("Wrong password"));
    }
    let r = d.post_form_as("/login", &cookie, &wrong).await;
    assert_eq!(r.status(), 429);
    let html = r.text().await.expect("html");
    assert!(html.contains("Try again in "), "{html}");
}

#[tokio::test]
async fn the_apps_page_lists_the_catalog_searches_it_and_explains_a_refusal() {
    let d = Daemon::start().await;
    let session = d.set_up().await;
    let cookie = session.header();
    let page = d.get_as("/apps", &cookie).await.text().await.expect("page");
    assert!(page.contains("No apps are installed yet"), "{page}");
    for title in ["Jellyfin", "Ghost", "Mastodon", "Vaultwarden"] {
        assert!(page.contains(title), "{title} is in the catalog grid");
    }
    assert!(page.contains("/api/v1/catalog/jellyfin/icon.svg"));
    assert!(
        page.matches(">Install<").count() >= 18,
        "an Install button per app"
    );

    let found = d
        .get_as("/apps?q=JELLY", &cookie)
        .await
        .text()
        .await
        .expect("page");
    // Cards link to the app's page.
    assert!(
        found.contains("href=\"/apps/jellyfin\"") && !found.contains("href=\"/apps/ghost\""),
        "{found}"
    );
    let books = d
        .get_as("/apps?category=books", &cookie)
        .await
        .text()
        .await
        .expect("page");
    assert!(
        books.contains("href=\"/apps/calibre-web\"") && !books.contains("href=\"/apps/jellyfin\""),
        "{books}"
    );
    let none = d
        .get_as("/apps?q=no-such-app", &cookie)
        .await
        .text()
        .await
        .expect("page");
    assert!(none.contains("No app in the catalog matches"));

    // An app's page before it is installed.
    let app = d
        .get_as("/apps/jellyfin", &cookie)
        .await
        .text()
        .await
        .expect("page");
    assert!(app.contains("Install Jellyfin"), "{app}");

    // This supervisor runs without the container network: installing is
    // refused with the reason, and nothing is recorded.
    let r = d
        .post_form_as(
            "/apps/install",
            &cookie,
            &[("csrf_token", session.csrf.as_str()), ("id", "jellyfin")],
        )
        .await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.expect("page");
    assert!(page.contains("need the container network"), "{page}");
    let apps: serde_json::Value = d
        .get_as("/api/v1/apps", &cookie)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(apps, serde_json::json!([]));

    // A stale form is refused.
    let r = d
        .post_form_as(
            "/apps/install",
            &cookie,
            &[("csrf_token", "wrong"), ("id", "jellyfin")],
        )
        .await;
    assert_eq!(r.status(), 403);
}
