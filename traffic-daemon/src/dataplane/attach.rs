//! Attaching the loaded program to interfaces: XDP links (owned, or pinned for
//! `on_exit = "keep"` and taken over atomically on restart) and the TC egress program.

use std::path::{Path, PathBuf};

use aya::programs::{
    XdpMode,
    links::{FdLink, PinnedLink},
    tc::SchedClassifierLinkId,
    xdp::{XdpLink, XdpLinkId},
};

use super::{
    AttachedMode, DataplaneError, chain,
    kernel::{Kernel, egress_program, kernel_program},
};
use crate::config::AttachMode;

/// One attachment of the program to an interface.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub mode: AttachedMode,
    link: Option<LinkHandle>,
    /// The TC egress link (owned: the passive signal is only read by a running daemon).
    egress: Option<SchedClassifierLinkId>,
}

/// How we hold a link.
#[derive(Debug)]
pub(super) enum LinkHandle {
    /// Owned by the program object: detached when dropped (a crash fails open).
    Owned(XdpLinkId),
    /// Pinned on bpffs: survives this process until the pin is removed.
    Pinned { fd: FdLink, path: PathBuf },
}

impl Kernel {
    /// Pin path of the link on `iface` (kept only with `on_exit = "keep"`).
    pub fn link_pin_path(&self, iface: &str) -> PathBuf {
        self.pin_dir.join(format!("link_{iface}"))
    }

    /// Attach to `iface`. A link pinned by an earlier run (on_exit = "keep") is taken over
    /// atomically, so enforcement never lapses across a restart. With `pin`, the link is
    /// pinned right away, so it keeps enforcing even if this process is killed.
    pub(super) fn attach_iface(
        &mut self,
        iface: &str,
        mode: AttachMode,
        pin: bool,
    ) -> Result<AttachedMode, DataplaneError> {
        let err = |detail: String| DataplaneError::Attach {
            iface: iface.to_owned(),
            detail,
        };
        let path = self.link_pin_path(iface);
        let (id, attached) = match self.take_over_pinned(iface, &path) {
            Some(id) => (id, AttachedMode::Native),
            None => self.attach_fresh(iface, mode)?,
        };
        let link = if pin {
            let program = kernel_program(&mut self.ebpf)?;
            let link = program.take_link(id).map_err(|e| err(chain(&e)))?;
            let fd = FdLink::try_from(link).map_err(|e| {
                err(format!(
                    "link cannot be pinned (netlink attach): {}",
                    chain(&e)
                ))
            })?;
            let fd: FdLink = if path.exists() {
                // Taken over from the pin, which still names this link.
                fd
            } else {
                fd.pin(&path)
                    .map_err(|e| err(format!("pin {}: {}", path.display(), chain(&e))))?
                    .into()
            };
            LinkHandle::Pinned { fd, path }
        } else {
            let _ = std::fs::remove_file(&path);
            LinkHandle::Owned(id)
        };
        self.attachments.push(Attachment {
            iface: iface.to_owned(),
            mode: attached,
            link: Some(link),
            egress: None,
        });
        // The passive breaker signal: replies the node sends from upstream ports.
        let name =
            std::ffi::CString::new(iface).map_err(|_| err("interface name contains NUL".into()))?;
        let backend = self.tc_backend;
        let egress = egress_program(&mut self.ebpf)?;
        let id = super::tc::attach(egress, name.as_c_str(), backend).map_err(err)?;
        if let Some(a) = self.attachments.last_mut() {
            a.egress = Some(id);
        }
        Ok(attached)
    }

