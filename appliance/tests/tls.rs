//! HTTPS with the device's own CA, checked with curl trusting only that CA.

mod common;

use std::process::Command;

use common::Daemon;

fn curl(
    d: &Daemon,
    ca: &std::path::Path,
    name: &str,
    path: &str,
    extra: &[&str],
) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{}:127.0.0.1", d.tls_addr.port()))
        .args(extra)
        .arg(format!("https://{name}:{}{path}", d.tls_addr.port()))
        .output()
        .expect("run curl")
}

#[tokio::test]
async fn local_names_are_served_over_tls_from_the_device_ca() {
    let d = Daemon::start().await;
    let ca = d.data().join("ca-downloaded.pem");
    let pem = d
        .http
        .get(d.url("/ca.pem"))
        .send()
        .await
        .expect("ca")
        .text()
        .await
        .expect("pem");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    std::fs::write(&ca, &pem).expect("write ca");
    let key = std::fs::metadata(d.data().join("ddaemon/ca/ca.key.pem")).expect("ca key");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );

    // The device's own name, with certificate verification against the CA only.
    let out = curl(&d, &ca, "ddaemon.local", "/api/v1/health", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"status\":\"ok\""));

    // Any app name gets its own certificate.
    let out = curl(&d, &ca, "photos.ddaemon.local", "/api/v1/health", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The CA signs nothing outside .local.
    let out = curl(&d, &ca, "bank.example", "/api/v1/health", &[]);
    assert!(
        !out.status.success(),
        "a handshake for a name outside .local must fail"
    );

    // Over TLS the session cookie is Secure.
    let session = d.set_up().await;
    let out = curl(
        &d,
        &ca,
        "ddaemon.local",
        "/api/v1/login",
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "content-type: application/json",
            "--data",
            &format!("{{\"password\":\"{}\"}}", common::PASSWORD),
        ],
    );
    let headers = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        headers.contains("set-cookie: ddaemon_session=") && headers.contains("; secure"),
        "{headers}"
    );
    drop(session);

    // The same CA survives a restart (owners install it once).
    let mut d = d;
    d.restart().await;
    let out = curl(&d, &ca, "ddaemon.local", "/api/v1/health", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
