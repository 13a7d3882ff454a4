//! `ddaemon`: the supervisor daemon and its command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ddaemon::cli::{ApiClient, images};
use ddaemon::serve::{ServeOptions, serve};
use ddaemon::system::format_bytes;

/// The ddaemon supervisor and its command line.
#[derive(Debug, Parser)]
#[command(name = "ddaemon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_SOCKET: &str = "/run/ddaemon.sock";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the supervisor: setup page, dashboard and API.
    Serve {
        /// The data folder; state goes in DATA/ddaemon/.
        #[arg(long, default_value = "/data", value_name = "DIR")]
        data: PathBuf,
        /// Address for the page and API.
        #[arg(long, default_value = "0.0.0.0:80", value_name = "ADDR")]
        listen: SocketAddr,
        /// The root-only control socket the CLI uses.
        #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        /// Address for HTTPS with the device's own CA.
        #[arg(long, default_value = "0.0.0.0:443", value_name = "ADDR")]
        listen_tls: SocketAddr,
        /// Serve no HTTPS.
        #[arg(long)]
        no_tls: bool,
        /// The app catalog folder.
        #[arg(long, default_value = "/usr/share/ddaemon/catalog", value_name = "DIR")]
        catalog: PathBuf,
        /// The container bridge's address; containers get the rest of its /24.
        #[arg(long, default_value = "10.88.0.1", value_name = "IPV4")]
        bridge_address: std::net::Ipv4Addr,
        /// Run containers without the bridge (loopback only).
        #[arg(long)]
        no_container_network: bool,
        /// Announce nothing over mDNS (names then resolve only by other means).
        #[arg(long)]
        no_mdns: bool,
        /// Let the owner restart and shut down this machine from the page
        /// and API (set by the device's systemd unit; never on a workstation).
        #[arg(long)]
        power_control: bool,
        /// Serve recovery mode (install an update, switch slots, factory
        /// reset, logs) instead of the dashboard; the device's supervisor
        /// also enters it when the kernel command line says ddaemon.recovery.
        #[arg(long)]
        recovery: bool,
        /// Recovery mode that started by itself because the supervisor
        /// could not start (the device's ddaemon-recovery.service): its
        /// factory reset takes the reset button, not the page.
        #[arg(long, hide = true)]
        recovery_unattended: bool,
        /// A registry (host[:port]) to reach over plain HTTP; repeatable.
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure_registries: Vec<String>,
        /// The tz database to offer and check time zones against.
        #[arg(long, default_value = ddaemon::system::SYSTEM_ZONEINFO, value_name = "DIR", hide = true)]
        zoneinfo: PathBuf,
        /// udev's database of block devices (serials, filesystems); tests
        /// on a machine without udev give their own.
        #[arg(
            long,
            default_value = "/run/udev/data",
            value_name = "DIR",
            hide = true
        )]
        udev_data: PathBuf,
        /// Where the Unix accounts of Samba's users go (libnss-extrausers'
        /// folder). By default /var/lib/extrausers on the device (with
        /// --power-control) and DATA/ddaemon/samba/extrausers elsewhere, so
        /// that a supervisor on a workstation never touches its accounts.
        #[arg(long, value_name = "DIR", hide = true)]
        unix_users: Option<PathBuf>,
        /// A smbd to signal after share changes (tests run their own).
        #[arg(long, value_name = "FILE", hide = true)]
        smbd_pid_file: Option<PathBuf>,
        /// How often public names' certificates are looked at, in seconds
        /// (tests renew short-lived certificates).
        #[arg(long, value_name = "SECS", default_value_t = 12 * 3600, hide = true)]
        acme_check_every: u64,
        /// How often dynamic DNS looks at the public address, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 300, hide = true)]
        ddns_check_every: u64,
        /// The WireGuard interface's name (tests run several supervisors).
        #[arg(long, value_name = "NAME", default_value = "ddwg0", hide = true)]
        wg_interface: String,
    },
    /// Show what the System page shows, from the running supervisor.
    Status {
        #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apps: install, list, start, stop, restart, update, remove, logs;
    /// import a Compose file as an app manifest.
    App {
        #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        #[command(subcommand)]
        action: AppAction,
    },
    /// Containers on the device: run, list, start, stop, remove, logs.
    Container {
        #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        #[command(subcommand)]
        action: ContainerAction,
    },
    /// Runs an OCI bundle once (create, start, wait, delete), like `crun
    /// run`; for the start-time benchmark.
    #[command(hide = true)]
    RunBundle {
        #[arg(long)]
        id: String,
        #[arg(long)]
        root: PathBuf,
        bundle: PathBuf,
    },
    /// The per-container shim (started by the supervisor, not by hand).
    #[command(hide = true)]
    Shim { dir: PathBuf },
    /// Attached disks: list, mount, unmount, format.
    Disk {
        #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        #[command(subcommand)]
        action: DiskAction,
    },
    /// Shared folders (Samba): add, list, remove.
    Share {
        #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        #[command(subcommand)]
        action: ShareAction,
    },
    /// Backups: where they go, run, list, restore, check.
    Backup {
        #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        #[command(subcommand)]
        action: BackupAction,
    },
    /// The owner's domain: set it, and make apps public at APP.DOMAIN.
    Domain {
        #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        #[command(subcommand)]
        action: DomainAction,
    },
    /// WireGuard remote access: turn it on, add and remove peers.
    Vpn {
        #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        #[command(subcommand)]
        action: VpnAction,
    },
    /// System updates: status, install a signed bundle, switch back.
    Update {
        #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        #[command(subcommand)]
        action: UpdateAction,
    },
    /// Waits until the supervisor answers (exit 0) or the time is up (exit 1).
    Health {
        #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Give up early once systemd has restarted this unit three times.
        #[arg(long, value_name = "UNIT")]
        unit: Option<String>,
    },
    /// Images on the device: pull, list, remove, side-load.
    Image {
        #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        #[command(subcommand)]
        action: ImageAction,
    },
}

