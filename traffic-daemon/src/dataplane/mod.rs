//! The dataplane adapter: the only module that touches aya.
//!
//! [`Dataplane`] is what the daemon needs from the kernel maps; [`kernel::Kernel`] implements
//! it on the real program and [`fake::Fake`] in memory for tests of everything above it.

mod attach;
pub mod fake;
pub mod feeds;
pub mod kernel;
pub mod local;
mod mapping;
mod migrate;
mod seen;
pub mod table;
pub mod tc;
pub mod walk;
pub mod watch;

use std::path::PathBuf;

use traffic_common::{
    Bucket, BucketKey, ClassStats, Counter, EgressStats, GlobalConfig, PortStats, RescaleRequest,
};

use crate::{
    config::AttachMode,
    plan::{Desired, Write},
};

/// Something went wrong talking to the kernel; each variant names what was at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "this build has no eBPF object (built with AYA_BUILD_SKIP=1); rebuild without it, e.g. `cargo xtask build`"
    )]
    NoObject,
    #[error("cannot create pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "pinned maps in {pin_dir} do not match this build (ABI {expected}) and cannot be replaced: {detail}. Stop trafficd and remove {pin_dir} (or start with --fresh) to start with fresh state"
    )]
    PinnedMismatch {
        pin_dir: PathBuf,
        expected: u32,
        detail: String,
    },
    #[error("loading the XDP program failed: {0}")]
    Load(String),
    #[error("map {map}: {op} failed: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        source: aya::maps::MapError,
    },
    #[error("interface {iface}: {detail}")]
    Attach { iface: String, detail: String },
    #[error("{0}")]
    Other(String),
}

/// What a rescale of one bucket did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rescaled {
    /// Every word rescaled.
    Done,
    /// The bucket is gone (evicted or removed); nothing was written.
    Missing,
    /// A word stayed contended and was left as it was.
    Contended,
}

/// How the program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachedMode {
    Native,
    Generic,
}

