//! `trafficctl watch` inside the daemon: the [`Hub`] of watchers (subscribe, filter, fan
//! out) and what it tells the engine (switch the program's events on, drops only or not).
//!
//! The program sends events only while [`Hub::demand`] says someone watches; the reader
//! task ([`read`]) waits on the hub meanwhile. Each watcher has a bounded queue: a watcher
//! that does not keep up loses events (counted in [`Snapshot::lost`]) and never slows the
//! reader, the engine or another watcher.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use axum::body::Bytes;
use tokio::sync::{Notify, mpsc};
use traffic_common::{GLOBAL_WATCH, GLOBAL_WATCH_DROPS, WatchEvent, WatchState};

use crate::{
    api::watch::{VerdictLine, WatchFilter},
    dataplane::watch::WatchRing,
    serve::exposition::{Exposition, Kind},
};

/// Watchers at most unless the listener's cap says fewer (`serve::watch::max_watchers`).
pub const MAX_WATCHERS: usize = 8;
/// Lines a watcher may have queued before it loses events.
pub const QUEUE_LINES: usize = 1024;
/// Events moved from the ring per wake-up, at most (then the reader yields).
const READ_BATCH: usize = 256;

/// What the hub asks of the program: the `GLOBAL_WATCH*` flags to set (0: nobody watches).
pub fn flags(watchers: usize, all_drops_only: bool) -> u32 {
    match (watchers, all_drops_only) {
        (0, _) => 0,
        (_, true) => GLOBAL_WATCH | GLOBAL_WATCH_DROPS,
        (_, false) => GLOBAL_WATCH,
    }
}

/// The names the events are resolved with: class name per slot, interface per index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub classes: Vec<Option<String>>,
    pub interfaces: Vec<(u32, String)>,
}

impl Names {
    fn class(&self, row: u8) -> Option<&str> {
        self.classes.get(row as usize)?.as_deref()
    }

    fn interface(&self, ifindex: u32) -> String {
        self.interfaces
            .iter()
            .find(|(i, _)| *i == ifindex)
            .map_or_else(|| format!("if{ifindex}"), |(_, n)| n.clone())
    }
}

struct Watcher {
    id: u64,
    filter: WatchFilter,
    tx: mpsc::Sender<Bytes>,
}

#[derive(Default)]
struct Inner {
    watchers: Vec<Watcher>,
    next_id: u64,
    names: Names,
}

/// The watchers and the counters of the events sent to them.
pub struct Hub {
    inner: Mutex<Inner>,
    /// Wakes the reader when the set of watchers changes.
    changed: Notify,
    max: AtomicUsize,
    /// Closed for good (the daemon is stopping): no watchers, flags 0.
    closed: std::sync::atomic::AtomicBool,
    events: AtomicU64,
    lost: AtomicU64,
}

/// Every watcher slot is taken.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} watchers already (the most the admin listener's connection cap allows); try again later"
)]
pub struct Full(pub usize);

/// The watch family of the metrics: a plain snapshot (see [`render_metrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Events read from the ring.
    pub events: u64,
    /// Events the program did not send (over its per-CPU budget, or the ring was full).
    pub suppressed: u64,
    /// Events a slow watcher's full queue did not take.
    pub lost: u64,
    pub watchers: usize,
}

/// One watcher's end: its lines, and its place in the hub until dropped.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    pub lines: mpsc::Receiver<Bytes>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().watchers.retain(|w| w.id != self.id);
        self.hub.changed.notify_one();
    }
}

