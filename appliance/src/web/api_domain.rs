//! `/api/v1/domain`: the owner's domain, its CA, and which apps are public.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::api_error::{ApiError, ErrorBody};
use super::api_json::ApiJson;
use super::session::ApiSession;
use super::state::AppState;
use crate::domain::{DdnsRequest, DomainError, DomainRequest, DomainStatus};

/// The API's answer to a refused domain change.
pub fn domain_error(err: DomainError) -> ApiError {
    match err {
        DomainError::Invalid(e) => ApiError::invalid(e),
        DomainError::NoApp(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string()),
        DomainError::State(e) => ApiError::internal(&e),
    }
}

/// The domain, the DNS records to create, and the public apps with their
/// certificates.
#[utoipa::path(get, path = "/api/v1/domain", tag = "domain",
    security(("session" = [])),
    responses((status = 200, body = DomainStatus), (status = 401, body = ErrorBody)))]
pub async fn status(State(state): State<AppState>, _s: ApiSession) -> Json<DomainStatus> {
    Json(state.domain.status().await)
}

/// Sets the domain and its ACME CA; an empty domain forgets it and makes
/// every app private.
#[utoipa::path(put, path = "/api/v1/domain", tag = "domain", request_body = DomainRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = DomainStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn configure(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<DomainRequest>,
) -> Result<Json<DomainStatus>, ApiError> {
    state
        .domain
        .configure(request)
        .await
        .map(Json)
        .map_err(domain_error)
}

/// `PUT /api/v1/apps/{id}/public`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PublicRequest {
    /// On: the app answers at `https://ID.DOMAIN`; off: that name answers nothing.
    pub public: bool,
}

/// Turns an app's public switch on or off. A certificate is ordered at once;
/// `GET /api/v1/domain` shows when it is there.
#[utoipa::path(put, path = "/api/v1/apps/{id}/public", tag = "domain", request_body = PublicRequest,
    params(("id" = String, Path, description = "The app's id")),
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = DomainStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn set_public(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<PublicRequest>,
) -> Result<Json<DomainStatus>, ApiError> {
    state
        .domain
        .set_public(&id, request.public)
        .await
        .map(Json)
        .map_err(domain_error)
}

/// Sets up dynamic DNS: `*.DOMAIN` follows the public address through RFC
/// 2136 updates signed with TSIG. The first update is made at once; a
/// refused key or unreachable server is refused on its field and nothing
/// is saved. An empty `server` turns it off.
#[utoipa::path(put, path = "/api/v1/domain/ddns", tag = "domain", request_body = DdnsRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = DomainStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn configure_ddns(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<DdnsRequest>,
) -> Result<Json<DomainStatus>, ApiError> {
    state
        .domain
        .configure_ddns(request)
        .await
        .map(Json)
        .map_err(domain_error)
}
