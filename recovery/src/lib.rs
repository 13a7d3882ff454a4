//! Keeping a ddaemon device out of the bin.
//!
//! Today it holds the reset button's press patterns (`button`: what a hold
//! or a series of power-button presses asks for). It will own signed A/B
//! updates (verifying a bundle and writing the slot not running), boot
//! counting and automatic rollback through the boot method's own mechanism
//! (systemd-boot on x86, `tryboot` on the Pi), carrying out the soft and
//! factory resets, and recovery mode. It is shared by `ddaemon-init`
//! (before systemd) and the supervisor (the System page).

pub mod button;
