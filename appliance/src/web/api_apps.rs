//! `/api/v1/apps`: installing, starting, stopping, updating and removing
//! apps. Install, update and remove answer 202 at once and go on in the
//! background; `GET /api/v1/apps/{id}` shows their progress.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api_error::{ApiError, ErrorBody};
use super::api_json::ApiJson;
use super::session::ApiSession;
use super::state::{AppState, NameOwner};
use crate::apps::lifecycle::{Activity, AppError, container_id};
use crate::apps::manifest::{self, Manifest};
use crate::field_error::FieldError;
use crate::state::{AppPhase, AppRecord};

/// A service (container) of an app.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    pub name: String,
    pub image: String,
    /// running, restarting, stopped, exited, failed, created, or missing.
    pub state: String,
}

/// An installed app, as the page and CLI show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppView {
    pub id: String,
    pub title: String,
    pub version: String,
    /// installing, installed, updating or removing.
    pub phase: String,
    /// The step of that phase: recorded, pulling, creating, starting,
    /// waiting, healthy, removing.
    pub step: String,
    /// running, stopped, starting or failed: what its containers do.
    pub state: String,
    /// Whether the owner wants it running.
    pub running: bool,
    /// `http://ID.local`.
    pub url: String,
    /// The device port that also reaches it (`http://DEVICE.local:PORT`).
    pub port: u16,
    pub services: Vec<ServiceView>,
    /// What it is doing now ("pulling ...") and download progress.
    pub detail: String,
    pub done: u64,
    pub total: u64,
    /// Why the last change failed.
    pub error: Option<String>,
    /// The catalog has another version.
    pub update_available: Option<String>,
}

/// `POST /api/v1/apps`: install from the catalog (`id`) or a manifest.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// An app of the catalog.
    #[serde(default)]
    #[schema(example = "jellyfin")]
    pub id: Option<String>,
    /// Or a whole manifest (`app.toml` text), e.g. from `ddaemon app import`.
    #[serde(default)]
    pub manifest: Option<String>,
}

/// `POST /api/v1/apps/{id}/update`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// The manifest of the new version; the catalog's when left out.
    #[serde(default)]
    pub manifest: Option<String>,
}

/// `?purge=` on remove, `?service=&bytes=` on logs.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AppQuery {
    /// Remove: also delete the app's data (it is kept by default).
    #[serde(default)]
    pub purge: Option<bool>,
    /// Logs: which service (the web service by default).
    #[serde(default)]
    pub service: Option<String>,
    /// Logs: how much of the end (default 64 KiB).
    #[serde(default)]
    pub bytes: Option<u64>,
}

/// The view of one record, with its containers' states.
pub fn view(state: &AppState, record: &AppRecord) -> AppView {
    let m = &record.manifest;
    let services: Vec<ServiceView> = m
        .services
        .iter()
        .map(|s| {
            let info = state.apps.containers().info(&container_id(&m.id, &s.name));
            let state = match info {
                Ok(info) => super::api_containers::ContainerView::from(info).state,
                Err(_) => "missing".into(),
            };
            ServiceView {
                name: s.name.clone(),
                image: s.image.clone(),
                state,
            }
        })
        .collect();
    let overall = if services.iter().all(|s| s.state == "running") {
        "running"
    } else if services.iter().any(|s| s.state == "failed") {
        "failed"
    } else if !record.running || services.iter().all(|s| s.state == "stopped") {
        "stopped"
    } else {
        "starting"
    };
    let activity = state.apps.activity(&m.id).unwrap_or_default();
    let Activity {
        detail,
        done,
        total,
        failure,
    } = activity;
    AppView {
        id: m.id.clone(),
        title: m.title.clone(),
        version: m.version.clone(),
        phase: record.phase.to_string(),
        step: record.step.to_string(),
        state: overall.into(),
        running: record.running,
        url: format!("http://{}.local", state.mdns.announced_name(&m.id)),
        port: record.port,
        services,
        detail,
        done,
        total,
        error: record.error.clone().or(failure),
        update_available: state
            .catalog
            .iter()
            .find(|c| c.manifest.id == m.id)
            .filter(|c| c.manifest.version != m.version)
            .map(|c| c.manifest.version.clone()),
    }
}

