//! `ddaemon-init`: the first program the kernel runs on a device.
//!
//! It will own everything that must happen before systemd starts: picking the
//! A/B root slot and counting boot tries (with `ddaemon-recovery`), growing the
//! data partition at first boot, carrying out a requested factory reset,
//! mounting `/data` and the overlays of `/etc` and `/var`. It stays tiny and
//! synchronous (no tokio) and ends by handing PID 1 over to systemd.
//!
//! Today it does only the hand-over; the image work adds the steps before it.

use std::ffi::CString;

/// Where Debian installs systemd; `init=` on the kernel command line points here otherwise.
const SYSTEMD: &str = "/lib/systemd/systemd";

fn main() {
    // The kernel passes its unparsed command-line words on to init; systemd
    // reads them too (e.g. `systemd.unit=`), so they are forwarded unchanged.
    let mut argv: Vec<CString> = Vec::new();
    for arg in std::iter::once(SYSTEMD.to_owned()).chain(std::env::args().skip(1)) {
        match CString::new(arg) {
            Ok(arg) => argv.push(arg),
            Err(err) => eprintln!("ddaemon-init: dropping an argument with a NUL byte: {err}"),
        }
    }
    let Some(program) = argv.first().cloned() else {
        return;
    };
    let err = nix::unistd::execv(&program, &argv);
    // Returning from PID 1 panics the kernel; say why on the console first.
    eprintln!("ddaemon-init: could not start {SYSTEMD}: {err:?}");
    std::process::exit(1);
}
