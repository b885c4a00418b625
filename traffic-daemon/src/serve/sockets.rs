//! [`SocketWatch`]: the bulkheads' socket statistics, sampled on a thread of their own.
//!
//! A sock_diag dump is a blocking netlink exchange whose cost grows with the sockets of the
//! watched ports; on the control loop (every 100 ms, under the engine's lock) it was most
//! of an idle daemon's work (issue 12). Here it runs off the loop, and only as often as the
//! bulkheads need: never without a TCP upstream that has a bulkhead, every second while every
//! bulkhead is far from its limit, and at the control tick's pace (100 ms) once one is half
//! way there (`Core::socket_demand`). The control tick takes the latest sample; one older
//! than [`STALE`] is not used (the bulkheads then see no connections, as when a dump fails).

use std::{
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use crate::{
    ops::SocketDemand,
    sockdiag::{PortSockets, Sampler},
};

/// Sampling periods: near a limit, and otherwise.
pub const URGENT: Duration = Duration::from_millis(100);
pub const RELAXED: Duration = Duration::from_secs(1);
/// A sample older than this is not used.
pub const STALE: Duration = Duration::from_secs(3);

#[derive(Default)]
struct State {
    demand: SocketDemand,
    latest: Option<(Instant, Vec<PortSockets>)>,
    stop: bool,
}

/// The sampler thread's inbox and outbox.
#[derive(Default)]
pub struct SocketWatch {
    state: Mutex<State>,
    wake: Condvar,
}

impl SocketWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start the sampler thread (in the calling thread's network namespace).
    pub fn start() -> std::io::Result<Arc<Self>> {
        let watch = Arc::new(Self::default());
        let w = watch.clone();
        std::thread::Builder::new()
            .name("sockdiag".into())
            .spawn(move || w.run())?;
        Ok(watch)
    }

    /// Set what to watch; a new port set, or a bulkhead newly near its limit, is sampled at
    /// once.
    pub fn want(&self, demand: SocketDemand) {
        let mut s = self.lock();
        if s.demand == demand {
            return;
        }
        let sooner = demand.ports != s.demand.ports || (demand.urgent && !s.demand.urgent);
        s.demand = demand;
        if sooner {
            self.wake.notify_one();
        }
    }

    /// The latest sample, if recent.
    pub fn latest(&self) -> Option<Vec<PortSockets>> {
        let s = self.lock();
        s.latest
            .as_ref()
            .filter(|(at, _)| at.elapsed() <= STALE)
            .map(|(_, v)| v.clone())
    }

    /// End the thread (it closes its netlink socket).
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }

    fn run(&self) {
        let mut sampler = Sampler::default();
        let mut warned: Option<Instant> = None;
        loop {
            let ports = {
                let mut s = self.lock();
                while s.demand.ports.is_empty() && !s.stop {
                    s.latest = None;
                    s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                if s.stop {
                    return;
                }
                s.demand.ports.clone()
            };
            let sample = match sampler.sample(&ports) {
                Ok(v) => Some((Instant::now(), v)),
                Err(e) => {
                    // Once a minute at most: a persistent failure would flood the journal.
                    if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(error = %e, "sock_diag failed; bulkheads see no connections");
                        warned = Some(Instant::now());
                    }
                    None
                }
            };
            let mut s = self.lock();
            s.latest = sample;
            let period = if s.demand.urgent { URGENT } else { RELAXED };
            if !s.stop {
                s = self
                    .wake
                    .wait_timeout(s, period)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if s.stop {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_what_is_wanted_and_nothing_without_ports() {
        let w = SocketWatch::start().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(w.latest(), None, "no ports, no sample");
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        w.want(SocketDemand {
            ports: vec![port],
            urgent: false,
        });
        let end = Instant::now() + Duration::from_secs(5);
        let got = loop {
            if let Some(v) = w.latest() {
                break v;
            }
            assert!(Instant::now() < end, "no sample");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].port, got[0].listeners), (port, 1));
        w.stop();
    }
}
