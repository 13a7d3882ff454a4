//! The first-boot wizard: device name, admin password, time zone.

use axum::Form;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{bare, field_error};
use super::{
    FORM_COOKIE_MESSAGE, form_token, form_token_ok, into_dashboard, unreadable_form,
    with_form_cookie,
};
use crate::auth::MIN_PASSWORD_CHARS;
use crate::setup::{ADMIN_USER, SetupError, SetupRequest, run_setup};
use crate::system::DEFAULT_DEVICE_NAME;
use crate::web::api_error::ApiError;
use crate::web::peer::Peer;
use crate::web::state::AppState;

/// What the wizard posts. Every field defaults, so a tampered form gets the
/// page back with messages rather than a bare error.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SetupForm {
    device_name: String,
    password: String,
    password_confirm: String,
    timezone: String,
    form_token: String,
}

struct Shown<'a> {
    device_name: &'a str,
    timezone: &'a str,
    error_field: Option<&'a str>,
    error: Option<&'a str>,
}

/// `GET /setup`.
pub async fn setup_form(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    if state.setup_complete() {
        return Redirect::to("/login").into_response();
    }
    let shown = Shown {
        device_name: DEFAULT_DEVICE_NAME,
        timezone: "UTC",
        error_field: None,
        error: None,
    };
    render(&state, &headers, peer, StatusCode::OK, &shown)
}

/// `POST /setup`.
pub async fn setup_submit(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    form: Result<Form<SetupForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if state.setup_complete() {
        return Redirect::to("/login").into_response();
    }
    let (form, unreadable) = match form {
        Ok(Form(form)) => (form, None),
        Err(rejection) => (SetupForm::default(), Some(unreadable_form(&rejection))),
    };
    if let Some(message) = &unreadable {
        let shown = Shown {
            device_name: DEFAULT_DEVICE_NAME,
            timezone: "UTC",
            error_field: None,
            error: Some(message),
        };
        return render(&state, &headers, peer, StatusCode::BAD_REQUEST, &shown);
    }
    let mut shown = Shown {
        device_name: &form.device_name,
        timezone: &form.timezone,
        error_field: None,
        error: None,
    };
    if !form_token_ok(&headers, &form.form_token) {
        shown.error = Some(FORM_COOKIE_MESSAGE);
        return render(&state, &headers, peer, StatusCode::FORBIDDEN, &shown);
    }
    let request = SetupRequest {
        device_name: form.device_name.clone(),
        password: form.password.clone(),
        password_confirm: form.password_confirm.clone(),
        timezone: form.timezone.clone(),
    };
    let device_name = match run_setup(&state.db, &state.hasher, &state.zones, request).await {
        Ok(name) => name,
        Err(SetupError::Field(err)) => {
            let message = err.message.clone();
            shown.error_field = Some(err.field);
            shown.error = Some(&message);
            return render(&state, &headers, peer, StatusCode::BAD_REQUEST, &shown);
        }
        Err(SetupError::AlreadySetUp) => return Redirect::to("/login").into_response(),
        Err(SetupError::Internal(cause)) => return ApiError::internal(&cause).into_response(),
    };
    state.mark_setup_complete(&device_name);
    match state.logins.open_session_for(ADMIN_USER, peer.ip()).await {
        Ok(opened) => into_dashboard(&opened, peer),
        // Setup is saved; the owner can log in by hand.
        Err(_) => Redirect::to("/login").into_response(),
    }
}

fn render(
    state: &AppState,
    headers: &HeaderMap,
    peer: Peer,
    status: StatusCode,
    shown: &Shown<'_>,
) -> Response {
    let (token, fresh) = match form_token(headers) {
        Ok(t) => t,
        Err(err) => return ApiError::internal(&err).into_response(),
    };
    with_form_cookie(status, page(state, shown, &token), &token, fresh, peer)
}

fn page(state: &AppState, shown: &Shown<'_>, token: &str) -> Markup {
    let err = |field: &str| {
        (shown.error_field == Some(field))
            .then_some(shown.error)
            .flatten()
    };
    let general = if shown.error_field.is_none() {
        shown.error
    } else {
        None
    };
    bare(
        "Set up your device",
        html! {
            h1 { "Set up your device" }
            p.lead { "Three things and you are done. Nothing leaves this device." }
            @if let Some(message) = general {
                p.form-error role="alert" { (message) }
            }
            form method="post" action="/setup" novalidate {
                input type="hidden" name="form_token" value=(token);
                fieldset {
                    legend { "1. Name" }
                    label for="device_name" { "Device name" }
                    input id="device_name" name="device_name" type="text" value=(shown.device_name)
                        autocomplete="off" autocapitalize="none" spellcheck="false" required
                        aria-invalid=[err("device_name").map(|_| "true")]
                        aria-describedby="device_name-hint device_name-error";
                    p.hint id="device_name-hint" { "Letters, digits and hyphens. You will open the device at " b { "http://NAME.local" } "." }
                    (field_error("device_name-error", err("device_name")))
                }
                fieldset {
                    legend { "2. Admin password" }
                    label for="password" { "Password" }
                    input id="password" name="password" type="password" autocomplete="new-password" required
                        minlength=(MIN_PASSWORD_CHARS)
                        aria-invalid=[err("password").map(|_| "true")]
                        aria-describedby="password-hint password-error";
                    p.hint id="password-hint" { "At least " (MIN_PASSWORD_CHARS) " characters. There is no default password; only the reset button on the device can clear this one." }
                    (field_error("password-error", err("password")))
                    label for="password_confirm" { "Password again" }
                    input id="password_confirm" name="password_confirm" type="password" autocomplete="new-password" required
                        aria-invalid=[err("password_confirm").map(|_| "true")]
                        aria-describedby="password_confirm-error";
                    (field_error("password_confirm-error", err("password_confirm")))
                }
                fieldset {
                    legend { "3. Time zone" }
                    label for="timezone" { "Time zone" }
                    select id="timezone" name="timezone" aria-describedby="timezone-error"
                        aria-invalid=[err("timezone").map(|_| "true")] {
                        @for zone in state.zones.offered() {
                            option value=(zone) selected[zone == shown.timezone] { (zone) }
                        }
                    }
                    (field_error("timezone-error", err("timezone")))
                }
                button.primary type="submit" { "Finish setup" }
            }
        },
    )
}
