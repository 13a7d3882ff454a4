//! The System page's update section: the running version, both slots, a
//! rollback if one happened, the upload form and "switch back".

use axum::extract::{Multipart, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::app_pages::csrf_field;
use super::sections::{section, system_page};
use crate::system::JobState;
use crate::system::PowerAction;
use crate::system::format_bytes;
use crate::web::api::request_power;
use crate::web::api_error::ApiError;
use crate::web::api_update::{install_from_url, install_stream};
use crate::web::session::PageSession;
use crate::web::state::AppState;
use ddaemon_recovery::slots::SlotState;

/// The section on the System page.
pub fn update_section(state: &AppState, session: &PageSession) -> Markup {
    let status = state.updates.status();
    html! {
        h2 id="update" { "System update" }
        dl.facts {
            dt { "Running" } dd { "version " (status.running_version) }
            @for slot in &status.slots {
                dt { "Slot " (slot.slot.to_uppercase()) }
                dd {
                    @match (&slot.version, slot.state) {
                        (None, _) => { "empty" }
                        (Some(v), SlotState::Good) => { "version " (v) }
                        (Some(v), SlotState::Trying) if slot.running => { "version " (v) ", on trial: kept once the device has started properly" }
                        (Some(v), SlotState::Trying) => { "version " (v) ", starts at the next restart (once, on trial)" }
                        (Some(v), _) => { "version " (v) ", did not start properly" }
                    }
                    @if slot.running { " (running)" }
                }
            }
        }
        @if let Some(version) = &status.rolled_back {
            p.form-error role="alert" {
                "The update to version " (version) " did not start properly, so the device went back to version "
                (status.running_version) " by itself. Nothing was lost."
            }
        }
        @if status.job.state == JobState::Installing {
            p { "Installing version " (status.job.version.as_deref().unwrap_or("…")) ": "
                (format_bytes(status.job.written_bytes)) " of " (format_bytes(status.job.total_bytes)) " written."
                meter min="0" max=(status.job.total_bytes) value=(status.job.written_bytes) {} }
        }
        @if status.available {
            p { "Choose an update file (." (ddaemon_recovery::bundle::EXTENSION) "). It is checked, written beside the running system, and the device restarts into it; "
                "if the new system does not start properly, the device comes back to this one by itself." }
            form method="post" action="/system/update" enctype="multipart/form-data" {
                (csrf_field(session))
                input type="file" name="bundle" required accept=(format!(".{}", ddaemon_recovery::bundle::EXTENSION));
                button { "Install and restart" }
            }
            p { "Or give its address; the device downloads it itself:" }
            form method="post" action="/system/update-from-url" {
                (csrf_field(session))
                label { "Address " input type="url" name="url" required placeholder="https://…/ddaemon-….ddaemon-update"; }
                button { "Download, install and restart" }
            }
            @if let Some(slot) = &status.switch_back_to {
                @let version = status.slots.iter().find(|s| &s.slot == slot).and_then(|s| s.version.clone()).unwrap_or_default();
                form method="post" action="/system/switch-back" {
                    (csrf_field(session))
                    button { "Switch back to version " (version) }
                }
            }
        } @else {
            p.empty { "Updates are not available here: " (status.unavailable_reason.as_deref().unwrap_or("unknown")) }
        }
    }
}

/// `POST /system/update`: the upload form (multipart: csrf_token, then bundle).
pub async fn update_submit(
    State(state): State<AppState>,
    session: PageSession,
    mut form: Multipart,
) -> Response {
    let mut csrf = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => {
                return system_page(
                    &state,
                    &session,
                    Some(format!("The upload broke off ({err}); try again.")),
                )
                .await;
            }
        };
        match field.name() {
            Some("csrf_token") => csrf = field.text().await.ok(),
            Some("bundle") => {
                if !session.0.csrf_ok(csrf.as_deref()) {
                    return ApiError::csrf("the form is stale; reload the page and try again")
                        .into_response();
                }
                let installed = install_stream(&state.updates, field, None).await;
                return installed_or_why(&state, &session, installed).await;
            }
            _ => {}
        }
    }
    system_page(
        &state,
        &session,
        Some("Choose an update file first.".into()),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct FromUrlForm {
    csrf_token: String,
    url: String,
}

/// `POST /system/update-from-url`.
pub async fn update_from_url_submit(
    State(state): State<AppState>,
    session: PageSession,
    axum::Form(form): axum::Form<FromUrlForm>,
) -> Response {
    if !session.0.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the form is stale; reload the page and try again").into_response();
    }
    let installed = install_from_url(&state.updates, &form.url).await;
    installed_or_why(&state, &session, installed).await
}

/// After an installation: the restart into the new version, or the System
/// page saying why not.
async fn installed_or_why(
    state: &AppState,
    session: &PageSession,
    installed: Result<String, ApiError>,
) -> Response {
    match installed {
        Ok(version) => {
            restarting(state, session, &format!("Version {version} is installed.")).await
        }
        Err(err) => system_page(state, session, Some(err.message())).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct SwitchForm {
    csrf_token: String,
}

/// `POST /system/switch-back`.
pub async fn switch_back_submit(
    State(state): State<AppState>,
    session: PageSession,
    axum::Form(form): axum::Form<SwitchForm>,
) -> Response {
    if !session.0.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the form is stale; reload the page and try again").into_response();
    }
    match state.updates.switch_back() {
        Ok(slot) => {
            restarting(
                &state,
                &session,
                &format!("Slot {} starts next.", slot.to_uppercase()),
            )
            .await
        }
        Err(err) => system_page(&state, &session, Some(err.to_string())).await,
    }
}

async fn restarting(state: &AppState, session: &PageSession, done: &str) -> Response {
    if let Err(err) = request_power(state, PowerAction::Restart).await {
        return system_page(state, session, Some(err.message())).await;
    }
    let body = html! {
        p { (done) " The device is restarting; this page answers again in a minute or two: "
            a href="/system#update" { "reload it" } " then." }
    };
    section(state, session, "/system", "System", body).await
}
