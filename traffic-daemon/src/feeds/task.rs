//! The feed task: refreshes each feed when due (or asked), keeps the last good list of each,
//! and swaps a new generation into the kernel's tries when the combined lists change
//! (see [`super::generation`]). The tries are written off the engine's lock; the lock is
//! taken for the status and for the flip only.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::{
    fetch,
    generation::{self, Listing},
    parse::{self, Key, Prefixes},
    state::FeedStatus,
};
use crate::{
    config::feeds::{FeedAction, FeedSource, FeedSpec},
    dataplane::feeds::{Family, FeedTries},
    engine::unix_now,
    serve::Shared,
};

/// Longest the task sleeps. A reload that changes `[[feeds]]` and a refresh request wake
/// it at once (`FeedState::wake`), so this is only a safety net: with no feed configured,
/// the task wakes once a minute.
const IDLE: Duration = Duration::from_secs(60);
/// Retry period of a feed that has no list at all yet (its `refresh` when shorter).
const FIRST_RETRY: Duration = Duration::from_secs(60);

type Entries = Vec<(Key, [u16; 2])>;

/// A feed's last good list.
struct Loaded {
    prefixes: Arc<Prefixes>,
    /// Bumped when the list changes (the swap signature).
    version: u64,
}

struct Task {
    tries: Option<Box<dyn FeedTries>>,
    /// What the tries hold (read once, then kept in step with every swap).
    current: Option<(Entries, Entries)>,
    lists: BTreeMap<String, Loaded>,
    specs: BTreeMap<String, FeedSpec>,
    due: BTreeMap<String, Instant>,
    /// (feed, listing, list version) of the last swap; `None` before the first one.
    swapped: Option<Vec<(String, Listing, u64)>>,
    versions: u64,
}

/// Run until the daemon stops (the task is aborted with the runtime).
pub async fn run(shared: Arc<Shared>) {
    let (tries, wake) = {
        let core = shared.lock();
        (core.dp.feed_tries(), core.feeds.wake.clone())
    };
    let tries = match tries {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "feeds: cannot open the feed maps; feeds are not enforced");
            return;
        }
    };
    let mut task = Task {
        tries: Some(tries),
        current: None,
        lists: BTreeMap::new(),
        specs: BTreeMap::new(),
        due: BTreeMap::new(),
        swapped: None,
        versions: 0,
    };
    loop {
        task.round(&shared).await;
        let next = task
            .due
            .values()
            .min()
            .map_or(IDLE, |d| d.saturating_duration_since(Instant::now()))
            .min(IDLE);
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(next) => {}
        }
    }
}

impl Task {
    async fn round(&mut self, shared: &Arc<Shared>) {
        let (specs, listings, requested) = self.snapshot(shared);
        let now = Instant::now();
        for spec in &specs {
            let asked = requested.contains(&None) || requested.contains(&Some(spec.name.clone()));
            let first = !self.due.contains_key(&spec.name);
            if first
                && !self.lists.contains_key(&spec.name)
                && matches!(spec.source, FeedSource::Url(_))
            {
                self.load_cache(shared, spec).await;
            }
            if first || asked || self.due.get(&spec.name).is_some_and(|d| *d <= now) {
                self.refresh(shared, spec).await;
            }
        }
        let signature: Vec<(String, Listing, u64)> = specs
            .iter()
            .zip(&listings)
            .filter_map(|(s, l)| {
                self.lists
                    .get(&s.name)
                    .map(|d| (s.name.clone(), *l, d.version))
            })
            .collect();
        if self.swapped.as_ref() != Some(&signature) {
            match self.swap(shared, &signature).await {
                Ok(()) => self.swapped = Some(signature),
                Err(e) => {
                    warn!(error = %e, "feeds: swapping in a new generation failed; the last one stays in force");
                    // Re-read the tries next time: a write may have half happened.
                    self.current = None;
                }
            }
        }
    }

