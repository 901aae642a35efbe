//! The sandbox's network namespace starts with `lo` down; [`loopback_up`]
//! brings it up so the runtime can reach the listeners nimbus serves inside
//! it (one `SIOCSIFFLAGS` ioctl). A sandbox with egress also gets an
//! `eth0` from the server ([`crate::netpool`]), which [`uplink_up`]
//! addresses, brings up and routes through (netlink, from inside the
//! namespace).

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

/// Configures `eth0` as the server said: its address, up, and the default
/// route via the host end of the pair. An `eth0` the server took away
/// meanwhile ([`crate::Sandbox::remove_network`]) is no error: the sandbox
/// is left with loopback.
pub(crate) fn uplink_up(net: &super::Network) -> std::io::Result<()> {
    let configure = || -> std::io::Result<()> {
        let index = nix::net::if_::if_nametoindex("eth0")?;
        let mut nl = crate::netlink::Netlink::open()?;
        nl.add_address(index, net.address, net.prefix_len)?;
        nl.set_up(index)?;
        nl.add_default_route(index, net.gateway)
    };
    match configure() {
        Err(_) if nix::net::if_::if_nametoindex("eth0").is_err() => Ok(()),
        other => other,
    }
}
