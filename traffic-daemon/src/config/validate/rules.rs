//! `[[rules]]` and `[[ports]]`.

use std::{collections::HashSet, net::IpAddr};

use toml::Spanned;

use super::{Check, class_index, parse_cidr, port_number};
use crate::config::{
    ClassSpec, PortSpec, Protocol, RuleAction, RuleSpec,
    raw::{RawPort, RawRule},
};

pub(super) fn rules(
    c: &mut Check,
    raw: &[Spanned<RawRule>],
    classes: &[ClassSpec],
) -> Vec<RuleSpec> {
    let mut rules = Vec::new();
    let mut seen_cidrs = HashSet::new();
    let limit = traffic_common::RULES_ENTRIES as usize;
    if let Some(first_over) = raw.get(limit) {
        // One problem at the first rule that does not fit, not one per extra rule.
        c.err(
            first_over.span(),
            format!("rules[{limit}]"),
            format!(
                "{} rules, but the kernel's rules map holds at most {limit}",
                raw.len()
            ),
        );
    }
    for (i, r) in raw.iter().enumerate() {
        let key = format!("rules[{i}]");
        let rr = r.get_ref();
        let (addr, prefix_len) = match parse_cidr(rr.cidr.get_ref()) {
            Ok(v) => v,
            Err(m) => {
                c.err(rr.cidr.span(), format!("{key}.cidr"), m);
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
        if !seen_cidrs.insert(canonical) {
            c.err(
                rr.cidr.span(),
                format!("{key}.cidr"),
                format!("`{}` already has a rule", rr.cidr.get_ref()),
            );
        }
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
        rules.push(RuleSpec {
            addr,
            prefix_len,
            action: rr.action,
            class,
        });
    }
    if raw.len() == limit && needs_implicit_v4_rule(&seen_cidrs) {
        // The plan adds one rule pinning `::ffff:0:0/96` (see `plan::desired`): that rule
        // takes a map entry too, so a full table of `[[rules]]` no longer fits.
        if let Some(last) = raw.last() {
            c.err(
                last.span(),
                format!("rules[{}]", limit - 1),
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

pub(super) fn ports(
    c: &mut Check,
    raw: &[Spanned<RawPort>],
    classes: &[ClassSpec],
) -> Vec<PortSpec> {
    let mut ports: Vec<PortSpec> = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let key = format!("ports[{i}]");
        let rp = p.get_ref();
        let Some(port) = port_number(c, &rp.port, &format!("{key}.port")) else {
            continue;
        };
        if ports
            .iter()
            .any(|q| q.port == port && q.protocol == rp.protocol)
        {
            c.err(
                rp.port.span(),
                format!("{key}.port"),
                format!("{}/{port} already has a port rule", rp.protocol.as_str()),
            );
        }
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
        ports.push(PortSpec {
            port,
            protocol: rp.protocol,
            class,
            new_connections,
        });
    }
    ports
}