fn app_error(err: AppError) -> ApiError {
    match &err {
        AppError::Installed { .. } => {
            ApiError::new(StatusCode::CONFLICT, "app_installed", err.to_string()).with_field("id")
        }
        AppError::NotInstalled(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "app_not_installed", err.to_string())
        }
        AppError::Busy { .. } => ApiError::new(StatusCode::CONFLICT, "app_busy", err.to_string()),
        AppError::Refused { field, message } => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message.clone())
                .with_field(field.clone())
        }
        // The device's set-up, not the server, stands in the way: a 409
        // (the API answers 5xx only for its own faults).
        AppError::NoNetwork | AppError::NoPort => {
            ApiError::new(StatusCode::CONFLICT, "apps_unavailable", err.to_string())
        }
        AppError::Container(_) | AppError::Failed(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "app_failed",
            err.to_string(),
        ),
        _ => ApiError::internal(&err),
    }
}

fn parse_manifest(text: &str) -> Result<Manifest, ApiError> {
    manifest::parse(text).map_err(|e| {
        let first = e.problems.first();
        ApiError::invalid(FieldError::new(
            "manifest",
            format!(
                "{}{}",
                first.map_or(String::new(), |p| format!("{}: ", p.field)),
                e
            ),
        ))
    })
}

fn catalog_manifest(state: &AppState, id: &str) -> Option<Manifest> {
    state
        .catalog
        .iter()
        .find(|c| c.manifest.id == id)
        .map(|c| c.manifest.clone())
}

async fn record_of(state: &AppState, id: &str) -> Result<AppRecord, ApiError> {
    match state.apps.get(id).await.map_err(app_error)? {
        Some(record) => Ok(record),
        None => {
            let why = state
                .apps
                .activity(id)
                .and_then(|a| a.failure)
                .map_or(String::new(), |f| format!("; {f}"));
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "app_not_installed",
                format!("no app {id} is installed{why}"),
            ))
        }
    }
}

/// The installed apps.
#[utoipa::path(get, path = "/api/v1/apps", tag = "apps", security(("session" = [])),
    responses((status = 200, body = [AppView]), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _s: ApiSession,
) -> Result<Json<Vec<AppView>>, ApiError> {
    let records = state.apps.list().await.map_err(app_error)?;
    Ok(Json(records.iter().map(|r| view(&state, r)).collect()))
}

/// One app, with the progress of a change under way.
#[utoipa::path(get, path = "/api/v1/apps/{id}", tag = "apps", params(("id" = String, Path)),
    security(("session" = [])),
    responses((status = 200, body = AppView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(id): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    let record = record_of(&state, &id).await?;
    Ok(Json(view(&state, &record)))
}

/// Checks and starts an install from either source; the page's form uses it too.
pub async fn start_install(state: &AppState, request: InstallRequest) -> Result<AppView, ApiError> {
    let manifest = match (request.id, request.manifest) {
        (Some(id), None) => catalog_manifest(state, &id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_in_catalog",
                format!("{id:?} is not in the catalog; GET /api/v1/catalog lists the apps"),
            )
            .with_field("id")
        })?,
        (None, Some(text)) => parse_manifest(&text)?,
        _ => {
            return Err(ApiError::invalid(FieldError::new(
                "id",
                "give either id (an app of the catalog) or manifest (app.toml text)",
            )));
        }
    };
    // An installed app's name is refused by the install itself.
    let taken = match state.name_owner(&manifest.id).await? {
        Some(NameOwner::Device) => Some("the device's own name; rename the device or the app"),
        Some(NameOwner::ExternalApp) => Some("an external app's name; remove that first"),
        Some(NameOwner::InstalledApp) | None => None,
    };
    if let Some(why) = taken {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "name_taken",
            format!("{}.local is {why}", manifest.id),
        )
        .with_field("id"));
    }
    let record = state.apps.install(manifest).await.map_err(app_error)?;
    Ok(view(state, &record))
}

/// Installs an app: pull, create, start, wait until it answers. Answers
/// at once; poll `GET /api/v1/apps/{id}` for progress.
#[utoipa::path(post, path = "/api/v1/apps", tag = "apps", request_body = InstallRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 202, body = AppView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody)))]
pub async fn install(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<InstallRequest>,
) -> Result<Response, ApiError> {
    let view = start_install(&state, request).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// Starts a stopped app.
#[utoipa::path(post, path = "/api/v1/apps/{id}/start", tag = "apps", params(("id" = String, Path)),
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = AppView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(id): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    record_of(&state, &id).await?;
    state.apps.start(&id).await.map_err(app_error)?;
    Ok(Json(view(&state, &record_of(&state, &id).await?)))
}

