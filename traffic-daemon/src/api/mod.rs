//! The admin API as both sides see it: the `/v1` wire types and the one client.
//!
//! The server (`admin`) and every caller (`trafficctl`, the test kit, the load generator)
//! share these, so a JSON shape is defined once.

pub mod bans;
pub mod circuits;
pub mod client;
pub mod fleet;
pub mod render;
pub mod report;
pub mod watch;

pub use client::{Client, ClientError, Response};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    config::{Mode, OnExit},
    dataplane::AttachedMode,
};

/// Body of every error response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// A one-line answer to an operation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub message: String,
}

/// Outcome of the last reload.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReloadStatus {
    pub succeeded: u64,
    pub failed: u64,
    /// Unix time of the last attempt.
    pub last_attempt_unix: Option<u64>,
    /// Unix time of the last successful (re)load.
    pub last_success_unix: Option<u64>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

/// One interface of the config, attached or not.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InterfaceStatus {
    pub name: String,
    /// How the program is attached; `None` while detached.
    pub mode: Option<AttachedMode>,
    /// Whether the XDP and TC programs are attached now: false while the interface is
    /// missing (deleted, not yet created) or attaching to it failed.
    pub attached: bool,
    /// The index of the interface attached to (a recreated one gets a new index).
    #[serde(default)]
    pub ifindex: Option<u32>,
}

/// One class as configured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassStatus {
    pub name: String,
    pub slot: u32,
    pub mode: Mode,
    pub priority: crate::config::Priority,
    pub limited: bool,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub version: String,
    pub abi_version: u32,
    pub pid: u32,
    pub uptime_seconds: u64,
    pub config_path: PathBuf,
    /// Files of the include directory merged into the running config, in order.
    #[serde(default)]
    pub config_included: Vec<PathBuf>,
    pub mode: Mode,
    pub on_exit: OnExit,
    pub adopted_pinned_state: bool,
    pub interfaces: Vec<InterfaceStatus>,
    pub classes: Vec<ClassStatus>,
    pub rules: usize,
    pub reload: ReloadStatus,
    /// Fault injections in force.
    pub chaos: Vec<ChaosStatus>,
    /// Throttle level and readings.
    pub throttle: Option<crate::policy::throttle::ThrottleStatus>,
    /// Buckets rewritten by the last limit change.
    pub last_rescale_buckets: usize,
    /// The fleet connection, when `[fleet]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::fleet::FleetStatus>,
}

/// The result of applying a config: how many map entries were written.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Applied {
    pub writes: usize,
}

/// `POST /v1/chaos`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChaosRequest {
    pub upstream: Option<String>,
    pub class: Option<String>,
    /// Fraction of packets dropped.
    #[serde(default)]
    pub drop: f64,
    /// Fraction of new TCP connections reset.
    #[serde(default)]
    pub reset: f64,
    /// How long, e.g. "30s" (at most 1h).
    pub duration: String,
}

/// A fault injection in force.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChaosStatus {
    pub target: String,
    pub drop_ratio: f64,
    pub reset_ratio: f64,
    pub expires_in_seconds: f64,
}

/// Answer of `POST /v1/sources/{addr}/reset`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResetAnswer {
    pub removed: usize,
}
