//! Bans on the engine: add, remove, list, expire, restore at start, and the automatic bans
//! of persistent offenders. The validation and the book are [`crate::bans`]'s.
//!
//! Order of writes for a change: the kernel's ban map, then the rule generation (a global
//! write through [`Core::apply_desired`], so every CPU's classification cache is refilled
//! and sees the change), then the state file. A ban whose kernel write fails is not kept.

use std::{net::IpAddr, path::Path};

use tracing::{error, info, warn};

use super::OpError;
use crate::{
    bans::{Ban, BanError, BanRequest, Origin, Prefix, offender::Offence, store},
    engine::Core,
};

impl From<BanError> for OpError {
    fn from(e: BanError) -> Self {
        match e {
            BanError::NotFound(_) => OpError::NotFound(e.to_string()),
            _ => OpError::Invalid(e.to_string()),
        }
    }
}

use crate::api::bans::unix_now_ms;

impl Core {
    /// The bans' clock (Unix ms): the wall clock, or a test's fixed time.
    pub(crate) fn ban_now_ms(&self) -> u64 {
        self.bans.fixed_now_ms.unwrap_or_else(unix_now_ms)
    }

    /// At start: read the state file at `path` (kept for later writes) and make the kernel's
    /// ban map hold exactly its bans. Without a usable file (none yet, or unreadable: logged,
    /// never fatal) the bans found in the pinned map are kept, as `recovered`.
    pub fn open_bans(&mut self, path: &Path) -> Result<(), OpError> {
        let now_ms = self.ban_now_ms();
        let loaded = store::load(path, now_ms);
        if let Some(e) = &loaded.error {
            error!(error = %e, "ban state file not used");
        }
        for s in &loaded.skipped {
            warn!(entry = %s, "ban state file: entry skipped");
        }
        match store::Writer::start(path.to_owned()) {
            Ok(w) => self.bans.writer = Some(w),
            Err(e) => error!(error = %e, "cannot start the ban state writer; bans are not saved"),
        }
        let pinned = self.dp.bans()?;
        let bans = if loaded.found {
            loaded.bans
        } else {
            let now_ns = self.dp.now_ns();
            pinned
                .iter()
                .filter(|(_, e)| e.until_ns > now_ns)
                .filter_map(|(k, e)| {
                    Some(Ban {
                        prefix: Prefix::from_key(*k)?,
                        until_unix_ms: now_ms + (e.until_ns - now_ns) / 1_000_000,
                        reason: "recovered".into(),
                        force: e.flags & traffic_common::BAN_FORCE != 0,
                        origin: Origin::Recovered,
                        created_unix_ms: now_ms,
                    })
                })
                .collect()
        };
        for b in bans {
            self.bans.book.insert(b)?;
        }
        // The kernel holds exactly the book: stale pinned entries go, every ban is
        // (re)written with its end on this boot's clock.
        let keep: std::collections::BTreeSet<_> =
            self.bans.book.iter().map(|b| b.prefix.key()).collect();
        for (k, _) in pinned.iter().filter(|(k, _)| !keep.contains(k)) {
            self.dp.remove_ban(k)?;
        }
        let now_ns = self.dp.now_ns();
        let writes: Vec<_> = self
            .bans
            .book
            .iter()
            .map(|b| (b.prefix.key(), b.entry(now_ms, now_ns)))
            .collect();
        for (k, e) in &writes {
            self.dp.set_ban(k, e)?;
        }
        self.apply_desired()?;
        if !loaded.found || !loaded.skipped.is_empty() {
            self.save_bans();
        }
        info!(
            bans = self.bans.book.len(),
            file = %path.display(),
            "bans restored"
        );
        Ok(())
    }

    /// `trafficctl ban`: validate an operator's request and add the ban; also says whether
    /// it replaced one on the same prefix.
    pub fn ban(&mut self, req: &BanRequest) -> Result<(Ban, bool), OpError> {
        let ban = req.ban(self.ban_now_ms(), Origin::Operator)?;
        let old = self.add_ban(ban.clone())?;
        Ok((ban, old.is_some()))
    }

