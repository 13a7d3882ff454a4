//! The OCI runtime spec (`config.json`) of a container, built from the
//! image's run config and the container's overrides, with defaults a home
//! server can trust: Docker's default capability set, a seccomp filter that
//! refuses the syscalls Docker refuses, no new privileges, `/proc/sys` and
//! friends read-only, kernel files masked, cgroups under `/ddaemon/`.

use std::io::Read;
use std::path::Path;

use libcontainer::oci_spec::runtime::Spec;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde_json::{Value, json};

use crate::container_def::ContainerDef;
use crate::container_paths::ContainerPaths;

/// The capabilities Docker gives a container by default.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Syscalls refused with EPERM: those Docker's default profile leaves out
/// for a container without extra capabilities (kernel modules, keyrings,
/// mounting, tracing other processes, clocks, swap, BPF, namespaces...).
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "open_by_handle_at",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapon",
    "swapoff",
    "syslog",
    "umount2",
    "unshare",
    "userfaultfd",
];

/// Linux's `CLONE_NEWUSER`: a user namespace would hand the container
/// capabilities inside it, which is how many kernel exploits start.
const CLONE_NEWUSER: u64 = 0x1000_0000;

/// The default `PATH` when the image sets none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the image {image} has no command and none was given; give one")]
    NoCommand { image: String },
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("bind mount {target:?}: {reason}")]
    Bind { target: String, reason: String },
    #[error("the generated runtime spec is invalid: {0}")]
    Invalid(String),
}

/// Builds the spec for `def`, whose root filesystem is mounted at
/// `paths.rootfs()` (user names are looked up in it).
pub fn build_spec(def: &ContainerDef, paths: &ContainerPaths) -> Result<Spec, SpecError> {
    let value = spec_json(def, paths)?;
    serde_json::from_value(value).map_err(|e| SpecError::Invalid(e.to_string()))
}

fn spec_json(def: &ContainerDef, paths: &ContainerPaths) -> Result<Value, SpecError> {
    let image = &def.image_config;
    let entrypoint = def
        .entrypoint
        .clone()
        .or_else(|| image.entrypoint.clone())
        .unwrap_or_default();
    // As with Docker, a new entrypoint drops the image's Cmd.
    let cmd = match (&def.command, &def.entrypoint) {
        (Some(cmd), _) => cmd.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone().unwrap_or_default(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand {
            image: def.image.clone(),
        });
    }
    let env = merge_env(image.env.as_deref().unwrap_or_default(), &def.env, &def.id);
    let cwd = def
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|w| w.starts_with('/'))
        .unwrap_or_else(|| "/".to_owned());
    let user_text = def
        .user
        .clone()
        .or_else(|| image.user.clone())
        .unwrap_or_default();
    let (uid, gid) = resolve_user(&paths.rootfs(), &user_text)?;

    let mut caps: Vec<String> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    for extra in &def.extra_capabilities {
        let name = format!("CAP_{}", extra.trim_start_matches("CAP_"));
        if !caps.contains(&name) {
            caps.push(name);
        }
    }
    // Docker's 1048576 open files, but never above what this host allows
    // (raising a hard limit past the shim's own is refused).
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .map_or(1_048_576, |max| max.min(1_048_576));
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for (file, target) in [
        (paths.hosts(), "/etc/hosts"),
        (paths.resolv_conf(), "/etc/resolv.conf"),
    ] {
        if file.exists() {
            mounts.push(json!({"destination": target, "type": "bind", "source": file, "options": ["rbind", "rprivate"]}));
        }
    }
    for bind in &def.binds {
        let bad = |reason: &str| SpecError::Bind {
            target: bind.target.clone(),
            reason: reason.to_owned(),
        };
        if !bind.target.starts_with('/') || bind.target.split('/').any(|p| p == "..") {
            return Err(bad(
                "the target must be an absolute path inside the container, without '..'",
            ));
        }
        if !bind.source.exists() {
            return Err(bad(&format!(
                "the source folder {} does not exist",
                bind.source.display()
            )));
        }
        let mut options = vec!["rbind", "rprivate", "nosuid", "nodev"];
        if bind.read_only {
            options.push("ro");
        }
        mounts.push(json!({"destination": bind.target, "type": "bind", "source": bind.source, "options": options}));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    namespaces.push(match &def.network.netns {
        Some(path) => json!({"type": "network", "path": path}),
        None => json!({"type": "network"}),
    });

    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = def.limits.memory_bytes {
        resources["memory"] = json!({"limit": limit});
    }
    if let Some(millis) = def.limits.cpu_millis {
        resources["cpu"] = json!({"quota": millis.saturating_mul(100), "period": 100_000});
    }
    if let Some(pids) = def.limits.pids {
        resources["pids"] = json!({"limit": pids});
    }

    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": true,
        },
        "root": {"path": paths.rootfs(), "readonly": false},
        "hostname": def.id,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": format!("/ddaemon/{}", def.id),
            "resources": resources,
            "maskedPaths": [
                "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            "seccomp": seccomp_profile(),
        },
    }))
}

