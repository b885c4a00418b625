//! Walks of the bucket map, off the engine's lock: the engine hands out a
//! [`SourcesWalk`](crate::ops::sources::SourcesWalk) under the lock, and the walk runs on
//! a blocking thread, so a map of `max_sources` entries never stalls the control loop (its
//! runtime has two workers). One walk at a time: a scrape that finds a walk running keeps
//! the previous counts; a `sources` request waits its turn.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::shared::Shared;
use crate::{api::report::SourcesReport, ops::OpError};

pub(super) static WALKS: Semaphore = Semaphore::const_new(1);

/// Refresh the tracked-source counts (metrics, `/v1/limits`) if they are stale.
pub async fn refresh_tracked_sources(s: &Arc<Shared>) {
    let Ok(_turn) = WALKS.try_acquire() else {
        return;
    };
    let walk = {
        let core = s.lock();
        if !core.tracked_sources_stale() {
            return;
        }
        core.sources_walk()
    };
    match walk {
        Ok(walk) => match tokio::task::spawn_blocking(move || walk.per_slot()).await {
            Ok(per_slot) => s.lock().store_tracked_sources(per_slot),
            Err(e) => tracing::warn!(error = %e, "tracked sources: the walk failed"),
        },
        Err(e) => tracing::warn!(error = %e, "tracked sources: cannot walk the bucket map"),
    }
}

/// The `top` sources by packets (`/v1/sources`).
pub async fn top_sources(s: &Arc<Shared>, top: usize) -> Result<SourcesReport, OpError> {
    let _turn = WALKS
        .acquire()
        .await
        .map_err(|e| OpError::Invalid(format!("walks closed: {e}")))?;
    let walk = s.lock().sources_walk()?;
    tokio::task::spawn_blocking(move || walk.top(top))
        .await
        .map_err(|e| OpError::Invalid(format!("the walk of the bucket map failed: {e}")))?
}

/// One baseline reading (about once a second, from the daemon's loop): a bounded walk off
/// the lock, skipped while another walk runs (the next reading then spans longer).
pub async fn observe_baseline(s: &Arc<Shared>) {
    use crate::ops::{BASELINE_WALK_BUDGET, BASELINE_WALK_MAX, BaselineWalk};
    let Ok(_turn) = WALKS.try_acquire() else {
        return;
    };
    // Bound first: a guard in the match's scrutinee would live through the arms, and the
    // quiet arm locks again.
    let asked = s.lock().baseline_walk();
    let walk = match asked {
        Ok(Some(BaselineWalk::Walk(w))) => w,
        Ok(Some(BaselineWalk::Quiet)) => {
            // No thread hand-off for a walk that would read nothing.
            s.lock().observe_baseline(&[], false);
            return;
        }
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "baseline: cannot walk the bucket map");
            return;
        }
    };
    let read = tokio::task::spawn_blocking(move || {
        walk.baseline_sample(BASELINE_WALK_MAX, BASELINE_WALK_BUDGET)
    })
    .await;
    match read {
        Ok((samples, partial)) => s.lock().observe_baseline(&samples, partial),
        Err(e) => tracing::warn!(error = %e, "baseline: the walk failed"),
    }
}
