//! `/api/v1/system/update`: the update status, installing a bundle, and
//! switching back to the other slot.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::request_power;
use super::api_error::{ApiError, ErrorBody};
use super::api_json::ApiJson;
use super::session::ApiSession;
use super::state::AppState;
use crate::field_error::FieldError;
use crate::system::{PowerAction, UpdateError, UpdateStatus, Updates};

/// The running version, both slots, a rollback if one happened, and an
/// installation's progress.
#[utoipa::path(get, path = "/api/v1/system/update", tag = "system",
    security(("session" = [])),
    responses((status = 200, body = UpdateStatus), (status = 401, body = ErrorBody)))]
pub async fn status(State(state): State<AppState>, _session: ApiSession) -> Json<UpdateStatus> {
    Json(state.updates.status())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApplyQuery {
    /// Restart into the new system once it is written (default true).
    pub restart: Option<bool>,
    /// The bundle's size, when the body is sent without a Content-Length
    /// (a truncated bundle is then refused before anything is written).
    pub length: Option<u64>,
}

/// What an installation or switch did.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpdateApplied {
    /// The version that boots next.
    pub version: Option<String>,
    /// The slot that boots next (`a` or `b`).
    pub slot: Option<String>,
    /// Whether the device is restarting into it now.
    pub restarting: bool,
}

/// Installs a signed update bundle sent as the body into the slot not
/// running, then restarts into it. The new system is kept only if its
/// supervisor answers after the restart; otherwise the device comes back
/// to this one by itself.
#[utoipa::path(post, path = "/api/v1/system/update", tag = "system",
    params(ApplyQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = UpdateApplied), (status = 400, body = ErrorBody, description = "Not a bundle, not signed by a trusted key, for another board, truncated or damaged; nothing boots from it"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Updates are not available here, or one is being installed"),
        (status = 500, body = ErrorBody)))]
pub async fn apply(
    State(state): State<AppState>,
    _session: ApiSession,
    Query(query): Query<ApplyQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<UpdateApplied>, ApiError> {
    let length = query.length.or_else(|| {
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    });
    let version = install_stream(&state.updates, body.into_data_stream(), length).await?;
    finish(&state, Some(version), None, query.restart.unwrap_or(true)).await
}

/// `POST /api/v1/system/update/from-url`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FromUrlRequest {
    /// Where the bundle is: an `http://` or `https://` address.
    pub url: String,
}

/// Downloads a signed update bundle and installs it as an upload would be
/// (streamed into the slot not running, never stored whole), then
/// restarts into it.
#[utoipa::path(post, path = "/api/v1/system/update/from-url", tag = "system",
    params(SwitchQuery),
    request_body = FromUrlRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = UpdateApplied),
        (status = 400, body = ErrorBody, description = "The address is not http(s), cannot be downloaded, or is not a bundle this device takes; nothing boots from it"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Updates are not available here, or one is being installed"),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn apply_from_url(
    State(state): State<AppState>,
    _session: ApiSession,
    Query(query): Query<SwitchQuery>,
    ApiJson(request): ApiJson<FromUrlRequest>,
) -> Result<Json<UpdateApplied>, ApiError> {
    let version = install_from_url(&state.updates, &request.url).await?;
    finish(&state, Some(version), None, query.restart.unwrap_or(true)).await
}

/// Downloads the bundle at `raw` (an http(s) address) into the installer;
/// the version installed. The API's and the System page's one way.
pub async fn install_from_url(updates: &Updates, raw: &str) -> Result<String, ApiError> {
    let refuse = |why: String| ApiError::invalid(FieldError::new("url", why));
    let url = reqwest::Url::parse(raw.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| refuse("give the http:// or https:// address of an update bundle".into()))?;
    // Nothing is downloaded for a device that could not install it.
    updates.check_available().map_err(update_error)?;
    // Said back without any password in it.
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(15))
        // A server that stops sending must not hold the installation.
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| ApiError::internal(&e))?;
    let response = client.get(url).send().await.map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        refuse(format!(
            "{shown} cannot be downloaded{cause}; check the address and that the device can reach it"
        ))
    })?;
    if !response.status().is_success() {
        return Err(refuse(format!(
            "{shown} answered {}; check the address",
            response.status()
        )));
    }
    let length = response.content_length();
    install_stream(updates, response.bytes_stream(), length).await
}

/// The one path from the page and the API into the installer: the
/// installer reads on a blocking thread while this task hands it the
/// upload's pieces as they arrive (the upload is never stored whole).
pub async fn install_stream<S, E>(
    updates: &Updates,
    mut stream: S,
    length: Option<u64>,
) -> Result<String, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures_util::StreamExt as _;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let updates = updates.clone();
    let installer =
        tokio::task::spawn_blocking(move || updates.install(ChannelReader::new(rx), length));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            std::io::Error::other(format!("the upload broke off: {e}; send it again"))
        });
        let broken = chunk.is_err();
        // A closed channel: the installer refused the bundle and stopped.
        if tx.send(chunk).await.is_err() || broken {
            break;
        }
    }
    drop(tx);
    installer
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(update_error)
}

/// A blocking reader over the upload's pieces.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    piece: Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        Self {
            rx,
            piece: Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.piece.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(piece) => self.piece = piece?,
            }
        }
        let n = buf.len().min(self.piece.len());
        buf[..n].copy_from_slice(&self.piece.split_to(n));
        Ok(n)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SwitchQuery {
    /// Restart into the other slot now (default true).
    pub restart: Option<bool>,
}

/// Boots the other slot, which must hold a confirmed system, from the
/// next start on (tried once, like an update), and restarts.
#[utoipa::path(post, path = "/api/v1/system/update/switch-back", tag = "system",
    params(SwitchQuery),
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = UpdateApplied), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Updates are not available here, or the other slot holds no confirmed system"),
        (status = 500, body = ErrorBody)))]
pub async fn switch_back(
    State(state): State<AppState>,
    _session: ApiSession,
    Query(query): Query<SwitchQuery>,
) -> Result<Json<UpdateApplied>, ApiError> {
    let slot = state.updates.switch_back().map_err(update_error)?;
    finish(&state, None, Some(slot), query.restart.unwrap_or(true)).await
}

async fn finish(
    state: &AppState,
    version: Option<String>,
    slot: Option<String>,
    restart: bool,
) -> Result<Json<UpdateApplied>, ApiError> {
    if restart {
        request_power(state, PowerAction::Restart).await?;
    }
    Ok(Json(UpdateApplied {
        version,
        slot,
        restarting: restart,
    }))
}

pub fn update_error(err: UpdateError) -> ApiError {
    match &err {
        UpdateError::Unavailable(_) => {
            ApiError::new(StatusCode::CONFLICT, "updates_unavailable", err.to_string())
        }
        UpdateError::Busy => ApiError::new(StatusCode::CONFLICT, "update_running", err.to_string()),
        UpdateError::OnTrial => {
            ApiError::new(StatusCode::CONFLICT, "system_on_trial", err.to_string())
        }
        UpdateError::Slot(ddaemon_recovery::slots::SlotError::NotBootable(_)) => ApiError::new(
            StatusCode::CONFLICT,
            "nothing_to_switch_to",
            err.to_string(),
        ),
        UpdateError::Bundle(ddaemon_recovery::bundle::BundleError::Target(_))
        | UpdateError::Slot(_) => ApiError::internal(&err),
        UpdateError::Bundle(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_bundle", err.to_string())
        }
    }
}
