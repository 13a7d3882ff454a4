//! `/api/v1/shares`: folders shared over Samba.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::api_error::{ApiError, ErrorBody};
use super::api_json::ApiJson;
use super::session::ApiSession;
use super::state::AppState;
use crate::state::Share;
use crate::storage::shares::{NewShare, ShareError};

/// The API's answer to a share error.
pub fn share_error(err: ShareError) -> ApiError {
    match err {
        ShareError::Invalid(e) => ApiError::invalid(e),
        ShareError::Taken(_) => {
            ApiError::new(StatusCode::CONFLICT, "name_taken", err.to_string()).with_field("name")
        }
        ShareError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string())
        }
        ShareError::Samba(_) | ShareError::Nfs(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "samba_failed",
            err.to_string(),
        ),
        ShareError::State(e) => ApiError::internal(&e),
        ShareError::Interrupted(_) => ApiError::internal(&err),
    }
}

/// Every share.
#[utoipa::path(get, path = "/api/v1/shares", tag = "storage",
    security(("session" = [])),
    responses((status = 200, body = [Share]), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _s: ApiSession,
) -> Result<Json<Vec<Share>>, ApiError> {
    state.shares.list().await.map(Json).map_err(share_error)
}

/// Shares a folder on an attached disk or in an app's data folder.
#[utoipa::path(post, path = "/api/v1/shares", tag = "storage", request_body = NewShare,
    security(("session" = [], "csrf" = [])),
    responses((status = 201, body = Share), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn add(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<NewShare>,
) -> Result<Response, ApiError> {
    let share = state.shares.add(request).await.map_err(share_error)?;
    Ok((StatusCode::CREATED, Json(share)).into_response())
}

/// Stops sharing a folder; its files stay.
#[utoipa::path(delete, path = "/api/v1/shares/{name}", tag = "storage",
    params(("name" = String, Path, description = "The share's name")),
    security(("session" = [], "csrf" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.shares.remove(&name).await.map_err(share_error)?;
    Ok(StatusCode::NO_CONTENT)
}
