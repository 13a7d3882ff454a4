//! `ddaemon serve`: opens the state, binds the listeners, runs until SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ddaemon_runtime::container_manager::{ContainerError, ContainerManager, ShimCommand};
use ddaemon_runtime::image_store::{ImageStore, StoreError};
use ddaemon_runtime::registry::{Registry, RegistrySettings};
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::apps::lifecycle::AppManager;
use crate::mdns::Mdns;
use crate::state::{StateDb, StateError};
use crate::system::TimeZones;
use crate::tls::{CaError, DeviceCa};
use crate::web::peer::{SocketCaller, tag_tcp, tag_unix};
use crate::web::{AppState, Parts, router};

/// How long open connections get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where the supervisor keeps things and where it listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The data folder (`/data` on a device); state goes in `DATA/ddaemon/`.
    pub data_dir: PathBuf,
    /// The page and API's TCP address.
    pub listen: SocketAddr,
    /// The HTTPS address (device CA certificates); `None` serves no HTTPS.
    pub listen_tls: Option<SocketAddr>,
    /// The root-only Unix socket the CLI uses.
    pub socket: PathBuf,
    /// The tz database.
    pub zoneinfo: PathBuf,
    /// The app catalog folder (`index.toml` and one folder per app).
    pub catalog: PathBuf,
    /// Registries reached over plain HTTP (host[:port]).
    pub insecure_registries: Vec<String>,
    /// Announce the device and its apps over mDNS.
    pub mdns: bool,
    /// The container bridge's address (its /24 is the containers' subnet);
    /// `None` runs containers with loopback only.
    pub bridge_address: Option<std::net::Ipv4Addr>,
    /// Restart and shut down the machine when the owner asks (the device's
    /// own service only).
    pub power_control: bool,
    /// Serve recovery mode instead of the dashboard (as the kernel command
    /// line's `ddaemon.recovery` asks on the device).
    pub recovery: bool,
    /// Recovery mode started by itself (the supervisor could not start):
    /// its factory reset then takes the reset button, not the page.
    pub recovery_unattended: bool,
    /// udev's database (`/run/udev/data`).
    pub udev_data: PathBuf,
    /// Where Samba's Unix accounts go (libnss-extrausers' folder); `None`:
    /// the system's on the device, one in the data folder elsewhere.
    pub unix_users: Option<PathBuf>,
    /// A smbd to send SIGHUP to after a change (tests); otherwise the
    /// device's smbd is reloaded through systemd, and elsewhere none.
    pub smbd_pid_file: Option<PathBuf>,
    /// How often public names' certificates are looked at.
    pub acme_check_every: Duration,
    /// How often dynamic DNS looks at the public address.
    pub ddns_check_every: Duration,
    /// The WireGuard interface's name.
    pub wg_interface: String,
}

/// Why the supervisor could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot open the image store: {0}")]
    Images(StoreError),
    #[error("device certificate authority: {0}")]
    Ca(CaError),
    #[error("registry settings: {0}")]
    Registries(String),
    #[error("cannot find the ddaemon binary to run container shims: {0}")]
    OwnBinary(std::io::Error),
    #[error("cannot open the container folder: {0}")]
    Containers(ContainerError),
    #[error("cannot listen on {addr}: {source} (is another ddaemon or web server using it?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot watch for signals: {0}")]
    Signals(std::io::Error),
    #[error("the web server stopped: {0}")]
    Server(std::io::Error),
}

