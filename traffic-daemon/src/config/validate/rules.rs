//! `[[rules]]` and `[[ports]]`.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    ops::Range,
};

use toml::Spanned;

use super::{Check, class_index, parse_cidr};
use crate::config::{
    ClassSpec, PortSpec, Protocol, RuleAction, RuleSpec,
    raw::{RawPort, RawRule},
};

/// Every `[[rules]]` table, each CIDR of a list its own rule (same action and class).
///
/// Exact duplicates (the same prefix twice, IPv4 and its IPv4-mapped IPv6 form alike) are
/// errors wherever they are; overlapping prefixes are not: the longest prefix wins, which is
/// how a narrower rule carves an exception out of a wider one.
pub(super) fn rules(
    c: &mut Check,
    raw: &[Spanned<RawRule>],
    classes: &[ClassSpec],
) -> Vec<RuleSpec> {
    let mut rules = Vec::new();
    let mut seen_cidrs = HashSet::new();
    let limit = traffic_common::RULES_ENTRIES as usize;
    let mut count = RuleCount {
        total: raw.iter().map(|r| r.get_ref().cidr.get_ref().len()).sum(),
        lists: raw.iter().any(|r| r.get_ref().cidr.get_ref().len() != 1),
        entries: 0,
    };
    for (i, r) in raw.iter().enumerate() {
        let key = format!("rules[{i}]");
        let rr = r.get_ref();
        let Some(cidrs) = rule_cidrs(c, r, &key, &mut seen_cidrs, &mut count) else {
            continue;
        };
        let class = match &rr.class {
            Some(n) => match class_index(classes, n.get_ref()) {
                Some(ci) => Some(ci),
                None => {
                    c.err(
                        n.span(),
                        format!("{key}.class"),
                        format!("no class named `{}`", n.get_ref()),
                    );
                    None
                }
            },
            None => {
                if rr.action == RuleAction::Limit {
                    c.err(
                        r.span(),
                        format!("{key}.class"),
                        "a `limit` rule needs a class",
                    );
                }
                None
            }
        };
        rules.extend(cidrs.into_iter().map(|(addr, prefix_len)| RuleSpec {
            addr,
            prefix_len,
            action: rr.action,
            class,
        }));
    }
    if count.total == limit && needs_implicit_v4_rule(&seen_cidrs) {
        // The plan adds one rule pinning `::ffff:0:0/96` (see `plan::desired`): that rule
        // takes a map entry too, so a full table of `[[rules]]` no longer fits.
        if let Some(last) = raw.last() {
            c.err(
                last.span(),
                format!("rules[{}]", raw.len() - 1),
                format!(
                    "{limit} rules plus the implicit IPv4 rule an IPv6 rule covering \
                     ::ffff:0:0/96 needs (no IPv4 /0 rule), but the kernel's rules map \
                     holds at most {limit}"
                ),
            );
        }
    }
    rules
}

/// Kernel rule entries: how many the file names, and how many were seen so far.
struct RuleCount {
    total: usize,
    /// Whether some rule has a list (the message then says entries are per CIDR).
    lists: bool,
    entries: usize,
}

/// The CIDRs of rule `r` (`key`), each checked, counted against the rules map and against
/// `seen` (duplicates); `None` when one of them is not a CIDR at all (the rule's other keys
/// are then not checked, as before lists).
fn rule_cidrs(
    c: &mut Check,
    r: &Spanned<RawRule>,
    key: &str,
    seen: &mut HashSet<(IpAddr, u8)>,
    count: &mut RuleCount,
) -> Option<Vec<(IpAddr, u8)>> {
    let limit = traffic_common::RULES_ENTRIES as usize;
    let cidr = &r.get_ref().cidr;
    let items = cidr.get_ref().items(cidr.span());
    if items.is_empty() {
        c.err(cidr.span(), format!("{key}.cidr"), "lists no CIDR");
    }
    let mut cidrs = Vec::with_capacity(items.len());
    let mut invalid = false;
    for (span, text, j) in items {
        let ckey = match j {
            Some(j) => format!("{key}.cidr[{j}]"),
            None => format!("{key}.cidr"),
        };
        count.entries += 1;
        if count.entries == limit + 1 {
            // One problem at the first entry that does not fit, not one per extra entry.
            let (at, at_key) = match j {
                None => (r.span(), key.to_owned()),
                Some(_) => (span.clone(), ckey.clone()),
            };
            let what = if count.lists {
                "rules (one per CIDR of a list)"
            } else {
                "rules"
            };
            c.err(
                at,
                at_key,
                format!(
                    "{} {what}, but the kernel's rules map holds at most {limit}",
                    count.total
                ),
            );
        }
        let (addr, prefix_len) = match parse_cidr(text) {
            Ok(v) => v,
            Err(m) => {
                c.err(span, ckey, m);
                invalid = true;
                continue;
            }
        };
        // The kernel keys IPv4 rules as IPv4-mapped IPv6 (`::ffff:a.b.c.d`): one table.
        let canonical = match addr {
            IpAddr::V6(a) if prefix_len >= 96 => a
                .to_ipv4_mapped()
                .map_or((addr, prefix_len), |v4| (IpAddr::V4(v4), prefix_len - 96)),
            _ => (addr, prefix_len),
        };
        if !seen.insert(canonical) {
            c.err(span, ckey, format!("`{text}` already has a rule"));
        }
        cidrs.push((addr, prefix_len));
    }
    (!invalid).then_some(cidrs)
}

