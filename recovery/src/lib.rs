//! Keeping a ddaemon device out of the bin.
//!
//! - `button`: what a hold of the reset button or a series of power-button
//!   presses asks for;
//! - `bundle`: signed update bundles, written by the image builder and
//!   verified by the device while it streams them;
//! - `slots`: the two root slots and which boots next, through the boot
//!   method's own mechanism (systemd-boot boot counting, the Pi's tryboot);
//! - `install`: a verified bundle into the slot not running, in an order
//!   that keeps the running system bootable through a power cut.
//!
//! Shared by the image builder, `ddaemon-init` and the supervisor.

pub mod bundle;
pub mod button;
pub mod install;
pub mod slots;
