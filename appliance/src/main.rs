//! `ddaemon`: the supervisor daemon and its command line.

use std::net::SocketAddr;
use std::path::PathBuf;

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
        /// A registry (host[:port]) to reach over plain HTTP; repeatable.
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure_registries: Vec<String>,
        /// The tz database to offer and check time zones against.
        #[arg(long, default_value = ddaemon::system::SYSTEM_ZONEINFO, value_name = "DIR", hide = true)]
        zoneinfo: PathBuf,
    },
    /// Show what the System page shows, from the running supervisor.
    Status {
        #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Apps: import a Compose file as an app manifest.
    App {
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
    /// Images on the device: pull, list, remove, side-load.
    Image {
        #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        #[command(subcommand)]
        action: ImageAction,
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
            }))
            .context("ddaemon serve failed"),
        Command::Status { socket, json } => runtime
            .block_on(ddaemon::cli::print_status(&socket, json))
            .context("ddaemon status failed"),
        Command::Image { socket, action } => {
            runtime.block_on(image(&ApiClient::new(&socket), action))
        }
        Command::Container { socket, action } => {
            runtime.block_on(container(&ApiClient::new(&socket), action))
        }
        Command::App { action } => app(action),
        Command::Shim { .. } | Command::RunBundle { .. } => Ok(()),
    }
}

fn app(action: AppAction) -> anyhow::Result<()> {
    match action {
        AppAction::Import { file, id, out } => {
            let yaml = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let imported = ddaemon::apps::compose_import::import(&yaml, &id)
                .with_context(|| format!("cannot import {}", file.display()))?;
            for note in &imported.notes {
                eprintln!("note: {note}");
            }
            let text =
                toml::to_string_pretty(&imported.manifest).context("cannot write the manifest")?;
            match out {
                Some(path) => {
                    ddaemon_runtime::fs_atomic::write_atomic(&path, text.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
        }
    }
    Ok(())
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