/// Allows everything except the denied syscalls and user-namespace clones.
fn seccomp_profile() -> Value {
    let architectures: &[&str] = match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &[],
    };
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures,
        "syscalls": [
            {"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]},
            // clone3 passes its flags in memory a filter cannot read; ENOSYS
            // makes the C library fall back to clone, which is filtered.
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
    })
}

/// The image's environment, then the overrides (a key set twice keeps the
/// later value), with PATH and HOSTNAME filled in when missing.
fn merge_env(image: &[String], overrides: &[String], hostname: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in image.iter().chain(overrides) {
        let key = entry.split('=').next().unwrap_or_default();
        out.retain(|e| e.split('=').next() != Some(key));
        out.push(entry.clone());
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_owned());
    }
    if !out.iter().any(|e| e.starts_with("HOSTNAME=")) {
        out.push(format!("HOSTNAME={hostname}"));
    }
    out
}

/// Resolves `user[:group]` (names or numbers) against the container's own
/// `/etc/passwd` and `/etc/group`, read without leaving its root.
fn resolve_user(rootfs: &Path, spec: &str) -> Result<(u32, u32), SpecError> {
    let fail = |reason: String| SpecError::User {
        user: spec.to_owned(),
        reason,
    };
    if spec.is_empty() {
        return Ok((0, 0));
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd");
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd
                .as_deref()
                .and_then(|p| find_entry(p, |f| f.get(2) == Some(&user)))
                .and_then(|f| f.get(3).and_then(|g| g.parse().ok()))
                .unwrap_or(0);
            (uid, gid)
        }
        Err(_) => {
            let fields = passwd
                .as_deref()
                .and_then(|p| find_entry(p, |f| f.first() == Some(&user)))
                .ok_or_else(|| fail(format!("no user {user} in the image's /etc/passwd")))?;
            let uid = fields
                .get(2)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| fail("a broken /etc/passwd line".into()))?;
            let gid = fields
                .get(3)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| fail("a broken /etc/passwd line".into()))?;
            (uid, gid)
        }
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_in_root(rootfs, "etc/group")
                .as_deref()
                .and_then(|text| find_entry(text, |f| f.first() == Some(&g)))
                .and_then(|f| f.get(2).and_then(|v| v.parse().ok()))
                .ok_or_else(|| fail(format!("no group {g} in the image's /etc/group")))?,
        },
    };
    Ok((uid, gid))
}

fn find_entry<'a>(text: &'a str, pred: impl Fn(&Vec<&'a str>) -> bool) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| pred(f))
}

