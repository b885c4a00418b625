//! Interface hot-plug: a task that listens to rtnetlink link events (`RTNLGRP_LINK`) and
//! has the engine re-check its interfaces ([`crate::engine::Core::sync_links`]) whenever
//! one appears, changes or goes away.
//!
//! A deleted interface takes the XDP and TC links with it; when an interface of the config
//! comes back (same name, new index) the engine attaches again, within one event (tens of
//! ms). The events only say "look again": the engine compares every configured name's
//! index with the one it attached to, so a lost event (the socket's buffer overran,
//! `ENOBUFS`) costs nothing but a re-check. If the socket cannot be opened, the task falls
//! back to polling every [`POLL_FALLBACK`]. The socket is [`crate::rtnl`]'s.

use std::{io, os::fd::OwnedFd, sync::Arc, time::Duration};

use tokio::io::unix::AsyncFd;
use tracing::warn;

use super::Shared;
use crate::rtnl;

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

/// The messages that mean an interface appeared, changed or went away.
const LINK_MESSAGES: [u16; 2] = [libc::RTM_NEWLINK, libc::RTM_DELLINK];

impl LinkEvents {
    /// Open and subscribe (needs no privilege).
    pub fn open() -> io::Result<Self> {
        let fd = rtnl::subscribe(libc::RTMGRP_LINK as u32)?;
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
            let any = rtnl::drain(guard.get_inner(), &mut self.buf, &LINK_MESSAGES)?;
            guard.clear_ready();
            if any {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribes_without_privilege() {
        // Opening and binding to a multicast group needs no capability.
        LinkEvents::open().unwrap();
    }
}
