//! One TCP connection from a chosen source address, with a deadline: connect latency and
//! how it ended (success, reset, timeout, error).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use crate::profile::Request;

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnOutcome {
    /// Connected and, if a request was made, answered as expected.
    Ok,
    /// Refused with a RST (by the node's stack or the XDP gate), or reset later.
    Reset,
    /// No answer before the deadline (connect or request).
    Timeout,
    /// Anything else: an HTTP error status, a short echo, a local error.
    Error,
}

impl ConnOutcome {
    pub const ALL: [ConnOutcome; 4] = [
        ConnOutcome::Ok,
        ConnOutcome::Reset,
        ConnOutcome::Timeout,
        ConnOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnOutcome::Ok => "ok",
            ConnOutcome::Reset => "reset",
            ConnOutcome::Timeout => "timeout",
            ConnOutcome::Error => "error",
        }
    }
}

/// The result of one connection.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    pub outcome: ConnOutcome,
    /// Time to the connect's answer (SYN-ACK or RST); `None` when it timed out.
    pub connect: Option<Duration>,
    /// Time to the end of the exchange.
    pub total: Duration,
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe {
                std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in>(), sin);
            }
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe {
                std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in6>(), sin6);
            }
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn classify_io(e: &std::io::Error) -> ConnOutcome {
    match e.kind() {
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::ConnectionRefused
        | ErrorKind::BrokenPipe => ConnOutcome::Reset,
        ErrorKind::WouldBlock | ErrorKind::TimedOut => ConnOutcome::Timeout,
        _ => ConnOutcome::Error,
    }
}

/// Open a connection from `src` to `dst` (the calling thread must be in the source's
/// namespace), make the request, close. Everything ends by `timeout` after the start of the
/// connect and again after the start of the request.
pub fn attempt(src: IpAddr, dst: SocketAddr, request: &Request, timeout: Duration) -> Attempt {
    let start = Instant::now();
    let mut s = match connect_from(src, dst, timeout, start) {
        Ok(s) => s,
        Err((outcome, connect)) => {
            return Attempt {
                outcome,
                connect,
                total: start.elapsed(),
            };
        }
    };
    let connect = start.elapsed();
    let done = |outcome| Attempt {
        outcome,
        connect: Some(connect),
        total: start.elapsed(),
    };
    if *request == Request::Connect {
        return done(ConnOutcome::Ok);
    }
    if s.set_nonblocking(false).is_err()
        || s.set_read_timeout(Some(timeout)).is_err()
        || s.set_write_timeout(Some(timeout)).is_err()
    {
        return done(ConnOutcome::Error);
    }
    let _ = s.set_nodelay(true);
    let deadline = Instant::now() + timeout;
    done(match request {
        Request::Connect => ConnOutcome::Ok,
        Request::Http { path } => http_exchange(&mut s, path, deadline),
        Request::Echo { size } => echo_exchange(&mut s, *size, deadline),
    })
}

/// A non-blocking connect from `src` (bound, port picked at connect) to `dst`, waited for
/// up to `timeout`: the connected stream, or the outcome and (when answered) the time to
/// the answer.
// Long on purpose: one libc call after another on the same descriptor (socket, option,
// bind, connect, poll, SO_ERROR), each with its SAFETY comment, read top to bottom.
fn connect_from(
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
    start: Instant,
) -> Result<TcpStream, (ConnOutcome, Option<Duration>)> {
    let fail = |outcome, connect| Err((outcome, connect));
    let family = if dst.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return fail(ConnOutcome::Error, None);
    }
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: we own the new descriptor from here on; OwnedFd closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // Pick the source port at connect time (by 4-tuple), not at bind: many connections
    // from one address must not run out of ports.
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: setsockopt with a pointer to an int we own and its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let (sa, len) = sockaddr(SocketAddr::new(src, 0));
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: bind with a sockaddr we built and its length.
    if unsafe { libc::bind(fd, (&raw const sa).cast(), len) } != 0 {
        return fail(ConnOutcome::Error, None);
    }
    let (da, dlen) = sockaddr(dst);
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: connect with a sockaddr we built and its length.
    let r = unsafe { libc::connect(fd, (&raw const da).cast(), dlen) };
    if r != 0 {
        match errno() {
            libc::EINPROGRESS => {}
            libc::ECONNREFUSED => return fail(ConnOutcome::Reset, Some(start.elapsed())),
            _ => return fail(ConnOutcome::Error, None),
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
        // SAFETY: poll on one pollfd we own.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n == 0 {
            return fail(ConnOutcome::Timeout, None);
        }
        let mut err: libc::c_int = 0;
        let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
        // SAFETY: getsockopt into an int we own.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut err).cast(),
                &mut elen,
            );
        }
        match err {
            0 => {}
            libc::ECONNREFUSED | libc::ECONNRESET => {
                return fail(ConnOutcome::Reset, Some(start.elapsed()));
            }
            libc::ETIMEDOUT => return fail(ConnOutcome::Timeout, None),
            _ => return fail(ConnOutcome::Error, Some(start.elapsed())),
        }
    }
    let s = TcpStream::from(owned);
    debug_assert_eq!(s.as_raw_fd(), fd);
    Ok(s)
}

/// GET `path`; a 2xx or 3xx answer is ok, a close without an answer a reset.
fn http_exchange(s: &mut TcpStream, path: &str, deadline: Instant) -> ConnOutcome {
    if let Err(e) = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
    ) {
        return classify_io(&e);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        if Instant::now() >= deadline {
            return ConnOutcome::Timeout;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                // An answer already complete counts, whatever happens after it.
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
                return classify_io(&e);
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if got.is_empty() {
        ConnOutcome::Reset // closed without an answer
    } else if (200..400).contains(&status) {
        ConnOutcome::Ok
    } else {
        ConnOutcome::Error
    }
}

/// Send `size` bytes and read them back.
fn echo_exchange(s: &mut TcpStream, size: usize, deadline: Instant) -> ConnOutcome {
    let payload = vec![0x61u8; size.max(1)];
    if let Err(e) = s.write_all(&payload) {
        return classify_io(&e);
    }
    let mut got = 0usize;
    let mut buf = [0u8; 4096];
    while got < payload.len() {
        if Instant::now() >= deadline {
            return ConnOutcome::Timeout;
        }
        match s.read(&mut buf) {
            Ok(0) => {
                return if got == 0 {
                    ConnOutcome::Reset
                } else {
                    ConnOutcome::Error
                };
            }
            Ok(n) => got += n,
            Err(e) => return classify_io(&e),
        }
    }
    ConnOutcome::Ok
}
