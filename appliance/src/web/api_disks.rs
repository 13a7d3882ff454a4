//! `/api/v1/disks`: attached disks, mounting, unmounting and formatting.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api_error::{ApiError, ErrorBody};
use super::api_json::ApiJson;
use super::session::ApiSession;
use super::state::AppState;
use crate::storage::{Disk, StorageError};

/// `POST /api/v1/disks/mount` and `/unmount`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeRequest {
    /// The filesystem's UUID, as the disk list shows it.
    pub uuid: String,
}

/// `POST /api/v1/disks/format`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FormatRequest {
    /// The disk's kernel name, e.g. `sdb`.
    #[schema(example = "sdb")]
    pub disk: String,
    /// The disk's serial number, typed by the owner to confirm that this
    /// disk is to be erased.
    pub serial: String,
    /// The new filesystem's label (and folder name): up to 16 letters,
    /// digits, `-` or `_`.
    #[schema(example = "Media")]
    pub label: String,
}

/// Where a filesystem is mounted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Mounted {
    pub folder: String,
}

/// The API's answer to a storage error.
pub fn storage_error(err: StorageError) -> ApiError {
    let (status, code) = match &err {
        StorageError::NoSuchVolume(_) | StorageError::NoSuchDisk(_) => {
            (StatusCode::NOT_FOUND, "not_found")
        }
        StorageError::InUse { .. } | StorageError::Mounted { .. } => {
            (StatusCode::CONFLICT, "in_use")
        }
        StorageError::SameUuid { .. } => (StatusCode::CONFLICT, "same_uuid"),
        StorageError::Unsupported(_)
        | StorageError::NoSerial { .. }
        | StorageError::WrongSerial { .. }
        | StorageError::BadLabel(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
        StorageError::Tool(_) => (StatusCode::UNPROCESSABLE_ENTITY, "disk_failed"),
        StorageError::Io { .. } | StorageError::State(_) => return ApiError::internal(&err),
    };
    let field = err.field();
    let api = ApiError::new(status, code, err.to_string());
    match field {
        Some(f) => api.with_field(f),
        None => api,
    }
}

/// Every attached disk but the system's own.
#[utoipa::path(get, path = "/api/v1/disks", tag = "storage",
    security(("session" = [])),
    responses((status = 200, body = [Disk]), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _s: ApiSession,
) -> Result<Json<Vec<Disk>>, ApiError> {
    state.storage.disks().await.map(Json).map_err(storage_error)
}

/// Mounts a filesystem under `/data/disks/LABEL`, and again whenever the
/// disk is plugged in.
#[utoipa::path(post, path = "/api/v1/disks/mount", tag = "storage", request_body = VolumeRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = Mounted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn mount(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<VolumeRequest>,
) -> Result<Json<Mounted>, ApiError> {
    let folder = state
        .storage
        .mount(&request.uuid)
        .await
        .map_err(storage_error)?;
    Ok(Json(Mounted {
        folder: folder.display().to_string(),
    }))
}

/// Unmounts a filesystem so the disk can be unplugged; refused while
/// something uses it.
#[utoipa::path(post, path = "/api/v1/disks/unmount", tag = "storage", request_body = VolumeRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn unmount(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<VolumeRequest>,
) -> Result<StatusCode, ApiError> {
    state
        .shares
        .unmount_disk(&state.storage, &request.uuid)
        .await
        .map_err(storage_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Erases a disk and makes one ext4 filesystem on it, then mounts it. The
/// serial number must match: nothing is erased on a guess.
#[utoipa::path(post, path = "/api/v1/disks/format", tag = "storage", request_body = FormatRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = Mounted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn format(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<FormatRequest>,
) -> Result<Json<Mounted>, ApiError> {
    let folder = state
        .storage
        .format(&request.disk, &request.serial, &request.label)
        .await
        .map_err(storage_error)?;
    Ok(Json(Mounted {
        folder: folder.display().to_string(),
    }))
}
