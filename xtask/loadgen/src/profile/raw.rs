//! The profile file as serde reads it: every value with its span, for error locations.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    pub(super) description: Option<Spanned<String>>,
    pub(super) rate: Spanned<f64>,
    pub(super) duration: Spanned<String>,
    pub(super) ramp_up: Option<Spanned<String>>,
    pub(super) ramp_down: Option<Spanned<String>>,
    pub(super) think_time: Option<Spanned<String>>,
    pub(super) ipv6: Option<Spanned<f64>>,
    pub(super) max_packets: Option<Spanned<u64>>,
    #[serde(default)]
    pub(super) pauses: Vec<Spanned<RawPause>>,
    pub(super) classes: Spanned<BTreeMap<Spanned<String>, Spanned<RawClass>>>,
    pub(super) workloads: Spanned<Vec<Spanned<RawWorkload>>>,
    pub(super) degrade: Option<Spanned<RawDegrade>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPause {
    pub(super) at: Spanned<String>,
    #[serde(rename = "for")]
    pub(super) length: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClass {
    pub(super) share: Spanned<f64>,
    pub(super) sources: Option<Spanned<u32>>,
    pub(super) tcp_clients: Option<Spanned<u32>>,
    pub(super) heavy: Option<Spanned<RawHeavy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeavy {
    pub(super) sources: Spanned<u32>,
    pub(super) share: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    pub(super) kind: Spanned<String>,
    pub(super) share: Spanned<f64>,
    pub(super) port: Option<Spanned<u16>>,
    pub(super) sizes: Option<Spanned<Vec<Spanned<u32>>>>,
    pub(super) classes: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) upstream: Option<Spanned<String>>,
    pub(super) request: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) max_in_flight: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDegrade {
    pub(super) upstream: Spanned<String>,
    pub(super) mode: Spanned<String>,
    pub(super) at: Spanned<String>,
    #[serde(rename = "for")]
    pub(super) length: Spanned<String>,
    pub(super) delay: Option<Spanned<String>>,
    pub(super) drop: Option<Spanned<f64>>,
    pub(super) reset: Option<Spanned<f64>>,
}
