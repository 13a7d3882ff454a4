//! The Domain page: the owner's domain and CA, the DNS records to create
//! and whether they resolve, and a public switch per app.

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::app_pages::csrf_field;
use super::sections::section;
use crate::domain::{DomainRequest, LETS_ENCRYPT};
use crate::web::api_error::ApiError;
use crate::web::session::PageSession;
use crate::web::state::AppState;

/// `/domain`.
pub async fn domain(State(state): State<AppState>, session: PageSession) -> Response {
    domain_page(&state, &session, None).await
}

/// What the Domain page's forms post.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DomainForm {
    csrf_token: String,
    action: String,
    domain: String,
    acme_directory: String,
    acme_email: String,
    acme_ca: String,
    app: String,
}

/// `POST /domain`: save the domain, or flip an app's public switch.
pub async fn domain_submit(
    State(state): State<AppState>,
    session: PageSession,
    Form(form): Form<DomainForm>,
) -> Response {
    if !session.0.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the form is stale; reload the page and try again").into_response();
    }
    let outcome = match form.action.as_str() {
        "configure" => state
            .domain
            .configure(DomainRequest {
                domain: form.domain,
                acme_directory: Some(form.acme_directory),
                acme_email: Some(form.acme_email),
                acme_ca: Some(form.acme_ca),
            })
            .await
            .map(|_| "Saved.".to_owned()),
        "public" | "private" => {
            let public = form.action == "public";
            state.domain.set_public(&form.app, public).await.map(|_| {
                if public {
                    format!("{} is public; its certificate is being obtained.", form.app)
                } else {
                    format!("{} answers on the home network only.", form.app)
                }
            })
        }
        other => Ok(format!(
            "{other:?} is not something this page does; use its buttons"
        )),
    };
    domain_page(&state, &session, Some(outcome.map_err(|e| e.to_string()))).await
}

async fn domain_page(
    state: &AppState,
    session: &PageSession,
    outcome: Option<Result<String, String>>,
) -> Response {
    let status = state.domain.status().await;
    let config = state.domain.config();
    // Installed apps say whether they have a login; external apps (the
    // owner's own devices) are not known to.
    let mut apps: Vec<(String, String, Option<bool>)> = match state.apps.list().await {
        Ok(apps) => apps
            .into_iter()
            .map(|a| {
                let login = a.manifest.web.has_login;
                (a.manifest.id, a.manifest.title, Some(login))
            })
            .collect(),
        Err(err) => return ApiError::internal(&err).into_response(),
    };
    match state.db.external_apps().await {
        Ok(external) => apps.extend(external.into_iter().map(|e| (e.name, e.title, None))),
        Err(err) => return ApiError::internal(&err).into_response(),
    }
    let body = html! {
        @match &outcome {
            Some(Ok(text)) => { p.notice role="status" { (text) } }
            Some(Err(text)) => { p.form-error role="alert" { (text) } }
            None => {}
        }
        form.domain method="post" action="/domain" {
            (csrf_field(session))
            input type="hidden" name="action" value="configure";
            label { "Your domain " input name="domain" value=(status.domain.as_deref().unwrap_or("")) placeholder="example.org"; }
            p.hint { "Apps you make public answer at https://APP.your-domain. Leave it empty to make every app private again." }
            details {
                summary { "Certificate authority" }
                label { "ACME directory " input name="acme_directory" value=(status.acme_directory.as_deref().unwrap_or("")) placeholder=(LETS_ENCRYPT); }
                label { "Email for expiry warnings " input name="acme_email" value=(status.acme_email.as_deref().unwrap_or("")) placeholder="you@example.org"; }
                label { "Root certificate of a private CA " textarea name="acme_ca" rows="3" placeholder="-----BEGIN CERTIFICATE-----" {
                    (config.as_ref().and_then(|c| c.acme_ca.as_deref()).unwrap_or(""))
                } }
            }
            button type="submit" { "Save" }
        }
        @if status.domain.is_some() {
            h2 { "DNS records to create" }
            p.hint { "At your DNS provider. One wildcard record covers every app; then forward ports 80 and 443 on your router to this device." }
            table.records {
                tr { th { "Name" } th { "Type" } th { "Value" } }
                @for record in &status.records {
                    tr { td { code { (record.name) } } td { (record.kind) } td { (record.value) } }
                }
            }
        }
        h2 { "Apps" }
        @if apps.is_empty() {
            p.empty { "No app is installed." }
        }
        ul.public-apps {
            @for (id, title, has_login) in &apps {
                @let public = status.public_apps.iter().find(|p| &p.app == id);
                li {
                    strong { (title) }
                    @if let Some(p) = public {
                        " — public at " a href=(p.url) { (p.url) }
                        " · certificate: " span.cert { (p.certificate.state) }
                        @if let Some(error) = &p.certificate.error { " " span.form-error { (error) } }
                        " · DNS: " @if p.resolves_to.is_empty() { "does not resolve yet" } @else { (p.resolves_to.join(", ")) }
                        @if *has_login == Some(false) {
                            p.form-error { "It has no login of its own: anyone on the internet can use it." }
                        }
                    } @else {
                        " — home network only"
                    }
                    @if status.domain.is_some() {
                        form.inline method="post" action="/domain" {
                            (csrf_field(session))
                            input type="hidden" name="app" value=(id);
                            @if public.is_some() {
                                button type="submit" name="action" value="private" { "Make private" }
                            } @else {
                                button type="submit" name="action" value="public" { "Make public" }
                            }
                        }
                    }
                }
            }
        }
    };
    section(state, session, "/domain", "Domain", body).await
}

/// Public apps that have no login of their own, named atop every page.
pub(super) async fn public_alert(state: &AppState) -> Markup {
    let Some(config) = state.domain.config() else {
        return html! {};
    };
    let mut open = Vec::new();
    for app in &config.public_apps {
        if let Ok(Some(record)) = state.apps.get(app).await
            && !record.manifest.web.has_login
        {
            open.push(format!("{app}.{}", config.domain));
        }
    }
    html! {
        @if !open.is_empty() {
            p.form-error.public-open role="alert" {
                "Public without a login of its own, open to anyone on the internet: " (open.join(", ")) ". "
                a href="/domain" { "See Domain" }
            }
        }
    }
}
