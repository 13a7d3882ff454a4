//! The CLI's commands that talk to a running supervisor over its Unix
//! socket, through the same JSON API the page uses.

mod api_client;
pub mod apps;
pub mod backups;
pub mod containers;
pub mod disks;
pub mod domain;
pub mod images;
pub mod shares;
mod status;
pub mod update;
pub mod vpn;

pub use api_client::{ApiClient, ClientError};
pub use status::{print_status, status_text};
