//! Logging in and out from the page.

use axum::Form;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{bare, field_error};
use super::{
    FORM_COOKIE_MESSAGE, form_token, form_token_ok, into_dashboard, unreadable_form,
    with_form_cookie,
};
use crate::auth::LoginError;
use crate::setup::ADMIN_USER;
use crate::web::api_error::ApiError;
use crate::web::cookies::{self, SESSION_COOKIE};
use crate::web::peer::Peer;
use crate::web::session::PageSession;
use crate::web::state::AppState;

/// What the login form posts.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginForm {
    password: String,
    form_token: String,
}

/// What the logout button posts.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LogoutForm {
    csrf_token: String,
}

/// `GET /login`.
pub async fn login_form(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    if !state.setup_complete() {
        return Redirect::to("/setup").into_response();
    }
    render(&headers, peer, StatusCode::OK, None)
}

/// `POST /login`.
pub async fn login_submit(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !state.setup_complete() {
        return Redirect::to("/setup").into_response();
    }
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            return render(
                &headers,
                peer,
                StatusCode::BAD_REQUEST,
                Some(unreadable_form(&rejection)),
            );
        }
    };
    if !form_token_ok(&headers, &form.form_token) {
        return render(
            &headers,
            peer,
            StatusCode::FORBIDDEN,
            Some(FORM_COOKIE_MESSAGE.to_owned()),
        );
    }
    match state
        .logins
        .login(peer.ip(), ADMIN_USER, form.password)
        .await
    {
        Ok(opened) => into_dashboard(&opened, peer),
        Err(LoginError::WrongPassword) => render(
            &headers,
            peer,
            StatusCode::UNAUTHORIZED,
            Some("Wrong password. Check it and try again.".into()),
        ),
        Err(LoginError::RateLimited(limit)) => {
            let mut response = render(
                &headers,
                peer,
                StatusCode::TOO_MANY_REQUESTS,
                Some(format!(
                    "Too many wrong passwords. Try again in {} s.",
                    limit.retry_after_secs
                )),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, limit.retry_after_secs.into());
            response
        }
        Err(LoginError::NotSetUp) => Redirect::to("/setup").into_response(),
        Err(other) => ApiError::internal(&other).into_response(),
    }
}

/// `POST /logout`: ends the session on the device, not only in the browser.
pub async fn logout_submit(
    State(state): State<AppState>,
    PageSession(session): PageSession,
    form: Result<Form<LogoutForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_form",
            "the logout form could not be read; reload the page and press Log out again",
        )
        .into_response();
    };
    if !session.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the logout form is stale; reload the page and press Log out again")
            .into_response();
    }
    if let Some(token) = &session.token
        && let Err(err) = state.logins.logout(token).await
    {
        return ApiError::internal(&err).into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::clear(SESSION_COOKIE, session.peer.tls()),
    );
    response
}

fn render(headers: &HeaderMap, peer: Peer, status: StatusCode, error: Option<String>) -> Response {
    let (token, fresh) = match form_token(headers) {
        Ok(t) => t,
        Err(err) => return ApiError::internal(&err).into_response(),
    };
    with_form_cookie(status, page(&token, error.as_deref()), &token, fresh, peer)
}

fn page(token: &str, error: Option<&str>) -> Markup {
    bare(
        "Log in",
        html! {
            h1 { "Log in" }
            form method="post" action="/login" {
                input type="hidden" name="form_token" value=(token);
                label for="password" { "Admin password" }
                input id="password" name="password" type="password" autocomplete="current-password" required autofocus
                    aria-invalid=[error.map(|_| "true")] aria-describedby="password-error";
                (field_error("password-error", error))
                button.primary type="submit" { "Log in" }
            }
            p.hint { "Forgot it? Hold the device's reset button for 5 seconds to set a new one; apps and data stay." }
        },
    )
}
