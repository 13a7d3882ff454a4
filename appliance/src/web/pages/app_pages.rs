//! The Apps section: the installed apps, the catalog grid with search, and
//! one page per app (status, Open, progress, logs, update, remove). Plain
//! forms; a page with a change under way reloads itself (`Refresh` header).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::dashboard;
use crate::apps::catalog::CatalogApp;
use crate::state::AppPhase;
use crate::system::format_bytes;
use crate::web::api_apps::{
    AppView, InstallRequest, UpdateRequest, service_logs, start_install, start_update, view,
};
use crate::web::api_error::ApiError;
use crate::web::session::PageSession;
use crate::web::state::AppState;

/// `?q=` and `?category=` on the catalog.
#[derive(Debug, Default, Deserialize)]
pub struct CatalogQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    category: String,
}

/// `?service=` on an app's page.
#[derive(Debug, Default, Deserialize)]
pub struct AppPageQuery {
    #[serde(default)]
    service: Option<String>,
}

/// A form on the app pages: install, or an action on an installed app.
#[derive(Debug, Deserialize)]
pub struct AppForm {
    csrf_token: String,
    #[serde(default)]
    id: Option<String>,
    /// start, stop, restart, update, remove.
    #[serde(default)]
    action: Option<String>,
    /// Remove: the "also delete its data" box.
    #[serde(default)]
    purge: Option<String>,
}

async fn render(
    state: &AppState,
    session: &PageSession,
    title: &str,
    body: Markup,
    status: StatusCode,
    refresh: bool,
) -> Response {
    let device_name = match state.db.device_settings().await {
        Ok(settings) => settings.device_name.unwrap_or_default(),
        Err(err) => return ApiError::internal(&err).into_response(),
    };
    let csrf = session.0.csrf_token.as_deref().unwrap_or_default();
    let body = maud::html! {
        (super::sections::backup_alert(state).await)
        (super::domain_page::public_alert(state).await)
        (body)
    };
    let mut response = (
        status,
        Html(dashboard(title, "/apps", &device_name, csrf, body).into_string()),
    )
        .into_response();
    if refresh {
        response
            .headers_mut()
            .insert(header::REFRESH, HeaderValue::from_static("2"));
    }
    response
}

fn icon(id: &str, title: &str, catalog: &[CatalogApp]) -> Markup {
    html! {
        @if catalog.iter().any(|c| c.manifest.id == id) {
            img.app-icon src=(format!("/api/v1/catalog/{id}/icon.svg")) alt="" width="48" height="48";
        } @else {
            span.app-icon.letter aria-hidden="true" { (title.chars().next().unwrap_or('?')) }
        }
    }
}

pub(super) fn csrf_field(session: &PageSession) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(session.0.csrf_token.as_deref().unwrap_or_default()); }
}

fn state_label(app: &AppView) -> String {
    match app.phase.as_str() {
        "installed" => app.state.clone(),
        phase => format!("{phase}…"),
    }
}

