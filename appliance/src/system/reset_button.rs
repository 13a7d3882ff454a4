//! Watching the reset button the board file names, and carrying out what
//! its presses ask for (the patterns are `ddaemon_recovery::button`'s).
//!
//! - A GPIO button, through the kernel's GPIO character device
//!   (`gpiocdev`, which serves the Raspberry Pi's header too).
//! - A PC's power button, through the input device the kernel makes for
//!   it (`KEY_POWER` events from `/dev/input/event*`); systemd-logind is
//!   told to leave the key alone (the image sets `HandlePowerKey=ignore`),
//!   so one press still shuts down, but through here.
//!
//! Every press is logged; the status LED blinks at each threshold.

use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ddaemon_boards::ResetButton;
use ddaemon_recovery::button::{Kind, PressPattern, Request, Signal};

/// How often the patterns hear that time passed.
const TICK: Duration = Duration::from_millis(100);
/// `EV_KEY` and `KEY_POWER` from linux/input-event-codes.h.
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit kernels: timeval, type, code, value.
const INPUT_EVENT_SIZE: usize = 24;

/// One change of the button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub pressed: bool,
}

/// Where presses come from.
pub trait ButtonSource: Send {
    /// Waits at most `wait` for the next change.
    fn next(&mut self, wait: Duration) -> std::io::Result<Option<Edge>>;
    fn kind(&self) -> Kind;
    fn describe(&self) -> String;
}

/// How often the input devices are looked through for new power keys.
const RESCAN: Duration = Duration::from_secs(2);

/// The power button's input devices.
#[derive(Debug)]
pub struct PowerButton {
    sys_input: PathBuf,
    dev_input: PathBuf,
    devices: Vec<(PathBuf, std::fs::File)>,
    scanned: Option<Instant>,
    /// Power keys that could not be opened, said once each.
    refused: Vec<PathBuf>,
}

impl PowerButton {
    /// Watches every input device that reports `KEY_POWER` (found through
    /// sysfs: `/sys/class/input/eventN/device/capabilities/key`), those
    /// there now and those that appear later: at boot the supervisor can
    /// start before udev has loaded the ACPI button's driver, and a USB
    /// keyboard with a power key can be plugged in at any time.
    pub fn open(sys_input: &Path, dev_input: &Path) -> std::io::Result<Self> {
        let mut button = Self {
            sys_input: sys_input.to_owned(),
            dev_input: dev_input.to_owned(),
            devices: Vec::new(),
            scanned: None,
            refused: Vec::new(),
        };
        button.rescan()?;
        if button.devices.is_empty() {
            tracing::info!("no input device reports a power key yet; watching for one");
        }
        Ok(button)
    }

