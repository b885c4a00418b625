//! What the kernel maps should hold, and the smallest ordered set of writes to get there.
//!
//! Pure: the engine computes a [`Desired`] state from the config, the throttle factors and
//! its live overlays ([`Live`]: upstream gates, chaos), diffs it against what it last
//! applied, and hands the writes to the dataplane. This is the only builder of `Desired`.

use std::{collections::BTreeMap, net::IpAddr};

use traffic_common::{
    ABI_VERSION, Action, Addr, CLASS_BYTES, ClassConfig, GLOBAL_HAS_PORTS, GLOBAL_HAS_TCP_PORTS,
    GLOBAL_HAS_UDP_PORTS, GLOBAL_MONITOR, GlobalConfig, MAX_CLASSES, PortRule, RULES_ENTRIES, Rule,
    SlotName, UNCLASSIFIED, V4_MAPPED_PREFIX_BITS, proto, v4_mapped,
};

use crate::{
    config::{Config, Mode, RuleAction},
    policy::limits,
    policy::upstream::{ChaosSetting, Upstream},
};

/// Class name → kernel slot, kept stable across reloads so buckets and counters of a class
/// stay with it when other classes are added or removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    names: Vec<Option<String>>,
}

impl Slots {
    /// Slots for `config`, keeping the slot of every class that `self` already had.
    pub fn assign(&self, config: &Config) -> Slots {
        let mut names: Vec<Option<String>> = vec![None; MAX_CLASSES as usize];
        for c in &config.classes {
            if let Some(i) = self.slot_of(&c.name) {
                names[i as usize] = Some(c.name.clone());
            }
        }
        for c in &config.classes {
            if names.iter().flatten().any(|n| n == &c.name) {
                continue;
            }
            // Prefer a slot nobody used before, so a new class does not inherit the
            // counters of a removed one within this run.
            let fresh = (0..names.len())
                .find(|&i| names[i].is_none() && self.names.get(i).is_none_or(|n| n.is_none()))
                .or_else(|| names.iter().position(|n| n.is_none()));
            if let Some(i) = fresh {
                names[i] = Some(c.name.clone());
            }
        }
        Slots { names }
    }

    /// Slots as recorded in the kernel's slot-name map (adopting pinned state).
    pub fn from_names(names: &[SlotName]) -> Slots {
        Slots {
            names: names
                .iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect(),
        }
    }

    /// The slot-name map entries for these slots.
    pub fn to_names(&self) -> Vec<SlotName> {
        (0..MAX_CLASSES as usize)
            .map(|i| {
                self.names
                    .get(i)
                    .and_then(|n| n.as_deref())
                    .map_or_else(SlotName::default, SlotName::new)
            })
            .collect()
    }

    /// Slot of a class by name.
    pub fn slot_of(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .position(|n| n.as_deref() == Some(name))
            .map(|i| i as u32)
    }

    /// Class name of a slot.
    pub fn name_of(&self, slot: u32) -> Option<&str> {
        self.names.get(slot as usize)?.as_deref()
    }

    /// Slot of a config class index.
    pub fn slot_of_index(&self, config: &Config, index: usize) -> u32 {
        self.slot_of(&config.classes[index].name)
            .expect("every config class has a slot")
    }
}

/// The LPM key of a rule: (16-byte address, prefix bits over the 16 bytes).
pub type RuleKey = (Addr, u32);

/// LPM key of an address and prefix as written in the config.
pub fn rule_key(addr: IpAddr, prefix_len: u8) -> RuleKey {
    match addr {
        IpAddr::V4(a) => (
            v4_mapped(a.octets()),
            V4_MAPPED_PREFIX_BITS + u32::from(prefix_len),
        ),
        IpAddr::V6(a) => (a.octets(), u32::from(prefix_len)),
    }
}

