//! The JSON API under `/api/v1`, which the pages and the CLI use.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api_error::{ApiError, ErrorBody};
use super::api_json::ApiJson;
use super::cookies::{self, SESSION_COOKIE};
use super::peer::Peer;
use super::session::ApiSession;
use super::state::AppState;
use crate::auth::{LoginError, LoginOk};
use crate::setup::{ADMIN_USER, SetupError, SetupRequest, run_setup};
use crate::system::{PowerAction, PowerError, SystemInfo, read_system_info};

/// `GET /api/v1/health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the supervisor answers.
    pub status: String,
    /// ddaemon's version.
    pub version: String,
    /// The version of the system image running (on the device).
    pub system_version: String,
    pub setup_complete: bool,
}

/// `POST /api/v1/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account; `admin` when left out (the only account for now).
    #[serde(default)]
    pub username: Option<String>,
    pub password: String,
}

/// A new session: the cookie is set on the answer, the CSRF token is here.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionOpened {
    /// Send it in `X-CSRF-Token` on every state-changing call.
    pub csrf_token: String,
}

/// `POST /api/v1/setup` succeeded; the caller is logged in as the admin
/// (or, if no session could be opened, must log in: `csrf_token` is then null).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SetupDone {
    pub device_name: String,
    pub csrf_token: Option<String>,
}

/// Whether the supervisor is up and set up.
#[utoipa::path(get, path = "/api/v1/health", tag = "system",
    responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        system_version: state.updates.running_version().to_owned(),
        setup_complete: state.setup_complete(),
    })
}

/// First-boot setup: device name, admin password, time zone.
#[utoipa::path(post, path = "/api/v1/setup", tag = "setup", request_body = SetupRequest,
    responses(
        (status = 201, body = SetupDone, description = "Set up; the session cookie is set"),
        (status = 400, body = ErrorBody, description = "A field was refused; `field` names it"),
        (status = 409, body = ErrorBody, description = "Already set up"),
        (status = 415, body = ErrorBody)))]
