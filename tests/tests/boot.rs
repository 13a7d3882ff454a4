//! The built x86_64-efi image, booted in QEMU (TCG, OVMF) as a newcomer
//! would: the setup page's API answers, setup completes, the setup
//! survives a power-off and boot, the data partition has grown to fill a
//! larger disk, and the root partition was never written.
//!
//! Needs the image: `scripts/build-image x86_64-efi` (scripts/test runs it).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn image() -> PathBuf {
    if let Ok(path) = std::env::var("DDAEMON_IMAGE") {
        return PathBuf::from(path);
    }
    let dir = repo().join("target/images");
    std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ddaemon-x86_64-efi-") && n.ends_with(".img.zst"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no image in {}: run scripts/build-image x86_64-efi",
                dir.display()
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `sfdisk --json` of the disk: (name, start sector, sectors) per partition.
fn partitions(disk: &Path) -> Vec<(String, u64, u64)> {
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .expect("sfdisk");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("sfdisk json");
    v["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["start"].as_u64().unwrap_or(0),
                p["size"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn sha_of_range(disk: &Path, start: u64, len: u64) -> String {
    use sha2::Digest as _;
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).expect("disk");
    f.seek(SeekFrom::Start(start)).expect("seek");
    let mut hasher = sha2::Sha256::new();
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = f
            .read(&mut buf[..usize::try_from(left.min(1 << 20)).expect("size")])
            .expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    hex::encode(hasher.finalize())
}

struct Vm {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Vm {
    fn start(dir: &Path, disk: &Path) -> Self {
        let port = free_port();
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-machine",
                "q35,accel=tcg",
                "-cpu",
                "max",
                "-m",
                "2048",
                "-smp",
                "2",
            ])
            .args([
                "-drive",
                "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            ])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,file={}",
                dir.join("vars.fd").display()
            ))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .args([
                "-netdev",
                &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:80"),
                "-device",
                "virtio-net-pci,netdev=n0",
            ])
            .args(["-display", "none", "-monitor", "none"])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                dir.join("qmp.sock").display()
            ))
            .arg("-serial")
            .arg(format!("file:{}", dir.join("serial.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("qemu.err")).expect("qemu.err"))
            .spawn()
            .expect("qemu-system-x86_64 (apt-get install qemu-system-x86 ovmf)");
        Self {
            child,
            dir: dir.to_owned(),
            port,
        }
    }

    fn serial_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("serial.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn curl(&self, args: &[&str]) -> Option<String> {
        let o = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(args)
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Waits until the supervisor answers; returns its health and the seconds it took.
    fn wait_for_health(&mut self, started: Instant) -> (serde_json::Value, f64) {
        let url = format!("http://127.0.0.1:{}/api/v1/health", self.port);
        loop {
            if let Some(body) = self.curl(&[&url])
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
            {
                return (v, started.elapsed().as_secs_f64());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "QEMU ended ({status}) before ddaemon answered; serial log:\n{}",
                    self.serial_tail()
                );
            }
            assert!(
                started.elapsed() < BOOT_TIMEOUT,
                "ddaemon did not answer within {BOOT_TIMEOUT:?}; serial log:\n{}",
                self.serial_tail()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// ACPI power button, then wait for the guest to power off.
    fn power_off(mut self) {
        if let Ok(mut qmp) = std::os::unix::net::UnixStream::connect(self.dir.join("qmp.sock")) {
            let _ = qmp.write_all(
                b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"system_powerdown\"}\n",
            );
            let deadline = Instant::now() + Duration::from_secs(45);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        eprintln!(
            "the guest did not power off in time; stopping QEMU\n{}",
            self.serial_tail()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs a built image (scripts/build-image x86_64-efi) and ~7 minutes of QEMU; not yet in scripts/test"]
fn the_image_boots_keeps_its_setup_and_grows_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk.img");
    let o = Command::new("zstd")
        .args(["-q", "-d", "-o"])
        .arg(&disk)
        .arg(image())
        .output()
        .expect("zstd");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::copy(
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
        dir.path().join("vars.fd"),
    )
    .expect("OVMF vars");
    let before = partitions(&disk);
    let root = before
        .iter()
        .find(|p| p.0 == "root-a")
        .expect("root-a")
        .clone();
    let root_sha = sha_of_range(&disk, root.1 * 512, root.2 * 512);
    // A bigger disk than the image, as on a real SSD.
    let image_size = std::fs::metadata(&disk).expect("disk").len();
    let disk_size = image_size + 1024 * 1024 * 1024;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .and_then(|f| f.set_len(disk_size))
        .expect("grow the disk");

    let started = Instant::now();
    let mut vm = Vm::start(dir.path(), &disk);
    let (health, seconds) = vm.wait_for_health(started);
    eprintln!("first boot: /api/v1/health answered after {seconds:.1} s");
    assert_eq!(health["setup_complete"], false, "{health}");
    let setup = vm.curl(&[
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"device_name":"bootdev","password":"correct horse battery","password_confirm":"correct horse battery","timezone":"UTC"}"#,
        &format!("http://127.0.0.1:{}/api/v1/setup", vm.port),
    ]);
    assert!(
        setup.is_some_and(|b| b.contains("csrf_token")),
        "setup failed:\n{}",
        vm.serial_tail()
    );
    vm.power_off();

    let started = Instant::now();
    let mut vm = Vm::start(dir.path(), &disk);
    let (health, seconds) = vm.wait_for_health(started);
    eprintln!("second boot: /api/v1/health answered after {seconds:.1} s");
    assert_eq!(
        health["setup_complete"], true,
        "the setup survives a power-off: {health}"
    );
    vm.power_off();

    let after = partitions(&disk);
    let data = after.iter().find(|p| p.0 == "data").expect("data");
    let data_end = (data.1 + data.2) * 512;
    assert!(
        disk_size - data_end <= 2 * 1024 * 1024,
        "the data partition grew to the disk's end: it ends {} bytes before",
        disk_size - data_end
    );
    assert_eq!(
        sha_of_range(&disk, root.1 * 512, root.2 * 512),
        root_sha,
        "the root partition is read-only: not a byte changed"
    );
}
