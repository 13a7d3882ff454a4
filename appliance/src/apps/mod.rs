//! Apps: the manifest format, importing Compose files, and the catalog.
//!
//! Installing, updating and removing apps, the reverse proxy and mDNS build
//! on these (DESIGN.md's `apps`, `proxy` and `mdns` boxes).

pub mod catalog;
pub mod compose_import;
pub mod health;
pub mod lifecycle;
pub mod manifest;
pub mod secrets;
