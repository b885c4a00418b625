//! systemd notifications (sd_notify protocol) over `$NOTIFY_SOCKET`; no-ops when the daemon
//! is not started by systemd.

use std::{os::unix::net::UnixDatagram, time::Duration};

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let result = if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// READY=1 (start-up or reload finished).
pub fn ready() {
    send("READY=1\nSTATUS=enforcing");
}

/// RELOADING=1 with the monotonic timestamp systemd's `Type=notify-reload` expects.
pub fn reloading() {
    let usec = crate::dataplane::monotonic_ns() / 1000;
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// STOPPING=1.
pub fn stopping() {
    send("STOPPING=1");
}

/// WATCHDOG=1.
pub fn watchdog() {
    send("WATCHDOG=1");
}

/// Half the watchdog timeout systemd asked for, if it asked (`$WATCHDOG_USEC`, for our PID).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
