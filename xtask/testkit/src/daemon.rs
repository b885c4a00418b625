//! A trafficd process started inside a namespace, stopped (or killed) by its guard.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use traffic_daemon::api::{Client, client::read_response};

use crate::netns::Netns;

/// A running trafficd.
pub struct DaemonProcess {
    child: Option<Child>,
    /// Its admin socket.
    pub socket: PathBuf,
    /// Its stderr (the log).
    pub log: PathBuf,
}

impl DaemonProcess {
    /// The admin API client for this daemon (10 s read timeout).
    pub fn client(&self) -> Client {
        Client::new(&self.socket).with_timeout(Duration::from_secs(10))
    }

    /// Start `bin --config config` in `ns`, logging to `log`, and wait until its admin API
    /// answers (polled, up to `timeout`).
    pub fn start(
        ns: &Netns,
        bin: &Path,
        config: &Path,
        socket: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Result<Self> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = ns
            .command(bin)?
            .arg("--config")
            .arg(config)
            .env("TRAFFIC_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let mut d = Self {
            child: Some(child),
            socket: socket.to_owned(),
            log: log.to_owned(),
        };
        d.wait_ready(timeout)?;
        Ok(d)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "trafficd exited during start-up ({status}):\n{}",
                    self.log_text()
                );
            }
            if self
                .client()
                .request("GET", "/v1/status", None)
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            if Instant::now() > end {
                bail!("trafficd not ready after {timeout:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send a signal.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// SIGTERM and wait (polled, up to `timeout`; SIGKILL after that).
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait(timeout)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGKILL);
        self.wait(Duration::from_secs(10))
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > end {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("trafficd did not stop within {timeout:?} (killed, {status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate(Duration::from_secs(5));
        }
    }
}

/// HTTP GET over TCP from inside `ns` (e.g. a metrics listener on the node's loopback);
/// returns (status, body).
pub fn http_get(ns: &Netns, addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    let path = path.to_owned();
    ns.run(move || -> Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let r = read_response(&mut s)?;
        Ok((r.status, r.body))
    })?
}