/// Everything the kernel maps should hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub global: GlobalConfig,
    /// Indexed by slot; inactive slots are all zero.
    pub classes: Vec<ClassConfig>,
    /// Class name per slot.
    pub names: Vec<SlotName>,
    pub rules: BTreeMap<RuleKey, Rule>,
    /// Port rules (gates, bulkheads, new-connection limits), by (port, protocol).
    pub ports: BTreeMap<(u16, u8), PortRule>,
}

/// The desired kernel state for `config`; `factor(slot)` is the multiplier applied to a
/// class's limits (1.0 without pressure).
pub fn desired(config: &Config, slots: &Slots, factor: impl Fn(usize) -> f64) -> Desired {
    let mut classes = vec![ClassConfig::default(); MAX_CLASSES as usize];
    for (i, spec) in config.classes.iter().enumerate() {
        let slot = slots.slot_of_index(config, i) as usize;
        classes[slot] = limits::class_config(spec, config.class_mode(i), factor(i));
    }
    let mut rules: BTreeMap<RuleKey, Rule> = config
        .rules
        .iter()
        .map(|r| {
            let action = match r.action {
                RuleAction::Limit => Action::Limit,
                RuleAction::Allow => Action::Allow,
                RuleAction::Deny => Action::Deny,
            };
            let class = r
                .class
                .map_or(UNCLASSIFIED, |c| slots.slot_of_index(config, c));
            (
                rule_key(r.addr, r.prefix_len),
                Rule {
                    action: action as u32,
                    class,
                    mask: [0, 0],
                },
            )
        })
        .collect();
    // IPv4 is keyed as ::ffff:a.b.c.d: an IPv6 rule covering ::ffff:0:0/96 (e.g. `::/0`)
    // would classify every IPv4 source. Unless an IPv4 /0 rule exists, pin that block to the
    // default class — the verdict of no match at all.
    let v4_block = rule_key(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
    let covers_v4 = |(addr, bits): &RuleKey| {
        *bits < V4_MAPPED_PREFIX_BITS
            && (u128::from_be_bytes(*addr) ^ u128::from_be_bytes(v4_block.0))
                .checked_shr(128 - bits)
                .unwrap_or(0)
                == 0
    };
    if !rules.contains_key(&v4_block) && rules.keys().any(covers_v4) {
        let class = slots.slot_of_index(config, config.daemon.default_class);
        rules.insert(
            v4_block,
            Rule {
                action: Action::Limit as u32,
                class,
                mask: [0, 0],
            },
        );
    }
    mark_leaves(&mut rules);
    let default_class = slots.slot_of_index(config, config.daemon.default_class);
    Desired {
        global: GlobalConfig {
            abi_version: ABI_VERSION,
            flags: if config.daemon.mode == Mode::Monitor {
                GLOBAL_MONITOR
            } else {
                0
            },
            default_class,
            rules_gen: rules_generation(&rules, default_class),
            // No lease without a clock; `desired_live` (the daemon) sets a finite one.
            gate_lease_until_ns: u64::MAX,
            // Off until someone watches (`desired_live`); the budget is ready for then.
            watch_budget: traffic_common::WATCH_BUDGET_DEFAULT,
            _pad: 0,
        },
        classes,
        names: slots.to_names(),
        rules,
        ports: BTreeMap::new(),
    }
}

/// Set [`Rule::mask`] of every rule no other rule lies inside (a leaf: every address it
/// covers gets it), for the program's last-leaf shortcut. In key order (address, then
/// length) a rule's nested rules come right after it, so a rule is a leaf when the next
/// key's address is outside its prefix.
fn mark_leaves(rules: &mut BTreeMap<RuleKey, Rule>) {
    let keys: Vec<RuleKey> = rules.keys().copied().collect();
    for (i, (addr, bits)) in keys.iter().enumerate() {
        let end = u128::from_be_bytes(*addr) | !traffic_common::prefix_mask(*bits);
        let nested = keys
            .get(i + 1)
            .is_some_and(|(next, _)| u128::from_be_bytes(*next) <= end);
        if let Some(r) = rules.get_mut(&(*addr, *bits)) {
            r.mask = if nested {
                [0, 0]
            } else {
                traffic_common::prefix_mask_words(*bits)
            };
        }
    }
}

/// The generation of the classification, which keys the program's classification cache: a
/// digest (FNV-1a) of every input a cached entry depends on — every rule and the default
/// class (the class cached for a source no rule matches) — so the same inputs give the same
/// generation across restarts and any change gives another one (a collision, 2⁻³² per
/// change, would keep stale entries); never 0, the cache's "empty".
pub fn rules_generation(rules: &BTreeMap<RuleKey, Rule>, default_class: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    for ((addr, bits), rule) in rules {
        eat(addr);
        eat(&bits.to_le_bytes());
        eat(&rule.action.to_le_bytes());
        eat(&rule.class.to_le_bytes());
    }
    eat(&default_class.to_le_bytes());
    h.max(1)
}

/// Mix the digest of the bans in force ([`crate::bans::BanBook::digest`]; 0: none) into
/// the rule generation: the program caches a source's ban with its rule, so a change of
/// the bans must refill the classification cache like a change of the rules. With bans in
/// force it also sets [`traffic_common::GLOBAL_HAS_BANS`] (the program looks bans up only
/// then); the callers write the ban map before this config.
pub fn with_bans(mut want: Desired, bans_digest: u32) -> Desired {
    if bans_digest != 0 {
        let g = want.global.rules_gen;
        want.global.rules_gen = rules_generation(&BTreeMap::new(), g ^ bans_digest);
        want.global.flags |= traffic_common::GLOBAL_HAS_BANS;
    }
    want
}

/// The engine's runtime state that the kernel maps reflect besides the config.
pub struct Live<'a> {
    /// Stable statistics slot per (port, protocol) port rule.
    pub port_slots: &'a BTreeMap<(u16, u8), u32>,
    /// Upstreams in config order, each with its breaker's gate and bulkhead.
    pub upstreams: &'a [Upstream],
    /// Fault injection on classes, by class name.
    pub class_chaos: &'a BTreeMap<String, ChaosSetting>,
    /// The kernel's clock (chaos expiry, half-open trial pacing).
    pub now_ns: u64,
    /// The largest frame the attached interfaces deliver ([`limits::largest_frame`]): every
    /// byte burst holds at least one.
    pub max_frame: u64,
    /// End of the gate lease ([`GlobalConfig::gate_lease_until_ns`]).
    pub gate_lease_until_ns: u64,
    /// `GLOBAL_WATCH*` flags: someone watches (`crate::watch::Hub::flags`).
    pub watch_flags: u32,
}

