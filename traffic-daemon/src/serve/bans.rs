//! `/v1/bans` (list, add, remove; the mutating ones behind the admin API's control check)
//! and the ban families of the Prometheus exposition (called once from
//! [`super::metrics::render`]).

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    extract::{Query, State},
};

use super::{
    Shared,
    admin::Failure,
    exposition::{Exposition, Kind},
};
use crate::{
    api::bans::{BanAnswer, BanRequest, BansReport},
    bans::{BansSnapshot, MAX_BANS, Prefix, offender::WALK_INTERVAL},
    ops::sources::WALK_BUDGET,
};

/// The offender detector's loop: every [`WALK_INTERVAL`], while a class has an offender
/// setting, walk the bucket map off the engine's lock (one walk at a time, bounded in
/// entries and by [`WALK_BUDGET`]), keep the readings of offender classes only, and hand
/// them to the engine.
pub async fn offenders(s: Arc<Shared>) {
    let mut tick = tokio::time::interval(WALK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(_turn) = super::walks::WALKS.acquire().await else {
            return;
        };
        let (walker, watched) = {
            let core = s.lock();
            if !core.watches_offenders() {
                continue;
            }
            (core.dp.bucket_walker(), core.offender_slots())
        };
        let walker = match walker {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "offenders: cannot walk the bucket map");
                continue;
            }
        };
        let walked = tokio::task::spawn_blocking(move || {
            let mut readings = Vec::new();
            let end = walker.walk(Instant::now() + WALK_BUDGET, |k, b| {
                if k.class < 64 && watched & (1 << k.class) != 0 {
                    readings.push((*k, *b));
                }
            });
            end.map(|_| readings)
        })
        .await;
        match walked {
            Ok(Ok(readings)) => s.lock().offender_walk(&readings),
            Ok(Err(e)) => tracing::warn!(error = %e, "offenders: the walk failed"),
            Err(e) => tracing::warn!(error = %e, "offenders: the walk failed"),
        }
    }
}

pub(super) async fn list(State(s): State<Arc<Shared>>) -> Json<BansReport> {
    let core = s.lock();
    Json(BansReport {
        now_unix_ms: core.ban_now_ms(),
        capacity: MAX_BANS,
        bans: core.list_bans(),
    })
}

pub(super) async fn add(
    State(s): State<Arc<Shared>>,
    Json(req): Json<BanRequest>,
) -> Result<Json<BanAnswer>, Failure> {
    if req.fleet {
        super::fleet::usable(&s)?;
    }
    let (ban, replaced) = s.lock().ban(&req)?;
    if req.fleet {
        super::fleet::share(&s, super::fleet::Outgoing::Ban(ban.clone()));
    }
    Ok(Json(BanAnswer { ban, replaced }))
}

#[derive(serde::Deserialize)]
pub(super) struct PrefixQuery {
    prefix: String,
    #[serde(default)]
    fleet: bool,
}

pub(super) async fn remove(
    State(s): State<Arc<Shared>>,
    Query(q): Query<PrefixQuery>,
) -> Result<Json<BanAnswer>, Failure> {
    let prefix = Prefix::parse(&q.prefix).map_err(crate::ops::OpError::from)?;
    if q.fleet {
        super::fleet::usable(&s)?;
    }
    let ban = s.lock().remove_ban(&prefix)?;
    if q.fleet {
        super::fleet::share(&s, super::fleet::Outgoing::Unban(prefix));
    }
    Ok(Json(BanAnswer {
        ban,
        replaced: false,
    }))
}

/// `traffic_bans_active`, `traffic_bans_total{reason}`, `traffic_auto_bans_total{class}`.
/// Banned packets are `traffic_packets_total{reason="banned"}` (with the other verdicts).
pub fn render(e: &mut Exposition, s: &BansSnapshot) {
    e.family(
        "traffic_bans_active",
        Kind::Gauge,
        "Bans in force (operator, automatic and fleet).",
    )
    .sample("traffic_bans_active", &[], s.active as f64);
    e.rows(
        "traffic_bans_total",
        Kind::Counter,
        "Bans made since start, by reason (at most 32 reasons; the rest are `other`).",
        s.made
            .iter()
            .map(|(r, n)| (vec![("reason", r.clone())], *n as f64)),
    );
    e.rows(
        "traffic_auto_bans_total",
        Kind::Counter,
        "Automatic bans of persistent offenders since start, by class.",
        s.auto
            .iter()
            .map(|(c, n)| (vec![("class", c.clone())], *n as f64)),
    );
}
