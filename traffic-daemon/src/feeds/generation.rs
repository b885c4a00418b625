//! The feed tries' generations, planned in user space (pure).
//!
//! Each trie entry holds a verdict per generation ([`traffic_common::FeedValue`]); the
//! program reads the active one. A refresh writes the next generation while the active one
//! stays in force, flips the active generation (one write of the global entry, with a new
//! rule generation so cached classifications re-resolve), then deletes what only the old
//! generation had. No packet ever sees a half-loaded list.
//!
//! LPM tries return only the longest matching entry, so an entry's slot for a generation
//! holds the verdict *resolved* over every prefix of that generation covering it, not its
//! own listing: a more specific prefix written for the next generation then answers for a
//! covering prefix of the active one (and keeps answering until the flip), and deleting an
//! old entry after the flip leaves a shorter entry whose next-generation slot is already
//! right. For an address, the longest entry of the union covering it is covered by every
//! listed prefix of either generation that covers the address, so its resolved slot is the
//! answer.
//!
//! Precedence among feeds, for a source listed by several: any `deny` feed wins; else the
//! first class feed in file order listing it (by a covering prefix of any length) sets the
//! class.

use traffic_common::{FEED_CLASS_BASE, FEED_DENY, FEED_NONE};

use super::parse::Key;

/// How one feed lists a prefix (merged over feeds, see [`Listing::merge`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub deny: bool,
    /// (feed rank in file order, class slot) of the first class feed.
    pub class: Option<(u16, u16)>,
}

impl Listing {
    pub fn merge(self, other: Listing) -> Listing {
        Listing {
            deny: self.deny || other.deny,
            class: match (self.class, other.class) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// The kernel's verdict word.
    pub fn verdict(self) -> u16 {
        match (self.deny, self.class) {
            (true, _) => FEED_DENY,
            (false, Some((_, slot))) => FEED_CLASS_BASE + slot,
            (false, None) => FEED_NONE,
        }
    }
}

/// Merge sorted per-feed lists into one sorted list without duplicate keys.
pub fn merge_feeds(feeds: &[(&[Key], Listing)]) -> Vec<(Key, Listing)> {
    let mut all: Vec<(Key, Listing)> = feeds
        .iter()
        .flat_map(|(keys, l)| keys.iter().map(move |k| (*k, *l)))
        .collect();
    all.sort_unstable_by_key(|(k, _)| *k);
    let mut out: Vec<(Key, Listing)> = Vec::with_capacity(all.len());
    for (k, l) in all {
        match out.last_mut() {
            Some((lk, ll)) if *lk == k => *ll = ll.merge(l),
            _ => out.push((k, l)),
        }
    }
    out
}

/// The writes of one swap, in order: `updates`, flip, `deletes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swap {
    /// Entries to insert or overwrite before the flip.
    pub updates: Vec<(Key, [u16; 2])>,
    /// Entries to delete after the flip.
    pub deletes: Vec<Key>,
    /// What the trie holds after the swap, sorted.
    pub after: Vec<(Key, [u16; 2])>,
}

/// Whether `outer` covers `inner`.
fn covers(outer: Key, inner: Key) -> bool {
    outer.1 <= inner.1 && super::parse::mask(inner.0, outer.1) == outer.0
}

/// Plan the swap from `current` (the trie now, sorted; its `active` slots in force) to
/// the listings `next` (sorted, unique keys): written into slot `1 - active`.
pub fn plan(current: &[(Key, [u16; 2])], next: &[(Key, Listing)], active: usize) -> Swap {
    let nx = 1 - active;
    let mut swap = Swap::default();
    // Open prefixes of the union, outermost first: (key, resolved next listing, active
    // verdict in force there).
    let mut stack: Vec<(Key, Listing, u16)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < current.len() || j < next.len() {
        let ck = current.get(i).map(|e| e.0);
        let nk = next.get(j).map(|e| e.0);
        let key = match (ck, nk) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        let cur = (ck == Some(key)).then(|| current[i].1);
        let listed = (nk == Some(key)).then(|| next[j].1);
        i += usize::from(cur.is_some());
        j += usize::from(listed.is_some());
        while stack.last().is_some_and(|(k, _, _)| !covers(*k, key)) {
            stack.pop();
        }
        let (outer_next, outer_active) = stack
            .last()
            .map_or((Listing::default(), FEED_NONE), |(_, l, a)| (*l, *a));
        let resolved = listed.map_or(outer_next, |l| outer_next.merge(l));
        let active_verdict = cur.map_or(outer_active, |v| v[active]);
        stack.push((key, resolved, active_verdict));
        let mut value = [0u16; 2];
        value[active] = active_verdict;
        value[nx] = resolved.verdict();
        if cur != Some(value) {
            swap.updates.push((key, value));
        }
        if listed.is_some() {
            swap.after.push((key, value));
        } else {
            swap.deletes.push(key);
        }
    }
    swap
}

#[cfg(test)]
mod tests;
