//! A thread that polls the daemon's admin API once a second while the load runs (levels,
//! breakers, counters), stopped by its guard.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{admin, ideal::Board};

/// Reads the daemon's limits and throttle status every 200 ms: the record of limits in
/// force for the ideal buckets (with the daemon's own time of each throttle change), the
/// latest status for the live view, and the offset between the daemon's clock and the lab's.
pub(super) struct Poller {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) status: Arc<Mutex<Option<serde_json::Value>>>,
    pub(super) offset: Arc<Mutex<Option<f64>>>,
    pub(super) thread: Option<JoinHandle<()>>,
}

impl Poller {
    pub(super) fn start(socket: &Path, epoch: Instant, board: Arc<Board>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(None));
        let offset = Arc::new(Mutex::new(None));
        let thread = {
            let (socket, stop, status, offset) = (
                socket.to_owned(),
                stop.clone(),
                status.clone(),
                offset.clone(),
            );
            std::thread::spawn(move || {
                let mut prev = 0.0;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = epoch.elapsed().as_secs_f64();
                    // Limits first, then status: a level change between the two shows in
                    // the status, and the next round dates the new limits by it.
                    if let (Ok(lv), Ok(sv)) = (
                        admin::get_json(&socket, "/v1/limits"),
                        admin::get_json(&socket, "/v1/status"),
                    ) {
                        let t1 = epoch.elapsed().as_secs_f64();
                        let thr = &sv["throttle"];
                        let off = thr["time_in_level_seconds"].as_f64().map(|in_level| {
                            let at = thr["last_transition"]["at_seconds"].as_f64().unwrap_or(0.0);
                            at + in_level - (t0 + t1) / 2.0
                        });
                        if let Some(o) = off {
                            *offset.lock().unwrap_or_else(|e| e.into_inner()) = Some(o);
                        }
                        let (level, limits) = admin::limits(&lv);
                        let last_level = board.history().last().map(|e| e.level.clone());
                        let transition_to = thr["last_transition"]["to"].as_str();
                        let from = match (
                            last_level,
                            thr["last_transition"]["at_seconds"].as_f64(),
                            off,
                        ) {
                            (Some(l), Some(at), Some(o))
                                if l != level && transition_to == Some(level.as_str()) =>
                            {
                                at - o
                            }
                            _ => (prev + t0) / 2.0,
                        };
                        board.publish(from, &level, limits, t0);
                        *status.lock().unwrap_or_else(|e| e.into_inner()) = Some(sv);
                        prev = t0;
                    }
                    let end = Instant::now() + Duration::from_millis(200);
                    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        };
        Self {
            stop,
            status,
            offset,
            thread: Some(thread),
        }
    }

    pub(super) fn status(&self) -> Option<serde_json::Value> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn offset(&self) -> Option<f64> {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
