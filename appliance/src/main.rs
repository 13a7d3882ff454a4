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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ddaemon::logging::init();
    // The shim must stay single-threaded (libcontainer clones it): it
    // branches off before any runtime thread exists.
    if let Command::Shim { dir } = &cli.command {
        std::process::exit(ddaemon_runtime::container_shim::run_shim(dir));
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
            insecure_registries,
            zoneinfo,
        } => runtime
            .block_on(serve(ServeOptions {
                data_dir: data,
                listen,
                socket,
                zoneinfo,
                insecure_registries,
            }))
            .context("ddaemon serve failed"),
        Command::Status { socket, json } => runtime
            .block_on(ddaemon::cli::print_status(&socket, json))
            .context("ddaemon status failed"),
        Command::Image { socket, action } => {
            runtime.block_on(image(&ApiClient::new(&socket), action))
        }
        Command::Shim { .. } => Ok(()),
    }
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
