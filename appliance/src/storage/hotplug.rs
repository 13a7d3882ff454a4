//! Disks plugged in and out: the kernel's uevents (netlink), so that a
//! remembered disk is mounted again as soon as it is back. The kernel
//! sends these whether or not udev runs.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, socket,
};

/// Opens the uevent socket (kernel multicast group 1).
pub fn open() -> nix::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))?;
    Ok(fd)
}

/// Whether a uevent message is about a block device being added, removed
/// or changed (a new partition table, a resized loop device).
pub fn is_block_event(message: &[u8]) -> bool {
    let mut fields = message.split(|b| *b == 0);
    let header = fields.next().unwrap_or_default();
    let action_ok = [&b"add@"[..], b"remove@", b"change@"]
        .iter()
        .any(|a| header.starts_with(a));
    action_ok && fields.any(|f| f == b"SUBSYSTEM=block")
}

/// Calls `on_change` (from this thread) after block devices changed,
/// once per burst: a disk with partitions sends an event for each.
pub fn watch(fd: OwnedFd, mut on_change: impl FnMut()) {
    let mut buf = vec![0u8; 64 * 1024];
    let settle = Duration::from_millis(1500);
    loop {
        match recv(
            fd.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        ) {
            Ok(n) if is_block_event(&buf[..n]) => {
                // udev (on the device) writes its database after the kernel's
                // event; wait for the burst to end and udev to catch up.
                std::thread::sleep(settle);
                drain(&fd, &mut buf);
                on_change();
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            // Events were lost (the queue overflowed while this slept; every
            // subsystem's events come here): look again, and go on.
            Err(nix::errno::Errno::ENOBUFS) => on_change(),
            Err(err) => {
                tracing::warn!(%err, "disk hotplug events stopped");
                return;
            }
        }
    }
}

/// Reads whatever else is queued, without waiting.
fn drain(fd: &OwnedFd, buf: &mut [u8]) {
    while recv(
        fd.as_raw_fd(),
        buf,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    )
    .is_ok()
    {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_events_are_told_apart() {
        let add = b"add@/devices/virtual/block/loop3\0ACTION=add\0SUBSYSTEM=block\0DEVNAME=loop3\0";
        let usb = b"add@/devices/pci0000:00/usb1/1-1\0ACTION=add\0SUBSYSTEM=usb\0";
        let bind = b"bind@/devices/virtual/block/loop3\0SUBSYSTEM=block\0";
        assert!(is_block_event(add));
        assert!(!is_block_event(usb));
        assert!(!is_block_event(bind));
        // udev's own re-broadcasts start with "libudev", not an action.
        assert!(!is_block_event(b"libudev\0\xfe\xed\xca\xfe"));
    }
}
