//! Active probes of upstreams (TCP connect, or HTTP GET and a 2xx/3xx status), run off the
//! engine's lock by the event loop; results go back to `Core::probe_done`.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::{config::ProbeKind, policy::upstream::ProbeResult};

/// Run one probe of an upstream.
pub async fn probe(
    kind: ProbeKind,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> ProbeResult {
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        if kind != ProbeKind::Http {
            return Ok(());
        }
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: trafficd-probe\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let got = s.read(&mut buf[n..]).await.map_err(|e| format!("read: {e}"))?;
            if got == 0 {
                break;
            }
            n += got;
        }
        let line = String::from_utf8_lossy(&buf[..n]);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {:?}", line.lines().next().unwrap_or("")))?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    })
    .await;
    let latency_seconds = start.elapsed().as_secs_f64();
    match result {
        Ok(Ok(())) => ProbeResult {
            ok: true,
            latency_seconds,
            error: None,
        },
        Ok(Err(e)) => ProbeResult {
            ok: false,
            latency_seconds,
            error: Some(e),
        },
        Err(_) => ProbeResult {
            ok: false,
            latency_seconds,
            error: Some(format!("timeout after {timeout:?}")),
        },
    }
}
