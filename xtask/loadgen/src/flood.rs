//! A two-namespace veth lab for floods: a generator namespace and a receiver namespace
//! joined by one veth pair, and the instruments that measure the receiver: the CPU time of
//! its NAPI thread, the frames it processed and what reached its UDP layer.
//!
//! Why this shape (see the "Measuring packet rates" notes of the toolchain document): the
//! generator is an XDP program run with BPF_PROG_TEST_RUN in live-frames mode on the
//! generator's veth end; it returns XDP_TX, so its frames enter the receiver's veth ring as
//! xdp_frames, and the receiver processes them in its NAPI poll, where XDP (and then
//! the stack, nftables ingress, iptables) runs. With threaded NAPI the whole receive path
//! runs in one kernel thread; pinned to its own CPU, its CPU time (`/proc/PID/schedstat`, in
//! ns) divided by the frames it processed is the receive cost per packet.
//!
//! Addressing: the receiver is 198.19.0.1/30 and 2001:db8:ffff::1/64, the generator
//! 198.19.0.2/30 and 2001:db8:ffff::2/64, static neighbours, no ARP/ND; the receiver routes
//! 198.18.0.0/15 and 2001:db8::/32 back to the generator, which forwards nothing. Nothing
//! leaves the two namespaces, which are deleted on drop.

use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use traffic_testkit::netns::Netns;

/// The receiver's IPv4 address.
pub const RCV_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The generator's IPv4 address.
pub const GEN_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
/// The receiver's IPv6 address.
pub const RCV_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
/// The generator's IPv6 address.
pub const GEN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 2);
/// The generator's MAC address (source of every flood frame).
pub const GEN_MAC: [u8; 6] = [0x02, 0x7f, 0xbe, 0x00, 0x00, 0x01];
/// The receiver's MAC address (destination of every flood frame).
pub const RCV_MAC: [u8; 6] = [0x02, 0x7f, 0xbe, 0x00, 0x00, 0x02];

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The generator and receiver namespaces and their veth pair.
#[derive(Debug)]
pub struct FloodNet {
    /// Run tag in every name.
    pub tag: String,
    /// Generator-side interface (in `sender`).
    pub gen_if: String,
    /// Receiver-side interface (in `receiver`).
    pub rcv_if: String,
    /// The generator's namespace.
    pub sender: Netns,
    /// The receiver's namespace.
    pub receiver: Netns,
}

impl FloodNet {
    /// Create both namespaces and the veth pair. `tag` (≤ 5 characters) must be unique per
    /// run: it names the namespaces (`trfb<tag>-gen`, `trfb<tag>-rcv`) and the interfaces
    /// (`bf<tag>g`, `bf<tag>r`, short so the NAPI thread's name keeps them whole).
    pub fn create(tag: &str) -> Result<FloodNet> {
        if tag.len() > 5 {
            bail!("flood tag `{tag}` is longer than 5 characters");
        }
        let sender = Netns::create(&format!("trfb{tag}-gen"))?;
        let receiver = Netns::create(&format!("trfb{tag}-rcv"))?;
        let net = FloodNet {
            tag: tag.to_owned(),
            gen_if: format!("bf{tag}g"),
            rcv_if: format!("bf{tag}r"),
            sender,
            receiver,
        };
        net.wire().context("wire the flood namespaces")?;
        Ok(net)
    }

