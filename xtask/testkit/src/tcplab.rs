//! Small TCP services that run in a namespace — an echo server and an HTTP server whose
//! answer can be switched at run time — and TCP clients that time their connects: the
//! upstreams and clients of the circuit-breaker tests (`traffic-daemon/tests/privileged/circuits.rs`).
//!
//! Every server thread polls its stop flag at least every [`POLL`], so stopping a server is
//! bounded in time and closes its listener and every connection it holds before returning.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::netns::Netns;

/// Longest a server thread waits before it looks at its stop flag again.
pub const POLL: Duration = Duration::from_millis(20);

/// What a [`TcpServer`] does with a connection.
#[derive(Clone, Debug)]
pub enum Service {
    /// Echo every byte back until the peer closes (connections stay open until then).
    Echo,
    /// Answer one HTTP request with the status code held in the cell (read per request, so
    /// it can be switched while the server runs), then close.
    Http(Arc<AtomicU16>),
}

/// A TCP server listening on `[::]:port` (dual-stack) in a namespace, stopped and joined by
/// [`TcpServer::stop`] or on drop.
pub struct TcpServer {
    /// The port it listens on.
    pub port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Wait until `fd` is readable or `timeout` passes; true when readable.
fn readable(fd: i32, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: poll(2) on one pollfd we own.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
    n > 0
}

impl TcpServer {
    /// An echo server on `port` in `ns`.
    pub fn echo(ns: &Netns, port: u16) -> Result<Self> {
        Self::start(ns, port, Service::Echo)
    }

    /// An HTTP server on `port` in `ns` answering with the status in `status`.
    pub fn http(ns: &Netns, port: u16, status: Arc<AtomicU16>) -> Result<Self> {
        Self::start(ns, port, Service::Http(status))
    }

    /// Listen on `[::]:port` in `ns` (the socket belongs to the namespace; the threads that
    /// serve it need not) and serve connections until stopped.
    pub fn start(ns: &Netns, port: u16, service: Service) -> Result<Self> {
        let listener = ns
            .run(move || TcpListener::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)))?
            .with_context(|| format!("bind [::]:{port} in {}", ns.name()))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, accepted, open) = (stop.clone(), accepted.clone(), open.clone());
            std::thread::spawn(move || {
                let mut handlers: Vec<JoinHandle<()>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if !readable(listener.as_raw_fd(), POLL) {
                        continue;
                    }
                    while let Ok((conn, _)) = listener.accept() {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        let (stop, open, service) = (stop.clone(), open.clone(), service.clone());
                        open.fetch_add(1, Ordering::Relaxed);
                        handlers.push(std::thread::spawn(move || {
                            serve(conn, &service, &stop);
                            open.fetch_sub(1, Ordering::Relaxed);
                        }));
                    }
                    handlers.retain(|h| !h.is_finished());
                }
                // Close the listener first: new SYNs are refused from here on.
                drop(listener);
                for h in handlers {
                    let _ = h.join();
                }
            })
        };
        Ok(Self {
            port,
            stop,
            accepted,
            open,
            thread: Some(thread),
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections being served now.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Stop: close the listener and every connection, and wait for the threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(mut conn: TcpStream, service: &Service, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 4096];
    let mut request = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => match service {
                Service::Echo => {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Service::Http(status) => {
                    request.extend_from_slice(&buf[..n]);
                    if request.windows(4).any(|w| w == b"\r\n\r\n") {
                        let code = status.load(Ordering::Relaxed);
                        let body = if code < 400 { "ok\n" } else { "failing\n" };
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            if code < 400 { "OK" } else { "Error" },
                            body.len()
                        );
                        return;
                    }
                }
            },
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// How a connect ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connect {
    /// The handshake completed.
    Connected,
    /// Refused: a RST came back (ECONNREFUSED).
    Refused,
    /// No answer within the timeout.
    TimedOut,
    /// Anything else.
    Failed(ErrorKind),
}

impl Connect {
    fn of(r: &std::io::Result<TcpStream>) -> Self {
        match r {
            Ok(_) => Connect::Connected,
            Err(e) => match e.kind() {
                ErrorKind::ConnectionRefused => Connect::Refused,
                ErrorKind::TimedOut | ErrorKind::WouldBlock => Connect::TimedOut,
                k => Connect::Failed(k),
            },
        }
    }
}

/// Connect to `addr` from the calling thread's namespace, with a timeout; the result and
/// how long the connect took.
pub fn connect_timed(
    addr: SocketAddr,
    timeout: Duration,
) -> (std::io::Result<TcpStream>, Duration) {
    let start = Instant::now();
    let r = TcpStream::connect_timeout(&addr, timeout);
    (r, start.elapsed())
}

/// Connect to `addr` from `ns`; the stream (which stays in `ns`'s network stack wherever it
/// is used), the outcome and the time the connect took.
pub fn connect_in(
    ns: &Netns,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(Option<TcpStream>, Connect, Duration)> {
    ns.run(move || {
        let (r, took) = connect_timed(addr, timeout);
        let outcome = Connect::of(&r);
        (r.ok(), outcome, took)
    })
}

/// `n` connects to `addr` one after another from one thread in `ns`, each closed right
/// away; the outcome and duration of each.
pub fn connect_many(
    ns: &Netns,
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
) -> Result<Vec<(Connect, Duration)>> {
    ns.run(move || {
        (0..n)
            .map(|_| {
                let (r, took) = connect_timed(addr, timeout);
                (Connect::of(&r), took)
            })
            .collect()
    })
}

/// Send `msg` on an echo connection and read it back.
pub fn echo_roundtrip(s: &mut TcpStream, msg: &[u8], timeout: Duration) -> std::io::Result<()> {
    s.set_read_timeout(Some(timeout))?;
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    if got != msg {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "echo returned other bytes",
        ));
    }
    Ok(())
}

/// One HTTP GET over a connected stream; the status code.
pub fn http_status(mut s: TcpStream, path: &str, timeout: Duration) -> std::io::Result<u16> {
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, "not an HTTP answer"))
}