/// Whether the plan adds its implicit IPv4 `/0` rule: some IPv6 rule shorter than /96
/// covers the IPv4-mapped block and no IPv4 `/0` rule exists. `cidrs` are canonical
/// (IPv4-mapped rules of /96 or longer are IPv4).
fn needs_implicit_v4_rule(cidrs: &HashSet<(IpAddr, u8)>) -> bool {
    let v4_block = u128::from(std::net::Ipv4Addr::UNSPECIFIED.to_ipv6_mapped());
    let bits = traffic_common::V4_MAPPED_PREFIX_BITS;
    !cidrs.contains(&(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0))
        && cidrs.iter().any(|(addr, len)| match addr {
            IpAddr::V6(a) if u32::from(*len) < bits => {
                (u128::from(*a) ^ v4_block)
                    .checked_shr(128 - u32::from(*len))
                    .unwrap_or(0)
                    == 0
            }
            _ => false,
        })
}

/// `[[ports]]` expanded to one entry per port, and where the kernel's ports map overflows.
pub(super) struct Ports {
    pub(super) specs: Vec<PortSpec>,
    /// Entries the tables name (ranges counted port by port), even past the capacity.
    pub(super) entries: usize,
    /// Span and key of the element holding entry number [`MAX_PORTS`] (0-based), the first
    /// that does not fit even before the upstreams take theirs.
    ///
    /// [`MAX_PORTS`]: traffic_common::MAX_PORTS
    pub(super) first_over: Option<(Range<usize>, String)>,
}

/// Every `[[ports]]` table, each port of a range or list its own entry (same protocol,
/// class and limit). A port may be named once per protocol: an overlap of two ranges or a
/// repeated port is an error naming the entry that had it first.
pub(super) fn ports(c: &mut Check, raw: &[Spanned<RawPort>], classes: &[ClassSpec]) -> Ports {
    let mut out = Ports {
        specs: Vec::new(),
        entries: 0,
        first_over: None,
    };
    // (protocol, port) → the key of the element that named it first.
    let mut owner: HashMap<(Protocol, u16), String> = HashMap::new();
    for (i, p) in raw.iter().enumerate() {
        let key = format!("ports[{i}]");
        let rp = p.get_ref();
        let ranges = port_ranges(c, p, &key, &mut owner, &mut out);
        let class = rp
            .class
            .as_ref()
            .and_then(|n| match class_index(classes, n.get_ref()) {
                Some(ci) => Some(ci),
                None => {
                    c.err(
                        n.span(),
                        format!("{key}.class"),
                        format!("no class named `{}`", n.get_ref()),
                    );
                    None
                }
            });
        let new_connections = rp
            .new_connections
            .as_ref()
            .and_then(|l| c.limit(&format!("{key}.new_connections"), l));
        if rp.new_connections.is_some() && rp.protocol == Protocol::Udp {
            c.err(
                p.span(),
                format!("{key}.new_connections"),
                "counts TCP SYNs: only for protocol = \"tcp\"",
            );
        }
        for (lo, hi) in ranges {
            out.specs.extend((lo..=hi).map(|port| PortSpec {
                port,
                protocol: rp.protocol,
                class,
                new_connections,
            }));
        }
    }
    out
}

/// The usable port ranges of `[[ports]]` table `p` (`key`): each element checked, counted
/// in `out` against the ports map, and checked against the ports named before (`owner`).
fn port_ranges(
    c: &mut Check,
    p: &Spanned<RawPort>,
    key: &str,
    owner: &mut HashMap<(Protocol, u16), String>,
    out: &mut Ports,
) -> Vec<(u16, u16)> {
    let limit = traffic_common::MAX_PORTS as usize;
    let rp = p.get_ref();
    let items = rp.port.get_ref().items(rp.port.span());
    if items.is_empty() {
        c.err(rp.port.span(), format!("{key}.port"), "lists no port");
    }
    let mut ranges = Vec::with_capacity(items.len());
    for (span, item, j) in items {
        let ckey = match j {
            Some(j) => format!("{key}.port[{j}]"),
            None => format!("{key}.port"),
        };
        let (lo, hi) = match item.range() {
            Ok(r) => r,
            Err(m) => {
                c.err(span, ckey, m);
                continue;
            }
        };
        let n = usize::from(hi - lo) + 1;
        if out.first_over.is_none() && out.entries + n > limit {
            out.first_over = Some(match j {
                None if lo == hi => (p.span(), key.to_owned()),
                _ => (span.clone(), ckey.clone()),
            });
        }
        out.entries += n;
        if out.entries > limit {
            // Refused anyway (see `ports_fit`): no point expanding, or checking overlaps,
            // of up to 65535 ports per range.
            continue;
        }
        if let Some((port, first)) = (lo..=hi).find_map(|port| {
            owner
                .get(&(rp.protocol, port))
                .map(|first| (port, first.clone()))
        }) {
            let within = if lo == hi {
                String::new()
            } else {
                format!(" (in {lo}-{hi})")
            };
            c.err(
                span,
                ckey,
                format!(
                    "{}/{port}{within} already has a port rule ({first})",
                    rp.protocol.as_str()
                ),
            );
            continue;
        }
        for port in lo..=hi {
            owner.insert((rp.protocol, port), ckey.clone());
        }
        ranges.push((lo, hi));
    }
    ranges
}
