//! Reading and writing our cookies.

use axum::http::{HeaderMap, HeaderValue, header};

/// The session cookie.
pub const SESSION_COOKIE: &str = "ddaemon_session";
/// The double-submit token of the session-less forms (setup, login).
pub const FORM_COOKIE: &str = "ddaemon_form";

/// The value of cookie `name` in the request, if sent.
pub fn read(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, and Secure over TLS.
pub fn set(name: &str, value: &str, max_age_secs: i64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    );
    // Our names and hex tokens are always valid header text.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` value that carries a new session.
pub fn session(opened: &crate::auth::LoginOk, tls: bool) -> HeaderValue {
    set(
        SESSION_COOKIE,
        &opened.session_token,
        opened.max_age_secs,
        tls,
    )
}

/// A `Set-Cookie` value that deletes cookie `name`.
pub fn clear(name: &str, tls: bool) -> HeaderValue {
    set(name, "", 0, tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_among_many_cookies() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; ddaemon_session=abc"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(read(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(read(&headers, "b").as_deref(), Some("2"));
        assert_eq!(read(&headers, "c"), None);
    }

    #[test]
    fn set_cookie_attributes() {
        let plain = set(SESSION_COOKIE, "t", 60, false);
        assert_eq!(
            plain,
            "ddaemon_session=t; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        let tls = set(SESSION_COOKIE, "t", 60, true);
        assert!(tls.to_str().unwrap_or("").ends_with("; Secure"));
    }
}
