//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api_error::{ErrorBody, ErrorDetail};
use super::{
    api, api_apps, api_backups, api_catalog, api_containers, api_disks, api_domain, api_external,
    api_images, api_shares, api_update, api_vpn,
};
use crate::setup::SetupRequest;
use crate::system::{DiskUse, MemoryUse, SystemInfo};

#[derive(OpenApi)]
#[openapi(
    info(title = "ddaemon API", description = "The supervisor's JSON API, used by its own pages and CLI."),
    paths(
        api::health, api::setup, api::login, api::logout, api::system, api::power, api_update::status, api_update::apply, api_update::apply_from_url, api_update::switch_back,
        api_images::list, api_images::pull, api_images::remove, api_images::load,
        api_containers::list, api_containers::run, api_containers::start, api_containers::stop,
        api_containers::remove, api_containers::logs,
        api_external::list, api_external::add, api_external::remove,
        api_catalog::list, api_catalog::icon,
        api_apps::list, api_apps::get, api_apps::install, api_apps::start, api_apps::stop,
        api_apps::restart, api_apps::update, api_apps::remove, api_apps::logs,
        api_disks::list, api_disks::mount, api_disks::unmount, api_disks::format,
        api_shares::list, api_shares::add, api_shares::remove,
        api_backups::status, api_backups::configure, api_backups::run, api_backups::check,
        api_backups::snapshots, api_backups::restore, api_backups::ssh_key,
        api_backups::setup_restore, api_backups::setup_restore_status,
        api_domain::status, api_domain::configure, api_domain::set_public, api_domain::configure_ddns,
        api_vpn::status, api_vpn::configure, api_vpn::add_peer, api_vpn::remove_peer
    ),
    components(schemas(
        api::Health, api::LoginRequest, api::SessionOpened, api::SetupDone, api::PowerRequest, crate::system::PowerAction, crate::system::UpdateStatus, crate::system::SlotView, crate::system::UpdateJob, api_update::UpdateApplied, api_update::FromUrlRequest,
        SetupRequest, SystemInfo, MemoryUse, DiskUse, ErrorBody, ErrorDetail,
        api_images::ImageView, api_images::ImageRequest, api_images::ImageRemoved,
        api_containers::ContainerView, api_containers::RunRequest,
        api_external::NewExternalApp, crate::state::ExternalApp, api_catalog::CatalogEntry,
        api_apps::AppView, api_apps::ServiceView, api_apps::InstallRequest, api_apps::UpdateRequest,
        crate::storage::Disk, crate::storage::Volume, api_disks::VolumeRequest, api_disks::FormatRequest, api_disks::Mounted,
        crate::state::Share, crate::storage::shares::NewShare,
        crate::backup::BackupStatus, crate::backup::BackupConfig, crate::backup::ConfigRequest,
        crate::backup::Configured, crate::backup::Target, crate::backup::Schedule, crate::backup::Retention,
        crate::backup::JobView, crate::backup::RunReport, crate::backup::Pause, crate::backup::SnapshotInfo,
        api_backups::RestoreRequest, api_backups::SshKeyView, api_backups::SetupRestoreRequest,
        crate::domain::DomainStatus, crate::domain::DomainRequest, crate::domain::PublicApp,
        crate::domain::CertificateStatus, crate::domain::DnsRecord, api_domain::PublicRequest,
        crate::domain::DdnsRequest, crate::domain::DdnsStatus, crate::domain::PortForwardStatus,
        crate::vpn::VpnStatus, crate::vpn::VpnRequest, crate::vpn::NewPeerRequest, crate::vpn::NewPeer, crate::vpn::PeerView
    )),
    modifiers(&Security)
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::cookies::SESSION_COOKIE,
                "Set by /api/v1/login or /api/v1/setup",
            ))),
        );
        components.add_security_scheme(
            "csrf",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The csrf_token from login; required on every state-changing call with a session",
            ))),
        );
    }
}

/// The document as a value.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
