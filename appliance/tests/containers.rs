//! Real containers: libcontainer through the per-container shim (the
//! `ddaemon shim` command), on an image loaded into a real store.

#[path = "../runtime/tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ddaemon_runtime::container_def::{BindMount, ContainerDef, Limits, RestartPolicy};
use ddaemon_runtime::container_manager::{ContainerManager, NetworkRequest, ShimCommand};
use ddaemon_runtime::container_status::{ContainerStatus, State};
use ddaemon_runtime::image_load::load_archive;
use ddaemon_runtime::image_store::ImageStore;
use support::test_images::busybox_archive;

struct Fixture {
    dir: tempfile::TempDir,
    store: ImageStore,
    manager: ContainerManager,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = busybox_archive(dir.path());
    let store = ImageStore::open(&dir.path().join("images")).expect("store");
    load_archive(&store, &archive, Some("test/busybox"))
        .await
        .expect("load");
    let manager = ContainerManager::open(
        &dir.path().join("containers"),
        ShimCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_ddaemon")),
            args: vec!["shim".into()],
        },
    )
    .expect("manager");
    Fixture {
        dir,
        store,
        manager,
    }
}

impl Fixture {
    fn def(&self, id: &str, script: &str) -> ContainerDef {
        let image = self.store.get("test/busybox:1").expect("image");
        let config = self
            .store
            .config(&image)
            .expect("config")
            .config
            .unwrap_or_default();
        let mut def =
            ContainerDef::for_image(id, &image.reference, self.store.layer_dirs(&image), config);
        def.command = Some(vec!["/bin/sh".into(), "-c".into(), script.into()]);
        def
    }

    async fn run(&self, def: &ContainerDef) -> ContainerStatus {
        self.manager
            .create(def, NetworkRequest::default())
            .await
            .expect("create");
        match self.manager.start(&def.id).await {
            Ok(status) => status,
            Err(err) => {
                let log = self
                    .dir
                    .path()
                    .join("containers")
                    .join(&def.id)
                    .join("shim.log");
                panic!(
                    "{err}\nshim log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            }
        }
    }

    async fn wait_for(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&ContainerStatus) -> bool,
    ) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.manager.status(id).expect("status")
                && pred(&status)
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: timed out waiting for {what}: {:?}",
                self.manager.status(id)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self, id: &str) -> String {
        String::from_utf8_lossy(&self.manager.logs(id, 1 << 20).expect("logs")).into_owned()
    }
}

#[tokio::test]
async fn output_is_logged_and_the_exit_code_recorded() {
    let f = fixture().await;
    let def = f.def(
        "exit-code",
        "echo hello from the container; echo oops >&2; exit 3",
    );
    f.run(&def).await;
    let status = f
        .wait_for("exit-code", "exit", |s| s.state.is_final())
        .await;
    assert_eq!(status.state, State::Exited);
    assert_eq!(status.exit_code, Some(3));
    let logs = f.logs("exit-code");
    assert!(
        logs.contains("hello from the container") && logs.contains("oops"),
        "{logs}"
    );
    f.manager.remove("exit-code").await.expect("remove");
    assert!(f.manager.list().expect("list").is_empty());
}

#[tokio::test]
async fn defaults_are_locked_down() {
    let f = fixture().await;
    let script = "grep -E '^(NoNewPrivs|CapEff)' /proc/self/status; \
        echo x > /proc/sys/kernel/hostname && echo PROCSYS-WRITABLE; \
        /bin/busybox unshare -U /bin/true && echo USERNS-ALLOWED; \
        id -u; cat /etc/hosts; echo done";
    let def = f.def("locked", script);
    f.run(&def).await;
    f.wait_for("locked", "exit", |s| s.state.is_final()).await;
    let logs = f.logs("locked");
    assert!(logs.contains("NoNewPrivs:\t1"), "{logs}");
    // Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID
    // SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert!(logs.contains("CapEff:\t00000000a80425fb"), "{logs}");
    assert!(!logs.contains("PROCSYS-WRITABLE"), "{logs}");
    assert!(!logs.contains("USERNS-ALLOWED"), "{logs}");
    assert!(
        logs.contains("localhost") && logs.contains("done"),
        "{logs}"
    );
}

