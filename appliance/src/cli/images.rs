//! `ddaemon image pull|ls|rm|load`, through the running supervisor.

use std::io::Write as _;
use std::path::Path;

use super::api_client::{ApiClient, ClientError, collect, for_each_line};
use crate::system::format_bytes;
use crate::web::api_images::{ImageRemoved, ImageView};

/// Pulls an image, drawing a progress line on stderr.
pub async fn pull(client: &ApiClient, reference: &str) -> Result<ImageView, ClientError> {
    let response = client
        .post_json(
            "/api/v1/images/pull",
            &serde_json::json!({ "reference": reference }),
        )
        .await?;
    let mut outcome: Option<Result<ImageView, String>> = None;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    for_each_line(response, |event| {
        let line = match event["stage"].as_str().unwrap_or_default() {
            "resolving" => format!("{reference}: resolving"),
            "downloading" => {
                let done = event["done"].as_u64().unwrap_or(0);
                let total = event["total"].as_u64().unwrap_or(0).max(1);
                format!(
                    "{reference}: {} {} of {}",
                    bar(done, total),
                    format_bytes(done),
                    format_bytes(total)
                )
            }
            "unpacking" => format!(
                "{reference}: unpacking layer {} of {}",
                event["index"].as_u64().unwrap_or(0),
                event["count"].as_u64().unwrap_or(0)
            ),
            "done" => {
                outcome =
                    Some(serde_json::from_value(event["image"].clone()).map_err(|e| e.to_string()));
                return;
            }
            "failed" => {
                outcome = Some(Err(event["error"]["message"]
                    .as_str()
                    .unwrap_or("the pull failed")
                    .to_owned()));
                return;
            }
            _ => return,
        };
        let mut err = std::io::stderr();
        if tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
    })
    .await?;
    if tty {
        eprintln!();
    }
    match outcome {
        Some(Ok(image)) => Ok(image),
        Some(Err(message)) => Err(ClientError::Api {
            status: hyper::StatusCode::BAD_GATEWAY,
            message,
        }),
        None => Err(ClientError::Http(
            "the supervisor ended the pull without a result".into(),
        )),
    }
}

fn bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 24;
    let filled = (done.min(total) * WIDTH / total) as usize;
    format!(
        "[{}{}] {:>3}%",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        done.min(total) * 100 / total
    )
}

/// Lists images as a table.
pub async fn list(client: &ApiClient) -> Result<String, ClientError> {
    let images: Vec<ImageView> = client.get_json("/api/v1/images").await?;
    let mut out = format!("{:<60} {:>10}  {}\n", "IMAGE", "SIZE", "DIGEST");
    for image in images {
        out.push_str(&format!(
            "{:<60} {:>10}  {}\n",
            image.reference,
            format_bytes(image.size),
            image.digest.get(..19).unwrap_or(&image.digest)
        ));
    }
    Ok(out)
}

/// Removes an image and frees what only it used.
pub async fn remove(client: &ApiClient, reference: &str) -> Result<ImageRemoved, ClientError> {
    let response = client
        .post_json(
            "/api/v1/images/remove",
            &serde_json::json!({ "reference": reference }),
        )
        .await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

/// Side-loads an archive file.
pub async fn load(
    client: &ApiClient,
    file: &Path,
    name: Option<&str>,
) -> Result<Vec<ImageView>, ClientError> {
    let path = match name {
        Some(name) => format!("/api/v1/images/load?name={}", url_encode(name)),
        None => "/api/v1/images/load".to_owned(),
    };
    let response = client.post_file(&path, file).await?;
    serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