/// Stops an app; it stays stopped until started.
#[utoipa::path(post, path = "/api/v1/apps/{id}/stop", tag = "apps", params(("id" = String, Path)),
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = AppView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(id): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    record_of(&state, &id).await?;
    state.apps.stop(&id).await.map_err(app_error)?;
    Ok(Json(view(&state, &record_of(&state, &id).await?)))
}

/// Stops and starts an app.
#[utoipa::path(post, path = "/api/v1/apps/{id}/restart", tag = "apps", params(("id" = String, Path)),
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = AppView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn restart(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(id): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    record_of(&state, &id).await?;
    state.apps.restart(&id).await.map_err(app_error)?;
    Ok(Json(view(&state, &record_of(&state, &id).await?)))
}

/// Checks and starts an update; the page's form uses it too.
pub async fn start_update(
    state: &AppState,
    id: &str,
    request: UpdateRequest,
) -> Result<AppView, ApiError> {
    record_of(state, id).await?;
    let manifest = match request.manifest {
        Some(text) => parse_manifest(&text)?,
        None => catalog_manifest(state, id).ok_or_else(|| {
            ApiError::invalid(FieldError::new(
                "manifest",
                format!("{id} is not from the catalog; send the new manifest"),
            ))
        })?,
    };
    if manifest.id != id {
        return Err(ApiError::invalid(FieldError::new(
            "manifest",
            format!("id: the manifest is for {:?}, not {id:?}", manifest.id),
        )));
    }
    let record = state.apps.update(manifest).await.map_err(app_error)?;
    Ok(view(state, &record))
}

/// Updates an app to the catalog's version or a given manifest, keeping
/// its data; rolls back if the new version does not answer in time.
#[utoipa::path(post, path = "/api/v1/apps/{id}/update", tag = "apps", params(("id" = String, Path)),
    request_body = UpdateRequest, security(("session" = [], "csrf" = [])),
    responses((status = 202, body = AppView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdateRequest>,
) -> Result<Response, ApiError> {
    let view = start_update(&state, &id, request).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// Removes an app; its data stays unless `purge=true`.
#[utoipa::path(delete, path = "/api/v1/apps/{id}", tag = "apps", params(("id" = String, Path), AppQuery),
    security(("session" = [], "csrf" = [])),
    responses((status = 202, body = AppView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(id): Path<String>,
    Query(query): Query<AppQuery>,
) -> Result<Response, ApiError> {
    record_of(&state, &id).await?;
    let record = state
        .apps
        .remove(&id, query.purge.unwrap_or(false))
        .await
        .map_err(app_error)?;
    state.domain.forget_app(&id).await;
    Ok((StatusCode::ACCEPTED, Json(view(&state, &record))).into_response())
}

/// The end of a service's output (the web service's by default).
#[utoipa::path(get, path = "/api/v1/apps/{id}/logs", tag = "apps", params(("id" = String, Path), AppQuery),
    security(("session" = [])),
    responses((status = 200, content_type = "text/plain", body = String), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(id): Path<String>,
    Query(query): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let bytes = service_logs(&state, &id, query.service.as_deref(), query.bytes).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response())
}

/// A service's log tail; the page shows it too.
pub async fn service_logs(
    state: &AppState,
    id: &str,
    service: Option<&str>,
    bytes: Option<u64>,
) -> Result<Vec<u8>, ApiError> {
    let record = record_of(state, id).await?;
    let m = &record.manifest;
    let service = service.unwrap_or(&m.web.service);
    if !m.services.iter().any(|s| s.name == service) {
        return Err(ApiError::invalid(FieldError::new(
            "service",
            format!(
                "{id} has no service {service:?}; it has {}",
                m.services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )));
    }
    Ok(state
        .apps
        .containers()
        .logs(
            &container_id(id, service),
            bytes.unwrap_or(64 * 1024).min(16 * 1024 * 1024),
        )
        .unwrap_or_default())
}

/// Whether an app is mid-change (the page refreshes itself then).
pub fn is_changing(record: &AppRecord) -> bool {
    record.phase != AppPhase::Installed
}
