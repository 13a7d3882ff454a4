//! `/api/v1/vpn`: WireGuard remote access and its peers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::api_error::{ApiError, ErrorBody};
use super::api_json::ApiJson;
use super::session::ApiSession;
use super::state::AppState;
use crate::vpn::{NewPeer, NewPeerRequest, VpnError, VpnRequest, VpnStatus};

/// The API's answer to a refused or failed change.
pub fn vpn_error(err: VpnError) -> ApiError {
    match err {
        VpnError::Invalid(e) => ApiError::invalid(e),
        VpnError::NoPeer(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string()),
        VpnError::Tunnel(_) | VpnError::Io { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "tunnel_failed",
            err.to_string(),
        ),
        VpnError::State(e) => ApiError::internal(&e),
    }
}

/// Whether remote access is on, and its peers with their latest handshakes.
#[utoipa::path(get, path = "/api/v1/vpn", tag = "vpn",
    security(("session" = [])),
    responses((status = 200, body = VpnStatus), (status = 401, body = ErrorBody)))]
pub async fn status(State(state): State<AppState>, _s: ApiSession) -> Json<VpnStatus> {
    Json(state.vpn.status().await)
}

/// Turns remote access on or off.
#[utoipa::path(put, path = "/api/v1/vpn", tag = "vpn", request_body = VpnRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = VpnStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn configure(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<VpnRequest>,
) -> Result<Json<VpnStatus>, ApiError> {
    state
        .vpn
        .configure(request)
        .await
        .map(Json)
        .map_err(vpn_error)
}

/// Adds a peer. The answer holds its configuration file and QR code,
/// with its private key: shown this once.
#[utoipa::path(post, path = "/api/v1/vpn/peers", tag = "vpn", request_body = NewPeerRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 201, body = NewPeer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_peer(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<NewPeerRequest>,
) -> Result<(StatusCode, Json<NewPeer>), ApiError> {
    let peer = state.vpn.add_peer(&request.name).await.map_err(vpn_error)?;
    Ok((StatusCode::CREATED, Json(peer)))
}

/// Removes a peer: it cannot connect any more.
#[utoipa::path(delete, path = "/api/v1/vpn/peers/{name}", tag = "vpn",
    params(("name" = String, Path, description = "The peer's name")),
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = VpnStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn remove_peer(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(name): Path<String>,
) -> Result<Json<VpnStatus>, ApiError> {
    state
        .vpn
        .remove_peer(&name)
        .await
        .map(Json)
        .map_err(vpn_error)
}