/// `/apps`, the home page: installed apps, then the catalog.
pub async fn apps(
    State(state): State<AppState>,
    session: PageSession,
    Query(query): Query<CatalogQuery>,
) -> Response {
    let records = match state.apps.list().await {
        Ok(r) => r,
        Err(err) => return ApiError::internal(&err).into_response(),
    };
    let installed: Vec<AppView> = records.iter().map(|r| view(&state, r)).collect();
    let by_id: HashMap<&str, &AppView> = installed.iter().map(|a| (a.id.as_str(), a)).collect();
    let needle = query.q.trim().to_lowercase();
    let shown: Vec<&CatalogApp> = state
        .catalog
        .iter()
        .filter(|c| query.category.is_empty() || c.manifest.category == query.category)
        .filter(|c| {
            needle.is_empty()
                || [&c.manifest.title, &c.manifest.description, &c.manifest.id]
                    .iter()
                    .any(|t| t.to_lowercase().contains(&needle))
        })
        .collect();
    let changing = records.iter().any(|r| r.phase != AppPhase::Installed);
    let body = html! {
        @if installed.is_empty() {
            p.empty { "No apps are installed yet. Pick one below." }
        } @else {
            ul.apps.installed {
                @for a in &installed {
                    li.app-card {
                        (icon(&a.id, &a.title, &state.catalog))
                        div {
                            a.app-title href=(format!("/apps/{}", a.id)) { (a.title) }
                            span.state data-state=(a.state) { (state_label(a)) }
                        }
                        @if a.phase == "installed" && a.state == "running" {
                            a.button href=(a.url) target="_blank" rel="noopener" { "Open" }
                        }
                    }
                }
            }
        }
        h2 id="catalog" { "Add an app" }
        form.search method="get" action="/apps" role="search" {
            label for="q" { "Search the catalog" }
            input type="search" id="q" name="q" value=(query.q) placeholder="Jellyfin, books, chat…";
            select name="category" aria-label="Category" {
                option value="" { "All categories" }
                @for c in crate::apps::manifest::CATEGORIES {
                    option value=(c) selected[query.category == c] { (c) }
                }
            }
            button type="submit" { "Search" }
        }
        @if shown.is_empty() {
            p.empty { "No app in the catalog matches." }
        }
        ul.apps.catalog {
            @for c in &shown {
                @let m = &c.manifest;
                li.app-card {
                    (icon(&m.id, &m.title, &state.catalog))
                    div {
                        a.app-title href=(format!("/apps/{}", m.id)) { (m.title) }
                        p.hint { (m.description) }
                    }
                    @if let Some(a) = by_id.get(m.id.as_str()) {
                        span.state { (state_label(a)) }
                    } @else {
                        form method="post" action="/apps/install" {
                            (csrf_field(&session))
                            input type="hidden" name="id" value=(m.id);
                            button type="submit" { "Install" }
                        }
                    }
                }
            }
        }
    };
    render(&state, &session, "Apps", body, StatusCode::OK, changing).await
}

/// `POST /apps/install`: starts an install, then shows the app's page.
pub async fn install_submit(
    State(state): State<AppState>,
    session: PageSession,
    Form(form): Form<AppForm>,
) -> Response {
    if !session.0.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the form is stale; reload the page and press Install again")
            .into_response();
    }
    let id = form.id.unwrap_or_default();
    match start_install(
        &state,
        InstallRequest {
            id: Some(id.clone()),
            manifest: None,
        },
    )
    .await
    {
        Ok(app) => Redirect::to(&format!("/apps/{}", app.id)).into_response(),
        Err(err) => app_page(&state, &session, &id, None, Some(err.message())).await,
    }
}

/// `/apps/{id}`.
pub async fn app(
    State(state): State<AppState>,
    session: PageSession,
    Path(id): Path<String>,
    Query(query): Query<AppPageQuery>,
) -> Response {
    app_page(&state, &session, &id, query.service.as_deref(), None).await
}

