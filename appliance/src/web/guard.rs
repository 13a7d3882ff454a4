//! Protections applied to every request: cross-site refusal and security headers.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api_error::ApiError;

/// Answers only to names the device can be reached by on the home network:
/// an address, `localhost`, a single-label name, or a `.local` name. Any
/// other name means a page elsewhere pointed its own DNS name at the device
/// (DNS rebinding) to read it or set it up; such requests get 421.
pub async fn known_host(request: Request, next: Next) -> Response {
    let foreign = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|host| !host_is_local(host))
        .map(str::to_owned);
    if let Some(host) = foreign {
        return ApiError::new(
            axum::http::StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            format!("this device does not answer to {host:?}; open it at http://NAME.local or by its address"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether a Host header names the device the way the home network does.
pub fn host_is_local(host: &str) -> bool {
    let name = crate::proxy::host_name(host);
    if host.starts_with('[') {
        return name.parse::<std::net::Ipv6Addr>().is_ok();
    }
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || (!name.is_empty() && !name.contains('.'))
        || name.ends_with(".local")
}

/// Refuses state-changing requests that a browser marks as coming from
/// anywhere but the device's own pages. Tokens are the main defence; this
/// catches the rest (a login form posted from elsewhere, for one).
pub async fn same_origin(request: Request, next: Next) -> Response {
    if !request.method().is_safe() {
        let headers = request.headers();
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v != "same-origin" && v != "none");
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
    fn local_hosts_are_known_and_others_are_not() {
        for ok in [
            "ddaemon.local",
            "Kitchen.LOCAL:8080",
            "192.168.1.5",
            "127.0.0.1:8080",
            "[::1]:80",
            "[fe80::1]",
            "localhost:80",
            "ddaemon",
            "ddaemon.local.",
        ] {
            assert!(host_is_local(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:80",
            "ddaemon.local.evil.example",
            "1.2.3.4.nip.io",
            "[nothex]",
            "",
        ] {
            assert!(!host_is_local(bad), "{bad}");
        }
    }

    #[test]
    fn origin_host_strips_scheme() {
        assert_eq!(origin_host("http://ddaemon.local"), Some("ddaemon.local"));
        assert_eq!(origin_host("http://127.0.0.1:8080"), Some("127.0.0.1:8080"));
        assert_eq!(origin_host("garbage"), None);
    }
}
