//! TCP socket statistics of local ports through sock_diag netlink (`NETLINK_SOCK_DIAG`,
//! inet_diag: the source `ss` uses): established connections and the listeners' accept
//! queues, for the bulkheads.
//!
//! One dump per address family (AF_INET, AF_INET6), filtered by the kernel to LISTEN and
//! ESTABLISHED sockets whose local port is one of those asked about (inet_diag bytecode, see
//! `bytecode`), and counted by local port in user space: the cost grows with the sockets of
//! those ports, not with every socket on the host. [`Sampler`] keeps its netlink socket and
//! buffer between samples. inet_diag for TCP needs no capability,
//! and the netlink socket lives in the network namespace of the calling thread.
//!
//! The bytes are built and parsed here (`request`, `parse_dump`, pure and unit-tested); the
//! three syscalls sit in `open`, `send` and `recv`, each with the smallest `unsafe` block.
//!
//! A dump is not atomic: sockets that change state while it runs may be missed or seen twice
//! (as with `ss`); the numbers are a sample, which is all a bulkhead needs.

use std::{
    collections::HashMap,
    io,
    mem::{offset_of, size_of},
    os::fd::{AsRawFd, OwnedFd},
};

/// Socket statistics of one local TCP port, over IPv4 and IPv6.
///
/// Several listeners on one port (SO_REUSEPORT, or separate IPv4 and IPv6 sockets) are summed:
/// `accept_queue` and `backlog` are the totals over `listeners` sockets. A dual-stack `[::]`
/// listener is one socket (seen in the AF_INET6 dump only), so nothing is counted twice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortSockets {
    pub port: u16,
    /// Connections in ESTABLISHED whose local port is `port`: accepted ones and those still
    /// waiting in an accept queue (the kernel completes them before `accept()`). SYN_RECV
    /// (handshake not finished, not yet a connection the service can hold; also what a SYN
    /// flood inflates) and CLOSE_WAIT and later (the peer has closed) are not counted.
    pub established: u32,
    /// LISTEN sockets bound to the port.
    pub listeners: u32,
    /// Completed connections not yet accepted, summed over the listeners (`idiag_rqueue` of a
    /// listener: `sk_ack_backlog`).
    pub accept_queue: u32,
    /// Listen backlog, summed over the listeners (`idiag_wqueue` of a listener:
    /// `sk_max_ack_backlog`, the `listen()` argument capped at `net.core.somaxconn`).
    pub backlog: u32,
}

// Not in libc: <linux/sock_diag.h> and <net/tcp_states.h>.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;

/// `idiag_states` of the request: the kernel sends only these. SYN_RECV is left out (see
/// `PortSockets::established`), which also keeps request sockets out of the dump.
const STATES: u32 = (1 << TCP_ESTABLISHED) | (1 << TCP_LISTEN);

/// `NLMSG_HDRLEN`; the header fields are read at libc's `nlmsghdr` offsets.
const NLMSG_HDRLEN: usize = nlmsg_align(size_of::<libc::nlmsghdr>());
const NLMSG_LEN_AT: usize = offset_of!(libc::nlmsghdr, nlmsg_len);
const NLMSG_TYPE_AT: usize = offset_of!(libc::nlmsghdr, nlmsg_type);
const NLMSG_SEQ_AT: usize = offset_of!(libc::nlmsghdr, nlmsg_seq);

/// `INET_DIAG_REQ_BYTECODE`: the request attribute carrying a filter program, and the ops
/// used here (<linux/inet_diag.h>, not in libc). S_GE and S_LE (not S_EQ, 4.16+) so any
/// kernel with inet_diag_req_v2 runs it.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const BC_JMP: u8 = 1;
const BC_S_GE: u8 = 2;
const BC_S_LE: u8 = 3;

/// `struct inet_diag_req_v2` (<linux/inet_diag.h>, not in libc): family, protocol, ext, pad,
/// states (u32), then `struct inet_diag_sockid` (48 bytes, zero: no socket selected).
const REQ_LEN: usize = 56;
const REQ_STATES_AT: usize = 4;

