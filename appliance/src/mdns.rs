//! mDNS (`mdns-sd`): the device answers as `DEVICE.local` and every app as
//! `APP.local` on the home network — A and AAAA records for each address of
//! the device's own interfaces (never the container bridge) — each with an
//! `_http._tcp` service named by its title, so apps show up in Bonjour
//! browsers.
//!
//! Names come and go through [`Mdns::announce`] and [`Mdns::withdraw`]; a
//! background task keeps the responder in step. When another host already
//! holds a name, the responder takes `NAME-2.local` instead: the proxy then
//! routes that name too and the page shows it. Names are withdrawn (with
//! goodbye packets) on removal and on shutdown; addresses follow the
//! interfaces as they change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ddaemon_runtime::network::is_container_link;
use mdns_sd::{DaemonEvent, IfKind, IfPredicate, RRType, ServiceDaemon, ServiceInfo};
use tokio::sync::watch;

use crate::proxy::RouteTable;

const SERVICE_TYPE: &str = "_http._tcp.local.";

/// Why the responder could not start.
#[derive(Debug, thiserror::Error)]
#[error("mDNS responder: {0}")]
pub struct MdnsError(#[from] mdns_sd::Error);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Wanted {
    device: String,
    /// Name (a DNS label) → title.
    names: BTreeMap<String, String>,
}

/// The names the device wants announced; cheap to clone.
#[derive(Debug, Clone)]
pub struct Mdns {
    wanted: watch::Sender<Wanted>,
    /// Name → the name actually announced, for names the responder had to
    /// change because of a conflict.
    renamed: Arc<RwLock<HashMap<String, String>>>,
}

impl Mdns {
    /// Names for a device called `device`; nothing is sent until [`run`](Self::run).
    pub fn new(device: &str) -> Self {
        Self {
            wanted: watch::Sender::new(Wanted {
                device: device.to_owned(),
                names: BTreeMap::new(),
            }),
            renamed: Arc::default(),
        }
    }

    /// Announces `NAME.local` with an `_http._tcp` service called `title`.
    pub fn announce(&self, name: &str, title: &str) {
        self.wanted.send_if_modified(|w| {
            w.names.insert(name.to_owned(), title.to_owned()).as_deref() != Some(title)
        });
    }

    /// Stops announcing `NAME.local`.
    pub fn withdraw(&self, name: &str) {
        self.wanted
            .send_if_modified(|w| w.names.remove(name).is_some());
        self.renamed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// The device's own name changed (at setup).
    pub fn set_device_name(&self, device: &str) {
        self.wanted.send_if_modified(|w| {
            let changed = w.device != device;
            w.device = device.to_owned();
            changed
        });
    }

    /// The label `name` is really announced as (`jellyfin-2` after a conflict).
    pub fn announced_name(&self, name: &str) -> String {
        self.renamed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    /// Starts the responder on the device's own interfaces; it runs until
    /// `stop` turns true, then says goodbye for every name.
    pub fn run(
        &self,
        routes: RouteTable,
        stop: watch::Receiver<bool>,
    ) -> Result<tokio::task::JoinHandle<()>, MdnsError> {
        let (daemon, events) = start_responder()?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            me.serve(daemon, events, routes, stop).await;
        }))
    }

    async fn serve(
        self,
        mut daemon: ServiceDaemon,
        mut events: mdns_sd::Receiver<DaemonEvent>,
        routes: RouteTable,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut wanted = self.wanted.subscribe();
        // Name → (title, service full name) as registered.
        let mut registered: HashMap<String, (String, String)> = HashMap::new();
        let mut addresses = lan_addresses();
        let mut address_check = tokio::time::interval(Duration::from_secs(10));
        loop {
            let now = wanted.borrow_and_update().clone();
            reconcile(&daemon, &now, &mut registered);
            tokio::select! {
                changed = wanted.changed() => if changed.is_err() { break },
                _ = address_check.tick() => {
                    // mdns-sd notices a lost address but not always a new one
                    // on an interface it knows: start it afresh, and
                    // announce everything again.
                    let current = lan_addresses();
                    if current != addresses {
                        tracing::info!(?current, "the device's addresses changed; announcing again");
                        addresses = current;
                        withdraw_all(&daemon, &mut registered).await;
                        stop_responder(&daemon).await;
                        match start_responder() {
                            Ok((d, e)) => (daemon, events) = (d, e),
                            Err(err) => {
                                tracing::error!(%err, "mDNS stopped");
                                return;
                            }
                        }
                    }
                }
                event = events.recv_async() => match event {
                    Ok(DaemonEvent::NameChange(change))
                        if matches!(change.rr_type, RRType::A | RRType::AAAA) =>
                    {
                        self.renamed_by_conflict(&routes, &change.original, &change.new_name);
                    }
                    Ok(DaemonEvent::Error(err)) => tracing::warn!(%err, "mDNS"),
                    Ok(_) => {}
                    Err(_) => break,
                },
                // Dropping the guard inside keeps the future Send.
                _ = async { stop.wait_for(|s| *s).await.map(drop) } => break,
            }
        }
        withdraw_all(&daemon, &mut registered).await;
        stop_responder(&daemon).await;
    }

    fn renamed_by_conflict(&self, routes: &RouteTable, original: &str, new: &str) {
        let label = |host: &str| {
            host.trim_end_matches('.')
                .trim_end_matches(".local")
                .to_owned()
        };
        let (original, new) = (label(original), label(new));
        tracing::warn!(%original, %new, "another host on the network uses this name; answering as {new}.local");
        routes.set_alias(&new, &original);
        self.renamed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(original, new);
    }
}

