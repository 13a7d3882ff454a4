//! `/api/v1/external-apps`: give a service on the home network a name,
//! `NAME.local`, served through the proxy.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::api_error::{ApiError, ErrorBody};
use super::api_json::ApiJson;
use super::session::ApiSession;
use super::state::{AppState, NameOwner};
use crate::field_error::FieldError;
use crate::proxy::Backend;
use crate::state::{ExternalApp, StateError};
use crate::system::normalize_device_name;

/// `POST /api/v1/external-apps`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExternalApp {
    /// The name: it answers at `NAME.local`.
    #[schema(example = "printer")]
    pub name: String,
    /// What the dashboard calls it; the name when left out.
    #[serde(default)]
    pub title: Option<String>,
    /// `address:port` on the home network, e.g. `192.168.1.20:631`.
    #[schema(example = "192.168.1.20:631")]
    pub target: String,
}

/// The proxy route of an external app; `None` if its target no longer parses.
pub fn backend_of(app: &ExternalApp) -> Option<Backend> {
    Some(Backend {
        app: app.name.clone(),
        title: app.title.clone(),
        addr: app.target.parse().ok()?,
    })
}

/// The external apps.
#[utoipa::path(get, path = "/api/v1/external-apps", tag = "apps",
    security(("session" = [])),
    responses((status = 200, body = [ExternalApp]), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _s: ApiSession,
) -> Result<Json<Vec<ExternalApp>>, ApiError> {
    Ok(Json(
        state
            .db
            .external_apps()
            .await
            .map_err(|e| ApiError::internal(&e))?,
    ))
}

/// Adds an external app and routes its name at once.
#[utoipa::path(post, path = "/api/v1/external-apps", tag = "apps", request_body = NewExternalApp,
    security(("session" = [], "csrf" = [])),
    responses((status = 201, body = ExternalApp), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn add(
    State(state): State<AppState>,
    _s: ApiSession,
    ApiJson(request): ApiJson<NewExternalApp>,
) -> Result<Response, ApiError> {
    let name = normalize_device_name(&request.name)
        .map_err(|e| ApiError::invalid(FieldError::new("name", e.message)))?;
    // A taken external name is refused by the database below.
    match state.name_owner(&name).await? {
        Some(NameOwner::Device) => {
            return Err(ApiError::invalid(FieldError::new(
                "name",
                "that is the device's own name; pick another",
            )));
        }
        Some(NameOwner::InstalledApp) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "name_taken",
                format!("{name}.local is an installed app's name; pick another name"),
            )
            .with_field("name"));
        }
        Some(NameOwner::ExternalApp) | None => {}
    }
    let addr: SocketAddr = request.target.trim().parse().map_err(|_| {
        ApiError::invalid(FieldError::new(
            "target",
            format!(
                "{:?} is not ADDRESS:PORT, e.g. 192.168.1.20:8080",
                request.target
            ),
        ))
    })?;
    let app = ExternalApp {
        title: request
            .title
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| name.clone()),
        name,
        target: addr.to_string(),
    };
    state
        .db
        .add_external_app(app.clone())
        .await
        .map_err(|e| match e {
            StateError::Taken(name) => ApiError::new(
                StatusCode::CONFLICT,
                "name_taken",
                format!("{name}.local is already in use; pick another name"),
            )
            .with_field("name"),
            other => ApiError::internal(&other),
        })?;
    if let Some(backend) = backend_of(&app) {
        state.proxy.routes.set(backend);
        state.mdns.announce(&app.name, &app.title);
    }
    tracing::info!(name = %app.name, target = %app.target, "external app added");
    Ok((StatusCode::CREATED, Json(app)).into_response())
}

/// Removes an external app; its name stops answering.
#[utoipa::path(delete, path = "/api/v1/external-apps/{name}", tag = "apps",
    params(("name" = String, Path)), security(("session" = [], "csrf" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state
        .db
        .remove_external_app(name.clone())
        .await
        .map_err(|e| ApiError::internal(&e))?
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no external app {name:?}"),
        ));
    }
    state.proxy.routes.remove(&name);
    state.mdns.withdraw(&name);
    state.domain.forget_app(&name).await;
    Ok(StatusCode::NO_CONTENT)
}
