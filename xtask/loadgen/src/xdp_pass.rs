//! A two-instruction XDP program (`return XDP_PASS`) attached to a client's end of a veth
//! pair, so that frames the node's XDP program sends back with XDP_TX reach the client.
//!
//! Why: a native XDP_TX on a veth hands the frame to the peer's XDP ring; the peer only
//! processes that ring when its NAPI runs and is kicked for XDP frames, which it is when
//! the peer has an XDP program of its own. On the demo topology with kernel 6.18, switching
//! GRO on at the peer (which also enables its NAPI) was not enough: the gate's RSTs were
//! counted as sent (`rx_queue_0_xdp_tx`) but never arrived, and clients waited out their
//! connect timeouts. With this program on the peer they arrive within a fraction of a
//! millisecond. It passes every frame unchanged, so nothing else about the client changes.
//!
//! Loaded with the raw `bpf(2)` syscall (no object file, no dependency) and attached with a
//! BPF link; dropping the [`PassLink`] detaches it.

use std::os::fd::{FromRawFd as _, OwnedFd};

use anyhow::{Result, bail};

use traffic_testkit::netns::Netns;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_PASS: i32 = 2;

/// An attached XDP_PASS program; detached on drop.
#[derive(Debug)]
pub struct PassLink {
    _link: OwnedFd,
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<OwnedFd> {
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: bpf(2) with a zero-initialised attribute buffer of the size we pass; every
    // pointer in it (instructions, license) points to memory that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: a new descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put_u32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Load `return XDP_PASS` and attach it in native mode to `iface` in `ns`.
pub fn attach(ns: &Netns, iface: &str) -> Result<PassLink> {
    let iface = iface.to_owned();
    ns.run(move || -> Result<PassLink> {
        // mov64 r0, XDP_PASS; exit
        let mut insns = [0u8; 16];
        insns[0] = 0xb7;
        insns[4..8].copy_from_slice(&XDP_PASS.to_ne_bytes());
        insns[8] = 0x95;
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put_u32(&mut attr, 4, 2);
        put_u64(&mut attr, 8, insns.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        attr[48..48 + 9].copy_from_slice(b"demo_pass");
        put_u32(&mut attr, 68, BPF_XDP);
        let prog = bpf(BPF_PROG_LOAD, &mut attr)
            .map_err(|e| anyhow::anyhow!("load the XDP_PASS program: {e}"))?;
        let name = std::ffi::CString::new(iface.clone())?;
        #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
        // SAFETY: if_nametoindex on a NUL-terminated name we own.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {iface}");
        }
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, std::os::fd::AsRawFd::as_raw_fd(&prog) as u32);
        put_u32(&mut attr, 4, ifindex);
        put_u32(&mut attr, 8, BPF_XDP);
        put_u32(&mut attr, 12, XDP_FLAGS_DRV_MODE);
        let link = bpf(BPF_LINK_CREATE, &mut attr)
            .map_err(|e| anyhow::anyhow!("attach XDP_PASS to {iface}: {e}"))?;
        Ok(PassLink { _link: link })
    })?
}
