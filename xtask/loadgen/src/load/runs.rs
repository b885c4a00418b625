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

use crate::profile::{ClientClass, Profile, Request, WorkloadKind, v4_count};
use traffic_testkit::{
    topo::{SERVICE_V4, SERVICE_V6},
    udp::UdpSink,
};

use super::tcp::{TcpDispatch, TcpWorker};
use super::udp::UdpJob;
use super::{Generator, Run, RunClock, Source};

impl Generator<'_> {
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
        let clock = Arc::new(RunClock::new(&profile.pauses));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let skipped = Arc::new(AtomicU64::new(0));
        let pauses: Duration = profile.pauses.iter().map(|p| p.1).sum();
        let deadline = Instant::now() + profile.duration + pauses + Duration::from_secs(60);
        let mut threads = Vec::new();
        for m in profile
            .classes
            .iter()
            .filter(|m| classes.contains(&m.class))
        {
            let host = self.topo.host(m.class.host());
            let works = profile.workloads_of(m.class);
            // Datagram sources.
            let udp: Vec<(u16, Vec<usize>, f64)> = works
                .iter()
                .filter_map(|(w, s)| match &w.kind {
                    WorkloadKind::Udp { port, sizes } => Some((*port, sizes.clone(), *s)),
                    WorkloadKind::Tcp { .. } => None,
                })
                .collect();
            if !udp.is_empty() && m.share > 0.0 {
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
                            let heavy =
                                (i % (n / h.max(1)).max(1) == 0) && (i / (n / h.max(1)).max(1)) < h;
                            if heavy {
                                share / f64::from(h)
                            } else {
                                (1.0 - share) / f64::from(n - h)
                            }
                        }
                        None => 1.0 / f64::from(n),
                    };
                    srcs.push((self.register(addr, m.class, id, false), weight));
                }
                let job = UdpJob {
                    client: m.class,
                    series: self.allowed_series.clone(),
                    sources: srcs,
                    works: udp,
                    class_share: m.share,
                    profile: profile.clone(),
                    clock: clock.clone(),
                    stop: stop.clone(),
                    sent: sent.clone(),
                    board: self.board.clone(),
                    shared: self.shared.clone(),
                    epoch: self.epoch,
                    deadline,
                };
                threads.push(host.ns.spawn(move || job.run())?);
            }
            // TCP clients.
            let tcp_works: Vec<(String, Request, Duration, u32, f64)> = works
                .iter()
                .filter_map(|(w, s)| match &w.kind {
                    WorkloadKind::Tcp {
                        upstream,
                        request,
                        timeout,
                        max_in_flight,
                    } => Some((
                        upstream.clone(),
                        request.clone(),
                        *timeout,
                        *max_in_flight,
                        *s,
                    )),
                    WorkloadKind::Udp { .. } => None,
                })
                .collect();
            if tcp_works.is_empty() || m.share <= 0.0 {
                continue;
            }
            let n = m.tcp_clients.max(1);
            let v4 = v4_count(n, profile.ipv6);
            let mut clients = Vec::new();
            for i in 0..n {
                let addr = self.allocate(m.class, i >= v4)?;
                clients.push(self.register(addr, m.class, id, true).addr);
            }
            for (upstream, request, timeout, max_in_flight, share) in tcp_works {
                let port = self
                    .upstreams
                    .iter()
                    .find(|u| u.name == upstream)
                    .map(|u| u.port)
                    .with_context(|| format!("profile {}: no upstream named `{upstream}` in the daemon config (TCP ones: {})", profile.name, self.upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", ")))?;
                let (tx, rx) = mpsc::sync_channel::<()>(max_in_flight as usize);
                let rx = Arc::new(Mutex::new(rx));
                let queued = Arc::new(AtomicU64::new(0));
                for k in 0..max_in_flight as usize {
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
                        request: request.clone(),
                        timeout,
                        think: profile.think_time,
                        conns: self.conns.clone(),
                        phase: self.phase.clone(),
                        epoch: self.epoch,
                        run: id,
                        client: m.class,
                        upstream: upstream.clone(),
                        stop: stop.clone(),
                        deadline,
                    };
                    threads.push(host.ns.spawn(move || {
                        w.run();
                        Ok(())
                    })?);
                }
                let d = TcpDispatch {
                    tx,
                    queued,
                    max_in_flight: u64::from(max_in_flight),
                    share: m.share * share,
                    profile: profile.clone(),
                    clock: clock.clone(),
                    stop: stop.clone(),
                    skipped: skipped.clone(),
                    deadline,
                };
                threads.push(std::thread::spawn(move || {
                    d.run();
                    Ok(())
                }));
            }
        }
        let started_at = self.now();
        self.runs.push(Run {
            profile: profile.clone(),
            classes,
            clock,
            stop,
            threads,
            sent,
            skipped,
            degrade: 0,
            started_at,
        });
        Ok(id)
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