    fn wire(&self) -> Result<()> {
        for ns in [&self.sender, &self.receiver] {
            for (k, v) in [
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.default.router_solicitations", "0"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.ip_forward", "0"),
                ("net.ipv6.conf.all.forwarding", "0"),
            ] {
                ns.sysctl(k, v)?;
            }
        }
        let (g, r) = (&self.gen_if, &self.rcv_if);
        let (rmac, gmac) = (mac_str(RCV_MAC), mac_str(GEN_MAC));
        self.sender
            .veth_pair((g, &gmac), (r, &rmac), &self.receiver)?;
        self.sender
            .addresses_up(g, &format!("{GEN_V4}/30"), &format!("{GEN_V6}/64"))?;
        self.receiver
            .addresses_up(r, &format!("{RCV_V4}/30"), &format!("{RCV_V6}/64"))?;
        for addr in [RCV_V4.to_string(), RCV_V6.to_string()] {
            self.sender.permanent_neighbour(&addr, &rmac, g)?;
        }
        for addr in [GEN_V4.to_string(), GEN_V6.to_string()] {
            self.receiver.permanent_neighbour(&addr, &gmac, r)?;
        }
        // Replies (ICMP errors for the stack's unreachable port) go back to the generator,
        // like a node's default route; the generator drops them (it forwards nothing).
        self.receiver.ip(&[
            "route",
            "add",
            "198.18.0.0/15",
            "via",
            &GEN_V4.to_string(),
            "dev",
            r,
        ])?;
        self.receiver.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8::/32",
            "via",
            &GEN_V6.to_string(),
            "dev",
            r,
        ])?;
        Ok(())
    }

    /// Give the receiver a NAPI instance whatever is attached (GRO on: veth only polls with
    /// NAPI when XDP or GRO is on, and the generator's frames need it) and make it threaded,
    /// so its receive work runs in one kernel thread; returns that thread's pid.
    ///
    /// The sysfs write goes through `ip netns exec`, which mounts the namespace's own /sys
    /// (a thread that only entered the namespace still sees the caller's sysfs).
    pub fn threaded_napi(&self) -> Result<u32> {
        self.receiver.gro_on(&self.rcv_if)?;
        let write = format!("echo 1 > /sys/class/net/{}/threaded", self.rcv_if);
        let out = Command::new("ip")
            .args(["netns", "exec", self.receiver.name(), "sh", "-c", &write])
            .stdin(Stdio::null())
            .output()
            .context("spawn ip netns exec")?;
        if !out.status.success() {
            bail!(
                "{write} in {}: {}",
                self.receiver.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.napi_thread()
    }

    /// The pid of the receiver's NAPI kernel thread (`napi/<rcv_if>-<id>`), polled for up to
    /// a second after threaded NAPI was switched on.
    pub fn napi_thread(&self) -> Result<u32> {
        let prefix = format!("napi/{}-", self.rcv_if);
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let mut found = Vec::new();
            for entry in std::fs::read_dir("/proc").context("read /proc")? {
                let Ok(entry) = entry else { continue };
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim_end().starts_with(&prefix) {
                    found.push(pid);
                }
            }
            match found.as_slice() {
                [pid] => return Ok(*pid),
                [] if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                [] => bail!("no NAPI thread `{prefix}*`: threaded NAPI did not take effect"),
                many => bail!("several NAPI threads `{prefix}*`: {many:?} (one rx queue expected)"),
            }
        }
    }

    /// Counters of the receiver's interface.
    pub fn rcv_link(&self) -> Result<LinkStats> {
        link_stats(&self.receiver, &self.rcv_if)
    }

    /// Counters of the generator's interface.
    pub fn gen_link(&self) -> Result<LinkStats> {
        link_stats(&self.sender, &self.gen_if)
    }

    /// The receiver's UDP counters (`/proc/net/snmp` as seen from its namespace).
    pub fn rcv_udp(&self) -> Result<UdpCounters> {
        let text = self
            .receiver
            .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))?
            .context("read /proc/thread-self/net/snmp in the receiver")?;
        let text6 = self
            .receiver
            .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp6"))?
            .context("read /proc/thread-self/net/snmp6 in the receiver")?;
        UdpCounters::parse(&text, &text6)
    }

    /// Wait until the receiver's processed-frame count stops moving (the frames still in
    /// its ring are done), polled every 5 ms for at most `deadline`; returns the final stats.
    pub fn settle(&self, deadline: Duration) -> Result<LinkStats> {
        let end = Instant::now() + deadline;
        let mut last = self.rcv_link()?;
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let now = self.rcv_link()?;
            if now.rx_packets == last.rx_packets || Instant::now() > end {
                return Ok(now);
            }
            last = now;
        }
    }
}

impl FloodNet {
    /// When the receiver last processed a frame: its frame count (`/proc/net/dev` read from
    /// a thread in its namespace, every millisecond) is polled until it has not moved for
    /// 50 ms (at most `deadline`), and the moment it was first seen at its final value is
    /// returned — an upper bound, within about a millisecond, on the last frame's handling.
    pub fn idle_since(&self, deadline: Duration) -> Result<Instant> {
        let iface = format!("{}:", self.rcv_if);
        self.receiver.run(move || -> Result<Instant> {
            let read = || -> Result<u64> {
                let text = std::fs::read_to_string("/proc/thread-self/net/dev")
                    .context("read /proc/thread-self/net/dev")?;
                text.lines()
                    .find_map(|l| {
                        let l = l.trim_start();
                        l.strip_prefix(iface.as_str())
                            .and_then(|rest| rest.split_whitespace().nth(1))
                            .and_then(|v| v.parse().ok())
                    })
                    .with_context(|| format!("no {iface} in /proc/net/dev"))
            };
            let end = Instant::now() + deadline;
            let mut last = read()?;
            let mut since = Instant::now();
            while since.elapsed() < Duration::from_millis(50) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
                let now = read()?;
                if now != last {
                    last = now;
                    since = Instant::now();
                }
            }
            Ok(since)
        })?
    }
}

/// Interface counters (`ip -s link`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames the interface processed (on veth: every frame its NAPI poll consumed,
    /// whatever XDP decided).
    pub rx_packets: u64,
    /// Frames dropped on receive (on veth: also frames the peer could not queue because
    /// the ring was full).
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

