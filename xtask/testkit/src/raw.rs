//! Crafted frames onto a link: an `AF_PACKET` socket in a host's namespace writes whole
//! Ethernet frames ([`crate::packet::Frame`]) to its interface, so tests can send what no
//! socket API sends — spoofed sources, bare ACKs, RSTs and FINs without a connection.
//! Bounded: the caller passes the frames; nothing loops on its own.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

/// An `AF_PACKET` socket bound to one interface of the calling thread's namespace.
struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

#[allow(
    unsafe_code,
    reason = "socket, if_nametoindex and sendto are libc calls; each has its SAFETY comment"
)]
impl PacketSocket {
    fn open(iface: &str) -> std::io::Result<Self> {
        let name = std::ffi::CString::new(iface).map_err(std::io::Error::other)?;
        // SAFETY: a NUL-terminated name we own.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: plain socket(2); the fd is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            fd,
            ifindex: ifindex as i32,
        })
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and address live across the call; lengths are theirs.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Send `frames` out of `iface` in `ns`, at most `rate_pps` per second (0 = as fast as
/// the socket takes them), giving up at `deadline`; how many were sent and how long that
/// took. A full socket buffer (ENOBUFS) is retried after a short pause.
pub fn send_frames(
    ns: &Netns,
    iface: &str,
    frames: Vec<Vec<u8>>,
    rate_pps: f64,
    deadline: Duration,
) -> Result<(usize, Duration)> {
    let iface = iface.to_owned();
    ns.run(move || -> Result<(usize, Duration)> {
        let s = PacketSocket::open(&iface).with_context(|| format!("packet socket on {iface}"))?;
        let start = Instant::now();
        let mut sent = 0;
        for f in &frames {
            if rate_pps > 0.0 {
                let due = start + Duration::from_secs_f64(sent as f64 / rate_pps);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            loop {
                if start.elapsed() > deadline {
                    return Ok((sent, start.elapsed()));
                }
                match s.send(f) {
                    Ok(()) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(e) => bail!("send on {iface}: {e}"),
                }
            }
            sent += 1;
        }
        Ok((sent, start.elapsed()))
    })?
}
