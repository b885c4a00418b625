//! A private machine for the service layer: systemd as PID 1 of new PID and mount
//! namespaces (booted by `xtask/service/boot.sh`, which gives it a private root of overlays
//! on a tmpfs, a private /tmp, /run and bpffs), living in a network namespace of its own
//! (the node) with a veth to a client namespace. Everything it creates is removed on drop:
//! systemd (and with it every process of its PID namespace, and its mounts), both network
//! namespaces (and with them the veth pair), its cgroups and the scratch directory.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::util;

/// The node's address on the veth, and the client's (benchmarking range, never routed).
pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 201, 1);
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 201, 2);
/// The prefix the test config puts into its own class.
pub const CLIENT_NET: &str = "198.18.201.0/24";
/// UDP port the node's receiver listens on.
const SINK_PORT: u16 = 9999;

/// Poll `f` every 100 ms until it returns `Some`, or fail after `timeout` naming `what`.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run `f` on a thread that has entered the network namespace at `ns`.
fn in_netns<T: Send + 'static>(
    ns: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> JoinHandle<Result<T>> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        let file = fs::File::open(&ns).with_context(|| format!("open {}", ns.display()))?;
        #[allow(unsafe_code, reason = "setns(2) has no safe wrapper in std or libc")]
        // SAFETY: setns on a namespace fd we own; it changes only this thread's namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        ensure!(
            r == 0,
            "setns {}: {}",
            ns.display(),
            std::io::Error::last_os_error()
        );
        f()
    })
}

/// Counts the UDP datagrams that reach the node's socket.
pub struct Sink {
    pub received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Machine {
    tag: String,
    /// `setsid unshare …`, the parent of systemd.
    unshare: Child,
    /// systemd, PID 1 of the private PID namespace, as the host numbers it.
    pub pid: u32,
    pub node_if: String,
    scratch: PathBuf,
    cgroup: String,
}

impl Machine {
    /// Namespaces, veth, boot; returns once `systemctl is-system-running` says running.
    pub fn boot() -> Result<Self> {
        sweep_stale();
        let tag = format!("{}", std::process::id() % 100_000);
        let (node, client) = (format!("tsv{tag}n"), format!("tsv{tag}c"));
        let scratch = util::target_dir().join(format!("service-{tag}"));
        fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
        let cgroup = format!("traffic-service-{tag}");
        let ns = |n: &str| PathBuf::from(format!("/run/netns/{n}"));
        util::run(Command::new("ip").args(["netns", "add", &node]))?;
        // From here on, a failure still removes what exists (Drop of a half-built machine
        // is not possible, so clean up by hand).
        let setup = || -> Result<()> {
            util::run(Command::new("ip").args(["netns", "add", &client]))?;
            util::run(Command::new("ip").args([
                "link", "add", &node, "netns", &node, "type", "veth", "peer", "name", &client,
                "netns", &client,
            ]))?;
            for (n, addr) in [(&node, NODE_ADDR), (&client, CLIENT_ADDR)] {
                let ip = |args: &[&str]| util::run(Command::new("ip").args(["-n", n]).args(args));
                ip(&["link", "set", "lo", "up"])?;
                ip(&["addr", "add", &format!("{addr}/24"), "dev", n])?;
                ip(&["link", "set", n, "up"])?;
            }
            Ok(())
        };
        let spawned = setup().and_then(|()| spawn_boot(&ns(&node), &scratch, &cgroup));
        let unshare = match spawned {
            Ok(c) => c,
            Err(e) => {
                remove_netns(&[&node, &client]);
                let _ = fs::remove_dir(&scratch);
                return Err(e);
            }
        };
        let mut m = Self {
            tag,
            unshare,
            pid: 0,
            node_if: node,
            scratch,
            cgroup,
        };
        m.pid = poll("systemd to start", Duration::from_secs(10), || {
            m.find_systemd()
        })?;
        let state = poll(
            "systemctl is-system-running",
            Duration::from_secs(30),
            || {
                let out = m.run(&["systemctl", "is-system-running"])?;
                let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                Ok(matches!(s.as_str(), "running" | "degraded").then_some(s))
            },
        )?;
        println!("service: private systemd pid {} is {state}", m.pid);
        Ok(m)
    }

    /// systemd: the child of unshare, once it has exec'ed systemd.
    fn find_systemd(&mut self) -> Result<Option<u32>> {
        if let Some(status) = self.unshare.try_wait()? {
            bail!("the boot script exited: {status}");
        }
        let pid = self.unshare.id();
        let children =
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        Ok(children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
            .find(|c| {
                fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|s| s.trim() == "systemd")
            }))
    }

    fn netns(&self, side: char) -> PathBuf {
        PathBuf::from(format!("/run/netns/tsv{}{side}", self.tag))
    }

    /// A path inside the machine's file system.
    pub fn path(&self, abs: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(abs.trim_start_matches('/'))
    }

