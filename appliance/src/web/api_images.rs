//! `/api/v1/images`: the images on the device, pulling (with streamed
//! progress), removing and side-loading.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ddaemon_runtime::image_load::{LoadError, load_archive};
use ddaemon_runtime::image_ref::ImageRef;
use ddaemon_runtime::image_store::{GcReport, PullEvent, StoreError, StoredImage};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use super::api_error::{ApiError, ErrorBody};
use super::api_json::ApiJson;
use super::session::ApiSession;
use super::state::AppState;

/// An image on the device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageView {
    /// The reference it was pulled or loaded as.
    pub reference: String,
    /// The manifest digest: what exactly this image is.
    pub digest: String,
    /// Bytes of its compressed layers.
    pub size: u64,
    pub layers: usize,
    /// Seconds since the epoch.
    pub stored_at: i64,
}

impl From<StoredImage> for ImageView {
    fn from(image: StoredImage) -> Self {
        Self {
            reference: image.reference,
            digest: image.manifest.to_string(),
            size: image.size,
            layers: image.layers.len(),
            stored_at: image.stored_at,
        }
    }
}

/// `POST /api/v1/images/pull` and `/remove`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    /// An image reference, e.g. `jellyfin/jellyfin:10.9` or `ghcr.io/o/n@sha256:...`.
    #[schema(example = "busybox:latest")]
    pub reference: String,
}

/// `POST /api/v1/images/remove` done.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImageRemoved {
    pub removed: ImageView,
    /// Blobs and unpacked layers no other image used, now deleted.
    pub blobs_removed: usize,
    pub layers_removed: usize,
}

/// `?name=` for `POST /api/v1/images/load`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LoadQuery {
    /// The name for images an OCI archive tags only with a bare tag.
    pub name: Option<String>,
}

fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound(reference) => ApiError::new(
            StatusCode::NOT_FOUND,
            "image_not_found",
            format!("no image {reference} on this device; GET /api/v1/images lists them"),
        )
        .with_field("reference"),
        StoreError::Reference(bad) => ApiError::invalid(crate::field_error::FieldError::new(
            "reference",
            bad.to_string(),
        )),
        other => ApiError::internal(&other),
    }
}

/// The images on the device.
#[utoipa::path(get, path = "/api/v1/images", tag = "images",
    security(("session" = [])),
    responses((status = 200, body = [ImageView]), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _session: ApiSession,
) -> Result<Json<Vec<ImageView>>, ApiError> {
    let images = state.images.list().map_err(store_error)?;
    Ok(Json(images.into_iter().map(ImageView::from).collect()))
}

/// Pulls an image. The answer is a stream of JSON lines: progress events
/// (`{"stage":"resolving"}`, `{"stage":"downloading","done":N,"total":M}`,
/// `{"stage":"unpacking","index":i,"count":n}`) and a last line that is
/// `{"stage":"done","image":{...}}` or `{"stage":"failed","error":{...}}`.
#[utoipa::path(post, path = "/api/v1/images/pull", tag = "images", request_body = ImageRequest,
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "Progress as JSON lines", content_type = "application/x-ndjson", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 415, body = ErrorBody)))]
pub async fn pull(
    State(state): State<AppState>,
    _session: ApiSession,
    ApiJson(request): ApiJson<ImageRequest>,
) -> Result<Response, ApiError> {
    let image = ImageRef::parse(&request.reference).map_err(|e| {
        ApiError::invalid(crate::field_error::FieldError::new(
            "reference",
            e.to_string(),
        ))
    })?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    // The pull runs to its end even if the client goes away: what it
    // fetched is kept and a later pull starts from there.
    tokio::spawn(async move {
        let events = tx.clone();
        let progress = move |event: PullEvent| {
            let _ = events.send(serde_json::to_value(event).unwrap_or_default());
        };
        let last = match state.images.pull(&state.registry, &image, &progress).await {
            Ok(stored) => serde_json::json!({"stage": "done", "image": ImageView::from(stored)}),
            Err(err) => {
                tracing::warn!(image = %image, %err, "pull failed");
                serde_json::json!({"stage": "failed", "error": {"code": "pull_failed", "message": err.to_string()}})
            }
        };
        let _ = tx.send(last);
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let value = rx.recv().await?;
        let mut line = serde_json::to_vec(&value).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(line), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// Forgets an image and deletes the data no other image uses.
#[utoipa::path(post, path = "/api/v1/images/remove", tag = "images", request_body = ImageRequest,
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = ImageRemoved), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    _session: ApiSession,
    ApiJson(request): ApiJson<ImageRequest>,
) -> Result<Json<ImageRemoved>, ApiError> {
    let removed = state
        .images
        .remove(&request.reference)
        .await
        .map_err(store_error)?;
    let GcReport {
        blobs_removed,
        layers_removed,
    } = state.images.gc().await.map_err(store_error)?;
    tracing::info!(image = %removed.reference, blobs_removed, layers_removed, "image removed");
    Ok(Json(ImageRemoved {
        removed: removed.into(),
        blobs_removed,
        layers_removed,
    }))
}

/// Side-loads an image archive sent as the body: an OCI archive or a
/// `docker save` tarball, plain, gzip or zstd.
#[utoipa::path(post, path = "/api/v1/images/load", tag = "images",
    params(LoadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("session" = [], "csrf" = [])),
    responses((status = 200, body = [ImageView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn load(
    State(state): State<AppState>,
    _session: ApiSession,
    Query(query): Query<LoadQuery>,
    body: Body,
) -> Result<Json<Vec<ImageView>>, ApiError> {
    let uploads = state.data_dir.join("images/uploads");
    tokio::fs::create_dir_all(&uploads)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let upload = tempfile::Builder::new()
        .prefix("load-")
        .tempfile_in(&uploads)
        .map_err(|e| ApiError::internal(&e))?;
    let mut file = tokio::fs::File::create(upload.path())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "upload_failed",
                format!("the upload broke off: {e}; send it again"),
            )
        })?;
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    }
    file.flush().await.map_err(|e| ApiError::internal(&e))?;
    drop(file);
    let store = Arc::clone(&state.images);
    let loaded = load_archive(&store, upload.path(), query.name.as_deref())
        .await
        .map_err(|err| match err {
            LoadError::Store(inner) => store_error(inner),
            other => ApiError::new(StatusCode::BAD_REQUEST, "bad_archive", other.to_string()),
        })?;
    Ok(Json(loaded.into_iter().map(ImageView::from).collect()))
}
