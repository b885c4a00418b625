use std::collections::BTreeMap;

use super::*;
use crate::feeds::parse::mask;

const DENY: Listing = Listing {
    deny: true,
    class: None,
};

fn class(rank: u16, slot: u16) -> Listing {
    Listing {
        deny: false,
        class: Some((rank, slot)),
    }
}

fn v4(a: [u8; 4], len: u8) -> Key {
    (mask(u128::from(u32::from_be_bytes(a)) << 96, len), len)
}

/// What the kernel's LPM lookup answers for `addr` (a /32 key) with `trie` and `active`.
fn lookup(trie: &BTreeMap<Key, [u16; 2]>, addr: Key, active: usize) -> u16 {
    trie.iter()
        .filter(|(k, _)| covers(**k, addr))
        .max_by_key(|(k, _)| k.1)
        .map_or(FEED_NONE, |(_, v)| v[active])
}

/// The verdict `next` intends for `addr`, straight from the definition.
fn intended(next: &[(Key, Listing)], addr: Key) -> u16 {
    next.iter()
        .filter(|(k, _)| covers(*k, addr))
        .fold(Listing::default(), |acc, (_, l)| acc.merge(*l))
        .verdict()
}

/// Apply a swap step by step, checking every address of `probes` after every single write
/// against the old answer (before the flip) or the new one (after it).
fn swap_checked(
    trie: &mut BTreeMap<Key, [u16; 2]>,
    next: &[(Key, Listing)],
    active: usize,
    probes: &[Key],
) -> usize {
    let current: Vec<_> = trie.iter().map(|(k, v)| (*k, *v)).collect();
    let before: Vec<u16> = probes.iter().map(|p| lookup(trie, *p, active)).collect();
    let s = plan(&current, next, active);
    for (k, v) in &s.updates {
        trie.insert(*k, *v);
        for (p, b) in probes.iter().zip(&before) {
            assert_eq!(lookup(trie, *p, active), *b, "during load, {p:?}");
        }
    }
    let flipped = 1 - active;
    for k in &s.deletes {
        trie.remove(k);
        for p in probes {
            assert_eq!(
                lookup(trie, *p, flipped),
                intended(next, *p),
                "during deletes"
            );
        }
    }
    for p in probes {
        assert_eq!(lookup(trie, *p, flipped), intended(next, *p));
    }
    assert_eq!(
        trie.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
        s.after
    );
    flipped
}

fn probes() -> Vec<Key> {
    (0..=255u8)
        .flat_map(|b| [v4([198, 18, b, 1], 32), v4([198, 19, b, 200], 32)])
        .chain([v4([10, 0, 0, 1], 32)])
        .collect()
}

#[test]
fn a_more_specific_new_prefix_never_hides_an_active_covering_one() {
    let mut trie = BTreeMap::new();
    let gen1 = vec![(v4([198, 18, 0, 0], 16), DENY)];
    let active = swap_checked(&mut trie, &gen1, 0, &probes());
    // Next generation lists a /24 inside the /16 as a class, and drops the /16.
    let gen2 = vec![(v4([198, 18, 7, 0], 24), class(0, 3))];
    let active = swap_checked(&mut trie, &gen2, active, &probes());
    assert_eq!(
        lookup(&trie, v4([198, 18, 7, 1], 32), active),
        FEED_CLASS_BASE + 3
    );
    assert_eq!(lookup(&trie, v4([198, 18, 8, 1], 32), active), FEED_NONE);
    // And back, with both.
    let gen3 = merge_feeds(&[
        (&[v4([198, 18, 0, 0], 16)], DENY),
        (
            &[v4([198, 18, 7, 0], 24), v4([198, 19, 0, 0], 16)],
            class(1, 2),
        ),
    ]);
    swap_checked(&mut trie, &gen3, active, &probes());
}

#[test]
fn deny_wins_over_class_and_the_first_class_feed_wins() {
    let next = merge_feeds(&[
        (&[v4([198, 18, 0, 0], 15)], class(1, 5)),
        (&[v4([198, 18, 0, 0], 24)], class(0, 4)),
        (&[v4([198, 18, 0, 0], 28)], DENY),
    ]);
    let mut trie = BTreeMap::new();
    let a = swap_checked(&mut trie, &next, 1, &probes());
    assert_eq!(lookup(&trie, v4([198, 18, 0, 1], 32), a), FEED_DENY);
    assert_eq!(
        lookup(&trie, v4([198, 18, 0, 100], 32), a),
        FEED_CLASS_BASE + 4
    );
    assert_eq!(
        lookup(&trie, v4([198, 19, 0, 1], 32), a),
        FEED_CLASS_BASE + 5
    );
}

#[test]
fn an_unchanged_list_writes_nothing_but_the_other_slot_once() {
    let next = vec![(v4([198, 18, 0, 0], 24), DENY)];
    let first = plan(&[], &next, 0);
    assert_eq!(first.updates, vec![(next[0].0, [FEED_NONE, FEED_DENY])]);
    let second = plan(&first.after, &next, 1);
    assert_eq!(second.updates, vec![(next[0].0, [FEED_DENY, FEED_DENY])]);
    let third = plan(&second.after, &next, 0);
    assert!(third.updates.is_empty() && third.deletes.is_empty());
}

#[test]
fn random_generations_swap_without_a_wrong_answer() {
    // A small deterministic generator: prefixes inside 198.18.0.0/15.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut trie = BTreeMap::new();
    let mut active = 0;
    for _ in 0..30 {
        let mut feeds: Vec<(Vec<Key>, Listing)> = Vec::new();
        for f in 0..3u16 {
            let keys: Vec<Key> = (0..rnd(12))
                .map(|_| {
                    let len = 15 + rnd(18) as u8;
                    let b = rnd(2) as u8;
                    v4([198, 18 + b, rnd(256) as u8, rnd(256) as u8], len)
                })
                .collect();
            let l = if f == 0 { DENY } else { class(f, f + 1) };
            feeds.push((keys, l));
        }
        let refs: Vec<(&[Key], Listing)> = feeds.iter().map(|(k, l)| (k.as_slice(), *l)).collect();
        let next = merge_feeds(&refs);
        active = swap_checked(&mut trie, &next, active, &probes());
    }
}
