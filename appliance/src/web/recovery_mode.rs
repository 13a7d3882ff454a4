//! Recovery mode: what the device serves on port 80 instead of the
//! dashboard when the kernel command line says `ddaemon.recovery` (chosen
//! in the boot menu) or the supervisor is started with `--recovery`.
//!
//! It needs nothing of the data partition but room for a marker: no
//! database, no apps, no login (whoever can choose the boot entry has the
//! device in hand), and it answers only the home network, never a client
//! on the internet that a router's forwarded ports let in. It can install an update bundle, boot the other slot,
//! ask for a factory reset, restart normally, and hand out the logs of this
//! boot and the one before.

use std::path::PathBuf;

use axum::Router;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::api_update::install_stream;
use super::guard;
use super::pages::bare;
use crate::system::{Power, PowerAction, Updates};

/// The kernel command line word that asks for recovery mode.
pub const CMDLINE_FLAG: &str = "ddaemon.recovery";

/// Whether the kernel command line asks for recovery mode.
pub fn requested_by(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == CMDLINE_FLAG)
}

/// What recovery mode works with.
#[derive(Debug, Clone)]
pub struct RecoveryState {
    pub updates: Updates,
    pub power: Power,
    /// ddaemon-init's factory-reset marker (`DATA/ddaemon/factory-reset`).
    pub factory_reset_marker: PathBuf,
    /// Recovery mode came by itself (the supervisor could not start), not
    /// because someone with the device in hand asked for it: anyone at
    /// home can reach this page, so erasing the device takes the reset
    /// button, which recovery mode watches too.
    pub unattended: bool,
}

/// What the page and a refused factory reset say in unattended recovery.
pub const RESET_BY_BUTTON: &str = "Recovery mode started by itself, so erasing the device needs the device in hand: use the reset button as for a factory reset (on a PC, press the power button 10 times within 20 s).";

pub fn router(state: RecoveryState) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/update",
            post(update).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/switch", post(switch))
        .route("/factory-reset", post(factory_reset))
        .route("/restart", post(restart))
        .route("/logs", get(logs))
        .route("/assets/{file}", get(super::assets::serve))
        .fallback(get(page))
        .layer(axum::middleware::from_fn(guard::same_origin))
        .layer(axum::middleware::from_fn(guard::security_headers))
        // It has no login: only the home network may use it.
        .layer(axum::middleware::from_fn_with_state(
            super::peer::HomeNetworks::default(),
            super::peer::home_only,
        ))
        .with_state(state)
}

fn render(state: &RecoveryState, message: Option<&str>) -> Markup {
    let status = state.updates.status();
    let body = html! {
        h1 { "Recovery mode" }
        @if state.unattended {
            p { "The device's supervisor could not start, so the device is in recovery mode: apps are not running. The logs below say why." }
        } @else {
            p { "The device started in recovery mode: apps are not running. Choose what to do." }
        }
        @if let Some(message) = message { p.form-error role="alert" { (message) } }
        dl.facts {
            dt { "Running" } dd { "version " (status.running_version) }
            @for slot in &status.slots {
                dt { "Slot " (slot.slot.to_uppercase()) }
                dd { (slot.version.as_deref().unwrap_or("empty")) " (" (slot.state.word()) ")" @if slot.running { ", running" } }
            }
        }
        h2 { "Install an update" }
        @if status.available {
            form method="post" action="/update" enctype="multipart/form-data" {
                input type="file" name="bundle" required;
                button { "Install and restart" }
            }
        } @else {
            p.empty { (status.unavailable_reason.as_deref().unwrap_or("Updates are not available here.")) }
        }
        @if let Some(slot) = &status.switch_back_to {
            h2 { "Start the other system" }
            form method="post" action="/switch" {
                button { "Start slot " (slot.to_uppercase()) " and restart" }
            }
        }
        h2 { "Factory reset" }
        @if state.unattended {
            p { (RESET_BY_BUTTON) " Attached disks in /data/disks are kept." }
        } @else {
            form method="post" action="/factory-reset" {
                label { input type="checkbox" name="confirm" value="yes"; " Erase every app, setting and file on the device (attached disks in /data/disks are kept)" }
                button { "Factory reset and restart" }
            }
        }
        h2 { "Logs" }
        p { a.button href="/logs" download="ddaemon-logs.txt" { "Download the logs" } " of this start and the one before." }
        form method="post" action="/restart" { button { "Restart normally" } }
    };
    bare("Recovery", body)
}

