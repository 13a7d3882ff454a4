//! The Domain page: the owner's domain and CA, the DNS records to create
//! and whether they resolve, and a public switch per app.

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::app_pages::csrf_field;
use super::sections::section;
use crate::domain::{DdnsRequest, DomainRequest, LETS_ENCRYPT};
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
    server: String,
    zone: String,
    key_name: String,
    key_algorithm: String,
    key_secret: String,
    address_from: String,
    endpoint: String,
    listen_port: String,
    peer: String,
    port_forwarding: Option<String>,
}

/// What a form did: a message, or a new peer's configuration (shown once).
enum Outcome {
    Done(String),
    Failed(String),
    Peer(crate::vpn::NewPeer),
}

/// `POST /domain`: the domain, dynamic DNS, remote access and its peers,
/// or an app's public switch.
pub async fn domain_submit(
    State(state): State<AppState>,
    session: PageSession,
    Form(form): Form<DomainForm>,
) -> Response {
    if !session.0.csrf_ok(Some(&form.csrf_token)) {
        return ApiError::csrf("the form is stale; reload the page and try again").into_response();
    }
    let outcome: Result<String, String> = match form.action.as_str() {
        "configure" => state
            .domain
            .configure(DomainRequest {
                domain: form.domain,
                acme_directory: Some(form.acme_directory),
                acme_email: Some(form.acme_email),
                acme_ca: Some(form.acme_ca),
                port_forwarding: Some(form.port_forwarding.is_some()),
            })
            .await
            .map(|_| "Saved.".to_owned())
            .map_err(|e| e.to_string()),
        "ddns" => state
            .domain
            .configure_ddns(DdnsRequest {
                server: form.server,
                zone: form.zone,
                key_name: form.key_name,
                key_algorithm: form.key_algorithm,
                key_secret: form.key_secret,
                address_from: form.address_from,
            })
            .await
            .map(|status| match status.ddns.and_then(|d| d.address) {
                Some(address) => format!("Dynamic DNS is on; the records point at {address}."),
                None => "Dynamic DNS is off.".to_owned(),
            })
            .map_err(|e| e.to_string()),
        "public" | "private" => {
            let public = form.action == "public";
            state
                .domain
                .set_public(&form.app, public)
                .await
                .map(|_| {
                    if public {
                        format!("{} is public; its certificate is being obtained.", form.app)
                    } else {
                        format!("{} answers on the home network only.", form.app)
                    }
                })
                .map_err(|e| e.to_string())
        }
        "vpn-on" | "vpn-off" => {
            let listen_port = match form.listen_port.trim() {
                "" => Ok(None),
                port => port.parse().map(Some).map_err(|_| {
                    format!("listen_port: {port:?} is not a port; give a UDP port from 1 to 65535, e.g. 51820")
                }),
            };
            match listen_port {
                Ok(listen_port) => state
                    .vpn
                    .configure(crate::vpn::VpnRequest {
                        enabled: form.action == "vpn-on",
                        endpoint: form.endpoint,
                        listen_port,
                    })
                    .await
                    .map(|s| {
                        if s.enabled {
                            "Remote access is on.".to_owned()
                        } else {
                            "Remote access is off.".to_owned()
                        }
                    })
                    .map_err(|e| e.to_string()),
                Err(message) => Err(message),
            }
        }
        "peer-add" => {
            let outcome = match state.vpn.add_peer(&form.peer).await {
                Ok(peer) => Outcome::Peer(peer),
                Err(err) => Outcome::Failed(err.to_string()),
            };
            return domain_page(&state, &session, Some(outcome)).await;
        }
        "peer-remove" => state
            .vpn
            .remove_peer(&form.peer)
            .await
            .map(|_| format!("{} can no longer connect.", form.peer))
            .map_err(|e| e.to_string()),
        other => Err(format!(
            "{other:?} is not something this page does; use its buttons"
        )),
    };
    let outcome = match outcome {
        Ok(text) => Outcome::Done(text),
        Err(text) => Outcome::Failed(text),
    };
    domain_page(&state, &session, Some(outcome)).await
}

