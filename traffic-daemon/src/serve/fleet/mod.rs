//! The fleet task: this node's link to the Redis/Valkey server of `[fleet]` (see
//! [`crate::fleet`] for the keys and what is shared), `/v1/fleet`, and the `traffic_fleet_*`
//! families of the exposition (called once from [`super::metrics::render`]).
//!
//! The task is its own: the control loop never awaits it. It takes the engine's lock only
//! to read a status or apply a ban, never across a Redis call, and every Redis call has a
//! timeout. When Redis is away the node keeps enforcing what it has (bans already received
//! stay until they end) and reconnects with exponential backoff and jitter.

mod budget;
mod session;

use std::{
    hash::{BuildHasher, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, extract::State, http::StatusCode};
use tokio::sync::mpsc;

use super::{
    Shared,
    admin::Failure,
    exposition::{Exposition, Kind},
};
use crate::{
    bans::{Ban, Prefix},
    config::fleet::FleetConfig,
    fleet::{FleetSnapshot, SharedSnapshot, credentials},
};

/// What the admin API hands the task: a ban to share, or one to lift everywhere.
#[derive(Clone, Debug)]
pub enum Outgoing {
    Ban(Ban),
    Unban(Prefix),
}

/// Bans queued for the task at most (a full queue refuses `--fleet` with 503).
const QUEUE: usize = 1024;

/// What `run` needs, resolved at start (credentials read, node name known).
pub struct Settings {
    pub config: FleetConfig,
    pub node: String,
    pub credentials: Option<credentials::Credentials>,
    /// `ca_file`'s PEM bytes.
    pub root_cert: Option<Vec<u8>>,
}

impl Settings {
    /// Resolve `[fleet]`: the node name (the host name by default) and the credentials
    /// file, whose problems stop the daemon at start rather than leave it half-connected.
    pub fn resolve(config: &FleetConfig) -> Result<Self, String> {
        let node = match &config.node {
            Some(n) => n.clone(),
            None => host_name()?,
        };
        if config.url.starts_with("rediss://") {
            #[allow(
                deprecated,
                reason = "ring lacks post-quantum key exchange; aws-lc-rs would add a C and cmake build"
            )]
            // rustls needs one process-wide provider; an error means one is installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let credentials = match &config.credentials_file {
            Some(path) => Some(credentials::read(path)?),
            None => None,
        };
        let root_cert = match &config.ca_file {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("fleet ca_file {}: {e}", path.display()))?;
                if bytes.len() > 1 << 20 || !bytes.starts_with(b"-----BEGIN") {
                    return Err(format!(
                        "fleet ca_file {}: not a PEM file of at most 1 MiB",
                        path.display()
                    ));
                }
                Some(bytes)
            }
            None => None,
        };
        Ok(Self {
            config: config.clone(),
            node,
            credentials,
            root_cert,
        })
    }
}

/// The host name, as a fleet node name.
fn host_name() -> Result<String, String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("cannot read the host name: {e}"))?;
    let name = text.trim().split('.').next().unwrap_or("").to_owned();
    if crate::config::fleet::valid_name(&name) {
        Ok(name)
    } else {
        Err(format!(
            "the host name `{}` is not a usable fleet node name: set [fleet] node",
            name.escape_debug()
        ))
    }
}

/// The channel to the task and the snapshot it keeps up to date.
pub fn channel(
    s: &Settings,
) -> (
    mpsc::Sender<Outgoing>,
    mpsc::Receiver<Outgoing>,
    SharedSnapshot,
) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let snap = Arc::new(Mutex::new(FleetSnapshot {
        node: s.node.clone(),
        url: s.config.url.clone(),
        error: Some("connecting".into()),
        ..FleetSnapshot::default()
    }));
    (tx, rx, snap)
}

