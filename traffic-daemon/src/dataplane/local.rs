//! The node's own addresses in the kernel's [`map_names::LOCAL`] set, so port rules (gates,
//! bulkheads, new-connection limits, the passive signal) apply only to traffic addressed to
//! the node, never to traffic it routes to other hosts.
//!
//! Read with `getifaddrs(3)` at start and then every [`REFRESH`] on a thread of its own (the
//! control loop never waits on it): an address added later is gated within that period,
//! and until then its traffic passes its port rules, as transit traffic does.

use std::{collections::BTreeSet, net::IpAddr, sync::mpsc, thread::JoinHandle, time::Duration};

use aya::maps::{HashMap, MapData};
use tracing::warn;
use traffic_common::{Addr, LOCAL_ADDRS_READY, LOCAL_ENTRIES, map_names, v4_mapped};

use super::DataplaneError;

/// How often the set is read again.
pub const REFRESH: Duration = Duration::from_secs(2);

/// The map of the node's addresses.
pub type LocalMap = HashMap<MapData, Addr, u32>;

/// Keeps the set current until dropped.
pub struct Tracker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Tracker {
    /// Fill the set now (an error if that fails), then refresh it every `every`.
    pub fn start(mut map: LocalMap, every: Duration) -> Result<Self, DataplaneError> {
        let addrs = node_addresses()
            .map_err(|e| DataplaneError::Other(format!("reading the node's addresses: {e}")))?;
        sync(&mut map, &addrs)?;
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("local-addrs".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    let r = node_addresses()
                        .map_err(|e| DataplaneError::Other(e.to_string()))
                        .and_then(|a| sync(&mut map, &a));
                    if let Err(e) = r {
                        warn!(error = %e, "refreshing the node's addresses failed; keeping the last set");
                    }
                }
            })
            .map_err(|e| DataplaneError::Other(format!("local address thread: {e}")))?;
        Ok(Self {
            stop: Some(tx),
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
}