impl Hub {
    /// A hub admitting at most `max` watchers.
    pub fn new(max: usize) -> Self {
        Self {
            inner: Mutex::default(),
            changed: Notify::new(),
            max: AtomicUsize::new(max),
            closed: std::sync::atomic::AtomicBool::new(false),
            events: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bound the watchers (streams hold admin connections: see `serve::watch`).
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Add a watcher with its filter.
    pub fn subscribe(self: &Arc<Self>, filter: WatchFilter) -> Result<Subscription, Full> {
        let max = self.max.load(Ordering::Relaxed);
        let mut inner = self.lock();
        if inner.watchers.len() >= max || self.closed.load(Ordering::Relaxed) {
            return Err(Full(max));
        }
        let (tx, lines) = mpsc::channel(QUEUE_LINES);
        inner.next_id += 1;
        let id = inner.next_id;
        inner.watchers.push(Watcher { id, filter, tx });
        drop(inner);
        self.changed.notify_one();
        Ok(Subscription {
            hub: self.clone(),
            id,
            lines,
        })
    }

    /// End every watch (their streams end: the clients see the daemon go) and admit no
    /// more: the daemon is stopping, and must not leave the program sending events into a
    /// pinned ring nobody reads (`on_exit = "keep"`).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.lock().watchers.clear();
        self.changed.notify_one();
    }

    /// The `GLOBAL_WATCH*` flags the program should have now.
    pub fn flags(&self) -> u32 {
        let inner = self.lock();
        flags(
            inner.watchers.len(),
            inner.watchers.iter().all(|w| w.filter.drops),
        )
    }

    pub fn watchers(&self) -> usize {
        self.lock().watchers.len()
    }

    /// Replace the names events are resolved with (the engine's, on every sync).
    pub fn set_names(&self, names: Names) {
        let mut inner = self.lock();
        if inner.names != names {
            inner.names = names;
        }
    }

    /// Hand events to every watcher whose filter they pass; `unix_offset_ns` turns the
    /// kernel clock into the wall clock. Never waits: a full queue loses the line.
    pub fn publish(&self, events: &[WatchEvent], unix_offset_ns: i128) {
        self.events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let inner = self.lock();
        let mut lost = 0;
        for ev in events {
            let class = inner.names.class(ev.row);
            let mut line: Option<Bytes> = None;
            for w in inner
                .watchers
                .iter()
                .filter(|w| w.filter.matches(ev, class))
            {
                let bytes = line.get_or_insert_with(|| {
                    let unix = (i128::from(ev.at_ns) + unix_offset_ns).max(0) as u64;
                    let l = VerdictLine::decode(ev, unix, inner.names.interface(ev.ifindex), class);
                    let mut text = serde_json::to_vec(&l).unwrap_or_default();
                    text.push(b'\n');
                    Bytes::from(text)
                });
                if let Err(mpsc::error::TrySendError::Full(_)) = w.tx.try_send(bytes.clone()) {
                    lost += 1;
                }
            }
        }
        self.lost.fetch_add(lost, Ordering::Relaxed);
    }

    /// The counters, with the program's (summed over CPUs).
    pub fn snapshot(&self, kernel: WatchState) -> Snapshot {
        Snapshot {
            events: self.events.load(Ordering::Relaxed),
            suppressed: kernel.suppressed,
            lost: self.lost.load(Ordering::Relaxed),
            watchers: self.watchers(),
        }
    }
}

/// `CLOCK_REALTIME − CLOCK_MONOTONIC`, ns: added to a kernel time it gives the wall clock.
fn unix_offset_ns() -> i128 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    unix - i128::from(crate::dataplane::monotonic_ns())
}

/// The reader: while someone watches, move events from the ring to the hub; while nobody
/// does, wait (the program sends nothing then; what was left is discarded).
pub async fn read(mut ring: WatchRing, hub: Arc<Hub>) {
    let mut batch = Vec::with_capacity(READ_BATCH);
    loop {
        if hub.watchers() == 0 {
            ring.discard();
            hub.changed.notified().await;
            continue;
        }
        tokio::select! {
            r = ring.read(&mut batch, READ_BATCH) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "reading the watch ring failed; watch stopped");
                    return;
                }
                hub.publish(&batch, unix_offset_ns());
                batch.clear();
                // Many events waiting: let the rest of the daemon run between batches.
                tokio::task::yield_now().await;
            }
            () = hub.changed.notified() => {}
        }
    }
}

/// The watch families of the metrics.
pub fn render_metrics(e: &mut Exposition, s: &Snapshot) {
    e.family(
        "traffic_watch_events_total",
        Kind::Counter,
        "Verdict events read from the program for `trafficctl watch`.",
    )
    .sample("traffic_watch_events_total", &[], s.events as f64);
    e.family(
        "traffic_watch_events_suppressed_total",
        Kind::Counter,
        "Verdict events the program did not send while watched: over its per-CPU budget per second, or the ring was full.",
    )
    .sample("traffic_watch_events_suppressed_total", &[], s.suppressed as f64);
    e.family(
        "traffic_watch_subscriber_lost_total",
        Kind::Counter,
        "Verdict lines a watcher that did not keep up did not get (its queue was full).",
    )
    .sample("traffic_watch_subscriber_lost_total", &[], s.lost as f64);
    e.family(
        "traffic_watch_subscribers",
        Kind::Gauge,
        "Watchers connected (`trafficctl watch`, `GET /v1/watch`).",
    )
    .sample("traffic_watch_subscribers", &[], s.watchers as f64);
}

#[cfg(test)]
mod tests;
