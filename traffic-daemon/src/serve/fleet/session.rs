//! One connection to Redis and what runs over it: the subscription to ban events, the
//! bans this node shares, the heartbeat, the periodic reconcile and the budget sync
//! (`super::budget`).
//!
//! Redis operations per node: per heartbeat (1 s by default) one pipeline of 4 commands
//! (SET with PX, SADD, SMEMBERS, MGET) and a SREM when a node left; per sync (10 s) an HSCAN
//! pass over the ban hash (1 + bans/500 calls) and at most one HDEL of ended entries; per
//! shared ban one HSET + PUBLISH; per budget interval (200 ms), with a `scope = "fleet"`
//! class, one pipeline of at most `nodes + 2` commands. A flood of sources adds none: only
//! bans and the use of sources over a fraction of their limit travel.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, aio::MultiplexedConnection};
use tokio::{sync::mpsc, time::timeout};

use super::{Outgoing, Settings, Shared};
use crate::{
    api::bans::unix_now_ms,
    bans::{Ban, MAX_DURATION, Origin, Prefix},
    fleet::{
        Event, Heartbeat, Keys, MAX_LIST, MAX_NODES, SharedSnapshot, Tombstone, TopSource, WireBan,
        lifted_since, parse_value, reconcile,
    },
};

/// Most ban-hash entries read in one reconcile, whatever the hash holds.
const MAX_SCAN: usize = 2 * crate::bans::MAX_BANS;
/// Most ban events handled per second; past it they are skipped and the next reconcile
/// (brought forward) catches up, so a flood on the channel cannot hold the engine's lock.
const EVENTS_PER_SECOND: u32 = 500;
/// Bans written per hold of the engine's lock (one generation bump and state-file write
/// each), so a node joining a fleet of thousands of bans never holds the lock for long.
const APPLY_CHUNK: usize = 256;
/// How often the automatic bans of `scope = "fleet"` classes are taken from the engine.
const OUTBOX_EVERY: Duration = Duration::from_millis(100);
/// Top sources are read (a walk of the bucket map) every this many heartbeats.
const TOP_EVERY: u32 = 5;

pub(super) type RResult<T> = Result<T, String>;
/// A hash field and its value, as HSCAN gives them.
pub(super) type Field = (Vec<u8>, Vec<u8>);

/// The task's state across sessions.
pub(super) struct Cx {
    pub(super) s: Settings,
    pub(super) keys: Keys,
    client: Client,
    pub(super) shared: Arc<Shared>,
    pub(super) snap: SharedSnapshot,
    /// Bans this node shared (`--fleet`), by prefix; re-published when Redis lost them.
    own: BTreeMap<Prefix, Ban>,
    /// Lifted everywhere while disconnected: sent at the next session.
    unbans: BTreeSet<Prefix>,
    top: Vec<TopSource>,
    beats: u32,
    pub(super) budget: super::budget::Budget,
}

