//! The built images, booted in QEMU (TCG: no KVM needed) as a newcomer
//! would boot them. x86_64-efi under OVMF, in two stories that run side
//! by side: setup, then signed A/B updates (a good one kept, switch back,
//! a broken one rolled back by itself); and an attached disk shared over
//! SMB and NFS to this host, a power cut while writing, the reset button's
//! soft and factory resets. Both check the data partition grown to fill a
//! larger disk and slot A never written. qemu-arm64 under AAVMF: boots to
//! its setup page.
//!
//! Needs the images: `scripts/build-image x86_64-efi` and
//! `scripts/build-image qemu-arm64` (scripts/test runs both); smbclient
//! and libnfs-utils.

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
    machine: &'static Machine,
    disk: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Host ports forwarded to the guest's SMB (445), NFS (2049) and NFSv3
    /// mount service (20048).
    smb_port: u16,
    nfs_port: u16,
    mountd_port: u16,
    /// A second disk, attached as a USB disk would be.
    media: Option<PathBuf>,
    csrf: String,
    boot_timeout: Duration,
    /// Boots so far: each has its own serial log.
    boots: u32,
    /// When QEMU was last started: a boot's time limit counts from here.
    launched: Instant,
}

impl Vm {
    fn start(machine: &'static Machine, dir: &Path, disk: &Path, media: Option<&Path>) -> Self {
        let port = free_port();
        let mut vm = Self {
            child: Command::new("true").spawn().expect("true"),
            machine,
            disk: disk.to_owned(),
            dir: dir.to_owned(),
            port,
            smb_port: free_port(),
            nfs_port: free_port(),
            mountd_port: free_port(),
            media: media.map(Path::to_owned),
            csrf: String::new(),
            boot_timeout: machine.boot_timeout,
            boots: 0,
            launched: Instant::now(),
        };
        vm.launch();
        vm
    }

