//! Container networking: the `ddaemon0` bridge, one network namespace and
//! veth pair per container, addresses from a persisted allocator, and the
//! `ip ddaemon` nftables table (outbound NAT, published ports).
//!
//! It changes the network of the namespace the supervisor runs in — the
//! device's own on a real device, a test's namespace in tests — and nothing
//! else: its rules live in their own table, regenerated whole (in one nft
//! transaction) from the persisted state at every change.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::command::{CommandError, run};
use crate::fs_atomic::write_atomic;

/// The containers' bridge.
pub const BRIDGE: &str = "ddaemon0";

/// Whether a network interface is the containers' (the bridge or a
/// container's veth end), not one of the device's own.
pub fn is_container_link(name: &str) -> bool {
    name == BRIDGE || name.starts_with("vd")
}

/// An address of one of the device's own interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HomeAddress {
    pub ip: IpAddr,
    /// The prefix length of its network.
    pub prefix: u8,
}

/// The addresses of the device's own interfaces, by interface: not
/// loopback, not the containers' bridge or veths.
pub fn home_addresses() -> Vec<(String, HomeAddress)> {
    let Ok(all) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    all.filter(|i| !is_container_link(&i.interface_name))
        .filter_map(|i| {
            let (addr, mask) = (i.address?, i.netmask);
            let (ip, prefix) = if let Some(v4) = addr.as_sockaddr_in() {
                let bits = mask.and_then(|m| m.as_sockaddr_in().map(|m| u32::from(m.ip())));
                (IpAddr::V4(v4.ip()), bits.map_or(32, u32::count_ones))
            } else {
                let v6 = addr.as_sockaddr_in6()?;
                let bits = mask.and_then(|m| m.as_sockaddr_in6().map(|m| u128::from(m.ip())));
                (IpAddr::V6(v6.ip()), bits.map_or(128, u128::count_ones))
            };
            let prefix = u8::try_from(prefix).unwrap_or(128);
            (!ip.is_loopback()).then_some((i.interface_name, HomeAddress { ip, prefix }))
        })
        .collect()
}
const TIMEOUT: Duration = Duration::from_secs(20);

/// A container's whole `/etc/hosts`: loopback, then `peers`.
pub fn hosts_file(peers: &[String]) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for line in peers {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// The other containers of `id`'s app, as hosts lines.
fn peer_lines(state: &State, id: &str) -> Vec<String> {
    let Some(app) = state.leases.get(id).and_then(|l| l.app.as_deref()) else {
        return Vec::new();
    };
    state
        .leases
        .iter()
        .filter(|(other, lease)| *other != id && lease.app.as_deref() == Some(app))
        .map(|(other, lease)| {
            // An app's containers are named APP.SERVICE; its services know
            // each other by SERVICE, as in Compose.
            match other.strip_prefix(app).and_then(|s| s.strip_prefix('.')) {
                Some(service) => format!("{}\t{other} {service}", lease.address),
                None => format!("{}\t{other}", lease.address),
            }
        })
        .collect()
}

/// `tcp` or `udp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    fn nft(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A port of the device forwarded to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub host_port: u16,
    pub container_port: u16,
    /// Leases written before UDP existed are TCP.
    #[serde(default)]
    pub protocol: Protocol,
}

impl std::str::FromStr for PublishedPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
        match s.split_once(':') {
            Some((h, c)) => match (parse(h), parse(c)) {
                (Some(host_port), Some(container_port)) => Ok(Self {
                    host_port,
                    container_port,
                    protocol: Protocol::Tcp,
                }),
                _ => Err(format!(
                    "{s:?} is not HOST:CONTAINER with two ports from 1 to 65535"
                )),
            },
            None => Err(format!("{s:?} is not HOST:CONTAINER, e.g. 8080:80")),
        }
    }
}

/// One container's place on the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    /// Containers of the same app see each other by name.
    pub app: Option<String>,
    pub ports: Vec<PublishedPort>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    leases: BTreeMap<String, Lease>,
}

