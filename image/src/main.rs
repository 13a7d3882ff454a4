//! `ddaemon-image build --board B`: builds a flashable disk image for a
//! board (see `ddaemon_image::build` for the steps).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ddaemon_image::build::BuildOptions;

#[derive(Debug, Parser)]
#[command(name = "ddaemon-image", version, about = "Builds ddaemon disk images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build `ddaemon-BOARD-VERSION.img.xz`, its sha256 and, for a Pi, its
    /// Raspberry Pi Imager entry.
    Build {
        /// A board of the boards folder (x86_64-efi, qemu-arm64, rpi4, rpi5).
        #[arg(long)]
        board: String,
        /// The folder of board files.
        #[arg(long, default_value_os_t = ddaemon_boards::source_dir())]
        boards: PathBuf,
        /// Where the image goes.
        #[arg(long, default_value = "target/images")]
        out: PathBuf,
        /// Scratch space for the root filesystem and partitions (a folder
        /// per board inside it).
        #[arg(long, default_value = "target/image-work")]
        work: PathBuf,
        /// Downloaded Debian packages, kept between builds (a folder per
        /// architecture inside it; delete it any time).
        #[arg(long, default_value = "target/image-cache")]
        cache: PathBuf,
        /// The ddaemon binary built for the board.
        #[arg(long, required_unless_present = "root_only")]
        ddaemon: Option<PathBuf>,
        /// The ddaemon-init binary built for the board.
        #[arg(long, required_unless_present = "root_only")]
        init: Option<PathBuf>,
        /// Only make (or reuse) the board's Debian root filesystem: the
        /// slow part, which needs no ddaemon binaries, so it can run while
        /// they compile.
        #[arg(long)]
        root_only: bool,
        /// The app catalog.
        #[arg(long, default_value = "appliance/catalog")]
        catalog: PathBuf,
        /// Where the image will be published (https://…/images), for the
        /// Raspberry Pi Imager entry; by default it names the built file.
        #[arg(long, value_name = "URL")]
        url_base: Option<String>,
    },
}

fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    match command {
        Command::Build {
            board,
            boards,
            out,
            work,
            cache,
            ddaemon,
            init,
            catalog,
            url_base,
            root_only,
        } => {
            let board = match ddaemon_boards::load(&boards, &board) {
                Ok(b) => b,
                Err(err) => {
                    eprintln!("ddaemon-image: {err}");
                    return ExitCode::from(2);
                }
            };
            // Reproducible: every timestamp from SOURCE_DATE_EPOCH when set.
            let source_date_epoch = std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let options = BuildOptions {
                work_dir: work.join(&board.id),
                cache_dir: cache.join(board.arch.debian_name()),
                board,
                out_dir: out,
                ddaemon: ddaemon.unwrap_or_default(),
                init: init.unwrap_or_default(),
                catalog,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                source_date_epoch,
                url_base,
            };
            let built = if root_only {
                options.debian_root_only()
            } else {
                options.build().map(drop)
            };
            match built {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("ddaemon-image: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
