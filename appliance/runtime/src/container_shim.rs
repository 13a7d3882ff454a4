//! The shim: one small single-threaded process per container, the
//! container's parent for its whole life (the containerd model).
//!
//! libcontainer clones the calling process, which must therefore not be the
//! multi-threaded supervisor. The shim is `ddaemon shim DIR`, started by the
//! supervisor in its own session so that it outlives a supervisor restart.
//! It mounts the overlay root filesystem, writes `config.json`, creates and
//! starts the container through libcontainer, copies its output into a
//! size-capped log, reaps it, applies the restart policy with exponential
//! backoff, stops it on SIGTERM (SIGTERM to the container, SIGKILL after the
//! timeout), and reports every change in `status.json`.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::clock::now_unix;
use crate::container_def::{ContainerDef, RestartPolicy};
use crate::container_log::{DEFAULT_MAX_BYTES, RotatingLog};
use crate::container_paths::ContainerPaths;
use crate::container_spec::build_spec;
use crate::container_status::{ContainerStatus, State};
use crate::fs_atomic::write_atomic;
use crate::network::hosts_file;

/// A run that lasted this long resets the backoff.
const STABLE_RUN: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs the shim for the container folder `dir` until the container is
/// finished with; returns the process exit code.
pub fn run_shim(dir: &Path) -> i32 {
    // Our own session: the supervisor's restart or its terminal going away
    // must not take the container with it.
    let _ = nix::unistd::setsid();
    let paths = ContainerPaths::new(dir);
    let def: ContainerDef = match std::fs::read(paths.def())
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(def) => def,
        Err(err) => {
            tracing::error!(dir = %dir.display(), %err, "cannot read container.json");
            return 2;
        }
    };
    let mut shim = Shim {
        status: ContainerStatus {
            id: def.id.clone(),
            state: State::Creating,
            shim_pid: std::process::id() as i32,
            pid: None,
            exit_code: None,
            restarts: 0,
            started_at: None,
            finished_at: None,
            error: None,
        },
        paths,
        def,
        stop: Arc::new(AtomicBool::new(false)),
    };
    match shim.run() {
        Ok(()) => 0,
        Err(err) => {
            tracing::error!(id = %shim.def.id, %err, "container failed");
            shim.status.state = State::Failed;
            shim.status.pid = None;
            shim.status.error = Some(err);
            shim.save();
            unmount_rootfs(&shim.paths);
            1
        }
    }
}

struct Shim {
    paths: ContainerPaths,
    def: ContainerDef,
    status: ContainerStatus,
    stop: Arc<AtomicBool>,
}

/// How one run of the container ended.
struct RunEnd {
    exit_code: i32,
    lasted: Duration,
}

impl Shim {
    fn save(&self) {
        if let Err(err) = self.status.write(&self.paths.status()) {
            tracing::error!(%err, "cannot write status.json");
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let (wake_read, wake_write) =
            UnixStream::pair().map_err(|e| format!("cannot make the wake-up pipe: {e}"))?;
        wake_read.set_nonblocking(true).map_err(|e| e.to_string())?;
        for signal in [libc_sig(Signal::SIGTERM), libc_sig(Signal::SIGINT)] {
            signal_hook::flag::register(signal, Arc::clone(&self.stop))
                .map_err(|e| e.to_string())?;
            let wake = wake_write.try_clone().map_err(|e| e.to_string())?;
            signal_hook::low_level::pipe::register(signal, wake).map_err(|e| e.to_string())?;
        }
        signal_hook::low_level::pipe::register(libc_sig(Signal::SIGCHLD), wake_write)
            .map_err(|e| e.to_string())?;
        // A terminal hang-up is not a stop request.
        let _ =
            signal_hook::flag::register(libc_sig(Signal::SIGHUP), Arc::new(AtomicBool::new(false)));

        self.save();
        self.prepare_rootfs()?;
        let mut log = RotatingLog::open(&self.paths.log(), DEFAULT_MAX_BYTES)
            .map_err(|e| format!("cannot open {}: {e}", self.paths.log().display()))?;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let end = self.run_once(&wake_read, &mut log)?;
            self.status.exit_code = Some(end.exit_code);
            self.status.pid = None;
            self.status.finished_at = Some(now_unix());
            let stopping = self.stop.load(Ordering::SeqCst);
            let restart = !stopping
                && match self.def.restart {
                    RestartPolicy::No => false,
                    RestartPolicy::OnFailure => end.exit_code != 0,
                    RestartPolicy::Always => true,
                };
            if !restart {
                self.status.state = if stopping {
                    State::Stopped
                } else {
                    State::Exited
                };
                self.save();
                tracing::info!(id = %self.def.id, code = end.exit_code, "container ended");
                break;
            }
            if end.lasted >= STABLE_RUN {
                backoff = FIRST_BACKOFF;
            }
            self.status.state = State::Restarting;
            self.save();
            tracing::info!(id = %self.def.id, code = end.exit_code, ?backoff, "restarting");
            if self.wait_or_stop(&wake_read, backoff) {
                self.status.state = State::Stopped;
                self.save();
                break;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            self.status.restarts += 1;
        }
        unmount_rootfs(&self.paths);
        Ok(())
    }

    /// Sleeps for `duration` unless a stop is asked for; true if it was.
    fn wait_or_stop(&self, wake: &UnixStream, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = [PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, poll_timeout(left));
            drain(wake);
            reap_any();
        }
    }

