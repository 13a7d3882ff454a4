//! The built images, booted in QEMU (TCG: no KVM needed) as a newcomer
//! would boot them. x86_64-efi under OVMF: the setup page's API answers,
//! setup completes, the setup survives a power-off and boot, the host name
//! is the device name, a restart from the API comes back, the data
//! partition has grown to fill a larger disk, and the root partition was
//! never written. qemu-arm64 under AAVMF: boots to its setup page.
//!
//! Needs the images: `scripts/build-image x86_64-efi` and
//! `scripts/build-image qemu-arm64` (scripts/test runs both).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(90);
const PASSWORD: &str = "correct horse battery";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A board the tests boot: its QEMU and firmware.
struct Machine {
    board: &'static str,
    qemu: &'static str,
    /// `-machine` and `-cpu`.
    args: &'static [&'static str],
    /// UEFI code (read-only) and the variables file copied per VM.
    firmware: &'static str,
    vars: &'static str,
    packages: &'static str,
    /// How long a boot may take before the test gives up.
    boot_timeout: Duration,
}

const X86_64: Machine = Machine {
    board: "x86_64-efi",
    qemu: "qemu-system-x86_64",
    args: &["-machine", "q35,accel=tcg", "-cpu", "max"],
    firmware: "/usr/share/OVMF/OVMF_CODE_4M.fd",
    vars: "/usr/share/OVMF/OVMF_VARS_4M.fd",
    packages: "qemu-system-x86 ovmf",
    boot_timeout: Duration::from_secs(300),
};

const ARM64: Machine = Machine {
    board: "qemu-arm64",
    qemu: "qemu-system-aarch64",
    // cortex-a72: "max" would emulate pointer authentication, slowly.
    args: &["-machine", "virt,accel=tcg", "-cpu", "cortex-a72"],
    firmware: "/usr/share/AAVMF/AAVMF_CODE.fd",
    vars: "/usr/share/AAVMF/AAVMF_VARS.fd",
    packages: "qemu-system-arm qemu-efi-aarch64",
    // Every arm64 instruction is emulated on an x86 core.
    boot_timeout: Duration::from_secs(1200),
};

impl Machine {
    /// The newest built image of the board (`DDAEMON_IMAGE_DIR` or target/images).
    fn image(&self) -> PathBuf {
        let dir = std::env::var_os("DDAEMON_IMAGE_DIR")
            .map_or_else(|| repo().join("target/images"), PathBuf::from);
        let prefix = format!("ddaemon-{}-", self.board);
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".img.xz"))
            })
            .collect();
        found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        found.pop().unwrap_or_else(|| {
            panic!(
                "no {} image in {}: run scripts/build-image {}",
                self.board,
                dir.display(),
                self.board
            )
        })
    }

    /// The image written to a disk `extra` bytes larger, and the firmware's
    /// variables, in `dir`; returns the disk and its size.
    fn prepare(&self, dir: &Path, extra: u64) -> (PathBuf, u64) {
        let disk = dir.join("disk.img");
        let o = Command::new("sh")
            .arg("-c")
            .arg("xz -dc \"$0\" > \"$1\"")
            .arg(self.image())
            .arg(&disk)
            .output()
            .expect("xz");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::copy(self.vars, dir.join("vars.fd"))
            .unwrap_or_else(|e| panic!("{}: {e} (apt-get install {})", self.vars, self.packages));
        let size = std::fs::metadata(&disk).expect("disk").len() + extra;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .and_then(|f| f.set_len(size))
            .expect("grow the disk");
        (disk, size)
    }
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
    csrf: String,
    boot_timeout: Duration,
}