#[tokio::test]
async fn the_memory_limit_is_enforced() {
    let f = fixture().await;
    // tail keeps the whole newline-free stream in memory.
    let script = "head -c 200000000 /dev/zero | tail -n 1 > /dev/null; echo tail-exit-$?";
    let mut def = f.def("hungry", script);
    def.limits = Limits {
        memory_bytes: Some(32 * 1024 * 1024),
        ..Limits::default()
    };
    f.run(&def).await;
    f.wait_for("hungry", "exit", |s| s.state.is_final()).await;
    let logs = f.logs("hungry");
    assert!(
        logs.contains("tail-exit-137"),
        "the kernel killed it at the limit: {logs}"
    );
    f.run(&f.def("fed", script)).await;
    f.wait_for("fed", "exit", |s| s.state.is_final()).await;
    let logs = f.logs("fed");
    assert!(
        logs.contains("tail-exit-0"),
        "without a limit it finishes: {logs}"
    );
}

#[tokio::test]
async fn a_container_killed_from_outside_is_restarted_by_policy() {
    let f = fixture().await;
    let mut def = f.def("phoenix", "echo up; exec sleep 1000");
    def.restart = RestartPolicy::Always;
    def.stop_timeout_secs = 1;
    let first = f.run(&def).await;
    let pid = first.pid.expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    let again = f
        .wait_for("phoenix", "a restart", |s| {
            s.state == State::Running && s.restarts >= 1 && s.pid != Some(pid)
        })
        .await;
    assert_eq!(again.exit_code, Some(137), "the kill is recorded");
    // Stopping wins over the policy; sleep as PID 1 ignores SIGTERM, so
    // this also exercises the SIGKILL after the timeout.
    let stopped = f
        .manager
        .stop("phoenix")
        .await
        .expect("stop")
        .expect("status");
    assert_eq!(stopped.state, State::Stopped);
    assert_eq!(stopped.exit_code, Some(137));
}

#[tokio::test]
async fn on_failure_restarts_with_backoff_and_stop_is_graceful() {
    let f = fixture().await;
    let mut def = f.def("flaky", "echo attempt; exit 1");
    def.restart = RestartPolicy::OnFailure;
    f.run(&def).await;
    let status = f
        .wait_for("flaky", "three restarts", |s| s.restarts >= 3)
        .await;
    assert_eq!(status.exit_code, Some(1));
    assert!(f.logs("flaky").matches("attempt").count() >= 3);
    f.manager.stop("flaky").await.expect("stop");

    let graceful = f.def(
        "polite",
        "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
    );
    f.run(&graceful).await;
    f.wait_for("polite", "running", |s| s.state == State::Running)
        .await;
    let started = Instant::now();
    let stopped = f
        .manager
        .stop("polite")
        .await
        .expect("stop")
        .expect("status");
    assert_eq!(
        (stopped.state, stopped.exit_code),
        (State::Stopped, Some(0))
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "it stopped on SIGTERM, not by the timeout"
    );
    assert!(f.logs("polite").contains("bye"));
}

#[tokio::test]
async fn binds_reach_the_device_and_containers_outlive_a_new_manager() {
    let f = fixture().await;
    let data = f.dir.path().join("apps/notes");
    std::fs::create_dir_all(&data).expect("app data");
    let mut def = f.def("notes", "echo saved > /data/note.txt; exec sleep 1000");
    def.binds = vec![BindMount {
        source: data.clone(),
        target: "/data".into(),
        read_only: false,
    }];
    def.restart = RestartPolicy::Always;
    def.stop_timeout_secs = 1;
    f.run(&def).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !data.join("note.txt").exists() {
        assert!(
            Instant::now() < deadline,
            "the container did not write through the bind mount"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_to_string(data.join("note.txt")).expect("note"),
        "saved\n"
    );

    // A supervisor that starts again finds the running container.
    let again = ContainerManager::open(
        &f.dir.path().join("containers"),
        ShimCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_ddaemon")),
            args: vec!["shim".into()],
        },
    )
    .expect("manager");
    let listed = again.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].shim_alive);
    assert!(
        again.reattach().await.expect("reattach").is_empty(),
        "nothing needed restarting"
    );

    // A shim that dies is noticed and, per policy, replaced.
    let shim = listed[0]
        .status
        .as_ref()
        .map(|s| s.shim_pid)
        .expect("shim pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill shim");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(again.reattach().await.expect("reattach"), ["notes"]);
    let status = f
        .wait_for("notes", "running again", |s| {
            s.state == State::Running && s.shim_pid != shim
        })
        .await;
    assert!(status.pid.is_some());
    again.remove("notes").await.expect("remove");
}