    /// Run a command inside the machine (its mount, PID and network namespaces).
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-m", "-p", "-n", "--"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null());
        c.output()
            .with_context(|| format!("run {args:?} in the machine"))
    }

    /// Run a command inside the machine; fail with its output unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        ensure!(
            out.status.success(),
            "{args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A shell command line inside the machine, in `dir`.
    pub fn sh(&self, dir: &Path, line: &str) -> Result<String> {
        self.ok(&["sh", "-c", &format!("cd '{}' && {line}", dir.display())])
    }

    /// The node's receiver: counts datagrams to NODE_ADDR:SINK_PORT.
    pub fn sink(&self) -> Result<Sink> {
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = in_netns(&self.netns('n'), move || {
            let sock = UdpSocket::bind(SocketAddrV4::new(NODE_ADDR, SINK_PORT))?;
            sock.set_read_timeout(Some(Duration::from_millis(50)))?;
            let _ = ready_tx.send(());
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if sock.recv(&mut buf).is_ok() {
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the node's receiver did not start")?;
        Ok(Sink {
            received,
            stop,
            thread: Some(thread),
        })
    }

    /// Hold a TCP listener on `addr` in the node's namespace until the returned sender is
    /// dropped (to take a port away from trafficd).
    pub fn occupy(&self, addr: std::net::SocketAddr) -> Result<std::sync::mpsc::Sender<()>> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let _thread = in_netns(&self.netns('n'), move || {
            match std::net::TcpListener::bind(addr) {
                Ok(_listener) => {
                    let _ = ready_tx.send(Ok(()));
                    // Returns when the sender is dropped; the listener lives until then.
                    let _ = stop_rx.recv();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
            Ok(())
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the listener thread did not start")?
            .map_err(|e| anyhow::anyhow!("bind {addr}: {e}"))?;
        Ok(stop_tx)
    }

    /// Send `n` UDP datagrams from the client to the node's receiver.
    pub fn send(&self, n: u64) -> Result<()> {
        in_netns(&self.netns('c'), move || {
            let sock = UdpSocket::bind(SocketAddrV4::new(CLIENT_ADDR, 0))?;
            for i in 0..n {
                sock.send_to(&i.to_be_bytes(), SocketAddrV4::new(NODE_ADDR, SINK_PORT))?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?
    }

    /// Whether an XDP program is attached to the node's veth.
    pub fn xdp_attached(&self) -> Result<bool> {
        let out = util::output(Command::new("ip").args([
            "-n",
            &format!("tsv{}n", self.tag),
            "-d",
            "link",
            "show",
            "dev",
            &self.node_if,
        ]))?;
        Ok(out.contains("prog/xdp"))
    }
}

/// `setsid unshare --pid --fork … boot.sh` in the node's network namespace.
fn spawn_boot(netns: &Path, scratch: &Path, cgroup: &str) -> Result<Child> {
    let mut c = Command::new("nsenter");
    // If xtask dies without its Drop (Ctrl-C, a kill), the machine dies too: nsenter
    // and setsid exec into unshare, which keeps this parent-death signal, and
    // unshare's --kill-child passes it on to systemd.
    #[allow(unsafe_code, reason = "pre_exec is unsafe; prctl is async-signal-safe")]
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.arg(format!("--net={}", netns.display()))
        .args(["setsid", "unshare", "--pid", "--fork", "--kill-child"])
        .args(["--mount", "--mount-proc"])
        .arg(util::root().join("xtask/service/boot.sh"))
        .arg(scratch)
        .arg(cgroup)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn the private systemd")
}

/// What an earlier run killed before its clean-up left behind (its systemd died with it,
/// through the parent-death signal): our network namespaces and empty cgroups. Safe because
/// privileged runs hold the machine-wide lock, so no other service run is alive.
fn sweep_stale() {
    let list = util::output(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    let ours = |n: &str| {
        n.strip_prefix("tsv")
            .and_then(|r| r.strip_suffix(['n', 'c']))
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    };
    for name in list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| ours(n))
    {
        println!("service: removing the stale network namespace {name}");
        remove_netns(&[name]);
    }
    // Scratch directories: the tmpfs was mounted in the dead namespace, so they are empty.
    for e in fs::read_dir(util::target_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name
            .strip_prefix("service-")
            .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
        {
            let _ = fs::remove_dir(e.path());
        }
    }
    for h in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for e in fs::read_dir(h.path()).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("traffic-service-")
            {
                remove_cgroup(&e.path());
            }
        }
    }
}

/// rmdir a cgroup and its children, deepest first (only empty cgroups can go).
fn remove_cgroup(dir: &Path) {
    let _ = Command::new("find")
        .arg(dir)
        .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
        .stderr(Stdio::null())
        .status();
}

fn remove_netns(names: &[&str]) {
    for n in names {
        let _ = Command::new("ip")
            .args(["netns", "del", n])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // PID 1 gone: the kernel kills every process of the PID namespace; the mount
        // namespace (overlays, tmpfs, private bpffs with its pins) goes with the last one.
        if self.pid != 0 {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        remove_netns(&[&format!("tsv{}n", self.tag), &format!("tsv{}c", self.tag)]);
        // systemd's cgroups, deepest first (rmdir removes only empty cgroups). The processes
        // may take a moment to leave them.
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let mut left = 0;
            for h in fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let dir = h.path().join(&self.cgroup);
                if dir.exists() {
                    remove_cgroup(&dir);
                    left += usize::from(dir.exists());
                }
            }
            if left == 0 || Instant::now() > end {
                if left > 0 {
                    eprintln!("service: {left} cgroup(s) {} not removed", self.cgroup);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The tmpfs was mounted in the dead namespace only: this is an empty directory.
        let _ = fs::remove_dir(&self.scratch);
    }
}