    /// Add (or replace) a ban made by anyone ([`Ban::origin`]): validated, written to the
    /// kernel, then the rule generation, then the state file. Returns the ban it replaced.
    pub fn add_ban(&mut self, ban: Ban) -> Result<Option<Ban>, OpError> {
        let old = self.insert_ban(ban)?;
        self.apply_desired()?;
        self.save_bans();
        Ok(old)
    }

    /// Add many bans (a fleet reconcile) with one generation bump and one state-file
    /// write, instead of one each; returns how many were added and the refused ones.
    pub fn add_bans(&mut self, bans: Vec<Ban>) -> (usize, Vec<(Prefix, OpError)>) {
        let mut refused = Vec::new();
        let mut added = 0;
        for b in bans {
            let p = b.prefix;
            match self.insert_ban(b) {
                Ok(_) => added += 1,
                Err(e) => refused.push((p, e)),
            }
        }
        if added > 0 {
            if let Err(e) = self.apply_desired() {
                error!(error = %e, "applying the rule generation after bans failed");
            }
            self.save_bans();
        }
        (added, refused)
    }

    /// Lift many bans (a fleet reconcile), with one generation bump and one write.
    pub fn remove_bans(&mut self, prefixes: &[Prefix]) -> usize {
        let mut removed = 0;
        for p in prefixes {
            let Some(old) = self.bans.book.remove(p) else {
                continue;
            };
            if let Err(e) = self.dp.remove_ban(&p.key()) {
                warn!(prefix = %p, error = %e, "cannot lift a ban");
                let _ = self.bans.book.insert(old);
                continue;
            }
            info!(prefix = %p, "ban removed");
            removed += 1;
        }
        if removed > 0 {
            if let Err(e) = self.apply_desired() {
                error!(error = %e, "applying the rule generation after unbans failed");
            }
            self.save_bans();
        }
        removed
    }

    /// Validate and write one ban to the book and the kernel (no generation bump, no
    /// state file: the callers do those once).
    fn insert_ban(&mut self, ban: Ban) -> Result<Option<Ban>, OpError> {
        ban.validate()?;
        let now_ms = self.ban_now_ms();
        if ban.expired(now_ms) {
            return Err(OpError::Invalid(format!(
                "the ban on {} has already ended",
                ban.prefix
            )));
        }
        let entry = ban.entry(now_ms, self.dp.now_ns());
        let key = ban.prefix.key();
        let old = self.bans.book.insert(ban.clone())?;
        if let Err(e) = self.dp.set_ban(&key, &entry) {
            // Put the book back as the kernel has it.
            self.bans.book.remove(&ban.prefix);
            if let Some(o) = &old {
                let _ = self.bans.book.insert(o.clone());
            }
            return Err(e.into());
        }
        self.bans.count(&ban.reason);
        info!(
            prefix = %ban.prefix,
            until_unix_ms = ban.until_unix_ms,
            reason = %ban.reason,
            force = ban.force,
            origin = ?ban.origin,
            "ban added"
        );
        Ok(old)
    }

    /// `trafficctl unban`: remove the ban on exactly `prefix` (an address means its /32 or
    /// /128).
    pub fn remove_ban(&mut self, prefix: &Prefix) -> Result<Ban, OpError> {
        let Some(old) = self.bans.book.remove(prefix) else {
            return Err(BanError::NotFound(prefix.to_string()).into());
        };
        if let Err(e) = self.dp.remove_ban(&prefix.key()) {
            let _ = self.bans.book.insert(old);
            return Err(e.into());
        }
        info!(prefix = %prefix, "ban removed");
        self.apply_desired()?;
        self.save_bans();
        Ok(old)
    }

    /// Every ban in force, by prefix.
    pub fn list_bans(&self) -> Vec<Ban> {
        self.bans.book.iter().cloned().collect()
    }