/// The task: sessions with Redis, and between them a backoff (100 ms doubling to 10 s,
/// with jitter) during which bans to share are kept for the next session.
pub async fn run(
    s: Settings,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Outgoing>,
    snap: SharedSnapshot,
) {
    let mut cx = match session::Cx::new(s, shared, snap) {
        Ok(cx) => cx,
        Err(e) => {
            tracing::error!(error = %e, "fleet: unusable settings; staying on our own");
            return;
        }
    };
    let mut failures: u32 = 0;
    loop {
        let started = std::time::Instant::now();
        match cx.session(&mut rx).await {
            Ok(()) => return,
            Err(e) => {
                if started.elapsed() > Duration::from_secs(10) {
                    failures = 0;
                }
                tracing::warn!(error = %e, "fleet: disconnected; enforcing locally");
                cx.disconnected(&e);
            }
        }
        let delay = backoff(failures);
        failures = failures.saturating_add(1);
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => {
                    cx.drain_outbox();
                    break;
                }
                o = rx.recv() => match o {
                    Some(o) => cx.keep(o),
                    None => return,
                },
            }
        }
    }
}

/// Delay before reconnect attempt `n`: 100 ms · 2ⁿ capped at 10 s, times a random factor in
/// [0.5, 1) so that nodes cut off together do not come back in step.
fn backoff(n: u32) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1 << n.min(7))
        .min(Duration::from_secs(10));
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    base.mul_f64(0.5 + (r % 1000) as f64 / 2000.0)
}

/// Refuse `--fleet` when there is no `[fleet]`.
pub(super) fn usable(s: &Shared) -> Result<(), Failure> {
    if s.fleet.is_some() {
        Ok(())
    } else {
        Err(Failure(
            StatusCode::BAD_REQUEST,
            "--fleet: this node has no [fleet] section".into(),
        ))
    }
}

/// Hand a ban to the task (it is already enforced here; sharing follows, and is retried
/// at every reconnect while the ban lasts).
pub(super) fn share(s: &Shared, o: Outgoing) {
    if let Some(tx) = &s.fleet
        && let Err(e) = tx.try_send(o)
    {
        tracing::warn!(error = %e, "fleet: queue full; the ban is enforced here only");
    }
}

/// `GET /v1/fleet`.
pub(super) async fn view(State(s): State<Arc<Shared>>) -> Result<Json<FleetSnapshot>, Failure> {
    let snap = s.lock().fleet.clone();
    match snap {
        Some(f) => Ok(Json(f.lock().unwrap_or_else(|e| e.into_inner()).clone())),
        None => Err(Failure(
            StatusCode::NOT_FOUND,
            "no [fleet] section: this node is on its own".into(),
        )),
    }
}

/// `traffic_fleet_*`: absent without `[fleet]`.
pub fn render(e: &mut Exposition, snap: Option<&SharedSnapshot>) {
    let Some(snap) = snap else { return };
    let s = snap.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let now = crate::api::bans::unix_now_ms();
    let gauge = |e: &mut Exposition, name: &str, help: &str, v: f64| {
        e.family(name, Kind::Gauge, help).sample(name, &[], v);
    };
    let counter = |e: &mut Exposition, name: &str, help: &str, v: u64| {
        e.family(name, Kind::Counter, help)
            .sample(name, &[], v as f64);
    };
    gauge(
        e,
        "traffic_fleet_connected",
        "1 while connected to the fleet's Redis.",
        f64::from(u8::from(s.connected)),
    );
    gauge(
        e,
        "traffic_fleet_sync_lag_seconds",
        "Seconds since the last successful exchange with the fleet's Redis (-1: never).",
        s.lag_seconds(now).unwrap_or(-1.0),
    );
    counter(
        e,
        "traffic_fleet_bans_received_total",
        "Bans taken from other nodes.",
        s.bans_received,
    );
    counter(
        e,
        "traffic_fleet_bans_sent_total",
        "Bans shared with the fleet (sent or re-published).",
        s.bans_sent,
    );
    counter(
        e,
        "traffic_fleet_budget_corrections_total",
        "Debits of local buckets by other nodes' consumption (fleet budgets).",
        s.budget_corrections,
    );
    gauge(
        e,
        "traffic_fleet_budget_sources",
        "Sources of scope = \"fleet\" classes this node shares its use of now.",
        s.budget_shared as f64,
    );
    counter(
        e,
        "traffic_fleet_budget_refused_total",
        "Entries of other nodes' use refused (malformed, unknown class, over the bound).",
        s.budget_refused,
    );
    gauge(
        e,
        "traffic_fleet_nodes",
        "Nodes whose heartbeat is alive, this one included.",
        s.nodes.len() as f64,
    );
}