    /// The feeds configured now with their kernel listings, and the refresh requests;
    /// statuses of removed feeds are dropped, new ones added.
    fn snapshot(
        &mut self,
        shared: &Arc<Shared>,
    ) -> (
        Vec<FeedSpec>,
        Vec<Listing>,
        std::collections::BTreeSet<Option<String>>,
    ) {
        let mut core = shared.lock();
        let specs = core.config.feeds.clone();
        let listings: Vec<Listing> = specs
            .iter()
            .enumerate()
            .map(|(rank, s)| match s.action {
                FeedAction::Deny => Listing {
                    deny: true,
                    class: None,
                },
                FeedAction::Class(ci) => Listing {
                    deny: false,
                    class: Some((
                        rank as u16,
                        core.slots.slot_of_index(&core.config, ci) as u16,
                    )),
                },
            })
            .collect();
        let requested = std::mem::take(&mut core.feeds.requested);
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        core.feeds.status.retain(|n, _| names.contains(&n.as_str()));
        for s in &specs {
            let action = match s.action {
                FeedAction::Deny => "deny".to_owned(),
                FeedAction::Class(ci) => format!("class:{}", core.config.classes[ci].name),
            };
            let st = core.feeds.status.entry(s.name.clone()).or_default();
            st.name = s.name.clone();
            st.source = s.source.to_string();
            st.action = action;
        }
        drop(core);
        // A feed whose settings changed is refreshed now; one whose source changed starts
        // over (the old source's list no longer stands for it).
        for s in &specs {
            if let Some(old) = self.specs.get(&s.name).filter(|old| *old != s) {
                self.due.remove(&s.name);
                if old.source != s.source {
                    self.lists.remove(&s.name);
                }
            }
        }
        self.specs = specs.iter().map(|s| (s.name.clone(), s.clone())).collect();
        self.lists.retain(|n, _| names.contains(&n.as_str()));
        self.due.retain(|n, _| names.contains(&n.as_str()));
        (specs, listings, requested)
    }

