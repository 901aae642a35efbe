//! Network egress for jailed sandboxes, the host's side.
//!
//! A jail has its own network namespace holding only `lo`. A sandbox with
//! egress also gets a veth pair: the host end `nb<8 hex digits>` (its
//! address in hex) with `x.y.z.1/30`, the peer moved into the sandbox as
//! `eth0` with `x.y.z.2/30` and a default route via `.1` (set by the jail
//! helper, `jail/net.rs`). The /30s come from one subnet per server
//! ([`Subnet`], `10.213.0.0/16` by default: 16,384 sandboxes), handed out
//! from a free list.
//!
//! [`NetPool::setup`], once at server start: deletes the veth links a
//! previous run of the same server left behind (their alias is the
//! server's `owner`), refuses a subnet that overlaps a host route, turns on
//! `net.ipv4.ip_forward`, and installs the nftables table `inet nimbus`
//! with the `nft` CLI:
//!
//! - traffic from `nb*` links to the host's own addresses is dropped,
//!   except DNS (port 53), so functions cannot reach services on the host's
//!   other interfaces (the host's loopback is out of reach anyway: inside
//!   the sandbox 127.0.0.1 is its own);
//! - forwarding from one sandbox to another is dropped;
//! - everything else from the sandboxes leaves masqueraded as the host.
//!
//! The rules match interface names, not the subnet, so every nimbus server
//! on a host installs the identical table (atomically replaced), and
//! servers may even share a subnet: the kernel arbitrates each /30 through
//! its link name, and a /30 whose name is taken is skipped.
//!
//! [`NetPool::attach`] runs on every cold start, after the jail has made
//! its namespace: one netlink request creates the pair with the peer
//! already in the sandbox, two more label the host end (its alias names
//! the server) and give it its address. The
//! [`NetLease`] deletes the pair (if the namespace's end did not already
//! take it) and returns the /30 when the sandbox ends.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::netlink::Netlink;

/// The subnet sandboxes get their addresses from unless configured.
pub const DEFAULT_SUBNET: &str = "10.213.0.0/16";

/// Prefix of every host-side link (the firewall rules match it).
const LINK_PREFIX: &str = "nb";

/// The name of the sandbox end, inside its namespace.
const PEER_NAME: &str = "eth0";

/// The nftables table, replaced whole at every server start.
const FIREWALL: &str = r#"table inet nimbus
delete table inet nimbus
table inet nimbus {
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "nb*" meta l4proto { tcp, udp } th dport 53 accept
        iifname "nb*" drop
    }
    chain forward {
        type filter hook forward priority filter; policy accept;
        iifname "nb*" oifname "nb*" drop
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        iifname "nb*" oifname != "nb*" masquerade
    }
}
"#;

/// How many taken /30s (another server's) one attach skips at most.
const MAX_SKIPS: usize = 64;

/// An IPv4 subnet, `a.b.c.d/len`, sandboxes' /30s are carved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    base: u32,
    prefix_len: u8,
}

impl Subnet {
    /// How many /30s (sandboxes) it holds.
    pub fn slots(&self) -> u32 {
        1 << (30 - self.prefix_len)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix_len)
    }

    fn overlaps(&self, net: u32, mask: u32) -> bool {
        let common = self.mask() & mask;
        self.base & common == net & common
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR subnet such as {DEFAULT_SUBNET}"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| (8..=29).contains(l))
            .ok_or_else(|| format!("the prefix length of {s:?} must be between 8 and 29"))?;
        let subnet = Subnet {
            base: u32::from(addr),
            prefix_len,
        };
        if subnet.base & !subnet.mask() != 0 {
            return Err(format!("{s:?} has host bits set"));
        }
        Ok(subnet)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix_len)
    }
}

/// The host side of sandbox networking: the subnet's free /30s.
#[derive(Debug)]
pub struct NetPool {
    subnet: Subnet,
    /// The alias of every link this server creates.
    owner: String,
    mtu: u32,
    /// Free /30s by index, oldest first (a freed one is reused last, so
    /// connection-tracking state of its previous owner has long expired).
    free: Arc<Mutex<VecDeque<u32>>>,
    /// The thread that deletes the pairs of ended sandboxes (deleting a
    /// link waits for RCU grace periods: milliseconds not to spend on an
    /// async worker).
    reaper: std::sync::mpsc::Sender<u32>,
}