/// [`desired`] with the live overlays: class chaos in force, and the port rules
/// (`[[ports]]` merged with the upstreams' gates).
pub fn desired_live(
    config: &Config,
    slots: &Slots,
    factor: impl Fn(usize) -> f64,
    live: &Live<'_>,
) -> Desired {
    let mut want = desired(config, slots, factor);
    for c in want
        .classes
        .iter_mut()
        .filter(|c| c.flags & CLASS_BYTES != 0)
    {
        limits::floor_byte_tolerance(&mut c.bytes, live.max_frame);
    }
    want.global.gate_lease_until_ns = live.gate_lease_until_ns;
    want.global.flags |= live.watch_flags;
    for (name, c) in live.class_chaos {
        if let Some(slot) = slots.slot_of(name)
            && c.active(live.now_ns)
        {
            want.classes[slot as usize].chaos = c.kernel();
        }
    }
    want.with_ports(port_rules(config, slots, live))
}

/// The port rules the kernel should hold: `[[ports]]` merged with the upstreams' gates.
pub fn port_rules(
    config: &Config,
    slots: &Slots,
    live: &Live<'_>,
) -> BTreeMap<(u16, u8), PortRule> {
    let mut out: BTreeMap<(u16, u8), PortRule> = BTreeMap::new();
    for p in &config.ports {
        let key = (p.port, p.protocol.number());
        let rule = out.entry(key).or_default();
        rule.slot = live.port_slots.get(&key).copied().unwrap_or(0);
        if let Some(ci) = p.class {
            rule.flags |= traffic_common::PORT_CLASS_OVERRIDE;
            rule.class = slots.slot_of_index(config, ci);
        }
        if let Some(l) = &p.new_connections {
            rule.syn_limit = limits::packet_gcra(l);
        }
    }
    for u in live.upstreams {
        let key = (u.spec.port, u.spec.protocol.number());
        let rule = out.entry(key).or_default();
        rule.slot = live.port_slots.get(&key).copied().unwrap_or(0);
        u.apply_to(rule, live.now_ns);
    }
    out
}

