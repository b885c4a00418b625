//! `GET /v1/watch`: the filter (query parameters) and the NDJSON lines of the stream, and
//! how `trafficctl watch` prints them. Pure: parsing, matching and rendering are
//! unit-tested here.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use traffic_common::{Addr, FATE_DROP, FATE_REPLY, Reason, UNCLASSIFIED, WatchEvent, v4_mapped};

/// The query of `GET /v1/watch` as sent (every parameter optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchQuery {
    /// An address or a CIDR of either family.
    pub source: Option<String>,
    /// A class name.
    pub class: Option<String>,
    /// A verdict reason ([`Reason::name`]).
    pub reason: Option<String>,
    /// A destination port.
    pub port: Option<u16>,
    /// Drops (and would-drops in monitor mode) only.
    pub drops: Option<bool>,
}

impl WatchQuery {
    /// The query string (with its `?`), empty when no parameter is set.
    pub fn to_query_string(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.source {
            parts.push(format!("source={}", escape(s)));
        }
        if let Some(c) = &self.class {
            parts.push(format!("class={}", escape(c)));
        }
        if let Some(r) = &self.reason {
            parts.push(format!("reason={}", escape(r)));
        }
        if let Some(p) = self.port {
            parts.push(format!("port={p}"));
        }
        if self.drops == Some(true) {
            parts.push("drops=true".to_owned());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// Percent-encode what a query value may not hold as is (`/` of a CIDR stays: it is legal
/// in a query).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A source prefix as the program keys addresses ([`Addr`], IPv4 mapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: Addr,
    /// Bits of `addr` that must match, 0..=128.
    pub bits: u32,
}

impl Prefix {
    /// Parse an address (a /32 or /128) or a CIDR; host bits are ignored.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let ip: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an address or a CIDR"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(match ip {
            IpAddr::V4(v4) => Self {
                addr: v4_mapped(v4.octets()),
                bits: bits + 96,
            },
            IpAddr::V6(v6) => Self {
                addr: v6.octets(),
                bits,
            },
        })
    }

    /// Whether `addr` is in the prefix.
    pub fn contains(&self, addr: &Addr) -> bool {
        let full = (self.bits / 8) as usize;
        if self.addr[..full] != addr[..full] {
            return false;
        }
        let rest = self.bits % 8;
        if rest == 0 {
            return true;
        }
        let mask = 0xffu8 << (8 - rest);
        self.addr[full] & mask == addr[full] & mask
    }
}

/// A parsed, validated [`WatchQuery`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFilter {
    pub source: Option<Prefix>,
    pub class: Option<String>,
    pub reason: Option<Reason>,
    pub port: Option<u16>,
    pub drops: bool,
}

impl WatchFilter {
    /// Validate a query; the error says which parameter is wrong and what would do.
    pub fn parse(q: &WatchQuery) -> Result<Self, String> {
        let source = q.source.as_deref().map(Prefix::parse).transpose()?;
        let reason = match q.reason.as_deref() {
            None => None,
            Some(r) => Some(
                Reason::ALL
                    .iter()
                    .copied()
                    .find(|x| x.name() == r)
                    .ok_or_else(|| {
                        let names: Vec<&str> = Reason::ALL.iter().map(|x| x.name()).collect();
                        format!("unknown reason `{r}`; one of: {}", names.join(", "))
                    })?,
            ),
        };
        Ok(Self {
            source,
            class: q.class.clone(),
            reason,
            port: q.port,
            drops: q.drops.unwrap_or(false),
        })
    }

    /// Whether the event passes the filter; `class` is the name of its row (`None` when
    /// unclassified).
    pub fn matches(&self, ev: &WatchEvent, class: Option<&str>) -> bool {
        if self.drops && !Reason::from_u32(u32::from(ev.reason)).is_some_and(Reason::is_drop) {
            return false;
        }
        if self.reason.is_some_and(|r| r as u8 != ev.reason) {
            return false;
        }
        if self.port.is_some_and(|p| p != ev.dport) {
            return false;
        }
        if self.class.as_deref().is_some_and(|c| Some(c) != class) {
            return false;
        }
        self.source.is_none_or(|p| p.contains(&ev.addr))
    }
}

