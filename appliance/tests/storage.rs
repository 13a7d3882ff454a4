//! Attached disks, made from files: loop devices with a real ext4 (on a GPT
//! partition) and a real exFAT (on the whole device, as on most USB
//! sticks), listed, mounted, refused while in use, unmounted, mounted
//! again after a restart and after being plugged back in, and formatted
//! only with the disk's serial.
//!
//! udev does not run on this machine, so the test writes for its disks
//! what udev would record for a USB disk (model, serial) into a database
//! folder the supervisor is pointed at; filesystems are probed for real.
//! Needs root, losetup, sfdisk, mkfs.ext4, mkfs.exfat (exfatprogs) and,
//! where the kernel has no exFAT, exfat-fuse.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::avahi::AvahiPeer;
use common::{Daemon, Session, error_of, eventually, mount_points_under};
use serde_json::{Value, json};

fn sh(program: &str, args: &[&str]) -> String {
    let o = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        o.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// A disk made from a sparse file, attached as a loop device with
/// partition scanning (as a USB disk would be). Detached on drop.
struct LoopDisk {
    file: PathBuf,
    dev: String,
}

impl LoopDisk {
    fn new(dir: &Path, name: &str, mib: u64) -> Self {
        let file = dir.join(format!("{name}.img"));
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(mib << 20))
            .expect("disk file");
        let mut disk = Self {
            file,
            dev: String::new(),
        };
        disk.attach();
        disk
    }

    fn attach(&mut self) {
        self.dev = sh(
            "losetup",
            &[
                "--find",
                "--show",
                "--partscan",
                &self.file.to_string_lossy(),
            ],
        );
    }

    /// Detaches, and waits until the kernel has let go: a device still
    /// open (a FUSE driver that is still exiting) is only marked to go.
    fn detach(&mut self) {
        if !self.dev.is_empty() {
            let _ = Command::new("losetup").args(["-d", &self.dev]).status();
            let backing = format!("/sys/class/block/{}/loop/backing_file", self.name());
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&backing).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            self.dev.clear();
        }
    }

    fn name(&self) -> String {
        self.dev.trim_start_matches("/dev/").to_owned()
    }

    fn major_minor(&self, dev: &str) -> String {
        let name = dev.trim_start_matches("/dev/");
        std::fs::read_to_string(format!("/sys/class/block/{name}/dev"))
            .expect("sysfs dev")
            .trim()
            .to_owned()
    }

    /// What udev records for a USB disk: its model and serial.
    fn describe_to_udev(&self, udev: &Path, model: &str, serial: &str) {
        std::fs::write(
            udev.join(format!("b{}", self.major_minor(&self.dev))),
            format!("E:ID_MODEL={model}\nE:ID_SERIAL_SHORT={serial}\n"),
        )
        .expect("udev entry");
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        self.detach();
    }
}

async fn disks(d: &Daemon, s: &Session) -> Vec<Value> {
    let r = d.get_as("/api/v1/disks", &s.header()).await;
    assert_eq!(r.status(), 200);
    r.json::<Vec<Value>>().await.expect("json")
}

fn find_disk<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed: {list:?}"))
}

async fn post(d: &Daemon, s: &Session, path: &str, body: Value) -> reqwest::Response {
    d.http
        .post(d.url(path))
        .header("cookie", s.header())
        .header("x-csrf-token", &s.csrf)
        .json(&body)
        .send()
        .await
        .expect("post")
}

