//! Attaching the TC egress program (the passive breaker signal) on old and new kernels.
//!
//! From Linux 6.6 it is a TCX link: a bpf link owned by this process, gone when it exits.
//! Before 6.6 TC programs attach as netlink filters, which need a `clsact` qdisc on the
//! interface and stay in the kernel after the process dies. So on old kernels trafficd
//! creates the qdisc when missing, removes filters of ours a crashed run left before adding
//! its own (so they never pile up), and removes its filter on detach. An empty `clsact`
//! qdisc is left in place: it may be shared with other tools (tc, cilium), and without
//! filters it costs nothing.
//!
//! `TRAFFIC_TC_BACKEND=netlink` (or `tcx`) overrides the choice; the tests use it to run
//! the old-kernel path on a new kernel.

use aya::{
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttach, TcError},
    },
    util::KernelVersion,
};
use traffic_common::EGRESS_PROGRAM_NAME;

/// How the egress program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcBackend {
    /// A TCX bpf link (Linux ≥ 6.6): nothing outlives the process.
    Tcx,
    /// A netlink filter on the `clsact` qdisc (Linux < 6.6): outlives the process.
    Netlink,
}

/// The environment variable that overrides the backend (`tcx` or `netlink`).
pub const BACKEND_ENV: &str = "TRAFFIC_TC_BACKEND";

/// The backend for a kernel `release` (major, minor), unless `forced` names one.
pub fn choose(release: Option<(u8, u8)>, forced: Option<&str>) -> Result<TcBackend, String> {
    match forced {
        Some("tcx") => return Ok(TcBackend::Tcx),
        Some("netlink") => return Ok(TcBackend::Netlink),
        Some(other) => {
            return Err(format!(
                "{BACKEND_ENV}={other}: expected `tcx` or `netlink` (or unset: by kernel version)"
            ));
        }
        None => {}
    }
    // An unreadable version: netlink works on every kernel we support.
    Ok(match release {
        Some(v) if v >= (6, 6) => TcBackend::Tcx,
        _ => TcBackend::Netlink,
    })
}

/// The backend for this machine (see [`choose`]).
pub fn detect() -> Result<TcBackend, String> {
    let release = KernelVersion::current().ok().map(|v| {
        if v >= KernelVersion::new(6, 6, 0) {
            (6, 6)
        } else {
            (0, 0)
        }
    });
    let forced = std::env::var(BACKEND_ENV).ok();
    choose(release, forced.as_deref())
}

/// Attach `program` at egress of `iface` with `backend`.
pub fn attach(
    program: &mut SchedClassifier,
    iface: &std::ffi::CStr,
    backend: TcBackend,
) -> Result<SchedClassifierLinkId, String> {
    match backend {
        TcBackend::Tcx => program
            .attach(
                iface,
                TcAttach::Tcx {
                    attach_type: TcAttachType::Egress,
                    order: Default::default(),
                },
            )
            .map_err(|e| format!("TCX attach: {}", super::chain(&e))),
        TcBackend::Netlink => {
            match tc::qdisc_add_clsact(iface) {
                Ok(()) => {}
                Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(format!("adding the clsact qdisc: {}", super::chain(&e)));
                }
            }
            // Filters of ours left by a run that crashed: netlink filters outlive it.
            match tc::qdisc_detach_program(iface, TcAttachType::Egress.into(), EGRESS_PROGRAM_NAME)
            {
                Ok(()) => {
                    tracing::info!(interface = ?iface, "removed a TC egress filter left by an earlier run")
                }
                Err(TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(interface = ?iface, error = %super::chain(&e),
                    "cannot look for TC egress filters left by an earlier run"),
            }
            program
                .attach(
                    iface,
                    TcAttach::Netlink {
                        parent: TcAttachType::Egress.into(),
                        options: NlOptions::default(),
                    },
                )
                .map_err(|e| format!("netlink TC attach: {}", super::chain(&e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcx_from_6_6_netlink_before_and_the_override_wins() {
        assert_eq!(choose(Some((6, 6)), None), Ok(TcBackend::Tcx));
        assert_eq!(choose(Some((6, 18)), None), Ok(TcBackend::Tcx));
        assert_eq!(choose(Some((6, 5)), None), Ok(TcBackend::Netlink));
        assert_eq!(choose(Some((5, 15)), None), Ok(TcBackend::Netlink));
        assert_eq!(choose(None, None), Ok(TcBackend::Netlink));
        assert_eq!(
            choose(Some((6, 18)), Some("netlink")),
            Ok(TcBackend::Netlink)
        );
        assert_eq!(choose(Some((5, 10)), Some("tcx")), Ok(TcBackend::Tcx));
        assert!(
            choose(None, Some("auto"))
                .unwrap_err()
                .contains("TRAFFIC_TC_BACKEND")
        );
    }
}