/// Reads a small file of the container's root filesystem; symlinks resolve
/// inside that root, never to the host's files.
fn read_in_root(rootfs: &Path, relative: &str) -> Option<String> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = rustix::fs::openat2(
        &root,
        relative,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(1024 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container_def::{BindMount, Limits, NetworkAttachment, RestartPolicy};
    use crate::oci_types::RunConfig;

    fn def() -> ContainerDef {
        ContainerDef {
            id: "web".into(),
            image: "busybox".into(),
            layers: vec![],
            image_config: RunConfig {
                entrypoint: Some(vec!["/bin/sh".into()]),
                cmd: Some(vec!["-c".into(), "echo hi".into()]),
                env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
                ..RunConfig::default()
            },
            command: None,
            entrypoint: None,
            env: vec!["A=2".into(), "B=3".into()],
            working_dir: None,
            user: None,
            binds: vec![],
            limits: Limits::default(),
            restart: RestartPolicy::No,
            stop_timeout_secs: 10,
            network: NetworkAttachment::default(),
            extra_capabilities: vec![],
        }
    }

    fn paths_with_passwd() -> (tempfile::TempDir, ContainerPaths) {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = ContainerPaths::new(dir.path());
        std::fs::create_dir_all(paths.rootfs().join("etc")).expect("etc");
        std::fs::write(
            paths.rootfs().join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\nwww:x:33:34::/:/bin/false\n",
        )
        .expect("passwd");
        std::fs::write(paths.rootfs().join("etc/group"), "root:x:0:\nmedia:x:44:\n")
            .expect("group");
        (dir, paths)
    }

    #[test]
    fn command_env_and_defaults() {
        let (_d, paths) = paths_with_passwd();
        let v = spec_json(&def(), &paths).expect("spec");
        assert_eq!(v["process"]["args"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(
            v["process"]["env"],
            json!(["PATH=/bin", "A=2", "B=3", "HOSTNAME=web"])
        );
        assert_eq!(v["process"]["noNewPrivileges"], json!(true));
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .map(Vec::len),
            Some(14)
        );
        let mut vpn = def();
        vpn.extra_capabilities = vec!["NET_ADMIN".into(), "CAP_KILL".into()];
        let caps =
            spec_json(&vpn, &paths).expect("spec")["process"]["capabilities"]["effective"].clone();
        let caps = caps.as_array().expect("caps");
        assert_eq!(caps.len(), 15, "NET_ADMIN added, KILL not twice");
        assert!(caps.contains(&json!("CAP_NET_ADMIN")));
        assert_eq!(v["linux"]["cgroupsPath"], json!("/ddaemon/web"));
        assert!(
            v["linux"]["readonlyPaths"]
                .as_array()
                .is_some_and(|p| p.contains(&json!("/proc/sys")))
        );
        assert!(
            build_spec(&def(), &paths).is_ok(),
            "libcontainer's spec type accepts it"
        );
    }

    #[test]
    fn overrides_follow_docker_rules() {
        let (_d, paths) = paths_with_passwd();
        let mut d = def();
        d.command = Some(vec!["-c".into(), "exit 3".into()]);
        assert_eq!(
            spec_json(&d, &paths).expect("spec")["process"]["args"],
            json!(["/bin/sh", "-c", "exit 3"])
        );
        let mut d = def();
        d.entrypoint = Some(vec!["/bin/true".into()]);
        assert_eq!(
            spec_json(&d, &paths).expect("spec")["process"]["args"],
            json!(["/bin/true"]),
            "a new entrypoint drops Cmd"
        );
        let mut d = def();
        d.image_config.entrypoint = None;
        d.image_config.cmd = None;
        assert!(matches!(
            spec_json(&d, &paths),
            Err(SpecError::NoCommand { .. })
        ));
    }

    #[test]
    fn users_resolve_inside_the_image() {
        let (_d, paths) = paths_with_passwd();
        let root = paths.rootfs();
        assert_eq!(resolve_user(&root, "").expect("root"), (0, 0));
        assert_eq!(resolve_user(&root, "www").expect("name"), (33, 34));
        assert_eq!(
            resolve_user(&root, "www:media").expect("name:group"),
            (33, 44)
        );
        assert_eq!(
            resolve_user(&root, "1000:1000").expect("numbers"),
            (1000, 1000)
        );
        assert_eq!(resolve_user(&root, "33").expect("uid"), (33, 34));
        assert!(resolve_user(&root, "nobody").is_err());
    }

    #[test]
    fn a_passwd_symlink_to_the_host_is_read_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = ContainerPaths::new(dir.path());
        std::fs::create_dir_all(paths.rootfs().join("etc")).expect("etc");
        // Points at the host's /etc/passwd, which has root; inside the
        // container's root it points at nothing.
        std::os::unix::fs::symlink("/etc/passwd", paths.rootfs().join("etc/passwd"))
            .expect("symlink");
        assert!(resolve_user(&paths.rootfs(), "root").is_err());
    }

    #[test]
    fn binds_and_limits() {
        let (d_, paths) = paths_with_passwd();
        let mut d = def();
        d.binds = vec![BindMount {
            source: d_.path().to_owned(),
            target: "/config".into(),
            read_only: true,
        }];
        d.limits = Limits {
            memory_bytes: Some(64 << 20),
            cpu_millis: Some(1500),
            pids: Some(100),
        };
        let v = spec_json(&d, &paths).expect("spec");
        let last = v["mounts"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default();
        assert_eq!(last["destination"], json!("/config"));
        assert!(
            last["options"]
                .as_array()
                .is_some_and(|o| o.contains(&json!("ro")))
        );
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], json!(64 << 20));
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], json!(150_000));
        d.binds[0].target = "relative".into();
        assert!(matches!(spec_json(&d, &paths), Err(SpecError::Bind { .. })));
        d.binds[0] = BindMount {
            source: "/nonexistent/x".into(),
            target: "/x".into(),
            read_only: false,
        };
        assert!(matches!(spec_json(&d, &paths), Err(SpecError::Bind { .. })));
    }
}
