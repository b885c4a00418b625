//! `trafficctl watch` and the engine: the program's watch flags follow the hub's watchers,
//! and the hub resolves events with the engine's class and interface names.

use std::sync::Arc;

use traffic_common::{GLOBAL_WATCH, GLOBAL_WATCH_DROPS};

use super::OpError;
use crate::{
    api::watch::{WatchFilter, WatchQuery},
    engine::Core,
    watch::{Full, Names, Snapshot, Subscription},
};

impl Core {
    /// Bring the program's watch flags in line with the watchers (written at once when they
    /// differ), and hand the hub the names it resolves events with. Called on every control
    /// tick and when a watcher arrives: a flag is on within the request, off within a tick
    /// of the last watcher leaving.
    pub fn sync_watch(&mut self) -> Result<(), OpError> {
        let want = self.watch.flags();
        if want != 0 {
            self.watch.set_names(self.watch_names());
        }
        let have = self.applied.global.flags & (GLOBAL_WATCH | GLOBAL_WATCH_DROPS);
        if want != have {
            self.apply_desired()?;
            tracing::info!(
                watchers = self.watch.watchers(),
                on = want != 0,
                "watch flags set"
            );
        }
        Ok(())
    }

    /// A new watcher: its filter checked against the config, then subscribed and the
    /// program's events switched on.
    /// The outer error is the request's; the inner one says every watcher slot is taken.
    pub fn watch_subscribe(
        &mut self,
        q: &WatchQuery,
    ) -> Result<Result<Subscription, Full>, OpError> {
        let filter = WatchFilter::parse(q).map_err(OpError::Invalid)?;
        if let Some(c) = &filter.class
            && !self.config.classes.iter().any(|k| &k.name == c)
        {
            return Err(OpError::NotFound(format!("no class `{c}` in the config")));
        }
        let hub = Arc::clone(&self.watch);
        let sub = match hub.subscribe(filter) {
            Ok(sub) => sub,
            Err(full) => return Ok(Err(full)),
        };
        self.sync_watch()?;
        Ok(Ok(sub))
    }

    fn watch_names(&self) -> Names {
        Names {
            classes: self
                .slots
                .to_names()
                .iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect(),
            interfaces: self
                .interfaces
                .iter()
                .filter_map(|i| Some((i.ifindex?, i.name.clone())))
                .collect(),
        }
    }

    /// The watch metrics.
    pub fn watch_snapshot(&self) -> Snapshot {
        self.watch
            .snapshot(self.dp.watch_state().unwrap_or_default())
    }
}
