//! `/api/v1/catalog`: the apps the device can install, for the catalog grid.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api_error::{ApiError, ErrorBody};
use super::session::ApiSession;
use super::state::AppState;
use crate::apps::catalog::CatalogApp;

/// One app of the catalog, as the grid shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CatalogEntry {
    pub id: String,
    pub title: String,
    pub description: String,
    pub category: String,
    pub version: String,
    pub architectures: Vec<String>,
    /// Where its icon is served.
    pub icon: String,
    /// Services (containers) it runs.
    pub services: usize,
}

impl From<&CatalogApp> for CatalogEntry {
    fn from(app: &CatalogApp) -> Self {
        let m = &app.manifest;
        Self {
            id: m.id.clone(),
            title: m.title.clone(),
            description: m.description.clone(),
            category: m.category.clone(),
            version: m.version.clone(),
            architectures: m.architectures.clone(),
            icon: format!("/api/v1/catalog/{}/icon.svg", m.id),
            services: m.services.len(),
        }
    }
}

/// The catalog, in its index's order.
#[utoipa::path(get, path = "/api/v1/catalog", tag = "apps",
    security(("session" = [])),
    responses((status = 200, body = [CatalogEntry]), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, _s: ApiSession) -> Json<Vec<CatalogEntry>> {
    Json(state.catalog.iter().map(CatalogEntry::from).collect())
}

/// An app's icon.
#[utoipa::path(get, path = "/api/v1/catalog/{id}/icon.svg", tag = "apps",
    params(("id" = String, Path)), security(("session" = [])),
    responses((status = 200, content_type = "image/svg+xml", body = String), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn icon(
    State(state): State<AppState>,
    _s: ApiSession,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let catalog: &Arc<Vec<CatalogApp>> = &state.catalog;
    let app = catalog
        .iter()
        .find(|a| a.manifest.id == id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such app in the catalog",
            )
        })?;
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml")],
        app.icon_svg.clone(),
    )
        .into_response())
}
