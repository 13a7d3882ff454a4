//! The Backups page: where backups go and when, the recovery key shown
//! once, the latest runs with their progress, the snapshots with restore
//! buttons; and the target fields the setup wizard's restore shares.

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::app_pages::csrf_field;
use super::sections::section;
use crate::backup::{
    BackupStatus, ConfigRequest, Retention, RunReport, Schedule, SnapshotInfo, Target,
};
use crate::system::{format_bytes, format_duration};
use crate::web::api_error::ApiError;
use crate::web::session::PageSession;
use crate::web::state::AppState;

/// The target's fields, as one form posts them (only the chosen kind's
/// fields are read).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TargetForm {
    kind: String,
    folder: String,
    url: String,
    sftp_host: String,
    sftp_port: String,
    sftp_user: String,
    sftp_path: String,
    remote: String,
    rclone_config: String,
}

impl TargetForm {
    pub fn target(&self) -> Result<Target, String> {
        Ok(match self.kind.as_str() {
            "folder" => Target::Folder {
                path: self.folder.trim().into(),
            },
            "rest" => Target::Rest {
                url: self.url.trim().into(),
            },
            "sftp" => Target::Sftp {
                host: self.sftp_host.trim().into(),
                port: match self.sftp_port.trim() {
                    "" => 22,
                    p => p
                        .parse()
                        .map_err(|_| "The SFTP port must be a number such as 22.".to_owned())?,
                },
                user: self.sftp_user.trim().into(),
                path: self.sftp_path.trim().into(),
            },
            "rclone" => Target::Rclone {
                remote: self.remote.trim().into(),
                config: self.rclone_config.clone(),
            },
            _ => return Err("Choose where the backups go.".into()),
        })
    }
}

/// The target's fields, grouped by kind; `ssh_key` is the line an SFTP
/// server must accept.
pub fn target_fields(current: Option<&Target>, ssh_key: Option<&str>) -> Markup {
    let kind = match current {
        Some(Target::Rest { .. }) => "rest",
        Some(Target::Sftp { .. }) => "sftp",
        Some(Target::Rclone { .. } | Target::S3 { .. }) => "rclone",
        _ => "folder",
    };
    let folder = match current {
        Some(Target::Folder { path }) => path.as_str(),
        _ => "",
    };
    html! {
        fieldset.target {
            legend { "Where" }
            label { input type="radio" name="kind" value="folder" checked[kind == "folder"]; " A folder on an attached disk" }
            label { "Folder " input name="folder" value=(folder) placeholder="/data/disks/Backup/ddaemon"; }
            label { input type="radio" name="kind" value="rest" checked[kind == "rest"]; " A restic REST server" }
            label { "URL " input name="url" placeholder="http://user:password@nas.local:8000/ddaemon"; }
            label { input type="radio" name="kind" value="sftp" checked[kind == "sftp"]; " An SFTP server" }
            label { "Host " input name="sftp_host" placeholder="nas.local"; }
            label { "Port " input name="sftp_port" inputmode="numeric" placeholder="22"; }
            label { "User " input name="sftp_user"; }
            label { "Folder " input name="sftp_path" placeholder="backups/ddaemon"; }
            @if let Some(key) = ssh_key {
                p.hint { "Add this line to the user's ~/.ssh/authorized_keys on the server:" }
                pre.key { (key) }
            } @else {
                p.hint { "The device makes its own SSH key when you save; this page then shows the line to add to the server's authorized_keys." }
            }
            label { input type="radio" name="kind" value="rclone" checked[kind == "rclone"]; " An rclone remote (S3, Backblaze, Google Drive…)" }
            label { "Remote " input name="remote" placeholder="mybucket:ddaemon"; }
            label { "Its section of rclone.conf " textarea name="rclone_config" rows="4" placeholder="[mybucket]\ntype = s3\n…" {} }
        }
    }
}

/// `/backups`.
pub async fn backups(State(state): State<AppState>, session: PageSession) -> Response {
    backups_page(&state, &session, None).await
}

/// What a form did.
enum Outcome {
    Done(String),
    /// A new repository: the recovery key, shown this once.
    Key(String),
    Failed(String),
}