async fn domain_page(
    state: &AppState,
    session: &PageSession,
    outcome: Option<Outcome>,
) -> Response {
    let status = state.domain.status().await;
    let vpn = state.vpn.status().await;
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
            Some(Outcome::Done(text)) => { p.notice role="status" { (text) } }
            Some(Outcome::Failed(text)) => { p.form-error role="alert" { (text) } }
            Some(Outcome::Peer(peer)) => {
                section.new-peer role="status" {
                    p.notice { (peer.name) " may connect as " (peer.address) ". Scan this with the WireGuard app, or save the text as a .conf file. "
                        strong { "It holds the peer's private key and is shown only this once." } }
                    div.qr { (maud::PreEscaped(&peer.qr_svg)) }
                    pre.peer-config { (peer.config) }
                }
            }
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
            label { input type="checkbox" name="port_forwarding" checked[status.port_forwarding.allowed || config.as_ref().is_some_and(|c| c.port_forwarding)];
                " Ask the router (UPnP) to forward ports 80 and 443 to this device while an app is public" }
            button type="submit" { "Save" }
        }
        @let forwarding = &status.port_forwarding;
        @if forwarding.allowed {
            p.forwarding {
                @if forwarding.mapped.is_empty() { "The router forwards nothing now." } @else { "The router forwards " (forwarding.mapped.join(", ")) "." }
                @if let Some(address) = &forwarding.external_address { " Its public address is " (address) "." }
            }
            @if let Some(error) = &forwarding.error { p.form-error role="alert" { (error) } }
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
        @if status.domain.is_some() {
            h2 { "Dynamic DNS" }
            @let ddns = status.ddns.clone().unwrap_or_default();
            @if let Some(error) = &ddns.error { p.form-error role="alert" { "The last update failed: " (error) } }
            form.ddns method="post" action="/domain" {
                (csrf_field(session))
                input type="hidden" name="action" value="ddns";
                p.hint { "Keeps the records above at your network's public address, with RFC 2136 updates signed by a TSIG key (BIND, Knot, PowerDNS and many DNS hosts take them). Leave the server empty to turn it off." }
                label { "DNS server " input name="server" value=(ddns.server) placeholder="ns1.example.org:53"; }
                label { "Zone " input name="zone" value=(ddns.zone) placeholder="the domain"; }
                label { "Key name " input name="key_name" value=(ddns.key_name) placeholder="ddns-key"; }
                label { "Algorithm " input name="key_algorithm" placeholder="hmac-sha256"; }
                label { "Secret " input name="key_secret" type="password" autocomplete="off" placeholder="base64, from the key file"; }
                label { "Public address from " input name="address_from" value=(ddns.address_from) placeholder="upnp (ask the router), an https:// URL answering it, or the address"; }
                button type="submit" { "Save" }
            }
        }
        h2 { "Remote access (WireGuard)" }
        p.hint { "Your phone or laptop joins a WireGuard tunnel to this device and opens every app at APP.local, as at home. Forward the UDP port on your router to this device." }
        @if let Some(error) = &vpn.error { p.form-error role="alert" { "The tunnel is not up: " (error) } }
        form.vpn method="post" action="/domain" {
            (csrf_field(session))
            label { "Peers dial " input name="endpoint" value=(if vpn.endpoint.is_empty() { status.domain.clone().map(|d| format!("vpn.{d}")).unwrap_or_default() } else { vpn.endpoint.clone() }) placeholder="vpn.example.org or your public address"; }
            label { "UDP port " input name="listen_port" inputmode="numeric" value=(vpn.listen_port); }
            @if vpn.enabled {
                " " span.state { (if vpn.running { "on" } else { "not running" }) " (" (vpn.kind.as_deref().unwrap_or("no tunnel")) ")" }
                button type="submit" name="action" value="vpn-on" { "Save" }
                button type="submit" name="action" value="vpn-off" { "Turn off" }
            } @else {
                button type="submit" name="action" value="vpn-on" { "Turn on" }
            }
        }
        @if vpn.enabled {
            ul.peers {
                @for peer in &vpn.peers {
                    li {
                        strong { (peer.name) } " " (peer.address) " · "
                        @match peer.latest_handshake { Some(at) => { "last seen " (at) } None => { "never connected" } }
                        form.inline method="post" action="/domain" {
                            (csrf_field(session))
                            input type="hidden" name="peer" value=(peer.name);
                            button type="submit" name="action" value="peer-remove" { "Remove" }
                        }
                    }
                }
            }
            form.peer method="post" action="/domain" {
                (csrf_field(session))
                input type="hidden" name="action" value="peer-add";
                label { "New peer " input name="peer" placeholder="phone"; }
                button type="submit" { "Add" }
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
