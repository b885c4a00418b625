//! A throwaway topology: one `node` namespace (where trafficd runs and services listen) and
//! one namespace per client host, each joined to the node by a veth pair.
//!
//! Addressing (all inside 198.18.0.0/15 and 2001:db8::/32, nothing routes out):
//! - the node's service addresses are [`SERVICE_V4`] and [`SERVICE_V6`] (on its loopback);
//! - link `k` uses 198.19.k.0/30 and 2001:db8:ffff:k::/64 (node .1/::1, host .2/::2);
//! - each host owns a source range (e.g. 198.18.1.0/24 and 2001:db8:1::/64) routed to its
//!   loopback ("AnyIP"), so it can send from any address in it; the node routes the range
//!   back over the link. Neighbours are static and DAD is off, so the links carry no ARP,
//!   ND or router solicitations of their own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

/// The node's IPv4 service address.
pub const SERVICE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 1);
/// The node's IPv6 service address.
pub const SERVICE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);

/// A client host to create.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// Short name (letters and digits, at most 6 characters).
    pub name: String,
    /// IPv4 source range (network, prefix length).
    pub v4: (Ipv4Addr, u8),
    /// IPv6 source range (network, prefix length).
    pub v6: (Ipv6Addr, u8),
}

impl HostSpec {
    pub fn new(name: &str, v4: (Ipv4Addr, u8), v6: (Ipv6Addr, u8)) -> Self {
        Self {
            name: name.to_owned(),
            v4,
            v6,
        }
    }
}

/// A created client host.
#[derive(Debug)]
pub struct Host {
    pub spec: HostSpec,
    pub ns: Netns,
    /// The node-side interface of this host's link (where XDP attaches).
    pub node_if: String,
    /// The host-side interface.
    pub host_if: String,
    /// MAC of the node-side interface (the destination of crafted frames from the host).
    pub node_mac: [u8; 6],
    /// MAC of the host-side interface.
    pub host_mac: [u8; 6],
}

impl Host {
    /// The `i`-th IPv4 address of the host's source range (`i` counted from the network
    /// address + 1).
    pub fn v4(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.spec.v4.0) + 1 + i)
    }

    /// The `i`-th IPv6 address of the host's source range.
    pub fn v6(&self, i: u32) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.spec.v6.0) + 1 + u128::from(i))
    }

    /// The `i`-th address of either family.
    pub fn addr(&self, v6: bool, i: u32) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6(i))
        } else {
            IpAddr::V4(self.v4(i))
        }
    }
}

/// The node and its client hosts. Dropping it deletes every namespace (and with them the
/// veth pairs).
#[derive(Debug)]
pub struct Topology {
    /// Run tag used in every name, so concurrent or crashed runs never collide.
    pub tag: String,
    pub hosts: Vec<Host>,
    // Declared last: dropped after the hosts.
    pub node: Netns,
}