impl NetPool {
    /// Prepares the host for sandboxes with egress from `subnet` (see the
    /// module documentation). `owner` names this server's links (keep it
    /// stable across restarts of one server, distinct between servers).
    pub fn setup(subnet: Subnet, owner: &str) -> io::Result<Arc<NetPool>> {
        let owner = format!("nimbus {owner}");
        remove_links_of(&owner)?;
        check_routes(subnet)?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| io::Error::new(e.kind(), format!("enabling ip_forward: {e}")))?;
        install_firewall()?;
        let free = Arc::new(Mutex::new((0..subnet.slots()).collect()));
        let (reaper, ended) = std::sync::mpsc::channel::<u32>();
        {
            let free = free.clone();
            std::thread::Builder::new()
                .name("nimbus-netreap".into())
                .spawn(move || {
                    for slot in ended {
                        if delete_pair(subnet, slot) {
                            give_back(&free, slot);
                        }
                    }
                })?;
        }
        Ok(Arc::new(NetPool {
            subnet,
            owner,
            mtu: uplink_mtu(),
            free,
            reaper,
        }))
    }

    /// The subnet addresses come from.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// Gives the network namespace of process `pid` an `eth0` with a /30
    /// of the pool. The sandbox still has to configure it (address, up,
    /// default route): see [`NetLease::address`].
    pub fn attach(self: &Arc<Self>, pid: u32) -> io::Result<NetLease> {
        let mut nl = Netlink::open()?;
        for _ in 0..MAX_SKIPS {
            let slot = self
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
                .ok_or_else(|| {
                    io::Error::other(format!("every address of {} is in use", self.subnet))
                })?;
            let name = link_name(self.subnet, slot);
            match nl.add_veth(&name, PEER_NAME, pid, self.mtu) {
                Ok(()) => {}
                // Another server sharing the subnet holds this /30.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.give_back(slot);
                    continue;
                }
                Err(e) => {
                    self.give_back(slot);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("creating a veth pair: {e}"),
                    ));
                }
            }
            let lease = NetLease {
                pool: self.clone(),
                slot,
                deleted: false,
            };
            // Dropping `lease` on an error below deletes the pair.
            let index = nix::net::if_::if_nametoindex(name.as_str())?;
            nl.set_alias(index, &self.owner)?;
            nl.add_address(index, lease.gateway(), 30)
                .map_err(|e| io::Error::new(e.kind(), format!("addressing the veth: {e}")))?;
            return Ok(lease);
        }
        Err(io::Error::other(format!(
            "no free address in {} (links taken by another server?)",
            self.subnet
        )))
    }

    fn give_back(&self, slot: u32) {
        give_back(&self.free, slot);
    }
}

fn give_back(free: &Mutex<VecDeque<u32>>, slot: u32) {
    free.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back(slot);
}

/// Deletes the pair of /30 number `slot` if it still exists; whether the
/// /30 may be reused.
fn delete_pair(subnet: Subnet, slot: u32) -> bool {
    let name = link_name(subnet, slot);
    match Netlink::open().and_then(|mut nl| nl.delete_link(&name)) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => true,
        Err(e) => {
            // Keep the /30 out of the free list rather than hand out a
            // pair that may still exist.
            tracing::warn!("deleting sandbox link {name}: {e}");
            false
        }
    }
}

/// One sandbox's /30 and veth pair; dropping it deletes the pair and
/// returns the /30.
#[derive(Debug)]
pub struct NetLease {
    pool: Arc<NetPool>,
    slot: u32,
    /// Set once [`NetLease::delete_now`] has deleted the pair.
    deleted: bool,
}

impl NetLease {
    /// The sandbox's address (on its `eth0`, prefix length 30).
    pub fn address(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network() + 2)
    }

    /// The host end's address: the sandbox's default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network() + 1)
    }

    /// The host end's name.
    pub fn link_name(&self) -> String {
        link_name(self.pool.subnet, self.slot)
    }

    /// Deletes the pair now, taking `eth0` out of the sandbox before this
    /// returns (dropping the lease does it in the background).
    pub fn delete_now(mut self) -> io::Result<()> {
        let name = self.link_name();
        match Netlink::open().and_then(|mut nl| nl.delete_link(&name)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("deleting {name}: {e}"))),
        }
        self.deleted = true;
        self.pool.give_back(self.slot);
        Ok(())
    }

    fn network(&self) -> u32 {
        self.pool.subnet.base + self.slot * 4
    }
}