/// One line of the stream: a verdict with names resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictLine {
    /// When, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Interface name (`if<N>` when the index is not one of ours).
    pub interface: String,
    pub ifindex: u32,
    /// The packet's source; `None` for frames without one (non-IP, malformed).
    pub source: Option<IpAddr>,
    pub dport: u16,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the protocol number.
    pub protocol: String,
    /// Class name; `-` when unclassified.
    pub class: String,
    pub reason: String,
    /// `pass`, `drop`, `reset` (answered with a RST) or `would_drop` (monitor mode).
    pub action: String,
    /// Frame length, bytes.
    pub len: u32,
}

impl VerdictLine {
    /// Decode a kernel event; `unix_ns` is its time on the wall clock.
    pub fn decode(ev: &WatchEvent, unix_ns: u64, interface: String, class: Option<&str>) -> Self {
        let reason = Reason::from_u32(u32::from(ev.reason)).map_or("unknown", Reason::name);
        let action = match ev.fate {
            FATE_DROP => "drop",
            FATE_REPLY => "reset",
            _ if ev.monitored != 0 => "would_drop",
            _ => "pass",
        };
        Self {
            time: rfc3339_ms(unix_ns),
            interface,
            ifindex: ev.ifindex,
            source: source_of(&ev.addr),
            dport: ev.dport,
            protocol: protocol_name(ev.protocol),
            class: match class {
                Some(c) if u32::from(ev.row) != UNCLASSIFIED => c.to_owned(),
                _ => "-".to_owned(),
            },
            reason: reason.to_owned(),
            action: action.to_owned(),
            len: ev.len,
        }
    }

    /// The human line of `trafficctl watch`.
    pub fn render(&self) -> String {
        let source = self
            .source
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        // "HH:MM:SS.mmm" of the RFC 3339 time.
        let clock = self.time.get(11..23).unwrap_or(&self.time);
        format!(
            "{clock}  {:<10} {:<39} {:>5}/{:<5} {:<12} {:<15} {:<10} {}\n",
            self.interface,
            source,
            self.dport,
            self.protocol,
            self.class,
            self.reason,
            self.action,
            self.len
        )
    }
}

/// The address of a key; `None` for the all-zero "no source".
fn source_of(addr: &Addr) -> Option<IpAddr> {
    if addr.iter().all(|b| *b == 0) {
        return None;
    }
    let v6 = std::net::Ipv6Addr::from(*addr);
    Some(match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    })
}

fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        1 => "icmp".to_owned(),
        58 => "icmpv6".to_owned(),
        0 => "-".to_owned(),
        n => n.to_string(),
    }
}

