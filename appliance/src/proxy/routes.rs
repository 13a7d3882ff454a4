//! Which host name goes where.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

/// Where an app's web page is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The app's id, which is also its name: `ID.local`.
    pub app: String,
    /// What the 502 page calls it.
    pub title: String,
    pub addr: SocketAddr,
}

/// The routes, shared by every connection; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    by_app: Arc<RwLock<HashMap<String, Backend>>>,
    /// Other names of an app: `jellyfin-2` when mDNS had to rename it.
    aliases: Arc<RwLock<HashMap<String, String>>>,
}

/// The lower-cased name of a Host header, without port or final dot.
pub fn host_name(host: &str) -> String {
    let name = if host.starts_with('[') {
        host.split(']')
            .next()
            .unwrap_or(host)
            .trim_start_matches('[')
    } else {
        host.rsplit_once(':')
            .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(n, _)| n)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl RouteTable {
    /// Routes `ID.local` (and `ID.DEVICE.local`) to `backend`.
    pub fn set(&self, backend: Backend) {
        let mut map = self.by_app.write().unwrap_or_else(|p| p.into_inner());
        map.insert(backend.app.clone(), backend);
    }

    /// Stops routing an app, under all its names.
    pub fn remove(&self, app: &str) {
        let mut map = self.by_app.write().unwrap_or_else(|p| p.into_inner());
        map.remove(app);
        let mut aliases = self.aliases.write().unwrap_or_else(|p| p.into_inner());
        aliases.retain(|_, target| target != app);
    }

    /// Routes `ALIAS.local` wherever `app` goes.
    pub fn set_alias(&self, alias: &str, app: &str) {
        let mut aliases = self.aliases.write().unwrap_or_else(|p| p.into_inner());
        aliases.insert(alias.to_owned(), app.to_owned());
    }

    /// The backend for a Host header, if it names an app.
    pub fn lookup(&self, host: &str, device_name: Option<&str>) -> Option<Backend> {
        let name = host_name(host);
        let label = name.strip_suffix(".local")?;
        // APP.local, or APP.DEVICE.local for clients that browse under the device.
        let app = match (label.split_once('.'), device_name) {
            (None, _) => label,
            (Some((app, device)), Some(d)) if device == d => app,
            _ => return None,
        };
        let map = self.by_app.read().unwrap_or_else(|p| p.into_inner());
        if let Some(backend) = map.get(app) {
            return Some(backend.clone());
        }
        let aliases = self.aliases.read().unwrap_or_else(|p| p.into_inner());
        aliases.get(app).and_then(|target| map.get(target)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_and_device_names() {
        let table = RouteTable::default();
        let addr: SocketAddr = "10.88.0.2:80".parse().expect("addr");
        table.set(Backend {
            app: "jellyfin".into(),
            title: "Jellyfin".into(),
            addr,
        });
        assert_eq!(
            table.lookup("jellyfin.local", Some("home")).map(|b| b.addr),
            Some(addr)
        );
        assert_eq!(
            table
                .lookup("Jellyfin.LOCAL:80", Some("home"))
                .map(|b| b.addr),
            Some(addr)
        );
        assert_eq!(
            table
                .lookup("jellyfin.home.local", Some("home"))
                .map(|b| b.addr),
            Some(addr)
        );
        assert!(table.lookup("jellyfin.other.local", Some("home")).is_none());
        assert!(
            table.lookup("home.local", Some("home")).is_none(),
            "the device's own name is the dashboard"
        );
        assert!(table.lookup("127.0.0.1:8080", Some("home")).is_none());
        table.set_alias("jellyfin-2", "jellyfin");
        assert_eq!(
            table
                .lookup("jellyfin-2.local", Some("home"))
                .map(|b| b.addr),
            Some(addr)
        );
        table.remove("jellyfin");
        assert!(table.lookup("jellyfin.local", Some("home")).is_none());
        assert!(table.lookup("jellyfin-2.local", Some("home")).is_none());
    }
}
