//! Bounded HTTP/1 listeners for the admin socket and the metrics port: [`serve`].
//!
//! Any local user can open connections to the metrics port (and any member of the socket's
//! group to the admin socket). Unbounded, a few thousand idle connections took every file
//! descriptor of the daemon, and with them its probes and sock_diag (issue 12). So each
//! listener has:
//!
//! - a **cap** on open connections ([`Limits::max_connections`], from the descriptor budget:
//!   see [`super::fdbudget`]). The accept loop never stops accepting, so the kernel's queue
//!   cannot hold a real client hostage behind thousands of idle ones: at the cap, the
//!   connection that has waited longest for its request (fresh, reading a body, or idle
//!   between requests) is closed to make room; when every connection is in a handler, the
//!   new one is closed at once. Both are counted ([`Stats`]).
//! - **timeouts** by phase: request headers and body must arrive within
//!   [`Limits::request_timeout`] of the connection or of the headers (slow headers, slow
//!   bodies), a keep-alive connection may sit idle for [`Limits::idle_timeout`], and a client
//!   that does not read its response is closed by the same idle timeout.
//! - **streams** (`GET /v1/watch`): a response marked [`Streaming`] keeps its connection
//!   for as long as the client reads it. It still counts against the cap, is never evicted
//!   (the hub bounds the streams to a quarter of the cap: see `serve::watch`), and its idle
//!   deadline is counted from the last chunk written, so a client that stops reading is
//!   closed by the idle timeout like any other.
//! - **small buffers**: hyper's read buffer is capped at [`MAX_BUF`] (requests here are a
//!   line and a few headers) and a body at [`Limits::max_body_bytes`]; a connection costs a
//!   few KiB, and at most the cap of them exist.
//!
//! Phases are tracked by the service wrapper around the router (hyper calls it once the
//! headers are parsed; it reads the body, runs the handler, and marks the connection idle),
//! and enforced by each connection's task, which sleeps until the current phase's deadline.

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
    response::{IntoResponse as _, Response},
};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::Notify,
    time::Instant,
};

/// hyper's read buffer limit: the smallest it allows (8 KiB) plus room for a long header line.
pub const MAX_BUF: usize = 16 * 1024;

/// The bounds of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    /// From accept (or the end of the previous response) to the complete headers, and from
    /// the headers to the complete body.
    pub request_timeout: Duration,
    /// Between two requests of a keep-alive connection (and while a response is unread).
    pub idle_timeout: Duration,
    /// A handler that takes longer is abandoned and its connection closed.
    pub handler_timeout: Duration,
    pub max_body_bytes: usize,
}

impl Limits {
    /// The defaults for a listener allowed `max_connections`: 5 s for a request, 10 s idle,
    /// 60 s for a handler (a reload of a large config), 64 KiB bodies.
    pub const fn with_cap(max_connections: usize) -> Self {
        Self {
            max_connections,
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(60),
            max_body_bytes: 64 * 1024,
        }
    }
}

/// What one listener did with its connections (read by the metrics scrape).
#[derive(Debug, Default)]
pub struct Stats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    /// Closed at once: at the cap, and every open connection busy in a handler.
    pub refused: AtomicU64,
    /// Closed to make room for a new connection (the one waiting longest for a request).
    pub evicted: AtomicU64,
    /// Closed because a request or an idle keep-alive took too long.
    pub timed_out: AtomicU64,
    pub accept_errors: AtomicU64,
}

/// Who is on the other end of an admin connection (SO_PEERCRED, and SO_PEERGROUPS for the
/// supplementary groups), as of its connect; `None` over TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    pub groups: Vec<u32>,
}

impl Peer {
    /// Whether the peer is root or has `gid` as its primary or a supplementary group.
    pub fn is_root_or_in(&self, gid: Option<u32>) -> bool {
        self.uid == 0 || gid.is_some_and(|g| self.gid == g || self.groups.contains(&g))
    }
}