#[derive(Debug, Subcommand)]
enum ShareAction {
    /// Share a folder on an attached disk or in an app's data folder.
    Add {
        name: String,
        path: PathBuf,
        #[arg(long)]
        read_only: bool,
        /// Who may open it (repeatable); every user when left out.
        #[arg(long = "user", value_name = "NAME")]
        users: Vec<String>,
        /// Offer it to Macs as a Time Machine target.
        #[arg(long)]
        time_machine: bool,
        /// Export it over NFS too, to the home network only.
        #[arg(long)]
        nfs: bool,
    },
    /// Every share.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Stop sharing a folder (its files stay).
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
enum VpnAction {
    /// Whether it is on, and the peers.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Turn it on: peers dial ENDPOINT (a name or the public address).
    On {
        #[arg(long)]
        endpoint: String,
        /// The UDP port the router forwards to the device.
        #[arg(long, default_value_t = ddaemon::vpn::DEFAULT_PORT)]
        port: u16,
    },
    /// Turn it off (peers are kept).
    Off,
    /// Add a peer and print its configuration (with its private key: keep it safe).
    Add {
        name: String,
        /// Also print it as a QR code for the WireGuard app.
        #[arg(long)]
        qr: bool,
    },
    /// Remove a peer.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
enum DomainAction {
    /// The domain, the DNS records to create, and the public apps.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Set the domain (an empty one forgets it and makes every app private).
    Set {
        domain: String,
        /// The ACME CA's directory URL (Let's Encrypt by default).
        #[arg(long, value_name = "URL")]
        acme_directory: Option<String>,
        /// Where the CA sends expiry warnings.
        #[arg(long, value_name = "EMAIL")]
        acme_email: Option<String>,
        /// A PEM file with the root certificate of a private ACME CA.
        #[arg(long, value_name = "FILE")]
        acme_ca: Option<PathBuf>,
        /// Let the device ask the router (UPnP) to forward 80 and 443 while
        /// an app is public.
        #[arg(long, value_name = "true|false")]
        port_forwarding: Option<bool>,
    },
    /// Keep *.DOMAIN at the public address with RFC 2136 updates.
    Ddns {
        /// The DNS server taking updates (host or host:port).
        #[arg(long, required_unless_present = "off")]
        server: Option<String>,
        /// The zone holding the domain (the domain itself by default).
        #[arg(long)]
        zone: Option<String>,
        /// The TSIG key file, as BIND's tsig-keygen writes it.
        #[arg(long, value_name = "FILE", required_unless_present = "off")]
        key_file: Option<PathBuf>,
        /// An http(s) URL answering the public address, or the address.
        #[arg(long, value_name = "URL|ADDRESS", required_unless_present = "off")]
        address_from: Option<String>,
        /// Turn dynamic DNS off.
        #[arg(long, conflicts_with_all = ["server", "zone", "key_file", "address_from"])]
        off: bool,
    },
    /// Make an app answer at https://APP.DOMAIN.
    Public { app: String },
    /// Make an app answer on the home network only.
    Private { app: String },
}

#[derive(Debug, Subcommand)]
enum BackupAction {
    /// Choose where backups go (one of --folder, --rest, --sftp, --rclone).
    Target {
        /// A folder on an attached disk.
        #[arg(long, value_name = "PATH", group = "place")]
        folder: Option<PathBuf>,
        /// A restic REST server: http://[user:password@]host:port/path.
        #[arg(long, value_name = "URL", group = "place")]
        rest: Option<String>,
        /// An SFTP server as USER@HOST:PATH, logged into with the device's
        /// key (`ddaemon backup status` shows it).
        #[arg(long, value_name = "USER@HOST:PATH", group = "place")]
        sftp: Option<String>,
        #[arg(long, default_value_t = 22)]
        port: u16,
        /// An rclone remote NAME:PATH, with --rclone-config.
        #[arg(long, value_name = "NAME:PATH", group = "place")]
        rclone: Option<String>,
        /// A file holding the remote's section of an rclone.conf.
        #[arg(long, value_name = "FILE", requires = "rclone")]
        rclone_config: Option<PathBuf>,
        /// Daily backup time (HH:MM, the device's time zone).
        #[arg(long, default_value = "03:00")]
        time: String,
        /// Run backups only when asked.
        #[arg(long)]
        no_schedule: bool,
        #[arg(long, default_value_t = 3)]
        keep_last: u32,
        #[arg(long, default_value_t = 7)]
        keep_daily: u32,
        #[arg(long, default_value_t = 4)]
        keep_weekly: u32,
        #[arg(long, default_value_t = 12)]
        keep_monthly: u32,
        /// The recovery key of backups already at the target.
        #[arg(long, value_name = "KEY")]
        recovery_key: Option<String>,
    },
    /// Back up now and wait until it is done.
    Run,
    /// The snapshots in the repository.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Restore one app's data (--app) or the whole device from a snapshot.
    Restore {
        /// A snapshot id (or its first 8 characters); for the whole device,
        /// the latest when left out.
        snapshot: Option<String>,
        #[arg(long, value_name = "ID")]
        app: Option<String>,
    },
    /// Check the repository and wait for the result.
    Check,
    /// Settings, the latest runs, and the device's SSH key.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DiskAction {
    /// Every attached disk (not the system's own) with its filesystems.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Mount a filesystem (by UUID) under /data/disks/LABEL, and again
    /// whenever the disk is plugged in.
    Mount { uuid: String },
    /// Unmount a filesystem (by UUID) so the disk can be unplugged.
    Unmount { uuid: String },
    /// Erase a disk and make one ext4 filesystem on it. Everything on the
    /// disk is lost; --serial must be the disk's serial number (see `ls`).
    Format {
        /// The disk's name, e.g. sdb.
        disk: String,
        #[arg(long)]
        serial: String,
        #[arg(long)]
        label: String,
    },
}

#[derive(Debug, Subcommand)]
enum UpdateAction {
    /// The running version, both slots, and a rollback if one happened.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Install a bundle (`.ddaemon-update`) into the other slot and restart
    /// into it; it is kept only if it starts properly.
    Apply {
        /// The bundle file, or its http:// or https:// address (the device
        /// downloads it).
        source: String,
        /// Write it, but do not restart now.
        #[arg(long)]
        no_restart: bool,
    },
    /// Boot the other slot's (confirmed) system again.
    SwitchBack {
        #[arg(long)]
        no_restart: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ImageAction {
    /// Download an image from its registry, with progress.
    Pull { reference: String },
    /// List the images on the device.
    Ls,
    /// Remove an image and the data only it used.
    Rm { reference: String },
    /// Import an OCI archive or a `docker save` tarball (plain, .gz or .zst).
    Load {
        file: PathBuf,
        /// The name for images the archive tags only with a bare tag.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AppAction {
    /// Install an app of the catalog, or one from a manifest file.
    Install {
        /// The app's id in the catalog.
        #[arg(required_unless_present = "manifest", conflicts_with = "manifest")]
        id: Option<String>,
        /// An app.toml (e.g. written by `ddaemon app import`).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Return once the install is recorded instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// List the installed apps.
    Ls,
    /// Start a stopped app.
    Start { id: String },
    /// Stop an app (it stays stopped until started).
    Stop { id: String },
    /// Stop and start an app.
    Restart { id: String },
    /// Update an app to the catalog's version, or to a manifest file's.
    Update {
        id: String,
        #[arg(long)]
        manifest: Option<PathBuf>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove an app; its data stays unless --purge.
    Remove {
        id: String,
        /// Also delete the app's data. It cannot be undone.
        #[arg(long)]
        purge: bool,
        #[arg(long)]
        no_wait: bool,
    },
    /// Print the end of an app's output.
    Logs {
        id: String,
        /// Which service (the web service by default).
        #[arg(long)]
        service: Option<String>,
        #[arg(long, default_value_t = 64 * 1024)]
        bytes: u64,
    },
    /// Turn a Compose file into an app manifest (printed, or written with --out).
    Import {
        /// The compose.yml to read.
        file: PathBuf,
        /// The app's id (it answers at ID.local).
        #[arg(long)]
        id: String,
        /// Write the manifest here instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ContainerAction {
    /// List containers and their state.
    Ls,
    /// Create and start a container of an image on the device.
    Run {
        /// The container's name.
        #[arg(long)]
        name: String,
        /// no, on-failure or always.
        #[arg(long)]
        restart: Option<String>,
        /// Memory limit in MiB.
        #[arg(long, value_name = "MIB")]
        memory: Option<u32>,
        /// KEY=value; repeatable.
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// Containers of the same app reach each other by name.
        #[arg(long)]
        app: Option<String>,
        /// HOST:CONTAINER port to publish; repeatable.
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
        image: String,
        /// Replaces the image's command.
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Start a stopped container.
    Start { name: String },
    /// Stop a container (SIGTERM, then SIGKILL after its timeout).
    Stop { name: String },
    /// Stop and delete a container.
    Rm { name: String },
    /// Show the end of a container's output.
    Logs {
        name: String,
        /// How many bytes from the end.
        #[arg(long, default_value_t = 65536)]
        bytes: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ddaemon::logging::init();
    // The shim must stay single-threaded (libcontainer clones it): it
    // branches off before any runtime thread exists.
    if let Command::Shim { dir } = &cli.command {
        std::process::exit(ddaemon_runtime::container_shim::run_shim(dir));
    }
    if let Command::RunBundle { id, root, bundle } = &cli.command {
        match ddaemon_runtime::container_shim::run_bundle(id, bundle, root) {
            Ok(code) => std::process::exit(code),
            Err(err) => anyhow::bail!("running the bundle failed: {err}"),
        }
    }
    // One TLS crypto provider in the whole program, chosen here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The runtime is built here rather than with #[tokio::main] so that the
    // container shim, which must stay single-threaded, can branch off first.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve {
            data,
            listen,
            socket,
            listen_tls,
            no_tls,
            catalog,
            insecure_registries,
            zoneinfo,
            bridge_address,
            no_container_network,
            no_mdns,
            power_control,
            recovery,
            recovery_unattended,
            udev_data,
            unix_users,
            smbd_pid_file,
            acme_check_every,
            ddns_check_every,
            wg_interface,
        } => runtime
            .block_on(serve(ServeOptions {
                data_dir: data,
                listen,
                listen_tls: (!no_tls).then_some(listen_tls),
                catalog,
                socket,
                zoneinfo,
                insecure_registries,
                bridge_address: (!no_container_network).then_some(bridge_address),
                mdns: !no_mdns,
                power_control,
                recovery,
                recovery_unattended,
                udev_data,
                unix_users,
                smbd_pid_file,
                acme_check_every: std::time::Duration::from_secs(acme_check_every.max(1)),
                ddns_check_every: std::time::Duration::from_secs(ddns_check_every.max(1)),
                wg_interface,
            }))
            .context("ddaemon serve failed"),
        Command::Status { socket, json } => runtime
            .block_on(ddaemon::cli::print_status(&socket, json))
            .context("ddaemon status failed"),
        Command::Image { socket, action } => {
            runtime.block_on(image(&ApiClient::new(&socket), action))
        }
        Command::Disk { socket, action } => {
            runtime.block_on(disk(&ApiClient::new(&socket), action))
        }
        Command::Share { socket, action } => {
            runtime.block_on(share(&ApiClient::new(&socket), action))
        }
        Command::Backup { socket, action } => {
            runtime.block_on(backup(&ApiClient::new(&socket), action))
        }
        Command::Update { socket, action } => {
            runtime.block_on(update(&ApiClient::new(&socket), action))
        }
        Command::Vpn { socket, action } => runtime.block_on(vpn(&ApiClient::new(&socket), action)),
        Command::Domain { socket, action } => {
            runtime.block_on(domain(&ApiClient::new(&socket), action))
        }
        Command::Health { socket, wait, unit } => runtime
            .block_on(ddaemon::cli::update::wait_healthy(
                &ApiClient::new(&socket),
                std::time::Duration::from_secs(wait),
                unit.as_deref(),
            ))
            .context("ddaemon health failed"),
        Command::Container { socket, action } => {
            runtime.block_on(container(&ApiClient::new(&socket), action))
        }
        Command::App {
            action: AppAction::Import { file, id, out },
            ..
        } => import(&file, &id, out.as_deref()),
        Command::App { socket, action } => runtime.block_on(app(&ApiClient::new(&socket), action)),
        Command::Shim { .. } | Command::RunBundle { .. } => Ok(()),
    }
}

/// Waits for the job just started and fails if it failed.
async fn follow_backup_job(client: &ApiClient, kind: &str) -> anyhow::Result<()> {
    let status = ddaemon::cli::backups::follow(client).await?;
    let Some(run) = status.runs.iter().find(|r| r.kind == kind) else {
        anyhow::bail!("the {kind} left no record");
    };
    match run.ok {
        Some(true) => Ok(()),
        _ => anyhow::bail!(
            "the {kind} failed: {}",
            run.error.as_deref().unwrap_or("no reason recorded")
        ),
    }
}

async fn backup(client: &ApiClient, action: BackupAction) -> anyhow::Result<()> {
    use ddaemon::backup::{ConfigRequest, Retention, Schedule, Target};
    use ddaemon::cli::backups;
    match action {
        BackupAction::Target {
            folder,
            rest,
            sftp,
            port,
            rclone,
            rclone_config,
            time,
            no_schedule,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            recovery_key,
        } => {
            let target = match (folder, rest, sftp, rclone) {
                (Some(path), ..) => Target::Folder {
                    path: std::path::absolute(&path)?.to_string_lossy().into_owned(),
                },
                (_, Some(url), ..) => Target::Rest { url },
                (_, _, Some(spec), _) => {
                    let (user, rest) = spec.split_once('@').context("--sftp is USER@HOST:PATH")?;
                    let (host, path) = rest.split_once(':').context("--sftp is USER@HOST:PATH")?;
                    Target::Sftp {
                        host: host.into(),
                        port,
                        user: user.into(),
                        path: path.into(),
                    }
                }
                (_, _, _, Some(remote)) => {
                    let file = rclone_config.context("--rclone needs --rclone-config FILE")?;
                    let config = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    Target::Rclone { remote, config }
                }
                _ => anyhow::bail!("say where: --folder, --rest, --sftp or --rclone"),
            };
            let request = ConfigRequest {
                target,
                schedule: Schedule {
                    enabled: !no_schedule,
                    time,
                },
                retention: Retention {
                    last: keep_last,
                    daily: keep_daily,
                    weekly: keep_weekly,
                    monthly: keep_monthly,
                },
                recovery_key,
            };
            let done = backups::configure(client, &request)
                .await
                .context("the backup target was not set")?;
            if let Some(key) = &done.recovery_key {
                println!(
                    "Recovery key: {key}\n\nWrite it down and keep it away from this device. \
                     Without it nobody, not even you, can read these backups on another \
                     device; it is shown only this once."
                );
            }
            println!(
                "{}",
                match (done.created, &done.recovery_key) {
                    (true, Some(_)) => "A new backup repository was created.",
                    (true, None) => {
                        "A new backup repository was created; it opens with the recovery key you wrote down before."
                    }
                    (false, _) => "The backups already there will be added to.",
                }
            );
        }
        BackupAction::Run => {
            backups::start(client, "run", &serde_json::json!({})).await?;
            follow_backup_job(client, "backup").await?;
            let status = backups::status(client).await?;
            if let Some(run) = status.runs.first() {
                println!(
                    "Backed up in {:.1} s: {} new, {} new files, {} changed.",
                    run.seconds,
                    ddaemon::system::format_bytes(run.bytes_added),
                    run.files_new,
                    run.files_changed
                );
                for p in &run.paused {
                    println!("{} was paused for {:.1} s", p.app, p.seconds);
                }
            }
        }
        BackupAction::Ls { json } => {
            let list = backups::snapshots(client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", backups::snapshots_text(&list));
            }
        }
        BackupAction::Restore { snapshot, app } => {
            backups::start(
                client,
                "restore",
                &serde_json::json!({ "app": app, "snapshot": snapshot }),
            )
            .await
            .context("the restore did not start")?;
            if app.is_some() {
                follow_backup_job(client, "restore").await?;
                println!("Restored.");
            } else {
                println!("Restoring the device; it restarts when done.");
            }
        }
        BackupAction::Check => {
            backups::start(client, "check", &serde_json::json!({})).await?;
            follow_backup_job(client, "check").await?;
            println!("The backups are sound.");
        }
        BackupAction::Status { json } => {
            let status = backups::status(client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                match &status.target_description {
                    Some(t) => println!("Backups go to {t}."),
                    None => println!("Backups are not set up."),
                }
                for run in status.runs.iter().take(5) {
                    println!(
                        "{} {}: {}",
                        run.kind,
                        run.started_at,
                        match run.ok {
                            Some(true) => "done".to_owned(),
                            Some(false) =>
                                format!("failed: {}", run.error.as_deref().unwrap_or("")),
                            None => "running".to_owned(),
                        }
                    );
                }
                if let Some(key) = &status.ssh_public_key {
                    println!("SFTP key: {key}");
                }
            }
        }
    }
    Ok(())
}

async fn vpn(client: &ApiClient, action: VpnAction) -> anyhow::Result<()> {
    use ddaemon::cli::vpn;
    let status = match action {
        VpnAction::Status { json: true } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&vpn::status(client).await?)?
            );
            return Ok(());
        }
        VpnAction::Status { json: false } => vpn::status(client).await?,
        VpnAction::On { endpoint, port } => {
            let request =
                serde_json::json!({"enabled": true, "endpoint": endpoint, "listen_port": port});
            vpn::set(client, &request)
                .await
                .context("remote access was not turned on")?
        }
        VpnAction::Off => vpn::set(client, &serde_json::json!({"enabled": false}))
            .await
            .context("remote access was not turned off")?,
        VpnAction::Add { name, qr } => {
            let peer = vpn::add(client, &name)
                .await
                .with_context(|| format!("{name} was not added"))?;
            print!("{}", peer.config);
            if qr {
                let code = qrcode::QrCode::new(peer.config.as_bytes())
                    .context("the configuration does not fit a QR code")?;
                println!(
                    "{}",
                    code.render::<qrcode::render::unicode::Dense1x2>().build()
                );
            }
            return Ok(());
        }
        VpnAction::Rm { name } => vpn::remove(client, &name)
            .await
            .with_context(|| format!("{name} was not removed"))?,
    };
    print!("{}", vpn::status_text(&status));
    Ok(())
}

async fn domain(client: &ApiClient, action: DomainAction) -> anyhow::Result<()> {
    use ddaemon::cli::domain;
    let status = match action {
        DomainAction::Status { json: true } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&domain::status(client).await?)?
            );
            return Ok(());
        }
        DomainAction::Status { json: false } => domain::status(client).await?,
        DomainAction::Set {
            domain: name,
            acme_directory,
            acme_email,
            acme_ca,
            port_forwarding,
        } => {
            let acme_ca = match acme_ca {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => None,
            };
            let request = serde_json::json!({
                "domain": name, "acme_directory": acme_directory,
                "acme_email": acme_email, "acme_ca": acme_ca,
                "port_forwarding": port_forwarding,
            });
            domain::set(client, &request)
                .await
                .context("the domain was not set")?
        }
        DomainAction::Ddns {
            server,
            zone,
            key_file,
            address_from,
            off: _,
        } => {
            let (key_name, key_algorithm, key_secret) = match &key_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    ddaemon::domain::ddns::parse_key_file(&text).with_context(|| {
                        format!(
                            "{} is not a TSIG key file like tsig-keygen writes (key \"NAME\" {{ algorithm ...; secret \"...\"; }};)",
                            path.display()
                        )
                    })?
                }
                None => Default::default(),
            };
            let request = serde_json::json!({
                "server": server.unwrap_or_default(), "zone": zone.unwrap_or_default(),
                "key_name": key_name, "key_algorithm": key_algorithm, "key_secret": key_secret,
                "address_from": address_from.unwrap_or_default(),
            });
            domain::set_ddns(client, &request)
                .await
                .context("dynamic DNS was not set up")?
        }
        DomainAction::Public { app } => domain::set_public(client, &app, true)
            .await
            .with_context(|| format!("{app} was not made public"))?,
        DomainAction::Private { app } => domain::set_public(client, &app, false)
            .await
            .with_context(|| format!("{app} was not made private"))?,
    };
    print!("{}", domain::status_text(&status));
    Ok(())
}

