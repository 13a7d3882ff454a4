//! `ddaemon`: the supervisor daemon and its command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ddaemon::serve::{ServeOptions, serve};

/// The ddaemon supervisor and its command line.
#[derive(Debug, Parser)]
#[command(name = "ddaemon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
        /// The tz database to offer and check time zones against.
        #[arg(long, default_value = ddaemon::system::SYSTEM_ZONEINFO, value_name = "DIR", hide = true)]
        zoneinfo: PathBuf,
    },
    /// Show what the System page shows, from the running supervisor.
    Status {
        /// The supervisor's control socket.
        #[arg(long, default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

const DEFAULT_SOCKET: &str = "/run/ddaemon.sock";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ddaemon::logging::init();
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
            zoneinfo,
        } => runtime
            .block_on(serve(ServeOptions {
                data_dir: data,
                listen,
                socket,
                zoneinfo,
            }))
            .context("ddaemon serve failed"),
        Command::Status { socket, json } => runtime
            .block_on(ddaemon::cli::print_status(&socket, json))
            .context("ddaemon status failed"),
    }
}
