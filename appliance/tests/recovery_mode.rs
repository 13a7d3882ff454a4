//! Recovery mode as the owner meets it: the page, the logs, the factory
//! reset's confirmation and marker, refusals where this machine is not the
//! device (no boot slots, no power control).

mod common;

use common::Daemon;

#[tokio::test]
async fn recovery_mode_offers_its_page_logs_and_a_confirmed_factory_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(dir, vec!["--recovery".into()]).await;

    let page = d.http.get(d.url("/")).send().await.expect("page");
    assert!(page.status().is_success());
    let html = page.text().await.expect("html");
    for part in [
        "Recovery mode",
        "Factory reset",
        "Download the logs",
        "Restart normally",
    ] {
        assert!(html.contains(part), "{part} on the page:\n{html}");
    }
    // Off the device: updates say why not instead of offering a form.
    assert!(html.contains("does not control the machine"), "{html}");
    // The dashboard and its API are not served.
    let api = d.http.get(d.url("/api/v1/apps")).send().await.expect("api");
    assert!(api.text().await.expect("text").contains("Recovery mode"));

    let logs = d.http.get(d.url("/logs")).send().await.expect("logs");
    assert!(logs.status().is_success());
    assert!(
        logs.headers()["content-disposition"]
            .to_str()
            .expect("header")
            .contains("ddaemon-logs.txt")
    );
    assert!(
        logs.text()
            .await
            .expect("text")
            .contains("===== journal of this start")
    );

    let marker = d.data().join("ddaemon/factory-reset");
    let unconfirmed = d
        .http
        .post(d.url("/factory-reset"))
        .form(&[("confirm", "")])
        .send()
        .await
        .expect("post");
    assert_eq!(unconfirmed.status(), 400);
    assert!(
        unconfirmed
            .text()
            .await
            .expect("text")
            .contains("Tick the box")
    );
    assert!(!marker.exists(), "nothing is marked without the tick");

    // Another site cannot ask for it.
    let cross = d
        .http
        .post(d.url("/factory-reset"))
        .header("origin", "http://evil.example")
        .form(&[("confirm", "yes")])
        .send()
        .await
        .expect("post");
    assert_eq!(cross.status(), 403);
    assert!(!marker.exists());

    let confirmed = d
        .http
        .post(d.url("/factory-reset"))
        .form(&[("confirm", "yes")])
        .send()
        .await
        .expect("post");
    let text = confirmed.text().await.expect("text");
    assert!(marker.exists(), "ddaemon-init's marker is written");
    // A supervisor without --power-control says it cannot restart itself.
    assert!(text.contains("cannot restart by itself"), "{text}");

    let switch = d.http.post(d.url("/switch")).send().await.expect("post");
    assert_eq!(switch.status(), 409);
}