/// `unix_ns` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (civil-from-days, proleptic Gregorian).
pub fn rfc3339_ms(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let ms = (unix_ns / 1_000_000) % 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The header of `trafficctl watch`'s table.
pub const HEADER: &str = "TIME          INTERFACE  SOURCE                                   PORT/PROTO CLASS        REASON          ACTION     LEN\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn event(src: [u8; 4], dport: u16, reason: Reason, fate: u8) -> WatchEvent {
        WatchEvent {
            addr: v4_mapped(src),
            dport,
            protocol: 17,
            reason: reason as u8,
            row: 1,
            fate,
            len: 74,
            ifindex: 3,
            ..WatchEvent::default()
        }
    }

    #[test]
    fn prefixes_of_both_families_match_their_members_only() {
        let p = Prefix::parse("198.18.1.0/24").unwrap();
        assert!(p.contains(&v4_mapped([198, 18, 1, 77])));
        assert!(!p.contains(&v4_mapped([198, 18, 2, 1])));
        let host = Prefix::parse("198.18.1.7").unwrap();
        assert_eq!(host.bits, 128);
        assert!(host.contains(&v4_mapped([198, 18, 1, 7])));
        assert!(!host.contains(&v4_mapped([198, 18, 1, 8])));
        let odd = Prefix::parse("198.18.0.0/15").unwrap();
        assert!(odd.contains(&v4_mapped([198, 19, 255, 1])));
        assert!(!odd.contains(&v4_mapped([198, 20, 0, 1])));
        let v6 = Prefix::parse("2001:db8:1::/48").unwrap();
        let inside: std::net::Ipv6Addr = "2001:db8:1:ff::9".parse().unwrap();
        let outside: std::net::Ipv6Addr = "2001:db8:2::9".parse().unwrap();
        assert!(v6.contains(&inside.octets()));
        assert!(!v6.contains(&outside.octets()));
        // An IPv4 prefix never matches an IPv6 source.
        assert!(!p.contains(&inside.octets()));
        assert!(Prefix::parse("::/0").unwrap().contains(&outside.octets()));
        for bad in ["198.18.1.0/33", "nope", "2001:db8::/129", "1.2.3.4/x"] {
            assert!(Prefix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_filter_narrows_and_drops_only_keeps_would_drops() {
        let q = WatchQuery {
            source: Some("198.18.1.0/24".into()),
            class: Some("premium".into()),
            reason: Some("packet_rate".into()),
            port: Some(9000),
            drops: Some(true),
        };
        let f = WatchFilter::parse(&q).unwrap();
        let hit = event([198, 18, 1, 2], 9000, Reason::PacketRate, FATE_DROP);
        assert!(f.matches(&hit, Some("premium")));
        assert!(!f.matches(&hit, Some("default")));
        assert!(!f.matches(
            &event([198, 18, 2, 2], 9000, Reason::PacketRate, FATE_DROP),
            Some("premium")
        ));
        assert!(!f.matches(
            &event([198, 18, 1, 2], 9001, Reason::PacketRate, FATE_DROP),
            Some("premium")
        ));
        assert!(!f.matches(
            &event([198, 18, 1, 2], 9000, Reason::ByteRate, FATE_DROP),
            Some("premium")
        ));
        let drops = WatchFilter {
            drops: true,
            ..WatchFilter::default()
        };
        assert!(!drops.matches(&event([1, 2, 3, 4], 1, Reason::Pass, 0), None));
        let mut would = event([1, 2, 3, 4], 1, Reason::Deny, 0);
        would.monitored = 1;
        assert!(drops.matches(&would, None));
        assert!(WatchFilter::default().matches(&event([1, 2, 3, 4], 1, Reason::Pass, 0), None));
        let e = WatchFilter::parse(&WatchQuery {
            reason: Some("slow".into()),
            ..WatchQuery::default()
        })
        .unwrap_err();
        assert!(e.contains("packet_rate"), "{e}");
    }

    #[test]
    fn events_decode_to_named_lines_that_round_trip_as_json() {
        let mut ev = event([198, 18, 1, 2], 9000, Reason::PacketRate, FATE_DROP);
        let line = VerdictLine::decode(
            &ev,
            1_764_892_800_123_000_000,
            "veth0".into(),
            Some("premium"),
        );
        assert_eq!(line.time, "2025-12-05T00:00:00.123Z");
        assert_eq!(line.source, Some("198.18.1.2".parse().unwrap()));
        assert_eq!(
            (
                line.protocol.as_str(),
                line.class.as_str(),
                line.reason.as_str(),
                line.action.as_str()
            ),
            ("udp", "premium", "packet_rate", "drop")
        );
        let json = serde_json::to_string(&line).unwrap();
        assert!(!json.contains('\n'));
        assert_eq!(serde_json::from_str::<VerdictLine>(&json).unwrap(), line);
        let text = line.render();
        // The columns start under their headings.
        for (head, value) in [
            ("INTERFACE", "veth0"),
            ("SOURCE", "198.18"),
            ("CLASS", "premium"),
            ("REASON", "packet_"),
            ("ACTION", "drop"),
            ("LEN", "74"),
        ] {
            assert_eq!(
                HEADER.find(head),
                text.find(value),
                "{head}\n{HEADER}{text}"
            );
        }
        for part in [
            "00:00:00.123",
            "veth0",
            "198.18.1.2",
            "9000/udp",
            "premium",
            "packet_rate",
            "drop",
            "74",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        ev.fate = 0;
        ev.monitored = 1;
        ev.row = UNCLASSIFIED as u8;
        ev.addr = [0; 16];
        let line = VerdictLine::decode(&ev, 0, "if3".into(), Some("x"));
        assert_eq!(
            (line.action.as_str(), line.class.as_str(), line.source),
            ("would_drop", "-", None)
        );
        assert_eq!(line.time, "1970-01-01T00:00:00.000Z");
        ev.fate = FATE_REPLY;
        assert_eq!(
            VerdictLine::decode(&ev, 0, String::new(), None).action,
            "reset"
        );
    }

    #[test]
    fn civil_dates_across_leap_years() {
        assert_eq!(
            rfc3339_ms(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_ms(1_798_761_599_999_000_000),
            "2026-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn queries_encode_only_what_is_set() {
        assert_eq!(WatchQuery::default().to_query_string(), "");
        let q = WatchQuery {
            source: Some("2001:db8::/32".into()),
            class: Some("a b".into()),
            port: Some(22),
            drops: Some(true),
            ..WatchQuery::default()
        };
        assert_eq!(
            q.to_query_string(),
            "?source=2001:db8::/32&class=a%20b&port=22&drops=true"
        );
    }
}
