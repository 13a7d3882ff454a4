//! A small HTTP/1 client for the supervisor's Unix socket.

use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// Why a call to the supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the ddaemon supervisor at {path}: {source}; is `ddaemon serve` running, and are you root? (--socket picks another socket)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the supervisor failed: {0}")]
    Http(String),
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("the supervisor's answer was not what this ddaemon expects: {0}")]
    Decode(serde_json::Error),
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

type RequestBody = BoxBody<Bytes, std::io::Error>;

/// A client for one socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    /// A client for the socket at `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: RequestBody,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "socket connection closed");
            }
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = collect(response).await?;
            return Err(ClientError::Api {
                status,
                message: error_message(&body),
            });
        }
        Ok(response)
    }

    /// A request without a body.
    pub async fn empty(
        &self,
        method: Method,
        path: &str,
    ) -> Result<Response<Incoming>, ClientError> {
        let body = Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed();
        self.send(method, path, "application/json", body).await
    }

    /// `GET path`, decoded from JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.empty(Method::GET, path).await?;
        serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
    }

    /// `METHOD path` with a JSON body; the answer as a response to read on.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Response<Incoming>, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(ClientError::Decode)?;
        let body = Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed();
        self.send(method, path, "application/json", body).await
    }

    /// `POST path` with a JSON body; the answer as a response to read on.
    pub async fn post_json(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Response<Incoming>, ClientError> {
        self.send_json(Method::POST, path, body).await
    }

    /// `POST path` with a JSON body, the answer decoded from JSON.
    pub async fn post_json_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let response = self.post_json(path, body).await?;
        serde_json::from_slice(&collect(response).await?).map_err(ClientError::Decode)
    }

    /// `POST path` streaming the file at `file` as the body.
    pub async fn post_file(
        &self,
        path: &str,
        file: &Path,
    ) -> Result<Response<Incoming>, ClientError> {
        let opened = tokio::fs::File::open(file)
            .await
            .map_err(|source| ClientError::File {
                path: file.to_owned(),
                source,
            })?;
        let frames = tokio_util::io::ReaderStream::new(opened).map_ok(Frame::data);
        let body = BodyExt::boxed(StreamBody::new(frames));
        self.send(Method::POST, path, "application/x-tar", body)
            .await
    }
}

/// The whole body of a response.
pub async fn collect(response: Response<Incoming>) -> Result<Bytes, ClientError> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes())
}

/// Calls `on_line` with each JSON line of a streamed answer.
pub async fn for_each_line(
    response: Response<Incoming>,
    mut on_line: impl FnMut(serde_json::Value),
) -> Result<(), ClientError> {
    let mut body = response.into_body();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Ok(value) = serde_json::from_slice(&line) {
                on_line(value);
            }
        }
    }
    Ok(())
}

fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let message = v["error"]["message"].as_str()?;
            // The field names what to fix, as the pages show beside it.
            Some(match v["error"]["field"].as_str() {
                Some(field) if !message.starts_with(field) => format!("{field}: {message}"),
                _ => message.to_owned(),
            })
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}
