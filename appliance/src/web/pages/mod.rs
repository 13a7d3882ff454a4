//! Server-rendered pages. Everything essential works with JavaScript off:
//! plain forms posting back to the same path, redirects after success.

mod app_pages;
mod backups_page;
mod domain_page;
mod layout;
mod login_page;
mod sections;
mod setup_page;
mod storage_page;
mod update_pages;

pub use app_pages::{action_submit, app, apps, install_submit};
pub use backups_page::{backups, backups_submit};
pub use domain_page::{domain, domain_submit};
pub use layout::bare;
pub use login_page::{login_form, login_submit, logout_submit};
pub use sections::{not_found, power_submit, system};
pub use setup_page::{restore_progress, restore_submit, setup_form, setup_submit};
pub use storage_page::{share_submit, storage, storage_action_submit, storage_format_submit};
pub use update_pages::{switch_back_submit, update_from_url_submit, update_submit};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::Markup;

use super::cookies::{self, FORM_COOKIE};
use super::peer::Peer;
use crate::auth::{LoginOk, constant_time_eq, new_token};

/// The double-submit token of a session-less form: the cookie already sent,
/// or a new one to set. Returns the token and whether it must be set.
fn form_token(headers: &HeaderMap) -> std::io::Result<(String, bool)> {
    match cookies::read(headers, FORM_COOKIE) {
        Some(token) if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok((token, false))
        }
        _ => Ok((new_token()?, true)),
    }
}

/// Whether a session-less form came back with the token its cookie holds.
fn form_token_ok(headers: &HeaderMap, submitted: &str) -> bool {
    cookies::read(headers, FORM_COOKIE)
        .is_some_and(|cookie| constant_time_eq(cookie.as_bytes(), submitted.as_bytes()))
}

/// What a page says when the form body itself could not be read.
fn unreadable_form(rejection: &axum::extract::rejection::FormRejection) -> String {
    format!("The form could not be read ({rejection}). Reload the page and send it again.")
}

/// What a page says when the form cookie did not come back.
const FORM_COOKIE_MESSAGE: &str = "Your browser did not send back this page's cookie. Allow cookies for this device and send the form again.";

/// After a login or setup: the session cookie set, the form cookie done
/// with, and on to the dashboard.
fn into_dashboard(opened: &LoginOk, peer: Peer) -> Response {
    let mut response = Redirect::to("/apps").into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, cookies::session(opened, peer.tls()));
    headers.append(header::SET_COOKIE, cookies::clear(FORM_COOKIE, peer.tls()));
    response
}

/// A session-less form page, setting its token cookie when it is new.
fn with_form_cookie(
    status: StatusCode,
    page: Markup,
    token: &str,
    fresh: bool,
    peer: Peer,
) -> Response {
    let mut response = (status, Html(page.into_string())).into_response();
    if fresh {
        response.headers_mut().append(
            header::SET_COOKIE,
            cookies::set(FORM_COOKIE, token, 3600, peer.tls()),
        );
    }
    response
}