/// Runs the supervisor until SIGTERM or SIGINT.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if options.recovery
        || options.recovery_unattended
        || (options.power_control && crate::web::recovery_mode::requested_by(&cmdline))
    {
        return serve_recovery(&options).await;
    }
    let db = StateDb::open(&options.data_dir.join("ddaemon"))?;
    let settings = db.device_settings().await?;
    let zones = TimeZones::load(&options.zoneinfo);
    let images = ImageStore::open(&options.data_dir.join("images")).map_err(ServeError::Images)?;
    let registry_settings =
        RegistrySettings::load(&options.data_dir.join("ddaemon/registries.json"))
            .map_err(ServeError::Registries)?;
    let registry = Registry::new(registry_settings.into_options(&options.insecure_registries));
    let containers = ContainerManager::open(
        &options.data_dir.join("containers"),
        ShimCommand {
            program: std::env::current_exe().map_err(ServeError::OwnBinary)?,
            args: vec!["shim".into()],
        },
    )
    .map_err(ServeError::Containers)?;
    let containers = match options.bridge_address {
        Some(gateway) => containers.with_network(gateway),
        None => containers,
    };
    match containers.reattach().await {
        Ok(restarted) if !restarted.is_empty() => {
            tracing::warn!(?restarted, "restarted containers whose shim was gone")
        }
        Ok(_) => {}
        Err(err) => tracing::error!(%err, "cannot check the containers"),
    }
    // A broken catalog is logged, not fatal: the device must still serve
    // its pages and the apps already installed.
    let catalog = match crate::apps::catalog::load(&options.catalog) {
        Ok(apps) => apps,
        Err(err) => {
            tracing::error!(%err, "the app catalog cannot be read; it will be empty");
            Vec::new()
        }
    };
    let ca = Arc::new(
        DeviceCa::load_or_create(
            &options.data_dir.join("ddaemon/ca"),
            settings
                .device_name
                .as_deref()
                .unwrap_or(crate::system::DEFAULT_DEVICE_NAME),
        )
        .map_err(ServeError::Ca)?,
    );
    let proxy = crate::proxy::Proxy::default();
    let domain = crate::domain::Domain::load(
        db.clone(),
        &options.data_dir,
        proxy.routes.clone(),
        Arc::clone(&ca),
        // The router forwards the standard ports to wherever we listen.
        std::iter::once((80, options.listen.port()))
            .chain(options.listen_tls.map(|a| (443, a.port())))
            .collect(),
        options.bridge_address.is_some(),
    )
    .await?;
    let device_name = settings
        .device_name
        .clone()
        .unwrap_or_else(|| crate::system::DEFAULT_DEVICE_NAME.to_owned());
    let mdns = Mdns::new(&device_name);
    let vpn = crate::vpn::Vpn::load(
        db.clone(),
        &options.data_dir,
        &options.wg_interface,
        proxy.routes.clone(),
        &device_name,
        options.bridge_address.is_some(),
    )
    .await;
    let images = Arc::new(images);
    let apps = AppManager::new(
        db.clone(),
        Arc::clone(&images),
        registry.clone(),
        containers.clone(),
        proxy.routes.clone(),
        mdns.clone(),
        &options.data_dir,
    );
    let routes = proxy.routes.clone();
    let db_for_storage = db.clone();
    let db_for_backups = db.clone();
    let state = AppState::new(
        db,
        zones,
        options.data_dir.clone(),
        settings.setup_complete(),
        Parts {
            images,
            registry,
            containers,
            ca: Arc::clone(&ca),
            catalog,
            proxy,
            apps: apps.clone(),
            mdns: mdns.clone(),
            power: crate::system::Power::new(options.power_control),
            updates: crate::system::Updates::detect(options.power_control),
            storage: crate::storage::Storage::new(
                crate::storage::Sources {
                    udev_data: options.udev_data.clone(),
                    ..crate::storage::Sources::default()
                },
                &options.data_dir,
                db_for_storage.clone(),
            ),
            shares: crate::storage::shares::Shares::new(
                db_for_storage,
                &options.data_dir,
                crate::storage::samba::SambaFiles {
                    dir: options.data_dir.join("ddaemon/samba"),
                    unix_users: match (&options.unix_users, options.power_control) {
                        (Some(dir), _) => dir.clone(),
                        (None, true) => PathBuf::from("/var/lib/extrausers"),
                        (None, false) => options.data_dir.join("ddaemon/samba/extrausers"),
                    },
                    reload: match (&options.smbd_pid_file, options.power_control) {
                        (Some(file), _) => crate::storage::samba::Reload::PidFile(file.clone()),
                        (None, true) => crate::storage::samba::Reload::Systemd,
                        (None, false) => crate::storage::samba::Reload::None,
                    },
                },
                crate::storage::nfs::NfsFiles {
                    exports: crate::storage::nfs::exports_path(
                        options.power_control,
                        &options.data_dir,
                    ),
                    reload: options.power_control,
                },
                mdns.clone(),
            ),
            backups: crate::backup::Backups::new(db_for_backups, apps.clone(), &options.data_dir),
            domain: domain.clone(),
            vpn: vpn.clone(),
        },
    );
    start_share_sync(&state);
    domain.start(options.acme_check_every);
    domain.start_ddns(options.ddns_check_every);
    domain.start_port_forwarding();
    vpn.start().await;
    crate::backup::schedule::start(state.backups.clone(), state.db.clone());
    let restart = state.backups.restart_requested();
    start_disk_watch(&state.storage);
    // Before setup the device answers as ddaemon.local, the name the
    // owner types to reach the setup page.
    state.proxy.set_device_name(Some(device_name));
    for app in state.db.external_apps().await? {
        match crate::web::api_external::backend_of(&app) {
            Some(backend) => {
                state.proxy.routes.set(backend);
                mdns.announce(&app.name, &app.title);
            }
            None => {
                tracing::warn!(name = %app.name, target = %app.target, "external app target unreadable")
            }
        }
    }
    if let Err(err) = apps.recover().await {
        tracing::error!(%err, "cannot check the installed apps");
    }
    if options.power_control {
        start_reset_button(Some(state.clone()), state.power, &options.data_dir);
    }
    let app = router(state);
    let tls_app = app.clone();

    let tcp = bind(options.listen).await?;
    let unix = bind_private_socket(&options.socket)?;
    let tls = match options.listen_tls {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let local = tcp.local_addr().unwrap_or(options.listen);
    tracing::info!(
        listen = %local,
        socket = %options.socket.display(),
        data = %options.data_dir.display(),
        setup_complete = settings.setup_complete(),
        version = env!("CARGO_PKG_VERSION"),
        "ddaemon serving"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let responder = if options.mdns {
        match mdns.run(routes, stop_rx.clone()) {
            Ok(task) => Some(task),
            Err(err) => {
                // The device still works by address and fallback ports.
                tracing::error!(%err, "names will not be announced on the network");
                None
            }
        }
    } else {
        None
    };
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Answers are written whole; Nagle's algorithm would only delay them.
    let tcp = tcp.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
    });
    let tcp_server = axum::serve(
        tcp,
        app.clone()
            .layer(axum::middleware::from_fn(tag_tcp))
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let unix_server = axum::serve(
        unix,
        app.layer(axum::middleware::from_fn(tag_unix))
            .into_make_service_with_connect_info::<SocketCaller>(),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));

    if let Some(tls) = tls {
        tracing::info!(listen = %tls.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving HTTPS");
        tokio::spawn(crate::tls::serve_tls(
            tls,
            tls_app,
            domain.resolver(),
            domain.public_resolver(),
            domain.home().clone(),
            stop_rx.clone(),
        ));
    }
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let servers = async { tokio::try_join!(tcp_server.into_future(), unix_server.into_future()) };
    tokio::pin!(servers);
    let result = tokio::select! {
        result = &mut servers => result.map(drop),
        _ = term.recv() => shut_down(&stop_tx, &mut servers, "SIGTERM").await,
        _ = int.recv() => shut_down(&stop_tx, &mut servers, "SIGINT").await,
        // systemd starts the supervisor again (Restart=always), which then
        // loads the restored state.
        () = restart.notified() => shut_down(&stop_tx, &mut servers, "restore").await,
    };
    remove_socket(&options.socket);
    let _ = stop_tx.send(true);
    if let Some(task) = responder {
        // Goodbyes, so other hosts forget the names now rather than later.
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    result.map_err(ServeError::Server)?;
    tracing::info!("ddaemon stopped");
    Ok(())
}

async fn shut_down<F>(
    stop: &watch::Sender<bool>,
    servers: &mut std::pin::Pin<&mut F>,
    why: &str,
) -> std::io::Result<()>
where
    F: std::future::Future<Output = std::io::Result<((), ())>>,
{
    tracing::info!(signal = why, "shutting down");
    let _ = stop.send(true);
    match tokio::time::timeout(SHUTDOWN_GRACE, servers.as_mut()).await {
        Ok(result) => result.map(drop),
        Err(_) => {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
            Ok(())
        }
    }
}

/// Binds the control socket so that only root can ever connect: the mode is
/// set through the umask at bind time, leaving no window with looser rights.
fn bind_private_socket(path: &Path) -> Result<UnixListener, ServeError> {
    use nix::sys::stat::{Mode, umask};
    let err = |source| ServeError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(err(std::io::Error::other(
                "a file that is not a socket is in the way; move it",
            )));
        }
        // A socket left by a crashed supervisor; nothing listens on it.
        std::fs::remove_file(path).map_err(err)?;
    }
    let old = umask(Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    umask(old);
    listener.map_err(err)
}