/// The supplementary groups of a Unix socket's peer (empty when the kernel cannot say).
fn peer_groups(s: &tokio::net::UnixStream) -> Vec<u32> {
    use std::os::fd::AsRawFd as _;
    // NGROUPS_MAX is 65536; a peer in more than 256 groups is checked on its first 256.
    let mut groups = vec![0u32; 256];
    let mut len = (groups.len() * size_of::<u32>()) as libc::socklen_t;
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: getsockopt writes at most `len` bytes into `groups`, which holds that many
    // and lives for the call; `len` is a live socklen_t.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Vec::new();
    }
    groups.truncate(len as usize / size_of::<u32>());
    groups
}

/// A listener this module can serve: TCP (metrics) or Unix (admin, with peer credentials).
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(
        &self,
    ) -> impl std::future::Future<Output = std::io::Result<(Self::Io, Option<Peer>)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Option<Peer>)> {
        let (s, _) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok((s, None))
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, Option<Peer>)> {
        let (s, _) = tokio::net::UnixListener::accept(self).await?;
        // Without credentials the peer is treated as nobody: readers' routes only if that.
        let peer = s.peer_cred().ok().map(|c| Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
            groups: peer_groups(&s),
        });
        Ok((s, peer))
    }
}

/// Phases of a connection; the deadline of each is counted from when it began.
const FRESH: u8 = 0;
const READING: u8 = 1;
const HANDLING: u8 = 2;
const IDLE: u8 = 3;
/// Writing a [`Streaming`] response; the phase restarts with every chunk.
const STREAMING: u8 = 4;

/// Marks a response (in its extensions) as a long-lived stream: see the module doc.
#[derive(Clone, Copy, Debug)]
pub struct Streaming;

/// One open connection as the accept loop and its task see it.
struct Conn {
    phase: AtomicU8,
    /// When the phase began, in ms since the listener's epoch.
    since_ms: AtomicU64,
    kill: Notify,
}

/// The open connections of one listener.
struct Registry {
    epoch: Instant,
    limits: Limits,
    stats: Arc<Stats>,
    conns: Mutex<Vec<(u64, Arc<Conn>)>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn set(&self, c: &Conn, phase: u8) {
        c.since_ms.store(self.now_ms(), Ordering::Relaxed);
        c.phase.store(phase, Ordering::Relaxed);
    }

    fn timeout(&self, phase: u8) -> Duration {
        match phase {
            FRESH | READING => self.limits.request_timeout,
            HANDLING => self.limits.handler_timeout,
            _ => self.limits.idle_timeout,
        }
    }

    /// When the connection's current phase runs out.
    fn deadline(&self, c: &Conn) -> Instant {
        let since = Duration::from_millis(c.since_ms.load(Ordering::Relaxed));
        self.epoch + since + self.timeout(c.phase.load(Ordering::Relaxed))
    }

    /// Admit connection `id`, evicting the longest-waiting non-busy one at the cap; `None`
    /// when the cap is reached and every connection is in a handler.
    fn admit(&self, id: u64) -> Option<Arc<Conn>> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() >= self.limits.max_connections {
            let victim = conns
                .iter()
                .filter(|(_, c)| !matches!(c.phase.load(Ordering::Relaxed), HANDLING | STREAMING))
                .min_by_key(|(_, c)| c.since_ms.load(Ordering::Relaxed))
                .map(|(i, c)| (*i, c.clone()));
            let (vid, v) = victim?;
            // Out of the registry now, so the next admit does not pick it again; its task
            // closes it and counts it.
            conns.retain(|(i, _)| *i != vid);
            v.kill.notify_one();
        }
        let c = Arc::new(Conn {
            phase: AtomicU8::new(FRESH),
            since_ms: AtomicU64::new(self.now_ms()),
            kill: Notify::new(),
        });
        conns.push((id, c.clone()));
        Some(c)
    }

    fn remove(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|(i, _)| *i != id);
    }
}

