//! The daemon's file descriptors: [`raise_soft_limit`] at start, and [`Budget`]: how many
//! the listeners may hold so that the control plane always has [`RESERVED`] of its own.
//!
//! The control plane's descriptors are few but vital: maps, programs and links (a few
//! dozen), the sock_diag and netlink sockets, one socket per running probe, the config file
//! on reload, the log. When the listeners took them all (issue 12: 1,100 idle connections
//! under systemd's soft limit of 1024), probes failed and opened breakers and sock_diag went
//! blind. The listeners' caps are therefore derived from the limit, never the other way round.

/// Descriptors kept for the control plane, whatever the listeners do. 256: the maps,
/// programs and links of the object (about 40), 64 concurrent probes, netlink, files, and
/// room to spare.
pub const RESERVED: u64 = 256;
/// The caps when the limit allows them: enough for a scraper and a few dashboards, and for
/// every trafficctl an operator could run at once.
pub const METRICS_MAX: usize = 64;
pub const ADMIN_MAX: usize = 32;

/// Raise the soft RLIMIT_NOFILE to the hard one (systemd's default soft limit is 1024 for
/// select(2)'s sake, which nothing here uses). Returns the soft limit now in force.
pub fn raise_soft_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: getrlimit writes one rlimit into `lim`, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
        // SAFETY: setrlimit reads one rlimit from `raised`, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(lim.rlim_max);
    }
    Ok(lim.rlim_cur)
}

/// The soft RLIMIT_NOFILE in force.
pub fn soft_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: getrlimit writes one rlimit into `lim`, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// The listeners' connection caps under a soft limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub metrics: usize,
    pub admin: usize,
}

impl Budget {
    /// Caps such that `metrics + admin + 2 + RESERVED <= soft` (the 2: a connection accepted
    /// before it is refused, on each listener), two thirds to metrics when the limit is
    /// short; at least one each, so the daemon stays reachable on a tiny limit (the reserve
    /// then shrinks instead, and trafficd warns).
    pub fn for_soft_limit(soft: u64) -> Self {
        // Anything above the full caps changes nothing: clamp before the arithmetic.
        let spare = soft.saturating_sub(RESERVED + 2).min(1 << 20) as usize;
        let metrics = METRICS_MAX.min(spare * 2 / 3).max(1);
        let admin = ADMIN_MAX.min(spare - spare * 2 / 3).max(1);
        Self { metrics, admin }
    }

    /// Whether the limit could not give the reserve and the full caps.
    pub fn is_short(self) -> bool {
        self.metrics < METRICS_MAX || self.admin < ADMIN_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_reserve_fit_the_soft_limit() {
        for soft in [0, 100, 258, 300, 400, 1024, 16384, u64::MAX] {
            let b = Budget::for_soft_limit(soft);
            assert!(b.metrics >= 1 && b.admin >= 1, "{soft}: {b:?}");
            assert!(
                b.metrics <= METRICS_MAX && b.admin <= ADMIN_MAX,
                "{soft}: {b:?}"
            );
            if soft >= RESERVED + 4 {
                assert!(
                    (b.metrics + b.admin + 2) as u64 + RESERVED <= soft,
                    "{soft}: {b:?}"
                );
            }
        }
        assert_eq!(
            Budget::for_soft_limit(1024),
            Budget {
                metrics: METRICS_MAX,
                admin: ADMIN_MAX
            }
        );
        assert!(!Budget::for_soft_limit(1024).is_short());
        assert!(Budget::for_soft_limit(300).is_short());
    }

    #[test]
    fn raising_keeps_the_hard_limit() {
        let soft = raise_soft_limit().unwrap();
        assert_eq!(soft, soft_limit().unwrap());
    }
}