impl Desired {
    /// Set the port rules, keeping the global "has ports" flags (any, TCP, UDP) in step.
    pub fn with_ports(mut self, ports: BTreeMap<(u16, u8), PortRule>) -> Self {
        let has = |protocol| ports.keys().any(|(_, p)| *p == protocol);
        for (flag, on) in [
            (GLOBAL_HAS_PORTS, !ports.is_empty()),
            (GLOBAL_HAS_TCP_PORTS, has(proto::TCP)),
            (GLOBAL_HAS_UDP_PORTS, has(proto::UDP)),
        ] {
            if on {
                self.global.flags |= flag;
            } else {
                self.global.flags &= !flag;
            }
        }
        self.ports = ports;
        self
    }
}

/// One map write.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    SlotName(u32, SlotName),
    Port((u16, u8), PortRule),
    RemovePort((u16, u8)),
    Class(u32, ClassConfig),
    Rule(RuleKey, Rule),
    RemoveRule(RuleKey),
    Global(GlobalConfig),
}

/// Rule inserts and removals, ordered to fit a map of `capacity` entries at every step:
/// changed rules (no new entry) and as many new rules as there is room for first, then the
/// removals, then the remaining new rules. Inserting everything first would overflow on a
/// large swap (10k rules for 10k others in a map of 16k); removing everything first would
/// leave sources unclassified longer than needed.
fn rule_writes(applied: Option<&Desired>, want: &Desired, capacity: usize) -> Vec<Write> {
    let (mut now, mut later) = (Vec::new(), Vec::new());
    let mut free = capacity.saturating_sub(applied.map_or(0, |a| a.rules.len()));
    for (k, r) in &want.rules {
        match applied.and_then(|a| a.rules.get(k)) {
            Some(old) if old == r => {}
            Some(_) => now.push(Write::Rule(*k, *r)),
            None if free > 0 => {
                free -= 1;
                now.push(Write::Rule(*k, *r));
            }
            None => later.push(Write::Rule(*k, *r)),
        }
    }
    if let Some(a) = applied {
        for k in a.rules.keys() {
            if !want.rules.contains_key(k) {
                now.push(Write::RemoveRule(*k));
            }
        }
    }
    now.extend(later);
    now
}