fn remove_socket(path: &Path) {
    if let Err(err) = std::fs::remove_file(path) {
        tracing::debug!(path = %path.display(), %err, "control socket already gone");
    }
}

/// Writes Samba's files now and whenever users, passwords or mounted
/// disks change.
fn start_share_sync(state: &AppState) {
    let shares = state.shares.clone();
    let accounts = state.db.accounts_changed();
    let disks = state.storage.changed();
    tokio::spawn(async move {
        let mut first = true;
        // NFS exports and announcements follow the home network, which may
        // come up after the supervisor (DHCP) or change.
        let mut networks = crate::storage::nfs::home_networks();
        let mut network_check = tokio::time::interval(std::time::Duration::from_secs(15));
        loop {
            if let Err(err) = shares.sync(first).await {
                tracing::error!(%err, "the shares' files could not be written");
            }
            first = false;
            loop {
                tokio::select! {
                    () = accounts.notified() => break,
                    () = disks.notified() => break,
                    _ = network_check.tick() => {
                        let now = crate::storage::nfs::home_networks();
                        if now != networks {
                            tracing::info!(?now, "the home network changed; exporting to it");
                            networks = now;
                            break;
                        }
                    }
                }
            }
        }
    });
}

/// Mounts the remembered disks now and whenever block devices change.
fn start_disk_watch(storage: &crate::storage::Storage) {
    let (changed, mut changes) = tokio::sync::mpsc::channel::<()>(1);
    match crate::storage::hotplug::open() {
        Ok(fd) => {
            let spawned = std::thread::Builder::new()
                .name("disk-hotplug".into())
                .spawn(move || {
                    crate::storage::hotplug::watch(fd, || {
                        let _ = changed.try_send(());
                    })
                });
            if let Err(err) = spawned {
                tracing::warn!(%err, "disks plugged in later will not be mounted by themselves");
            }
        }
        Err(err) => {
            tracing::warn!(%err, "no hotplug events: disks plugged in later will not be mounted by themselves")
        }
    }
    let storage = storage.clone();
    tokio::spawn(async move {
        storage.mount_remembered().await;
        while changes.recv().await.is_some() {
            storage.mount_remembered().await;
        }
    });
}