/// Waits for the volume `uuid` to be mounted (or not) at `folder`.
async fn wait_mounted(d: &Daemon, s: &Session, uuid: &str, folder: Option<&Path>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = disks(d, s).await;
        let at = list
            .iter()
            .flat_map(|d| d["volumes"].as_array().cloned().unwrap_or_default())
            .find(|v| v["uuid"] == uuid)
            .map(|v| v["mounted_at"].clone());
        let want = folder.map_or(Value::Null, |f| Value::from(f.display().to_string()));
        if at.as_ref() == Some(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{uuid} never became mounted at {want}: {at:?}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn disks_are_listed_mounted_refused_while_in_use_remembered_and_formatted_only_by_serial() {
    let work = tempfile::tempdir().expect("tempdir");
    let udev = work.path().join("udev");
    std::fs::create_dir_all(&udev).expect("udev dir");

    // An ext4 disk with a GPT partition, labelled Media.
    let media = LoopDisk::new(work.path(), "media", 64);
    sh(
        "sh",
        &[
            "-c",
            &format!(
                "printf 'label: gpt\n,,L\n' | sfdisk --quiet {0}; partx --update {0}",
                media.dev
            ),
        ],
    );
    let media_part = format!("{}p1", media.dev);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !Path::new(&media_part).exists() {
        assert!(Instant::now() < deadline, "{media_part} never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    sh("mkfs.ext4", &["-q", "-F", "-L", "Media", &media_part]);
    media.describe_to_udev(&udev, "Media_Drive", "MEDIA-0001");
    // An exFAT stick: the filesystem on the whole device.
    let mut stick = LoopDisk::new(work.path(), "stick", 64);
    sh("mkfs.exfat", &["-L", "PHOTOS", &stick.dev]);
    stick.describe_to_udev(&udev, "Ultra_Fit", "STICK-0002");
    // A disk that reports no serial.
    let anonymous = LoopDisk::new(work.path(), "anonymous", 16);

    let d = Daemon::start_with(
        tempfile::tempdir().expect("tempdir"),
        vec!["--udev-data".into(), udev.display().to_string()],
    )
    .await;
    let s = d.set_up().await;

    // Listed with what udev knows and what the filesystems say; the
    // machine's own disk (holding /) is not offered.
    let list = disks(&d, &s).await;
    assert!(
        list.iter()
            .flat_map(|d| d["volumes"].as_array().cloned().unwrap_or_default())
            .all(|v| v["mounted_at"] != "/"),
        "the system's disk is listed: {list:?}"
    );
    let m = find_disk(&list, &media.name());
    assert_eq!(m["model"], "Media Drive");
    assert_eq!(m["serial"], "MEDIA-0001");
    assert_eq!(m["size_bytes"], 64 << 20);
    let mv = &m["volumes"][0];
    assert_eq!(mv["name"], format!("{}p1", media.name()));
    assert_eq!(mv["filesystem"], "ext4");
    assert_eq!(mv["label"], "Media");
    assert_eq!(mv["mounted_at"], Value::Null);
    let media_uuid = mv["uuid"].as_str().expect("uuid").to_owned();
    let st = find_disk(&list, &stick.name());
    assert_eq!(st["volumes"][0]["filesystem"], "exfat");
    assert_eq!(st["volumes"][0]["label"], "PHOTOS");
    let stick_uuid = st["volumes"][0]["uuid"].as_str().expect("uuid").to_owned();
    assert_eq!(find_disk(&list, &anonymous.name())["serial"], Value::Null);

    // Mounted from the API under DATA/disks/LABEL; files go to the disk.
    let r = post(&d, &s, "/api/v1/disks/mount", json!({ "uuid": media_uuid })).await;
    assert_eq!(r.status(), 200);
    let media_dir = d.data().join("disks/Media");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["folder"], media_dir.display().to_string());
    std::fs::write(media_dir.join("film.txt"), b"a film").expect("write to the disk");
    // And from the CLI.
    let o = d.cli(&["disk", "mount", &stick_uuid]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stick_dir = d.data().join("disks/PHOTOS");
    assert!(String::from_utf8_lossy(&o.stdout).contains(&stick_dir.display().to_string()));
    std::fs::write(stick_dir.join("photo.jpg"), b"a photo").expect("write to the stick");
    let o = d.cli(&["disk", "ls"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("serial MEDIA-0001"), "{text}");
    assert!(
        text.contains(&format!("mounted at {}", media_dir.display())),
        "{text}"
    );
    wait_mounted(&d, &s, &stick_uuid, Some(&stick_dir)).await;
    let list = disks(&d, &s).await;
    let mv = &find_disk(&list, &media.name())["volumes"][0];
    assert!(mv["free_bytes"].as_u64().is_some_and(|f| f > 0), "{mv}");

    // Refused while a program works inside it, and the refusal says who.
    let mut user = Command::new("sleep")
        .arg("60")
        .current_dir(&media_dir)
        .spawn()
        .expect("sleep");
    let r = post(
        &d,
        &s,
        "/api/v1/disks/unmount",
        json!({ "uuid": media_uuid }),
    )
    .await;
    let (status, code, _, message) = error_of(r).await;
    assert_eq!((status, code.as_str()), (409, "in_use"), "{message}");
    assert!(
        message.contains(&format!("sleep (pid {})", user.id())),
        "{message}"
    );
    assert!(mount_points_under(&media_dir).contains(&media_dir.display().to_string()));
    let _ = user.kill();
    let _ = user.wait();
    let r = post(
        &d,
        &s,
        "/api/v1/disks/unmount",
        json!({ "uuid": media_uuid }),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert!(mount_points_under(&media_dir).is_empty());
    assert!(!media_dir.exists(), "the empty folder is removed");
    // Unmounted means forgotten: mounting again finds the file there.
    let r = post(&d, &s, "/api/v1/disks/mount", json!({ "uuid": media_uuid })).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        std::fs::read(media_dir.join("film.txt")).expect("read back"),
        b"a film"
    );

    // Remembered: unplugged behind its back and plugged in again, the
    // stick is mounted again in its folder (kernel hotplug events).
    sh("umount", &[&stick_dir.to_string_lossy()]);
    stick.detach();
    stick.attach();
    stick.describe_to_udev(&udev, "Ultra_Fit", "STICK-0002");
    wait_mounted(&d, &s, &stick_uuid, Some(&stick_dir)).await;
    assert_eq!(
        std::fs::read(stick_dir.join("photo.jpg")).expect("read back"),
        b"a photo"
    );

    // Pulled out while mounted: the kernel keeps a mount whose device node
    // is gone. (A loop device cannot vanish while mounted; a node made for
    // the media partition, mounted and removed, can.) The next hotplug
    // event lets the mount go and removes its folder; the disk still there
    // stays mounted.
    let pulled = d.data().join("disks/Pulled");
    let node = format!("/dev/ddtest-pulled-{}", std::process::id());
    let dev = media.major_minor(&media_part);
    let (major, minor) = dev.split_once(':').expect("major:minor");
    sh("mknod", &[&node, "b", major, minor]);
    std::fs::create_dir_all(&pulled).expect("mkdir");
    sh("mount", &[&node, &pulled.to_string_lossy()]);
    std::fs::remove_file(&node).expect("rm node");
    std::fs::write(
        format!("/sys/class/block/{}/uevent", media.name()),
        "change",
    )
    .expect("uevent");
    eventually(
        "the pulled-out disk is let go",
        Duration::from_secs(20),
        || {
            let mounted = mount_points_under(&d.data().join("disks"));
            if mounted.contains(&pulled.display().to_string()) || pulled.exists() {
                Err(format!("{mounted:?}\n{}", d.log()))
            } else {
                Ok(())
            }
        },
    )
    .await;
    assert!(
        mount_points_under(&media_dir).contains(&media_dir.display().to_string()),
        "the attached disk stays mounted"
    );
    assert!(d.log().contains("a disk was pulled out while mounted"));

    // Format: never while mounted, never without the disk's own serial.
    let format = |disk: String, serial: &str, label: &str| json!({ "disk": disk, "serial": serial, "label": label });
    let listed = disks(&d, &s).await;
    let r = post(
        &d,
        &s,
        "/api/v1/disks/format",
        format(stick.name(), "STICK-0002", "Fresh"),
    )
    .await;
    let (status, code, _, message) = error_of(r).await;
    assert_eq!(
        (status, code.as_str()),
        (409, "in_use"),
        "{message} {} {listed:?}\n{}",
        stick.name(),
        d.log()
    );
    let o = d.cli(&["disk", "unmount", &stick_uuid]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The Storage page offers to erase the unmounted stick, asking for
    // its serial; the mounted disk is only offered an unmount.
    let page = d
        .get_as("/storage", &s.header())
        .await
        .text()
        .await
        .expect("page");
    assert!(page.contains("Media Drive"), "{page}");
    assert!(page.contains("serial MEDIA-0001"), "{page}");
    assert_eq!(page.matches("Erase this disk").count(), 1, "{page}");
    assert!(page.contains("<code>STICK-0002</code>"), "{page}");
    for (serial, label, field) in [
        ("MEDIA-0001", "Fresh", "serial"),
        ("", "Fresh", "serial"),
        ("STICK-0002", "no spaces allowed", "label"),
    ] {
        let r = post(
            &d,
            &s,
            "/api/v1/disks/format",
            format(stick.name(), serial, label),
        )
        .await;
        let (status, _, f, message) = error_of(r).await;
        assert_eq!((status, f.as_deref()), (400, Some(field)), "{message}");
    }
    let r = post(
        &d,
        &s,
        "/api/v1/disks/format",
        format(anonymous.name(), "", "Fresh"),
    )
    .await;
    let (status, _, f, message) = error_of(r).await;
    assert_eq!((status, f.as_deref()), (400, Some("serial")), "{message}");
    assert!(message.contains("no serial number"), "{message}");
    assert_eq!(
        sh("blkid", &["-p", "-o", "value", "-s", "TYPE", &stick.dev]),
        "exfat",
        "a refused format changes nothing"
    );
    let o = d.cli(&[
        "disk",
        "format",
        &stick.name(),
        "--serial",
        "STICK-0002",
        "--label",
        "Fresh",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fresh = d.data().join("disks/Fresh");
    assert!(String::from_utf8_lossy(&o.stdout).contains(&fresh.display().to_string()));
    let part = format!("{}p1", stick.dev);
    assert_eq!(
        sh("blkid", &["-p", "-o", "value", "-s", "TYPE", &part]),
        "ext4"
    );
    assert_eq!(
        sh("blkid", &["-p", "-o", "value", "-s", "LABEL", &part]),
        "Fresh"
    );
    assert!(mount_points_under(&fresh).contains(&fresh.display().to_string()));

    for dir in [&media_dir, &fresh] {
        let _ = Command::new("umount").arg(dir).status();
    }
}

/// A disk formatted and mounted through the API, as an owner gets a fresh
/// one ready; returns the disk and its folder.
async fn formatted_disk(
    d: &Daemon,
    s: &Session,
    work: &Path,
    udev: &Path,
    label: &str,
) -> (LoopDisk, PathBuf) {
    let disk = LoopDisk::new(work, &label.to_lowercase(), 64);
    let serial = format!("SERIAL-{label}");
    disk.describe_to_udev(udev, "Fresh_Disk", &serial);
    let r = post(
        d,
        s,
        "/api/v1/disks/format",
        json!({ "disk": disk.name(), "serial": serial, "label": label }),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    (disk, d.data().join("disks").join(label))
}

/// A Samba server as the device runs it, with ddaemon's configuration
/// included, in the device's network namespace; its Unix accounts come
/// from ddaemon's extrausers folder (bound over /var/lib/extrausers in its
/// own mount namespace, a slave of the host's: an unmount there reaches
/// it, so it never keeps another test's disk busy). Stopped on drop.
struct Smbd {
    child: std::process::Child,
    dir: PathBuf,
}

impl Smbd {
    fn start(netns: &str, dir: &Path, data_dir: &Path, unix_users: &Path) -> Self {
        let samba_config = data_dir.join("ddaemon/samba/ddaemon.conf");
        for sub in ["run", "lock", "state", "cache", "private", "ncalrpc"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        let d = dir.display();
        let config = dir.join("smb.conf");
        std::fs::write(
            &config,
            format!(
                "[global]\n   pid directory = {d}/run\n   lock directory = {d}/lock\n   \
                 state directory = {d}/state\n   cache directory = {d}/cache\n   \
                 private dir = {d}/private\n   ncalrpc dir = {d}/ncalrpc\n   log file = {d}/log.%m\n   \
                 interfaces = 192.168.77.1/24\n   bind interfaces only = yes\n   \
                 include = {}\n",
                samba_config.display()
            ),
        )
        .expect("smb.conf");
        let nsswitch = dir.join("nsswitch.conf");
        std::fs::write(
            &nsswitch,
            "passwd: files extrausers\ngroup: files extrausers\nshadow: files\nhosts: files\n",
        )
        .expect("nsswitch");
        // The namespace starts as a copy of every mount, other tests'
        // disks among them; it lets go of those, or it would keep them busy.
        let script = format!(
            "for m in $(awk '{{print $5}}' /proc/self/mountinfo | grep '/disks/' | grep -v '^{data}/disks/'); do \
               umount -l \"$m\"; done; \
             mount --bind {} /var/lib/extrausers && mount --bind {} /etc/nsswitch.conf && \
             exec smbd --foreground --no-process-group --debug-stdout -s {}",
            unix_users.display(),
            nsswitch.display(),
            config.display(),
            data = data_dir.display(),
        );
        let log = std::fs::File::create(dir.join("smbd.out")).expect("log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "unshare",
                "--mount",
                "--propagation",
                "slave",
                "sh",
                "-c",
            ])
            .arg(script)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("smbd (apt-get install samba libnss-extrausers)");
        let smbd = Self {
            child,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while smbd.pid_file().is_none() {
            assert!(
                Instant::now() < deadline,
                "smbd did not start:\n{}",
                std::fs::read_to_string(dir.join("smbd.out")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        smbd
    }

    /// smbd's pid file (its name follows the configuration file's).
    fn pid_file(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.dir.join("run"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "pid"))
    }
}

impl Drop for Smbd {
    /// Stops smbd and every process it started (samba-dcerpcd and its
    /// workers outlive it otherwise): all are in its mount namespace.
    fn drop(&mut self) {
        let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", self.child.id())).ok();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Never the test's own namespace (smbd not started yet, say).
        let own = std::fs::read_link("/proc/self/ns/mnt").ok();
        let Some(ns) = ns.filter(|ns| Some(ns) != own.as_ref()) else {
            return;
        };
        for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if std::fs::read_link(p.path().join("ns/mnt")).ok().as_ref() == Some(&ns) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// smbclient from the LAN namespace: its output and whether it succeeded.
fn smbclient(lan: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", lan, "timeout", "30", "smbclient"])
        .args(args)
        .output()
        .expect("smbclient");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Samba's own check of what ddaemon wrote.
fn assert_testparm_accepts(config: &Path) {
    let o = Command::new("testparm")
        .args(["--suppress-prompt", &config.to_string_lossy()])
        .output()
        .expect("testparm");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[tokio::test]
async fn shares_are_served_by_a_real_smbd_to_their_users_only() {
    let work = tempfile::tempdir().expect("tempdir");
    let unix_users = work.path().join("extrausers");
    let udev = work.path().join("udev");
    std::fs::create_dir_all(&udev).expect("udev dir");
    let net = common::test_net::TestNet::new();
    let pid_link = work.path().join("smbd.pid");
    let mut d = Daemon::start_with(
        tempfile::tempdir().expect("tempdir"),
        vec![
            "--unix-users".into(),
            unix_users.display().to_string(),
            "--smbd-pid-file".into(),
            pid_link.display().to_string(),
            "--udev-data".into(),
            udev.display().to_string(),
        ],
    )
    .await;
    let s = d.set_up().await;
    let (disk, media) = formatted_disk(&d, &s, work.path(), &udev, "Media").await;
    std::fs::create_dir(media.join("Films")).expect("mkdir");
    std::fs::create_dir(media.join("100%")).expect("mkdir");
    std::fs::create_dir(media.join("x\" *(rw) #")).expect("mkdir");
    std::fs::create_dir(media.join("Swap")).expect("mkdir");
    std::fs::write(media.join("Films/old.txt"), b"an old film").expect("write");

    // Shares from the CLI and the API.
    let o = d.cli(&["share", "add", "Media", &media.to_string_lossy()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = post(
        &d,
        &s,
        "/api/v1/shares",
        json!({ "name": "Films", "path": media.join("Films"), "read_only": true, "nfs": true }),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    // Films is also exported over NFS, read-only, every client squashed to
    // the share account (the exports file is in the data folder here: this
    // supervisor does not control the machine).
    let exports = std::fs::read_to_string(d.data().join("ddaemon/nfs/ddaemon.exports"))
        .expect("exports file");
    let films = exports
        .lines()
        .find(|l| l.starts_with(&format!("\"{}\"", media.join("Films").display())))
        .unwrap_or_else(|| panic!("Films is not exported: {exports}"));
    assert!(
        films.contains("(ro,sync,insecure,no_subtree_check,all_squash,anonuid=1999,anongid=1999)"),
        "{films}"
    );
    assert!(
        !exports.contains("/Media\" "),
        "Media is not marked for NFS: {exports}"
    );
    let config = d.data().join("ddaemon/samba/ddaemon.conf");
    let before = std::fs::read_to_string(&config).expect("ddaemon.conf");

    // Bad input: the field is named and the configuration is untouched.
    for (body, status, field) in [
        (json!({ "name": "Etc", "path": "/etc" }), 400, "path"),
        (
            json!({ "name": "Up", "path": format!("{}/../..", media.display()) }),
            400,
            "path",
        ),
        (json!({ "name": "homes", "path": media }), 400, "name"),
        (json!({ "name": "a/b", "path": media }), 400, "name"),
        (json!({ "name": "media", "path": media }), 409, "name"),
        (
            json!({ "name": "Other", "path": media, "users": ["nobody"] }),
            400,
            "users",
        ),
        (
            json!({ "name": "TM", "path": media, "read_only": true, "time_machine": true }),
            400,
            "time_machine",
        ),
        // The system's (root's) folder, read-write: nothing could be written.
        (
            json!({ "name": "FilmsRW", "path": media.join("Films") }),
            400,
            "read_only",
        ),
        // A name smb.conf would read as a substitution.
        (
            json!({ "name": "Pct", "path": media.join("100%"), "read_only": true }),
            400,
            "path",
        ),
        // A quote would end the path in NFS's exports and let the rest
        // of the name export it to anyone.
        (
            json!({ "name": "Quote", "path": media.join("x\" *(rw) #"), "read_only": true, "nfs": true }),
            400,
            "path",
        ),
    ] {
        let r = post(&d, &s, "/api/v1/shares", body.clone()).await;
        let (got, _, f, message) = error_of(r).await;
        assert_eq!(
            (got, f.as_deref()),
            (status, Some(field)),
            "{body}: {message}"
        );
    }
    assert_eq!(std::fs::read_to_string(&config).expect("conf"), before);
    // Samba accepts what ddaemon wrote.
    assert_testparm_accepts(&config);

    // A reload that fails (the smbd named is gone) puts the previous
    // configuration back and adds nothing.
    let mut gone = Command::new("true").spawn().expect("true");
    let _ = gone.wait();
    std::fs::write(&pid_link, format!("{}\n", gone.id())).expect("pid file");
    let r = post(
        &d,
        &s,
        "/api/v1/shares",
        json!({ "name": "Late", "path": media.join("Films"), "read_only": true }),
    )
    .await;
    let (status, code, _, message) = error_of(r).await;
    assert_eq!((status, code.as_str()), (422, "samba_failed"), "{message}");
    assert!(message.contains("put back"), "{message}");
    assert_eq!(std::fs::read_to_string(&config).expect("conf"), before);
    let o = d.cli(&["share", "ls"]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("Late"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    std::fs::remove_file(&pid_link).expect("rm pid file");

    let smbd = Smbd::start(
        &net.device,
        &work.path().join("smbd"),
        d.data(),
        &unix_users,
    );
    std::os::unix::fs::symlink(smbd.pid_file().expect("pid file"), &pid_link).expect("link");
    let login = format!("admin%{}", common::PASSWORD);

    // The owner lists the shares, and puts and gets a file byte for byte.
    let (ok, out) = smbclient(&net.lan, &["-L", "//192.168.77.1", "-U", &login]);
    assert!(
        ok && out.contains("Media") && out.contains("Films"),
        "{out}"
    );
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = work.path().join("upload.bin");
    std::fs::write(&local, &payload).expect("payload");
    let back = work.path().join("download.bin");
    let (ok, out) = smbclient(
        &net.lan,
        &[
            "//192.168.77.1/Media",
            "-U",
            &login,
            "-c",
            &format!(
                "put {} upload.bin; get upload.bin {}",
                local.display(),
                back.display()
            ),
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(std::fs::read(&back).expect("downloaded"), payload);
    assert_eq!(
        std::fs::read(media.join("upload.bin")).expect("on the disk"),
        payload
    );
    // A read-only share reads but refuses writes.
    let (ok, out) = smbclient(
        &net.lan,
        &[
            "//192.168.77.1/Films",
            "-U",
            &login,
            "-c",
            &format!("get old.txt {}", work.path().join("old.txt").display()),
        ],
    );
    assert!(ok, "{out}");
    let (_, out) = smbclient(
        &net.lan,
        &[
            "//192.168.77.1/Films",
            "-U",
            &login,
            "-c",
            &format!("put {} new.bin", local.display()),
        ],
    );
    assert!(
        out.contains("NT_STATUS_ACCESS_DENIED") || out.contains("NT_STATUS_MEDIA_WRITE_PROTECTED"),
        "{out}"
    );
    assert!(!media.join("Films/new.bin").exists());
    // A wrong password is refused.
    let (ok, out) = smbclient(
        &net.lan,
        &[
            "//192.168.77.1/Media",
            "-U",
            "admin%wrong password",
            "-c",
            "ls",
        ],
    );
    assert!(!ok && out.contains("NT_STATUS_LOGON_FAILURE"), "{out}");

    // The disk cannot be unmounted while shared, and the refusal says why.
    let uuid = sh(
        "blkid",
        &[
            "-p",
            "-o",
            "value",
            "-s",
            "UUID",
            &format!("{}p1", disk.dev),
        ],
    );
    let r = post(&d, &s, "/api/v1/disks/unmount", json!({ "uuid": uuid })).await;
    let (status, _, _, message) = error_of(r).await;
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("the share Media"), "{message}");

    // A share removed is gone from Samba after its reload; the files stay.
    let o = d.cli(&["share", "rm", "Films"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out) = smbclient(&net.lan, &["-L", "//192.168.77.1", "-U", &login]);
        if ok && !out.contains("Films") && out.contains("Media") {
            break;
        }
        assert!(Instant::now() < deadline, "Films is still offered: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(media.join("Films/old.txt").exists());
    let o = d.cli(&["share", "ls"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Media") && !text.contains("Films"), "{text}");

    // A shared folder replaced by a link to the system's root is not
    // served again: the next supervisor checks every share anew.
    let r = post(
        &d,
        &s,
        "/api/v1/shares",
        json!({ "name": "Swap", "path": media.join("Swap"), "read_only": true }),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    std::fs::remove_dir(media.join("Swap")).expect("rmdir");
    std::os::unix::fs::symlink("/", media.join("Swap")).expect("symlink");
    // A Time Machine share and an NFS export, for the announcements below.
    let backups = media.join("Backups");
    std::fs::create_dir(&backups).expect("mkdir");
    std::os::unix::fs::chown(&backups, Some(1999), Some(1999)).expect("chown");
    for body in [
        json!({ "name": "Backups", "path": backups, "time_machine": true }),
        json!({ "name": "Photos", "path": media.join("Films"), "read_only": true, "nfs": true }),
    ] {
        let r = post(&d, &s, "/api/v1/shares", body).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }
    assert_testparm_accepts(&config);
    // A restarted supervisor keeps serving the same shares; it now runs on
    // the device's network, where a laptop's Avahi listens.
    let avahi = AvahiPeer::start(&net);
    d.restart_in_netns(&net.device).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out) = smbclient(&net.lan, &["-L", "//192.168.77.1", "-U", &login]);
        if ok && !out.contains("Swap") {
            break;
        }
        assert!(Instant::now() < deadline, "Swap is still offered: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ok, out) = smbclient(
        &net.lan,
        &["//192.168.77.1/Media", "-U", &login, "-c", "ls"],
    );
    assert!(ok && out.contains("upload.bin"), "{out}");

    // The laptop finds the device's SMB server, its Time Machine share
    // (with the keys macOS reads) and the NFS export, all on the device's
    // name and address.
    let on_device = |line: &str, port: u16| {
        line.starts_with("=;")
            && line.contains(";ddaemon.local;192.168.77.1;")
            && line.contains(&format!(";{port};"))
    };
    eventually("Avahi sees the shares", Duration::from_secs(30), || {
        let smb = avahi.browse("_smb._tcp");
        let adisk = avahi.browse("_adisk._tcp");
        let nfs = avahi.browse("_nfs._tcp");
        let found = smb
            .lines()
            .any(|l| l.contains(";ddaemon;_smb._tcp;") && on_device(l, 445))
            && adisk.lines().any(|l| {
                on_device(l, 9)
                    && l.contains("\"dk0=adVN=Backups,adVF=0x82\"")
                    && l.contains("\"sys=waMa=0,adVF=0x100\"")
            })
            && nfs.lines().any(|l| {
                l.contains(";Photos;_nfs._tcp;")
                    && on_device(l, 2049)
                    && l.contains(&format!("\"path={}\"", media.join("Films").display()))
            });
        if found {
            Ok(())
        } else {
            Err(format!("{smb}\n{adisk}\n{nfs}\n{}", d.log()))
        }
    })
    .await;
    // An export removed is withdrawn; SMB stays while something is shared.
    let o = d.cli(&["share", "rm", "Photos"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eventually(
        "the NFS export is withdrawn",
        Duration::from_secs(30),
        || {
            let nfs = avahi.browse("_nfs._tcp");
            let smb = avahi.browse("_smb._tcp");
            if !nfs.contains(";Photos;") && smb.lines().any(|l| on_device(l, 445)) {
                Ok(())
            } else {
                Err(format!("{nfs}\n{smb}"))
            }
        },
    )
    .await;
    drop(smbd);
    let _ = Command::new("umount").arg(&media).status();
}