/// Serve `router` on `listener` within `limits` until the task is aborted.
pub async fn serve<L: Accept>(
    listener: L,
    name: &'static str,
    router: Router,
    limits: Limits,
    stats: Arc<Stats>,
) {
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        limits,
        stats,
        conns: Mutex::new(Vec::with_capacity(limits.max_connections)),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(MAX_BUF);
    let tasks = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut next_id = 0u64;
    let mut last_warning: Option<Instant> = None;
    loop {
        let (io, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                registry.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                // EMFILE and the like persist until something closes: do not spin on them,
                // and say so once a minute, not per attempt.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let Some(conn) = registry.admit(id) else {
            registry.stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(io);
            continue;
        };
        // A permit per live task, released when the task ends: an evicted connection holds
        // its buffers until its task has run, so wait for it (it was just told to stop)
        // rather than let a burst of accepts outrun the evictions (measured: +13 MB of RSS
        // for 5,500 connections in a burst without this wait).
        let Ok(permit) = tasks.clone().acquire_owned().await else {
            return;
        };
        registry.stats.accepted.fetch_add(1, Ordering::Relaxed);
        registry.stats.open.fetch_add(1, Ordering::Relaxed);
        let svc = service(
            router.clone(),
            registry.clone(),
            conn.clone(),
            peer.map(Arc::new),
        );
        let http = builder.serve_connection(TokioIo::new(io), svc);
        let registry = registry.clone();
        tokio::spawn(async move {
            drive(http, &registry, conn, id).await;
            drop(permit);
        });
    }
}