async fn page(State(state): State<RecoveryState>) -> Html<String> {
    Html(render(&state, None).into_string())
}

fn answer(state: &RecoveryState, status: StatusCode, message: &str) -> Response {
    (status, Html(render(state, Some(message)).into_string())).into_response()
}

async fn restarting(state: &RecoveryState, done: &str) -> Response {
    match state.power.request(PowerAction::Restart).await {
        Ok(()) => answer(
            state,
            StatusCode::OK,
            &format!("{done} The device is restarting."),
        ),
        Err(err) => answer(
            state,
            StatusCode::CONFLICT,
            &format!("{done} It cannot restart by itself: {err}"),
        ),
    }
}

async fn update(State(state): State<RecoveryState>, mut form: Multipart) -> Response {
    loop {
        match form.next_field().await {
            Ok(Some(field)) if field.name() == Some("bundle") => {
                return match install_stream(&state.updates, field, None).await {
                    Ok(version) => {
                        restarting(&state, &format!("Version {version} is installed.")).await
                    }
                    Err(err) => answer(&state, StatusCode::BAD_REQUEST, &err.message()),
                };
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return answer(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "Choose an update file first.",
                );
            }
            Err(err) => {
                return answer(
                    &state,
                    StatusCode::BAD_REQUEST,
                    &format!("The upload broke off ({err}); try again."),
                );
            }
        }
    }
}

async fn switch(State(state): State<RecoveryState>) -> Response {
    match state.updates.switch_back() {
        Ok(slot) => {
            restarting(
                &state,
                &format!("Slot {} starts next.", slot.to_uppercase()),
            )
            .await
        }
        Err(err) => answer(&state, StatusCode::CONFLICT, &err.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct ConfirmForm {
    confirm: Option<String>,
}

async fn factory_reset(
    State(state): State<RecoveryState>,
    axum::Form(form): axum::Form<ConfirmForm>,
) -> Response {
    if state.unattended {
        return answer(&state, StatusCode::FORBIDDEN, RESET_BY_BUTTON);
    }
    if form.confirm.as_deref() != Some("yes") {
        return answer(
            &state,
            StatusCode::BAD_REQUEST,
            "Tick the box to confirm the factory reset: it erases everything but /data/disks.",
        );
    }
    if let Err(err) = crate::system::reset_button::request_factory_reset(
        &state.factory_reset_marker,
        "asked for in recovery mode",
    ) {
        return answer(
            &state,
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("The factory reset cannot be recorded: {err}"),
        );
    }
    tracing::warn!("factory reset asked for in recovery mode");
    restarting(&state, "The factory reset happens as the device starts.").await
}

async fn restart(State(state): State<RecoveryState>) -> Response {
    restarting(&state, "").await
}

/// This boot's journal and the previous one's, as text.
async fn logs() -> Response {
    let mut text = String::new();
    for (boot, title) in [("-1", "the start before"), ("0", "this start")] {
        let out = tokio::process::Command::new("journalctl")
            .args(["--no-pager", "-o", "short-iso", "-n", "20000", "-b", boot])
            .output()
            .await;
        text.push_str(&format!(
            "===== journal of {title} (journalctl -b {boot}) =====\n"
        ));
        match out {
            Ok(o) => {
                text.push_str(&String::from_utf8_lossy(&o.stdout));
                text.push_str(&String::from_utf8_lossy(&o.stderr));
            }
            Err(err) => text.push_str(&format!("journalctl could not run: {err}\n")),
        }
    }
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"ddaemon-logs.txt\"",
            ),
        ],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_word_asks_for_it() {
        assert!(requested_by(
            "root=PARTLABEL=root-a ro ddaemon.recovery quiet"
        ));
        assert!(!requested_by("root=PARTLABEL=root-a ro ddaemon.recovery=0"));
        assert!(!requested_by("quiet"));
    }
}