fn quiet_ipv6(ns: &Netns) -> Result<()> {
    for (k, v) in [
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv6.conf.default.addr_gen_mode", "1"),
        ("net.ipv6.conf.default.router_solicitations", "0"),
        ("net.ipv6.conf.all.forwarding", "0"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv4.ip_nonlocal_bind", "1"),
        ("net.ipv6.ip_nonlocal_bind", "1"),
    ] {
        ns.sysctl(k, v)?;
    }
    Ok(())
}

fn mac_bytes(k: usize, side: u8) -> [u8; 6] {
    [0x02, 0x7f, (k >> 8) as u8, k as u8, 0, side]
}

fn mac(k: usize, side: u8) -> String {
    let b = mac_bytes(k, side);
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Topology {
    /// Build the node and the hosts. `tag` must be short (≤ 5 characters) and unique per
    /// run; interface names are `<tag>n<k>` (node side) and `<tag>h<k>` (host side).
    pub fn build(tag: &str, hosts: &[HostSpec]) -> Result<Topology> {
        if tag.len() > 5 || hosts.len() > 250 {
            bail!("tag too long or too many hosts");
        }
        let node = Netns::create(&format!("trf{tag}-node"))?;
        quiet_ipv6(&node)?;
        node.ip(&["addr", "add", &format!("{SERVICE_V4}/32"), "dev", "lo"])?;
        node.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{SERVICE_V6}/128"),
            "dev",
            "lo",
            "nodad",
        ])?;
        let mut topo = Topology {
            tag: tag.to_owned(),
            hosts: Vec::new(),
            node,
        };
        for (i, spec) in hosts.iter().enumerate() {
            let k = i + 1;
            let host = topo
                .add_host(k, spec)
                .with_context(|| format!("create host {}", spec.name))?;
            topo.hosts.push(host);
        }
        Ok(topo)
    }

    fn add_host(&self, k: usize, spec: &HostSpec) -> Result<Host> {
        let ns = Netns::create(&format!("trf{}-{}", self.tag, spec.name))?;
        quiet_ipv6(&ns)?;
        let node_if = format!("{}n{k}", self.tag);
        let host_if = format!("{}h{k}", self.tag);
        let (nmac, hmac) = (mac(k, 1), mac(k, 2));
        self.node
            .veth_pair((&node_if, &nmac), (&host_if, &hmac), &ns)?;
        let (n4, h4) = (format!("198.19.{k}.1"), format!("198.19.{k}.2"));
        let (n6, h6) = (
            format!("2001:db8:ffff:{k:x}::1"),
            format!("2001:db8:ffff:{k:x}::2"),
        );
        let node = &self.node;
        node.addresses_up(&node_if, &format!("{n4}/30"), &format!("{n6}/64"))?;
        ns.addresses_up(&host_if, &format!("{h4}/30"), &format!("{h6}/64"))?;
        // Static neighbours: no ARP/ND on the links.
        node.permanent_neighbour(&h4, &hmac, &node_if)?;
        node.permanent_neighbour(&h6, &hmac, &node_if)?;
        ns.permanent_neighbour(&n4, &nmac, &host_if)?;
        ns.permanent_neighbour(&n6, &nmac, &host_if)?;
        // The host's source range is local to it (AnyIP) and routed back by the node.
        let r4 = format!("{}/{}", spec.v4.0, spec.v4.1);
        let r6 = format!("{}/{}", spec.v6.0, spec.v6.1);
        ns.ip(&["route", "add", "local", &r4, "dev", "lo"])?;
        ns.ip(&["-6", "route", "add", "local", &r6, "dev", "lo"])?;
        node.ip(&["route", "add", &r4, "via", &h4, "dev", &node_if])?;
        node.ip(&["-6", "route", "add", &r6, "via", &h6, "dev", &node_if])?;
        // The host reaches the test ranges through the node only; there is no default route.
        ns.ip(&["route", "add", "198.18.0.0/15", "via", &n4, "dev", &host_if])?;
        ns.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8::/32",
            "via",
            &n6,
            "dev",
            &host_if,
        ])?;
        Ok(Host {
            spec: spec.clone(),
            ns,
            node_if,
            host_if,
            node_mac: mac_bytes(k, 1),
            host_mac: mac_bytes(k, 2),
        })
    }

    /// Node-side interfaces, where trafficd attaches.
    pub fn node_interfaces(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.node_if.clone()).collect()
    }

    /// A host by name.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.spec.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Whether any XDP program is attached to a node-side interface.
    pub fn xdp_attached(&self, iface: &str) -> Result<bool> {
        let out = self
            .node
            .command("ip")?
            .args(["-d", "link", "show", "dev", iface])
            .output()
            .context("ip link show")?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.contains("prog/xdp") || text.contains(" xdp"))
    }
}

/// A short tag unique to this process and call.
pub fn unique_tag() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:03x}{}", std::process::id() % 0xfff, n % 10)
}
