//! The ddaemon supervisor.
//!
//! One process owns the device: the setup page and JSON API (`web`), who may
//! use them (`auth`), first-boot setup (`setup`), the state database
//! (`state`) and the device's own facts (`system`). The modules DESIGN.md
//! draws beside these (proxy, mdns, apps, runtime, shares, backup, storage)
//! arrive as siblings, each owning its state and talking to the others through
//! small typed interfaces.

pub mod apps;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod domain;
pub mod field_error;
pub mod logging;
pub mod mdns;
pub mod proxy;
pub mod serve;
pub mod setup;
pub mod state;
pub mod storage;
pub mod system;
pub mod tls;
pub mod vpn;
pub mod web;
