//! `ddaemon-init`: the first program of a ddaemon device's own system.
//!
//! The kernel runs it as PID 1 because the boot entry says
//! `init=/sbin/ddaemon-init`. Debian's initramfs comes first: it finds
//! and mounts the read-only root filesystem (`root=PARTLABEL=root-a`,
//! erofs), moves its `/sys`, `/proc`, `/dev` (udev's devtmpfs, with the
//! `/dev/disk/by-*` links udev made) and `/run` (a tmpfs, mode 0755,
//! `noexec`) into it, switches to it and executes the `init=` program.
//! Running after the initramfs, rather than as a hook inside it, keeps
//! the stock Debian initramfs (its drivers, its root lookup, nothing of
//! ours to rebuild per kernel) and lets this program use the root
//! filesystem's own tools (`sfdisk`, `partx`, `mkfs.ext4`, `resize2fs`).
//! It does not rely on the initramfs, though: without one (or one that
//! leaves less behind) it mounts the kernel filesystems itself and finds
//! the partitions through sysfs rather than udev's links.
//!
//! What it does, each step printed on the console:
//!
//! 1. makes sure `/proc`, `/sys`, `/dev` and `/run` are mounted;
//! 2. finds the partition named `data` (partition 4 of the root's disk
//!    on an MBR disk), grows it to the end of the disk when there is
//!    room, makes its ext4 filesystem on first boot, mounts it on
//!    `/data`, and carries out a factory reset the owner asked for
//!    (`/data/ddaemon/factory-reset`: everything but `/data/disks` goes);
//! 3. puts writable overlays on `/etc` and `/var`, their changes kept in
//!    `/data/overlay`;
//! 4. records the root slot that booted in `/run/ddaemon/boot-slot`;
//! 5. sets the hostname (`/data/ddaemon/hostname`, or `ddaemon`);
//! 6. hands PID 1 to systemd (`/lib/systemd/systemd`, else `/sbin/init`)
//!    with the arguments it was given.
//!
//! When a step fails it undoes its own mounts, and init falls back to a
//! tmpfs on `/data` and writes the errors to `/run/ddaemon/init-error`,
//! then starts systemd anyway so the supervisor can show the problem and
//! recovery can run. PID 1 must never exit (the kernel panics): if not
//! even systemd can be started, it prints why every minute, forever.
//!
//! It stays small and synchronous: no async runtime, no threads beyond
//! reading a tool's output, `nix` for the system calls.

mod boot;
mod cmdline;
mod command;
mod console;
mod ext4;
mod first_boot;
mod hostname;
mod mounts;
mod os;
mod partitions;
mod reset;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use console::log;

/// Where Debian installs systemd.
const SYSTEMD: &str = "/lib/systemd/systemd";
/// Whatever the root filesystem calls its init, if systemd is not there.
const FALLBACK_INIT: &str = "/sbin/init";
/// How often a stuck PID 1 repeats why it is stuck.
const REPEAT: Duration = Duration::from_secs(60);

fn main() {
    if std::process::id() != 1 {
        log!(
            "refusing to run: this is the device's PID 1 (init={}), it mounts filesystems \
             and starts systemd; it is not a program to run by hand",
            "/sbin/ddaemon-init"
        );
        std::process::exit(2);
    }
    log!(
        "starting ({} {})",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION")
    );
    // The kernel passes its command-line words it does not know on to
    // init; systemd reads them too (e.g. `single`), so they go on unchanged.
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let outcome = boot::run(&mut os::RealOs, &os::Root::system());
    if outcome.errors.is_empty() {
        log!("all set; handing over to systemd");
    } else {
        log!(
            "starting systemd in spite of {} problem(s), recorded in {}",
            outcome.errors.len(),
            boot::INIT_ERROR
        );
    }
    let mut problems = outcome.errors;
    for program in [SYSTEMD, FALLBACK_INIT] {
        let message = format!("could not start {program}: {}", exec(program, &args));
        log!("FAILED {message}");
        problems.push(message);
    }
    stay_forever(&problems)
}

/// Replaces this process with `program`; returns only why it could not.
fn exec(program: &str, args: &[OsString]) -> String {
    let Ok(path) = CString::new(program) else {
        return "its path holds a NUL byte".to_owned();
    };
    let mut argv = vec![path.clone()];
    for arg in args {
        match CString::new(arg.as_bytes()) {
            Ok(arg) => argv.push(arg),
            Err(err) => log!("dropping an argument with a NUL byte: {err}"),
        }
    }
    match nix::unistd::execv(&path, &argv) {
        Ok(never) => match never {},
        Err(errno) => errno.to_string(),
    }
}

/// What PID 1 does when nothing can take over: say why, every minute,
/// and reap whatever children are left.
fn stay_forever(problems: &[String]) -> ! {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    loop {
        for problem in problems {
            log!("{problem}");
        }
        log!("nothing could take over PID 1; this device needs recovery");
        while let Ok(status) = waitpid(nix::unistd::Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        std::thread::sleep(REPEAT);
    }
}