/// A connection's task: serve it until it ends, is evicted, or its phase runs out.
async fn drive<F>(http: F, registry: &Registry, conn: Arc<Conn>, id: u64)
where
    F: std::future::Future<Output = hyper::Result<()>>,
{
    tokio::pin!(http);
    let stats = &registry.stats;
    loop {
        let deadline = registry.deadline(&conn);
        tokio::select! {
            _ = http.as_mut() => break,
            () = conn.kill.notified() => {
                stats.evicted.fetch_add(1, Ordering::Relaxed);
                break;
            }
            () = tokio::time::sleep_until(deadline) => {
                // The phase may have moved on while we slept: only its own deadline counts.
                if Instant::now() >= registry.deadline(&conn) {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    registry.remove(id);
    stats.open.fetch_sub(1, Ordering::Relaxed);
}

/// The per-connection service: marks the phases around reading the body and the handler;
/// puts the peer's credentials in the request's extensions.
fn service(
    router: Router,
    registry: Arc<Registry>,
    conn: Arc<Conn>,
    peer: Option<Arc<Peer>>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let (mut router, registry, conn) = (router.clone(), registry.clone(), conn.clone());
        let peer = peer.clone();
        async move {
            registry.set(&conn, READING);
            let (parts, body) = req.into_parts();
            let limit = registry.limits.max_body_bytes;
            let bytes = match axum::body::to_bytes(Body::new(body), limit).await {
                Ok(b) => b,
                Err(_) => {
                    registry.set(&conn, IDLE);
                    return Ok(StatusCode::PAYLOAD_TOO_LARGE.into_response());
                }
            };
            let mut req = Request::from_parts(parts, Body::from(bytes));
            if let Some(p) = peer {
                req.extensions_mut().insert(p);
            }
            registry.set(&conn, HANDLING);
            let r = tower_service::Service::call(&mut router, req).await;
            Ok(match r {
                Ok(resp) if resp.extensions().get::<Streaming>().is_some() => {
                    registry.set(&conn, STREAMING);
                    resp.map(|body| {
                        Body::new(Progress {
                            body,
                            registry,
                            conn,
                        })
                    })
                }
                Ok(resp) => {
                    registry.set(&conn, IDLE);
                    resp
                }
                Err(e) => match e {},
            })
        }
    })
}

/// A streamed body that restarts its connection's idle deadline with every chunk it hands
/// to hyper (hyper asks for the next one only when it could write the last: a client that
/// stops reading stops the chunks), and marks the connection idle at its end.
struct Progress {
    body: Body,
    registry: Arc<Registry>,
    conn: Arc<Conn>,
}

impl http_body::Body for Progress {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        match &r {
            std::task::Poll::Ready(Some(Ok(_))) => this.registry.set(&this.conn, STREAMING),
            std::task::Poll::Ready(_) => this.registry.set(&this.conn, IDLE),
            std::task::Poll::Pending => {}
        }
        r
    }
}

/// The listeners' families for the metrics scrape (one series per listener and outcome).
pub fn render_stats(e: &mut super::exposition::Exposition, listeners: &[(&str, &Stats)]) {
    use super::exposition::Kind;
    e.family(
        "traffic_listener_connections",
        Kind::Gauge,
        "Open connections of the metrics and admin listeners.",
    );
    for (name, s) in listeners {
        let open = s.open.load(Ordering::Relaxed) as f64;
        e.sample("traffic_listener_connections", &[("listener", name)], open);
    }
    e.family(
        "traffic_listener_connections_closed_total",
        Kind::Counter,
        "Connections the listeners closed themselves, by reason: refused (at the cap, all \
         busy), evicted (at the cap, to make room), timeout (slow request or idle keep-alive).",
    );
    for (name, s) in listeners {
        for (reason, n) in [
            ("refused", &s.refused),
            ("evicted", &s.evicted),
            ("timeout", &s.timed_out),
        ] {
            let v = n.load(Ordering::Relaxed) as f64;
            e.sample(
                "traffic_listener_connections_closed_total",
                &[("listener", name), ("reason", reason)],
                v,
            );
        }
    }
    e.family(
        "traffic_listener_accept_errors_total",
        Kind::Counter,
        "Failed accepts (e.g. out of file descriptors).",
    );
    for (name, s) in listeners {
        let v = s.accept_errors.load(Ordering::Relaxed) as f64;
        e.sample(
            "traffic_listener_accept_errors_total",
            &[("listener", name)],
            v,
        );
    }
}

#[cfg(test)]
mod stream_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(cap: usize) -> Registry {
        Registry {
            epoch: Instant::now(),
            limits: Limits::with_cap(cap),
            stats: Arc::default(),
            conns: Mutex::default(),
        }
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_waiting_idle_connection_makes_room() {
        let r = registry(2);
        let a = r.admit(1).unwrap();
        let b = r.admit(2).unwrap();
        // b began later than a.
        b.since_ms.fetch_add(10, Ordering::Relaxed);
        // b is busy in a handler: never evicted.
        r.set(&b, HANDLING);
        let c = r.admit(3).unwrap();
        // a was told to close, and left the registry.
        tokio::time::timeout(Duration::from_millis(1), a.kill.notified())
            .await
            .unwrap();
        assert_eq!(r.conns.lock().unwrap().len(), 2);
        // Now b and c are both busy: a fourth is refused.
        r.set(&c, HANDLING);
        assert!(r.admit(4).is_none());
        r.set(&c, IDLE);
        assert!(r.admit(5).is_some());
    }

    /// The whole listener over TCP: at the cap the oldest idle connection is closed for a
    /// new one, which is served; a connection that sends nothing is closed at its deadline.
    #[tokio::test]
    async fn evicts_the_oldest_idle_serves_the_newest_and_times_out_the_silent() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let limits = Limits {
            request_timeout: Duration::from_millis(300),
            ..Limits::with_cap(2)
        };
        let stats = Arc::new(Stats::default());
        let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        tokio::spawn(serve(l, "test", router, limits, stats.clone()));
        let connect = || tokio::net::TcpStream::connect(addr);
        let mut first = connect().await.unwrap();
        let _second = connect().await.unwrap();
        // Both accepted (in order) before the third arrives.
        until(|| stats.open.load(Ordering::Relaxed) == 2).await;
        let mut third = connect().await.unwrap();
        third
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        third.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hi"),
            "{answer}"
        );
        // The first was evicted: EOF (or a reset), not a wait.
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(1), first.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0) | Err(_))), "{r:?}");
        assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);
        // The second sends nothing: closed once its request deadline passes.
        until(|| stats.timed_out.load(Ordering::Relaxed) == 1).await;
        until(|| stats.open.load(Ordering::Relaxed) == 0).await;
    }

    /// Polls `f` every 10 ms for up to 5 s.
    async fn until(f: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < end, "condition not reached in 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn each_phase_has_its_own_deadline() {
        let r = registry(4);
        let c = r.admit(1).unwrap();
        let at = |phase| {
            c.phase.store(phase, Ordering::Relaxed);
            c.since_ms.store(1000, Ordering::Relaxed);
            r.deadline(&c) - r.epoch
        };
        assert_eq!(at(FRESH), Duration::from_secs(6));
        assert_eq!(at(READING), Duration::from_secs(6));
        assert_eq!(at(IDLE), Duration::from_secs(11));
        assert_eq!(at(HANDLING), Duration::from_secs(61));
        assert_eq!(at(STREAMING), Duration::from_secs(11));
    }
}