    /// At start, the on-disk copy of a URL feed (so a restart without network enforces it).
    async fn load_cache(&mut self, shared: &Arc<Shared>, spec: &FeedSpec) {
        let s = spec.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            let bytes = fetch::read_bounded(&s.cache, s.max_bytes).ok()?;
            parse::parse(&bytes, s.max_prefixes).ok()
        })
        .await
        .ok()
        .flatten();
        if let Some(p) = parsed {
            info!(feed = %spec.name, prefixes = p.prefixes.len(), cache = %spec.cache.display(), "feeds: loaded the on-disk copy");
            let mut core = shared.lock();
            let st = core.feeds.status.entry(spec.name.clone()).or_default();
            st.from_cache = true;
            st.prefixes = p.prefixes.len() as u64;
            st.invalid_lines = p.invalid as u64;
            drop(core);
            self.keep(&spec.name, p.prefixes);
        }
    }

    /// Fetch and parse one feed; a failure keeps the last good list and is counted.
    async fn refresh(&mut self, shared: &Arc<Shared>, spec: &FeedSpec) {
        let s = spec.clone();
        let result = tokio::task::spawn_blocking(move || {
            let bytes = fetch::fetch(&s)?;
            let parsed = parse::parse(&bytes, s.max_prefixes).map_err(|e| e.to_string())?;
            let cache_error = match &s.source {
                FeedSource::Url(_) => fetch::store_cache(&s.cache, &bytes).err(),
                FeedSource::File(_) => None,
            };
            Ok::<_, String>((parsed, cache_error))
        })
        .await
        .unwrap_or_else(|e| Err(format!("feed task: {e}")));
        let now = Instant::now();
        let mut core = shared.lock();
        let st: &mut FeedStatus = core.feeds.status.entry(spec.name.clone()).or_default();
        let retry = match &result {
            Err(_) if !self.lists.contains_key(&spec.name) => spec.refresh.min(FIRST_RETRY),
            _ => spec.refresh,
        };
        self.due.insert(spec.name.clone(), now + retry);
        st.next_refresh_unix = Some(unix_now() + retry.as_secs());
        match result {
            Ok((parsed, cache_error)) => {
                st.refreshes_ok += 1;
                st.last_success_unix = Some(unix_now());
                st.last_error = None;
                st.from_cache = false;
                st.prefixes = parsed.prefixes.len() as u64;
                st.invalid_lines = parsed.invalid as u64;
                if parsed.invalid > 0 {
                    warn!(feed = %spec.name, invalid = parsed.invalid, first = ?parsed.first_invalid, "feeds: invalid lines skipped");
                }
                if let Some(e) = cache_error {
                    warn!(feed = %spec.name, error = %e, "feeds: cannot keep the on-disk copy");
                }
                drop(core);
                self.keep(&spec.name, parsed.prefixes);
            }
            Err(e) => {
                st.refreshes_failed += 1;
                st.last_error = Some(e.clone());
                warn!(feed = %spec.name, error = %e, "feeds: refresh failed; the last good list stays in force");
            }
        }
    }

    fn keep(&mut self, name: &str, prefixes: Prefixes) {
        if self
            .lists
            .get(name)
            .is_some_and(|l| *l.prefixes == prefixes)
        {
            return;
        }
        self.versions += 1;
        self.lists.insert(
            name.to_owned(),
            Loaded {
                prefixes: Arc::new(prefixes),
                version: self.versions,
            },
        );
    }

    /// Write the next generation, flip, delete the old-only entries.
    async fn swap(
        &mut self,
        shared: &Arc<Shared>,
        signature: &[(String, Listing, u64)],
    ) -> Result<(), String> {
        let lists: Vec<(Arc<Prefixes>, Listing)> = signature
            .iter()
            .filter_map(|(n, l, _)| self.lists.get(n).map(|d| (d.prefixes.clone(), *l)))
            .collect();
        let active = shared.lock().feeds.active as usize;
        let mut tries = self.tries.take().ok_or("feed maps busy")?;
        let current = self.current.take();
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            let r = write_next(tries.as_mut(), current, &lists, active);
            (tries, r)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.tries = Some(out.0);
        let (swaps, has) = out.1?;
        let written = started.elapsed();
        {
            let mut core = shared.lock();
            let nothing = swaps
                .iter()
                .all(|s| s.updates.is_empty() && s.deletes.is_empty());
            if nothing && !has && !core.feeds.has {
                // Nothing listed, nothing held: no flip (keeps the rule generation).
                self.current = Some((Vec::new(), Vec::new()));
                return Ok(());
            }
            let before = (core.feeds.active, core.feeds.has);
            core.feeds.flip(has);
            if let Err(e) = core.apply_desired() {
                (core.feeds.active, core.feeds.has) = before;
                return Err(format!("flipping the feed generation: {e}"));
            }
            core.feeds.entries = (swaps[0].after.len() as u64, swaps[1].after.len() as u64);
        }
        let mut tries = self.tries.take().ok_or("feed maps busy")?;
        let deletes = [swaps[0].deletes.clone(), swaps[1].deletes.clone()];
        let out = tokio::task::spawn_blocking(move || {
            let r = tries
                .delete(Family::V4, &deletes[0])
                .and_then(|()| tries.delete(Family::V6, &deletes[1]));
            (tries, r)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.tries = Some(out.0);
        out.1.map_err(|e| e.to_string())?;
        let [v4, v6] = swaps;
        info!(
            entries_v4 = v4.after.len(),
            entries_v6 = v6.after.len(),
            written = v4.updates.len() + v6.updates.len(),
            deleted = v4.deletes.len() + v6.deletes.len(),
            load_ms = written.as_millis() as u64,
            "feeds: new generation in force"
        );
        self.current = Some((v4.after, v6.after));
        Ok(())
    }
}

/// Plan both families and write their updates (blocking): the swaps and whether anything
/// is listed.
fn write_next(
    tries: &mut dyn FeedTries,
    current: Option<(Entries, Entries)>,
    lists: &[(Arc<Prefixes>, Listing)],
    active: usize,
) -> Result<([generation::Swap; 2], bool), String> {
    let (cur4, cur6) = match current {
        Some(c) => c,
        None => (
            tries.read(Family::V4).map_err(|e| e.to_string())?,
            tries.read(Family::V6).map_err(|e| e.to_string())?,
        ),
    };
    let v4: Vec<(&[Key], Listing)> = lists.iter().map(|(p, l)| (p.v4.as_slice(), *l)).collect();
    let v6: Vec<(&[Key], Listing)> = lists.iter().map(|(p, l)| (p.v6.as_slice(), *l)).collect();
    let next4 = generation::merge_feeds(&v4);
    let next6 = generation::merge_feeds(&v6);
    let has = !next4.is_empty() || !next6.is_empty();
    for (family, next) in [(Family::V4, &next4), (Family::V6, &next6)] {
        let cap = traffic_common::MAX_FEED_PREFIXES as usize;
        if next.len() > cap {
            return Err(format!(
                "{} distinct {family:?} prefixes over all feeds, more than {cap}",
                next.len()
            ));
        }
    }
    let s4 = generation::plan(&cur4, &next4, active);
    let s6 = generation::plan(&cur6, &next6, active);
    tries
        .update(Family::V4, &s4.updates)
        .map_err(|e| e.to_string())?;
    tries
        .update(Family::V6, &s6.updates)
        .map_err(|e| e.to_string())?;
    Ok(([s4, s6], has))
}

#[cfg(test)]
mod tests;
