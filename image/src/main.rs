//! `ddaemon-image build --board B`: builds a flashable disk image for a
//! board (see `ddaemon_image::build` for the steps); `ddaemon-image bundle`
//! makes a signed update bundle from the last build's root.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ddaemon_image::build::{BuildError, BuildOptions};

#[derive(Debug, Parser)]
#[command(
    name = "ddaemon-image",
    version,
    about = "Builds ddaemon disk images and update bundles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What both commands need.
#[derive(Debug, Args)]
struct Common {
    /// A board of the boards folder (x86_64-efi, qemu-arm64, rpi4, rpi5).
    #[arg(long)]
    board: String,
    /// The folder of board files.
    #[arg(long, default_value_os_t = ddaemon_boards::source_dir())]
    boards: PathBuf,
    /// Where the image and bundle go.
    #[arg(long, default_value = "target/images")]
    out: PathBuf,
    /// Scratch space for the root filesystem and partitions (a folder
    /// per board inside it).
    #[arg(long, default_value = "target/image-work")]
    work: PathBuf,
    /// The system version the image or bundle carries.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    version: String,
    /// The ed25519 key (PKCS#8 PEM, `openssl genpkey -algorithm ed25519`)
    /// that signs update bundles; the image trusts its public half. The
    /// default is the development key, whose private half is public.
    #[arg(long, env = "DDAEMON_SIGNING_KEY", default_value_os_t = default_key())]
    signing_key: PathBuf,
}

fn default_key() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys/development-only.pem")
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build `ddaemon-BOARD-VERSION.img.xz`, its sha256, its update bundle
    /// and, for a Pi, its Raspberry Pi Imager entry.
    Build {
        #[command(flatten)]
        common: Common,
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
    /// Make `ddaemon-BOARD-VERSION.ddaemon-update` from the last build of
    /// the board (its Debian root and binaries), stamped with --version.
    Bundle {
        #[command(flatten)]
        common: Common,
        /// Files laid over the root (a folder mirroring it), e.g. a
        /// systemd drop-in.
        #[arg(long, value_name = "DIR")]
        add: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    let result = match command {
        Command::Build {
            common,
            cache,
            ddaemon,
            init,
            root_only,
            catalog,
            url_base,
        } => options(common, Some(cache), catalog, url_base).and_then(|mut o| {
            o.ddaemon = ddaemon.unwrap_or_default();
            o.init = init.unwrap_or_default();
            if root_only {
                o.debian_root_only()
            } else {
                o.build().map(drop)
            }
        }),
        Command::Bundle { common, add } => {
            options(common, None, PathBuf::new(), None).and_then(|mut o| {
                // The binaries and catalog the last build installed.
                let root = o.work_dir.join("root");
                o.ddaemon = root.join("usr/bin/ddaemon");
                o.init = root.join("sbin/ddaemon-init");
                o.catalog = root.join("usr/share/ddaemon/catalog");
                let out = o.bundle(add.as_deref())?;
                eprintln!("update bundle: {}", out.display());
                Ok(())
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ddaemon-image: {err}");
            ExitCode::FAILURE
        }
    }
}

fn options(
    common: Common,
    cache: Option<PathBuf>,
    catalog: PathBuf,
    url_base: Option<String>,
) -> Result<BuildOptions, BuildError> {
    let board = ddaemon_boards::load(&common.boards, &common.board)
        .map_err(|e| BuildError::Unsupported(e.to_string()))?;
    // Reproducible: every timestamp from SOURCE_DATE_EPOCH when set.
    let source_date_epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(BuildOptions {
        work_dir: common.work.join(&board.id),
        cache_dir: cache
            .unwrap_or_else(|| PathBuf::from("target/image-cache"))
            .join(board.arch.debian_name()),
        board,
        out_dir: common.out,
        ddaemon: PathBuf::new(),
        init: PathBuf::new(),
        catalog,
        version: common.version,
        source_date_epoch,
        url_base,
        signing_key: common.signing_key,
    })
}
