//! mDNS (`mdns-sd`): the device answers as `DEVICE.local` and every app as
//! `APP.local` on the home network — A and AAAA records for each address of
//! the device's own interfaces (never the container bridge) — each with an
//! `_http._tcp` service named by its title, so apps show up in Bonjour
//! browsers. The device's own services (file sharing: `_smb._tcp`,
//! `_adisk._tcp` for Time Machine, `_nfs._tcp` per export) are announced
//! on `DEVICE.local` through [`Mdns::set_device_services`].
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

use ddaemon_runtime::network::{home_addresses, is_container_link};
use mdns_sd::{DaemonEvent, IfKind, IfPredicate, RRType, ServiceDaemon, ServiceInfo};
use tokio::sync::watch;

use crate::proxy::RouteTable;

const HTTP_SERVICE: &str = "_http._tcp";

/// Why the responder could not start.
#[derive(Debug, thiserror::Error)]
#[error("mDNS responder: {0}")]
pub struct MdnsError(#[from] mdns_sd::Error);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Wanted {
    device: String,
    /// Name (a DNS label) → title.
    names: BTreeMap<String, String>,
    services: Vec<DeviceService>,
}

/// A service the device itself offers, announced on `DEVICE.local`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceService {
    /// `_smb._tcp` and the like.
    pub kind: &'static str,
    /// The instance name; the device's name when `None`.
    pub instance: Option<String>,
    pub port: u16,
    pub txt: Vec<(String, String)>,
}

/// One service record set as handed to the responder; registered again
/// whenever any part of it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Announcement {
    kind: String,
    instance: String,
    host: String,
    port: u16,
    txt: Vec<(String, String)>,
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
                services: Vec::new(),
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

    /// Replaces the device's own services (what the shares offer now).
    pub fn set_device_services(&self, mut services: Vec<DeviceService>) {
        services.sort();
        services.dedup();
        self.wanted.send_if_modified(|w| {
            let changed = w.services != services;
            w.services = services;
            changed
        });
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
        let mut registered = Registered::new();
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
    home_addresses()
        .into_iter()
        .map(|(name, a)| (name, a.ip))
        .collect()
}

/// What the responder holds: a key (an app's name, or a device service's
/// kind and instance) → the announcement and its full service name.
type Registered = HashMap<String, (Announcement, String)>;

/// Unregisters every name, waiting (briefly) for the goodbyes to go out.
async fn withdraw_all(daemon: &ServiceDaemon, registered: &mut Registered) {
    for (key, (_, fullname)) in registered.drain() {
        if let Ok(done) = daemon.unregister(&fullname) {
            let _ = tokio::time::timeout(Duration::from_secs(2), done.recv_async()).await;
        }
        tracing::debug!(%key, "mDNS service withdrawn");
    }
}

fn service_info(a: &Announcement) -> Option<ServiceInfo> {
    let txt: Vec<(&str, &str)> = a
        .txt
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    match ServiceInfo::new(
        &format!("{}.local.", a.kind),
        &a.instance,
        &format!("{}.local.", a.host),
        (),
        a.port,
        txt.as_slice(),
    ) {
        Ok(info) => Some(info.enable_addr_auto()),
        Err(err) => {
            tracing::warn!(host = %a.host, kind = %a.kind, %err, "cannot describe the service for mDNS");
            None
        }
    }
}

/// Every announcement `wanted` asks for, by key.
fn announcements(wanted: &Wanted) -> BTreeMap<String, Announcement> {
    let mut titles: BTreeMap<&str, &str> = wanted
        .names
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    titles.insert(&wanted.device, &wanted.device);
    // Service instances are named by title, and two with one name would be
    // one service: a title used twice gets the name beside it.
    let mut all: BTreeMap<String, Announcement> = titles
        .iter()
        .map(|(name, title)| {
            let shared = titles.values().filter(|t| *t == title).count() > 1;
            let instance = if shared {
                format!("{title} ({name})")
            } else {
                (*title).to_owned()
            };
            let web = Announcement {
                kind: HTTP_SERVICE.to_owned(),
                instance,
                host: (*name).to_owned(),
                port: 80,
                txt: vec![("path".to_owned(), "/".to_owned())],
            };
            ((*name).to_owned(), web)
        })
        .collect();
    for s in &wanted.services {
        let instance = s.instance.clone().unwrap_or_else(|| wanted.device.clone());
        // Keys of apps are DNS labels: a key with a space or a dot never
        // meets one.
        all.insert(
            format!("{} {instance}", s.kind),
            Announcement {
                kind: s.kind.to_owned(),
                instance,
                host: wanted.device.clone(),
                port: s.port,
                txt: s.txt.clone(),
            },
        );
    }
    all
}

/// Registers what is wanted and not registered, unregisters the rest.
fn reconcile(daemon: &ServiceDaemon, wanted: &Wanted, registered: &mut Registered) {
    let all = announcements(wanted);
    registered.retain(|key, (announced, fullname)| {
        let keep = all.get(key) == Some(&*announced);
        if !keep {
            if let Err(err) = daemon.unregister(fullname) {
                tracing::warn!(%key, %err, "cannot withdraw the mDNS service");
            }
            tracing::info!(%key, "mDNS service withdrawn");
        }
        keep
    });
    for (key, announcement) in all {
        if registered.contains_key(&key) {
            continue;
        }
        let Some(info) = service_info(&announcement) else {
            continue;
        };
        let fullname = info.get_fullname().to_owned();
        match daemon.register(info) {
            Ok(()) => {
                tracing::info!(%key, host = %announcement.host, "announcing over mDNS");
                registered.insert(key, (announcement, fullname));
            }
            Err(err) => tracing::warn!(%key, %err, "cannot announce over mDNS"),
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

    #[test]
    fn device_services_are_announced_on_the_device_name() {
        let mdns = Mdns::new("home");
        mdns.announce("home-app", "Home");
        mdns.set_device_services(vec![
            DeviceService {
                kind: "_smb._tcp",
                instance: None,
                port: 445,
                txt: vec![],
            },
            DeviceService {
                kind: "_nfs._tcp",
                instance: Some("Photos".into()),
                port: 2049,
                txt: vec![("path".into(), "/data/disks/Media/Photos".into())],
            },
        ]);
        let all = announcements(&mdns.wanted.borrow());
        let smb = &all["_smb._tcp home"];
        assert_eq!(
            (smb.host.as_str(), smb.instance.as_str(), smb.port),
            ("home", "home", 445)
        );
        let nfs = &all["_nfs._tcp Photos"];
        assert_eq!((nfs.host.as_str(), nfs.port), ("home", 2049));
        assert_eq!(all["home"].instance, "home");
        assert_eq!(all["home-app"].instance, "Home");
        assert_eq!(all.len(), 4);
        mdns.set_device_name("den");
        assert_eq!(
            announcements(&mdns.wanted.borrow())["_smb._tcp den"].host,
            "den"
        );
    }
}
