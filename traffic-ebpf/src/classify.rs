//! Classification: a source's rule (action and class) from the per-CPU cache, the leaf rule
//! this CPU matched last, or the LPM trie; and the configuration of an active class.

use aya_ebpf::btf_maps::lpm_trie::Key;
use traffic_common::{
    Action, CLASS_ACTIVE, ClassConfig, GLOBAL_HAS_BANS, GLOBAL_MONITOR, GlobalConfig, MAX_CLASSES,
    class_cache_index_words, words_addr,
};

use crate::credit::Credit;
use crate::maps::{TRF_CLASSES, TRF_CLS_CACHE, TRF_CLS_PREFIX, TRF_CONFIG, TRF_RULES};

/// The program's configuration; `None` until the daemon has configured it (ABI version 0).
#[inline(always)]
pub fn global_config() -> Option<&'static GlobalConfig> {
    let cfg = TRF_CONFIG.get(0)?;
    if cfg.abi_version == 0 {
        return None;
    }
    Some(cfg)
}

/// Whether the program-wide monitor flag is set; `None` when the daemon has not configured
/// the program yet.
#[inline(always)]
pub fn global_monitor() -> Option<bool> {
    global_config().map(|cfg| cfg.flags & GLOBAL_MONITOR != 0)
}

/// The rule of a source: from this CPU's classification cache when it holds the source
/// under the current rule generation, else from the rule table ([`rule_lookup`]; then
/// cached), with the ban that covers it (the action is then [`crate::bans::BANNED`] until
/// the ban ends), looked up only while the daemon has bans in force ([`GLOBAL_HAS_BANS`]);
/// and the source's entry, which holds this CPU's credit for it ([`crate::credit`]).
/// `None` only if the cache's lookup failed, which its index (masked to the map's size)
/// rules out.
#[inline(always)]
pub fn rule_of(src: (u64, u64), cfg: &GlobalConfig) -> Option<(u32, u32, Credit)> {
    let (default_class, rules_gen) = (cfg.default_class, cfg.rules_gen);
    let (lo, hi) = src;
    let index = class_cache_index_words(lo, hi);
    let entry = TRF_CLS_CACHE.get_ptr_mut(index)?;
    let credit = Credit::of(entry, index);
    // SAFETY: per-CPU value of this CPU; XDP runs with migration disabled, and only this
    // CPU writes it.
    let e = unsafe { &mut *entry };
    if e.rules_gen == rules_gen && rules_gen != 0 && e.addr[0] == lo && e.addr[1] == hi {
        return Some((
            crate::bans::apply(e.action, e.ban_until_ns),
            e.class,
            credit,
        ));
    }
    let packed = rule_lookup(lo, hi, rules_gen, default_class);
    let found = ((packed >> 32) as u32, packed as u32);
    let ban_until_ns = if cfg.flags & GLOBAL_HAS_BANS != 0 {
        crate::bans::lookup(src, found.0)
    } else {
        0
    };
    let found = crate::feeds::apply(found, lo, hi);
    credit.forget();
    e.addr = [lo, hi];
    e.rules_gen = rules_gen;
    e.action = found.0;
    e.class = found.1;
    e.ban_until_ns = ban_until_ns;
    Some((crate::bans::apply(found.0, ban_until_ns), found.1, credit))
}

/// The rule of an address (action and class; the default class when none matches): from
/// the leaf rule this CPU matched last when the address lies inside it, else from the LPM
/// trie. A leaf rule ([`traffic_common::Rule::mask`] non-zero) has no other rule inside,
/// so every address it covers gets it; a spoofed flood from one rule's range then costs a
/// masked compare per new source instead of a trie walk. Returns action << 32 | class.
///
/// A global function (a BPF-to-BPF call to a symbol with global linkage): the verifier
/// checks it once, on its own, with unknown arguments, rather than along every path that
/// reaches the call, and its four ways out are one unknown result after it (−43,000 of the
/// verifier's 907,000 instructions, measured).
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn rule_lookup(lo: u64, hi: u64, rules_gen: u32, default_class: u32) -> u64 {
    let last = TRF_CLS_PREFIX.get_ptr_mut(0);
    if let Some(p) = last {
        // SAFETY: per-CPU value of this CPU; XDP runs with migration disabled.
        let p = unsafe { &*p };
        if p.rules_gen == rules_gen
            && rules_gen != 0
            && lo & p.mask[0] == p.addr[0]
            && hi & p.mask[1] == p.addr[1]
        {
            return pack(p.action, p.class);
        }
    }
    let Some(rule) = TRF_RULES.get(&Key::new(128, words_addr(lo, hi))) else {
        return pack(Action::Limit as u32, default_class);
    };
    let (action, class, mask) = (rule.action, rule.class, rule.mask);
    if let Some(p) = last
        && mask != [0, 0]
    {
        // SAFETY: as above; only this CPU writes its value.
        let p = unsafe { &mut *p };
        p.addr = [lo & mask[0], hi & mask[1]];
        p.mask = mask;
        p.rules_gen = rules_gen;
        p.action = action;
        p.class = class;
    }
    pack(action, class)
}

/// An action and a class in one register.
#[inline(always)]
fn pack(action: u32, class: u32) -> u64 {
    (u64::from(action) << 32) | u64::from(class)
}

/// The configuration of `class` if it is an active class.
#[inline(always)]
pub fn class_config(class: u32) -> Option<&'static ClassConfig> {
    if class >= MAX_CLASSES {
        return None;
    }
    let cc = TRF_CLASSES.get(class)?;
    if cc.flags & CLASS_ACTIVE == 0 {
        return None;
    }
    Some(cc)
}