    /// Mounts the overlay (image layers below, the container's own layer
    /// above) and writes the generated files.
    fn prepare_rootfs(&self) -> Result<(), String> {
        for dir in [
            self.paths.rootfs(),
            self.paths.upper(),
            self.paths.work(),
            self.paths.runtime_state(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        unmount_rootfs(&self.paths);
        if self.def.layers.is_empty() {
            return Err("the image has no layers".into());
        }
        // overlayfs lists the top layer first.
        let lower: Vec<String> = self
            .def
            .layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.paths.upper().display(),
            self.paths.work().display()
        );
        nix::mount::mount(
            Some("overlay"),
            &self.paths.rootfs(),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| format!("cannot mount the root filesystem (overlay): {e}"))?;
        let hosts = hosts_file(&self.def.network.hosts);
        write_atomic(&self.paths.hosts(), hosts.as_bytes()).map_err(|e| e.to_string())?;
        let resolv: String = self
            .def
            .network
            .nameservers
            .iter()
            .map(|ns| format!("nameserver {ns}\n"))
            .collect();
        write_atomic(&self.paths.resolv_conf(), resolv.as_bytes()).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Creates, starts and waits for the container once.
    fn run_once(&mut self, wake: &UnixStream, log: &mut RotatingLog) -> Result<RunEnd, String> {
        remove_stale(&self.paths, &self.def.id);
        let spec = build_spec(&self.def, &self.paths).map_err(|e| e.to_string())?;
        let config = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
        write_atomic(&self.paths.bundle().join("config.json"), &config)
            .map_err(|e| e.to_string())?;

        let (out_read, out_write) = nix::unistd::pipe().map_err(|e| e.to_string())?;
        let (err_read, err_write) = nix::unistd::pipe().map_err(|e| e.to_string())?;
        let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        let mut container = ContainerBuilder::new(self.def.id.clone(), SyscallType::default())
            .with_root_path(self.paths.runtime_state())
            .map_err(|e| e.to_string())?
            .with_stdin(OwnedFd::from(null))
            .with_stdout(out_write)
            .with_stderr(err_write)
            .validate_id()
            .map_err(|e| e.to_string())?
            .as_init(self.paths.bundle())
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| format!("cannot create the container: {e}"))?;
        let started = Instant::now();
        container
            .start()
            .map_err(|e| format!("cannot start the container: {e}"))?;
        let pid = container
            .pid()
            .ok_or("libcontainer did not report the container's process")?;
        self.status.state = State::Running;
        self.status.pid = Some(pid.as_raw());
        self.status.started_at = Some(now_unix());
        self.status.error = None;
        self.save();
        tracing::info!(id = %self.def.id, pid = pid.as_raw(), "container running");

        let exit_code = self.supervise(&mut container, pid, wake, [&out_read, &err_read], log);
        // Output written just before the end is still in the pipes.
        copy_available(&out_read, log);
        copy_available(&err_read, log);
        if let Err(err) = container.delete(true) {
            tracing::warn!(id = %self.def.id, %err, "libcontainer could not delete the container");
        }
        Ok(RunEnd {
            exit_code,
            lasted: started.elapsed(),
        })
    }

    /// Copies output, handles stop requests, and returns the exit code
    /// once the container's init process has been reaped.
    fn supervise(
        &mut self,
        container: &mut Container,
        pid: Pid,
        wake: &UnixStream,
        outputs: [&OwnedFd; 2],
        log: &mut RotatingLog,
    ) -> i32 {
        let mut kill_at: Option<Instant> = None;
        let mut open = [true, true];
        loop {
            if self.stop.load(Ordering::SeqCst) && kill_at.is_none() {
                tracing::info!(id = %self.def.id, "stopping: SIGTERM");
                self.status.state = State::Stopping;
                self.save();
                let _ = container.kill(Signal::SIGTERM, true);
                kill_at = Some(Instant::now() + Duration::from_secs(self.def.stop_timeout_secs));
            }
            if let Some(deadline) = kill_at
                && Instant::now() >= deadline
            {
                tracing::warn!(id = %self.def.id, "still running after the stop timeout: SIGKILL");
                let _ = container.kill(Signal::SIGKILL, true);
                kill_at = Some(Instant::now() + Duration::from_secs(3600));
            }
            if let Some(code) = reap_until(pid) {
                return code;
            }
            let timeout = kill_at.map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1))
            });
            let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
            for (i, fd) in outputs.iter().enumerate() {
                if open[i] {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                }
            }
            let _ = poll(&mut fds, poll_timeout(timeout));
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if ready.first().copied().unwrap_or(false) {
                drain(wake);
            }
            let mut slot = 1;
            for (i, fd) in outputs.iter().enumerate() {
                if !open[i] {
                    continue;
                }
                if ready.get(slot).copied().unwrap_or(false) && !copy_once(fd, log) {
                    open[i] = false;
                }
                slot += 1;
            }
        }
    }
}