async fn share(client: &ApiClient, action: ShareAction) -> anyhow::Result<()> {
    use ddaemon::cli::shares;
    match action {
        ShareAction::Add {
            name,
            path,
            read_only,
            users,
            time_machine,
            nfs,
        } => {
            // The supervisor resolves paths from its own folder, not ours.
            let path = std::path::absolute(&path)
                .with_context(|| format!("{} cannot be resolved", path.display()))?;
            let request = serde_json::json!({
                "name": name, "path": path, "read_only": read_only,
                "users": users, "time_machine": time_machine, "nfs": nfs,
            });
            let share = shares::add(client, &request)
                .await
                .with_context(|| format!("{} was not shared", path.display()))?;
            println!("{} is shared as {}", share.path, share.name);
        }
        ShareAction::Ls { json } => {
            let list = shares::list(client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", shares::shares_text(&list));
            }
        }
        ShareAction::Rm { name } => {
            shares::remove(client, &name)
                .await
                .with_context(|| format!("{name} was not removed"))?;
            println!("{name} is no longer shared; its files stay");
        }
    }
    Ok(())
}

async fn disk(client: &ApiClient, action: DiskAction) -> anyhow::Result<()> {
    use ddaemon::cli::disks;
    match action {
        DiskAction::Ls { json } => {
            let list = disks::list(client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", disks::disks_text(&list));
            }
        }
        DiskAction::Mount { uuid } => {
            let mounted = disks::mount(client, &uuid)
                .await
                .with_context(|| format!("{uuid} was not mounted"))?;
            println!("mounted at {}", mounted.folder);
        }
        DiskAction::Unmount { uuid } => {
            disks::unmount(client, &uuid)
                .await
                .with_context(|| format!("{uuid} was not unmounted"))?;
            println!("unmounted; the disk can be unplugged");
        }
        DiskAction::Format {
            disk,
            serial,
            label,
        } => {
            eprintln!("erasing {disk} and making an ext4 filesystem labelled {label}…");
            let mounted = disks::format(client, &disk, &serial, &label)
                .await
                .with_context(|| format!("{disk} was not formatted"))?;
            println!("formatted and mounted at {}", mounted.folder);
        }
    }
    Ok(())
}

