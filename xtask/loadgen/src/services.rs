//! The node's upstream services for the demo and the profile runs: an HTTP server (for
//! upstreams probed with `http`) or a TCP echo server (the rest), listening dual-stack in
//! the node namespace, each switchable to fail: stop listening, answer 500, or answer late.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

use traffic_testkit::netns::Netns;

/// How a service behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Up,
    /// Not listening: the node's stack answers connects with RST.
    Down,
    /// HTTP: every answer (the health check included) is a 500. Echo: closes at once.
    Error,
    /// Answers after this delay.
    Slow(Duration),
}

/// What a service speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Http,
    Echo,
}

struct Service {
    name: String,
    port: u16,
    behaviour: Arc<Mutex<Behaviour>>,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Running services; dropping them stops every thread.
pub struct Services {
    stop: Arc<AtomicBool>,
    list: Vec<Service>,
}

/// Connections handled at once per service; more are closed at once.
const MAX_HANDLERS: u64 = 512;

fn poll_readable(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: poll on one pollfd we own.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    n > 0
}

fn handle(mut s: TcpStream, kind: Kind, behaviour: Behaviour, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    // Read the request: HTTP up to the end of the headers, echo one read.
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if kind == Kind::Echo
                    || got.windows(4).any(|w| w == b"\r\n\r\n")
                    || got.len() > 16384
                {
                    break;
                }
            }
            Err(_) => return,
        }
    }
    if let Behaviour::Slow(d) = behaviour {
        let end = Instant::now() + d;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10).min(end - Instant::now()));
        }
    }
    match kind {
        Kind::Echo => {
            if behaviour != Behaviour::Error {
                let _ = s.write_all(&got);
            }
        }
        Kind::Http => {
            let (code, body) = if behaviour == Behaviour::Error {
                ("500 Internal Server Error", "failing on purpose\n")
            } else {
                ("200 OK", "ok\n")
            };
            let _ = write!(
                s,
                "HTTP/1.1 {code}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    }
    let _ = s.flush();
    let _ = s.shutdown(std::net::Shutdown::Write);
    // Wait briefly for the client's FIN so the close is orderly.
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.read(&mut buf);
}

fn serve(
    port: u16,
    kind: Kind,
    behaviour: Arc<Mutex<Behaviour>>,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut listener: Option<TcpListener> = None;
    let active = Arc::new(AtomicU64::new(0));
    while !stop.load(Ordering::Relaxed) {
        let b = *behaviour.lock().unwrap_or_else(|e| e.into_inner());
        if b == Behaviour::Down {
            listener = None;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(("::", port)) {
                Ok(l) => {
                    let _ = l.set_nonblocking(true);
                    listener.insert(l)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        if !poll_readable(l.as_raw_fd(), 20) {
            continue;
        }
        while let Ok((s, _)) = l.accept() {
            let _ = s.set_nonblocking(false);
            served.fetch_add(1, Ordering::Relaxed);
            if active.load(Ordering::Relaxed) >= MAX_HANDLERS {
                continue; // dropped: closed at once
            }
            active.fetch_add(1, Ordering::Relaxed);
            let (active, stop) = (active.clone(), stop.clone());
            std::thread::spawn(move || {
                handle(s, kind, b, &stop);
                active.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

impl Services {
    /// Start one service per (name, port, kind) in `ns`; waits until each listens.
    pub fn start(ns: &Netns, list: &[(String, u16, Kind)]) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut out = Vec::new();
        for (name, port, kind) in list {
            let behaviour = Arc::new(Mutex::new(Behaviour::Up));
            let served = Arc::new(AtomicU64::new(0));
            let thread = {
                let (b, s, st, port, kind) = (
                    behaviour.clone(),
                    served.clone(),
                    stop.clone(),
                    *port,
                    *kind,
                );
                ns.spawn(move || serve(port, kind, b, s, st))?
            };
            out.push(Service {
                name: name.clone(),
                port: *port,
                behaviour,
                served,
                thread: Some(thread),
            });
        }
        let svc = Self { stop, list: out };
        // Listening? Connect from inside the namespace (polled, with a deadline).
        for s in &svc.list {
            let port = s.port;
            let ok = ns.run(move || {
                let end = Instant::now() + Duration::from_secs(5);
                while Instant::now() < end {
                    if TcpStream::connect_timeout(
                        &(std::net::Ipv4Addr::LOCALHOST, port).into(),
                        Duration::from_millis(200),
                    )
                    .is_ok()
                    {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                false
            })?;
            anyhow::ensure!(ok, "service {} did not listen on port {port}", s.name);
        }
        Ok(svc)
    }

    /// Change how the service `name` behaves. Unknown names are an error.
    pub fn set(&self, name: &str, b: Behaviour) -> Result<()> {
        let s = self
            .list
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| anyhow::anyhow!("no service named {name}"))?;
        *s.behaviour.lock().unwrap_or_else(|e| e.into_inner()) = b;
        Ok(())
    }

    /// How the service `name` behaves now.
    pub fn behaviour(&self, name: &str) -> Option<Behaviour> {
        self.list
            .iter()
            .find(|s| s.name == name)
            .map(|s| *s.behaviour.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Connections accepted so far by the service `name`.
    pub fn served(&self, name: &str) -> u64 {
        self.list
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.served.load(Ordering::Relaxed))
    }

    /// Stop every service and wait for the accept loops.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in &mut self.list {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop();
    }
}
