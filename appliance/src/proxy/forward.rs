//! Forwarding one request to an app, upgrades included.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use maud::html;

use super::routes::{Backend, RouteTable};
use crate::web::AppState;
use crate::web::peer::Peer;

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The proxy: its routes and a pooled HTTP client to the apps.
#[derive(Clone)]
pub struct Proxy {
    pub routes: RouteTable,
    client: Client<HttpConnector, Body>,
    device_name: Arc<RwLock<Option<String>>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self {
            routes: RouteTable::default(),
            client: {
                // Small requests must not wait for Nagle's algorithm.
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                Client::builder(TokioExecutor::new()).build(connector)
            },
            device_name: Arc::new(RwLock::new(None)),
        }
    }
}

impl Proxy {
    /// Tells the proxy the device's name, for `APP.DEVICE.local`.
    pub fn set_device_name(&self, name: Option<String>) {
        *self.device_name.write().unwrap_or_else(|p| p.into_inner()) = name;
    }

    fn backend_for(&self, headers: &HeaderMap) -> Option<Backend> {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        let device = self
            .device_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.routes.lookup(host, device.as_deref())
    }

    /// Sends `request` to `backend` and streams the answer back.
    pub async fn forward(
        &self,
        mut request: Request,
        backend: &Backend,
        client: Option<IpAddr>,
        tls: bool,
    ) -> Response {
        let upgrading = wants_upgrade(request.headers());
        let client_side = upgrading.then(|| hyper::upgrade::on(&mut request));
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let Ok(uri) = format!("http://{}{path}", backend.addr).parse::<Uri>() else {
            return (StatusCode::BAD_REQUEST, "bad request path").into_response();
        };
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        let upgrade_value = headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(headers);
        if let (true, Some(value)) = (upgrading, upgrade_value) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, value);
        }
        if let Some(ip) = client {
            let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(earlier) => format!("{earlier}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(value) = HeaderValue::from_str(&forwarded) {
                headers.insert(HeaderName::from_static("x-forwarded-for"), value);
            }
        }
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        let proto = if tls { "https" } else { "http" };
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(proto),
        );

        let mut response = match self.client.request(request).await {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(app = %backend.app, %err, "app not reachable");
                return starting_page(backend);
            }
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_side) = client_side
        {
            let app_side = hyper::upgrade::on(&mut response);
            let app = backend.app.clone();
            tokio::spawn(async move {
                match tokio::try_join!(client_side, app_side) {
                    Ok((client_io, app_io)) => {
                        let (mut a, mut b) = (TokioIo::new(client_io), TokioIo::new(app_io));
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                    Err(err) => tracing::debug!(%app, %err, "upgrade failed"),
                }
            });
            return response.map(Body::new);
        }
        strip_hop_by_hop(response.headers_mut());
        response.map(Body::new)
    }
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    for name in HOP_BY_HOP.iter().map(|s| s.to_string()).chain(named) {
        headers.remove(name.as_str());
    }
}

/// What a visitor sees while the app is not answering yet: it reloads
/// itself (a meta refresh, so it works without JavaScript).
fn starting_page(backend: &Backend) -> Response {
    let page = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="5";
                title { (backend.title) " is starting" }
            }
            body style="font-family: system-ui, sans-serif; text-align: center; padding: 4rem 1rem" {
                h1 { (backend.title) " is not answering yet" }
                p { "It may still be starting. This page tries again every few seconds." }
            }
        }
    };
    let mut response = (StatusCode::BAD_GATEWAY, Html(page.into_string())).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// Sends requests for app names to the proxy, everything else on to the
/// supervisor's own pages.
pub async fn dispatch(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(backend) = state.proxy.backend_for(request.headers()) else {
        return next.run(request).await;
    };
    let peer = request.extensions().get::<Peer>().copied();
    let client = peer.and_then(|p| p.ip());
    let tls = peer.is_some_and(|p| p.tls());
    state.proxy.forward(request, &backend, client, tls).await
}