    /// Opens the power-key devices not open yet.
    fn rescan(&mut self) -> std::io::Result<()> {
        self.scanned = Some(Instant::now());
        for entry in std::fs::read_dir(&self.sys_input)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let path = self.dev_input.join(&name);
            if !name.starts_with("event") || self.devices.iter().any(|(p, _)| *p == path) {
                continue;
            }
            let caps = self.sys_input.join(&name).join("device/capabilities/key");
            if !has_key(
                &std::fs::read_to_string(caps).unwrap_or_default(),
                KEY_POWER,
            ) {
                continue;
            }
            match std::fs::File::open(&path) {
                Ok(file) => {
                    tracing::info!(device = %path.display(), "watching a power key");
                    self.devices.push((path, file));
                }
                Err(err) => {
                    if !self.refused.contains(&path) {
                        tracing::warn!(device = %path.display(), %err, "cannot open a power key");
                        self.refused.push(path);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a sysfs key bitmap (hex words, most significant first, each a
/// 64-bit long) has `key` set.
fn has_key(bitmap: &str, key: u16) -> bool {
    let words: Vec<&str> = bitmap.split_whitespace().rev().collect();
    let (word, bit) = (usize::from(key) / 64, u32::from(key) % 64);
    words
        .get(word)
        .and_then(|w| u64::from_str_radix(w, 16).ok())
        .is_some_and(|w| w & (1 << bit) != 0)
}

/// The key events in a buffer of `input_event`s: `Some(pressed)` for each
/// `KEY_POWER` press or release (autorepeat ignored).
fn power_key_edges(buf: &[u8]) -> Vec<bool> {
    buf.chunks_exact(INPUT_EVENT_SIZE)
        .filter_map(|e| {
            let kind = u16::from_ne_bytes([e[16], e[17]]);
            let code = u16::from_ne_bytes([e[18], e[19]]);
            let value = i32::from_ne_bytes([e[20], e[21], e[22], e[23]]);
            (kind == EV_KEY && code == KEY_POWER && (value == 0 || value == 1))
                .then_some(value == 1)
        })
        .collect()
}

impl ButtonSource for PowerButton {
    fn next(&mut self, wait: Duration) -> std::io::Result<Option<Edge>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::io::Read as _;
        if self.scanned.is_none_or(|at| at.elapsed() >= RESCAN)
            && let Err(err) = self.rescan()
        {
            tracing::warn!(%err, "cannot look for power keys");
        }
        if self.devices.is_empty() {
            std::thread::sleep(wait);
            return Ok(None);
        }
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        let revents: Vec<PollFlags> = {
            let mut fds: Vec<PollFd<'_>> = self
                .devices
                .iter()
                .map(|(_, f)| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                // A signal for the process: just another tick.
                Err(nix::errno::Errno::EINTR) => return Ok(None),
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            fds.iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect()
        };
        // An unplugged device (a USB keyboard with a power key) is dropped,
        // or it would wake every poll at once. What is kept says, in the
        // kept devices' order, whether each has something to read.
        let keep: Vec<bool> = revents
            .iter()
            .map(|r| !r.intersects(gone) || r.contains(PollFlags::POLLIN))
            .collect();
        let mut kept = keep.iter();
        self.devices.retain(|(path, _)| {
            let keep = kept.next().copied().unwrap_or(true);
            if !keep {
                tracing::warn!(device = %path.display(), "an input device went away");
            }
            keep
        });
        let ready: Vec<bool> = revents
            .iter()
            .zip(&keep)
            .filter(|(_, keep)| **keep)
            .map(|(r, _)| r.contains(PollFlags::POLLIN))
            .collect();
        for (i, is_ready) in ready.into_iter().enumerate() {
            if !is_ready {
                continue;
            }
            let mut buf = [0u8; INPUT_EVENT_SIZE * 16];
            // A device unplugged with events still queued reads as gone:
            // dropped, and the others kept (the next look finds it again
            // if it comes back).
            let n = match self.devices[i].1.read(&mut buf) {
                Ok(n) => n,
                Err(err) => {
                    let (path, _) = self.devices.remove(i);
                    tracing::warn!(device = %path.display(), %err, "an input device went away");
                    return Ok(None);
                }
            };
            // Presses and releases come as pairs; the pattern counts presses.
            if let Some(&pressed) = power_key_edges(&buf[..n]).iter().find(|p| **p) {
                return Ok(Some(Edge { pressed }));
            }
        }
        Ok(None)
    }

    fn kind(&self) -> Kind {
        Kind::Presses
    }

    fn describe(&self) -> String {
        let paths: Vec<String> = self
            .devices
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        if paths.is_empty() {
            "the power button (none found yet)".to_owned()
        } else {
            format!("the power button ({})", paths.join(", "))
        }
    }
}

/// A GPIO line with edge events.
#[derive(Debug)]
pub struct GpioButton {
    request: gpiocdev::Request,
    name: String,
}

impl GpioButton {
    pub fn open(chip: &str, line: u32, active_low: bool) -> Result<Self, gpiocdev::Error> {
        let path = if chip.starts_with('/') {
            chip.to_owned()
        } else {
            format!("/dev/{chip}")
        };
        let mut builder = gpiocdev::Request::builder();
        builder
            .on_chip(&path)
            .with_consumer("ddaemon-reset-button")
            .with_line(line)
            .as_input()
            .with_edge_detection(gpiocdev::line::EdgeDetection::BothEdges);
        if active_low {
            builder.as_active_low();
        }
        Ok(Self {
            request: builder.request()?,
            name: format!("GPIO line {line} of {path}"),
        })
    }
}

impl ButtonSource for GpioButton {
    fn next(&mut self, wait: Duration) -> std::io::Result<Option<Edge>> {
        let gpio = |e: gpiocdev::Error| std::io::Error::other(e.to_string());
        if !self.request.wait_edge_event(wait).map_err(gpio)? {
            return Ok(None);
        }
        let event = self.request.read_edge_event().map_err(gpio)?;
        Ok(Some(Edge {
            pressed: event.kind == gpiocdev::line::EdgeKind::Rising,
        }))
    }

    fn kind(&self) -> Kind {
        Kind::Held
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// The board's button, opened.
pub fn open_board_button(button: &ResetButton) -> Result<Box<dyn ButtonSource>, String> {
    match button {
        ResetButton::Gpio {
            chip,
            line,
            active_low,
        } => GpioButton::open(chip, *line, *active_low)
            .map(|b| Box::new(b) as Box<dyn ButtonSource>)
            .map_err(|e| format!("GPIO line {line} of {chip}: {e}")),
        ResetButton::PowerButton => {
            PowerButton::open(Path::new("/sys/class/input"), Path::new("/dev/input"))
                .map(|b| Box::new(b) as Box<dyn ButtonSource>)
                .map_err(|e| format!("the power button: {e}"))
        }
    }
}

/// ddaemon-init's factory-reset marker in a data folder: when it exists at
/// boot, /data is wiped (all but /data/disks) before anything mounts it.
pub fn factory_reset_marker(data_dir: &Path) -> PathBuf {
    data_dir.join("ddaemon/factory-reset")
}

/// Asks for a factory reset at the next boot; `why` is kept in the marker.
pub fn request_factory_reset(marker: &Path, why: &str) -> std::io::Result<()> {
    if let Some(dir) = marker.parent() {
        std::fs::create_dir_all(dir)?;
    }
    ddaemon_runtime::fs_atomic::write_atomic(marker, format!("{why}\n").as_bytes())
        .map_err(std::io::Error::other)
}

/// Blinks a status LED `times` times (from `/sys/class/leds/NAME`), then
/// gives it back to its trigger.
pub fn blink(leds: &Path, name: &str, times: u32) {
    let dir = leds.join(name);
    let trigger_path = dir.join("trigger");
    // The active trigger is the one in brackets.
    let previous = std::fs::read_to_string(&trigger_path).ok().and_then(|t| {
        t.split_whitespace()
            .find(|w| w.starts_with('['))
            .map(|w| w.trim_matches(['[', ']']).to_owned())
    });
    let _ = std::fs::write(&trigger_path, "none");
    for _ in 0..times {
        let _ = std::fs::write(dir.join("brightness"), "1");
        std::thread::sleep(Duration::from_millis(150));
        let _ = std::fs::write(dir.join("brightness"), "0");
        std::thread::sleep(Duration::from_millis(150));
    }
    if let Some(previous) = previous {
        let _ = std::fs::write(&trigger_path, previous);
    }
}

/// Feeds the source's edges and the clock to the patterns until the
/// source fails; `act` hears every decision, `armed` every threshold.
pub fn watch(
    mut source: Box<dyn ButtonSource>,
    mut armed: impl FnMut(Request),
    mut act: impl FnMut(Request),
) -> std::io::Error {
    let started = Instant::now();
    let mut pattern = PressPattern::new(source.kind());
    tracing::info!(button = %source.describe(), "watching the reset button");
    loop {
        let signal = match source.next(TICK) {
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {
                pattern.tick(started.elapsed())
            }
            Ok(Some(edge)) => {
                tracing::info!(pressed = edge.pressed, button = %source.describe(), "reset button");
                pattern.edge(edge.pressed, started.elapsed())
            }
            Ok(None) => pattern.tick(started.elapsed()),
            Err(err) => return err,
        };
        match signal {
            Some(Signal::Armed(request)) => {
                tracing::warn!(?request, "reset button: release now for this");
                armed(request);
            }
            Some(Signal::Act(request)) => {
                tracing::warn!(?request, "reset button: acting");
                act(request);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_power_key_is_found_in_the_capability_bitmap() {
        // An ACPI power button: only KEY_POWER (116 = word 1, bit 52).
        assert!(has_key("10000000000000 0", KEY_POWER));
        // A keyboard without it.
        assert!(!has_key("0 fffffffffffffffe", KEY_POWER));
        assert!(!has_key("", KEY_POWER));
    }

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e.extend_from_slice(&kind.to_ne_bytes());
        e.extend_from_slice(&code.to_ne_bytes());
        e.extend_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn presses_and_releases_come_out_of_input_events() {
        let mut buf = event(EV_KEY, KEY_POWER, 1);
        buf.extend(event(0, 0, 0)); // EV_SYN
        buf.extend(event(EV_KEY, KEY_POWER, 2)); // autorepeat
        buf.extend(event(EV_KEY, 30, 1)); // another key
        buf.extend(event(EV_KEY, KEY_POWER, 0));
        assert_eq!(power_key_edges(&buf), [true, false]);
    }

    /// A scripted source: edges at given times since the start.
    struct Scripted {
        edges: Vec<(Duration, bool)>,
        started: Instant,
    }

    impl ButtonSource for Scripted {
        fn next(&mut self, wait: Duration) -> std::io::Result<Option<Edge>> {
            let Some(&(at, pressed)) = self.edges.first() else {
                return Err(std::io::Error::other("script over"));
            };
            let now = self.started.elapsed();
            if at <= now {
                self.edges.remove(0);
                return Ok(Some(Edge { pressed }));
            }
            std::thread::sleep(wait.min(at - now));
            Ok(None)
        }
        fn kind(&self) -> Kind {
            Kind::Presses
        }
        fn describe(&self) -> String {
            "script".into()
        }
    }

    #[test]
    fn a_power_key_that_appears_later_is_watched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sys, dev) = (dir.path().join("sys"), dir.path().join("dev"));
        let add = |name: &str, caps: &str, events: &[u8]| {
            std::fs::create_dir_all(sys.join(name).join("device/capabilities")).expect("mkdir");
            std::fs::write(sys.join(name).join("device/capabilities/key"), caps).expect("caps");
            std::fs::create_dir_all(&dev).expect("mkdir");
            std::fs::write(dev.join(name), events).expect("dev");
        };
        // A keyboard without a power key is there from the start.
        add("event0", "1\n", &event(EV_KEY, 30, 1));
        let mut button = PowerButton::open(&sys, &dev).expect("open with no power key");
        assert_eq!(button.next(Duration::from_millis(10)).expect("next"), None);
        // The ACPI button's driver loads: found at the next look.
        let power_bit = format!("{:x} 0\n", 1u64 << (KEY_POWER % 64));
        add("event2", &power_bit, &event(EV_KEY, KEY_POWER, 1));
        button.scanned = None;
        assert_eq!(
            button.next(Duration::from_millis(10)).expect("next"),
            Some(Edge { pressed: true })
        );
        assert!(
            button.describe().contains("event2"),
            "{}",
            button.describe()
        );
    }

    #[test]
    fn five_quick_presses_reach_act_as_a_soft_reset() {
        let ms = Duration::from_millis;
        let mut edges = Vec::new();
        for i in 0..5u64 {
            edges.push((ms(i * 300), true));
            edges.push((ms(i * 300 + 100), false));
        }
        // Quiet long enough for the pattern to settle, then the end.
        edges.push((ms(5000), true));
        let source = Scripted {
            edges,
            started: Instant::now(),
        };
        let mut acted = Vec::new();
        let _ = watch(Box::new(source), |_| {}, |r| acted.push(r));
        assert_eq!(acted, [Request::SoftReset]);
    }
}
