//! Interface hot-plug: a task that listens to rtnetlink link events (`RTNLGRP_LINK`) and
//! has the engine re-check its interfaces ([`crate::engine::Core::sync_links`]) whenever
//! one appears, changes or goes away.
//!
//! A deleted interface takes the XDP and TC links with it; when an interface of the config
//! comes back (same name, new index) the engine attaches again, within one event (tens of
//! ms). The events only say "look again": the engine compares every configured name's
//! index with the one it attached to, so a lost event (the socket's buffer overran,
//! `ENOBUFS`) costs nothing but a re-check. If the socket cannot be opened, the task falls
//! back to polling every [`POLL_FALLBACK`].
//!
//! Hand-rolled (one socket, one message header field read) rather than a netlink crate: the
//! workspace has none, and this needs no request, only a subscription.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
    time::Duration,
};

use tokio::io::unix::AsyncFd;
use tracing::warn;

use super::Shared;

/// Re-check period when no netlink socket could be opened.
pub const POLL_FALLBACK: Duration = Duration::from_secs(1);

/// Re-check period next to the events, in case an event was missed in a way `ENOBUFS`
/// does not report.
const SAFETY_NET: Duration = Duration::from_secs(10);

/// Watch link events and re-sync the engine's interfaces until the task is aborted.
pub async fn watch(shared: Arc<Shared>) {
    let mut events = match LinkEvents::open() {
        Ok(e) => Some(e),
        Err(e) => {
            warn!(error = %e, every = ?POLL_FALLBACK,
                "cannot subscribe to link events; polling the interfaces instead");
            None
        }
    };
    let mut tick = tokio::time::interval(if events.is_some() {
        SAFETY_NET
    } else {
        POLL_FALLBACK
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // An interface may have come or gone between the start-up attach and the subscription.
    shared.lock().sync_links();
    loop {
        match events.as_mut() {
            Some(ev) => tokio::select! {
                r = ev.changed() => if let Err(e) = r {
                    warn!(error = %e, every = ?POLL_FALLBACK,
                        "link events failed; polling the interfaces instead");
                    events = None;
                    tick = tokio::time::interval(POLL_FALLBACK);
                },
                _ = tick.tick() => {}
            },
            None => {
                tick.tick().await;
            }
        }
        shared.lock().sync_links();
    }
}

/// A netlink socket subscribed to link events.
pub struct LinkEvents {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

impl LinkEvents {
    /// Open and subscribe (needs no privilege).
    pub fn open() -> io::Result<Self> {
        #[allow(
            unsafe_code,
            reason = "a libc call; the SAFETY comment below says why it is sound"
        )]
        // SAFETY: socket(2) takes no pointers.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(
            unsafe_code,
            reason = "taking ownership of a descriptor; the SAFETY comment says why"
        )]
        // SAFETY: `raw` is a descriptor socket(2) just returned to us and nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        #[allow(
            unsafe_code,
            reason = "a zeroed C struct; the SAFETY comment says why it is sound"
        )]
        // SAFETY: sockaddr_nl is plain integers, for which all-zero is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        #[allow(
            unsafe_code,
            reason = "a libc call; the SAFETY comment below says why it is sound"
        )]
        // SAFETY: `addr` is a valid sockaddr_nl and the length given is its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(
            unsafe_code,
            reason = "tokio's registration is unsafe; the SAFETY comment says why it is sound"
        )]
        // SAFETY: `fd` is an open descriptor that the AsyncFd owns from here on, so it stays
        // open and the same for the AsyncFd's lifetime.
        let fd = unsafe {
            AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
                .map_err(io::Error::from)?
        };
        Ok(Self {
            fd,
            buf: vec![0; 32 * 1024],
        })
    }

    /// Wait until at least one interface appeared, changed or went away (or events were
    /// lost), draining everything queued so a burst of events is one re-check.
    /// Cancel-safe: nothing is read across an await.
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut any = false;
            loop {
                match recv(guard.get_inner(), &mut self.buf) {
                    Ok(n) => any |= has_link_message(&self.buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    // The kernel dropped events for us: re-check everything.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => any = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if any {
                return Ok(());
            }
        }
    }
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    #[allow(
        unsafe_code,
        reason = "a libc call; the SAFETY comment below says why it is sound"
    )]
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we own.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Whether a datagram of netlink messages holds an `RTM_NEWLINK` or `RTM_DELLINK`.
fn has_link_message(mut buf: &[u8]) -> bool {
    // struct nlmsghdr: u32 len, u16 type, u16 flags, u32 seq, u32 pid (host order).
    const HDR: usize = 16;
    while buf.len() >= HDR {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if kind == libc::RTM_NEWLINK || kind == libc::RTM_DELLINK {
            return true;
        }
        let step = (len + 3) & !3;
        if len < HDR || step > buf.len() {
            break;
        }
        buf = &buf[step..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, body: usize) -> Vec<u8> {
        let len = 16 + body;
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.resize(len, 0);
        m.resize((len + 3) & !3, 0);
        m
    }

    #[test]
    fn finds_link_messages_past_other_messages() {
        assert!(has_link_message(&msg(libc::RTM_DELLINK, 16)));
        let mut two = msg(libc::RTM_NEWADDR, 5);
        assert!(!has_link_message(&two));
        two.extend(msg(libc::RTM_NEWLINK, 16));
        assert!(has_link_message(&two));
        assert!(!has_link_message(&[0; 8]), "short datagram");
        let mut bad = msg(libc::RTM_NEWADDR, 0);
        bad[0] = 4; // a length below the header: stop, do not loop
        bad.extend(msg(libc::RTM_NEWLINK, 0));
        assert!(!has_link_message(&bad));
    }

    #[tokio::test]
    async fn subscribes_without_privilege() {
        // Opening and binding to a multicast group needs no capability.
        LinkEvents::open().unwrap();
    }
}