    /// Starts QEMU on the disk. A restart inside the guest ends QEMU
    /// (`-action reboot=shutdown`) and the test starts it again: a cold
    /// start, as after a power cycle, with the same disk and UEFI
    /// variables. (OVMF's own warm reset under TCG took minutes here.)
    fn launch(&mut self) {
        let machine = self.machine;
        self.boots += 1;
        self.launched = Instant::now();
        let serial = self.serial_log();
        self.child = Command::new(machine.qemu)
            .args(machine.args)
            .args(["-m", "2048", "-smp", "2", "-action", "reboot=shutdown"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,readonly=on,file={}",
                machine.firmware
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,file={}",
                self.dir.join("vars.fd").display()
            ))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", self.disk.display()))
            // On a PCIe port of its own, so that it can be pulled out and
            // plugged back in (blockdev: the disk outlives its device).
            .args(self.media.iter().flat_map(|media| {
                [
                    "-blockdev".to_owned(),
                    format!(
                        "driver=file,filename={},node-name=media-file",
                        media.display()
                    ),
                    "-blockdev".to_owned(),
                    "driver=raw,file=media-file,node-name=media".to_owned(),
                    "-device".to_owned(),
                    "pcie-root-port,id=media-port,chassis=1".to_owned(),
                    "-device".to_owned(),
                    format!(
                        "virtio-blk-pci,bus=media-port,drive=media,id=media-disk,serial={MEDIA_SERIAL}"
                    ),
                ]
            }))
            .args([
                "-netdev",
                &format!(
                    "user,id=n0,hostfwd=tcp:127.0.0.1:{}-:80,hostfwd=tcp:127.0.0.1:{}-:445,hostfwd=tcp:127.0.0.1:{}-:2049,hostfwd=tcp:127.0.0.1:{}-:20048",
                    self.port, self.smb_port, self.nfs_port, self.mountd_port
                ),
                "-device",
                "virtio-net-pci,netdev=n0",
            ])
            .args(["-display", "none", "-monitor", "none"])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                self.dir.join("qmp.sock").display()
            ))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("qemu.err")).expect("qemu.err"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (apt-get install {})",
                    machine.qemu, machine.packages
                )
            });
    }

    fn serial_log(&self) -> PathBuf {
        self.dir.join(format!("serial-{}.log", self.boots))
    }

    /// Waits (at most `within`) for the guest to restart itself: QEMU ends
    /// after the kernel's "Restarting system"; then starts it again.
    fn wait_for_restart(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the guest did not restart within {within:?}; serial log:\n{}",
                self.serial_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let log = std::fs::read_to_string(self.serial_log()).unwrap_or_default();
        assert!(
            log.contains("reboot: Restarting system"),
            "QEMU ended without the guest asking for a restart; serial log:\n{}",
            self.serial_tail()
        );
        self.launch();
    }

    /// Presses the machine's power button `times` times, `apart` from each
    /// other (QMP `system_powerdown`: an ACPI power button event).
    fn press_power_button(&self, times: u32, apart: Duration) {
        let press = serde_json::json!({ "execute": "system_powerdown" });
        self.qmp(&vec![press; times as usize], apart);
    }

    /// Sends QMP commands, `apart` from each other; each must be accepted.
    fn qmp(&self, commands: &[serde_json::Value], apart: Duration) {
        use std::io::{BufRead as _, BufReader, Write as _};
        let socket =
            std::os::unix::net::UnixStream::connect(self.dir.join("qmp.sock")).expect("QMP socket");
        let mut lines = BufReader::new(socket.try_clone().expect("clone"));
        let mut send = |command: &serde_json::Value| {
            writeln!(&socket, "{command}").expect("QMP write");
            // Skip events until the command's answer.
            loop {
                let mut line = String::new();
                lines.read_line(&mut line).expect("QMP read");
                assert!(!line.is_empty(), "QMP closed");
                if line.contains("\"return\"") || line.contains("\"error\"") {
                    assert!(line.contains("\"return\""), "QMP {command}: {line}");
                    break;
                }
            }
        };
        send(&serde_json::json!({ "execute": "qmp_capabilities" }));
        for (i, command) in commands.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(apart);
            }
            send(command);
        }
    }

    /// Pulls the media disk out (a hot unplug), or plugs it back in.
    fn plug_media(&self, plugged: bool) {
        let command = if plugged {
            serde_json::json!({ "execute": "device_add", "arguments": {
                "driver": "virtio-blk-pci", "bus": "media-port", "drive": "media",
                "id": "media-disk", "serial": MEDIA_SERIAL,
            } })
        } else {
            serde_json::json!({ "execute": "device_del", "arguments": { "id": "media-disk" } })
        };
        self.qmp(&[command], Duration::ZERO);
    }

    /// Waits until the supervisor's health says `setup_complete` is `want`.
    fn wait_for_setup_complete(&mut self, want: bool, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(health) = self.get("/api/v1/health")
                && health["setup_complete"] == want
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "setup_complete never became {want}; serial log:\n{}",
                self.serial_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A hard power cut: QEMU killed, then started again.
    fn power_cut(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.launch();
    }

    fn serial_tail(&self) -> String {
        let log = std::fs::read_to_string(self.serial_log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn curl(&self, args: &[&str]) -> Option<String> {
        self.curl_within(10, args)
    }

    fn curl_within(&self, seconds: u32, args: &[&str]) -> Option<String> {
        self.curl_answer(seconds, args).ok()
    }

    /// The body, or what went wrong (the device's answer, curl's error).
    fn curl_answer(&self, seconds: u32, args: &[&str]) -> Result<String, String> {
        let jar = self.dir.join("cookies.txt");
        let o = Command::new("curl")
            .args([
                "-sS",
                "--fail-with-body",
                "--max-time",
                &seconds.to_string(),
                "-b",
            ])
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .args(args)
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        let body = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() {
            Ok(body)
        } else {
            Err(format!("{body}{}", String::from_utf8_lossy(&o.stderr)))
        }
    }

    /// Runs an `smbclient` command on the Media share as the owner, in the
    /// local `folder`, until it works (smbd may be starting).
    fn smb(&self, what: &str, command: &str, folder: &Path) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (ok, out) = self.smb_in(command, folder);
            if ok && !out.contains("NT_STATUS_") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {out}\n{}",
                self.serial_tail()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// A file of the Media share, fetched by SMB (again until smbd serves it).
    fn smb_get(&self, what: &str, remote: &str) -> Vec<u8> {
        let local = "smb-get.bin";
        self.smb(what, &format!("get {remote} {local}"), &self.dir);
        std::fs::read(self.dir.join(local)).expect("the fetched file")
    }

    /// What an `smbclient` command on the Media share prints, once.
    fn smb_output(&self, command: &str) -> String {
        self.smb_in(command, &self.dir).1
    }

    fn smb_in(&self, command: &str, folder: &Path) -> (bool, String) {
        let o = Command::new("smbclient")
            .current_dir(folder)
            .args(["//127.0.0.1/Media", "-p", &self.smb_port.to_string()])
            .args(["-U", &format!("admin%{PASSWORD}"), "-c", command])
            .output()
            .expect("smbclient (apt-get install smbclient)");
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), out)
    }

    /// `nfs://` for a file of the Media share over NFSv4, or NFSv3; the
    /// ports are given, as no portmapper is reachable through QEMU's
    /// forwarding.
    fn nfs_url(&self, file: &str, version: u8) -> String {
        let ports = match version {
            4 => format!("version=4&nfsport={}", self.nfs_port),
            _ => format!(
                "version=3&nfsport={}&mountport={}",
                self.nfs_port, self.mountd_port
            ),
        };
        format!("nfs://127.0.0.1/data/disks/Media/{file}?{ports}")
    }

    /// Runs a libnfs tool; with `wait`, again until it works (the server
    /// may be starting), which only a command safe to repeat may ask.
    fn nfs(&self, wait: bool, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(if wait { 120 } else { 0 });
        loop {
            let o = Command::new(args[0])
                .args(&args[1..])
                .output()
                .expect("libnfs tools (apt-get install libnfs-utils)");
            let out = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            if o.status.success() {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {out}\n{}",
                args.join(" "),
                self.serial_tail()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A JSON POST; a login or setup answer's CSRF token is kept for the next.
    fn post(&mut self, path: &str, body: &str) -> Option<serde_json::Value> {
        self.post_within(10, path, body)
    }

    /// A POST that may take up to `seconds` (emulated, starting a server).
    fn post_within(&mut self, seconds: u32, path: &str, body: &str) -> Option<serde_json::Value> {
        let answer = self
            .post_raw(seconds, path, body)
            // Said here: the caller's failure shows only that it failed.
            .map_err(|e| eprintln!("POST {path}: {e}"))
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        if let Some(token) = v["csrf_token"].as_str() {
            self.csrf = token.to_owned();
        }
        Some(v)
    }

    /// A JSON POST's answer, or the device's refusal (its JSON body).
    fn post_answer(&self, path: &str, body: &str) -> Result<String, String> {
        self.post_raw(30, path, body)
    }

    fn post_raw(&self, seconds: u32, path: &str, body: &str) -> Result<String, String> {
        let csrf = format!("X-CSRF-Token: {}", self.csrf);
        self.curl_answer(
            seconds,
            &[
                "-H",
                "Content-Type: application/json",
                "-H",
                &csrf,
                "--data",
                body,
                &self.url(path),
            ],
        )
    }

    /// Waits until `path` answers with a page containing `text`; the page.
    fn wait_for_page(&mut self, path: &str, text: &str) -> String {
        loop {
            if let Some(page) = self.curl(&[&self.url(path)])
                && page.contains(text)
            {
                return page;
            }
            assert!(
                self.launched.elapsed() < self.boot_timeout * 2,
                "{path} never showed {text:?}; serial log:\n{}",
                self.serial_tail()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        serde_json::from_str(&self.curl(&[&self.url(path)])?).ok()
    }

    /// Waits until the supervisor answers; returns its health and the
    /// seconds since `started`.
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
                self.launched.elapsed() < self.boot_timeout,
                "ddaemon did not answer within {:?} of QEMU's start; serial log:\n{}",
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
        self.shut_down();
    }

    /// [`Vm::power_off`], keeping the VM to start it again.
    fn shut_down(&mut self) {
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

    /// Sends an update bundle to `POST /api/v1/system/update`; the answer.
    fn send_update(&mut self, bundle: &Path, restart: bool) -> Option<serde_json::Value> {
        let csrf = format!("X-CSRF-Token: {}", self.csrf);
        let answer = self.curl_within(
            600,
            &[
                "-H",
                "Content-Type: application/octet-stream",
                "-H",
                &csrf,
                "--data-binary",
                &format!("@{}", bundle.display()),
                &self.url(&format!("/api/v1/system/update?restart={restart}")),
            ],
        )?;
        serde_json::from_str(&answer).ok()
    }

    /// Installs a bundle through the API; waits for the restart into it
    /// and for an answer on the new system.
    fn update(&mut self, bundle: &Path) {
        let sent = Instant::now();
        let answer = self.send_update(bundle, true);
        assert!(
            answer.as_ref().is_some_and(|a| a["restarting"] == true),
            "the update was not accepted: {answer:?}\n{}",
            self.serial_tail()
        );
        eprintln!(
            "update {} sent and written in {:.1} s",
            bundle.display(),
            sent.elapsed().as_secs_f64()
        );
        self.wait_for_restart(SHUTDOWN_TIMEOUT);
    }

    fn update_status(&mut self) -> serde_json::Value {
        self.get("/api/v1/system/update")
            .unwrap_or_else(|| panic!("GET /api/v1/system/update:\n{}", self.serial_tail()))
    }

    /// Waits until the running slot is confirmed (systemd-bless-boot kept
    /// its entry after the boot check passed).
    fn wait_until_confirmed(&mut self, slot: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let status = self.update_status();
            let mine = status["slots"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["slot"] == slot))
                .cloned()
                .unwrap_or_default();
            assert_eq!(mine["running"], true, "slot {slot} runs: {status}");
            if mine["state"] == "good" {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} was never confirmed: {status}\n{}",
                self.serial_tail()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An update bundle made from the last x86_64-efi build with another
/// version stamped in and, for a broken one, files laid over the root.
fn bundle(out: &Path, version: &str, add: Option<&Path>) -> PathBuf {
    let started = Instant::now();
    let mut c = Command::new(repo().join("target/release/ddaemon-image"));
    c.current_dir(repo())
        .args([
            "bundle",
            "--board",
            "x86_64-efi",
            "--version",
            version,
            "--out",
        ])
        .arg(out);
    if let Some(add) = add {
        c.arg("--add").arg(add);
    }
    let o = c
        .output()
        .expect("target/release/ddaemon-image (scripts/build-image builds it)");
    assert!(
        o.status.success(),
        "ddaemon-image bundle: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "bundle {version} made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    out.join(format!("ddaemon-x86_64-efi-{version}.ddaemon-update"))
}

const MEDIA_SERIAL: &str = "MEDIA-0001";

/// A 256 MiB disk with ext4 on the whole device, labelled Media, its root
/// owned by the share account (as a disk formatted on the device is).
fn media_disk(dir: &Path) -> PathBuf {
    let disk = dir.join("media.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(256 << 20))
        .expect("media disk");
    let o = Command::new("mkfs.ext4")
        .args(["-q", "-L", "Media", "-E", "root_owner=1999:1999"])
        .arg(&disk)
        .output()
        .expect("mkfs.ext4");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    disk
}

/// The owner mounts the attached disk from the API and shares it over SMB
/// and NFS; a laptop (this host, through forwarded ports) writes a file
/// with `smbclient` and reads it with libnfs's `nfs-cp`, and the other way
/// round. Returns the bytes of the file written over NFS.
fn share_the_media_disk(vm: &mut Vm, dir: &Path) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (disks, uuid) = loop {
        let disks = vm.get("/api/v1/disks").unwrap_or_default();
        let found = disks
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["serial"] == MEDIA_SERIAL)
            .flat_map(|d| d["volumes"].as_array().cloned().unwrap_or_default())
            .find(|v| v["label"] == "Media" && v["filesystem"] == "ext4")
            .and_then(|v| v["uuid"].as_str().map(str::to_owned));
        if let Some(uuid) = found {
            break (disks, uuid);
        }
        assert!(
            Instant::now() < deadline,
            "udev and ddaemon do not list the media disk: {disks}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    // The boot disk (whichever name the kernel gave it) is never offered.
    assert_eq!(
        disks.as_array().map(Vec::len),
        Some(1),
        "only the media disk is listed: {disks}"
    );
    let body = format!(r#"{{"uuid":"{uuid}"}}"#);
    assert!(
        vm.post_within(60, "/api/v1/disks/mount", &body).is_some(),
        "mount refused:\n{}",
        vm.serial_tail()
    );
    // Samba's check and the first start of smbd and the NFS server, all
    // emulated: more than the usual ten seconds.
    let shared = vm.post_within(
        120,
        "/api/v1/shares",
        r#"{"name":"Media","path":"/data/disks/Media","nfs":true}"#,
    );
    assert!(
        shared.as_ref().is_some_and(|s| s["name"] == "Media"),
        "share refused: {shared:?}\n{}",
        vm.serial_tail()
    );

    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let local = dir.join("payload.bin");
    std::fs::write(&local, &payload).expect("payload");
    // smbd is started by ddaemon once something is shared.
    vm.smb("smbclient put", "put payload.bin from-smb.bin", dir);
    let listing = vm.nfs(true, &["nfs-ls", &vm.nfs_url("", 4)]);
    assert!(listing.contains("from-smb.bin"), "{listing}");
    let back = dir.join("from-smb.back");
    vm.nfs(
        false,
        &[
            "nfs-cp",
            &vm.nfs_url("from-smb.bin", 4),
            &back.display().to_string(),
        ],
    );
    assert!(
        std::fs::read(&back).expect("read") == payload,
        "NFS read differs"
    );
    // Written over NFSv3 (what macOS's Finder speaks). nfs-cp's NFSv4
    // writes (libnfs 4.0) were refused after the file was created, not
    // yet understood; its NFSv4 reads above work.
    let written: Vec<u8> = payload.iter().rev().copied().collect();
    let local = dir.join("written.bin");
    std::fs::write(&local, &written).expect("written");
    vm.nfs(
        false,
        &[
            "nfs-cp",
            &local.display().to_string(),
            &vm.nfs_url("from-nfs.bin", 3),
        ],
    );
    assert!(
        vm.smb_get("smbclient get", "from-nfs.bin") == written,
        "SMB read differs"
    );
    written
}

fn slot<'a>(status: &'a serde_json::Value, letter: &str) -> &'a serde_json::Value {
    status["slots"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["slot"] == letter))
        .unwrap_or(&serde_json::Value::Null)
}

/// A freshly flashed x86_64 device on a disk 1 GiB larger than the image
/// (as on a real SSD), booted and set up.
struct FreshDevice {
    vm: Vm,
    disk: PathBuf,
    disk_size: u64,
    /// The version slot A runs.
    original: String,
    /// Slot A's partition (start, length in sectors) and its hash before boot.
    root_a: (u64, u64),
    root_a_sha: String,
}

impl FreshDevice {
    fn boot(dir: &Path, device_name: &str, media: Option<&Path>) -> Self {
        let (disk, disk_size) = X86_64.prepare(dir, 1024 * 1024 * 1024);
        let root = partitions(&disk)
            .into_iter()
            .find(|p| p.0 == "root-a")
            .expect("root-a");
        let root_a = (root.1, root.2);
        let root_a_sha = sha_of_range(&disk, root_a.0 * 512, root_a.1 * 512);
        let started = Instant::now();
        let mut vm = Vm::start(&X86_64, dir, &disk, media);
        let (health, seconds) = vm.wait_for_health(started);
        eprintln!("first boot: /api/v1/health answered after {seconds:.1} s");
        assert_eq!(health["setup_complete"], false, "{health}");
        let original = health["system_version"]
            .as_str()
            .expect("system_version")
            .to_owned();
        vm.set_up(device_name);
        Self {
            vm,
            disk,
            disk_size,
            original,
            root_a,
            root_a_sha,
        }
    }

    /// Powers off through the API, then checks the disk: the data
    /// partition grew to the disk's end and slot A's partition was never
    /// written (it is read-only and never an update's target here).
    fn power_off_and_check_disk(self) {
        self.vm.power_off();
        let after = partitions(&self.disk);
        let data = after.iter().find(|p| p.0 == "data").expect("data");
        let data_end = (data.1 + data.2) * 512;
        assert!(
            self.disk_size - data_end <= 2 * 1024 * 1024,
            "the data partition grew to the disk's end: it ends {} bytes before",
            self.disk_size - data_end
        );
        assert_eq!(
            sha_of_range(&self.disk, self.root_a.0 * 512, self.root_a.1 * 512),
            self.root_a_sha,
            "slot A was written"
        );
    }
}

/// The x86_64 image through its updates: a signed update installs into
/// slot B, the device restarts into it, reports the new version and keeps
/// the setup; "switch back" returns to A; an update whose supervisor never
/// answers is tried once and the device comes back to A by itself, saying
/// so.
#[test]
fn the_x86_64_image_updates_switches_back_and_rolls_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Made before QEMU runs: each is a fresh erofs of the whole root.
    let good = bundle(dir.path(), "9.0.0-test", None);
    // The broken system: its supervisor's unit runs something that exits.
    let broken_files = dir.path().join("broken");
    let dropin = broken_files.join("usr/lib/systemd/system/ddaemon.service.d");
    std::fs::create_dir_all(&dropin).expect("mkdir");
    std::fs::write(
        dropin.join("broken.conf"),
        "[Service]\nExecStart=\nExecStart=/bin/sh -c 'echo broken on purpose; exit 3'\n",
    )
    .expect("drop-in");
    let broken = bundle(dir.path(), "9.0.1-broken", Some(&broken_files));

    let mut device = FreshDevice::boot(dir.path(), "bootdev", None);
    let original = device.original.clone();
    let vm = &mut device.vm;
    let status = vm.update_status();
    assert_eq!(status["available"], true, "{status}");
    assert_eq!(slot(&status, "a")["running"], true, "{status}");
    assert_eq!(slot(&status, "b")["state"], "empty", "{status}");

    // A good update, which the device downloads itself from an address
    // (the guest reaches the host's loopback as 10.0.2.2): restart into
    // slot B, new version, setup kept. Addresses it cannot use are refused
    // by field first (through the API; the install through the page).
    let server = FileServer::start(dir.path());
    for (url, says) in [
        ("ftp://10.0.2.2/x".to_owned(), "http"),
        (server.guest_url("no-such-bundle"), "404"),
    ] {
        let refused = vm
            .post_answer(
                "/api/v1/system/update/from-url",
                &format!(r#"{{"url":"{url}"}}"#),
            )
            .expect_err("refused");
        assert!(
            refused.contains(r#""field":"url""#) && refused.contains(says),
            "{url}: {refused}"
        );
    }
    // Given on the System page, as the owner would.
    let system_page = vm.curl(&[&vm.url("/system")]).unwrap_or_default();
    assert!(
        system_page.contains("action=\"/system/update-from-url\""),
        "the System page offers an address: {system_page}"
    );
    let asked = Instant::now();
    let name = good.file_name().expect("name").to_string_lossy();
    let answer = vm.curl_answer(
        600,
        &[
            "--data-urlencode",
            &format!("csrf_token={}", vm.csrf),
            "--data-urlencode",
            &format!("url={}", server.guest_url(&name)),
            &vm.url("/system/update-from-url"),
        ],
    );
    assert!(
        answer
            .as_ref()
            .is_ok_and(|page| page.contains("is restarting")),
        "the update from an address was not installed: {answer:?}\n{}",
        vm.serial_tail()
    );
    vm.wait_for_restart(SHUTDOWN_TIMEOUT);
    let (health, seconds) = vm.wait_for_health(asked);
    eprintln!("updated: answering on the new system {seconds:.1} s after the upload began");
    assert_eq!(health["system_version"], "9.0.0-test", "{health}");
    assert_eq!(
        health["setup_complete"], true,
        "the setup survives an update: {health}"
    );
    vm.login();
    let system = vm.get("/api/v1/system").expect("GET /api/v1/system");
    assert_eq!(
        system["hostname"], "bootdev",
        "the host name is the device name: {system}"
    );
    let status = vm.wait_until_confirmed("b");
    assert_eq!(slot(&status, "a")["version"], original.as_str(), "{status}");
    assert_eq!(status["switch_back_to"], "a", "{status}");

    // Switch back to A.
    let asked = Instant::now();
    let answer = vm.post("/api/v1/system/update/switch-back", "{}");
    assert!(
        answer.is_some_and(|a| a["slot"] == "a"),
        "switch back refused"
    );
    vm.wait_for_restart(SHUTDOWN_TIMEOUT);
    let (health, seconds) = vm.wait_for_health(asked);
    eprintln!("switched back: answering {seconds:.1} s after the request");
    assert_eq!(health["system_version"], original.as_str(), "{health}");
    vm.login();
    vm.wait_until_confirmed("a");

    // An update whose supervisor never answers: tried once, then back to A.
    let asked = Instant::now();
    vm.update(&broken);
    // The broken system boots, its boot check gives up and restarts it.
    vm.wait_for_restart(Duration::from_secs(600));
    let (health, seconds) = vm.wait_for_health(asked);
    eprintln!("rolled back: answering on the old system {seconds:.1} s after the upload began");
    assert_eq!(health["system_version"], original.as_str(), "{health}");
    vm.login();
    let status = vm.update_status();
    assert_eq!(status["rolled_back"], "9.0.1-broken", "{status}");
    assert_eq!(slot(&status, "a")["running"], true, "{status}");
    assert_eq!(slot(&status, "b")["state"], "failed", "{status}");
    let page = vm.curl(&[&vm.url("/system")]).unwrap_or_default();
    assert!(
        page.contains("did not start properly, so the device went back to version"),
        "the System page says the update was rolled back"
    );
    device.power_off_and_check_disk();
}

/// The x86_64 image through a home's days: a USB disk shared over SMB and
/// NFS, shared again after the power cut, let go when pulled out and
/// shared again when plugged back in; a power cut while an
/// update is written leaves A booting with nothing lost; the reset
/// button (the power button on this board, pressed through ACPI) five
/// times within 10 s opens the setup wizard again with the apps kept, ten
/// times within 20 s wipes the device; power-off from the API.
#[test]
fn the_x86_64_image_survives_a_power_cut_and_its_reset_button() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = bundle(dir.path(), "9.0.2-cut", None);
    let media = media_disk(dir.path());
    let mut device = FreshDevice::boot(dir.path(), "bootdev", Some(&media));
    let original = device.original.clone();
    let vm = &mut device.vm;
    let from_nfs = share_the_media_disk(vm, dir.path());

    // A power cut while the update is being written.
    let csrf = vm.csrf.clone();
    let mut upload = Command::new("curl")
        .args(["-sS", "-b"])
        .arg(dir.path().join("cookies.txt"))
        .args([
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            &format!("X-CSRF-Token: {csrf}"),
            "--data-binary",
            &format!("@{}", good.display()),
            &vm.url("/api/v1/system/update?restart=false"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = vm.update_status();
        if status["job"]["state"] == "installing"
            && status["job"]["written_bytes"].as_u64().unwrap_or(0) > 16 << 20
        {
            eprintln!(
                "power cut after {} bytes written",
                status["job"]["written_bytes"]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the update never started writing: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let cut = Instant::now();
    vm.power_cut();
    let _ = upload.kill();
    let _ = upload.wait();
    let (health, seconds) = vm.wait_for_health(cut);
    eprintln!("after the power cut: answering after {seconds:.1} s");
    assert_eq!(health["system_version"], original.as_str(), "{health}");
    assert_eq!(health["setup_complete"], true, "nothing lost: {health}");
    vm.login();
    let status = vm.update_status();
    assert_eq!(slot(&status, "a")["running"], true, "{status}");
    assert_eq!(
        slot(&status, "b")["state"],
        "empty",
        "the half-written slot never boots: {status}"
    );
    let system = vm.get("/api/v1/system").expect("GET /api/v1/system");
    assert_eq!(system["device_name"], "bootdev", "{system}");
    // The disk is mounted again and shared again, by SMB and NFS.
    assert!(
        vm.smb_get("the share after the power cut", "from-nfs.bin") == from_nfs,
        "from-nfs.bin changed"
    );
    let listing = vm.nfs(true, &["nfs-ls", &vm.nfs_url("", 4)]);
    assert!(listing.contains("from-smb.bin"), "{listing}");

    // Pulled out while shared: the device lets go of the disk and stops
    // offering the share (here its only one: smbd stops); plugged back in,
    // it is mounted and shared again.
    vm.plug_media(false);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let disks = vm.get("/api/v1/disks").unwrap_or_default();
        let out = vm.smb_output("ls");
        // With nothing else shared, smbd is stopped altogether.
        let refused = ["BAD_NETWORK_NAME", "CONNECTION_RESET", "CONNECTION_REFUSED"]
            .iter()
            .any(|status| out.contains(&format!("NT_STATUS_{status}")));
        if !disks.to_string().contains(MEDIA_SERIAL) && refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pulled-out disk is still offered: {disks}\n{out}\n{}",
            vm.serial_tail()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    vm.plug_media(true);
    assert!(
        vm.smb_get("the share once the disk is back", "from-nfs.bin") == from_nfs,
        "from-nfs.bin changed"
    );

    // Five presses within 10 s: a soft reset, the setup wizard comes back
    // and the apps stay.
    let added = vm.post(
        "/api/v1/external-apps",
        r#"{"name":"printer","title":"Printer","target":"10.0.2.2:631"}"#,
    );
    assert!(
        added.is_some_and(|a| a["name"] == "printer"),
        "external app added"
    );
    vm.press_power_button(5, Duration::from_millis(800));
    vm.wait_for_setup_complete(false, Duration::from_secs(60));
    vm.set_up("bootdev2");
    let apps = vm
        .get("/api/v1/external-apps")
        .expect("GET /api/v1/external-apps");
    assert!(
        apps.to_string().contains("\"printer\""),
        "apps are kept by a soft reset: {apps}"
    );
    // Ten presses within 20 s: a factory reset, which restarts the device
    // and wipes /data (but /data/disks: ddaemon-init's own tests).
    vm.press_power_button(10, Duration::from_millis(800));
    let pressed = Instant::now();
    vm.wait_for_restart(SHUTDOWN_TIMEOUT);
    let (health, seconds) = vm.wait_for_health(pressed);
    eprintln!("factory reset: a fresh device answers {seconds:.1} s after the presses");
    assert_eq!(health["setup_complete"], false, "{health}");
    vm.set_up("bootdev3");
    let apps = vm
        .get("/api/v1/external-apps")
        .expect("GET /api/v1/external-apps");
    assert!(
        !apps.to_string().contains("\"printer\""),
        "a factory reset leaves no app: {apps}"
    );

    // The state database scribbled over (a failing SD card): the
    // supervisor cannot start, systemd gives up on it, and recovery mode
    // answers in its place. Its logs say why; the reset button's factory
    // reset brings the device back.
    vm.shut_down();
    let data = partitions(&device.disk)
        .into_iter()
        .find(|p| p.0 == "data")
        .expect("data");
    scribble_over_the_state_database(&device.disk, data.1 * 512, dir.path());
    let vm = &mut device.vm;
    let started = Instant::now();
    vm.launch();
    let page = vm.wait_for_page("/", "Recovery mode");
    eprintln!(
        "a supervisor that cannot start: recovery mode answers {:.1} s after QEMU's start",
        started.elapsed().as_secs_f64()
    );
    assert!(page.contains("could not start"), "{page}");
    let logs = vm.curl_within(60, &[&vm.url("/logs")]).unwrap_or_default();
    let tail = &logs[logs.len().saturating_sub(3000)..];
    assert!(
        logs.contains("file is not a database"),
        "the logs say why the supervisor stopped: {tail}"
    );
    // Recovery came once systemd had given up (not at the first failure,
    // which a restart may mend).
    assert!(
        logs.contains("Start request repeated too quickly"),
        "recovery mode came before systemd gave up on the supervisor: {tail}"
    );
    // Anyone at home reaches this page, so erasing the device takes the
    // device in hand: the page refuses, the power button does it.
    let refused = vm.curl_answer(10, &["-d", "confirm=yes", &vm.url("/factory-reset")]);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("power button")),
        "factory reset from the page in unattended recovery mode: {refused:?}"
    );
    vm.press_power_button(10, Duration::from_millis(800));
    let pressed = Instant::now();
    vm.wait_for_restart(SHUTDOWN_TIMEOUT);
    let (health, _) = vm.wait_for_health(pressed);
    assert_eq!(health["setup_complete"], false, "{health}");
    vm.set_up("bootdev4");
    device.power_off_and_check_disk();
}

/// `python3 -m http.server` on loopback, serving a folder.
struct FileServer {
    child: Child,
    port: u16,
}

impl FileServer {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the file server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, port }
    }

    /// The address of `name` as the guest sees it.
    fn guest_url(&self, name: &str) -> String {
        format!("http://10.0.2.2:{}/{name}", self.port)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes junk over `ddaemon/state.db` on the (switched off) device's
/// data partition, which starts `offset` bytes into `disk`, with debugfs:
/// no mount needed.
fn scribble_over_the_state_database(disk: &Path, offset: u64, dir: &Path) {
    let junk = dir.join("junk");
    std::fs::write(&junk, "scribbled over by a failing card\n".repeat(64)).expect("junk");
    let script = dir.join("debugfs.cmd");
    std::fs::write(
        &script,
        format!(
            "rm /ddaemon/state.db-wal\nrm /ddaemon/state.db-shm\nrm /ddaemon/state.db\nwrite {} /ddaemon/state.db\n",
            junk.display()
        ),
    )
    .expect("debugfs script");
    let o = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(format!("{}?offset={offset}", disk.display()))
        .output()
        .expect("debugfs (e2fsprogs)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && out.contains("Allocated inode"),
        "debugfs: {out}"
    );
}

/// The arm64 build (cross-compiled binaries, an arm64 Debian root) boots
/// under emulation on QEMU's `virt` machine to its setup page.
#[test]
fn the_arm64_image_boots_to_its_setup_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, _) = ARM64.prepare(dir.path(), 256 * 1024 * 1024);
    let started = Instant::now();
    let mut vm = Vm::start(&ARM64, dir.path(), &disk, None);
    let (health, seconds) = vm.wait_for_health(started);
    eprintln!("arm64 first boot: /api/v1/health answered after {seconds:.1} s");
    assert_eq!(health["setup_complete"], false, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    vm.set_up("armdev");
    vm.power_off();
}