/// `struct inet_diag_msg` (<linux/inet_diag.h>, not in libc): family, state, timer, retrans,
/// `id` (48 bytes, `idiag_sport` first, big-endian), expires, rqueue, wqueue, uid, inode.
/// Attributes follow even unasked (shutdown, cgroup id, socket options...); they are skipped.
const MSG_LEN: usize = 72;
const MSG_FAMILY_AT: usize = 0;
const MSG_STATE_AT: usize = 1;
const MSG_SPORT_AT: usize = 4;
const MSG_RQUEUE_AT: usize = 56;
const MSG_WQUEUE_AT: usize = 60;

/// One receive. The kernel fills a dump datagram up to the size of the last receive buffer,
/// capped near 32 KiB (`netlink_recvmsg`), so 64 KiB always holds a whole datagram; a larger
/// one would be reported as an error, not cut (`MSG_TRUNC`).
const RECV_BUF_LEN: usize = 64 * 1024;

const _: () = {
    assert!(NLMSG_HDRLEN == 16);
    assert!(size_of::<libc::nlmsgerr>() == 4 + NLMSG_HDRLEN);
    // sockid (48 bytes), then expires before rqueue; uid and inode after wqueue.
    assert!(REQ_STATES_AT + 4 + 48 == REQ_LEN);
    assert!(MSG_SPORT_AT + 48 + 4 == MSG_RQUEUE_AT);
    assert!(MSG_WQUEUE_AT + 4 + 4 + 4 == MSG_LEN);
};

/// `NLMSG_ALIGN`: where the message after one of `len` bytes starts.
const fn nlmsg_align(len: usize) -> usize {
    libc::NLMSG_ALIGN(len) as usize
}

/// Statistics of `ports` in the calling thread's network namespace, one entry per element of
/// `ports`, in order (duplicates repeat the same numbers). Ports nothing is bound to come back
/// as zeros. Opens a netlink socket for the call; [`Sampler`] keeps one.
///
/// Blocks for the two dumps: a few syscalls, more when the ports have very many sockets.
pub fn port_sockets(ports: &[u16]) -> io::Result<Vec<PortSockets>> {
    Sampler::default().sample(ports)
}

/// A netlink socket and receive buffer kept across samples (opened at the first sample; a
/// failed sample drops the socket, so a dump cut short never leaves stale datagrams behind).
#[derive(Default)]
pub struct Sampler {
    fd: Option<OwnedFd>,
    buf: Vec<u8>,
    seq: u32,
}

impl Sampler {
    /// [`port_sockets`] on this sampler's socket.
    pub fn sample(&mut self, ports: &[u16]) -> io::Result<Vec<PortSockets>> {
        let r = self.dump(ports);
        if r.is_err() {
            self.fd = None;
        }
        r
    }

    fn dump(&mut self, ports: &[u16]) -> io::Result<Vec<PortSockets>> {
        let mut counts = zeros(ports);
        if !counts.is_empty() {
            let fd = match self.fd.take() {
                Some(fd) => fd,
                None => open()?,
            };
            let fd = &*self.fd.insert(fd);
            self.buf.resize(RECV_BUF_LEN, 0);
            let filter = bytecode(ports);
            for family in [libc::AF_INET, libc::AF_INET6] {
                self.seq = self.seq.wrapping_add(1);
                let seq = self.seq;
                // Both fit a u8 (2 and 10).
                send(fd, &request(family as u8, seq, &filter))?;
                loop {
                    let Some(n) = recv(fd, &mut self.buf)? else {
                        continue;
                    };
                    if parse_dump(&self.buf[..n], seq, &mut counts)? == Parsed::Done {
                        break;
                    }
                }
            }
        }
        Ok(ports.iter().map(|p| counts[p]).collect())
    }
}

/// A zero entry per distinct port.
fn zeros(ports: &[u16]) -> HashMap<u16, PortSockets> {
    ports
        .iter()
        .map(|&port| {
            (
                port,
                PortSockets {
                    port,
                    ..PortSockets::default()
                },
            )
        })
        .collect()
}

