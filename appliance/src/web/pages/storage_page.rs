//! The Storage page: attached disks, mount and unmount, and a format that
//! asks for the disk's serial number before erasing anything.

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::app_pages::csrf_field;
use super::sections::section;
use crate::state::Share;
use crate::storage::Disk;
use crate::storage::shares::NewShare;
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
    let shares = state.shares.list().await.unwrap_or_default();
    let folders: Vec<String> = disks
        .iter()
        .flatten()
        .flat_map(|d| &d.volumes)
        .filter_map(|v| v.mounted_at.clone())
        .collect();
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
        (shares_section(&shares, &folders, session))
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

fn shares_section(shares: &[Share], folders: &[String], session: &PageSession) -> Markup {
    html! {
        section #shares {
            h2 { "Shared folders" }
            @if shares.is_empty() { p.empty { "No folder is shared yet." } }
            ul.shares {
                @for s in shares {
                    li {
                        strong { (s.name) } " " code { (s.path) }
                        @if s.read_only { " · read-only" }
                        @if s.time_machine { " · Time Machine" }
                        @if s.nfs { " · NFS" }
                        " · " (s.users.join(", "))
                        form.inline method="post" action="/storage/shares" {
                            (csrf_field(session))
                            input type="hidden" name="name" value=(s.name);
                            button name="action" value="remove" { "Stop sharing" }
                        }
                    }
                }
            }
            @if folders.is_empty() {
                p { "Mount a disk to share its folders." }
            } @else {
                form method="post" action="/storage/shares" {
                    (csrf_field(session))
                    label { "Name " input name="name" required maxlength="32"; }
                    label { "Folder " input name="path" required list="disk-folders" value=(folders[0]); }
                    datalist #disk-folders { @for f in folders { option value=(f) {} } }
                    label { input type="checkbox" name="read_only" value="on"; " Read-only" }
                    label { input type="checkbox" name="time_machine" value="on"; " Time Machine backups for Macs" }
                    label { input type="checkbox" name="nfs" value="on"; " Also over NFS (home network only)" }
                    button name="action" value="add" { "Share" }
                }
            }
        }
    }
}

/// The share forms: add or remove.
#[derive(Debug, Deserialize)]
pub struct ShareForm {
    csrf_token: String,
    action: String,
    name: String,
    path: Option<String>,
    read_only: Option<String>,
    time_machine: Option<String>,
    nfs: Option<String>,
}

/// `POST /storage/shares`.
pub async fn share_submit(
    State(state): State<AppState>,
    session: PageSession,
    Form(form): Form<ShareForm>,
) -> Response {
    if !session.0.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the form is stale; reload the page and try again").into_response();
    }
    let outcome = match form.action.as_str() {
        "add" => {
            let request = NewShare {
                name: form.name,
                path: form.path.unwrap_or_default(),
                read_only: form.read_only.is_some(),
                users: Vec::new(),
                time_machine: form.time_machine.is_some(),
                nfs: form.nfs.is_some(),
            };
            match state.shares.add(request).await {
                Ok(s) => Outcome::Done(format!("{} is shared as {}.", s.path, s.name)),
                Err(err) => Outcome::Failed(err.to_string()),
            }
        }
        "remove" => match state.shares.remove(&form.name).await {
            Ok(s) => Outcome::Done(format!("{} is no longer shared; its files stay.", s.name)),
            Err(err) => Outcome::Failed(err.to_string()),
        },
        other => Outcome::Failed(format!("unknown action {other:?}")),
    };
    storage_page(&state, &session, Some(outcome)).await
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
        "unmount" => match unmount(&state, &form.uuid).await {
            Ok(()) => Outcome::Done("Unmounted. The disk can be unplugged.".into()),
            Err(err) => Outcome::Failed(err.to_string()),
        },
        other => Outcome::Failed(format!("unknown action {other:?}")),
    };
    storage_page(&state, &session, Some(outcome)).await
}

async fn unmount(state: &AppState, uuid: &str) -> Result<(), String> {
    state
        .shares
        .unmount_disk(&state.storage, uuid)
        .await
        .map_err(|e| e.to_string())
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
