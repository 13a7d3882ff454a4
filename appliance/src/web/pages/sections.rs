//! The dashboard's sections: System shows the device's state. (Apps,
//! Storage, Backups and Domain have their own modules.)

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::layout::{bare, dashboard};
use crate::system::{format_bytes, format_duration};
use serde::Deserialize;

use super::app_pages::csrf_field;
use crate::system::PowerAction;
use crate::web::api::{request_power, system_info};
use crate::web::api_error::ApiError;
use crate::web::session::PageSession;
use crate::web::state::AppState;

pub(super) async fn section(
    state: &AppState,
    session: &PageSession,
    path: &str,
    title: &str,
    body: Markup,
) -> Response {
    let device_name = match state.db.device_settings().await {
        Ok(settings) => settings.device_name.unwrap_or_default(),
        Err(err) => return crate::web::api_error::ApiError::internal(&err).into_response(),
    };
    let csrf = session.0.csrf_token.as_deref().unwrap_or_default();
    let body = html! { (backup_alert(state).await) (super::domain_page::public_alert(state).await) (body) };
    Html(dashboard(title, path, &device_name, csrf, body).into_string()).into_response()
}

/// A failed backup or check, shown atop every page of the dashboard until
/// one succeeds.
pub(super) async fn backup_alert(state: &AppState) -> Markup {
    let failed = state
        .backups
        .runs(1)
        .await
        .ok()
        .and_then(|runs| runs.into_iter().next())
        .filter(|run| run.ok == Some(false) && run.kind != "restore");
    html! {
        @if let Some(run) = failed {
            p.form-error.backup-failed role="alert" {
                "The last " (run.kind) " failed: " (run.error.unwrap_or_default()) ". "
                a href="/backups" { "See Backups" }
            }
        }
    }
}

/// `/system`.
pub async fn system(State(state): State<AppState>, session: PageSession) -> Response {
    system_page(&state, &session, None).await
}

/// The System page's power form.
#[derive(Debug, Deserialize)]
pub struct PowerForm {
    csrf_token: String,
    action: String,
    confirm: Option<String>,
}

/// `POST /system/power`: restart or shut down, from the System page.
pub async fn power_submit(
    State(state): State<AppState>,
    session: PageSession,
    Form(form): Form<PowerForm>,
) -> Response {
    if !session.0.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the form is stale; reload the page and try again").into_response();
    }
    let (action, going) = match form.action.as_str() {
        "restart" => (PowerAction::Restart, "restarting"),
        "power-off" if form.confirm.is_some() => (PowerAction::PowerOff, "shutting down"),
        "power-off" => {
            let message = "Tick the box to confirm: once off, the device starts again only from its power button or by unplugging it.";
            return system_page(&state, &session, Some(message.to_owned())).await;
        }
        other => {
            let message =
                format!("{other:?} is not something the device can do; use the page's buttons");
            return system_page(&state, &session, Some(message)).await;
        }
    };
    if let Err(err) = request_power(&state, action).await {
        return system_page(&state, &session, Some(err.message())).await;
    }
    let body = html! {
        p { "The device is " (going) ". " @if action == PowerAction::Restart {
            "This page answers again in a minute or two; "
            a href="/system" { "reload it" } " then."
        } @else {
            "It is safe to unplug it once its lights stop blinking."
        } }
    };
    section(&state, &session, "/system", "System", body).await
}

pub(super) async fn system_page(
    state: &AppState,
    session: &PageSession,
    message: Option<String>,
) -> Response {
    let info = match system_info(state).await {
        Ok(info) => info,
        Err(err) => return err.into_response(),
    };
    let name = info.device_name.clone().unwrap_or_default();
    let body = html! {
        dl.facts {
            dt { "Device name" } dd { (name) " (" (name) ".local)" }
            dt { "Host name" } dd { (info.hostname) }
            dt { "Version" } dd { "ddaemon " (info.version) }
            dt { "Time zone" } dd { (info.timezone.as_deref().unwrap_or("UTC")) }
            dt { "Uptime" } dd { (format_duration(info.uptime_seconds)) }
            dt { "Memory" } dd {
                @if let Some(m) = &info.memory {
                    (format_bytes(m.used_bytes)) " used of " (format_bytes(m.total_bytes))
                    meter min="0" max=(m.total_bytes) value=(m.used_bytes) {}
                } @else { "unknown" }
            }
            dt { "Disk" } dd {
                @if let Some(d) = &info.disk {
                    (format_bytes(d.used_bytes)) " used of " (format_bytes(d.total_bytes)) " (" (d.path) ")"
                    meter min="0" max=(d.total_bytes) value=(d.used_bytes) {}
                } @else { "unknown" }
            }
        }
        h2 { "Secure connections (HTTPS)" }
        p {
            "The device signs its own certificates for " b { (name) ".local" } " and every app's "
            b { "NAME.local" } ". Install its certificate once on each computer and phone, then open "
            b { "https://" (name) ".local" } " without warnings. It is valid only for .local names, so it "
            "cannot vouch for any site on the internet."
        }
        p { a.button href="/ca.pem" download="ddaemon-ca.pem" { "Download the certificate" } }
        dl.facts {
            dt { "Windows" } dd { "Open the file, choose Install Certificate, Local Machine, and the store Trusted Root Certification Authorities." }
            dt { "macOS" } dd { "Open the file in Keychain Access (System keychain), then set it to Always Trust." }
            dt { "iPhone, iPad" } dd { "Open the file, install the profile in Settings, then turn it on in General, About, Certificate Trust Settings." }
            dt { "Android" } dd { "Settings, Security, Encryption and credentials, Install a certificate, CA certificate." }
            dt { "Linux" } dd { "Copy it to /usr/local/share/ca-certificates/ddaemon.crt and run update-ca-certificates; Firefox has its own list under Settings, Certificates." }
        }
        (super::update_pages::update_section(state, session))
        h2 id="power" { "Restart or shut down" }
        @if let Some(message) = &message { p.form-error role="alert" { (message) } }
        @if state.power.allowed() {
            form method="post" action="/system/power" {
                (csrf_field(session))
                button name="action" value="restart" { "Restart" }
            }
            form method="post" action="/system/power" {
                (csrf_field(session))
                label { input type="checkbox" name="confirm" value="yes"; " Shut down: apps stop, and the device starts again only from its power button or by unplugging it" }
                button name="action" value="power-off" { "Shut down" }
            }
        } @else {
            p.empty { "This supervisor does not control the machine it runs on; restart or shut down the machine itself." }
        }
    };
    section(state, session, "/system", "System", body).await
}

/// Any other path: on a fresh device, the wizard; otherwise a 404 page.
pub async fn not_found(State(state): State<AppState>) -> Response {
    if !state.setup_complete() {
        return Redirect::to("/setup").into_response();
    }
    let body = html! {
        h1 { "Not here" }
        p { "This page does not exist. " a href="/" { "Go to the dashboard" } "." }
    };
    (
        StatusCode::NOT_FOUND,
        Html(bare("Not found", body).into_string()),
    )
        .into_response()
}