    /// Replace the program on a link pinned by an earlier run, if there is one.
    fn take_over_pinned(&mut self, iface: &str, path: &Path) -> Option<XdpLinkId> {
        if !path.exists() {
            return None;
        }
        let program = kernel_program(&mut self.ebpf).ok()?;
        let taken = PinnedLink::from_pin(path)
            .map_err(|e| chain(&e))
            .and_then(|pinned| XdpLink::try_from(FdLink::from(pinned)).map_err(|e| chain(&e)))
            .and_then(|link| program.attach_to_link(link).map_err(|e| chain(&e)));
        match taken {
            Ok(id) => {
                tracing::info!(interface = %iface, "took over the pinned link: enforcement never lapsed");
                Some(id)
            }
            Err(e) => {
                tracing::warn!(interface = %iface, error = %e, "ignoring stale link pin");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    fn attach_fresh(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<(XdpLinkId, AttachedMode), DataplaneError> {
        let attempts: &[(XdpMode, AttachedMode)] = match mode {
            AttachMode::Auto => &[
                (XdpMode::Driver, AttachedMode::Native),
                (XdpMode::Skb, AttachedMode::Generic),
            ],
            AttachMode::Native => &[(XdpMode::Driver, AttachedMode::Native)],
            AttachMode::Generic => &[(XdpMode::Skb, AttachedMode::Generic)],
        };
        let name = std::ffi::CString::new(iface).map_err(|_| DataplaneError::Attach {
            iface: iface.to_owned(),
            detail: "interface name contains NUL".into(),
        })?;
        let mut last = String::new();
        for (xdp_mode, attached) in attempts {
            let program = kernel_program(&mut self.ebpf)?;
            match program.attach(name.as_c_str(), *xdp_mode) {
                Ok(id) => return Ok((id, *attached)),
                Err(e) => last = chain(&e),
            }
        }
        Err(DataplaneError::Attach {
            iface: iface.to_owned(),
            detail: format!("attach failed: {last}"),
        })
    }

    /// Current attachments.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Pin every owned link so it outlives this process (on_exit = "keep").
    pub(super) fn pin_links(&mut self) -> Result<(), DataplaneError> {
        for i in 0..self.attachments.len() {
            let Some(LinkHandle::Owned(id)) = self.attachments[i].link.take() else {
                continue;
            };
            let iface = self.attachments[i].iface.clone();
            let path = self.link_pin_path(&iface);
            let err = |detail: String| DataplaneError::Attach {
                iface: iface.clone(),
                detail,
            };
            let program = kernel_program(&mut self.ebpf)?;
            let link = program.take_link(id).map_err(|e| err(chain(&e)))?;
            let fd = FdLink::try_from(link).map_err(|e| {
                err(format!(
                    "link cannot be pinned (netlink attach): {}",
                    chain(&e)
                ))
            })?;
            let pinned = fd
                .pin(&path)
                .map_err(|e| err(format!("pin {}: {}", path.display(), chain(&e))))?;
            self.attachments[i].link = Some(LinkHandle::Pinned {
                fd: pinned.into(),
                path,
            });
        }
        Ok(())
    }

    /// Detach from every interface (pinned links too with `include_pinned`). TC egress
    /// links always go.
    pub(super) fn detach_links(&mut self, include_pinned: bool) {
        let ifaces: Vec<String> = self.attachments.iter().map(|a| a.iface.clone()).collect();
        for iface in ifaces {
            self.detach_iface(&iface, include_pinned);
        }
    }

    /// Detach the links on `iface` (its pinned XDP link only with `include_pinned`). On a
    /// vanished interface the links are already defunct; closing them frees them.
    pub(super) fn detach_iface(&mut self, iface: &str, include_pinned: bool) {
        let mut owned = Vec::new();
        let mut egress_ids = Vec::new();
        for a in self.attachments.iter_mut().filter(|a| a.iface == iface) {
            egress_ids.extend(a.egress.take());
            match a.link.take() {
                Some(LinkHandle::Owned(id)) => owned.push(id),
                Some(LinkHandle::Pinned { fd, path }) if include_pinned => {
                    let _ = std::fs::remove_file(&path);
                    drop(fd);
                }
                other => a.link = other,
            }
        }
        if let Ok(program) = kernel_program(&mut self.ebpf) {
            for id in owned {
                if let Err(e) = program.detach(id) {
                    tracing::debug!(interface = %iface, error = %chain(&e), "XDP detach failed");
                }
            }
        }
        if let Ok(egress) = egress_program(&mut self.ebpf) {
            for id in egress_ids {
                if let Err(e) = egress.detach(id) {
                    tracing::debug!(interface = %iface, error = %chain(&e), "TC detach failed");
                }
            }
        }
        self.attachments.retain(|a| a.link.is_some());
    }
}