/// The writes that turn `applied` (what the maps hold, `None` if unknown) into `want`,
/// ordered so that the program never sees a rule or default pointing at an inactive class:
/// new and changed classes first, then rules, then the global entry, then deactivations.
pub fn diff(applied: Option<&Desired>, want: &Desired) -> Vec<Write> {
    let mut out = Vec::new();
    let old_class = |slot: usize| applied.map(|a| a.classes[slot]);
    for (slot, n) in want.names.iter().enumerate() {
        if applied.map(|a| a.names[slot]) != Some(*n) {
            out.push(Write::SlotName(slot as u32, *n));
        }
    }
    for (slot, c) in want.classes.iter().enumerate() {
        if c.flags != 0 && old_class(slot) != Some(*c) {
            out.push(Write::Class(slot as u32, *c));
        }
    }
    out.extend(rule_writes(applied, want, RULES_ENTRIES as usize));
    // Port rules name classes (overrides) and must exist before the global flag that makes
    // the program look them up; removals go after the flag is cleared.
    for (k, p) in &want.ports {
        // The kernel owns `half_open_tat`: a difference there alone is not a change.
        let same = applied.and_then(|a| a.ports.get(k)).is_some_and(|o| {
            PortRule {
                half_open_tat: 0,
                ..*o
            } == PortRule {
                half_open_tat: 0,
                ..*p
            }
        });
        if !same {
            out.push(Write::Port(*k, *p));
        }
    }
    if applied.map(|a| a.global) != Some(want.global) {
        out.push(Write::Global(want.global));
    }
    if let Some(a) = applied {
        for k in a.ports.keys() {
            if !want.ports.contains_key(k) {
                out.push(Write::RemovePort(*k));
            }
        }
    }
    for (slot, c) in want.classes.iter().enumerate() {
        if c.flags == 0 && old_class(slot).is_none_or(|o| o != *c) {
            out.push(Write::Class(slot as u32, *c));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_rule_is_a_leaf_unless_another_lies_inside_it() {
        let key = |a: &str, bits: u32| -> RuleKey {
            let ip: std::net::Ipv6Addr = a.parse().unwrap();
            (ip.octets(), bits)
        };
        let rule = Rule {
            action: Action::Limit as u32,
            class: 0,
            mask: [0, 0],
        };
        let mut rules: BTreeMap<RuleKey, Rule> = [
            key("2001:db8:4000::", 34),
            key("2001:db8:4000:1::", 64),
            key("2001:db8:8000::", 33),
            key("2001:db8:8000::", 48),
            key("2001:db8:9000::1", 128),
        ]
        .into_iter()
        .map(|k| (k, rule))
        .collect();
        mark_leaves(&mut rules);
        let leaf = |a: &str, bits: u32| rules[&key(a, bits)].mask != [0, 0];
        assert!(!leaf("2001:db8:4000::", 34), "has a /64 inside");
        assert!(leaf("2001:db8:4000:1::", 64));
        assert!(!leaf("2001:db8:8000::", 33), "has a /48 at its own address");
        assert!(leaf("2001:db8:8000::", 48));
        assert!(leaf("2001:db8:9000::1", 128), "a host rule");
        assert_eq!(
            rules[&key("2001:db8:9000::1", 128)].mask,
            [u64::MAX, u64::MAX]
        );
    }

    const BASE: &str = r#"
[daemon]
interfaces = ["eth0"]
[classes.default]
packets = { rate = 100, burst = 200 }
[classes.premium]
packets = { rate = 1000 }
[[rules]]
cidr = "198.18.1.0/24"
class = "premium"
[[rules]]
cidr = "2001:db8:66::/48"
action = "deny"
"#;

    fn cfg(text: &str) -> Config {
        Config::parse(Path::new("t.toml"), text).unwrap()
    }

    #[test]
    fn first_apply_writes_everything_in_order() {
        let c = cfg(BASE);
        let slots = Slots::default().assign(&c);
        let d = desired(&c, &slots, |_| 1.0);
        let w = diff(None, &d);
        let kinds: Vec<&str> = w
            .iter()
            .filter(|w| !matches!(w, Write::SlotName(..)))
            .map(|w| match w {
                Write::SlotName(..) => "name",
                Write::Port(..) => "port",
                Write::RemovePort(..) => "remove port",
                Write::Class(_, c) if c.flags != 0 => "class",
                Write::Class(..) => "deactivate",
                Write::Rule(..) => "rule",
                Write::RemoveRule(..) => "remove",
                Write::Global(..) => "global",
            })
            .collect();
        assert_eq!(kinds[..4], ["class", "class", "rule", "rule"]);
        assert_eq!(kinds[4], "global");
        assert!(kinds[5..].iter().all(|k| *k == "deactivate"));
        assert_eq!(
            diff(Some(&d), &d),
            vec![],
            "nothing changed, nothing written"
        );
    }

    #[test]
    fn rule_keys_map_v4_into_v6() {
        let c = cfg(BASE);
        let d = desired(&c, &Slots::default().assign(&c), |_| 1.0);
        let v4 = rule_key("198.18.1.0".parse().unwrap(), 24);
        assert_eq!(v4.1, 120);
        assert_eq!(d.rules[&v4].action, Action::Limit as u32);
        let v6 = rule_key("2001:db8:66::".parse().unwrap(), 48);
        assert_eq!(d.rules[&v6].action, Action::Deny as u32);
        assert_eq!(d.rules[&v6].class, UNCLASSIFIED);
    }

    #[test]
    fn an_ipv6_catch_all_does_not_swallow_ipv4() {
        let c = cfg(&BASE.replace(
            "[[rules]]\ncidr = \"2001:db8:66::/48\"",
            "[[rules]]\ncidr = \"::/0\"\naction = \"deny\"\n[[rules]]\ncidr = \"2001:db8:66::/48\"",
        ));
        let slots = Slots::default().assign(&c);
        let d = desired(&c, &slots, |_| 1.0);
        let v4_block = rule_key("0.0.0.0".parse().unwrap(), 0);
        assert_eq!(v4_block.1, 96);
        let pinned = d.rules.get(&v4_block).expect("IPv4 block pinned");
        assert_eq!(pinned.action, Action::Limit as u32);
        assert_eq!(pinned.class, slots.slot_of("default").unwrap());
        // Without an IPv6 catch-all nothing is added.
        let plain = desired(&cfg(BASE), &slots, |_| 1.0);
        assert!(!plain.rules.contains_key(&v4_block));
    }

    #[test]
    fn slots_are_stable_across_reloads() {
        let c1 = cfg(BASE);
        let s1 = Slots::default().assign(&c1);
        let premium = s1.slot_of("premium").unwrap();
        let c2 = cfg(&BASE.replace(
            "[classes.default]",
            "[classes.aaa]\npackets = { rate = 1 }\n[classes.default]",
        ));
        let s2 = s1.assign(&c2);
        assert_eq!(s2.slot_of("premium"), Some(premium));
        assert_eq!(s2.slot_of("default"), s1.slot_of("default"));
        let aaa = s2.slot_of("aaa").unwrap();
        assert!(aaa != premium && Some(aaa) != s1.slot_of("default"));
    }

    #[test]
    fn only_changes_are_written() {
        let c1 = cfg(BASE);
        let slots = Slots::default().assign(&c1);
        let d1 = desired(&c1, &slots, |_| 1.0);
        let c2 = cfg(&BASE.replace("rate = 1000", "rate = 2000"));
        let d2 = desired(&c2, &slots.assign(&c2), |_| 1.0);
        let w = diff(Some(&d1), &d2);
        assert_eq!(w.len(), 1);
        assert!(matches!(w[0], Write::Class(s, _) if s == slots.slot_of("premium").unwrap()));
        // A level change scales every limited class.
        let d3 = desired(&c1, &slots, |_| 0.5);
        assert_eq!(diff(Some(&d1), &d3).len(), 2);
    }

    #[test]
    fn a_rule_swap_never_holds_more_rules_than_the_map() {
        let rule = Rule::default();
        let set = |base: u32, n: u32| -> Desired {
            let mut d = Desired {
                global: GlobalConfig::default(),
                classes: vec![ClassConfig::default(); 2],
                names: vec![SlotName::default(); 2],
                rules: BTreeMap::new(),
                ports: BTreeMap::new(),
            };
            for i in base..base + n {
                let mut addr = [0u8; 16];
                addr[..4].copy_from_slice(&i.to_be_bytes());
                d.rules.insert((addr, 128), rule);
            }
            d
        };
        let (old, new) = (set(0, 10), set(100, 10));
        let writes = rule_writes(Some(&old), &new, 16);
        let mut held = old.rules.len();
        let mut peak = held;
        for w in &writes {
            match w {
                Write::Rule(..) => held += 1,
                Write::RemoveRule(_) => held -= 1,
                _ => {}
            }
            peak = peak.max(held);
        }
        assert_eq!((held, peak), (10, 16), "fills the free room, never more");
        assert!(
            matches!(writes[0], Write::Rule(..)),
            "new rules first, while room"
        );
        // A full map: every removal goes first.
        let writes = rule_writes(Some(&set(0, 16)), &set(100, 16), 16);
        assert!(
            writes[..16]
                .iter()
                .all(|w| matches!(w, Write::RemoveRule(_)))
        );
    }

    #[test]
    fn removed_rules_and_classes() {
        let c1 = cfg(BASE);
        let slots = Slots::default().assign(&c1);
        let d1 = desired(&c1, &slots, |_| 1.0);
        let text = BASE
            .replace("[classes.premium]\npackets = { rate = 1000 }\n", "")
            .replace(
                "[[rules]]\ncidr = \"198.18.1.0/24\"\nclass = \"premium\"\n",
                "",
            );
        let c2 = cfg(&text);
        let s2 = slots.assign(&c2);
        let d2 = desired(&c2, &s2, |_| 1.0);
        let w = diff(Some(&d1), &d2);
        let premium = slots.slot_of("premium").unwrap();
        assert!(w.contains(&Write::SlotName(premium, SlotName::default())));
        let remove = w
            .iter()
            .position(|w| matches!(w, Write::RemoveRule(_)))
            .unwrap();
        let deact = w
            .iter()
            .position(|w| matches!(w, Write::Class(s, c) if *s == premium && c.flags == 0))
            .unwrap();
        assert!(remove < deact, "rules go before their class: {w:?}");
    }

    #[test]
    fn live_overlays_add_class_chaos_in_force_and_port_rules() {
        let c = cfg(&format!(
            "{BASE}[[ports]]\nport = 8080\nclass = \"premium\"\n"
        ));
        let slots = Slots::default().assign(&c);
        let premium = slots.slot_of("premium").unwrap() as usize;
        let port_slots = BTreeMap::from([((8080, traffic_common::proto::TCP), 3)]);
        let chaos = ChaosSetting {
            drop_ratio: 0.5,
            reset_ratio: 0.0,
            until_ns: 1_000,
        };
        let class_chaos = BTreeMap::from([("premium".to_owned(), chaos)]);
        let live = |now_ns| Live {
            port_slots: &port_slots,
            upstreams: &[],
            class_chaos: &class_chaos,
            now_ns,
            max_frame: limits::MIN_BYTE_BURST,
            gate_lease_until_ns: now_ns + 7,
            watch_flags: 0,
        };
        let want = desired_live(&c, &slots, |_| 1.0, &live(500));
        assert_eq!(want.classes[premium].chaos, chaos.kernel());
        let rule = want.ports[&(8080, traffic_common::proto::TCP)];
        assert_eq!(rule.slot, 3);
        assert_ne!(rule.flags & traffic_common::PORT_CLASS_OVERRIDE, 0);
        assert_eq!(rule.class, premium as u32);
        assert_ne!(want.global.flags & GLOBAL_HAS_PORTS, 0);
        assert_ne!(want.global.flags & GLOBAL_HAS_TCP_PORTS, 0);
        assert_eq!(want.global.flags & GLOBAL_HAS_UDP_PORTS, 0, "no UDP rule");
        assert_eq!(
            want.global.gate_lease_until_ns, 507,
            "the live lease, not none"
        );
        // Expired chaos is not planned.
        let later = desired_live(&c, &slots, |_| 1.0, &live(2_000));
        assert_eq!(later.classes[premium].chaos, Default::default());
    }

    #[test]
    fn a_new_default_class_is_a_new_classification_generation() {
        let c = cfg(BASE);
        let slots = Slots::default().assign(&c);
        let before = desired(&c, &slots, |_| 1.0);
        let moved = cfg(&BASE.replace("[daemon]\n", "[daemon]\ndefault_class = \"premium\"\n"));
        let after = desired(&moved, &slots.assign(&moved), |_| 1.0);
        assert_eq!(before.rules, after.rules, "the rules alone are the same");
        assert_ne!(before.global.default_class, after.global.default_class);
        assert_ne!(
            before.global.rules_gen, after.global.rules_gen,
            "cached classifications of unmatched sources must not survive"
        );
    }
}
