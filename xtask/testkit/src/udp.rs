//! Paced UDP senders and counting receivers. Every sender is bounded in packets and time.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use traffic_daemon::dataplane::monotonic_ns;

use crate::netns::{Netns, pin_to_cpu};

/// Read `read` every `every` until two readings agree (in-flight datagrams drained) or
/// `deadline` passes; the last reading.
pub fn settle<T: PartialEq>(deadline: Duration, every: Duration, mut read: impl FnMut() -> T) -> T {
    let end = Instant::now() + deadline;
    let mut last = read();
    while Instant::now() < end {
        std::thread::sleep(every);
        let now = read();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// One paced stream of datagrams from one source address.
#[derive(Clone, Debug)]
pub struct UdpFlow {
    pub src: IpAddr,
    pub dst: SocketAddr,
    /// Datagrams per second.
    pub rate_pps: f64,
    /// Hard stop in time.
    pub duration: Duration,
    /// Hard stop in packets.
    pub max_packets: u64,
    /// UDP payload bytes.
    pub payload_len: usize,
    /// Pin the sending thread to this CPU.
    pub cpu: Option<usize>,
    /// Live count of datagrams sent, for progress displays.
    pub progress: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// What a flow did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub sent: u64,
    pub send_errors: u64,
    /// Monotonic ns of the first and last successful send.
    pub first_ns: u64,
    pub last_ns: u64,
}

impl FlowStats {
    /// Time between the first and the last datagram, in seconds.
    pub fn span_secs(&self) -> f64 {
        self.last_ns.saturating_sub(self.first_ns) as f64 / 1e9
    }

    /// Combine flows of one source (e.g. the same address sending from two CPUs).
    pub fn merge(&self, o: &FlowStats) -> FlowStats {
        let first = |a: u64, b: u64| match (a, b) {
            (0, x) | (x, 0) => x,
            (a, b) => a.min(b),
        };
        FlowStats {
            sent: self.sent + o.sent,
            send_errors: self.send_errors + o.send_errors,
            first_ns: first(self.first_ns, o.first_ns),
            last_ns: self.last_ns.max(o.last_ns),
        }
    }
}

/// Send a flow from the calling thread (which must already be in the sender's namespace).
pub fn send_flow(flow: &UdpFlow, stop: &AtomicBool) -> std::io::Result<FlowStats> {
    if let Some(cpu) = flow.cpu {
        pin_to_cpu(cpu);
    }
    let sock = UdpSocket::bind(SocketAddr::new(flow.src, 0))?;
    let payload = vec![0x5au8; flow.payload_len.max(1)];
    let mut st = FlowStats::default();
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / flow.rate_pps.max(1e-3));
    let mut next = start;
    let mut i: u64 = 0;
    while i < flow.max_packets && start.elapsed() < flow.duration && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            let gap = next - now;
            if gap > Duration::from_micros(300) {
                std::thread::sleep(gap - Duration::from_micros(200));
            }
            while Instant::now() < next {
                std::hint::spin_loop();
            }
        }
        match sock.send_to(&payload, flow.dst) {
            Ok(_) => {
                let t = monotonic_ns();
                if st.sent == 0 {
                    st.first_ns = t;
                }
                st.last_ns = t;
                st.sent += 1;
                if let Some(p) = &flow.progress {
                    p.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => st.send_errors += 1,
        }
        i += 1;
        next = start + interval.mul_f64(i as f64);
    }
    Ok(st)
}

/// Run flows in `ns`, one thread each, and wait for all of them.
pub fn run_flows(ns: &Netns, flows: &[UdpFlow], stop: &Arc<AtomicBool>) -> Result<Vec<FlowStats>> {
    let handles: Vec<JoinHandle<std::io::Result<FlowStats>>> = flows
        .iter()
        .map(|f| {
            let f = f.clone();
            let stop = stop.clone();
            ns.spawn(move || send_flow(&f, &stop))
        })
        .collect::<Result<_>>()?;
    handles
        .into_iter()
        .zip(flows)
        .map(|(h, f)| {
            h.join()
                .map_err(|_| anyhow::anyhow!("sender thread panicked"))?
                .with_context(|| format!("flow from {}", f.src))
        })
        .collect()
}

/// Datagrams received per source address (IPv4-mapped sources reported as IPv4).
pub type Counts = HashMap<IpAddr, u64>;

/// Receivers on a UDP port in a namespace (dual-stack, one thread per socket with
/// SO_REUSEPORT), counting datagrams by source until stopped.
pub struct UdpSink {
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Counts>>,
    threads: Vec<JoinHandle<()>>,
}

fn set_opt(fd: i32, level: i32, name: i32, value: i32) {
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: setsockopt with a pointer to an i32 we own and its size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl UdpSink {
    /// Bind `[::]:port` in `ns` with `threads` sockets.
    pub fn start(ns: &Netns, port: u16, threads: usize) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Counts::new()));
        let mut handles = Vec::new();
        for _ in 0..threads.max(1) {
            let (stop, shared) = (stop.clone(), shared.clone());
            let sock = ns.run(move || -> std::io::Result<UdpSocket> {
                // std has no SO_REUSEPORT: build the socket by hand.
                #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
                // SAFETY: plain socket(2) call.
                let fd = unsafe {
                    libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
                };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
                // SAFETY: we own fd from here on.
                let sock: UdpSocket = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
                set_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1);
                set_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0);
                set_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 32 << 20);
                let addr = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as u16,
                    sin6_port: port.to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
                    sin6_scope_id: 0,
                };
                #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
                // SAFETY: bind with a sockaddr_in6 we own and its size.
                let r = unsafe {
                    libc::bind(
                        fd,
                        (&raw const addr).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                };
                if r != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                sock.set_read_timeout(Some(Duration::from_millis(20)))?;
                Ok(sock)
            })??;
            let _ = sock.as_raw_fd();
            handles.push(std::thread::spawn(move || {
                let mut local = Counts::new();
                let mut buf = vec![0u8; 65536];
                let mut last_flush = Instant::now();
                loop {
                    match sock.recv_from(&mut buf) {
                        Ok((_, from)) => *local.entry(canonical(from.ip())).or_default() += 1,
                        Err(_) => {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                    }
                    if last_flush.elapsed() > Duration::from_millis(50) {
                        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                        for (k, v) in local.drain() {
                            *s.entry(k).or_default() += v;
                        }
                        last_flush = Instant::now();
                    }
                }
                let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                for (k, v) in local.drain() {
                    *s.entry(k).or_default() += v;
                }
            }));
        }
        Ok(Self {
            stop,
            shared,
            threads: handles,
        })
    }

    /// Counts so far (up to ~50 ms behind).
    pub fn snapshot(&self) -> Counts {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait until the counts stop changing (all in-flight datagrams drained; polled, with a
    /// deadline), then stop and return the final counts.
    pub fn finish(mut self, deadline: Duration) -> Counts {
        settle(deadline, Duration::from_millis(120), || self.snapshot());
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.snapshot()
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
