//! Debian's Avahi as a peer on a test's LAN namespace: what a laptop on
//! the home network would resolve and browse.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::test_net::TestNet;

/// Debian's Avahi in the LAN namespace, with its own D-Bus, in a mount
/// namespace whose /run is private (so it touches nothing of the host's).
pub struct AvahiPeer {
    holder: std::process::Child,
    daemons: Vec<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl AvahiPeer {
    pub fn start(net: &TestNet) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("avahi-daemon.conf");
        std::fs::write(
            &conf,
            format!(
                "[server]\nhost-name=lanpeer\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces={}\nenable-dbus=yes\nratelimit-burst=1000\n[publish]\npublish-workstation=no\n",
                net.lan_link
            ),
        )
        .expect("avahi conf");
        let holder = Command::new("ip")
            .args(["netns", "exec", &net.lan, "unshare", "-m", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /run && mkdir -p /run/dbus /run/avahi-daemon && exec sleep infinity")
            .spawn()
            .expect("namespace holder");
        let mut peer = Self {
            holder,
            daemons: Vec::new(),
            _dir: dir,
        };
        // Wait until the private /run is mounted.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !peer
            .run(&["test", "-d", "/run/avahi-daemon"])
            .status
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "the Avahi namespace did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = peer.run(&["dbus-daemon", "--system", "--fork"]);
        assert!(
            o.status.success(),
            "dbus-daemon: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let avahi = peer
            .command(&["avahi-daemon", "--no-drop-root", "--no-chroot", "-f"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("avahi-daemon");
        peer.daemons.push(avahi);
        peer
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.holder.id().to_string(), "-m", "-n", "--"])
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("nsenter")
    }

    /// The IPv4 address Avahi resolves `name` to, if any.
    pub fn resolve(&self, name: &str) -> Option<String> {
        // It exits 0 even when it fails: read what it prints.
        let o = self.run(&["timeout", "5", "avahi-resolve-host-name", "-4", name]);
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .nth(1)
            .map(str::to_owned)
    }

    /// `avahi-browse`'s parsable, resolved listing of the services of
    /// `kind` (`_http._tcp`), types as written rather than translated.
    pub fn browse(&self, kind: &str) -> String {
        let o = self.run(&["timeout", "10", "avahi-browse", "-rptk", kind]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Holds `NAME` for the address `addr` until dropped.
    pub fn publish_address(&mut self, name: &str, addr: &str) {
        let child = self
            .command(&["avahi-publish", "-a", "-R", name, addr])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("avahi-publish");
        self.daemons.push(child);
    }
}

impl Drop for AvahiPeer {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        // dbus-daemon forked away; it dies with the holder's namespace
        // only if asked: end it by its pid file.
        if let Ok(pid) =
            std::fs::read_to_string(format!("/proc/{}/root/run/dbus/pid", self.holder.id()))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
