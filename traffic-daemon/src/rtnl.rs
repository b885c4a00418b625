//! Netlink sockets ([`socket`], sock_diag's too) and rtnetlink subscriptions: a socket bound
//! to multicast groups, whose messages only say "look again" (an interface or an address
//! appeared, changed or went away). The subscriptions serve the interface hot-plug task
//! (`serve::links`) and the node-address tracker (`dataplane::local`), so neither polls.
//!
//! Hand-rolled (one socket, one message header field read) rather than a netlink crate: the
//! workspace has none, and a subscription needs no request.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// A netlink socket of `kind` (`SOCK_RAW`, `SOCK_DGRAM`, with `SOCK_*` flags) for
/// `protocol` (`NETLINK_ROUTE`, `NETLINK_SOCK_DIAG`), in the calling thread's network
/// namespace. Close-on-exec is always set.
pub fn socket(kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    #[allow(
        unsafe_code,
        reason = "a libc call; the SAFETY comment below says why it is sound"
    )]
    // SAFETY: socket(2) takes no pointers.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, kind | libc::SOCK_CLOEXEC, protocol) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(
        unsafe_code,
        reason = "taking ownership of a descriptor; the SAFETY comment says why"
    )]
    // SAFETY: `raw` is a descriptor socket(2) just returned to us and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A non-blocking `NETLINK_ROUTE` socket subscribed to `groups` (`RTMGRP_*` bits). Needs
/// no privilege.
pub fn subscribe(groups: u32) -> io::Result<OwnedFd> {
    let fd = socket(libc::SOCK_RAW | libc::SOCK_NONBLOCK, libc::NETLINK_ROUTE)?;
    #[allow(
        unsafe_code,
        reason = "a zeroed C struct; the SAFETY comment says why it is sound"
    )]
    // SAFETY: sockaddr_nl is plain integers, for which all-zero is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = groups;
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
    Ok(fd)
}

/// One datagram into `buf` (`WouldBlock` when none is queued; `ENOBUFS` when the kernel
/// dropped messages for this socket).
pub fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
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

/// Read every queued datagram. `Ok(true)` if one held a message of a type in `kinds`, or
/// messages were lost (`ENOBUFS`: look again at everything); `Ok(false)` if none did.
pub fn drain(fd: &OwnedFd, buf: &mut [u8], kinds: &[u16]) -> io::Result<bool> {
    let mut any = false;
    loop {
        match recv(fd, buf) {
            Ok(n) => any |= has_message(&buf[..n], kinds),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(any),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => any = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether a datagram of netlink messages holds a message of a type in `kinds`.
pub fn has_message(mut buf: &[u8], kinds: &[u16]) -> bool {
    // struct nlmsghdr: u32 len, u16 type, u16 flags, u32 seq, u32 pid (host order).
    const HDR: usize = 16;
    while buf.len() >= HDR {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if kinds.contains(&kind) {
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

    const LINK: [u16; 2] = [libc::RTM_NEWLINK, libc::RTM_DELLINK];

    #[test]
    fn finds_messages_past_other_messages() {
        assert!(has_message(&msg(libc::RTM_DELLINK, 16), &LINK));
        let mut two = msg(libc::RTM_NEWADDR, 5);
        assert!(!has_message(&two, &LINK));
        two.extend(msg(libc::RTM_NEWLINK, 16));
        assert!(has_message(&two, &LINK));
        assert!(!has_message(&[0; 8], &LINK), "short datagram");
        let mut bad = msg(libc::RTM_NEWADDR, 0);
        bad[0] = 4; // a length below the header: stop, do not loop
        bad.extend(msg(libc::RTM_NEWLINK, 0));
        assert!(!has_message(&bad, &LINK));
    }

    #[test]
    fn subscribes_without_privilege_and_drains_an_empty_socket() {
        // Opening and binding to a multicast group needs no capability.
        let fd = subscribe(libc::RTMGRP_LINK as u32).unwrap();
        let mut buf = vec![0; 4096];
        assert!(!drain(&fd, &mut buf, &LINK).unwrap(), "nothing queued");
    }
}
