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

/// Recovery mode that came by itself (the supervisor could not start)
/// says so and will not erase the device from the page: that takes the
/// reset button.
#[tokio::test]
async fn unattended_recovery_mode_leaves_the_factory_reset_to_the_button() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with(dir, vec!["--recovery-unattended".into()]).await;
    let html = d
        .http
        .get(d.url("/"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(html.contains("could not start"), "{html}");
    assert!(
        !html.contains("action=\"/factory-reset\""),
        "no factory reset form: {html}"
    );
    let refused = d
        .http
        .post(d.url("/factory-reset"))
        .form(&[("confirm", "yes")])
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.expect("text").contains("reset button"));
    assert!(
        !d.data().join("ddaemon/factory-reset").exists(),
        "nothing is marked"
    );
}

/// A client routed in from outside the home network (as through a
/// router's forwarded port) is refused; the home network is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_mode_answers_only_the_home_network() {
    use common::test_net::{TestNet, in_ns, ip};
    let net = TestNet::new();
    // The "LAN" side also holds an internet address, routed, not on-link.
    ip(&[
        "-n",
        &net.lan,
        "addr",
        "add",
        "45.45.45.2/32",
        "dev",
        &net.lan_link,
    ]);
    ip(&[
        "-n",
        &net.device,
        "route",
        "add",
        "45.45.45.2/32",
        "via",
        "192.168.77.2",
    ]);
    // Recovery mode has no control socket to wait on: its page is.
    let data = tempfile::tempdir().expect("data");
    let _recovery = common::test_net::Guard(
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", net.device))
            .arg(env!("CARGO_BIN_EXE_ddaemon"))
            .args([
                "serve",
                "--recovery",
                "--no-tls",
                "--listen",
                "0.0.0.0:8080",
                "--data",
            ])
            .arg(data.path())
            .arg("--socket")
            .arg(data.path().join("ddaemon.sock"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ddaemon serve --recovery"),
    );
    let status = |source: &str| {
        let out = in_ns(
            &net.lan,
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--interface",
                source,
                "http://192.168.77.1:8080/",
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    common::eventually(
        "recovery mode to answer",
        std::time::Duration::from_secs(20),
        || {
            let code = status("192.168.77.2");
            (code == "200").then_some(()).ok_or(code)
        },
    )
    .await;
    assert_eq!(status("45.45.45.2"), "403");
}
