//! The Storage page: attached disks, mount and unmount, and a format that
//! asks for the disk's serial number before erasing anything.

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::app_pages::csrf_field;
use super::sections::section;
use crate::storage::Disk;
use crate::system::format_bytes;
use crate::web::api_error::ApiError;
use crate::web::session::PageSession;
use crate::web::state::AppState;

/// `/storage`.
pub async fn storage(State(state): State<AppState>, session: PageSession) -> Response {
    storage_page(&state, &session, None).await
}

/// What a form did: a success to say, or an error.
enum Outcome {
    Done(String),
    Failed(String),
}

async fn storage_page(
    state: &AppState,
    session: &PageSession,
    outcome: Option<Outcome>,
) -> Response {
    let disks = state.storage.disks().await;
    let body = html! {
        @match &outcome {
            Some(Outcome::Done(text)) => { p.notice role="status" { (text) } }
            Some(Outcome::Failed(text)) => { p.form-error role="alert" { (text) } }
            None => {}
        }
        @match &disks {
            Ok(disks) if disks.is_empty() => {
                p.empty { "No disk is attached. Plug in a USB disk; it shows up here." }
            }
            Ok(disks) => { @for d in disks { (disk_card(d, session)) } }
            Err(err) => { p.form-error role="alert" { "The disks cannot be read: " (err) } }
        }
    };
    section(state, session, "/storage", "Storage", body).await
}

fn disk_card(d: &Disk, session: &PageSession) -> Markup {
    let mounted = d.volumes.iter().any(|v| v.mounted_at.is_some());
    html! {
        section.disk id=(format!("disk-{}", d.name)) {
            h2 { (d.model.as_deref().unwrap_or("Disk")) " " small { (format_bytes(d.size_bytes)) } }
            p.facts {
                (d.path)
                " · serial " (d.serial.as_deref().unwrap_or("none reported"))
                @if d.removable { " · removable" }
            }
            @if d.volumes.is_empty() { p.empty { "No filesystem on this disk." } }
            ul.volumes {
                @for v in &d.volumes {
                    li {
                        strong { (v.label.as_deref().unwrap_or(&v.name)) }
                        " " (v.filesystem.as_deref().unwrap_or("no filesystem"))
                        " · " (format_bytes(v.size_bytes))
                        @if let Some(at) = &v.mounted_at {
                            " · mounted at " code { (at) }
                            @if let Some(free) = v.free_bytes { " · " (format_bytes(free)) " free" }
                        }
                        @if let Some(uuid) = &v.uuid {
                            form.inline method="post" action="/storage/action" {
                                (csrf_field(session))
                                input type="hidden" name="uuid" value=(uuid);
                                @if v.mounted_at.is_some() {
                                    button name="action" value="unmount" { "Unmount" }
                                } @else {
                                    button name="action" value="mount" { "Mount" }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(serial) = &d.serial {
                @if !mounted {
                    details.danger {
                        summary { "Erase and format…" }
                        form method="post" action="/storage/format" {
                            (csrf_field(session))
                            input type="hidden" name="disk" value=(d.name);
                            p { "Everything on " (d.path) " is lost. It gets one ext4 filesystem." }
                            label { "Label " input name="label" required maxlength="16" pattern="[A-Za-z0-9_-]{1,16}" value="Data"; }
                            label { "To confirm, type the disk's serial number, " code { (serial) } " "
                                input name="serial" required autocomplete="off"; }
                            button.danger { "Erase this disk" }
                        }
                    }
                }
            }
        }
    }
}

/// The mount and unmount buttons.
#[derive(Debug, Deserialize)]
pub struct DiskActionForm {
    csrf_token: String,
    uuid: String,
    action: String,
}

/// `POST /storage/action`.
pub async fn storage_action_submit(
    State(state): State<AppState>,
    session: PageSession,
    Form(form): Form<DiskActionForm>,
) -> Response {
    if !session.0.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the form is stale; reload the page and try again").into_response();
    }
    let outcome = match form.action.as_str() {
        "mount" => match state.storage.mount(&form.uuid).await {
            Ok(at) => Outcome::Done(format!("Mounted at {}.", at.display())),
            Err(err) => Outcome::Failed(err.to_string()),
        },
        "unmount" => match state.storage.unmount(&form.uuid, &[]).await {
            Ok(()) => Outcome::Done("Unmounted. The disk can be unplugged.".into()),
            Err(err) => Outcome::Failed(err.to_string()),
        },
        other => Outcome::Failed(format!("unknown action {other:?}")),
    };
    storage_page(&state, &session, Some(outcome)).await
}

/// The format form.
#[derive(Debug, Deserialize)]
pub struct FormatForm {
    csrf_token: String,
    disk: String,
    serial: String,
    label: String,
}

/// `POST /storage/format`.
pub async fn storage_format_submit(
    State(state): State<AppState>,
    session: PageSession,
    Form(form): Form<FormatForm>,
) -> Response {
    if !session.0.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the form is stale; reload the page and try again").into_response();
    }
    let outcome = match state
        .storage
        .format(&form.disk, &form.serial, &form.label)
        .await
    {
        Ok(at) => Outcome::Done(format!("Formatted and mounted at {}.", at.display())),
        Err(err) => Outcome::Failed(err.to_string()),
    };
    storage_page(&state, &session, Some(outcome)).await
}