/// The board file the image builder put in (`/usr/share/ddaemon/boards/ID.toml`).
const BOARDS_DIR: &str = "/usr/share/ddaemon/boards";

/// Watches the board's reset button on a thread of its own and carries out
/// what its presses ask for. Only the device's own supervisor does this,
/// and recovery mode. A soft reset needs the supervisor's state (`state`);
/// recovery mode has none, and ignores it.
fn start_reset_button(state: Option<AppState>, power: crate::system::Power, data_dir: &Path) {
    use crate::system::reset_button::{blink, open_board_button, watch};
    use ddaemon_recovery::button::Request;
    let board = crate::system::board_id()
        .and_then(|id| ddaemon_boards::load(Path::new(BOARDS_DIR), &id).map_err(|e| e.to_string()));
    let board = match board {
        Ok(b) => b,
        Err(err) => {
            tracing::warn!(%err, "no board file: the reset button is not watched");
            return;
        }
    };
    let source = match open_board_button(&board.reset_button) {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(%err, "the reset button cannot be watched");
            return;
        }
    };
    let led = board.status_led.map(|l| l.name);
    let handle = tokio::runtime::Handle::current();
    let marker = crate::system::reset_button::factory_reset_marker(data_dir);
    let spawned = std::thread::Builder::new()
        .name("reset-button".into())
        .spawn(move || {
            let leds = Path::new("/sys/class/leds");
            let armed = |request: Request| {
                if let Some(led) = &led {
                    blink(
                        leds,
                        led,
                        if request == Request::FactoryReset {
                            6
                        } else {
                            3
                        },
                    );
                }
            };
            let act = |request: Request| {
                handle.block_on(carry_out(state.as_ref(), &power, &marker, request));
            };
            let err = watch(source, armed, act);
            tracing::error!(%err, "the reset button is no longer watched");
        });
    if let Err(err) = spawned {
        tracing::error!(%err, "cannot start the reset button's watcher");
    }
}

