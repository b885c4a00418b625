//! The budget sync over Redis (see [`crate::fleet::budget`] for what is shared and the
//! error bound). One pipeline per `budget_interval`: this node's use hash written
//! (`HSET` of the shared sources, `PEXPIRE`, `HDEL` of those it stopped following) and one
//! `HSCAN` page of every other live node's hash read — at most `nodes + 2` commands per
//! interval, however many sources send. Nothing runs without a `scope = "fleet"` class.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::session::{Cx, Field, RResult};
use crate::fleet::budget::{Ledger, Tracker};

/// The budget sync's state across sessions.
pub(super) struct Budget {
    tracker: Tracker,
    ledger: Ledger,
    last: Option<Instant>,
    /// This node's hash holds fields (so a sync with nothing to share still expires it).
    wrote: bool,
}

impl Budget {
    pub(super) fn new(max: usize) -> Self {
        let seed = std::collections::hash_map::RandomState::new();
        let seed = std::hash::BuildHasher::hash_one(&seed, std::process::id());
        Self {
            // Epochs start at a random point: a restarted node's are new to the others.
            tracker: Tracker::new(seed >> 16, max),
            ledger: Ledger::default(),
            last: None,
            wrote: false,
        }
    }

    /// A new session: epochs start over (see [`Tracker::restart`]).
    pub(super) fn restart(&mut self) {
        self.tracker.restart();
        self.wrote = true;
    }
}

impl Cx {
    /// One budget sync.
    pub(super) async fn budget_sync(&mut self, conn: &mut MultiplexedConnection) -> RResult<()> {
        let classes = self.shared.lock().fleet_classes();
        if classes.is_empty() && !self.budget.wrote {
            return Ok(());
        }
        let cfg = &self.s.config;
        let (max, fraction, every) = (
            cfg.max_budget_sources,
            cfg.heavy_fraction,
            cfg.budget_interval,
        );
        let (hot, now_ns) = if classes.is_empty() {
            (Vec::new(), 0)
        } else {
            self.shared.lock().fleet_hot(max).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "fleet: cannot read the marked sources");
                (Vec::new(), 0)
            })
        };
        let now = Instant::now();
        let elapsed = self
            .budget
            .last
            .map_or(every, |t| now.duration_since(t))
            .max(Duration::from_millis(1));
        self.budget.last = Some(now);
        let update = self.budget.tracker.observe(
            &hot,
            &classes,
            elapsed.as_nanos() as u64,
            now_ns,
            fraction,
        );
        if !update.forget.is_empty() {
            self.shared.lock().forget_fleet_hot(&update.forget);
        }
        let mine = self.keys.usage(&self.s.node);
        let others: Vec<String> = self
            .snap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .nodes
            .iter()
            .map(|h| h.node.clone())
            .filter(|n| *n != self.s.node)
            .collect();
        let mut p = redis::pipe();
        let mut commands = 0;
        if !update.write.is_empty() {
            // HSET with many pairs (the crate's `hset_multiple` sends HMSET).
            let hset = p.cmd("HSET").arg(&mine);
            for (f, v) in &update.write {
                hset.arg(f).arg(v);
            }
            hset.ignore();
            let ttl = (every * 5).max(Duration::from_secs(2)).as_millis() as u64;
            p.cmd("PEXPIRE").arg(&mine).arg(ttl).ignore();
            commands += 2;
        }
        if !update.delete.is_empty() {
            p.hdel(&mine, &update.delete).ignore();
            commands += 1;
        }
        if !classes.is_empty() {
            for n in &others {
                p.cmd("HSCAN")
                    .arg(self.keys.usage(n))
                    .arg(0)
                    .arg("COUNT")
                    .arg(max);
                commands += 1;
            }
        }
        self.budget.wrote = !update.write.is_empty();
        let shared = self.budget.tracker.shared() as u64;
        if commands == 0 {
            self.with_snap(|s| s.budget_shared = shared);
            return Ok(());
        }
        let pages: Vec<(u64, Vec<Field>)> = self.t("budget sync", p.query_async(conn)).await?;
        self.budget.ledger.retain(&others);
        let mut debits = Vec::new();
        let mut refused = 0;
        for (node, (_, entries)) in others.iter().zip(pages) {
            let r = self.budget.ledger.read(node, entries, &classes, max);
            refused += r.refused as u64;
            debits.extend(r.debits);
        }
        let charged = if debits.is_empty() {
            0
        } else {
            self.shared.lock().fleet_debit(&debits) as u64
        };
        if refused > 0 {
            tracing::debug!(entries = refused, "fleet: budget entries refused");
        }
        self.with_snap(|s| {
            s.budget_corrections += charged;
            s.budget_refused += refused;
            s.budget_shared = shared;
        });
        self.synced();
        Ok(())
    }
}
