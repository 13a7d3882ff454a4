//! Whether a service works: the manifest's health check, run from the
//! device against the service's address on the bridge (or, for a command,
//! inside the container's namespaces).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::manifest::HealthCheck;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a running service is.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub address: Ipv4Addr,
    /// The container's main process, for command checks.
    pub pid: Option<i32>,
}

/// Runs one probe; `Err` says why it failed, for the page and the log.
pub async fn probe(check: &HealthCheck, target: Target) -> Result<(), String> {
    match check {
        HealthCheck::Tcp(port) => connect(target.address, *port).await.map(drop),
        HealthCheck::Http { port, path } => http_status(target.address, *port, path)
            .await
            .and_then(|status| {
                if status < 500 {
                    Ok(())
                } else {
                    Err(format!("GET {path} answered {status}"))
                }
            }),
        HealthCheck::Command(argv) => command(target.pid, argv).await,
    }
}

async fn connect(address: Ipv4Addr, port: u16) -> Result<TcpStream, String> {
    let addr = SocketAddr::from((address, port));
    match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// The status code of `GET path`, over HTTP/1.0 so the answer ends with
/// the connection.
async fn http_status(address: Ipv4Addr, port: u16, path: &str) -> Result<u16, String> {
    let mut stream = connect(address, port).await?;
    let exchange = async {
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {address}:{port}\r\nUser-Agent: ddaemon-health\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 64];
        let mut filled = 0;
        while filled < 12 {
            let n = stream.read(&mut head[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..filled]).into_owned())
    };
    let head = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("GET {path}: no answer within {PROBE_TIMEOUT:?}"))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    // "HTTP/1.1 200 OK"
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP answer"))
}

/// Runs `argv` in the container's namespaces and root (with the device's
/// privileges: the command comes from a manifest the owner installed).
async fn command(pid: Option<i32>, argv: &[String]) -> Result<(), String> {
    let pid = pid.ok_or("the container is not running")?.to_string();
    let mut args: Vec<&str> = vec![
        "--target", &pid, "--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd", "--",
    ];
    args.extend(argv.iter().map(String::as_str));
    ddaemon_runtime::command::run("nsenter", &args, None, Duration::from_secs(30))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_and_http_probes_tell_up_from_down() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            for answer in [
                "HTTP/1.0 204 No Content\r\n\r\n",
                "HTTP/1.0 503 Busy\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                s.write_all(answer.as_bytes()).await.expect("write");
            }
        });
        let target = Target {
            address: Ipv4Addr::LOCALHOST,
            pid: None,
        };
        let http = HealthCheck::Http {
            port,
            path: "/health".into(),
        };
        assert_eq!(probe(&http, target).await, Ok(()));
        let err = probe(&http, target).await.expect_err("503");
        assert!(err.contains("503"), "{err}");
        server.await.expect("server");
        // Nothing listens there any more.
        assert!(probe(&HealthCheck::Tcp(port), target).await.is_err());
    }
}
