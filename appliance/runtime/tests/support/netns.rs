//! Running a piece of a test inside a network namespace the test made:
//! on a thread of its own, so the rest of the test stays where it is.

use std::fs::File;

use nix::sched::{CloneFlags, setns};

/// Runs `f` on a new thread inside `/run/netns/NAME`.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = File::open(format!("/run/netns/{name}")).expect("open the netns");
                setns(ns, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("the netns thread panicked")
    })
}

/// Runs `f` on a new thread inside `/run/netns/NAME` and leaves it running.
pub fn spawn_in(name: &str, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = File::open(path).expect("open the netns");
        setns(ns, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}
