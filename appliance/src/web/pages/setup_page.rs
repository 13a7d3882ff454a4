//! The first-boot wizard: device name, admin password, time zone; or,
//! before anything else, a restore of the whole device from a backup.

use axum::Form;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::backups_page::{TargetForm, target_fields};
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
    /// Why the restore form was refused.
    restore_error: Option<&'a str>,
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
        restore_error: None,
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
            restore_error: None,
        };
        return render(&state, &headers, peer, StatusCode::BAD_REQUEST, &shown);
    }
    let mut shown = Shown {
        device_name: &form.device_name,
        timezone: &form.timezone,
        error_field: None,
        error: None,
        restore_error: None,
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
            details.restore open[shown.restore_error.is_some()] {
                summary { "Or restore this device from a backup" }
                p { "Moving from another ddaemon, or after a reset: the apps, their data and the settings come back as they were at the last backup; then log in with that device's password." }
                @if let Some(message) = shown.restore_error {
                    p.form-error role="alert" { (message) }
                }
                form method="post" action="/setup/restore" {
                    input type="hidden" name="form_token" value=(token);
                    (target_fields(None, state.backups.ssh_public_key().ok().as_deref()))
                    label for="recovery_key" { "Recovery key" }
                    input id="recovery_key" name="recovery_key" type="text" autocomplete="off" spellcheck="false" required;
                    // No type attribute: the wizard's own button stays the
                    // page's one `button[type=submit]`.
                    button.restore { "Restore" }
                }
            }
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

/// What the wizard's restore form posts.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RestoreForm {
    form_token: String,
    recovery_key: String,
    #[serde(flatten)]
    target: TargetForm,
}

/// `POST /setup/restore`: starts restoring the whole device.
pub async fn restore_submit(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    form: Result<Form<RestoreForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if state.setup_complete() {
        return Redirect::to("/login").into_response();
    }
    let refused = |message: &str, status| {
        let shown = Shown {
            device_name: DEFAULT_DEVICE_NAME,
            timezone: "UTC",
            error_field: None,
            error: None,
            restore_error: Some(message),
        };
        render(&state, &headers, peer, status, &shown)
    };
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return refused(&unreadable_form(&rejection), StatusCode::BAD_REQUEST),
    };
    if !form_token_ok(&headers, &form.form_token) {
        return refused(FORM_COOKIE_MESSAGE, StatusCode::FORBIDDEN);
    }
    let target = match form.target.target() {
        Ok(t) => t,
        Err(message) => return refused(&message, StatusCode::BAD_REQUEST),
    };
    match state
        .backups
        .start_restore_new_device(target, form.recovery_key)
        .await
    {
        Ok(()) => Redirect::to("/setup/restore").into_response(),
        Err(err) => refused(&err.to_string(), StatusCode::BAD_REQUEST),
    }
}

/// `GET /setup/restore`: how the restore goes; the page reloads itself
/// until the device has restarted with what it restored.
pub async fn restore_progress(State(state): State<AppState>) -> Response {
    if state.setup_complete() {
        return Redirect::to("/login").into_response();
    }
    let status = state.backups.status().await.ok();
    let job = status.as_ref().and_then(|s| s.job.clone());
    let failed = status
        .as_ref()
        .and_then(|s| s.runs.first())
        .filter(|r| r.kind == "restore" && r.ok == Some(false))
        .and_then(|r| r.error.clone());
    let body = html! {
        h1 { "Restoring your device" }
        @if let Some(error) = &failed {
            p.form-error role="alert" { "The restore failed: " (error) }
            p { a href="/setup" { "Back to setup" } }
        } @else {
            (maud::PreEscaped(r#"<meta http-equiv="refresh" content="3">"#))
            @match &job {
                Some(job) => p role="status" {
                    (job.doing)
                    @if job.total > 0 { ": " (crate::system::format_bytes(job.done)) " of " (crate::system::format_bytes(job.total)) }
                    "…"
                },
                None => p role="status" { "Starting again with what was restored…" },
            }
            p.hint { "This page moves on by itself. Then log in with the restored device's password." }
        }
    };
    (
        StatusCode::OK,
        axum::response::Html(bare("Restoring", body).into_string()),
    )
        .into_response()
}
