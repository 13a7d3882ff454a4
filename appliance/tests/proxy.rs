//! The reverse proxy, through external apps pointing at backends this test
//! runs on loopback: headers, streaming in both directions, upgrades
//! (the mechanism WebSocket uses), the 502 page, persistence.

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use common::Daemon;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP backend: `/headers` echoes the request headers as JSON, `/count`
/// answers the length of the body, `/big` sends 16 MiB.
async fn http_backend() -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/headers",
            get(|headers: HeaderMap| async move {
                let map: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                    .collect();
                axum::Json(Value::Object(map))
            }),
        )
        .route(
            "/count",
            post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
        .route("/big", get(|| async { Body::from(vec![b'x'; 16 << 20]) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .await
    });
    addr
}

/// A backend that accepts `Upgrade: echo` and then echoes raw bytes.
async fn upgrade_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !text.contains("upgrade: echo") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
                    .await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn add_external(
    d: &Daemon,
    session: &common::Session,
    name: &str,
    target: &str,
) -> reqwest::Response {
    d.http
        .post(d.url("/api/v1/external-apps"))
        .header("cookie", session.header())
        .header("x-csrf-token", &session.csrf)
        .json(&json!({"name": name, "target": target}))
        .send()
        .await
        .expect("add external app")
}

#[tokio::test]
async fn external_apps_are_proxied_with_streaming_upgrades_and_a_502_page() {
    let mut d = Daemon::start().await;
    let session = d.set_up().await;
    let backend = http_backend().await;
    let echo = upgrade_backend().await;
    assert_eq!(
        add_external(&d, &session, "files", &backend.to_string())
            .await
            .status(),
        201
    );
    assert_eq!(
        add_external(&d, &session, "tunnel", &echo.to_string())
            .await
            .status(),
        201
    );

    // Headers: the app sees who asked and under which name; our own
    // security headers stay off the app's answers.
    let r = d
        .http
        .get(d.url("/headers"))
        .header("host", "files.local")
        .send()
        .await
        .expect("proxied");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-security-policy").is_none());
    let seen: Value = r.json().await.expect("json");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-host"], "files.local");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["host"], "files.local", "the app sees its own name");
    let r = d
        .http
        .get(d.url("/headers"))
        .header("host", "files.ddaemon.local")
        .send()
        .await
        .expect("proxied");
    assert_eq!(r.status(), 200, "APP.DEVICE.local works too");

    // Over HTTPS, with the device CA, the app learns the scheme.
    let ca = d.data().join("ca.pem");
    std::fs::write(
        &ca,
        d.http
            .get(d.url("/ca.pem"))
            .send()
            .await
            .expect("ca")
            .bytes()
            .await
            .expect("pem"),
    )
    .expect("ca");
    // Async: the backend runs on this test's own runtime.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&ca)
        .arg("--resolve")
        .arg(format!("files.local:{}:127.0.0.1", d.tls_addr.port()))
        .arg(format!("https://files.local:{}/headers", d.tls_addr.port()))
        .output()
        .await
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(seen["x-forwarded-proto"], "https");

    // Large bodies both ways.
    let upload = vec![7u8; 24 << 20];
    let r = d
        .http
        .post(d.url("/count"))
        .header("host", "files.local")
        .body(upload)
        .send()
        .await
        .expect("upload");
    assert_eq!(r.text().await.expect("text"), (24 << 20).to_string());
    let r = d
        .http
        .get(d.url("/big"))
        .header("host", "files.local")
        .send()
        .await
        .expect("download");
    assert_eq!(r.bytes().await.expect("bytes").len(), 16 << 20);

    // An upgrade tunnels raw bytes both ways.
    let mut stream = tokio::net::TcpStream::connect(d.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: tunnel.local\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("read head");
        head.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
        .write_all(b"ping over the tunnel")
        .await
        .expect("write");
    let mut buf = [0u8; 20];
    stream.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"ping over the tunnel");

    // An app that does not answer gets a page that tries again.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    assert_eq!(
        add_external(&d, &session, "sleepy", &closed.to_string())
            .await
            .status(),
        201
    );
    let r = d
        .http
        .get(d.url("/"))
        .header("host", "sleepy.local")
        .send()
        .await
        .expect("502");
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["retry-after"], "5");
    assert!(
        r.text()
            .await
            .expect("html")
            .contains("sleepy is not answering yet")
    );

    // Bad input and clashes are refused by field.
    let (status, _, field, _) =
        common::error_of(add_external(&d, &session, "files", "127.0.0.1:9").await).await;
    assert_eq!((status, field.as_deref()), (409, Some("name")));
    let (status, _, field, _) =
        common::error_of(add_external(&d, &session, "nas", "nas:80").await).await;
    assert_eq!((status, field.as_deref()), (400, Some("target")));
    let (status, _, field, _) =
        common::error_of(add_external(&d, &session, "ddaemon", "127.0.0.1:9").await).await;
    assert_eq!((status, field.as_deref()), (400, Some("name")));

    // The device's own name and unknown names reach the supervisor.
    let r = d
        .http
        .get(d.url("/apps"))
        .header("host", "ddaemon.local")
        .send()
        .await
        .expect("dashboard");
    assert_eq!(r.status(), 303, "the dashboard wants a login");
    let r = d
        .http
        .get(d.url("/api/v1/health"))
        .header("host", "nothing.local")
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 200);

    // Routes survive a restart; removing one stops it.
    d.restart().await;
    let r = d
        .http
        .get(d.url("/headers"))
        .header("host", "files.local")
        .send()
        .await
        .expect("proxied");
    assert_eq!(r.status(), 200);
    let r = d
        .http
        .delete(d.url("/api/v1/external-apps/files"))
        .header("cookie", session.header())
        .header("x-csrf-token", &session.csrf)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let r = d
        .http
        .get(d.url("/headers"))
        .header("host", "files.local")
        .send()
        .await
        .expect("not proxied");
    assert_ne!(r.status(), 200);
}