impl Cx {
    pub(super) fn new(s: Settings, shared: Arc<Shared>, snap: SharedSnapshot) -> RResult<Self> {
        let info = s
            .config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| e.to_string())?;
        // No CLIENT SETINFO at connect: one command less for the ACL (and Redis < 7.2).
        let mut r = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(c) = &s.credentials {
            r = r.set_password(&c.password);
            if let Some(u) = &c.user {
                r = r.set_username(u);
            }
        }
        let info = info.set_redis_settings(r);
        let client = match &s.root_cert {
            Some(pem) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(info),
        }
        .map_err(|e| e.to_string())?;
        let s_max = s.config.max_budget_sources;
        Ok(Self {
            keys: Keys::new(&s.config.namespace),
            s,
            client,
            shared,
            snap,
            own: BTreeMap::new(),
            unbans: BTreeSet::new(),
            top: Vec::new(),
            beats: 0,
            budget: super::budget::Budget::new(s_max),
        })
    }

    pub(super) fn with_snap(&self, f: impl FnOnce(&mut crate::fleet::FleetSnapshot)) {
        f(&mut self.snap.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(super) fn disconnected(&self, why: &str) {
        self.with_snap(|s| {
            s.connected = false;
            s.error = Some(why.chars().take(200).collect());
        });
    }

    /// Record a request made while disconnected (sent by the next session's reconcile).
    pub(super) fn keep(&mut self, o: Outgoing) {
        match o {
            Outgoing::Ban(b) => {
                self.unbans.remove(&b.prefix);
                self.own.insert(b.prefix, b);
            }
            Outgoing::Unban(p) => {
                self.own.remove(&p);
                self.unbans.insert(p);
            }
        }
    }

    /// Keep the queued automatic bans for the next session (while disconnected).
    pub(super) fn drain_outbox(&mut self) {
        let auto = self.shared.lock().take_fleet_outbox();
        for b in auto {
            self.keep(Outgoing::Ban(b));
        }
    }

    pub(super) async fn t<T>(
        &self,
        what: &str,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> RResult<T> {
        match timeout(self.s.config.command_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!(
                "{what}: no answer within {:?}",
                self.s.config.command_timeout
            )),
        }
    }

    /// One session: connect, subscribe, reconcile, then serve events, requests, heartbeats
    /// and syncs until an error (returned) or the daemon's end (`Ok`).
    pub(super) async fn session(&mut self, rx: &mut mpsc::Receiver<Outgoing>) -> RResult<()> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.s.config.connect_timeout))
            .set_response_timeout(Some(self.s.config.command_timeout));
        let connect = self.s.config.connect_timeout;
        let mut conn = match timeout(
            connect,
            self.client
                .get_multiplexed_async_connection_with_config(&cfg),
        )
        .await
        {
            Ok(r) => r.map_err(|e| format!("connect: {e}"))?,
            Err(_) => return Err(format!("connect: no answer within {connect:?}")),
        };
        let mut pubsub = match timeout(connect, self.client.get_async_pubsub()).await {
            Ok(r) => r.map_err(|e| format!("subscribe: {e}"))?,
            Err(_) => return Err(format!("subscribe: no answer within {connect:?}")),
        };
        let channel = self.keys.events();
        self.t("subscribe", pubsub.subscribe(&channel)).await?;
        let mut messages = pubsub.into_on_message();
        for p in std::mem::take(&mut self.unbans) {
            self.unban(&mut conn, p).await?;
        }
        self.reconcile(&mut conn).await?;
        self.heartbeat(&mut conn).await?;
        self.with_snap(|s| {
            s.connected = true;
            s.error = None;
            s.reconnects += 1;
        });
        tracing::info!(node = %self.s.node, "fleet: connected");
        let mut beat = tokio::time::interval(self.s.config.heartbeat_interval);
        let mut sync = tokio::time::interval(self.s.config.sync_interval);
        let mut budget = tokio::time::interval(self.s.config.budget_interval);
        budget.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.budget.restart();
        let mut outbox = tokio::time::interval(OUTBOX_EVERY);
        outbox.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        sync.tick().await;
        let (mut window, mut handled) = (tokio::time::Instant::now(), 0u32);
        loop {
            tokio::select! {
                m = messages.next() => {
                    let Some(m) = m else { return Err("subscription closed".into()) };
                    if window.elapsed() >= Duration::from_secs(1) {
                        (window, handled) = (tokio::time::Instant::now(), 0);
                    }
                    handled += 1;
                    if handled <= EVENTS_PER_SECOND {
                        self.on_event(m.get_payload_bytes());
                    } else if handled == EVENTS_PER_SECOND + 1 {
                        tracing::warn!("fleet: too many ban events; catching up by a reconcile");
                        sync.reset_immediately();
                    }
                }
                o = rx.recv() => match o {
                    None => return Ok(()),
                    Some(Outgoing::Ban(b)) => self.share(&mut conn, b).await?,
                    Some(Outgoing::Unban(p)) => self.unban(&mut conn, p).await?,
                },
                _ = beat.tick() => self.heartbeat(&mut conn).await?,
                _ = outbox.tick() => {
                    let auto = self.shared.lock().take_fleet_outbox();
                    for b in auto {
                        self.share(&mut conn, b).await?;
                    }
                }
                _ = sync.tick() => self.reconcile(&mut conn).await?,
                _ = budget.tick() => self.budget_sync(&mut conn).await?,
            }
        }
    }

    pub(super) fn synced(&self) {
        let now = unix_now_ms();
        self.with_snap(|s| s.last_sync_unix_ms = now);
    }

    /// Share a ban: into the hash (read by nodes that join later) and on the channel.
    async fn share(&mut self, conn: &mut MultiplexedConnection, b: Ban) -> RResult<()> {
        self.unbans.remove(&b.prefix);
        self.own.insert(b.prefix, b.clone());
        self.publish(conn, &b).await
    }

    async fn publish(&self, conn: &mut MultiplexedConnection, b: &Ban) -> RResult<()> {
        let wire = WireBan::of(b, &self.s.node);
        let value = serde_json::to_string(&wire).map_err(|e| e.to_string())?;
        let event = serde_json::to_string(&Event::Ban { ban: wire }).map_err(|e| e.to_string())?;
        let mut p = redis::pipe();
        p.hset(self.keys.bans(), b.prefix.to_string(), value)
            .ignore()
            .hdel(self.keys.lifted(), b.prefix.to_string())
            .ignore()
            .publish(self.keys.events(), event)
            .ignore();
        self.t("share a ban", p.query_async::<()>(conn)).await?;
        self.with_snap(|s| s.bans_sent += 1);
        self.synced();
        Ok(())
    }

    async fn unban(&mut self, conn: &mut MultiplexedConnection, p: Prefix) -> RResult<()> {
        self.own.remove(&p);
        let event = serde_json::to_string(&Event::Unban {
            prefix: p.to_string(),
            node: self.s.node.clone(),
        })
        .map_err(|e| e.to_string())?;
        let tomb = serde_json::to_string(&Tombstone {
            node: self.s.node.clone(),
            lifted_unix_ms: unix_now_ms(),
        })
        .map_err(|e| e.to_string())?;
        let mut pipe = redis::pipe();
        pipe.hdel(self.keys.bans(), p.to_string())
            .ignore()
            .hset(self.keys.lifted(), p.to_string(), tomb)
            .ignore()
            .publish(self.keys.events(), event)
            .ignore();
        if let Err(e) = self.t("lift a ban", pipe.query_async::<()>(conn)).await {
            self.unbans.insert(p);
            return Err(e);
        }
        self.synced();
        Ok(())
    }

    /// A message from the channel: validated, then applied like a reconcile entry.
    fn on_event(&mut self, payload: &[u8]) {
        let event = match parse_value::<Event>(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: ban event refused");
                self.with_snap(|s| s.bans_refused += 1);
                return;
            }
        };
        match event {
            Event::Ban { ban } if ban.node != self.s.node => {
                let now = unix_now_ms();
                match ban.to_ban(now) {
                    Ok(b) => {
                        let mut remote = BTreeMap::new();
                        remote.insert(b.prefix, (b, ban.node));
                        // Only this prefix: the rest of the book is not the fleet's answer.
                        let local = self.local_bans();
                        let local: Vec<Ban> = local
                            .into_iter()
                            .filter(|l| remote.contains_key(&l.prefix) || l.origin != Origin::Fleet)
                            .collect();
                        let mut plan = reconcile(
                            &remote,
                            &local,
                            &self.own,
                            &self.s.node,
                            self.s.config.max_bans,
                        );
                        plan.drop.clear();
                        plan.republish.clear();
                        self.apply(plan);
                    }
                    Err(e) => {
                        tracing::warn!(prefix = %ban.prefix.escape_debug(), error = %e, "fleet: ban refused");
                        self.with_snap(|s| s.bans_refused += 1);
                    }
                }
            }
            Event::Unban { prefix, node } if node != self.s.node => {
                let Ok(p) = Prefix::parse(&prefix) else {
                    return;
                };
                let was_own = self.own.remove(&p).is_some();
                let mut core = self.shared.lock();
                // A fleet unban lifts the fleet's ban and this node's own shared one; a
                // local-only ban on the same prefix stays.
                if core
                    .list_bans()
                    .iter()
                    .any(|b| b.prefix == p && b.origin == Origin::Fleet)
                    || was_own
                {
                    let _ = core.remove_ban(&p);
                }
            }
            _ => {}
        }
        self.synced();
    }

    fn local_bans(&mut self) -> Vec<Ban> {
        let bans = self.shared.lock().list_bans();
        // An own ban lifted here (or ended) is not re-published.
        self.own.retain(|p, b| {
            bans.iter()
                .any(|l| l.prefix == *p && l.until_unix_ms == b.until_unix_ms)
        });
        bans
    }

    /// Write a plan's local part to the engine (one lock per ban: the daemon's other users
    /// get their turn between them).
    fn apply(&mut self, plan: crate::fleet::Plan) {
        let mut received = 0;
        let mut bans = plan.apply;
        while !bans.is_empty() {
            let rest = bans.split_off(bans.len().min(APPLY_CHUNK));
            let (added, refused) = self.shared.lock().add_bans(bans);
            received += added as u64;
            for (prefix, e) in refused {
                tracing::warn!(%prefix, error = %e, "fleet: ban not applied");
            }
            bans = rest;
        }
        for chunk in plan.drop.chunks(APPLY_CHUNK) {
            let n = self.shared.lock().remove_bans(chunk);
            tracing::info!(lifted = n, "fleet: bans lifted by the fleet");
        }
        let over = plan.over_cap as u64;
        if over > 0 {
            tracing::warn!(
                refused = over,
                cap = self.s.config.max_bans,
                "fleet: bans over [fleet] max_bans refused"
            );
        }
        self.with_snap(|s| {
            s.bans_received += received;
            s.bans_refused += over;
        });
    }

    /// Read the fleet's whole ban set (bounded), apply what is missing here, lift what the
    /// fleet lifted, re-publish this node's own bans Redis lost, delete ended entries.
    async fn reconcile(&mut self, conn: &mut MultiplexedConnection) -> RResult<()> {
        let now = unix_now_ms();
        self.drop_lifted(conn, now).await?;
        let (remote, ended) = self.read_bans(conn, now).await?;
        let local = self.local_bans();
        let plan = reconcile(
            &remote,
            &local,
            &self.own,
            &self.s.node,
            self.s.config.max_bans,
        );
        let republish = plan.republish.clone();
        self.apply(plan);
        for b in &republish {
            self.publish(conn, b).await?;
        }
        if !ended.is_empty() {
            self.t(
                "delete ended bans",
                redis::cmd("HDEL")
                    .arg(self.keys.bans())
                    .arg(&ended)
                    .query_async::<()>(conn),
            )
            .await?;
        }
        self.with_snap(|s| s.own_bans = self.own.len() as u64);
        self.synced();
        Ok(())
    }

    /// Drop this node's shared bans that were lifted fleet-wide after they were made (it
    /// was cut off when that happened), and delete tombstones past [`MAX_DURATION`].
    async fn drop_lifted(&mut self, conn: &mut MultiplexedConnection, now: u64) -> RResult<()> {
        let (mut lifted, mut stale) = (BTreeMap::new(), Vec::new());
        let mut cursor: u64 = 0;
        let mut seen = 0usize;
        loop {
            let (next, items): (u64, Vec<Field>) = self
                .t(
                    "read lifted bans",
                    redis::cmd("HSCAN")
                        .arg(self.keys.lifted())
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(conn),
                )
                .await?;
            for (field, value) in items {
                seen += 1;
                let Ok(t) = parse_value::<Tombstone>(&value) else {
                    continue;
                };
                let field = String::from_utf8_lossy(&field).into_owned();
                if now.saturating_sub(t.lifted_unix_ms) > MAX_DURATION.as_millis() as u64 {
                    if stale.len() < 1000 {
                        stale.push(field);
                    }
                } else if let Ok(p) = Prefix::parse(&field) {
                    lifted.insert(p, t.lifted_unix_ms);
                }
            }
            cursor = next;
            if cursor == 0 || seen >= MAX_SCAN {
                break;
            }
        }
        let drop = lifted_since(&self.own, &lifted);
        if !drop.is_empty() {
            for p in &drop {
                self.own.remove(p);
            }
            let n = self.shared.lock().remove_bans(&drop);
            tracing::info!(lifted = n, "fleet: own bans lifted elsewhere while cut off");
        }
        if !stale.is_empty() {
            self.t(
                "delete old tombstones",
                redis::cmd("HDEL")
                    .arg(self.keys.lifted())
                    .arg(&stale)
                    .query_async::<()>(conn),
            )
            .await?;
        }
        Ok(())
    }

    /// The ban hash by HSCAN, at most [`MAX_SCAN`] entries; invalid entries are skipped
    /// (logged once per reconcile), ended ones returned for deletion (at most 1000).
    async fn read_bans(
        &self,
        conn: &mut MultiplexedConnection,
        now: u64,
    ) -> RResult<(BTreeMap<Prefix, (Ban, String)>, Vec<String>)> {
        let mut remote = BTreeMap::new();
        let (mut ended, mut bad, mut seen) = (Vec::new(), 0usize, 0usize);
        let mut cursor: u64 = 0;
        loop {
            let (next, items): (u64, Vec<Field>) = self
                .t(
                    "read bans",
                    redis::cmd("HSCAN")
                        .arg(self.keys.bans())
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(conn),
                )
                .await?;
            for (field, value) in items {
                seen += 1;
                let parsed = parse_value::<WireBan>(&value).and_then(|w| {
                    if w.until_unix_ms <= now {
                        return Err("ended".into());
                    }
                    let b = w.to_ban(now)?;
                    (b.prefix.to_string().as_bytes() == field.as_slice())
                        .then_some((b, w.node))
                        .ok_or_else(|| "field and prefix differ".to_owned())
                });
                match parsed {
                    Ok((b, node)) => {
                        remote.insert(b.prefix, (b, node));
                    }
                    Err(e) if e == "ended" && ended.len() < 1000 => {
                        ended.push(String::from_utf8_lossy(&field).into_owned());
                    }
                    Err(_) => bad += 1,
                }
            }
            cursor = next;
            if cursor == 0 || seen >= MAX_SCAN {
                break;
            }
        }
        if bad > 0 {
            tracing::warn!(
                entries = bad,
                "fleet: invalid entries in the ban hash skipped"
            );
        }
        Ok((remote, ended))
    }

    /// This node's heartbeat, read from the engine under its lock (no walk: the top
    /// sources come from the last walk).
    fn describe(&self, now: u64) -> Heartbeat {
        let core = self.shared.lock();
        Heartbeat {
            node: self.s.node.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            seen_unix_ms: now,
            level: core.throttle_status().level.as_str().to_owned(),
            open_breakers: core
                .circuits()
                .map(|r| {
                    r.upstreams
                        .iter()
                        .filter(|u| u.breaker.state != crate::policy::breaker::BreakerState::Closed)
                        .take(MAX_LIST)
                        .map(|u| u.name.clone())
                        .collect()
                })
                .unwrap_or_default(),
            bans: core.bans_snapshot().active,
            fleet_bans: self.own.len() as u64,
            top_sources: self.top.clone(),
        }
    }

    /// Write this node's heartbeat and read the others'.
    async fn heartbeat(&mut self, conn: &mut MultiplexedConnection) -> RResult<()> {
        if self.beats.is_multiple_of(TOP_EVERY) {
            self.top = top_sources(&self.shared).await;
        }
        self.beats = self.beats.wrapping_add(1);
        let now = unix_now_ms();
        let hb = self.describe(now);
        let ttl = (self.s.config.heartbeat_interval * 3).as_millis() as u64;
        let value = serde_json::to_string(&hb).map_err(|e| e.to_string())?;
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg(self.keys.node(&self.s.node))
            .arg(value)
            .arg("PX")
            .arg(ttl)
            .ignore();
        p.sadd(self.keys.nodes(), &self.s.node).ignore();
        p.cmd("SRANDMEMBER").arg(self.keys.nodes()).arg(MAX_NODES);
        let (names,): (Vec<String>,) = self.t("heartbeat", p.query_async(conn)).await?;
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| crate::config::fleet::valid_name(n))
            .collect();
        let keys: Vec<String> = names.iter().map(|n| self.keys.node(n)).collect();
        let values: Vec<Option<Vec<u8>>> = if keys.is_empty() {
            Vec::new()
        } else {
            self.t(
                "read nodes",
                redis::cmd("MGET").arg(&keys).query_async(conn),
            )
            .await?
        };
        let mut nodes = Vec::new();
        let mut gone = Vec::new();
        for (name, v) in names.iter().zip(values) {
            match v.map(|v| parse_value::<Heartbeat>(&v).and_then(|h| h.validate(now))) {
                Some(Ok(h)) if h.node == *name => nodes.push(h),
                Some(_) => {}
                None => gone.push(name.clone()),
            }
        }
        if !gone.is_empty() {
            self.t(
                "forget nodes",
                redis::cmd("SREM")
                    .arg(self.keys.nodes())
                    .arg(&gone)
                    .query_async::<()>(conn),
            )
            .await?;
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        self.with_snap(|s| {
            s.nodes = nodes;
            s.own_bans = self.own.len() as u64;
        });
        self.synced();
        Ok(())
    }
}

/// The heaviest sources here (a bounded walk of the bucket map off the engine's lock, one
/// walk at a time with the daemon's other walkers).
async fn top_sources(shared: &Arc<Shared>) -> Vec<TopSource> {
    let Ok(_turn) = crate::serve::walks::WALKS.acquire().await else {
        return Vec::new();
    };
    let Ok(walk) = shared.lock().sources_walk() else {
        return Vec::new();
    };
    let r = tokio::task::spawn_blocking(move || walk.top(5)).await;
    match r {
        Ok(Ok(r)) => r
            .sources
            .into_iter()
            .map(|e| TopSource {
                prefix: e.prefix,
                class: e.class,
                packets: e.packets,
                dropped: e.dropped,
            })
            .collect(),
        _ => Vec::new(),
    }
}
