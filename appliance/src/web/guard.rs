//! Protections applied to every request: cross-site refusal and security headers.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api_error::ApiError;

/// Refuses state-changing requests that a browser marks as coming from
/// another site. Tokens are the main defence; this catches the rest (a
/// login form posted from elsewhere, for one).
pub async fn same_origin(request: Request, next: Next) -> Response {
    if !request.method().is_safe() {
        let headers = request.headers();
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site");
        let origin_mismatch = match (
            headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
            headers.get(header::HOST).and_then(|v| v.to_str().ok()),
        ) {
            (Some("null"), _) => true,
            (Some(origin), Some(host)) => origin_host(origin) != Some(host),
            _ => false,
        };
        if cross_site || origin_mismatch {
            return ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "cross_site_refused",
                "this request came from another site; open the device's own page and try there",
            )
            .into_response();
        }
    }
    next.run(request).await
}

fn origin_host(origin: &str) -> Option<&str> {
    origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
}

/// Headers that keep pages out of frames and scripts off other origins.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'none'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::CACHE_CONTROL, "no-store");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_host_strips_scheme() {
        assert_eq!(origin_host("http://ddaemon.local"), Some("ddaemon.local"));
        assert_eq!(origin_host("http://127.0.0.1:8080"), Some("127.0.0.1:8080"));
        assert_eq!(origin_host("garbage"), None);
    }
}
