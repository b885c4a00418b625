//! `GET /v1/watch`: the verdict stream as NDJSON (one [`VerdictLine`] per line, chunked),
//! filtered by the query ([`WatchQuery`]). Empty lines are heartbeats (every
//! [`HEARTBEAT`]): they keep an idle stream's connection alive (see
//! [`super::listener::Streaming`]) and tell the client the daemon is still there.
//!
//! [`VerdictLine`]: crate::api::watch::VerdictLine

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse as _, Response},
};

use super::{Shared, listener::Streaming};
use crate::{api::watch::WatchQuery, ops::OpError, watch::Subscription};

/// How often an idle stream sends an empty line: well within the listener's idle timeout.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Lines sent in one chunk, at most.
const CHUNK_LINES: usize = 64;

/// Watchers the admin listener can carry: a quarter of its connection cap (streams are
/// never evicted, so they must leave room for everything else), at most
/// [`crate::watch::MAX_WATCHERS`].
pub fn max_watchers(admin_cap: usize) -> usize {
    (admin_cap / 4).min(crate::watch::MAX_WATCHERS)
}

/// The route.
pub async fn watch(
    State(s): State<Arc<Shared>>,
    q: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return failure(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let sub = s.lock().watch_subscribe(&q);
    match sub {
        Ok(Ok(sub)) => stream(sub),
        Ok(Err(full)) => failure(StatusCode::SERVICE_UNAVAILABLE, full.to_string()),
        Err(e) => {
            let code = match &e {
                OpError::NotFound(_) | OpError::Invalid(_) => StatusCode::BAD_REQUEST,
                OpError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            failure(code, e.to_string())
        }
    }
}

fn failure(code: StatusCode, error: String) -> Response {
    (code, axum::Json(crate::api::ApiError { error })).into_response()
}

fn stream(sub: Subscription) -> Response {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = Lines { sub, heartbeat };
    let mut r = Response::new(Body::new(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    r.extensions_mut().insert(Streaming);
    r
}

/// The body: the watcher's lines as they come, a heartbeat when none came for a while.
/// Dropped when the client goes (or the listener closes it): the watcher leaves the hub.
struct Lines {
    sub: Subscription,
    heartbeat: tokio::time::Interval,
}

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match this.sub.lines.poll_recv(cx) {
            Poll::Ready(Some(first)) => {
                // Whatever else is queued goes in the same chunk.
                let mut chunk = first.to_vec();
                for _ in 1..CHUNK_LINES {
                    match this.sub.lines.try_recv() {
                        Ok(more) => chunk.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                this.heartbeat.reset();
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(chunk)))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.heartbeat.poll_tick(cx) {
                Poll::Ready(_) => {
                    Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"\n")))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_take_at_most_a_quarter_of_the_admin_cap() {
        assert_eq!(max_watchers(32), 8);
        assert_eq!(max_watchers(1024), crate::watch::MAX_WATCHERS);
        assert_eq!(max_watchers(3), 0);
    }
}
