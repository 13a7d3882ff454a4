//! `/api/v1/backups`: where backups go, running them, their snapshots, and
//! restores; and the setup wizard's restore of a new device.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::api_error::{ApiError, ErrorBody};
use super::api_json::ApiJson;
use super::session::ApiSession;
use super::state::AppState;
use crate::backup::repo::RepoError;
use crate::backup::{BackupError, BackupStatus, ConfigRequest, Configured, SnapshotInfo, Target};

/// The API's answer to a backup error.
pub fn backup_error(err: BackupError) -> ApiError {
    match err {
        BackupError::Invalid(e) => ApiError::invalid(e),
        BackupError::NotConfigured => {
            ApiError::new(StatusCode::CONFLICT, "not_configured", err.to_string())
        }
        BackupError::Busy(_) => ApiError::new(StatusCode::CONFLICT, "busy", err.to_string()),
        BackupError::NoApp(_) | BackupError::Repo(RepoError::NoSnapshot(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string())
        }
        BackupError::Repo(RepoError::WrongKey(_)) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_key",
            err.to_string(),
        )
        .with_field("recovery_key"),
        BackupError::Repo(_) | BackupError::Io(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "backup_failed",
            err.to_string(),
        ),
        BackupError::State(e) => ApiError::internal(&e),
    }
}

/// Settings, what is running, and the latest runs.
#[utoipa::path(get, path = "/api/v1/backups", tag = "backups",
    security(("session" = [])),
    responses((status = 200, body = BackupStatus), (status = 401, body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    _s: ApiSession,
) -> Result<Json<BackupStatus>, ApiError> {
    state.backups.status().await.map(Json).map_err(backup_error)
}

/// Chooses where backups go, when, and how many are kept. A new
/// repository's recovery key is in the answer, this once.
#[utoipa::path(put, path = "/api/v1/backups/config", tag = "backups", request_body = ConfigRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = Configured), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn configure(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<ConfigRequest>,
) -> Result<Json<Configured>, ApiError> {
    state
        .backups
        .configure(request)
        .await
        .map(Json)
        .map_err(backup_error)
}

/// Starts a backup now; `GET /api/v1/backups` shows its progress.
#[utoipa::path(post, path = "/api/v1/backups/run", tag = "backups",
    security(("session" = [], "csrf" = [])),
    responses((status = 202), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn run(State(state): State<AppState>, _s: ApiSession) -> Result<StatusCode, ApiError> {
    state.backups.start_backup().await.map_err(backup_error)?;
    Ok(StatusCode::ACCEPTED)
}

/// Starts a check of the repository.
#[utoipa::path(post, path = "/api/v1/backups/check", tag = "backups",
    security(("session" = [], "csrf" = [])),
    responses((status = 202), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn check(State(state): State<AppState>, _s: ApiSession) -> Result<StatusCode, ApiError> {
    state.backups.start_check().await.map_err(backup_error)?;
    Ok(StatusCode::ACCEPTED)
}

/// The snapshots in the repository, oldest first.
#[utoipa::path(get, path = "/api/v1/backups/snapshots", tag = "backups",
    security(("session" = [])),
    responses((status = 200, body = [SnapshotInfo]), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn snapshots(
    State(state): State<AppState>,
    _s: ApiSession,
) -> Result<Json<Vec<SnapshotInfo>>, ApiError> {
    state
        .backups
        .snapshots()
        .await
        .map(Json)
        .map_err(backup_error)
}

/// What to restore: one app's data from one of its snapshots, or (with no
/// app) the whole device from a state snapshot, the latest when none.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// Starts a restore.
#[utoipa::path(post, path = "/api/v1/backups/restore", tag = "backups", request_body = RestoreRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 202), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn restore(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<RestoreRequest>,
) -> Result<StatusCode, ApiError> {
    match (request.app, request.snapshot) {
        (Some(app), Some(snapshot)) => state.backups.start_restore_app(&app, &snapshot).await,
        (Some(_), None) => Err(crate::field_error::FieldError::new(
            "snapshot",
            "is required to restore an app; pick one from /api/v1/backups/snapshots",
        )
        .into()),
        (None, snapshot) => state.backups.start_restore_device(snapshot).await,
    }
    .map_err(backup_error)?;
    Ok(StatusCode::ACCEPTED)
}

/// The device's SSH key, for an SFTP target's `authorized_keys`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SshKeyView {
    pub public_key: String,
}

/// The line to add to the SFTP server's `authorized_keys` (made if absent).
#[utoipa::path(get, path = "/api/v1/backups/ssh-key", tag = "backups",
    security(("session" = [])),
    responses((status = 200, body = SshKeyView), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn ssh_key(
    State(state): State<AppState>,
    _s: ApiSession,
) -> Result<Json<SshKeyView>, ApiError> {
    let public_key = state.backups.ssh_public_key().map_err(backup_error)?;
    Ok(Json(SshKeyView { public_key }))
}

/// The wizard's other way: a new device restored from a backup.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRestoreRequest {
    pub target: Target,
    pub recovery_key: String,
}

/// Before setup only: restores the whole device from the latest backup at
/// `target`. When it is done the supervisor restarts with the restored
/// state (log in with the restored device's password).
#[utoipa::path(post, path = "/api/v1/setup/restore", tag = "setup", request_body = SetupRestoreRequest,
    responses((status = 202), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn setup_restore(
    State(state): State<AppState>,
    body: Result<ApiJson<SetupRestoreRequest>, ApiError>,
) -> Result<StatusCode, ApiError> {
    if state.setup_complete() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_set_up",
            "the device is already set up; restore from the Backups page",
        ));
    }
    let ApiJson(request) = body?;
    state
        .backups
        .start_restore_new_device(request.target, request.recovery_key)
        .await
        .map_err(backup_error)?;
    Ok(StatusCode::ACCEPTED)
}

/// Before setup, the wizard's restore progress (no session exists yet).
#[utoipa::path(get, path = "/api/v1/setup/restore", tag = "setup",
    responses((status = 200, body = BackupStatus), (status = 409, body = ErrorBody)))]
pub async fn setup_restore_status(
    State(state): State<AppState>,
) -> Result<Json<BackupStatus>, ApiError> {
    if state.setup_complete() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_set_up",
            "the device is already set up",
        ));
    }
    let mut status = state.backups.status().await.map_err(backup_error)?;
    status.target = None;
    Ok(Json(status))
}