async fn update(client: &ApiClient, action: UpdateAction) -> anyhow::Result<()> {
    use ddaemon::cli::update;
    match action {
        UpdateAction::Status { json } => {
            let status = update::status(client).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", update::status_text(&status));
            }
        }
        UpdateAction::Apply { source, no_restart } => {
            let done = if source.starts_with("http://") || source.starts_with("https://") {
                eprintln!("the device is downloading {source}…");
                update::apply_url(client, &source, !no_restart).await
            } else {
                eprintln!("sending {source} to the supervisor…");
                update::apply(client, Path::new(&source), !no_restart).await
            }
            .with_context(|| format!("{source} was not installed"))?;
            println!(
                "version {} installed; {}",
                done["version"].as_str().unwrap_or("?"),
                if no_restart {
                    "it starts at the next restart"
                } else {
                    "the device is restarting into it"
                }
            );
        }
        UpdateAction::SwitchBack { no_restart } => {
            let done = update::switch_back(client, !no_restart).await?;
            println!(
                "slot {} starts next{}",
                done["slot"].as_str().unwrap_or("?").to_uppercase(),
                if no_restart { "" } else { "; restarting" }
            );
        }
    }
    Ok(())
}

fn import(file: &Path, id: &str, out: Option<&Path>) -> anyhow::Result<()> {
    let yaml =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let imported = ddaemon::apps::compose_import::import(&yaml, id)
        .with_context(|| format!("cannot import {}", file.display()))?;
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    let text = toml::to_string_pretty(&imported.manifest).context("cannot write the manifest")?;
    match out {
        Some(path) => {
            ddaemon_runtime::fs_atomic::write_atomic(path, text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn read_manifest(path: Option<&Path>) -> anyhow::Result<Option<String>> {
    path.map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()
}

async fn app(client: &ApiClient, action: AppAction) -> anyhow::Result<()> {
    use ddaemon::cli::apps::{self, Outcome};
    let ready = |outcome: Outcome| match outcome {
        Outcome::Ready(a) => println!(
            "{} {} is running: {} (also port {} of the device)",
            a.title, a.version, a.url, a.port
        ),
        Outcome::Gone => println!("gone"),
    };
    match action {
        AppAction::Import { .. } => unreachable!("handled without a supervisor"),
        AppAction::Install {
            id,
            manifest,
            no_wait,
        } => {
            let request =
                serde_json::json!({ "id": id, "manifest": read_manifest(manifest.as_deref())? });
            let a = apps::install(client, &request)
                .await
                .context("the install was refused")?;
            eprintln!("installing {} {} (port {})", a.title, a.version, a.port);
            if !no_wait {
                ready(
                    apps::follow(client, &a.id)
                        .await
                        .with_context(|| format!("installing {} failed", a.id))?,
                );
            }
        }
        AppAction::Ls => print!(
            "{}",
            apps::list(client).await.context("listing apps failed")?
        ),
        AppAction::Start { id } => println!("{}", app_action(client, &id, "start").await?),
        AppAction::Stop { id } => println!("{}", app_action(client, &id, "stop").await?),
        AppAction::Restart { id } => println!("{}", app_action(client, &id, "restart").await?),
        AppAction::Update {
            id,
            manifest,
            no_wait,
        } => {
            let a = apps::update(client, &id, read_manifest(manifest.as_deref())?)
                .await
                .context("the update was refused")?;
            eprintln!("updating {} to {}", a.id, a.version);
            if !no_wait {
                ready(
                    apps::follow(client, &id)
                        .await
                        .with_context(|| format!("updating {id} failed"))?,
                );
            }
        }
        AppAction::Remove { id, purge, no_wait } => {
            apps::remove(client, &id, purge)
                .await
                .with_context(|| format!("removing {id} was refused"))?;
            if !no_wait {
                apps::follow(client, &id)
                    .await
                    .with_context(|| format!("removing {id} failed"))?;
            }
            println!(
                "removed {id}{}",
                if purge {
                    " and its data"
                } else {
                    " (its data is kept)"
                }
            );
        }
        AppAction::Logs { id, service, bytes } => {
            let out = apps::logs(client, &id, service.as_deref(), bytes)
                .await
                .with_context(|| format!("reading the logs of {id} failed"))?;
            use std::io::Write as _;
            std::io::stdout().write_all(&out)?;
        }
    }
    Ok(())
}

async fn app_action(client: &ApiClient, id: &str, action: &str) -> anyhow::Result<String> {
    let a = ddaemon::cli::apps::action(client, id, action)
        .await
        .with_context(|| format!("{action} {id} failed"))?;
    Ok(format!("{} {}", a.id, a.state))
}

async fn container(client: &ApiClient, action: ContainerAction) -> anyhow::Result<()> {
    use ddaemon::cli::containers;
    match action {
        ContainerAction::Ls => print!(
            "{}",
            containers::list(client)
                .await
                .context("listing containers failed")?
        ),
        ContainerAction::Run {
            name,
            restart,
            memory,
            env,
            app,
            publish,
            image,
            command,
        } => {
            let request = serde_json::json!({
                "name": name,
                "image": image,
                "command": (!command.is_empty()).then_some(command),
                "env": env,
                "restart": restart,
                "memory_mib": memory,
                "app": app,
                "publish": publish,
            });
            let c = containers::run(client, &request)
                .await
                .with_context(|| format!("running {name} failed"))?;
            println!("{} {}", c.name, c.state);
        }
        ContainerAction::Start { name } => {
            let c = containers::action(client, &name, "start")
                .await
                .with_context(|| format!("starting {name} failed"))?;
            println!("{} {}", c.name, c.state);
        }
        ContainerAction::Stop { name } => {
            let c = containers::action(client, &name, "stop")
                .await
                .with_context(|| format!("stopping {name} failed"))?;
            println!("{} {}", c.name, c.state);
        }
        ContainerAction::Rm { name } => {
            containers::remove(client, &name)
                .await
                .with_context(|| format!("removing {name} failed"))?;
            println!("removed {name}");
        }
        ContainerAction::Logs { name, bytes } => {
            let out = containers::logs(client, &name, bytes)
                .await
                .with_context(|| format!("reading the logs of {name} failed"))?;
            use std::io::Write as _;
            std::io::stdout().write_all(&out)?;
        }
    }
    Ok(())
}

async fn image(client: &ApiClient, action: ImageAction) -> anyhow::Result<()> {
    match action {
        ImageAction::Pull { reference } => {
            let image = images::pull(client, &reference)
                .await
                .with_context(|| format!("pulling {reference} failed"))?;
            println!(
                "{} {} ({})",
                image.reference,
                image.digest,
                format_bytes(image.size)
            );
        }
        ImageAction::Ls => print!(
            "{}",
            images::list(client)
                .await
                .context("listing images failed")?
        ),
        ImageAction::Rm { reference } => {
            let removed = images::remove(client, &reference)
                .await
                .with_context(|| format!("removing {reference} failed"))?;
            println!(
                "removed {} ({} blobs and {} layers freed)",
                removed.removed.reference, removed.blobs_removed, removed.layers_removed
            );
        }
        ImageAction::Load { file, name } => {
            let loaded = images::load(client, &file, name.as_deref())
                .await
                .with_context(|| format!("loading {} failed", file.display()))?;
            for image in loaded {
                println!("loaded {} {}", image.reference, image.digest);
            }
        }
    }
    Ok(())
}
