//! Blocklist feeds: on a classification miss, the source's verdict in the active feed
//! generation (two LPM tries, IPv4 with 4-byte keys and IPv6 with 16-byte keys, so a
//! million IPv4 prefixes cost IPv4-sized nodes). Cached with the rule by `classify`.

use aya_ebpf::btf_maps::lpm_trie::Key;
use traffic_common::{
    Action, FEED_CLASS_BASE, FEED_DENY, FeedValue, GLOBAL_FEED_GEN1, GLOBAL_HAS_FEEDS, words_addr,
};

use crate::{
    classify::global_config,
    maps::{TRF_FEED_V4, TRF_FEED_V6},
};

/// The rule `found` after the feeds: a config `allow` or `deny` rule wins; else a `deny`
/// feed makes it [`Action::FeedDeny`] (counted in the rule's row) and a class feed
/// replaces its class.
#[inline(always)]
pub fn apply(found: (u32, u32), lo: u64, hi: u64) -> (u32, u32) {
    if found.0 != Action::Limit as u32 {
        return found;
    }
    let Some(cfg) = global_config() else {
        return found;
    };
    if cfg.flags & GLOBAL_HAS_FEEDS == 0 {
        return found;
    }
    let addr = words_addr(lo, hi);
    let value: Option<&FeedValue> = if is_v4_mapped(&addr) {
        TRF_FEED_V4.get(&Key::new(32, [addr[12], addr[13], addr[14], addr[15]]))
    } else {
        TRF_FEED_V6.get(&Key::new(128, addr))
    };
    let Some(v) = value else {
        return found;
    };
    let verdict = if cfg.flags & GLOBAL_FEED_GEN1 != 0 {
        v.verdict[1]
    } else {
        v.verdict[0]
    };
    if verdict == FEED_DENY {
        (Action::FeedDeny as u32, found.1)
    } else if verdict >= FEED_CLASS_BASE {
        (Action::Limit as u32, u32::from(verdict - FEED_CLASS_BASE))
    } else {
        found
    }
}

/// `::ffff:a.b.c.d`, how the parser keys an IPv4 source.
#[inline(always)]
fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff
}
