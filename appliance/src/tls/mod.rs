//! HTTPS on the home network: the device's own certificate authority and
//! leaf certificates for every `.local` name, made on demand.
//!
//! The CA is created on the device the first time the supervisor starts and
//! never leaves it (only its certificate is offered for download). It is
//! name-constrained to `.local`: an owner who trusts it trusts it for
//! nothing on the internet.

mod device_ca;
mod listener;

pub use device_ca::{CaError, DeviceCa};
pub use listener::serve_tls;