/// The filter program: the socket's local port is one of `ports` (sorted, duplicates
/// dropped). Built as iproute2's `ss` builds `sport = :A or sport = :B ...`: per port an
/// `S_GE p` and an `S_LE p` op (each followed by the op slot holding the port), clauses
/// joined by a `JMP` that skips the rest on a match. The kernel accepts a socket when the
/// program runs off its end exactly, and rejects it on a jump 4 bytes past the end; its
/// audit (`inet_diag_bc_audit`) wants every jump target on the chain of `yes` steps, which
/// this layout keeps (a clause's rejections land just past the next `JMP`).
fn bytecode(ports: &[u16]) -> Vec<u8> {
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    // Built back to front: `rest` is the program for the ports after this one.
    let mut rest: Vec<u8> = Vec::new();
    for &p in ports.iter().rev() {
        // A clause is 16 bytes; its rejections jump to 4 past its end (within the whole
        // program: to just past the JMP that follows it, or past the end for the last).
        let op = |code: u8, yes: u8, no: u16| [code, yes, no.to_ne_bytes()[0], no.to_ne_bytes()[1]];
        let port = op(0, 0, p);
        let mut clause = Vec::with_capacity(16 + 4 + rest.len());
        clause.extend(op(BC_S_GE, 8, 16 + 4));
        clause.extend(port);
        clause.extend(op(BC_S_LE, 8, 8 + 4));
        clause.extend(port);
        if !rest.is_empty() {
            // Reached when the clause matched: jump over the rest, to the end (accept).
            // Its `yes` (4) is the audit's way into the rest.
            let over = u16::try_from(rest.len() + 4).unwrap_or(u16::MAX);
            clause.extend(op(BC_JMP, 4, over));
            clause.extend(rest);
        }
        rest = clause;
    }
    rest
}

/// The dump request: `nlmsghdr` + `inet_diag_req_v2` for TCP sockets of `family` in `STATES`,
/// with the filter `bc` (none when empty).
fn request(family: u8, seq: u32, bc: &[u8]) -> Vec<u8> {
    let attr_len = if bc.is_empty() { 0 } else { 4 + bc.len() };
    let len = NLMSG_HDRLEN + REQ_LEN + attr_len;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    let mut b = vec![0u8; len];
    b[NLMSG_LEN_AT..][..4].copy_from_slice(&(len as u32).to_ne_bytes());
    b[NLMSG_TYPE_AT..][..2].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[offset_of!(libc::nlmsghdr, nlmsg_flags)..][..2].copy_from_slice(&flags.to_ne_bytes());
    b[NLMSG_SEQ_AT..][..4].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel assigns our port id.
    let req = &mut b[NLMSG_HDRLEN..];
    req[0] = family;
    req[1] = libc::IPPROTO_TCP as u8;
    req[REQ_STATES_AT..][..4].copy_from_slice(&STATES.to_ne_bytes());
    if !bc.is_empty() {
        // struct rtattr: length (header included), type; the program follows (its length is
        // a multiple of 4, so no padding).
        let attr = &mut b[NLMSG_HDRLEN + REQ_LEN..];
        attr[..2].copy_from_slice(&(attr_len as u16).to_ne_bytes());
        attr[2..4].copy_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        attr[4..].copy_from_slice(bc);
    }
    b
}

