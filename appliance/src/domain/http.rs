//! The public side of the web server: ACME's HTTP-01 answers, and
//! `APP.DOMAIN` for public apps (HTTPS only; plain HTTP is sent there).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::proxy::host_name;
use crate::web::AppState;
use crate::web::peer::Peer;

const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// Runs before the home network's rules (which refuse unknown host names):
/// a public name or a CA's check never reaches the dashboard.
pub async fn public_names(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = request.uri().path().strip_prefix(CHALLENGE_PATH)
        && let Some(answer) = state.domain.challenges().answer(token)
    {
        return ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response();
    }
    let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(request).await;
    };
    let Some(backend) = state.domain.public_backend(&host) else {
        return next.run(request).await;
    };
    let peer = request.extensions().get::<Peer>().copied();
    if !peer.is_some_and(|p| p.tls()) {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{}{path}", host_name(&host));
        let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return response;
    }
    let client = peer.and_then(|p| p.ip());
    state.proxy.forward(request, &backend, client, true).await
}
