//! What every request handler can reach.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ddaemon_runtime::container_manager::ContainerManager;
use ddaemon_runtime::image_store::ImageStore;
use ddaemon_runtime::registry::Registry;

use super::api_error::ApiError;
use crate::apps::catalog::CatalogApp;
use crate::apps::lifecycle::AppManager;
use crate::auth::{Logins, PasswordHasher};
use crate::mdns::Mdns;
use crate::proxy::Proxy;
use crate::state::StateDb;
use crate::system::TimeZones;
use crate::tls::DeviceCa;

/// Shared state of the web server; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub db: StateDb,
    pub logins: Logins,
    pub hasher: PasswordHasher,
    pub zones: Arc<TimeZones>,
    pub data_dir: Arc<PathBuf>,
    pub started: Instant,
    pub images: Arc<ImageStore>,
    pub registry: Registry,
    pub containers: ContainerManager,
    pub proxy: Proxy,
    /// The device CA, whose certificate the page offers.
    pub ca: Arc<DeviceCa>,
    /// The apps the device can install.
    pub catalog: Arc<Vec<CatalogApp>>,
    /// The apps installed.
    pub apps: AppManager,
    /// The names announced over mDNS.
    pub mdns: Mdns,
    /// Restart and shut down (only on the device itself).
    pub power: crate::system::Power,
    /// System updates into the other root slot (only on the device itself).
    pub updates: crate::system::Updates,
    /// Attached disks.
    pub storage: crate::storage::Storage,
    /// Shared folders (Samba).
    pub shares: crate::storage::shares::Shares,
    /// Backups.
    pub backups: crate::backup::Backups,
    /// The owner's domain and the apps public under it.
    pub domain: crate::domain::Domain,
    /// WireGuard remote access.
    pub vpn: crate::vpn::Vpn,
    setup_complete: Arc<AtomicBool>,
}

/// Who already answers at `NAME.local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameOwner {
    Device,
    InstalledApp,
    ExternalApp,
}

/// The parts of the device the web server hands requests to.
#[derive(Debug)]
pub struct Parts {
    pub images: Arc<ImageStore>,
    pub registry: Registry,
    pub containers: ContainerManager,
    pub ca: Arc<DeviceCa>,
    pub catalog: Vec<CatalogApp>,
    pub proxy: Proxy,
    pub apps: AppManager,
    pub mdns: Mdns,
    pub power: crate::system::Power,
    pub updates: crate::system::Updates,
    pub storage: crate::storage::Storage,
    pub shares: crate::storage::shares::Shares,
    pub backups: crate::backup::Backups,
    pub domain: crate::domain::Domain,
    pub vpn: crate::vpn::Vpn,
}

impl AppState {
    /// State over an open database.
    pub fn new(
        db: StateDb,
        zones: TimeZones,
        data_dir: PathBuf,
        setup_complete: bool,
        parts: Parts,
    ) -> Self {
        let Parts {
            images,
            registry,
            containers,
            ca,
            catalog,
            proxy,
            apps,
            mdns,
            power,
            updates,
            storage,
            shares,
            backups,
            domain,
            vpn,
        } = parts;
        let hasher = PasswordHasher::default();
        Self {
            logins: Logins::new(db.clone(), hasher.clone()),
            db,
            hasher,
            zones: Arc::new(zones),
            data_dir: Arc::new(data_dir),
            started: Instant::now(),
            images,
            registry,
            containers,
            proxy,
            ca,
            catalog: Arc::new(catalog),
            apps,
            mdns,
            power,
            updates,
            storage,
            shares,
            backups,
            domain,
            vpn,
            setup_complete: Arc::new(AtomicBool::new(setup_complete)),
        }
    }

    /// Whether setup is done (cached; the database is the truth).
    pub fn setup_complete(&self) -> bool {
        self.setup_complete.load(Ordering::Acquire)
    }

    /// Who holds `NAME.local` among the device, its apps and its external
    /// apps (all share the proxy's names), if anyone.
    pub async fn name_owner(&self, name: &str) -> Result<Option<NameOwner>, ApiError> {
        let device = self
            .db
            .device_settings()
            .await
            .map_err(|e| ApiError::internal(&e))?;
        if device.device_name.as_deref() == Some(name) {
            return Ok(Some(NameOwner::Device));
        }
        if self
            .apps
            .get(name)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .is_some()
        {
            return Ok(Some(NameOwner::InstalledApp));
        }
        let external = self
            .db
            .external_apps()
            .await
            .map_err(|e| ApiError::internal(&e))?;
        Ok(external
            .iter()
            .any(|e| e.name == name)
            .then_some(NameOwner::ExternalApp))
    }

    /// Opens the setup wizard again after a soft reset (the database
    /// already forgot the admin password).
    pub fn reopen_setup(&self) {
        self.setup_complete.store(false, Ordering::Release);
    }

    /// Called once setup has been committed.
    pub fn mark_setup_complete(&self, device_name: &str) {
        self.setup_complete.store(true, Ordering::Release);
        self.proxy.set_device_name(Some(device_name.to_owned()));
        self.ca.set_device_name(device_name);
        self.mdns.set_device_name(device_name);
        self.vpn.set_device_name(device_name);
        // ddaemon-init makes it the system's host name from the next boot.
        let path = self.data_dir.join("ddaemon/hostname");
        if let Err(err) =
            ddaemon_runtime::fs_atomic::write_atomic(&path, format!("{device_name}\n").as_bytes())
        {
            tracing::warn!(path = %path.display(), %err, "cannot record the host name");
        }
    }
}
