//! The node's own addresses in the kernel's [`map_names::LOCAL`] set, so port rules (gates,
//! bulkheads, new-connection limits, the passive signal) apply only to traffic addressed to
//! the node, never to traffic it routes to other hosts.
//!
//! Read with `getifaddrs(3)` at start, then again on a thread of its own (the control loop
//! never waits on it) whenever rtnetlink says an address appeared or went away
//! (`RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`), and every [`SAFETY_NET`] in case an event
//! was lost unreported. An address added later is gated within milliseconds; until then its
//! traffic passes its port rules, as transit traffic does. Without the subscription (it
//! needs no privilege, so only a kernel without netlink refuses it) the thread polls every
//! [`REFRESH`]. An idle node wakes this thread once a minute.

use std::{
    collections::BTreeSet,
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{HashMap, MapData};
use tracing::warn;
use traffic_common::{Addr, LOCAL_ADDRS_READY, LOCAL_ENTRIES, map_names, v4_mapped};

use super::DataplaneError;
use crate::rtnl;

/// How often the set is read again when address events cannot be had.
pub const REFRESH: Duration = Duration::from_secs(2);

/// How often the set is read again next to the address events.
pub const SAFETY_NET: Duration = Duration::from_secs(60);

/// The messages that mean an address appeared or went away.
const ADDRESS_MESSAGES: [u16; 2] = [libc::RTM_NEWADDR, libc::RTM_DELADDR];

/// The map of the node's addresses.
pub type LocalMap = HashMap<MapData, Addr, u32>;

/// Keeps the set current until dropped.
pub struct Tracker {
    /// The write end of the thread's stop pipe: dropping it wakes the thread to return.
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Tracker {
    /// Fill the set now (an error if that fails), then keep it current: on every address
    /// event and every `safety_net`, or every [`REFRESH`] without events.
    pub fn start(mut map: LocalMap, safety_net: Duration) -> Result<Self, DataplaneError> {
        let thread_err = |e: io::Error| DataplaneError::Other(format!("local address thread: {e}"));
        // Subscribed before the first read, so no change falls between the two.
        let events =
            match rtnl::subscribe((libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    warn!(error = %e, every = ?REFRESH,
                    "cannot subscribe to address events; polling the node's addresses instead");
                    None
                }
            };
        let addrs = node_addresses()
            .map_err(|e| DataplaneError::Other(format!("reading the node's addresses: {e}")))?;
        sync(&mut map, &addrs)?;
        let (stop_rx, stop_tx) = pipe().map_err(thread_err)?;
        let thread = std::thread::Builder::new()
            .name("local-addrs".into())
            .spawn(move || {
                let mut events = events;
                let mut buf = vec![0; 32 * 1024];
                loop {
                    let every = if events.is_some() { safety_net } else { REFRESH };
                    match wait(&mut events, &stop_rx, every, &mut buf) {
                        Wake::Stop => return,
                        Wake::Look => {}
                    }
                    let r = node_addresses()
                        .map_err(|e| DataplaneError::Other(e.to_string()))
                        .and_then(|a| sync(&mut map, &a));
                    if let Err(e) = r {
                        warn!(error = %e, "refreshing the node's addresses failed; keeping the last set");
                    }
                }
            })
            .map_err(thread_err)?;
        Ok(Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why the tracker's thread woke.
enum Wake {
    /// The tracker was dropped.
    Stop,
    /// An address event, lost events, or `every` passed: read the addresses again.
    Look,
}

/// Sleep until an address event, `every`, or the stop pipe's writer is gone. A failing
/// event socket is closed (the thread polls every [`REFRESH`] from then on, with a
/// warning once).
fn wait(events: &mut Option<OwnedFd>, stop: &OwnedFd, every: Duration, buf: &mut [u8]) -> Wake {
    let mut fds = [
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: events.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let timeout = i32::try_from(every.as_millis()).unwrap_or(i32::MAX);
    loop {
        #[allow(
            unsafe_code,
            reason = "a libc call; the SAFETY comment below says why it is sound"
        )]
        // SAFETY: `fds` is an array of two initialised pollfd that outlives the call; a
        // negative fd is ignored by poll(2).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            // The period passed (or poll failed: look, rather than spin on the error).
            return Wake::Look;
        }
        if fds[0].revents != 0 {
            return Wake::Stop;
        }
        let Some(fd) = events.as_ref() else {
            return Wake::Look;
        };
        match rtnl::drain(fd, buf, &ADDRESS_MESSAGES) {
            Ok(true) => return Wake::Look,
            // Other messages only: sleep on.
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, every = ?REFRESH,
                    "address events failed; polling the node's addresses instead");
                *events = None;
                return Wake::Look;
            }
        }
    }
}

/// A pipe (read end, write end), close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    #[allow(
        unsafe_code,
        reason = "a libc call and taking ownership of its descriptors; the SAFETY comments say why"
    )]
    // SAFETY: pipe2 writes two descriptors into `fds`, which we own.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(unsafe_code, reason = "see above")]
    // SAFETY: both descriptors were just returned by pipe2 and nobody else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Make the map hold exactly `want` plus the ready marker (written last, so the program
