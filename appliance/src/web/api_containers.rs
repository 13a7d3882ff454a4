//! `/api/v1/containers`: running images as containers, for the owner and
//! for tests (apps build on the same manager).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ddaemon_runtime::container_def::{ContainerDef, Limits, RestartPolicy, check_id};
use ddaemon_runtime::container_manager::{ContainerError, ContainerInfo, NetworkRequest};
use ddaemon_runtime::image_store::StoreError;
use ddaemon_runtime::network::NetworkError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api_error::{ApiError, ErrorBody};
use super::api_json::ApiJson;
use super::session::ApiSession;
use super::state::AppState;
use crate::field_error::FieldError;

/// A container as the page and CLI show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// creating, running, restarting, stopping, exited, stopped, failed, or unknown.
    pub state: String,
    pub exit_code: Option<i32>,
    pub restarts: u32,
    pub pid: Option<i32>,
    pub started_at: Option<i64>,
    pub error: Option<String>,
}

impl From<ContainerInfo> for ContainerView {
    fn from(info: ContainerInfo) -> Self {
        let status = info.status;
        let state = match &status {
            Some(s) if !info.shim_alive && !s.state.is_final() => "failed".to_owned(),
            Some(s) => serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            None => "created".to_owned(),
        };
        Self {
            name: info.id,
            image: info.image,
            state,
            exit_code: status.as_ref().and_then(|s| s.exit_code),
            restarts: status.as_ref().map_or(0, |s| s.restarts),
            pid: status.as_ref().and_then(|s| s.pid),
            started_at: status.as_ref().and_then(|s| s.started_at),
            error: status.and_then(|s| s.error),
        }
    }
}

/// `POST /api/v1/containers`: run an image on the device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The container's name: lower-case letters, digits, `-`, `_`, `.`.
    #[schema(example = "web")]
    pub name: String,
    /// An image already on the device (`ddaemon image pull` first).
    #[schema(example = "busybox:latest")]
    pub image: String,
    /// Replaces the image's command.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `KEY=value` pairs.
    #[serde(default)]
    pub env: Vec<String>,
    /// no, on-failure or always.
    #[serde(default)]
    pub restart: Option<String>,
    /// Memory limit in MiB.
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Containers of the same app reach each other by name.
    #[serde(default)]
    pub app: Option<String>,
    /// Ports of the device forwarded to the container, `HOST:CONTAINER`.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// `?bytes=` for logs.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// How much of the end of the output to return (default 64 KiB).
    pub bytes: Option<u64>,
}

fn container_error(err: ContainerError) -> ApiError {
    match err {
        ContainerError::BadId(message) => ApiError::invalid(FieldError::new("name", message)),
        ContainerError::Exists(_) => {
            ApiError::new(StatusCode::CONFLICT, "container_exists", err.to_string())
                .with_field("name")
        }
        ContainerError::NotFound(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "container_not_found",
            err.to_string(),
        ),
        ContainerError::Failed { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "container_failed",
            err.to_string(),
        ),
        ContainerError::Network(NetworkError::PortTaken(..)) => {
            ApiError::new(StatusCode::CONFLICT, "port_taken", err.to_string()).with_field("publish")
        }
        other => ApiError::internal(&other),
    }
}

/// For a name in the path: a name that cannot exist is simply not there.
fn lookup_error(err: ContainerError) -> ApiError {
    match err {
        ContainerError::BadId(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "container_not_found",
            "no container by that name; GET /api/v1/containers lists them",
        ),
        other => container_error(other),
    }
}

async fn view(state: &AppState, name: &str) -> Result<ContainerView, ApiError> {
    Ok(state.containers.info(name).map_err(container_error)?.into())
}

/// The containers on the device.
#[utoipa::path(get, path = "/api/v1/containers", tag = "containers",
    security(("session" = [])),
    responses((status = 200, body = [ContainerView]), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _s: ApiSession,
) -> Result<Json<Vec<ContainerView>>, ApiError> {
    let all = state.containers.list().map_err(container_error)?;
    Ok(Json(all.into_iter().map(ContainerView::from).collect()))
}