pub async fn setup(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    body: Result<ApiJson<SetupRequest>, ApiError>,
) -> Result<Response, ApiError> {
    // A repeated setup is a conflict whatever its body holds.
    if state.setup_complete() {
        return Err(setup_error(SetupError::AlreadySetUp));
    }
    let ApiJson(request) = body?;
    let device_name = run_setup(&state.db, &state.hasher, &state.zones, request)
        .await
        .map_err(setup_error)?;
    state.mark_setup_complete(&device_name);
    match state.logins.open_session_for(ADMIN_USER, peer.ip()).await {
        Ok(opened) => {
            let body = SetupDone {
                device_name,
                csrf_token: Some(opened.csrf_token.clone()),
            };
            Ok(with_session_cookie(
                StatusCode::CREATED,
                &opened,
                peer,
                Json(body),
            ))
        }
        Err(err) => {
            // Setup is saved; saying otherwise would make a retry hit 409.
            tracing::error!(%err, "setup saved but no session could be opened");
            let body = SetupDone {
                device_name,
                csrf_token: None,
            };
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
    }
}

/// Maps a setup failure to its answer.
pub fn setup_error(err: SetupError) -> ApiError {
    match err {
        SetupError::Field(field) => ApiError::invalid(field),
        SetupError::AlreadySetUp => ApiError::new(
            StatusCode::CONFLICT,
            "already_set_up",
            "the device is already set up; log in instead (a factory reset starts setup again)",
        ),
        SetupError::Internal(cause) => ApiError::internal(&cause),
    }
}

/// Log in with the admin password.
#[utoipa::path(post, path = "/api/v1/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = SessionOpened, description = "Logged in; the session cookie is set"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody, description = "Wrong password"),
        (status = 409, body = ErrorBody, description = "Not set up yet"),
        (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Too many wrong passwords; see Retry-After")))]
pub async fn login(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let user = request.username.as_deref().unwrap_or(ADMIN_USER);
    let opened = state
        .logins
        .login(peer.ip(), user, request.password)
        .await
        .map_err(login_error)?;
    let body = SessionOpened {
        csrf_token: opened.csrf_token.clone(),
    };
    Ok(with_session_cookie(
        StatusCode::OK,
        &opened,
        peer,
        Json(body),
    ))
}

/// Maps a login failure to its answer.
pub fn login_error(err: LoginError) -> ApiError {
    match err {
        LoginError::NotSetUp => ApiError::new(
            StatusCode::CONFLICT,
            "setup_required",
            "the device is not set up yet; finish setup first",
        ),
        LoginError::WrongPassword => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong_password",
            "wrong password; check it and try again",
        )
        .with_field("password"),
        LoginError::RateLimited(limit) => ApiError::rate_limited(limit.retry_after_secs),
        other => ApiError::internal(&other),
    }
}

/// End this session on the device.
#[utoipa::path(post, path = "/api/v1/logout", tag = "auth",
    security(("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "Logged out; the cookie is cleared"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "CSRF token missing or wrong")))]
pub async fn logout(
    State(state): State<AppState>,
    ApiSession(session): ApiSession,
) -> Result<Response, ApiError> {
    if let Some(token) = &session.token {
        state
            .logins
            .logout(token)
            .await
            .map_err(|e| ApiError::internal(&e))?;
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        cookies::clear(SESSION_COOKIE, session.peer.tls()),
    );
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

/// What the System page shows.
#[utoipa::path(get, path = "/api/v1/system", tag = "system",
    security(("session" = [])),
    responses((status = 200, body = SystemInfo), (status = 401, body = ErrorBody)))]
pub async fn system(
    State(state): State<AppState>,
    _session: ApiSession,
) -> Result<Json<SystemInfo>, ApiError> {
    Ok(Json(system_info(&state).await?))
}

/// `POST /api/v1/system/power`: what to do.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    /// `restart` or `power-off`.
    pub action: PowerAction,
}

/// Restarts or shuts down the device. Answers 202 once systemd has the job;
/// the device goes away moments later. 409 where the supervisor does not
/// control its machine (a development run).
#[utoipa::path(post, path = "/api/v1/system/power", tag = "system",
    security(("session" = [], "csrf" = [])),
    request_body = PowerRequest,
    responses((status = 202), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 500, body = ErrorBody)))]
pub async fn power(
    State(state): State<AppState>,
    _session: ApiSession,
    ApiJson(request): ApiJson<PowerRequest>,
) -> Result<StatusCode, ApiError> {
    request_power(&state, request.action).await?;
    Ok(StatusCode::ACCEPTED)
}

/// The one path from the page and the API to systemd.
pub async fn request_power(state: &AppState, action: PowerAction) -> Result<(), ApiError> {
    state.power.request(action).await.map_err(|e| match e {
        PowerError::NotAllowed => {
            ApiError::new(StatusCode::CONFLICT, "power_unavailable", e.to_string())
        }
        PowerError::Systemd(_) => ApiError::internal(&e),
    })
}

/// Reads the System page's facts.
pub async fn system_info(state: &AppState) -> Result<SystemInfo, ApiError> {
    let settings = state
        .db
        .device_settings()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let data_dir = state.data_dir.as_ref().clone();
    let uptime = state.started.elapsed().as_secs();
    tokio::task::spawn_blocking(move || {
        read_system_info(settings.device_name, settings.timezone, &data_dir, uptime)
    })
    .await
    .map_err(|e| ApiError::internal(&e))
}

/// The answer to a path the API does not have.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such API endpoint; /api/v1/openapi.json lists them",
    )
}

/// The answer to a method an endpoint does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; /api/v1/openapi.json lists the methods",
    )
}

fn with_session_cookie(
    status: StatusCode,
    opened: &LoginOk,
    peer: Peer,
    body: impl IntoResponse,
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::SET_COOKIE, cookies::session(opened, peer.tls()));
    (status, headers, body).into_response()
}