fn libc_sig(signal: Signal) -> i32 {
    signal as i32
}

fn poll_timeout(d: Duration) -> PollTimeout {
    PollTimeout::try_from(d.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::NONE)
}

/// Reaps every exited child; returns the exit code if `pid` was among them.
fn reap_until(pid: Pid) -> Option<i32> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => found = Some(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => found = Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(_) => {}
        }
    }
}

fn reap_any() {
    let _ = reap_until(Pid::from_raw(-1));
}

fn drain(wake: &UnixStream) {
    let mut buf = [0u8; 64];
    let mut reader = wake;
    while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
}

/// Copies one read's worth of output; false at end of file.
fn copy_once(fd: &OwnedFd, log: &mut RotatingLog) -> bool {
    let mut buf = [0u8; 64 * 1024];
    match rustix::io::read(fd, &mut buf) {
        Ok(0) => false,
        Ok(n) => {
            if let Err(err) = log.write(&buf[..n]) {
                tracing::warn!(%err, "cannot write the container log");
            }
            true
        }
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => true,
        Err(_) => false,
    }
}

/// Copies what is waiting in a pipe without blocking.
fn copy_available(fd: &OwnedFd, log: &mut RotatingLog) {
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        if !fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
            || !copy_once(fd, log)
        {
            return;
        }
    }
}

/// Removes libcontainer state left by a shim that died.
fn remove_stale(paths: &ContainerPaths, id: &str) {
    let state = paths.runtime_state().join(id);
    if !state.exists() {
        return;
    }
    match Container::load(state.clone()) {
        Ok(mut old) => {
            let _ = old.kill(Signal::SIGKILL, true);
            if let Err(err) = old.delete(true) {
                tracing::warn!(%err, "cannot delete a stale container");
            }
        }
        Err(err) => tracing::warn!(%err, "cannot load a stale container"),
    }
    if state.exists() {
        let _ = std::fs::remove_dir_all(&state);
    }
}

/// Unmounts the container's root filesystem if it is mounted.
pub fn unmount_rootfs(paths: &ContainerPaths) {
    match nix::mount::umount2(&paths.rootfs(), nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(err) => tracing::warn!(%err, "cannot unmount the root filesystem"),
    }
}

/// Runs a prepared OCI bundle once, the way `crun run` does: create,
/// start, wait, delete; returns the exit code. For the start-time benchmark
/// against crun and runc, which compares the runtimes on the same bundle.
pub fn run_bundle(id: &str, bundle: &Path, state_root: &Path) -> Result<i32, String> {
    std::fs::create_dir_all(state_root).map_err(|e| e.to_string())?;
    let mut container = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(state_root)
        .map_err(|e| e.to_string())?
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("cannot create the container: {e}"))?;
    container
        .start()
        .map_err(|e| format!("cannot start the container: {e}"))?;
    let pid = container.pid().ok_or("no container process")?;
    let code = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.to_string()),
        }
    };
    container.delete(true).map_err(|e| e.to_string())?;
    Ok(code)
}