/// What a reset-button pattern asked for.
async fn carry_out(
    state: Option<&AppState>,
    power: &crate::system::Power,
    marker: &Path,
    request: ddaemon_recovery::button::Request,
) {
    use crate::system::PowerAction;
    use ddaemon_recovery::button::Request;
    match request {
        Request::SoftReset => match state {
            Some(state) => match state.db.soft_reset().await {
                Ok(()) => {
                    state.reopen_setup();
                    tracing::warn!(
                        "soft reset: the admin password is cleared; the setup wizard is open again (apps and data kept)"
                    );
                }
                Err(err) => tracing::error!(%err, "soft reset failed"),
            },
            None => tracing::warn!(
                "soft reset asked for in recovery mode: it needs the supervisor; ignored (a factory reset works here)"
            ),
        },
        Request::FactoryReset => {
            // ddaemon-init wipes /data (all but /data/disks) at the next boot.
            if let Err(err) = crate::system::reset_button::request_factory_reset(
                marker,
                "asked for with the reset button",
            ) {
                tracing::error!(%err, "factory reset: cannot record the request");
                return;
            }
            tracing::warn!("factory reset requested: restarting to wipe /data (not /data/disks)");
            if let Err(err) = power.request(PowerAction::Restart).await {
                tracing::error!(%err, "factory reset: cannot restart");
            }
        }
        Request::PowerOff => {
            if let Err(err) = power.request(PowerAction::PowerOff).await {
                tracing::error!(%err, "the power button: cannot shut down");
            }
        }
    }
}

/// Recovery mode: only its own small page, nothing of the apps.
async fn serve_recovery(options: &ServeOptions) -> Result<(), ServeError> {
    use crate::web::recovery_mode::{RecoveryState, router};
    tracing::warn!(listen = %options.listen, "recovery mode: serving the recovery page only");
    let state = RecoveryState {
        updates: crate::system::Updates::detect(options.power_control),
        power: crate::system::Power::new(options.power_control),
        factory_reset_marker: crate::system::reset_button::factory_reset_marker(&options.data_dir),
        unattended: options.recovery_unattended,
    };
    if options.power_control {
        start_reset_button(None, state.power, &options.data_dir);
    }
    let tcp = bind(options.listen).await?;
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    axum::serve(
        tcp,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        term.recv().await;
    })
    .await
    .map_err(ServeError::Server)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}
