//! The listener with streamed responses (`GET /v1/watch`): see the module doc.

use std::{
    convert::Infallible,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{Router, body::Body, response::Response};
use tokio::time::Instant;

use super::{Limits, Stats, Streaming, serve};

/// 256 KiB every 10 ms, for ever: fills a client's buffers within a second if it
/// stops reading.
struct Endless(tokio::time::Interval);

impl http_body::Body for Endless {
    type Data = axum::body::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Infallible>>> {
        self.0.poll_tick(cx).map(|_| {
            let chunk = axum::body::Bytes::from(vec![b'x'; 256 * 1024]);
            Some(Ok(http_body::Frame::data(chunk)))
        })
    }
}

/// A streamed response lives as long as its client reads it, well past the idle
/// timeout; it is not evicted at the cap (the newcomer is refused); a client that stops
/// reading is closed by the idle timeout once its buffers are full.
#[tokio::test]
async fn a_stream_lives_while_read_is_never_evicted_and_dies_unread() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::with_cap(2)
    };
    let stats = Arc::new(Stats::default());
    let stream = || async {
        let body = Endless(tokio::time::interval(Duration::from_millis(10)));
        let mut r = Response::new(Body::new(body));
        r.extensions_mut().insert(Streaming);
        r
    };
    let router = Router::new().route("/s", axum::routing::get(stream));
    tokio::spawn(serve(l, "test", router, limits, stats.clone()));
    let ask = b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut reader = tokio::net::TcpStream::connect(addr).await.unwrap();
    reader.write_all(ask).await.unwrap();
    // A small receive buffer (no autotuning): its side fills in a fraction of a second.
    let stalled = tokio::net::TcpSocket::new_v4().unwrap();
    stalled.set_recv_buffer_size(4096).unwrap();
    let mut stalled = stalled.connect(addr).await.unwrap();
    stalled.write_all(ask).await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    // The stalled client reads the start of its answer (it is streaming), then no more.
    assert!(stalled.read(&mut buf).await.unwrap() > 0);
    assert!(reader.read(&mut buf).await.unwrap() > 0);
    // Both streaming at the cap: a newcomer is refused, neither stream evicted.
    let _third = tokio::net::TcpStream::connect(addr).await.unwrap();
    until(|| stats.refused.load(Ordering::Relaxed) == 1).await;
    assert_eq!(stats.evicted.load(Ordering::Relaxed), 0);
    // The reader reads on; the stalled one is closed (at the latest when the deadline
    // its task slept on when it was fresh, 5 s, comes and finds it idle for longer than
    // the idle timeout).
    let reading = tokio::spawn(async move {
        let mut total = 0usize;
        let end = Instant::now() + Duration::from_secs(8);
        while Instant::now() < end {
            match reader.read(&mut buf).await {
                Ok(n) if n > 0 => total += n,
                _ => return (false, total),
            }
        }
        (true, total)
    });
    // (It reads until aborted below, or for 8 s at most.)
    let end = Instant::now() + Duration::from_secs(8);
    while stats.timed_out.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < end, "the stalled stream was not closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.timed_out.load(Ordering::Relaxed), 1);
    assert_eq!(
        stats.open.load(Ordering::Relaxed),
        1,
        "the reader's stream lives"
    );
    reading.abort();
}

/// Polls `f` every 10 ms for up to 5 s.
async fn until(f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < end, "condition not reached in 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
