//! The supervisor's web face: the setup page, the dashboard, and the JSON
//! API they and the CLI use, all on one axum router.
//!
//! It owns HTTP concerns (routes, cookies, CSRF, error shapes, assets); the
//! rules themselves live in `auth`, `setup` and `system`. The reverse proxy
//! for apps (`APPNAME.local`) will be its own module beside this one.

pub mod api;
pub mod api_apps;
pub mod api_backups;
pub mod api_catalog;
pub mod api_containers;
pub mod api_disks;
pub mod api_domain;
pub mod api_error;
pub mod api_external;
pub mod api_images;
mod api_json;
pub mod api_shares;
pub mod api_update;
pub mod api_vpn;
mod assets;
pub mod cookies;
mod guard;
pub mod openapi;
mod pages;
pub mod peer;
pub mod recovery_mode;
pub mod session;
mod state;

pub use state::{AppState, Parts};

use axum::Router;
use axum::middleware;
use axum::response::Redirect;
use axum::routing::{get, post};

/// The whole router, without the connection-specific peer layer.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(api::health))
        .route("/setup", post(api::setup))
        .route("/login", post(api::login))
        .route("/logout", post(api::logout))
        .route("/system", get(api::system))
        .route("/system/power", post(api::power))
        .route(
            "/system/update",
            get(api_update::status)
                .post(api_update::apply)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/system/update/switch-back", post(api_update::switch_back))
        .route("/system/update/from-url", post(api_update::apply_from_url))
        .route("/images", get(api_images::list))
        .route("/images/pull", post(api_images::pull))
        .route("/images/remove", post(api_images::remove))
        .route(
            "/images/load",
            post(api_images::load).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/containers",
            get(api_containers::list).post(api_containers::run),
        )
        .route(
            "/containers/{name}",
            axum::routing::delete(api_containers::remove),
        )
        .route("/containers/{name}/start", post(api_containers::start))
        .route("/containers/{name}/stop", post(api_containers::stop))
        .route("/containers/{name}/logs", get(api_containers::logs))
        .route("/apps", get(api_apps::list).post(api_apps::install))
        .route("/apps/{id}", get(api_apps::get).delete(api_apps::remove))
        .route("/apps/{id}/start", post(api_apps::start))
        .route("/apps/{id}/stop", post(api_apps::stop))
        .route("/apps/{id}/restart", post(api_apps::restart))
        .route("/apps/{id}/update", post(api_apps::update))
        .route("/apps/{id}/logs", get(api_apps::logs))
        .route(
            "/apps/{id}/public",
            axum::routing::put(api_domain::set_public),
        )
        .route(
            "/domain",
            get(api_domain::status).put(api_domain::configure),
        )
        .route(
            "/domain/ddns",
            axum::routing::put(api_domain::configure_ddns),
        )
        .route("/vpn", get(api_vpn::status).put(api_vpn::configure))
        .route("/vpn/peers", post(api_vpn::add_peer))
        .route(
            "/vpn/peers/{name}",
            axum::routing::delete(api_vpn::remove_peer),
        )
        .route("/catalog", get(api_catalog::list))
        .route("/catalog/{id}/icon.svg", get(api_catalog::icon))
        .route(
            "/external-apps",
            get(api_external::list).post(api_external::add),
        )
        .route(
            "/external-apps/{name}",
            axum::routing::delete(api_external::remove),
        )
        .route("/disks", get(api_disks::list))
        .route("/disks/mount", post(api_disks::mount))
        .route("/disks/unmount", post(api_disks::unmount))
        .route("/disks/format", post(api_disks::format))
        .route("/shares", get(api_shares::list).post(api_shares::add))
        .route("/shares/{name}", axum::routing::delete(api_shares::remove))
        .route("/backups", get(api_backups::status))
        .route(
            "/backups/config",
            axum::routing::put(api_backups::configure),
        )
        .route("/backups/run", post(api_backups::run))
        .route("/backups/check", post(api_backups::check))
        .route("/backups/snapshots", get(api_backups::snapshots))
        .route("/backups/restore", post(api_backups::restore))
        .route("/backups/ssh-key", get(api_backups::ssh_key))
        .route(
            "/setup/restore",
            get(api_backups::setup_restore_status).post(api_backups::setup_restore),
        )
        .route("/openapi.json", get(openapi::serve))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed);
    Router::new()
        .route("/", get(|| async { Redirect::to("/apps") }))
        .route("/apps", get(pages::apps))
        .route("/apps/install", post(pages::install_submit))
        .route("/apps/{id}", get(pages::app))
        .route("/apps/{id}/action", post(pages::action_submit))
        .route("/storage", get(pages::storage))
        .route("/storage/action", post(pages::storage_action_submit))
        .route("/storage/format", post(pages::storage_format_submit))
        .route("/storage/shares", post(pages::share_submit))
        .route("/backups", get(pages::backups).post(pages::backups_submit))
        .route("/domain", get(pages::domain).post(pages::domain_submit))
        .route("/system", get(pages::system))
        .route("/system/power", post(pages::power_submit))
        .route(
            "/system/update",
            post(pages::update_submit).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/system/switch-back", post(pages::switch_back_submit))
        .route(
            "/system/update-from-url",
            post(pages::update_from_url_submit),
        )
        .route("/setup", get(pages::setup_form).post(pages::setup_submit))
        .route(
            "/setup/restore",
            get(pages::restore_progress).post(pages::restore_submit),
        )
        .route("/login", get(pages::login_form).post(pages::login_submit))
        .route("/logout", post(pages::logout_submit))
        .route("/assets/{file}", get(assets::serve))
        .route("/ca.pem", get(ca_certificate))
        .nest("/api/v1", api)
        .fallback(pages::not_found)
        .layer(middleware::from_fn(session::renew_session_cookie))
        .layer(middleware::from_fn(guard::same_origin))
        .layer(middleware::from_fn(guard::security_headers))
        // App names go to the proxy before any of the supervisor's own
        // rules (sessions, CSRF, our headers) apply: apps have their own.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::proxy::dispatch,
        ))
        .layer(middleware::from_fn(guard::known_host))
        // Public names and the ACME CA's checks come from the internet,
        // where the home network's host names mean nothing.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::domain::public_names,
        ))
        .with_state(state)
}

/// `GET /ca.pem`: the device CA's certificate, for owners to trust.
async fn ca_certificate(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/x-pem-file"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"ddaemon-ca.pem\"",
            ),
        ],
        state.ca.ca_pem().to_owned(),
    )
        .into_response()
}