/// What the daemon needs from the kernel program and maps.
pub trait Dataplane: Send {
    /// Attach the program to an interface; with `pin`, pin the link at once so it keeps
    /// enforcing if the process dies (`on_exit = "keep"`).
    fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
        pin: bool,
    ) -> Result<AttachedMode, DataplaneError>;
    /// Detach from every interface.
    fn detach_all(&mut self);
    /// Forget the links on one interface (it vanished or was replaced: its links are
    /// defunct) and remove its link pin; a no-op when nothing is attached there.
    fn detach(&mut self, iface: &str);
    /// The interface's index now, or `None` when there is no interface of that name.
    /// A deleted and recreated interface comes back with another index.
    fn ifindex(&self, iface: &str) -> Option<u32>;
    /// Pin the links so enforcement outlives the process (`on_exit = "keep"`).
    fn keep_attached(&mut self) -> Result<(), DataplaneError>;
    /// Whether the maps were adopted from pins left by an earlier run.
    fn adopted(&self) -> bool;
    /// Apply writes in order.
    fn apply(&mut self, writes: &[Write]) -> Result<(), DataplaneError>;
    /// What the maps hold now (used when adopting pinned state).
    fn read_state(&self) -> Result<Desired, DataplaneError>;
    /// The global entry.
    fn global(&self) -> Result<GlobalConfig, DataplaneError>;
    /// Verdict counters summed over CPUs, indexed by `traffic_common::counter_index`.
    fn counters(&self) -> Result<Vec<Counter>, DataplaneError>;
    /// Gate statistics per port-rule slot, summed over CPUs.
    fn port_stats(&self) -> Result<Vec<PortStats>, DataplaneError>;
    /// Replies leaving from each port rule's port (TC egress), summed over CPUs.
    fn egress_stats(&self) -> Result<Vec<EgressStats>, DataplaneError>;
    /// Admission statistics per class slot, summed over CPUs.
    fn class_stats(&self) -> Result<Vec<ClassStats>, DataplaneError>;
    /// The `admitted` counts of the class slots `slots`, summed over CPUs and slots
    /// (wrapping): one per-CPU read a slot, where [`Dataplane::class_stats`] reads all.
    fn class_admitted(&self, slots: &[u32]) -> Result<u64, DataplaneError>;
    /// Every tracked source.
    fn buckets(&self) -> Result<Vec<(BucketKey, Bucket)>, DataplaneError>;
    /// A handle that walks the tracked sources away from the engine (see [`walk`]);
    /// by default a snapshot of [`Dataplane::buckets`].
    fn bucket_walker(&self) -> Result<walk::BucketWalker, DataplaneError> {
        Ok(walk::BucketWalker::Snapshot(self.buckets()?))
    }
    /// Replace one bucket (tests; a rescale goes through [`Dataplane::rescale_bucket`]).
    fn set_bucket(&mut self, key: &BucketKey, bucket: &Bucket) -> Result<(), DataplaneError>;
    /// Forget one tracked source (its bucket, and the debt remembered for it).
    fn remove_bucket(&mut self, key: &BucketKey) -> Result<bool, DataplaneError>;
    /// The kernel clock the program uses (`bpf_ktime_get_ns`, CLOCK_MONOTONIC), in ns.
    fn now_ns(&self) -> u64;
    /// Clear one generation (0 or 1) of the tracked-source bitmap: keys whose bit only it
    /// holds (not seen since the other generation was cleared) are forgotten.
    fn age_seen(&mut self, generation: u32) -> Result<(), DataplaneError>;
    /// Rescale one bucket's words from the old limits to the new ones where the program
    /// charges them (compare-and-swap; a missing key is not inserted, counters untouched).
    fn rescale_bucket(&mut self, req: &RescaleRequest) -> Result<Rescaled, DataplaneError>;
    /// The marked sources of `scope = "fleet"` classes with their buckets, at most `max`
    /// (see [`traffic_common::map_names::FLEET_HOT`]); a mark whose bucket is gone is
    /// dropped. By default every bucket with [`traffic_common::FLEET_MARK_EVERY`] packets.
    fn fleet_hot(&mut self, max: usize) -> Result<Vec<(BucketKey, Bucket)>, DataplaneError> {
        let mut all = self.buckets()?;
        all.retain(|(_, b)| b.packets >= traffic_common::FLEET_MARK_EVERY);
        all.truncate(max);
        Ok(all)
    }
    /// Drop the marks of sources the budget sync stopped following.
    fn forget_fleet_hot(&mut self, _keys: &[BucketKey]) -> Result<(), DataplaneError> {
        Ok(())
    }
    /// The MTU of an interface in the daemon's network namespace; `None` when it cannot be
    /// read (no such interface). Floors the byte bursts: see [`crate::policy::limits`].
    fn mtu(&self, iface: &str) -> Option<u32>;
    /// Add or replace the ban on an LPM key (the rules' key scheme) in the ban map.
    fn set_ban(
        &mut self,
        key: &crate::plan::RuleKey,
        ban: &traffic_common::BanEntry,
    ) -> Result<(), DataplaneError>;
    /// Remove the ban on an LPM key; `false` when there was none.
    fn remove_ban(&mut self, key: &crate::plan::RuleKey) -> Result<bool, DataplaneError>;
    /// Every entry of the ban map (adopting pinned bans at start).
    fn bans(&self)
    -> Result<Vec<(crate::plan::RuleKey, traffic_common::BanEntry)>, DataplaneError>;
    /// A handle on the blocklist-feed tries, used off the engine's lock (see [`feeds`]);
    /// in memory by default.
    fn feed_tries(&self) -> Result<Box<dyn feeds::FeedTries>, DataplaneError> {
        Ok(Box::new(feeds::MemoryTries::default()))
    }
    /// The ring of verdict events, once (the reader owns it); `None` without a kernel.
    fn take_watch_ring(&mut self) -> Option<watch::WatchRing> {
        None
    }
    /// The watch budget's counters, summed over CPUs (zero without a kernel).
    fn watch_state(&self) -> Result<traffic_common::WatchState, DataplaneError> {
        Ok(traffic_common::WatchState::default())
    }
}

/// The MTU of `iface` in the calling thread's network namespace (`SIOCGIFMTU`; no
/// privilege needed), `None` when there is no such interface.
pub fn interface_mtu(iface: &str) -> Option<u32> {
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return None;
    }
    #[allow(
        unsafe_code,
        reason = "socket, ioctl and close; the SAFETY comment below says why they are sound"
    )]
    // SAFETY: a zeroed ifreq is valid; the name is copied in bounds (shorter than IFNAMSIZ,
    // so NUL-terminated by the zeroes); SIOCGIFMTU only writes the ifreq we own; the socket
    // is ours and closed once.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(name) {
            *dst = *src as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFMTU as _, &mut req);
        libc::close(fd);
        (rc == 0).then(|| u32::try_from(req.ifr_ifru.ifru_mtu).ok())?
    }
}

/// The index of the interface named `iface` in this network namespace, if there is one.
pub fn if_nametoindex(iface: &str) -> Option<u32> {
    let name = std::ffi::CString::new(iface).ok()?;
    #[allow(
        unsafe_code,
        reason = "a libc call; the SAFETY comment below says why it is sound"
    )]
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    #[allow(
        unsafe_code,
        reason = "a libc call; the SAFETY comment below says why it is sound"
    )]
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An error and its sources on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
