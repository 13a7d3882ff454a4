//! A real OCI registry on loopback, removed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RegistryServer {
    pub dir: tempfile::TempDir,
    pub host: String,
    child: Child,
    /// The network namespace it listens in (`None`: the test's own).
    netns: Option<String>,
}

/// `command` run inside `netns` when one is given (nsenter switches only
/// the network namespace).
fn in_netns(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl RegistryServer {
    pub fn start() -> Self {
        Self::start_in(None)
    }

    /// A registry listening on loopback inside the namespace `netns`.
    pub fn start_in(netns: Option<&str>) -> Self {
        assert!(
            Path::new("/usr/bin/docker-registry").exists(),
            "docker-registry is not installed: run scripts/test (apt-get install docker-registry)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = in_netns(netns, "/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        let up = || match netns {
            Some(ns) => super::netns::run_in(ns, || std::net::TcpStream::connect(&host).is_ok()),
            None => std::net::TcpStream::connect(&host).is_ok(),
        };
        while !up() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            dir,
            host,
            child,
            netns: netns.map(str::to_owned),
        }
    }

    /// Pushes an OCI layout's tag (every platform of an index) with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str) {
        let out = in_netns(self.netns.as_deref(), "skopeo")
            .args([
                "copy",
                "--all",
                "--quiet",
                "--dest-tls-verify=false",
                "--preserve-digests",
            ])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Where the registry keeps a blob's bytes (to tamper with them).
    pub fn blob_data_path(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