    /// Drop the bans that have ended (the kernel stopped enforcing them already: this only
    /// frees their entries). Cheap when none has: one pass over the book's ends.
    pub fn expire_bans(&mut self) -> Result<usize, OpError> {
        let now_ms = self.ban_now_ms();
        if self.bans.book.next_expiry().is_none_or(|t| t > now_ms) {
            return Ok(0);
        }
        let ended = self.bans.book.expired(now_ms);
        for p in &ended {
            self.bans.book.remove(p);
            self.dp.remove_ban(&p.key())?;
            info!(prefix = %p, "ban ended");
        }
        self.apply_desired()?;
        self.save_bans();
        Ok(ended.len())
    }

    /// Have the book written to the state file (off the engine's lock, see
    /// [`store::Writer`]); a failure is logged there (the bans stay in force, and in the
    /// pinned map across a restart) and the next change writes the whole book again.
    fn save_bans(&self) {
        if let Some(w) = &self.bans.writer {
            w.save(self.bans.book.iter().cloned().collect());
        }
    }

    /// The ban metrics: every class with an offender setting is shown, at 0 until it bans.
    pub fn bans_snapshot(&self) -> crate::bans::BansSnapshot {
        let mut s = self.bans.snapshot();
        for c in self.config.classes.iter().filter(|c| c.offender.is_some()) {
            s.auto.entry(c.name.clone()).or_default();
        }
        s
    }

    /// Whether a class has an offender setting (the serve loop walks the buckets only then).
    pub fn watches_offenders(&self) -> bool {
        self.config.classes.iter().any(|c| c.offender.is_some())
    }

    /// Bit `slot` set for each class slot with an offender setting.
    pub fn offender_slots(&self) -> u64 {
        self.config
            .classes
            .iter()
            .filter(|c| c.offender.is_some())
            .filter_map(|c| self.slots.slot_of(&c.name))
            .fold(0, |m, s| m | 1 << s)
    }

    /// Hand one walk of the bucket map to the offender detector and ban what it finds.
    pub fn offender_walk(
        &mut self,
        readings: &[(traffic_common::BucketKey, traffic_common::Bucket)],
    ) {
        let now_ms = self.ban_now_ms();
        let settings: Vec<_> = (0..traffic_common::MAX_CLASSES)
            .map(|slot| {
                let name = self.slots.name_of(slot)?;
                let i = self.config.class_index(name)?;
                self.config.classes[i]
                    .offender
                    .map(|o| (name.to_owned(), i, o))
            })
            .collect();
        let found = self.bans.detector.observe(now_ms, readings, |slot| {
            settings.get(slot as usize)?.as_ref().map(|s| s.2)
        });
        for o in found {
            if let Some((name, i, s)) = settings.get(o.slot as usize).and_then(Option::as_ref) {
                self.auto_ban(&o, name, *i, s.ban_for);
            }
        }
    }

    fn auto_ban(&mut self, o: &Offence, class: &str, index: usize, ban_for: std::time::Duration) {
        let spec = &self.config.classes[index];
        let share = self.fleet.is_some() && spec.offender.is_some_and(|o| o.fleet);
        let v6 = std::net::Ipv6Addr::from(o.addr);
        let prefix = match v6.to_ipv4_mapped() {
            Some(v4) => Prefix {
                addr: IpAddr::V4(v4),
                len: spec.aggregate_v4,
            },
            None => Prefix {
                addr: IpAddr::V6(v6),
                len: spec.aggregate_v6,
            },
        };
        if self.bans.book.get(&prefix).is_some() {
            return;
        }
        let now_ms = self.ban_now_ms();
        let ban = Ban {
            prefix,
            until_unix_ms: now_ms + ban_for.as_millis() as u64,
            reason: format!("offender in class {class}"),
            force: false,
            origin: Origin::Auto,
            created_unix_ms: now_ms,
        };
        warn!(
            source = %prefix,
            class,
            ratio = format!("{:.3}", o.ratio),
            packets = o.packets,
            ban_for = ?ban_for,
            "persistent offender: banned"
        );
        match self.add_ban(ban.clone()) {
            Ok(_) => {
                *self.bans.auto.entry(class.to_owned()).or_default() += 1;
                if share {
                    self.share_with_fleet(ban);
                }
            }
            Err(e) => warn!(source = %prefix, error = %e, "automatic ban refused"),
        }
    }
}

#[cfg(test)]
mod tests;