/// The host end of /30 number `slot`: `nb` and its address in hex, so names
/// are unique on the host as long as addresses are.
fn link_name(subnet: Subnet, slot: u32) -> String {
    format!("{LINK_PREFIX}{:08x}", subnet.base + slot * 4 + 1)
}

impl Drop for NetLease {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // The pair goes with the sandbox's namespace, but namespaces are
        // torn down asynchronously: the reaper deletes it so the /30 can be
        // reused at once.
        if self.pool.reaper.send(self.slot).is_err() && delete_pair(self.pool.subnet, self.slot) {
            self.pool.give_back(self.slot);
        }
    }
}

/// Deletes every `nb*` link whose alias is `owner`: what a previous run of
/// this server left (normally nothing: a pair dies with its sandbox).
fn remove_links_of(owner: &str) -> io::Result<()> {
    let mut nl = None;
    for entry in std::fs::read_dir("/sys/class/net")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with(LINK_PREFIX) {
            continue;
        }
        let alias =
            std::fs::read_to_string(format!("/sys/class/net/{name}/ifalias")).unwrap_or_default();
        if alias.trim_end() != owner {
            continue;
        }
        let nl = match &mut nl {
            Some(nl) => nl,
            None => nl.insert(Netlink::open()?),
        };
        match nl.delete_link(&name) {
            Ok(()) => tracing::info!("deleted stale sandbox link {name}"),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("deleting {name}: {e}"))),
        }
    }
    Ok(())
}

/// The host's IPv4 routes as (interface, network, mask), from
/// `/proc/net/route`.
fn host_routes() -> io::Result<Vec<(String, u32, u32)>> {
    let text = std::fs::read_to_string("/proc/net/route")?;
    // Addresses are printed as the hex of their in-memory (network order)
    // bytes read as a native integer.
    let hex = |s: &str| {
        let v = u32::from_str_radix(s, 16).ok()?;
        Some(u32::from_be_bytes(v.to_ne_bytes()))
    };
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let (dest, mask) = (hex(f.get(1)?)?, hex(f.get(7)?)?);
            Some((f[0].to_string(), dest, mask))
        })
        .collect())
}

/// Refuses a subnet that overlaps a route of the host (other than the
/// default route and sandboxes' own links): its addresses would shadow,
/// or be shadowed by, a real network.
fn check_routes(subnet: Subnet) -> io::Result<()> {
    for (iface, net, mask) in host_routes()? {
        if mask == 0 || iface.starts_with(LINK_PREFIX) {
            continue;
        }
        if subnet.overlaps(net, mask) {
            return Err(io::Error::other(format!(
                "the sandbox subnet {subnet} overlaps the host's route to {}/{} on {iface}; \
                 choose another with --sandbox-subnet",
                Ipv4Addr::from(net),
                mask.count_ones()
            )));
        }
    }
    Ok(())
}

/// The MTU of the interface of the default route (1500 if none): the
/// sandbox's packets leave through it.
fn uplink_mtu() -> u32 {
    host_routes()
        .ok()
        .and_then(|routes| routes.into_iter().find(|(_, _, mask)| *mask == 0))
        .and_then(|(iface, _, _)| {
            std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu")).ok()
        })
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500)
}

/// Installs the `inet nimbus` table with `nft -f -`.
fn install_firewall() -> io::Result<()> {
    // Not every root's PATH has the sbin directories.
    let nft = ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft");
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("running nft (install nftables for sandbox egress): {e}"),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(FIREWALL.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft refused the sandbox firewall: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_count_slots() {
        let s: Subnet = "10.213.0.0/16".parse().unwrap();
        assert_eq!(s.slots(), 16384);
        assert_eq!(s.to_string(), "10.213.0.0/16");
        assert!("10.213.0.1/16".parse::<Subnet>().is_err());
        assert!("10.213.0.0/30".parse::<Subnet>().is_err());
        assert!("10.213.0.0".parse::<Subnet>().is_err());
        assert!(s.overlaps(u32::from(Ipv4Addr::new(10, 0, 0, 0)), 0xff00_0000));
        assert!(s.overlaps(u32::from(Ipv4Addr::new(10, 213, 7, 0)), 0xffff_ff00));
        assert!(!s.overlaps(u32::from(Ipv4Addr::new(10, 214, 0, 0)), 0xffff_0000));
    }
}