/// Why a network change failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("no free address left on {0}")]
    Full(String),
    #[error("port {0} is already published by container {1}")]
    PortTaken(u16, String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The bridge network and its state file.
#[derive(Debug, Clone)]
pub struct Network {
    state_file: PathBuf,
    /// The bridge's address; containers get the others of its /24.
    gateway: Ipv4Addr,
    /// Keeps namespace names apart when several supervisors share a
    /// machine (tests); a real device has one.
    tag: String,
}

impl Network {
    /// The network whose state is kept in `state_file`, on the /24 of `gateway`.
    pub fn new(state_file: &Path, gateway: Ipv4Addr) -> Self {
        let tag = hex::encode(&Sha256::digest(state_file.as_os_str().as_encoded_bytes())[..3]);
        Self {
            state_file: state_file.to_owned(),
            gateway,
            tag,
        }
    }

    /// The subnet, `a.b.c.0/24`.
    pub fn subnet(&self) -> String {
        let [a, b, c, _] = self.gateway.octets();
        format!("{a}.{b}.{c}.0/24")
    }

    /// The namespace path a container's spec joins.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(self.netns_name(id))
    }

    fn netns_name(&self, id: &str) -> String {
        format!("ddaemon-{}-{id}", self.tag)
    }

    fn veth_name(&self, id: &str) -> String {
        // Interface names have 15 bytes at most.
        let hash = Sha256::digest(format!("{}/{id}", self.tag).as_bytes());
        format!("vd{}", &hex::encode(hash)[..10])
    }

    fn read_state(&self) -> Result<State, NetworkError> {
        match std::fs::read(&self.state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| NetworkError::Io {
                path: self.state_file.clone(),
                source: std::io::Error::other(e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(NetworkError::Io {
                path: self.state_file.clone(),
                source,
            }),
        }
    }

    fn write_state(&self, state: &State) -> Result<(), NetworkError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| NetworkError::Io {
            path: self.state_file.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.state_file, &bytes).map_err(|source| NetworkError::Io {
            path: self.state_file.clone(),
            source,
        })
    }

    /// Every container with an address.
    pub fn leased_ids(&self) -> Result<Vec<String>, NetworkError> {
        Ok(self.read_state()?.leases.into_keys().collect())
    }

    /// The lease of a container, if it has one.
    pub fn lease(&self, id: &str) -> Result<Option<Lease>, NetworkError> {
        Ok(self.read_state()?.leases.get(id).cloned())
    }

    /// `/etc/hosts` lines for a container: the other containers of its app.
    pub fn hosts_for(&self, id: &str) -> Result<Vec<String>, NetworkError> {
        Ok(peer_lines(&self.read_state()?, id))
    }

    /// The `/etc/hosts` lines of every container of `app`, from one read
    /// of the leases.
    pub fn app_hosts(&self, app: &str) -> Result<Vec<(String, Vec<String>)>, NetworkError> {
        let state = self.read_state()?;
        Ok(state
            .leases
            .iter()
            .filter(|(_, lease)| lease.app.as_deref() == Some(app))
            .map(|(id, _)| (id.clone(), peer_lines(&state, id)))
            .collect())
    }

    /// Gives a container an address (the same one again if it had one),
    /// its namespace and veth pair, and applies its published ports.
    pub async fn attach(
        &self,
        id: &str,
        app: Option<String>,
        ports: Vec<PublishedPort>,
    ) -> Result<Lease, NetworkError> {
        let mut state = self.read_state()?;
        for port in &ports {
            if let Some((other, _)) = state.leases.iter().find(|(other, l)| {
                *other != id
                    && l.ports
                        .iter()
                        .any(|p| p.host_port == port.host_port && p.protocol == port.protocol)
            }) {
                return Err(NetworkError::PortTaken(port.host_port, other.clone()));
            }
        }
        let address = match state.leases.get(id) {
            Some(existing) => existing.address,
            None => self.free_address(&state)?,
        };
        let lease = Lease {
            address,
            app,
            ports,
        };
        // Recorded first: a crash below leaves a lease the next attach or
        // detach finds, never a namespace nobody knows about.
        state.leases.insert(id.to_owned(), lease.clone());
        self.write_state(&state)?;
        self.ensure_bridge().await?;
        self.plumb(id, address).await?;
        self.apply_rules(&state).await?;
        Ok(lease)
    }

    fn free_address(&self, state: &State) -> Result<Ipv4Addr, NetworkError> {
        let [a, b, c, g] = self.gateway.octets();
        (2..=254u8)
            .filter(|host| *host != g)
            .map(|host| Ipv4Addr::new(a, b, c, host))
            .find(|addr| !state.leases.values().any(|l| l.address == *addr))
            .ok_or_else(|| NetworkError::Full(self.subnet()))
    }

    async fn ensure_bridge(&self) -> Result<(), NetworkError> {
        if run("ip", &["link", "show", BRIDGE], None, TIMEOUT)
            .await
            .is_err()
        {
            run(
                "ip",
                &["link", "add", BRIDGE, "type", "bridge"],
                None,
                TIMEOUT,
            )
            .await?;
        }
        let cidr = format!("{}/24", self.gateway);
        let addrs = run("ip", &["-4", "addr", "show", "dev", BRIDGE], None, TIMEOUT).await?;
        if !addrs.contains(&cidr) {
            run("ip", &["addr", "add", &cidr, "dev", BRIDGE], None, TIMEOUT).await?;
        }
        run("ip", &["link", "set", BRIDGE, "up"], None, TIMEOUT).await?;
        // Forwarding for this namespace only (/proc/sys/net is per namespace).
        std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1").map_err(|source| {
            NetworkError::Io {
                path: "/proc/sys/net/ipv4/ip_forward".into(),
                source,
            }
        })?;
        Ok(())
    }

    async fn plumb(&self, id: &str, address: Ipv4Addr) -> Result<(), NetworkError> {
        let ns = self.netns_name(id);
        if !self.netns_path(id).exists() {
            run("ip", &["netns", "add", &ns], None, TIMEOUT).await?;
        }
        let veth = self.veth_name(id);
        if run("ip", &["link", "show", &veth], None, TIMEOUT)
            .await
            .is_err()
        {
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
                None,
                TIMEOUT,
            )
            .await?;
        }
        run(
            "ip",
            &["link", "set", &veth, "master", BRIDGE, "up"],
            None,
            TIMEOUT,
        )
        .await?;
        let cidr = format!("{address}/24");
        let inside = run(
            "ip",
            &["-n", &ns, "-4", "addr", "show", "dev", "eth0"],
            None,
            TIMEOUT,
        )
        .await?;
        if !inside.contains(&cidr) {
            run(
                "ip",
                &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"],
                None,
                TIMEOUT,
            )
            .await?;
        }
        run("ip", &["-n", &ns, "link", "set", "lo", "up"], None, TIMEOUT).await?;
        run(
            "ip",
            &["-n", &ns, "link", "set", "eth0", "up"],
            None,
            TIMEOUT,
        )
        .await?;
        let gateway = self.gateway.to_string();
        run(
            "ip",
            &["-n", &ns, "route", "replace", "default", "via", &gateway],
            None,
            TIMEOUT,
        )
        .await?;
        Ok(())
    }

    /// Removes a container's namespace, address and ports.
    pub async fn detach(&self, id: &str) -> Result<(), NetworkError> {
        let mut state = self.read_state()?;
        if self.netns_path(id).exists() {
            // The veth pair goes with the namespace.
            run("ip", &["netns", "del", &self.netns_name(id)], None, TIMEOUT).await?;
        }
        if state.leases.remove(id).is_some() {
            self.write_state(&state)?;
        }
        self.apply_rules(&state).await
    }

    /// The whole `ip ddaemon` table, from the leases.
    fn rules(&self, state: &State) -> String {
        let subnet = self.subnet();
        let mut dnat = String::new();
        for lease in state.leases.values() {
            for port in &lease.ports {
                dnat.push_str(&format!(
                    "    {} dport {} dnat to {}:{}\n",
                    port.protocol.nft(),
                    port.host_port,
                    lease.address,
                    port.container_port
                ));
            }
        }
        format!(
            "table ip ddaemon {{\n\
             \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump published\n  }}\n\
             \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n    fib daddr type local ip daddr != 127.0.0.0/8 jump published\n  }}\n\
             \x20 chain published {{\n{dnat}  }}\n\
             \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {subnet} oifname != \"{BRIDGE}\" masquerade\n  }}\n\
             }}\n"
        )
    }

    async fn apply_rules(&self, state: &State) -> Result<(), NetworkError> {
        // Create-then-delete makes the delete succeed when the table is new;
        // the new table follows in the same transaction.
        let mut script = String::from("add table ip ddaemon\ndelete table ip ddaemon\n");
        if !state.leases.is_empty() {
            script.push_str(&self.rules(state));
        }
        run("nft", &["-f", "-"], Some(&script), TIMEOUT).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_parse() {
        assert_eq!(
            "8080:80".parse(),
            Ok(PublishedPort {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
            })
        );
        for bad in ["80", "0:80", "70000:80", "a:b", ":80"] {
            assert!(bad.parse::<PublishedPort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_are_allocated_and_names_are_short() {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = Network::new(
            &dir.path().join("network.json"),
            Ipv4Addr::new(10, 88, 0, 1),
        );
        let mut state = State::default();
        let first = net.free_address(&state).expect("free");
        assert_eq!(first, Ipv4Addr::new(10, 88, 0, 2));
        state.leases.insert(
            "a".into(),
            Lease {
                address: first,
                app: Some("shop".into()),
                ports: vec![],
            },
        );
        let second = net.free_address(&state).expect("free");
        assert_eq!(second, Ipv4Addr::new(10, 88, 0, 3));
        state.leases.insert(
            "b".into(),
            Lease {
                address: second,
                app: Some("shop".into()),
                ports: vec![],
            },
        );
        net.write_state(&state).expect("write");
        assert_eq!(net.hosts_for("a").expect("hosts"), ["10.88.0.3\tb"]);
        assert!(net.veth_name("a-very-long-container-name").len() <= 15);
        let rules = net.rules(&state);
        assert!(
            rules.contains("masquerade") && rules.contains("10.88.0.0/24"),
            "{rules}"
        );
    }
}
