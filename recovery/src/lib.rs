//! Keeping a ddaemon device out of the bin.
//!
//! This crate will own signed A/B updates (verifying a bundle and writing the
//! slot not running), boot counting and automatic rollback through the boot
//! method's own mechanism (systemd-boot on x86, `tryboot` on the Pi), the
//! reset button's soft and factory resets, and recovery mode. It is shared by
//! `ddaemon-init` (before systemd) and the supervisor (the System page).
//!
//! It holds nothing yet: the recovery work fills it.
