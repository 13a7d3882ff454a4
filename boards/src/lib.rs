//! Board descriptions for ddaemon.
//!
//! This crate will own the parsing and validation of the TOML files beside it
//! (one per board: `x86_64-efi`, `rpi4`, `rpi5`, `qemu-arm64`), each holding
//! everything that differs between boards: architecture and Rust target,
//! Debian kernel and firmware packages, partition table kind, boot method,
//! console, kernel command line, device tree, reset-button line and status
//! LED. The image builder reads it to build, `ddaemon-init` and the
//! supervisor read it to know which button and LED to watch.
//!
//! It holds no board yet: the image work fills it.
