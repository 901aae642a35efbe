//! The sandbox's network namespace starts with `lo` down; this brings it
//! up so the runtime can reach the listeners nimbus serves inside it.
//!
//! Written by hand: one `SIOCSIFFLAGS` ioctl does it, where a netlink crate
//! would add a dependency and an async runtime to a single-threaded helper.

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

pub(crate) fn loopback_up() -> nix::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is a plain C struct for which all-zero bytes is a
    // valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
    // SAFETY: `sock` is an open socket and `req` a valid, NUL-terminated
    // `ifreq` that outlives the call; SIOCSIFFLAGS only reads it.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}
