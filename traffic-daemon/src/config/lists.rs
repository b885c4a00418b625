//! Keys that take one value or a list: `cidr = "10.0.0.0/8"` or
//! `cidr = ["198.18.0.0/24", "2001:db8::/48"]` in `[[rules]]`, and `port = 22`,
//! `port = "8000-8099"` or `port = [22, "8000-8099"]` in `[[ports]]`.
//!
//! A list is shorthand for repeating the table once per element: each CIDR becomes its own
//! rule and each port of a range its own port rule (the kernel keeps one entry per CIDR and
//! per port), counted against the maps' capacities after expansion. Raw forms only; the
//! expansion and its checks are in `validate::rules`.

use std::{fmt, ops::Range};

use serde::{
    Deserialize, Deserializer,
    de::{IntoDeserializer as _, SeqAccess, Visitor, value::Error as ValueError},
};
use toml::Spanned;

/// One value, or a list of them, each with its own span.
pub(super) enum OneOrList<T> {
    One(T),
    List(Vec<Spanned<T>>),
}

impl<T> OneOrList<T> {
    /// How many elements.
    pub(super) fn len(&self) -> usize {
        match self {
            OneOrList::One(_) => 1,
            OneOrList::List(l) => l.len(),
        }
    }

    /// Every element with its span (the whole value's `span` for the single form) and its
    /// index in the list (`None` for the single form, whose key has no index).
    pub(super) fn items(&self, span: Range<usize>) -> Vec<(Range<usize>, &T, Option<usize>)> {
        match self {
            OneOrList::One(v) => vec![(span, v, None)],
            OneOrList::List(l) => l
                .iter()
                .enumerate()
                .map(|(i, v)| (v.span(), v.get_ref(), Some(i)))
                .collect(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrList<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one value or a list of values")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer())
                    .map(OneOrList::One)
                    .map_err(|e: ValueError| E::custom(e))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer())
                    .map(OneOrList::One)
                    .map_err(|e: ValueError| E::custom(e))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(OneOrList::List(out))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// One element of `port`: a number, or a string holding a number or a range `"LOW-HIGH"`.
pub(super) enum PortItem {
    Number(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for PortItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a range such as \"8000-8099\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortItem, E> {
                Ok(PortItem::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortItem, E> {
                Ok(PortItem::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortItem, E> {
                Ok(PortItem::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl PortItem {
    /// The inclusive range this element names, or why it names none.
    pub(super) fn range(&self) -> Result<(u16, u16), String> {
        let port = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u32>() {
                Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
                _ => Err(format!(
                    "`{s}` is not a port between 1 and 65535 (or a range such as \"8000-8099\")"
                )),
            }
        };
        match self {
            PortItem::Number(n) => match u16::try_from(*n) {
                Ok(p) if p > 0 => Ok((p, p)),
                _ => Err("must be a port between 1 and 65535".to_owned()),
            },
            PortItem::Text(t) => match t.split_once('-') {
                None => port(t).map(|p| (p, p)),
                Some((lo, hi)) => {
                    let (lo, hi) = (port(lo)?, port(hi)?);
                    if lo > hi {
                        return Err(format!("range `{t}` runs backwards (write {hi}-{lo})"));
                    }
                    Ok((lo, hi))
                }
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        cidr: Spanned<OneOrList<String>>,
        port: Spanned<OneOrList<PortItem>>,
    }

    fn ranges(text: &str) -> Vec<Result<(u16, u16), String>> {
        let d: Doc = toml::from_str(&format!("cidr = \"x\"\nport = {text}\n")).unwrap();
        d.port
            .get_ref()
            .items(d.port.span())
            .into_iter()
            .map(|(_, p, _)| p.range())
            .collect()
    }

    #[test]
    fn one_value_or_a_list_each_element_with_its_span() {
        let text = "cidr = [\"a\", \"bb\"]\nport = 22\n";
        let d: Doc = toml::from_str(text).unwrap();
        let items = d.cidr.get_ref().items(d.cidr.span());
        assert_eq!(items.len(), 2);
        assert_eq!(&text[items[1].0.clone()], "\"bb\"");
        assert_eq!((items[1].1.as_str(), items[1].2), ("bb", Some(1)));
        let one = d.port.get_ref().items(d.port.span());
        assert_eq!(one.len(), 1);
        assert_eq!((&text[one[0].0.clone()], one[0].2), ("22", None));
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(ranges("22"), vec![Ok((22, 22))]);
        assert_eq!(ranges("\"8000-8099\""), vec![Ok((8000, 8099))]);
        assert_eq!(
            ranges("[22, \"443\", \"8000 - 8001\"]"),
            vec![Ok((22, 22)), Ok((443, 443)), Ok((8000, 8001))]
        );
        for bad in [
            "0",
            "65536",
            "-1",
            "\"9-8\"",
            "\"1-70000\"",
            "\"a-b\"",
            "\"\"",
        ] {
            assert!(ranges(bad)[0].is_err(), "{bad}");
        }
        assert!(toml::from_str::<Doc>("cidr = 5\nport = 1\n").is_err());
        assert!(toml::from_str::<Doc>("cidr = \"x\"\nport = 1.5\n").is_err());
    }
}