fn link_stats(ns: &Netns, iface: &str) -> Result<LinkStats> {
    let out = ns
        .command("ip")?
        .args(["-j", "-s", "link", "show", "dev", iface])
        .stdin(Stdio::null())
        .output()
        .context("spawn ip -s link")?;
    if !out.status.success() {
        bail!(
            "ip -s link show {iface}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parse ip -j -s link output")?;
    let s = &v[0]["stats64"];
    let get = |dir: &str, k: &str| s[dir][k].as_u64().unwrap_or(0);
    Ok(LinkStats {
        rx_packets: get("rx", "packets"),
        rx_dropped: get("rx", "dropped"),
        tx_packets: get("tx", "packets"),
        tx_dropped: get("tx", "dropped"),
    })
}

/// UDP counters of a namespace, IPv4 and IPv6 added up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams delivered to a socket.
    pub in_datagrams: u64,
    /// Datagrams for a port nobody listens on.
    pub no_ports: u64,
    /// Datagrams dropped with errors (checksum, socket buffer full).
    pub in_errors: u64,
}

impl UdpCounters {
    /// Parse `/proc/net/snmp` (the `Udp:` header and value lines) and `/proc/net/snmp6`.
    pub fn parse(snmp: &str, snmp6: &str) -> Result<UdpCounters> {
        let mut lines = snmp.lines().filter(|l| l.starts_with("Udp: "));
        let (Some(head), Some(vals)) = (lines.next(), lines.next()) else {
            bail!("no Udp lines in /proc/net/snmp");
        };
        let field = |name: &str| -> u64 {
            head.split_whitespace()
                .position(|h| h == name)
                .and_then(|i| vals.split_whitespace().nth(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let field6 = |name: &str| -> u64 {
            snmp6
                .lines()
                .find_map(|l| {
                    let mut it = l.split_whitespace();
                    (it.next() == Some(name)).then(|| it.next().and_then(|v| v.parse().ok()))
                })
                .flatten()
                .unwrap_or(0)
        };
        Ok(UdpCounters {
            in_datagrams: field("InDatagrams") + field6("Udp6InDatagrams"),
            no_ports: field("NoPorts") + field6("Udp6NoPorts"),
            in_errors: field("InErrors") + field6("Udp6InErrors"),
        })
    }

    /// Datagrams that reached the UDP layer: everything a filter in front of it passed.
    pub fn reached(&self) -> u64 {
        self.in_datagrams + self.no_ports + self.in_errors
    }

    /// Counter differences `self - before`.
    pub fn since(&self, before: &UdpCounters) -> UdpCounters {
        UdpCounters {
            in_datagrams: self.in_datagrams.wrapping_sub(before.in_datagrams),
            no_ports: self.no_ports.wrapping_sub(before.no_ports),
            in_errors: self.in_errors.wrapping_sub(before.in_errors),
        }
    }
}

/// CPU time of a thread in ns (`/proc/PID/schedstat`, first field: time on CPU).
pub fn cpu_time_ns(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("parse {path}: `{}`", text.trim()))
}

/// Restrict thread `pid` (0: the calling thread) to the given CPUs.
pub fn set_affinity(pid: u32, cpus: &[usize]) -> Result<()> {
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; sched_setaffinity
    // reads it and affects only the thread named by pid.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(
            pid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("sched_setaffinity({pid}, {cpus:?})"));
    }
    Ok(())
}

/// The calling thread inside a network namespace until dropped, then back in the one it
/// came from. For work that must happen in the namespace but borrows local state (attaching
/// XDP by interface name, test runs whose frames enter an interface of the namespace).
pub struct NetnsGuard {
    home: File,
}

/// Move the calling thread into `ns` (see [`NetnsGuard`]).
pub fn enter(ns: &Netns) -> Result<NetnsGuard> {
    let home = File::open("/proc/thread-self/ns/net").context("open this thread's netns")?;
    let target = File::open(ns.path()).with_context(|| format!("open {}", ns.path().display()))?;
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: setns on a namespace fd we opened; affects only the calling thread.
    let r = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("enter netns {}", ns.name()));
    }
    Ok(NetnsGuard { home })
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
        // SAFETY: as in `enter`, with the fd of the namespace the thread came from.
        let r = unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        // A thread stuck in a namespace about to be deleted would act on the wrong network:
        // there is no sane way to continue.
        assert!(
            r == 0,
            "cannot return to the original network namespace: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name).context("interface name contains NUL")?;
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("no interface {name}"));
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_counters_from_snmp() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 2 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams\nUdp: 10 20 3 4\n\
                    UdpLite: InDatagrams NoPorts\nUdpLite: 99 99\n";
        let snmp6 = "Udp6InDatagrams                 \t5\nUdp6NoPorts\t7\nUdp6InErrors 1\n";
        let c = UdpCounters::parse(snmp, snmp6).expect("parse");
        assert_eq!(
            c,
            UdpCounters {
                in_datagrams: 15,
                no_ports: 27,
                in_errors: 4
            }
        );
        assert_eq!(c.reached(), 46);
    }

    #[test]
    fn macs_render() {
        assert_eq!(mac_str(GEN_MAC), "02:7f:be:00:00:01");
    }
}
