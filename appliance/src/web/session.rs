//! Extractors that admit a request only with a live session, and the CSRF
//! checks that go with them.

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::api_error::ApiError;
use super::cookies::{self, SESSION_COOKIE};
use super::peer::Peer;
use super::state::AppState;
use crate::auth::{SESSION_LIFETIME_SECS, constant_time_eq};

/// A slot a request's session lookup fills when it moved the session's
/// expiry, so that the answer carries a cookie with the new lifetime.
#[derive(Debug, Clone, Default)]
pub struct CookieRenewal(Arc<Mutex<Option<HeaderValue>>>);

impl CookieRenewal {
    fn set(&self, value: HeaderValue) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    }
}

/// Sends the session cookie again when a request extended the session, so
/// the browser keeps it as long as the device does.
pub async fn renew_session_cookie(mut request: Request, next: Next) -> Response {
    let renewal = CookieRenewal::default();
    request.extensions_mut().insert(renewal.clone());
    let mut response = next.run(request).await;
    let value = renewal.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    let already_set = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.as_bytes().starts_with(SESSION_COOKIE.as_bytes()));
    if let Some(value) = value
        && !already_set
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The header that carries the CSRF token on JSON calls.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A caller allowed in.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user, or `root` for the local socket.
    pub user_name: String,
    /// The session's CSRF token; `None` for the local socket, which needs none.
    pub csrf_token: Option<String>,
    /// The cookie's token, to end the session on logout.
    pub token: Option<String>,
    /// How the caller is connected.
    pub peer: Peer,
}

impl Session {
    /// Whether `provided` is this session's CSRF token.
    pub fn csrf_ok(&self, provided: Option<&str>) -> bool {
        match (&self.csrf_token, provided) {
            (None, _) => true,
            (Some(expected), Some(given)) => {
                constant_time_eq(expected.as_bytes(), given.as_bytes())
            }
            (Some(_), None) => false,
        }
    }
}

fn peer_of(parts: &Parts) -> Peer {
    parts
        .extensions
        .get::<Peer>()
        .copied()
        .unwrap_or(Peer::Remote {
            ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            tls: false,
        })
}

enum Lookup {
    Found(Session),
    Missing,
    Failed(String),
}

async fn lookup(parts: &Parts, state: &AppState) -> Lookup {
    let peer = peer_of(parts);
    if peer == Peer::LocalRoot {
        return Lookup::Found(Session {
            user_name: "root".into(),
            csrf_token: None,
            token: None,
            peer,
        });
    }
    let Some(token) = cookies::read(&parts.headers, SESSION_COOKIE) else {
        return Lookup::Missing;
    };
    match state.logins.session(&token).await {
        Ok(Some((record, extended))) => {
            if extended && let Some(renewal) = parts.extensions.get::<CookieRenewal>() {
                renewal.set(cookies::set(
                    SESSION_COOKIE,
                    &token,
                    SESSION_LIFETIME_SECS,
                    peer.tls(),
                ));
            }
            Lookup::Found(Session {
                user_name: record.user_name,
                csrf_token: Some(record.csrf_token),
                token: Some(token),
                peer,
            })
        }
        Ok(None) => Lookup::Missing,
        Err(err) => Lookup::Failed(err.to_string()),
    }
}

/// A JSON API caller with a session; state-changing methods must also carry
/// the session's CSRF token in `X-CSRF-Token`.
#[derive(Debug, Clone)]
pub struct ApiSession(pub Session);

impl FromRequestParts<AppState> for ApiSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = match lookup(parts, state).await {
            Lookup::Found(session) => session,
            Lookup::Missing if !state.setup_complete() => {
                return Err(ApiError::unauthorized(
                    "the device is not set up yet; finish setup (POST /api/v1/setup) first",
                ));
            }
            Lookup::Missing => {
                return Err(ApiError::unauthorized(
                    "log in first (POST /api/v1/login); the session cookie is missing or has expired",
                ));
            }
            Lookup::Failed(err) => return Err(ApiError::internal(&err)),
        };
        if !parts.method.is_safe() {
            let provided = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !session.csrf_ok(provided) {
                let message = if provided.is_none() {
                    "send the csrf_token you got at login in the X-CSRF-Token header"
                } else {
                    "the X-CSRF-Token header does not match this session; use the csrf_token from your last login"
                };
                return Err(ApiError::csrf(message));
            }
        }
        Ok(Self(session))
    }
}

/// A page visitor with a session. Without one, the page leads to setup (on a
/// fresh device) or to the login page.
#[derive(Debug, Clone)]
pub struct PageSession(pub Session);

impl FromRequestParts<AppState> for PageSession {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if !state.setup_complete() {
            return Err(Redirect::to("/setup").into_response());
        }
        match lookup(parts, state).await {
            Lookup::Found(session) => Ok(Self(session)),
            Lookup::Missing => Err(Redirect::to("/login").into_response()),
            Lookup::Failed(err) => Err(ApiError::internal(&err).into_response()),
        }
    }
}
