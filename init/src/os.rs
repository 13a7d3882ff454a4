//! The boundary with the running system: the `Os` trait (the mount
//! table, mounting, unmounting, running a tool, setting the hostname),
//! its real implementation through `nix` and `std::process`, and `Root`,
//! the directory every file path is resolved under (`/` on a device, a
//! temporary directory in tests). Tests of `boot` put a recording fake
//! in its place; nothing else decides anything here.

use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

use crate::command::{self, Cmd, CommandError};
use crate::mounts::{MountEntry, MountError, MountSpec, parse_mountinfo};

/// What init asks of the system.
pub trait Os {
    /// The mount table (`/proc/self/mountinfo`); fails when `/proc` is
    /// not mounted.
    fn mounts(&self) -> Result<Vec<MountEntry>, MountError>;
    /// Mounts a filesystem.
    fn mount(&mut self, spec: &MountSpec) -> Result<(), MountError>;
    /// Unmounts whatever is on `target`.
    fn unmount(&mut self, target: &Path) -> Result<(), MountError>;
    /// Runs a tool to its end and returns its stdout.
    fn run(&mut self, cmd: &Cmd) -> Result<String, CommandError>;
    /// Sets the kernel's hostname.
    fn set_hostname(&mut self, name: &str) -> Result<(), nix::Error>;
}

/// The directory absolute paths are resolved under.
#[derive(Debug, Clone)]
pub struct Root(PathBuf);

impl Root {
    /// `/`: the real system.
    pub fn system() -> Self {
        Self(PathBuf::from("/"))
    }

    /// Another directory standing in for `/` (tests).
    #[cfg(test)]
    pub fn at(dir: &Path) -> Self {
        Self(dir.to_owned())
    }

    /// Where the absolute path `path` is: `/data` is `ROOT/data`.
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        self.0.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// The real system.
#[derive(Debug, Default)]
pub struct RealOs;

const MOUNTINFO: &str = "/proc/self/mountinfo";

impl Os for RealOs {
    fn mounts(&self) -> Result<Vec<MountEntry>, MountError> {
        std::fs::read_to_string(MOUNTINFO)
            .map(|text| parse_mountinfo(&text))
            .map_err(|source| MountError::Table {
                path: MOUNTINFO.into(),
                source,
            })
    }

    fn mount(&mut self, spec: &MountSpec) -> Result<(), MountError> {
        nix::mount::mount(
            Some(spec.source.as_str()),
            &spec.target,
            Some(spec.fstype.as_str()),
            spec.flags,
            spec.data.as_deref(),
        )
        .map_err(|errno| MountError::Mount {
            device: spec.source.clone(),
            fstype: spec.fstype.clone(),
            target: spec.target.clone(),
            errno,
        })
    }

    fn unmount(&mut self, target: &Path) -> Result<(), MountError> {
        nix::mount::umount2(target, MntFlags::empty()).map_err(|errno| MountError::Unmount {
            target: target.to_owned(),
            errno,
        })
    }

    fn run(&mut self, cmd: &Cmd) -> Result<String, CommandError> {
        command::run(cmd)
    }

    fn set_hostname(&mut self, name: &str) -> Result<(), nix::Error> {
        nix::unistd::sethostname(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_under_the_root() {
        assert_eq!(Root::system().path("/data"), Path::new("/data"));
        assert_eq!(
            Root::system().path("/run/ddaemon/boot-slot"),
            Path::new("/run/ddaemon/boot-slot")
        );
        let root = Root::at(Path::new("/tmp/x"));
        assert_eq!(root.path("/data/overlay"), Path::new("/tmp/x/data/overlay"));
        assert_eq!(root.path("/"), Path::new("/tmp/x"));
    }
}