async fn backups_page(
    state: &AppState,
    session: &PageSession,
    outcome: Option<Outcome>,
) -> Response {
    let status = match state.backups.status().await {
        Ok(s) => s,
        Err(err) => return ApiError::internal(&err).into_response(),
    };
    let snapshots = if status.configured && status.job.is_none() {
        Some(state.backups.snapshots().await.map_err(|e| e.to_string()))
    } else {
        None
    };
    let timezone = state
        .db
        .device_settings()
        .await
        .ok()
        .and_then(|s| s.timezone);
    let when = |unix: i64| local_time(unix, timezone.as_deref());
    let body = html! {
        @if status.job.is_some() {
            // Progress without JavaScript: the page reloads itself.
            (PreEscaped(r#"<meta http-equiv="refresh" content="3">"#))
        }
        @match &outcome {
            Some(Outcome::Done(text)) => { p.notice role="status" { (text) } }
            Some(Outcome::Key(key)) => {
                section.notice.recovery-key role="alert" {
                    h2 { "Your recovery key" }
                    p.key { code { (key) } }
                    p { "Write it down or print this page, and keep it away from this device. "
                        "Without it nobody, not even you, can open these backups after a disk failure "
                        "or on a new device. It is shown only this once." }
                }
            }
            Some(Outcome::Failed(text)) => { p.form-error role="alert" { (text) } }
            None => {}
        }
        (summary(&status, &when, session))
        @if let Some(snapshots) = &snapshots { (snapshot_list(snapshots, &when, session)) }
        section #backup-settings {
            h2 { @if status.configured { "Change where and when" } @else { "Set up backups" } }
            form method="post" action="/backups" {
                (csrf_field(session))
                (target_fields(status.target.as_ref(), status.ssh_public_key.as_deref()))
                fieldset {
                    legend { "When" }
                    @let schedule = status.schedule.clone().unwrap_or_default();
                    label { input type="checkbox" name="scheduled" value="on" checked[schedule.enabled]; " Every day at " }
                    input name="time" value=(schedule.time) pattern="[0-2][0-9]:[0-5][0-9]" size="5";
                }
                fieldset {
                    legend { "Keep" }
                    @let keep = status.retention.unwrap_or_default();
                    label { "the latest " input name="last" type="number" min="0" value=(keep.last) size="3"; }
                    label { " daily " input name="daily" type="number" min="0" value=(keep.daily) size="3"; }
                    label { " weekly " input name="weekly" type="number" min="0" value=(keep.weekly) size="3"; }
                    label { " monthly " input name="monthly" type="number" min="0" value=(keep.monthly) size="3"; }
                }
                label { "Recovery key of backups already there (leave empty to start new ones) "
                    input name="recovery_key" autocomplete="off"; }
                button.primary name="action" value="configure" { "Save" }
            }
        }
    };
    section(state, session, "/backups", "Backups", body).await
}

fn local_time(unix: i64, tz: Option<&str>) -> String {
    use rustic_core::jiff::{Timestamp, tz::TimeZone};
    let tz = tz
        .and_then(|n| TimeZone::get(n).ok())
        .unwrap_or_else(TimeZone::system);
    Timestamp::from_second(unix)
        .map(|t| t.to_zoned(tz).strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn summary(status: &BackupStatus, when: &dyn Fn(i64) -> String, session: &PageSession) -> Markup {
    html! {
        @if let Some(target) = &status.target_description {
            p { "Backups go to " strong { (target) } "."
                @if let Some(next) = status.next_run { " Next: " (when(next)) "." } }
            @if let Some(job) = &status.job {
                p.notice role="status" {
                    (job.doing)
                    @if job.total > 0 { ": " (format_bytes(job.done)) " of " (format_bytes(job.total)) }
                    "…"
                }
            } @else {
                form.inline method="post" action="/backups" {
                    (csrf_field(session))
                    button name="action" value="run" { "Back up now" }
                    button name="action" value="check" { "Check the backups" }
                }
            }
        } @else {
            p.empty { "No backup is set up yet. Choose a place below; the first backup can run at once." }
        }
        @if !status.runs.is_empty() {
            table.runs {
                thead { tr { th { "Run" } th { "Started" } th { "Result" } th { "Took" } th { "Added" } th { "Apps paused" } } }
                tbody { @for run in &status.runs { (run_row(run, when)) } }
            }
        }
    }
}

fn run_row(run: &RunReport, when: &dyn Fn(i64) -> String) -> Markup {
    html! {
        tr {
            td { (run.kind) }
            td { (when(run.started_at)) }
            td {
                @match run.ok {
                    Some(true) => "done",
                    Some(false) => { span.form-error { "failed: " (run.error.as_deref().unwrap_or("")) } },
                    None => "running",
                }
            }
            td { (format_duration(run.seconds.round() as u64)) }
            td { (format_bytes(run.bytes_added)) }
            td {
                @for p in &run.paused { (p.app) " " (format!("{:.1}", p.seconds)) " s " }
            }
        }
    }
}

fn snapshot_list(
    snapshots: &Result<Vec<SnapshotInfo>, String>,
    when: &dyn Fn(i64) -> String,
    session: &PageSession,
) -> Markup {
    html! {
        section #snapshots {
            h2 { "Snapshots" }
            @match snapshots {
                Err(err) => { p.form-error role="alert" { "The backups cannot be read: " (err) } }
                Ok(list) if list.is_empty() => { p.empty { "No backup has run yet." } }
                Ok(list) => {
                    ul.snapshots {
                        @for s in list.iter().rev() {
                            li {
                                code { (&s.id[..8.min(s.id.len())]) } " " (when(s.unix)) " · "
                                @match &s.app {
                                    Some(app) => { "app " strong { (app) } }
                                    None => "the device's state",
                                }
                                " · " (format_bytes(s.total_bytes))
                                form.inline method="post" action="/backups" {
                                    (csrf_field(session))
                                    input type="hidden" name="snapshot" value=(s.id);
                                    @match &s.app {
                                        Some(app) => {
                                            input type="hidden" name="app" value=(app);
                                            button name="action" value="restore" { "Restore " (app) " to this" }
                                        }
                                        None => {
                                            button.danger name="action" value="restore" { "Restore the whole device to this" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Everything the page's forms post.
#[derive(Debug, Deserialize)]
pub struct BackupForm {
    csrf_token: String,
    action: String,
    #[serde(flatten)]
    target: TargetForm,
    scheduled: Option<String>,
    time: Option<String>,
    // Strings: a flattened form reads every value as text.
    last: Option<String>,
    daily: Option<String>,
    weekly: Option<String>,
    monthly: Option<String>,
    recovery_key: Option<String>,
    snapshot: Option<String>,
    app: Option<String>,
}

/// `POST /backups`.
pub async fn backups_submit(
    State(state): State<AppState>,
    session: PageSession,
    Form(form): Form<BackupForm>,
) -> Response {
    if !session.0.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the form is stale; reload the page and try again").into_response();
    }
    let fail = |e: crate::backup::BackupError| Outcome::Failed(e.to_string());
    let outcome = match form.action.as_str() {
        "configure" => match form.target.target() {
            Err(message) => Outcome::Failed(message),
            Ok(target) => {
                let keep = Retention::default();
                let count = |v: Option<String>, default: u32| {
                    v.and_then(|v| v.trim().parse().ok()).unwrap_or(default)
                };
                let request = ConfigRequest {
                    target,
                    schedule: Schedule {
                        enabled: form.scheduled.is_some(),
                        time: form.time.unwrap_or_else(|| Schedule::default().time),
                    },
                    retention: Retention {
                        last: count(form.last, keep.last),
                        daily: count(form.daily, keep.daily),
                        weekly: count(form.weekly, keep.weekly),
                        monthly: count(form.monthly, keep.monthly),
                    },
                    recovery_key: form.recovery_key.filter(|k| !k.trim().is_empty()),
                };
                match state.backups.configure(request).await {
                    Ok(done) => match done.recovery_key {
                        Some(key) => Outcome::Key(key),
                        None => Outcome::Done("Saved.".into()),
                    },
                    Err(err) => fail(err),
                }
            }
        },
        "run" => state
            .backups
            .start_backup()
            .await
            .map_or_else(fail, |()| Outcome::Done("The backup has started.".into())),
        "check" => state
            .backups
            .start_check()
            .await
            .map_or_else(fail, |()| Outcome::Done("The check has started.".into())),
        "restore" => {
            let snapshot = form.snapshot.unwrap_or_default();
            let started = match &form.app {
                Some(app) => state.backups.start_restore_app(app, &snapshot).await,
                None => state.backups.start_restore_device(Some(snapshot)).await,
            };
            started.map_or_else(fail, |()| {
                Outcome::Done(match form.app {
                    Some(app) => format!("Restoring {app}; it is stopped meanwhile."),
                    None => {
                        "Restoring the device; it restarts when done, then log in again.".into()
                    }
                })
            })
        }
        other => Outcome::Failed(format!("unknown action {other:?}")),
    };
    backups_page(&state, &session, Some(outcome)).await
}