/// never filters on a half-filled set).
fn sync(map: &mut LocalMap, want: &BTreeSet<Addr>) -> Result<(), DataplaneError> {
    let have: Vec<Addr> = map.keys().filter_map(Result::ok).collect();
    for a in have
        .iter()
        .filter(|a| **a != LOCAL_ADDRS_READY && !want.contains(*a))
    {
        match map.remove(a) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(DataplaneError::Map {
                    map: map_names::LOCAL,
                    op: "delete",
                    source,
                });
            }
        }
    }
    for a in want.iter().filter(|a| !have.contains(a)) {
        map.insert(a, &1, 0).map_err(|source| DataplaneError::Map {
            map: map_names::LOCAL,
            op: "update",
            source,
        })?;
    }
    map.insert(&LOCAL_ADDRS_READY, &1, 0)
        .map_err(|source| DataplaneError::Map {
            map: map_names::LOCAL,
            op: "update",
            source,
        })
}

/// The key of an address, as the program compares it.
pub fn key(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Every address on every interface of this network namespace (at most what the map
/// holds, less the marker).
pub fn node_addresses() -> std::io::Result<BTreeSet<Addr>> {
    let mut out = BTreeSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    #[allow(
        unsafe_code,
        reason = "getifaddrs/freeifaddrs: the SAFETY comments say why each use is sound"
    )]
    {
        // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cur = head;
        while !cur.is_null() {
            // SAFETY: `cur` is a node of the list getifaddrs returned, not freed yet.
            let ifa = unsafe { &*cur };
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() {
                continue;
            }
            // SAFETY: a non-null ifa_addr points to a sockaddr whose family says its type.
            let ip = unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        IpAddr::from(sin6.sin6_addr.s6_addr)
                    }
                    _ => continue,
                }
            };
            if out.len() + 1 < LOCAL_ENTRIES as usize {
                out.insert(key(ip));
            }
        }
        // SAFETY: the head getifaddrs returned, freed once.
        unsafe { libc::freeifaddrs(head) };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_a_node_address() {
        let addrs = node_addresses().unwrap();
        assert!(
            addrs.contains(&key("127.0.0.1".parse().unwrap())),
            "{addrs:?}"
        );
        assert!(!addrs.contains(&LOCAL_ADDRS_READY));
    }

    #[test]
    fn the_thread_wakes_on_its_period_and_stops_when_the_pipe_closes() {
        let (stop_rx, stop_tx) = pipe().unwrap();
        let mut events = Some(rtnl::subscribe(libc::RTMGRP_IPV4_IFADDR as u32).unwrap());
        let mut buf = vec![0; 4096];
        let t = std::time::Instant::now();
        assert!(matches!(
            wait(&mut events, &stop_rx, Duration::from_millis(30), &mut buf),
            Wake::Look
        ));
        assert!(t.elapsed() >= Duration::from_millis(30), "woke early");
        assert!(events.is_some(), "a quiet socket is kept");
        drop(stop_tx);
        assert!(matches!(
            wait(&mut events, &stop_rx, Duration::from_secs(3600), &mut buf),
            Wake::Stop
        ));
    }

    #[test]
    fn a_failing_event_socket_is_dropped_for_polling() {
        let (stop_rx, _stop_tx) = pipe().unwrap();
        // Not a netlink socket: readable, and recv(2) on it fails (ENOTSOCK).
        let (readable, writer) = pipe().unwrap();
        std::io::Write::write_all(&mut std::fs::File::from(writer), b"x").unwrap();
        let mut events = Some(readable);
        let mut buf = vec![0; 4096];
        assert!(matches!(
            wait(&mut events, &stop_rx, Duration::from_secs(3600), &mut buf),
            Wake::Look
        ));
        assert!(events.is_none(), "the failing socket is closed");
    }
}
