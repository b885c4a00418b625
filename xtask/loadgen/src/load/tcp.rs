//! TCP connections of a run: a dispatcher that hands out connection slots at the profile's
//! rate and the workers that open them from client addresses.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use crate::{
    conn::{self},
    profile::{ClientClass, Profile, Request},
};

use super::{ConnSample, RunClock, TICK};

pub(super) struct TcpDispatch {
    pub(super) tx: mpsc::SyncSender<()>,
    pub(super) queued: Arc<AtomicU64>,
    pub(super) max_in_flight: u64,
    pub(super) share: f64,
    pub(super) profile: Profile,
    pub(super) clock: Arc<RunClock>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) skipped: Arc<AtomicU64>,
    pub(super) deadline: Instant,
}

impl TcpDispatch {
    pub(super) fn run(self) {
        let mut issued: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline {
            let (t, paused) = self.clock.now();
            if t >= self.profile.duration {
                break;
            }
            if !paused {
                let target = (self.profile.ops_until(t) * self.share).floor() as u64;
                while issued < target {
                    issued += 1;
                    if self.queued.load(Ordering::Relaxed) < self.max_in_flight
                        && self.tx.try_send(()).is_ok()
                    {
                        self.queued.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            std::thread::sleep(TICK);
        }
    }
}

pub(super) struct TcpWorker {
    pub(super) rx: Arc<Mutex<mpsc::Receiver<()>>>,
    pub(super) queued: Arc<AtomicU64>,
    pub(super) src: IpAddr,
    pub(super) dst: SocketAddr,
    pub(super) request: Request,
    pub(super) timeout: Duration,
    pub(super) think: Duration,
    pub(super) conns: Arc<Mutex<Vec<ConnSample>>>,
    pub(super) phase: Arc<AtomicUsize>,
    pub(super) epoch: Instant,
    pub(super) run: usize,
    pub(super) client: ClientClass,
    pub(super) upstream: String,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) deadline: Instant,
}

impl TcpWorker {
    pub(super) fn run(self) {
        loop {
            if self.stop.load(Ordering::Relaxed) || Instant::now() > self.deadline {
                return;
            }
            let got = self
                .rx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recv_timeout(Duration::from_millis(50));
            match got {
                Ok(()) => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    let t = self.epoch.elapsed().as_secs_f64();
                    let phase = self.phase.load(Ordering::Relaxed);
                    let a = conn::attempt(self.src, self.dst, &self.request, self.timeout);
                    self.conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(ConnSample {
                            t,
                            run: self.run,
                            client: self.client,
                            upstream: self.upstream.clone(),
                            outcome: a.outcome,
                            connect_ms: a.connect.map(|d| d.as_secs_f64() * 1e3),
                            total_ms: a.total.as_secs_f64() * 1e3,
                            phase,
                        });
                    let end = Instant::now() + self.think;
                    while Instant::now() < end && !self.stop.load(Ordering::Relaxed) {
                        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}