impl Vm {
    fn start(machine: &Machine, dir: &Path, disk: &Path) -> Self {
        let port = free_port();
        let child = Command::new(machine.qemu)
            .args(machine.args)
            .args(["-m", "2048", "-smp", "2"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,readonly=on,file={}",
                machine.firmware
            ))
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
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (apt-get install {})",
                    machine.qemu, machine.packages
                )
            });
        Self {
            child,
            dir: dir.to_owned(),
            port,
            csrf: String::new(),
            boot_timeout: machine.boot_timeout,
        }
    }

    fn serial_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("serial.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn curl(&self, args: &[&str]) -> Option<String> {
        let jar = self.dir.join("cookies.txt");
        let o = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "-b"])
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .args(args)
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A JSON POST; a login or setup answer's CSRF token is kept for the next.
    fn post(&mut self, path: &str, body: &str) -> Option<serde_json::Value> {
        let csrf = format!("X-CSRF-Token: {}", self.csrf);
        let answer = self.curl(&[
            "-H",
            "Content-Type: application/json",
            "-H",
            &csrf,
            "--data",
            body,
            &self.url(path),
        ])?;
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        if let Some(token) = v["csrf_token"].as_str() {
            self.csrf = token.to_owned();
        }
        Some(v)
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        serde_json::from_str(&self.curl(&[&self.url(path)])?).ok()
    }

    /// Waits until the supervisor answers; returns its health and the seconds it took.
    fn wait_for_health(&mut self, started: Instant) -> (serde_json::Value, f64) {
        loop {
            if let Some(v) = self.get("/api/v1/health") {
                return (v, started.elapsed().as_secs_f64());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "QEMU ended ({status}) before ddaemon answered; serial log:\n{}",
                    self.serial_tail()
                );
            }
            assert!(
                started.elapsed() < self.boot_timeout,
                "ddaemon did not answer within {:?}; serial log:\n{}",
                self.boot_timeout,
                self.serial_tail()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Completes the setup wizard through the API (which also logs in).
    fn set_up(&mut self, device_name: &str) {
        let body = format!(
            r#"{{"device_name":"{device_name}","password":"{PASSWORD}","password_confirm":"{PASSWORD}","timezone":"UTC"}}"#
        );
        assert!(
            self.post("/api/v1/setup", &body).is_some(),
            "setup failed:\n{}",
            self.serial_tail()
        );
    }

    fn login(&mut self) {
        let body = format!(r#"{{"password":"{PASSWORD}"}}"#);
        assert!(
            self.post("/api/v1/login", &body).is_some(),
            "login failed:\n{}",
            self.serial_tail()
        );
    }

    /// Restart or power off through the System API, as the owner would.
    fn power(&mut self, action: &str) {
        let body = format!(r#"{{"action":"{action}"}}"#);
        assert!(
            self.post("/api/v1/system/power", &body).is_some(),
            "POST /api/v1/system/power {action} failed:\n{}",
            self.serial_tail()
        );
    }

    /// Powers off through the API and waits for QEMU to end.
    fn power_off(mut self) {
        self.power("power-off");
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "the guest did not power off within {SHUTDOWN_TIMEOUT:?}; serial log:\n{}",
            self.serial_tail()
        );
    }

    /// Restarts through the API: waits for the supervisor to go away and
    /// come back; returns the seconds from the request to its answer.
    fn restart(&mut self) -> f64 {
        let asked = Instant::now();
        self.power("restart");
        while self.get("/api/v1/health").is_some() {
            assert!(
                asked.elapsed() < SHUTDOWN_TIMEOUT,
                "the guest did not restart within {SHUTDOWN_TIMEOUT:?}; serial log:\n{}",
                self.serial_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        self.wait_for_health(asked).1
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The x86_64 image as a newcomer meets it: first boot, setup, power-off,
/// second boot with the setup kept and the host name set, a restart from
/// the API, and a last power-off; the data partition grew to the disk's end
/// and the root partition was never written.
#[test]
fn the_x86_64_image_boots_keeps_its_setup_and_grows_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A bigger disk than the image, as on a real SSD.
    let (disk, disk_size) = X86_64.prepare(dir.path(), 1024 * 1024 * 1024);
    let before = partitions(&disk);
    let root = before
        .iter()
        .find(|p| p.0 == "root-a")
        .expect("root-a")
        .clone();
    let root_sha = sha_of_range(&disk, root.1 * 512, root.2 * 512);

    let started = Instant::now();
    let mut vm = Vm::start(&X86_64, dir.path(), &disk);
    let (health, seconds) = vm.wait_for_health(started);
    eprintln!("first boot: /api/v1/health answered after {seconds:.1} s");
    assert_eq!(health["setup_complete"], false, "{health}");
    vm.set_up("bootdev");
    vm.power_off();

    let started = Instant::now();
    let mut vm = Vm::start(&X86_64, dir.path(), &disk);
    let (health, seconds) = vm.wait_for_health(started);
    eprintln!("second boot: /api/v1/health answered after {seconds:.1} s");
    assert_eq!(
        health["setup_complete"], true,
        "the setup survives a power-off: {health}"
    );
    vm.login();
    let system = vm.get("/api/v1/system").expect("GET /api/v1/system");
    assert_eq!(
        system["hostname"], "bootdev",
        "the host name is the device name: {system}"
    );
    let seconds = vm.restart();
    eprintln!("restart from the API: answering again after {seconds:.1} s");
    vm.login();
    let system = vm.get("/api/v1/system").expect("GET /api/v1/system");
    assert_eq!(system["device_name"], "bootdev", "{system}");
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

/// The arm64 build (cross-compiled binaries, an arm64 Debian root) boots
/// under emulation on QEMU's `virt` machine to its setup page.
#[test]
fn the_arm64_image_boots_to_its_setup_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, _) = ARM64.prepare(dir.path(), 256 * 1024 * 1024);
    let started = Instant::now();
    let mut vm = Vm::start(&ARM64, dir.path(), &disk);
    let (health, seconds) = vm.wait_for_health(started);
    eprintln!("arm64 first boot: /api/v1/health answered after {seconds:.1} s");
    assert_eq!(health["setup_complete"], false, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    vm.set_up("armdev");
    vm.power_off();
}