/// Whether the dump continues after a buffer.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    More,
    Done,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("sock_diag reply: {what}"),
    )
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Adds the sockets of one received datagram of the dump numbered `seq` to `counts` (only
/// ports already in it). `Done` at NLMSG_DONE, or at an ACK; the kernel's errno as the error
/// of NLMSG_ERROR or of a failed DONE; `InvalidData` for a malformed or foreign message.
fn parse_dump(buf: &[u8], seq: u32, counts: &mut HashMap<u16, PortSockets>) -> io::Result<Parsed> {
    let mut rest = buf;
    while !rest.is_empty() {
        if rest.len() < NLMSG_HDRLEN {
            return Err(invalid("truncated header"));
        }
        let len = u32_at(rest, NLMSG_LEN_AT) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(invalid("message length out of bounds"));
        }
        if u32_at(rest, NLMSG_SEQ_AT) != seq {
            return Err(invalid("unexpected sequence number"));
        }
        let kind = u16::from_ne_bytes([rest[NLMSG_TYPE_AT], rest[NLMSG_TYPE_AT + 1]]);
        let body = &rest[NLMSG_HDRLEN..len];
        match i32::from(kind) {
            libc::NLMSG_DONE => {
                // The payload is the dump's result (0, or a negative errno).
                return match body.get(..4).map(|_| u32_at(body, 0) as i32) {
                    Some(e) if e < 0 => Err(io::Error::from_raw_os_error(e.saturating_neg())),
                    _ => Ok(Parsed::Done),
                };
            }
            libc::NLMSG_ERROR => {
                if body.len() < 4 {
                    return Err(invalid("truncated error"));
                }
                return match u32_at(body, 0) as i32 {
                    0 => Ok(Parsed::Done),
                    e => Err(io::Error::from_raw_os_error(e.saturating_abs())),
                };
            }
            _ if kind == SOCK_DIAG_BY_FAMILY => {
                if body.len() < MSG_LEN {
                    return Err(invalid("truncated inet_diag_msg"));
                }
                let family = i32::from(body[MSG_FAMILY_AT]);
                if family != libc::AF_INET && family != libc::AF_INET6 {
                    return Err(invalid("unexpected address family"));
                }
                let port = u16::from_be_bytes([body[MSG_SPORT_AT], body[MSG_SPORT_AT + 1]]);
                if let Some(c) = counts.get_mut(&port) {
                    match body[MSG_STATE_AT] {
                        // Saturating: whatever the bytes say, parsing does not panic.
                        TCP_ESTABLISHED => c.established = c.established.saturating_add(1),
                        TCP_LISTEN => {
                            c.listeners = c.listeners.saturating_add(1);
                            let queue = u32_at(body, MSG_RQUEUE_AT);
                            c.accept_queue = c.accept_queue.saturating_add(queue);
                            c.backlog = c.backlog.saturating_add(u32_at(body, MSG_WQUEUE_AT));
                        }
                        // Not asked for.
                        _ => {}
                    }
                }
            }
            // NLMSG_NOOP and anything newer.
            _ => {}
        }
        // The last message of a datagram may lack its padding.
        rest = &rest[nlmsg_align(len).min(rest.len())..];
    }
    Ok(Parsed::More)
}

/// A sock_diag netlink socket in the calling thread's network namespace.
fn open() -> io::Result<OwnedFd> {
    crate::rtnl::socket(libc::SOCK_DGRAM, libc::NETLINK_SOCK_DIAG)
}

/// Sends one request to the kernel (an unconnected netlink socket sends to port id 0).
fn send(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    loop {
        #[allow(
            unsafe_code,
            reason = "a libc call; the SAFETY comment below says why it is sound"
        )]
        // SAFETY: the kernel reads msg.len() bytes from a live slice.
        let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        match n {
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n if n as usize == msg.len() => return Ok(()),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short netlink send",
                ));
            }
        }
    }
}

