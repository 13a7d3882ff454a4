//! The public side of the web server: ACME's HTTP-01 answers, and
//! `APP.DOMAIN` for public apps (HTTPS only; plain HTTP is sent there).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::proxy::host_name;
use crate::web::AppState;
use crate::web::api_error::ApiError;
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
    let peer = request.extensions().get::<Peer>().copied();
    let from_internet = match peer {
        Some(Peer::Remote { ip, .. }) => !state.domain.home().contains(ip),
        Some(Peer::LocalRoot) | None => false,
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some((host, backend)) = host.and_then(|h| state.domain.public_backend(&h).map(|b| (h, b)))
    else {
        if from_internet {
            // A router forwarding 80 and 443 brings the internet to the
            // same listener as the home network: from there only the
            // public names answer, never the dashboard or a private app.
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "not_public",
                "from the internet this device answers only at the names of its public apps",
            )
            .into_response();
        }
        return next.run(request).await;
    };
    if !peer.is_some_and(|p| p.tls()) {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{}{path}", host_name(&host));
        let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return response;
    }
    // What a client on the internet says about who it forwards for is
    // not passed on as if the device had checked it.
    let mut request = request;
    request.headers_mut().remove("x-forwarded-for");
    request.headers_mut().remove(header::FORWARDED);
    let client = peer.and_then(|p| p.ip());
    state.proxy.forward(request, &backend, client, true).await
}
