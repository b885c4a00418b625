//! The reading end of the program's verdict events ([`traffic_common::map_names::WATCH`]):
//! the ring buffer, made async with tokio's `AsyncFd` (the ring's fd polls readable when
//! the program has submitted records).

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use traffic_common::WatchEvent;

/// The ring buffer of verdict events, for one reader.
pub struct WatchRing {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl WatchRing {
    /// Wrap the ring; needs a tokio runtime (the fd is registered with its reactor).
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        #[allow(unsafe_code, reason = "AsyncFd::register; its SAFETY comment follows")]
        // SAFETY: the ring owns its map's fd, which stays open and is never replaced while
        // the AsyncFd holds the ring (it is dropped with it).
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)? };
        Ok(Self { fd })
    }

    /// Wait until records may be there, then move up to `max` of them into `out`
    /// (records of another size, which this build did not write, are skipped).
    pub async fn read(&mut self, out: &mut Vec<WatchEvent>, max: usize) -> std::io::Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else {
                // Drained: wait for the next wake-up.
                guard.clear_ready();
                return Ok(());
            };
            if let Ok(ev) = bytemuck::try_pod_read_unaligned::<WatchEvent>(&item) {
                out.push(ev);
            }
            n += 1;
        }
        // More may be waiting: the readiness stays, the next call reads on at once.
        Ok(())
    }

    /// Discard every record there now (left over from before the last watcher left).
    pub fn discard(&mut self) -> usize {
        let ring = self.fd.get_mut();
        let mut n = 0;
        while ring.next().is_some() {
            n += 1;
        }
        n
    }
}
