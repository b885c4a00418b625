//! Running a profile: starting the UDP and TCP workers, pacing them along the profile's
//! ramp, stopping them by deadline or interruption.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::profile::{ClassMix, ClientClass, Profile, Request, WorkloadKind, v4_count};
use traffic_testkit::{
    topo::{SERVICE_V4, SERVICE_V6},
    udp::UdpSink,
};

use super::tcp::{TcpDispatch, TcpWorker};
use super::udp::UdpJob;
use super::{Generator, Run, RunClock, Source};

/// What every thread of one run shares: its id, clock, stop flag, counters and deadline.
struct RunControl {
    id: usize,
    clock: Arc<RunClock>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
    deadline: Instant,
}

/// A TCP workload of a profile, as the run starts it.
struct TcpWork {
    upstream: String,
    request: Request,
    timeout: Duration,
    max_in_flight: u32,
    share: f64,
}

impl Generator<'_> {
    /// The next unused address of a class's range (IPv6: one per /64).
    fn allocate(&mut self, class: ClientClass, v6: bool) -> Result<IpAddr> {
        let pool = self.pools.entry(class).or_default();
        if v6 {
            pool.next_v6 += 1;
            if pool.next_v6 > 0xffff {
                bail!("{class}: out of IPv6 /64s");
            }
            let (base, _) = class.v6_range();
            Ok(IpAddr::V6(Ipv6Addr::from(
                u128::from(base) | (u128::from(pool.next_v6) << 64) | 1,
            )))
        } else {
            if pool.next_v4 >= class.v4_capacity() {
                bail!(
                    "{class}: out of IPv4 addresses in {}/{}",
                    class.v4_range().0,
                    class.v4_range().1
                );
            }
            let (base, _) = class.v4_range();
            let a = Ipv4Addr::from(u32::from(base) + 10 + pool.next_v4);
            pool.next_v4 += 1;
            Ok(IpAddr::V4(a))
        }
    }

    fn register(
        &mut self,
        addr: IpAddr,
        client: ClientClass,
        run: usize,
        tcp: bool,
    ) -> Arc<Source> {
        let s = Arc::new(Source {
            addr,
            client,
            verdict: self.classifier.verdict(addr),
            run,
            tcp,
            offered: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
        });
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone());
        s
    }

    /// Start a profile (only its `only` classes when given); returns the run's id.
    pub fn start(&mut self, profile: &Profile, only: Option<&[ClientClass]>) -> Result<usize> {
        let id = self.runs.len();
        let classes: Vec<ClientClass> = profile
            .classes
            .iter()
            .map(|m| m.class)
            .filter(|c| only.is_none_or(|o| o.contains(c)))
            .collect();
        let pauses: Duration = profile.pauses.iter().map(|p| p.1).sum();
        let ctl = RunControl {
            id,
            clock: Arc::new(RunClock::new(&profile.pauses)),
            stop: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicU64::new(0)),
            skipped: Arc::new(AtomicU64::new(0)),
            deadline: Instant::now() + profile.duration + pauses + Duration::from_secs(60),
        };
        let mut threads = Vec::new();
        for m in profile
            .classes
            .iter()
            .filter(|m| classes.contains(&m.class))
        {
            if m.share <= 0.0 {
                continue;
            }
            if let Some(t) = self.start_datagrams(profile, m, &ctl)? {
                threads.push(t);
            }
            threads.extend(self.start_connections(profile, m, &ctl)?);
        }
        let started_at = self.now();
        self.runs.push(Run {
            profile: profile.clone(),
            classes,
            clock: ctl.clock,
            stop: ctl.stop,
            threads,
            sent: ctl.sent,
            skipped: ctl.skipped,
            degrade: 0,
            started_at,
        });
        Ok(id)
    }

    /// The datagram sender of one class of a run (none without UDP workloads): its sources,
    /// weighted (heavy hitters spread over both families), and the sinks for its ports.
    fn start_datagrams(
        &mut self,
        profile: &Profile,
        m: &ClassMix,
        ctl: &RunControl,
    ) -> Result<Option<JoinHandle<Result<()>>>> {
        let udp: Vec<(u16, Vec<usize>, f64)> = profile
            .workloads_of(m.class)
            .iter()
            .filter_map(|(w, s)| match &w.kind {
                WorkloadKind::Udp { port, sizes } => Some((*port, sizes.clone(), *s)),
                WorkloadKind::Tcp { .. } => None,
            })
            .collect();
        if udp.is_empty() {
            return Ok(None);
        }
        for (port, _, _) in &udp {
            if !self.sinks.contains_key(port) {
                self.sinks
                    .insert(*port, UdpSink::start(&self.topo.node, *port, 2)?);
            }
        }
        let n = m.sources;
        let v4 = v4_count(n, profile.ipv6);
        let mut srcs = Vec::new();
        for i in 0..n {
            let addr = self.allocate(m.class, i >= v4)?;
            let weight = match m.heavy {
                // Heavy hitters first: spread them over both families.
                Some((h, share)) => {
                    let stride = (n / h.max(1)).max(1);
                    if i % stride == 0 && i / stride < h {
                        share / f64::from(h)
                    } else {
                        (1.0 - share) / f64::from(n - h)
                    }
                }
                None => 1.0 / f64::from(n),
            };
            srcs.push((self.register(addr, m.class, ctl.id, false), weight));
        }
        let job = UdpJob {
            client: m.class,
            series: self.allowed_series.clone(),
            sources: srcs,
            works: udp,
            class_share: m.share,
            profile: profile.clone(),
            clock: ctl.clock.clone(),
            stop: ctl.stop.clone(),
            sent: ctl.sent.clone(),
            board: self.board.clone(),
            shared: self.shared.clone(),
            epoch: self.epoch,
            deadline: ctl.deadline,
        };
        Ok(Some(
            self.topo.host(m.class.host()).ns.spawn(move || job.run())?,
        ))
    }

    /// The TCP clients of one class of a run: its client addresses, and per TCP workload a
    /// dispatcher and `max_in_flight` workers.
    fn start_connections(
        &mut self,
        profile: &Profile,
        m: &ClassMix,
        ctl: &RunControl,
    ) -> Result<Vec<JoinHandle<Result<()>>>> {
        let works: Vec<TcpWork> = profile
            .workloads_of(m.class)
            .iter()
            .filter_map(|(w, share)| match &w.kind {
                WorkloadKind::Tcp {
                    upstream,
                    request,
                    timeout,
                    max_in_flight,
                } => Some(TcpWork {
                    upstream: upstream.clone(),
                    request: request.clone(),
                    timeout: *timeout,
                    max_in_flight: *max_in_flight,
                    share: *share,
                }),
                WorkloadKind::Udp { .. } => None,
            })
            .collect();
        if works.is_empty() {
            return Ok(Vec::new());
        }
        let n = m.tcp_clients.max(1);
        let v4 = v4_count(n, profile.ipv6);
        let mut clients = Vec::new();
        for i in 0..n {
            let addr = self.allocate(m.class, i >= v4)?;
            clients.push(self.register(addr, m.class, ctl.id, true).addr);
        }
        let mut threads = Vec::new();
        for work in works {
            threads.extend(self.start_workload(profile, m, ctl, &clients, work)?);
        }
        Ok(threads)
    }

    /// One TCP workload of one class: `max_in_flight` workers taking connections from a
    /// dispatcher that paces them on the profile's schedule.
    fn start_workload(
        &self,
        profile: &Profile,
        m: &ClassMix,
        ctl: &RunControl,
        clients: &[IpAddr],
        work: TcpWork,
    ) -> Result<Vec<JoinHandle<Result<()>>>> {
        let port = self
            .upstreams
            .iter()
            .find(|u| u.name == work.upstream)
            .map(|u| u.port)
            .with_context(|| {
                format!(
                    "profile {}: no upstream named `{}` in the daemon config (TCP ones: {})",
                    profile.name,
                    work.upstream,
                    self.upstreams
                        .iter()
                        .map(|u| u.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let host = self.topo.host(m.class.host());
        let (tx, rx) = mpsc::sync_channel::<()>(work.max_in_flight as usize);
        let rx = Arc::new(Mutex::new(rx));
        let queued = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for k in 0..work.max_in_flight as usize {
            let src = clients[k % clients.len()];
            let dst = if src.is_ipv6() {
                SocketAddr::new(IpAddr::V6(SERVICE_V6), port)
            } else {
                SocketAddr::new(IpAddr::V4(SERVICE_V4), port)
            };
            let w = TcpWorker {
                rx: rx.clone(),
                queued: queued.clone(),
                src,
                dst,
                request: work.request.clone(),
                timeout: work.timeout,
                think: profile.think_time,
                conns: self.conns.clone(),
                phase: self.phase.clone(),
                epoch: self.epoch,
                run: ctl.id,
                client: m.class,
                upstream: work.upstream.clone(),
                stop: ctl.stop.clone(),
                deadline: ctl.deadline,
            };
            threads.push(host.ns.spawn(move || {
                w.run();
                Ok(())
            })?);
        }
        let d = TcpDispatch {
            tx,
            queued,
            max_in_flight: u64::from(work.max_in_flight),
            share: m.share * work.share,
            profile: profile.clone(),
            clock: ctl.clock.clone(),
            stop: ctl.stop.clone(),
            skipped: ctl.skipped.clone(),
            deadline: ctl.deadline,
        };
        threads.push(std::thread::spawn(move || {
            d.run();
            Ok(())
        }));
        Ok(threads)
    }

    /// Pause a run: its senders stop until [`Generator::resume`]; its profile time stands still.
    pub fn pause(&mut self, run: usize) {
        if let Some(r) = self.runs.get(run) {
            r.clock.pause();
            let name = r.profile.name.clone();
            self.mark("note", format!("{name} paused"));
        }
    }

    pub fn resume(&mut self, run: usize) {
        if let Some(r) = self.runs.get(run) {
            r.clock.resume();
            let name = r.profile.name.clone();
            self.mark("note", format!("{name} resumed"));
        }
    }

    /// Profile time of a run.
    pub fn run_time(&self, run: usize) -> Duration {
        self.runs
            .get(run)
            .map_or(Duration::ZERO, |r| r.clock.now().0)
    }

    /// Datagrams a run has sent so far.
    pub fn run_sent(&self, run: usize) -> u64 {
        self.runs
            .get(run)
            .map_or(0, |r| r.sent.load(Ordering::Relaxed))
    }

    /// Whether every thread of the run has ended.
    pub fn run_finished(&self, run: usize) -> bool {
        self.runs
            .get(run)
            .is_none_or(|r| r.threads.iter().all(JoinHandle::is_finished))
    }

    /// Whether every run has ended.
    pub fn all_finished(&self) -> bool {
        (0..self.runs.len()).all(|r| self.run_finished(r))
    }

    /// Stop a run's senders (they end within a tick or a connection timeout).
    pub fn stop_run(&self, run: usize) {
        if let Some(r) = self.runs.get(run) {
            r.stop.store(true, Ordering::Relaxed);
            r.clock.resume();
        }
    }

    pub fn stop_all(&self) {
        for r in 0..self.runs.len() {
            self.stop_run(r);
        }
    }
}