async fn app_page(
    state: &AppState,
    session: &PageSession,
    id: &str,
    service: Option<&str>,
    error: Option<String>,
) -> Response {
    let record = match state.apps.get(id).await {
        Ok(r) => r,
        Err(err) => return ApiError::internal(&err).into_response(),
    };
    let catalog = state.catalog.iter().find(|c| c.manifest.id == id);
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let Some(record) = record else {
        // Not installed: the catalog entry, or nothing.
        let Some(c) = catalog else {
            return super::sections::not_found(State(state.clone())).await;
        };
        let m = &c.manifest;
        let failure = error.or_else(|| state.apps.activity(id).and_then(|a| a.failure));
        let body = html! {
            div.app-head {
                (icon(&m.id, &m.title, &state.catalog))
                p.lead { (m.description) }
            }
            @if let Some(f) = &failure { p.form-error role="alert" { (f) } }
            dl.facts {
                dt { "Version" } dd { (m.version) }
                dt { "Runs" } dd { (m.services.len()) " container" @if m.services.len() != 1 { "s" } }
                @if let Some(mem) = m.min_memory_mib { dt { "Needs" } dd { (mem) " MiB of memory" } }
                @if !m.upstream.is_empty() { dt { "Project" } dd { a href=(m.upstream) rel="noopener" { (m.upstream) } } }
            }
            form method="post" action="/apps/install" {
                (csrf_field(session))
                input type="hidden" name="id" value=(m.id);
                button.primary type="submit" { "Install " (m.title) }
            }
        };
        return render(state, session, &m.title, body, status, false).await;
    };
    let a = view(state, &record);
    let m = &record.manifest;
    let changing = record.phase != AppPhase::Installed;
    let service = service.unwrap_or(&m.web.service);
    let logs = if changing {
        Vec::new()
    } else {
        service_logs(state, id, Some(service), Some(16 * 1024))
            .await
            .unwrap_or_default()
    };
    let device = state
        .db
        .device_settings()
        .await
        .ok()
        .and_then(|s| s.device_name)
        .unwrap_or_else(|| crate::system::DEFAULT_DEVICE_NAME.to_owned());
    let body = html! {
        div.app-head {
            (icon(&a.id, &a.title, &state.catalog))
            span.state data-state=(a.state) { (state_label(&a)) }
            @if !changing && a.state == "running" {
                a.button href=(a.url) target="_blank" rel="noopener" { "Open" }
            }
        }
        @if let Some(e) = error.as_ref().or(a.error.as_ref()) { p.form-error role="alert" { (e) } }
        @if changing {
            p.progress {
                (a.phase) ": " (a.detail)
                @if a.total > 0 {
                    " — " (format_bytes(a.done)) " of " (format_bytes(a.total))
                    meter min="0" max=(a.total) value=(a.done) {}
                }
            }
        }
        dl.facts {
            dt { "Address" } dd { a href=(a.url) { (a.url) } }
            dt { "Also at" } dd { (format!("http://{device}.local:{}", a.port)) }
            dt { "Version" } dd { (a.version) }
            dt { "Data" } dd { code { (state.apps.app_dir(id).display()) } }
            dt { "Services" } dd {
                @for s in &a.services {
                    a href=(format!("/apps/{id}?service={}", s.name)) { (s.name) } " " span.state data-state=(s.state) { (s.state) } " "
                }
            }
        }
        @if !changing {
            form.actions method="post" action=(format!("/apps/{id}/action")) {
                (csrf_field(session))
                @if a.running {
                    button type="submit" name="action" value="stop" { "Stop" }
                    button type="submit" name="action" value="restart" { "Restart" }
                } @else {
                    button type="submit" name="action" value="start" { "Start" }
                }
                @if let Some(v) = &a.update_available {
                    button type="submit" name="action" value="update" { "Update to " (v) }
                }
            }
            h2 { "Output of " (service) }
            pre.logs { (String::from_utf8_lossy(&logs)) }
            h2 { "Remove" }
            form.remove method="post" action=(format!("/apps/{id}/action")) {
                (csrf_field(session))
                p.hint { "Removing keeps the app's data in " code { (state.apps.app_dir(id).display()) } "; installing it again picks it up." }
                label { input type="checkbox" name="purge" value="yes"; " Also delete its data. This cannot be undone." }
                button type="submit" name="action" value="remove" { "Remove " (a.title) }
            }
        }
    };
    render(state, session, &a.title, body, status, changing).await
}

/// `POST /apps/{id}/action`.
pub async fn action_submit(
    State(state): State<AppState>,
    session: PageSession,
    Path(id): Path<String>,
    Form(form): Form<AppForm>,
) -> Response {
    if !session.0.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the form is stale; reload the page and try again").into_response();
    }
    let result = match form.action.as_deref().unwrap_or_default() {
        "start" => state.apps.start(&id).await.map_err(|e| e.to_string()),
        "stop" => state.apps.stop(&id).await.map_err(|e| e.to_string()),
        "restart" => state.apps.restart(&id).await.map_err(|e| e.to_string()),
        "update" => start_update(&state, &id, UpdateRequest::default())
            .await
            .map(drop)
            .map_err(|e| e.message()),
        "remove" => match state.apps.remove(&id, form.purge.is_some()).await {
            Ok(_) => {
                state.domain.forget_app(&id).await;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        other => Err(format!(
            "{other:?} is not something an app can do; use the page's buttons"
        )),
    };
    match result {
        // The list shows the removal going on, and the app gone after.
        Ok(()) if form.action.as_deref() == Some("remove") => Redirect::to("/apps").into_response(),
        Ok(()) => Redirect::to(&format!("/apps/{id}")).into_response(),
        Err(message) => app_page(&state, &session, &id, None, Some(message)).await,
    }
}
