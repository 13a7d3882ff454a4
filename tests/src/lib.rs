//! End-to-end tests of a whole ddaemon device.
//!
//! This crate will own the tests that boot the built image under QEMU and
//! drive it from outside as a person would: over HTTP on forwarded ports and
//! through the serial console (first boot, setup, app install, update and
//! rollback, reset). The supervisor's own tests against a spawned
//! `ddaemon serve` live beside it in `appliance/tests/`.