/// Creates and starts a container of an image on the device.
#[utoipa::path(post, path = "/api/v1/containers", tag = "containers", request_body = RunRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 201, body = ContainerView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn run(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<RunRequest>,
) -> Result<Response, ApiError> {
    check_id(&request.name).map_err(|m| ApiError::invalid(FieldError::new("name", m)))?;
    let restart: RestartPolicy = match &request.restart {
        Some(text) => text
            .parse()
            .map_err(|m: String| ApiError::invalid(FieldError::new("restart", m)))?,
        None => RestartPolicy::No,
    };
    if let Some(bad) = request
        .env
        .iter()
        .find(|e| !e.contains('=') || e.starts_with('='))
    {
        return Err(ApiError::invalid(FieldError::new(
            "env",
            format!("{bad:?} is not KEY=value"),
        )));
    }
    let image = state.images.get(&request.image).map_err(|e| match e {
        StoreError::NotFound(_) | StoreError::Reference(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "image_not_found",
            format!("no image {} on this device; pull it first", request.image),
        )
        .with_field("image"),
        other => ApiError::internal(&other),
    })?;
    let config = state
        .images
        .config(&image)
        .map_err(|e| ApiError::internal(&e))?;
    let mut def = ContainerDef::for_image(
        &request.name,
        &image.reference,
        state.images.layer_dirs(&image),
        config.config.unwrap_or_default(),
    );
    def.command = request.command;
    def.env = request.env;
    def.restart = restart;
    def.limits = Limits {
        memory_bytes: request.memory_mib.map(|m| i64::from(m) * 1024 * 1024),
        ..Limits::default()
    };
    let mut ports = Vec::new();
    for text in &request.publish {
        ports.push(
            text.parse()
                .map_err(|m: String| ApiError::invalid(FieldError::new("publish", m)))?,
        );
    }
    if let Some(app) = &request.app {
        check_id(app).map_err(|m| ApiError::invalid(FieldError::new("app", m)))?;
    }
    let network = NetworkRequest {
        app: request.app.clone(),
        ports,
    };
    state
        .containers
        .create(&def, network)
        .await
        .map_err(container_error)?;
    if let Err(err) = state.containers.start(&def.id).await {
        // Nothing half-made stays behind.
        let _ = state.containers.remove(&def.id).await;
        return Err(container_error(err));
    }
    Ok((StatusCode::CREATED, Json(view(&state, &def.id).await?)).into_response())
}

/// Starts a stopped container.
#[utoipa::path(post, path = "/api/v1/containers/{name}/start", tag = "containers",
    params(("name" = String, Path)), security(("session" = [], "csrf" = [])),
    responses((status = 200, body = ContainerView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(name): Path<String>,
) -> Result<Json<ContainerView>, ApiError> {
    state.containers.start(&name).await.map_err(lookup_error)?;
    Ok(Json(view(&state, &name).await?))
}

/// Stops a container (SIGTERM, then SIGKILL after its timeout).
#[utoipa::path(post, path = "/api/v1/containers/{name}/stop", tag = "containers",
    params(("name" = String, Path)), security(("session" = [], "csrf" = [])),
    responses((status = 200, body = ContainerView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(name): Path<String>,
) -> Result<Json<ContainerView>, ApiError> {
    state.containers.stop(&name).await.map_err(lookup_error)?;
    Ok(Json(view(&state, &name).await?))
}

/// Stops and deletes a container and what it wrote outside its volumes.
#[utoipa::path(delete, path = "/api/v1/containers/{name}", tag = "containers",
    params(("name" = String, Path)), security(("session" = [], "csrf" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.containers.remove(&name).await.map_err(lookup_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The end of a container's output.
#[utoipa::path(get, path = "/api/v1/containers/{name}/logs", tag = "containers",
    params(("name" = String, Path), LogsQuery), security(("session" = [])),
    responses((status = 200, content_type = "text/plain", body = String), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let bytes = state
        .containers
        .logs(
            &name,
            query.bytes.unwrap_or(64 * 1024).min(16 * 1024 * 1024),
        )
        .map_err(lookup_error)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response())
}
