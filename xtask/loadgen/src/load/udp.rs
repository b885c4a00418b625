//! UDP datagrams of a run: one paced job per client class and source address.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    ideal::{self, Board, IdealSource},
    profile::{ClientClass, Profile},
};
use traffic_testkit::topo::{SERVICE_V4, SERVICE_V6};

use super::{MAX_PER_TICK, RunClock, Source, TICK};

/// A run's datagram sender for one class.
pub(super) struct UdpJob {
    pub(super) client: ClientClass,
    pub(super) series: Arc<Mutex<BTreeMap<ClientClass, Vec<u64>>>>,
    pub(super) sources: Vec<(Arc<Source>, f64)>,
    pub(super) works: Vec<(u16, Vec<usize>, f64)>,
    pub(super) class_share: f64,
    pub(super) profile: Profile,
    pub(super) clock: Arc<RunClock>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) sent: Arc<AtomicU64>,
    pub(super) board: Arc<Board>,
    pub(super) shared: Arc<ideal::Shared>,
    pub(super) epoch: Instant,
    pub(super) deadline: Instant,
}

impl UdpJob {
    pub(super) fn run(self) -> Result<()> {
        let mut srcs = Vec::with_capacity(self.sources.len());
        for (s, weight) in &self.sources {
            let sock = UdpSocket::bind(SocketAddr::new(s.addr, 0))
                .with_context(|| format!("bind {}", s.addr))?;
            sock.set_nonblocking(true)?;
            srcs.push(Src {
                sock,
                src: s.clone(),
                weight: *weight,
                ideal: IdealSource::new(s.verdict.clone()),
                sent: vec![0; self.works.len()],
            });
        }
        let payload = vec![0x5au8; 1500];
        // Datagrams wait here to be judged until the record of the limits covers their
        // send time (a few hundred ms), so every limit change applies when it happened.
        let mut pending: std::collections::VecDeque<(f64, usize, usize)> =
            std::collections::VecDeque::new();
        let mut next = Instant::now();
        let mut seq: usize = 0;
        'outer: loop {
            if self.stop.load(Ordering::Relaxed) || Instant::now() > self.deadline {
                break;
            }
            let (t, paused) = self.clock.now();
            if t >= self.profile.duration {
                break;
            }
            if !paused {
                let ops = self.profile.ops_until(t) * self.class_share;
                for (i, s) in srcs.iter_mut().enumerate() {
                    let v6 = s.src.addr.is_ipv6();
                    for (w, (port, sizes, share)) in self.works.iter().enumerate() {
                        let target = (ops * share * s.weight).floor() as u64;
                        let due = target.saturating_sub(s.sent[w]).min(MAX_PER_TICK);
                        let dst = if v6 {
                            SocketAddr::new(IpAddr::V6(SERVICE_V6), *port)
                        } else {
                            SocketAddr::new(IpAddr::V4(SERVICE_V4), *port)
                        };
                        for _ in 0..due {
                            if self.sent.fetch_add(1, Ordering::Relaxed) >= self.profile.max_packets
                            {
                                break 'outer;
                            }
                            let size = sizes[seq % sizes.len()];
                            seq = seq.wrapping_add(1);
                            if s.sock.send_to(&payload[..size], dst).is_ok() {
                                s.src.offered.fetch_add(1, Ordering::Relaxed);
                                pending.push_back((
                                    self.epoch.elapsed().as_secs_f64(),
                                    ideal::udp_frame_len(v6, size),
                                    i,
                                ));
                            }
                        }
                        s.sent[w] += due;
                    }
                }
            }
            self.judge(&mut srcs, &mut pending, self.board.known_until());
            next += TICK;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        // The rest, once the record covers them (bounded: the daemon may be gone).
        let last = pending.back().map_or(0.0, |p| p.0);
        let end = Instant::now() + Duration::from_secs(3);
        while self.board.known_until() < last && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.judge(&mut srcs, &mut pending, f64::INFINITY);
        Ok(())
    }

    fn judge(
        &self,
        srcs: &mut [Src],
        pending: &mut std::collections::VecDeque<(f64, usize, usize)>,
        horizon: f64,
    ) {
        let mut per_second: BTreeMap<usize, u64> = BTreeMap::new();
        while pending.front().is_some_and(|p| p.0 < horizon) {
            let Some((t, len, i)) = pending.pop_front() else {
                break;
            };
            let s = &mut srcs[i];
            if s.ideal.judge(t, len, &self.board, &self.shared) {
                s.src.allowed.fetch_add(1, Ordering::Relaxed);
                *per_second.entry(t.max(0.0) as usize).or_default() += 1;
            }
        }
        if per_second.is_empty() {
            return;
        }
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let v = series.entry(self.client).or_default();
        for (sec, n) in per_second {
            if v.len() <= sec {
                v.resize(sec + 1, 0);
            }
            v[sec] += n;
        }
    }
}

pub(super) struct Src {
    pub(super) sock: UdpSocket,
    pub(super) src: Arc<Source>,
    pub(super) weight: f64,
    pub(super) ideal: IdealSource,
    pub(super) sent: Vec<u64>,
}
