//! TCP socket statistics of local ports through sock_diag netlink (the source `ss` uses):
//! established connections and the listen socket's accept queue, for the bulkheads.
//!
//! One dump per address family, counted by local port in user space, so the cost does not
//! grow with the number of upstreams. Works unprivileged, in the calling thread's network
//! namespace.

use std::io;

/// Socket statistics of one local TCP port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortSockets {
    pub port: u16,
    /// Connections in ESTABLISHED whose local port is `port` (IPv4 and IPv6): accepted or
    /// waiting in the accept queue. SYN_RECV (handshake not finished) is not counted: those
    /// are not connections the service holds yet.
    pub established: u32,
    /// Listening sockets on the port (several with SO_REUSEPORT or separate v4/v6).
    pub listeners: u32,
    /// Connections completed but not yet accepted, summed over the listeners.
    pub accept_queue: u32,
    /// Listen backlog, summed over the listeners.
    pub backlog: u32,
}

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_msg`: family, state, timer, retrans, id (48 bytes), expires, rqueue,
/// wqueue, uid, inode.
const INET_DIAG_MSG_LEN: usize = 72;

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The request: `nlmsghdr` + `inet_diag_req_v2` for TCP in ESTABLISHED or LISTEN.
fn request(family: u8, seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(NLMSG_HDRLEN + 56);
    let len = (NLMSG_HDRLEN + 56) as u32;
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext, pad, states, id (48 bytes).
    b.push(family);
    b.push(libc::IPPROTO_TCP as u8);
    b.push(0);
    b.push(0);
    let states: u32 = (1 << TCP_ESTABLISHED) | (1 << TCP_LISTEN);
    b.extend_from_slice(&states.to_ne_bytes());
    b.extend_from_slice(&[0u8; 48]);
    b
}

/// What a receive buffer held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    More,
    Done,
}

/// Count the sockets of `ports` in a buffer of netlink messages. Pure.
pub(crate) fn parse_dump(buf: &[u8], counts: &mut [PortSockets]) -> io::Result<Parsed> {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap_or_default());
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
        }
        let body = &buf[off + NLMSG_HDRLEN..off + len];
        match kind {
            NLMSG_DONE => return Ok(Parsed::Done),
            NLMSG_ERROR => {
                let errno = body
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                if errno == 0 {
                    return Ok(Parsed::Done);
                }
                return Err(io::Error::from_raw_os_error(-errno));
            }
            SOCK_DIAG_BY_FAMILY if body.len() >= INET_DIAG_MSG_LEN => {
                let state = body[1];
                // id.sport is big-endian at offset 4.
                let sport = u16::from_be_bytes([body[4], body[5]]);
                let rqueue = u32::from_ne_bytes(body[56..60].try_into().unwrap_or_default());
                let wqueue = u32::from_ne_bytes(body[60..64].try_into().unwrap_or_default());
                if let Some(c) = counts.iter_mut().find(|c| c.port == sport) {
                    match state {
                        TCP_ESTABLISHED => c.established += 1,
                        TCP_LISTEN => {
                            c.listeners += 1;
                            c.accept_queue += rqueue;
                            c.backlog += wqueue;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        off += align(len);
    }
    Ok(Parsed::More)
}

/// Statistics of `ports` in the calling thread's network namespace.
#[allow(unsafe_code)]
pub fn port_sockets(ports: &[u16]) -> io::Result<Vec<PortSockets>> {
    let mut counts: Vec<PortSockets> = ports
        .iter()
        .map(|p| PortSockets {
            port: *p,
            ..PortSockets::default()
        })
        .collect();
    // SAFETY: plain socket(2); the fd is closed by the OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we own fd.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&owned);
    let mut buf = vec![0u8; 64 * 1024];
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        let req = request(family, seq);
        // SAFETY: sending a buffer we own, with its length, to the kernel (no address: a
        // netlink socket sends to the kernel by default).
        let sent = unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            // SAFETY: receiving into a buffer we own, with its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 || parse_dump(&buf[..n as usize], &mut counts)? == Parsed::Done {
                break;
            }
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use std::{
        net::{TcpListener, TcpStream},
        time::{Duration, Instant},
    };

    use super::*;

    fn msg(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + body.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(body);
        b.resize(align(b.len()), 0);
        b
    }

    fn diag(state: u8, sport: u16, rq: u32, wq: u32) -> Vec<u8> {
        let mut b = vec![0u8; INET_DIAG_MSG_LEN];
        b[0] = libc::AF_INET as u8;
        b[1] = state;
        b[4..6].copy_from_slice(&sport.to_be_bytes());
        b[56..60].copy_from_slice(&rq.to_ne_bytes());
        b[60..64].copy_from_slice(&wq.to_ne_bytes());
        b
    }

    #[test]
    fn parses_multi_message_buffers() {
        let mut buf = msg(SOCK_DIAG_BY_FAMILY, &diag(TCP_LISTEN, 8080, 3, 128));
        buf.extend(msg(SOCK_DIAG_BY_FAMILY, &diag(TCP_ESTABLISHED, 8080, 0, 0)));
        buf.extend(msg(SOCK_DIAG_BY_FAMILY, &diag(TCP_ESTABLISHED, 22, 0, 0)));
        let mut c = vec![PortSockets { port: 8080, ..Default::default() }];
        assert_eq!(parse_dump(&buf, &mut c).unwrap(), Parsed::More);
        assert_eq!(c[0], PortSockets { port: 8080, established: 1, listeners: 1, accept_queue: 3, backlog: 128 });
        assert_eq!(parse_dump(&msg(NLMSG_DONE, &[0; 4]), &mut c).unwrap(), Parsed::Done);
    }

    #[test]
    fn reports_errors_and_truncation() {
        let e = parse_dump(&msg(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes()), &mut []).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let mut m = msg(SOCK_DIAG_BY_FAMILY, &diag(TCP_LISTEN, 1, 0, 0));
        m.truncate(20);
        assert!(parse_dump(&m, &mut []).is_err());
    }

    fn poll(what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn counts_a_real_listener_and_its_queue() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        poll("3 queued connections", || {
            let s = port_sockets(&[port]).unwrap()[0];
            s.accept_queue == 3 && s.established >= 3
        });
        let s = port_sockets(&[port]).unwrap()[0];
        assert_eq!(s.listeners, 1);
        assert!(s.backlog >= 3);
        let accepted: Vec<_> = (0..3).map(|_| l.accept().unwrap()).collect();
        poll("an empty accept queue", || port_sockets(&[port]).unwrap()[0].accept_queue == 0);
        assert_eq!(port_sockets(&[port]).unwrap()[0].established, 3);
        drop((clients, accepted));
    }
}
