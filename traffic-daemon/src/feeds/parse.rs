//! Feed text → prefixes. One parser reads the three formats met in the wild:
//!
//! - plain lists: an address or CIDR per line, `#` comments (whole line or trailing);
//! - FireHOL netsets: the same, with a `#` header;
//! - Spamhaus DROP/EDROP: `; comment` lines and `prefix ; SBLnnn` entries.
//!
//! Both families; an IPv4-mapped IPv6 entry (`::ffff:a.b.c.d/120`) counts as IPv4. Host bits
//! below the prefix length are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
//!
//! Invalid lines are counted and skipped, the first [`REPORTED_INVALID`] kept for the
//! error message and the status, but the feed is refused as a whole when it is mostly
//! garbage: more than [`MAX_INVALID_PERCENT`] % of its entry lines are invalid (an HTML
//! error page served with status 200, a changed format), or it has no valid entry at all (a
//! truncated or empty download must not replace a good list with nothing). A feed over its
//! `max_prefixes` is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Invalid lines quoted in a report.
pub const REPORTED_INVALID: usize = 5;
/// A feed with more invalid entry lines than this percentage is refused.
pub const MAX_INVALID_PERCENT: usize = 10;
/// Longest line read as an entry; longer lines are invalid.
const MAX_LINE: usize = 256;

/// A prefix as a left-aligned 128-bit address and a length: IPv4 in the top 32 bits
/// (length 0–32), IPv6 as is (0–128). Host bits are zero.
pub type Key = (u128, u8);

/// What a feed lists, per family, sorted and without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefixes {
    pub v4: Vec<Key>,
    pub v6: Vec<Key>,
}

impl Prefixes {
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed feed and what was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub prefixes: Prefixes,
    /// Invalid entry lines skipped.
    pub invalid: usize,
    /// The first few of them: (line number from 1, text).
    pub first_invalid: Vec<(usize, String)>,
}

/// Why a feed was refused as a whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not UTF-8 text")]
    NotText,
    #[error("{invalid} of {lines} entry lines are invalid (more than {MAX_INVALID_PERCENT} %), e.g. {}", quote(.first))]
    MostlyGarbage {
        invalid: usize,
        lines: usize,
        first: Vec<(usize, String)>,
    },
    #[error("no valid prefix{}", if .invalid > &0 { format!(" ({} invalid lines, e.g. {})", .invalid, quote(.first)) } else { String::new() })]
    Empty {
        invalid: usize,
        first: Vec<(usize, String)>,
    },
    #[error("{count} prefixes, over max_prefixes = {max}")]
    TooMany { count: usize, max: u32 },
}

fn quote(lines: &[(usize, String)]) -> String {
    lines
        .iter()
        .map(|(n, t)| format!("line {n}: `{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parse a feed's bytes, refusing it as described in the module documentation.
pub fn parse(bytes: &[u8], max_prefixes: u32) -> Result<Parsed, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::NotText)?;
    let mut prefixes = Prefixes::default();
    let (mut lines, mut invalid) = (0usize, 0usize);
    let mut first = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split(['#', ';']).next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        lines += 1;
        match (entry.len() <= MAX_LINE)
            .then(|| entry_key(entry))
            .flatten()
        {
            Some((false, k)) => prefixes.v4.push(k),
            Some((true, k)) => prefixes.v6.push(k),
            None => {
                invalid += 1;
                if first.len() < REPORTED_INVALID {
                    first.push((i + 1, line.chars().take(80).collect()));
                }
            }
        }
        if prefixes.len() > max_prefixes as usize * 2 {
            // Far over the bound: stop reading (duplicates may still bring it down).
            break;
        }
    }
    if invalid * 100 > lines * MAX_INVALID_PERCENT {
        return Err(ParseError::MostlyGarbage {
            invalid,
            lines,
            first,
        });
    }
    for v in [&mut prefixes.v4, &mut prefixes.v6] {
        v.sort_unstable();
        v.dedup();
    }
    if prefixes.is_empty() {
        return Err(ParseError::Empty { invalid, first });
    }
    if prefixes.len() > max_prefixes as usize {
        return Err(ParseError::TooMany {
            count: prefixes.len(),
            max: max_prefixes,
        });
    }
    Ok(Parsed {
        prefixes,
        invalid,
        first_invalid: first,
    })
}

/// One entry (`addr` or `addr/len`) as (is IPv6, key).
fn entry_key(entry: &str) -> Option<(bool, Key)> {
    let (addr, len) = match entry.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (entry, None),
    };
    let len: Option<u8> = match len {
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            Some(l.parse().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => v4_key(a, len.unwrap_or(32)).map(|k| (false, k)),
        IpAddr::V6(a) => {
            let len = len.unwrap_or(128);
            match a.to_ipv4_mapped() {
                Some(v4) if len >= 96 => v4_key(v4, len - 96).map(|k| (false, k)),
                _ => v6_key(a, len).map(|k| (true, k)),
            }
        }
    }
}

fn v4_key(a: Ipv4Addr, len: u8) -> Option<Key> {
    (len <= 32).then(|| (mask(u128::from(u32::from(a)) << 96, len), len))
}

fn v6_key(a: Ipv6Addr, len: u8) -> Option<Key> {
    (len <= 128).then(|| (mask(u128::from(a), len), len))
}

/// `addr` with the bits below the first `len` cleared.
pub fn mask(addr: u128, len: u8) -> u128 {
    addr & traffic_common::prefix_mask(u32::from(len))
}

/// A key's text, for messages and tests.
pub fn key_text(v6: bool, (addr, len): Key) -> String {
    if v6 {
        format!("{}/{len}", Ipv6Addr::from(addr))
    } else {
        format!("{}/{len}", Ipv4Addr::from((addr >> 96) as u32))
    }
}

#[cfg(test)]
mod tests;