/// A responder on the device's own interfaces, and its events.
fn start_responder() -> Result<(ServiceDaemon, mdns_sd::Receiver<DaemonEvent>), MdnsError> {
    let daemon = ServiceDaemon::new()?;
    daemon.disable_interface(IfKind::All)?;
    daemon.enable_interface(IfKind::Predicate(IfPredicate::new(|intf| {
        !intf.is_loopback() && !is_container_link(&intf.name)
    })))?;
    let events = daemon.monitor()?;
    Ok((daemon, events))
}

async fn stop_responder(daemon: &ServiceDaemon) {
    if let Ok(done) = daemon.shutdown() {
        let _ = tokio::time::timeout(Duration::from_secs(2), done.recv_async()).await;
    }
}

/// The addresses of the device's own interfaces (what mDNS announces).
fn lan_addresses() -> BTreeSet<(String, IpAddr)> {
    let Ok(all) = nix::ifaddrs::getifaddrs() else {
        return BTreeSet::new();
    };
    all.filter(|i| !is_container_link(&i.interface_name))
        .filter_map(|i| {
            let addr = i.address?;
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(addr.as_sockaddr_in6()?.ip())
            };
            (!ip.is_loopback()).then_some((i.interface_name, ip))
        })
        .collect()
}

/// Unregisters every name, waiting (briefly) for the goodbyes to go out.
async fn withdraw_all(daemon: &ServiceDaemon, registered: &mut HashMap<String, (String, String)>) {
    for (name, (_, fullname)) in registered.drain() {
        if let Ok(done) = daemon.unregister(&fullname) {
            let _ = tokio::time::timeout(Duration::from_secs(2), done.recv_async()).await;
        }
        tracing::debug!(%name, "mDNS name withdrawn");
    }
}

fn service_info(name: &str, title: &str) -> Option<ServiceInfo> {
    let host = format!("{name}.local.");
    match ServiceInfo::new(
        SERVICE_TYPE,
        title,
        &host,
        (),
        80,
        [("path", "/")].as_slice(),
    ) {
        Ok(info) => Some(info.enable_addr_auto()),
        Err(err) => {
            tracing::warn!(%name, %err, "cannot describe the name for mDNS");
            None
        }
    }
}

/// Registers what is wanted and not registered, unregisters the rest.
fn reconcile(
    daemon: &ServiceDaemon,
    wanted: &Wanted,
    registered: &mut HashMap<String, (String, String)>,
) {
    let mut titles: BTreeMap<&str, &str> = wanted
        .names
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    titles.insert(&wanted.device, &wanted.device);
    // Service instances are named by title, and two with one name would be
    // one service: a title used twice gets the name beside it.
    let all: BTreeMap<&str, String> = titles
        .iter()
        .map(|(name, title)| {
            let shared = titles.values().filter(|t| *t == title).count() > 1;
            let instance = if shared {
                format!("{title} ({name})")
            } else {
                (*title).to_owned()
            };
            (*name, instance)
        })
        .collect();
    registered.retain(|name, (title, fullname)| {
        let keep = all.get(name.as_str()) == Some(&*title);
        if !keep {
            if let Err(err) = daemon.unregister(fullname) {
                tracing::warn!(%name, %err, "cannot withdraw the mDNS name");
            }
            tracing::info!(%name, "mDNS name withdrawn");
        }
        keep
    });
    for (name, title) in all {
        if registered.contains_key(name) {
            continue;
        }
        let Some(info) = service_info(name, &title) else {
            continue;
        };
        let fullname = info.get_fullname().to_owned();
        match daemon.register(info) {
            Ok(()) => {
                tracing::info!(%name, "announcing {name}.local over mDNS");
                registered.insert(name.to_owned(), (title, fullname));
            }
            Err(err) => tracing::warn!(%name, %err, "cannot announce over mDNS"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_names_follow_announce_and_withdraw() {
        let mdns = Mdns::new("home");
        let rx = mdns.wanted.subscribe();
        mdns.announce("jellyfin", "Jellyfin");
        mdns.announce("jellyfin", "Jellyfin");
        assert_eq!(rx.borrow().names.len(), 1);
        mdns.renamed
            .write()
            .expect("lock")
            .insert("jellyfin".into(), "jellyfin-2".into());
        assert_eq!(mdns.announced_name("jellyfin"), "jellyfin-2");
        mdns.withdraw("jellyfin");
        assert!(rx.borrow().names.is_empty());
        assert_eq!(mdns.announced_name("jellyfin"), "jellyfin");
    }
}