/// Receives one datagram into `buf`: its length, or `None` for one that did not come from the
/// kernel (any local process may send to our port id; that is dropped, not parsed).
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        #[allow(
            unsafe_code,
            reason = "a libc call; the SAFETY comment below says why it is sound"
        )]
        // SAFETY: all-zero is a valid sockaddr_nl (plain integers).
        let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // MSG_TRUNC: the datagram's real length, to detect one larger than `buf`.
        #[allow(
            unsafe_code,
            reason = "a libc call; the SAFETY comment below says why it is sound"
        )]
        // SAFETY: the kernel writes at most buf.len() bytes into buf and at most from_len
        // bytes into from, both live and exclusively borrowed for the call.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                (&raw mut from).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = n as usize;
        if n > buf.len() {
            return Err(invalid("datagram larger than the receive buffer"));
        }
        if n == 0 {
            // The kernel always ends a dump with NLMSG_DONE; an empty datagram would loop.
            return Err(invalid("empty datagram"));
        }
        return Ok((from.nl_pid == 0).then_some(n));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests {
    use std::{
        io::ErrorKind,
        net::{SocketAddr, TcpListener, TcpStream},
        time::{Duration, Instant},
    };

    use super::*;

    /// One netlink message (padded) of the dump `seq`.
    fn msg(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + body.len();
        let mut b = vec![0u8; NLMSG_HDRLEN];
        b[NLMSG_LEN_AT..][..4].copy_from_slice(&(len as u32).to_ne_bytes());
        b[NLMSG_TYPE_AT..][..2].copy_from_slice(&kind.to_ne_bytes());
        b[NLMSG_SEQ_AT..][..4].copy_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(body);
        b.resize(nlmsg_align(len), 0);
        b
    }

    fn diag(family: i32, state: u8, sport: u16, rqueue: u32, wqueue: u32) -> Vec<u8> {
        let mut b = vec![0u8; MSG_LEN];
        b[MSG_FAMILY_AT] = family as u8;
        b[MSG_STATE_AT] = state;
        b[MSG_SPORT_AT..][..2].copy_from_slice(&sport.to_be_bytes());
        b[MSG_RQUEUE_AT..][..4].copy_from_slice(&rqueue.to_ne_bytes());
        b[MSG_WQUEUE_AT..][..4].copy_from_slice(&wqueue.to_ne_bytes());
        b
    }

    fn diag_msg(family: i32, state: u8, sport: u16, rqueue: u32, wqueue: u32) -> Vec<u8> {
        msg(
            SOCK_DIAG_BY_FAMILY,
            1,
            &diag(family, state, sport, rqueue, wqueue),
        )
    }

    fn error_msg(errno: i32) -> Vec<u8> {
        // nlmsgerr: the error, then the request's header.
        let mut body = errno.to_ne_bytes().to_vec();
        body.extend_from_slice(&request(libc::AF_INET as u8, 1, &[])[..NLMSG_HDRLEN]);
        msg(libc::NLMSG_ERROR as u16, 1, &body)
    }

    fn counts(ports: &[u16]) -> HashMap<u16, PortSockets> {
        ports
            .iter()
            .map(|&port| {
                (
                    port,
                    PortSockets {
                        port,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn request_asks_for_a_tcp_dump_of_listen_and_established() {
        let r = request(libc::AF_INET6 as u8, 7, &[]);
        assert_eq!(r.len(), 72);
        assert_eq!(u32_at(&r, 0), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 0x301);
        assert_eq!(u32_at(&r, 8), 7);
        assert_eq!(
            &r[16..20],
            &[libc::AF_INET6 as u8, libc::IPPROTO_TCP as u8, 0, 0]
        );
        assert_eq!(u32_at(&r, 20), 0x402);
        assert!(r[24..].iter().all(|&b| b == 0));
    }

    /// The kernel's `inet_diag_bc_run`, for the ops `bytecode` emits.
    fn run(bc: &[u8], sport: u16) -> bool {
        let mut at = 0usize;
        let mut len = bc.len() as isize;
        while len > 0 {
            let (code, yes, no) = (
                bc[at],
                bc[at + 1],
                u16::from_ne_bytes([bc[at + 2], bc[at + 3]]),
            );
            let port = || u16::from_ne_bytes([bc[at + 6], bc[at + 7]]);
            let ok = match code {
                BC_JMP => false,
                BC_S_GE => sport >= port(),
                BC_S_LE => sport <= port(),
                _ => panic!("op {code}"),
            };
            let step = if ok { isize::from(yes) } else { no as isize };
            len -= step;
            at = (at as isize + step) as usize;
        }
        len == 0
    }

    /// The kernel's audit (`inet_diag_bc_audit` with `valid_cc`): every jump lands on the
    /// chain of `yes` steps or 4 past the end.
    fn audit(bc: &[u8]) {
        let total = bc.len() as isize;
        let chain: Vec<isize> = {
            let (mut v, mut len, mut at) = (Vec::new(), total, 0usize);
            while len > 0 {
                v.push(len);
                let yes = isize::from(bc[at + 1]);
                len -= yes;
                at += yes as usize;
            }
            assert_eq!(len, 0, "the yes chain ends exactly at the end");
            v
        };
        for &len in &chain {
            let at = (total - len) as usize;
            let no = u16::from_ne_bytes([bc[at + 2], bc[at + 3]]) as isize;
            let min = if bc[at] == BC_JMP { 4 } else { 8 };
            assert!(no >= min && no <= len + 4 && no % 4 == 0, "no {no} at {at}");
            assert!(no >= len || chain.contains(&(len - no)), "no {no} at {at}");
        }
    }

    #[test]
    fn the_filter_matches_exactly_the_ports_asked_for() {
        assert!(bytecode(&[]).is_empty());
        for ports in [&[8080][..], &[22, 8080], &[8081, 80, 443, 80, 65535, 0]] {
            let bc = bytecode(ports);
            audit(&bc);
            for sport in [
                0, 1, 21, 22, 23, 79, 80, 81, 442, 443, 444, 8079, 8080, 8081, 65534, 65535,
            ] {
                assert_eq!(run(&bc, sport), ports.contains(&sport), "{ports:?} {sport}");
            }
        }
        let r = request(libc::AF_INET as u8, 1, &bytecode(&[80]));
        assert_eq!(r.len(), 72 + 4 + 16);
        assert_eq!(u32_at(&r, 0), 92);
        assert_eq!(&r[72..76], &[20, 0, 1, 0]);
    }

    #[test]
    fn counts_by_local_port_over_a_multi_message_buffer() {
        let mut buf = diag_msg(libc::AF_INET, TCP_LISTEN, 8080, 3, 128);
        buf.extend(diag_msg(libc::AF_INET6, TCP_LISTEN, 8080, 1, 64));
        buf.extend(diag_msg(libc::AF_INET, TCP_ESTABLISHED, 8080, 0, 0));
        buf.extend(diag_msg(libc::AF_INET6, TCP_ESTABLISHED, 8080, 0, 0));
        buf.extend(diag_msg(libc::AF_INET, TCP_ESTABLISHED, 22, 0, 0));
        // A state the request did not ask for is ignored, not miscounted.
        buf.extend(diag_msg(libc::AF_INET, 3, 8080, 0, 0));
        let mut c = counts(&[8080, 9090]);
        assert_eq!(parse_dump(&buf, 1, &mut c).unwrap(), Parsed::More);
        let expected = PortSockets {
            port: 8080,
            established: 2,
            listeners: 2,
            accept_queue: 4,
            backlog: 192,
        };
        assert_eq!(c[&8080], expected);
        assert_eq!(
            c[&9090],
            PortSockets {
                port: 9090,
                ..Default::default()
            }
        );
        assert!(!c.contains_key(&22));
    }

    #[test]
    fn follows_nlmsg_align_past_attributes() {
        // A message with 3 bytes of attributes: nlmsg_len 91, next message at 92.
        let mut body = diag(libc::AF_INET, TCP_ESTABLISHED, 443, 0, 0);
        body.extend_from_slice(&[0xff; 3]);
        let mut buf = msg(SOCK_DIAG_BY_FAMILY, 1, &body);
        assert_eq!(buf.len(), 92);
        buf.extend(diag_msg(libc::AF_INET, TCP_ESTABLISHED, 443, 0, 0));
        // The last one without its padding.
        let mut last = msg(SOCK_DIAG_BY_FAMILY, 1, &body);
        last.truncate(91);
        buf.extend(last);
        let mut c = counts(&[443]);
        assert_eq!(parse_dump(&buf, 1, &mut c).unwrap(), Parsed::More);
        assert_eq!(c[&443].established, 3);
    }

    #[test]
    fn done_ends_the_dump_and_carries_its_error() {
        let mut buf = diag_msg(libc::AF_INET, TCP_ESTABLISHED, 80, 0, 0);
        buf.extend(msg(libc::NLMSG_DONE as u16, 1, &0i32.to_ne_bytes()));
        let mut c = counts(&[80]);
        assert_eq!(parse_dump(&buf, 1, &mut c).unwrap(), Parsed::Done);
        assert_eq!(c[&80].established, 1);
        // Older kernels send DONE without a payload.
        assert_eq!(
            parse_dump(&msg(libc::NLMSG_DONE as u16, 1, &[]), 1, &mut c).unwrap(),
            Parsed::Done
        );
        let failed = msg(libc::NLMSG_DONE as u16, 1, &(-libc::ENOBUFS).to_ne_bytes());
        let e = parse_dump(&failed, 1, &mut c).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOBUFS));
    }

    #[test]
    fn error_message_is_the_kernels_errno() {
        let mut c = counts(&[80]);
        let e = parse_dump(&error_msg(-libc::EPERM), 1, &mut c).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        // After sockets of the same datagram.
        let mut buf = diag_msg(libc::AF_INET, TCP_ESTABLISHED, 80, 0, 0);
        buf.extend(error_msg(-libc::EINVAL));
        let e = parse_dump(&buf, 1, &mut c).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        // Error 0 is an acknowledgement: nothing more comes.
        assert_eq!(parse_dump(&error_msg(0), 1, &mut c).unwrap(), Parsed::Done);
    }

    #[test]
    fn rejects_truncated_and_malformed_messages() {
        let invalid = |buf: &[u8]| {
            let e = parse_dump(buf, 1, &mut counts(&[80])).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
        };
        let whole = diag_msg(libc::AF_INET, TCP_LISTEN, 80, 0, 0);
        // Cut inside the body: nlmsg_len beyond the buffer.
        invalid(&whole[..40]);
        // Cut inside the header of a second message.
        let mut two = whole.clone();
        two.extend_from_slice(&whole[..10]);
        invalid(&two);
        // nlmsg_len shorter than a header (0 would never advance).
        let mut zero = whole.clone();
        zero[..4].copy_from_slice(&0u32.to_ne_bytes());
        invalid(&zero);
        // A sock_diag message too short for inet_diag_msg.
        invalid(&msg(SOCK_DIAG_BY_FAMILY, 1, &[0; 20]));
        // An error without its errno.
        invalid(&msg(libc::NLMSG_ERROR as u16, 1, &[0; 2]));
        // A reply to another request.
        invalid(&msg(
            SOCK_DIAG_BY_FAMILY,
            2,
            &diag(libc::AF_INET, TCP_LISTEN, 80, 0, 0),
        ));
        // Not an inet family.
        invalid(&diag_msg(libc::AF_UNIX, TCP_LISTEN, 80, 0, 0));
    }

    #[test]
    fn no_ports_no_syscalls() {
        assert_eq!(port_sockets(&[]).unwrap(), Vec::new());
    }

    /// Polls `f` until it returns `Some`, for up to 10 s.
    fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(t) = f() {
                return t;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stats(port: u16) -> PortSockets {
        let s = port_sockets(&[port]).unwrap();
        assert_eq!(s.len(), 1);
        s[0]
    }

    /// A blocking listener with `backlog` (std has no backlog argument; tokio's socket builder
    /// has, and needs a runtime only to create the listener). Port 0 lets the kernel choose.
    fn listen(addr: SocketAddr, backlog: u32, reuseport: bool) -> io::Result<TcpListener> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let l = rt.block_on(async {
            let s = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            s.set_reuseport(reuseport)?;
            s.bind(addr)?;
            s.listen(backlog)?.into_std()
        })?;
        l.set_nonblocking(false)?;
        Ok(l)
    }

    #[test]
    fn counts_a_real_listener_its_queue_and_its_connections() {
        const K: u32 = 3;
        let l = listen("127.0.0.1:0".parse().unwrap(), 4, false).unwrap();
        let port = l.local_addr().unwrap().port();
        // Sockets of other programs can share the port on another address (a connection
        // from eth0's address that a bind picked it for); count relative to before.
        let before = stats(port);
        assert_eq!(
            (before.listeners, before.accept_queue, before.backlog),
            (1, 0, 4),
            "{before:?}"
        );
        let base = before.established;

        let clients: Vec<TcpStream> = (0..K)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        // Not accepted yet: the server side of each is ESTABLISHED in the kernel, with the
        // listener's port as its local port, and counted. The clients' local ports are others.
        let queued = poll("the connections in the accept queue", || {
            let s = stats(port);
            (s.accept_queue == K && s.established == base + K).then_some(s)
        });
        assert_eq!((queued.listeners, queued.backlog), (1, 4), "{queued:?}");
        let client_port = clients[0].local_addr().unwrap().port();
        let client_side = stats(client_port);
        assert!(client_side.established >= 1, "{client_side:?}");
        assert_eq!(client_side.listeners, 0, "{client_side:?}");

        let accepted: Vec<TcpStream> = (0..K).map(|_| l.accept().unwrap().0).collect();
        let after = poll("an empty accept queue", || {
            let s = stats(port);
            (s.accept_queue == 0).then_some(s)
        });
        assert_eq!(after.established, base + K, "{after:?}");

        // The clients close: the server sides move to CLOSE_WAIT and stop counting.
        drop(clients);
        poll("the connections to leave ESTABLISHED", || {
            (stats(port).established == base).then_some(())
        });
        drop(accepted);
    }

    #[test]
    fn counts_across_a_multi_part_dump() {
        // 301 sockets of about 120 bytes each (inet_diag_msg and attributes the kernel adds
        // unasked): more than one datagram holds (the first at most NLMSG_GOODSIZE, 8 KiB; the
        // others about 32 KiB). Seen under strace: 3720 + 32364 + 1364 bytes, then DONE.
        const K: u32 = 150;
        let l = listen("127.0.0.1:0".parse().unwrap(), 256, false).unwrap();
        let port = l.local_addr().unwrap().port();
        let base = stats(port).established;
        let clients: Vec<TcpStream> = (0..K)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        poll("every connection in the accept queue", || {
            let s = stats(port);
            (s.accept_queue == K && s.established == base + K).then_some(())
        });
        drop((clients, l));
    }

    #[test]
    fn sums_reuseport_listeners() {
        let a = listen("127.0.0.1:0".parse().unwrap(), 4, true).unwrap();
        let addr = a.local_addr().unwrap();
        let b = listen(addr, 5, true).unwrap();
        let base = stats(addr.port()).established;
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // The kernel spreads the connections over both queues; the sum is what is reported.
        let s = poll("the connections in the accept queues", || {
            let s = stats(addr.port());
            (s.accept_queue == 3).then_some(s)
        });
        assert_eq!(
            (s.listeners, s.backlog, s.established),
            (2, 9, base + 3),
            "{s:?}"
        );
        drop((clients, a, b));
    }

    #[test]
    fn sums_ipv4_and_ipv6_listeners() {
        let v4 = listen("127.0.0.1:0".parse().unwrap(), 4, false).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = match listen(
            SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)),
            2,
            false,
        ) {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::AddrNotAvailable => {
                eprintln!("SKIPPED sums_ipv4_and_ipv6_listeners: no IPv6 loopback ({e})");
                return;
            }
            Err(e) => panic!("listen on [::1]:{port}: {e}"),
        };
        let base = stats(port).established;
        let c4 = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let c6 = TcpStream::connect(("::1", port)).unwrap();
        let s = poll("a connection in each accept queue", || {
            let s = stats(port);
            (s.accept_queue == 2 && s.established == base + 2).then_some(s)
        });
        assert_eq!((s.listeners, s.backlog), (2, 6), "{s:?}");
        // Duplicated ports repeat the same numbers.
        assert_eq!(port_sockets(&[port, port]).unwrap(), vec![s, s]);
        drop((c4, c6, v4, v6));
    }
}
