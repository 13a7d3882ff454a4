//! The reverse proxy: requests for `APP.local` (or `APP.DEVICE.local`) go
//! to the app's web service; everything else reaches the supervisor's own
//! pages. It streams bodies both ways, tunnels upgrades (WebSocket), sets
//! the X-Forwarded headers, and answers a friendly 502 while an app starts.
//!
//! It owns forwarding and the route table; who is routed where is decided
//! by the apps (installed apps, and external apps the owner adds).

mod forward;
mod routes;

pub use forward::{Proxy, dispatch};
pub use routes::{Backend, RouteTable, host_name};
