//! Named network namespaces that this process creates and removes, and ways to run code
//! and processes inside them.

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// A named network namespace (`/run/netns/NAME`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

/// Run `ip` with arguments, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Enter the network namespace at `path` on the calling thread.
fn setns(path: &std::path::Path) -> std::io::Result<()> {
    let f = File::open(path)?;
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: setns on a namespace fd we opened; affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Netns {
    /// Create a namespace, replacing a stale one of the same name left by a crashed run.
    pub fn create(name: &str) -> Result<Self> {
        if PathBuf::from("/run/netns").join(name).exists() {
            let _ = ip(&["netns", "del", name]);
        }
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME …`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A veth pair: `local` (with `local_mac`) here, `peer` (with `peer_mac`) in `peer_ns`.
    pub fn veth_pair(
        &self,
        (local, local_mac): (&str, &str),
        (peer, peer_mac): (&str, &str),
        peer_ns: &Netns,
    ) -> Result<()> {
        self.ip(&[
            "link",
            "add",
            local,
            "address",
            local_mac,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "address",
            peer_mac,
            "netns",
            peer_ns.name(),
        ])
    }

    /// Give `dev` an IPv4 and an IPv6 address (CIDR; the IPv6 one without DAD) and set it up.
    pub fn addresses_up(&self, dev: &str, v4: &str, v6: &str) -> Result<()> {
        self.ip(&["addr", "add", v4, "dev", dev])?;
        self.ip(&["-6", "addr", "add", v6, "dev", dev, "nodad"])?;
        self.ip(&["link", "set", dev, "up"])
    }

    /// A permanent neighbour entry (IPv4 or IPv6, by the address): no ARP/ND on the link.
    pub fn permanent_neighbour(&self, addr: &str, mac: &str, dev: &str) -> Result<()> {
        let family = if addr.contains(':') { "-6" } else { "-4" };
        self.ip(&[
            family,
            "neigh",
            "add",
            addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
    }

    /// `ethtool -K DEV gro on` inside the namespace: a veth with GRO runs its NAPI, so XDP_TX
    /// frames from the peer arrive.
    pub fn gro_on(&self, dev: &str) -> Result<()> {
        let out = self
            .command("ethtool")?
            .args(["-K", dev, "gro", "on"])
            .stdin(std::process::Stdio::null())
            .output()
            .context("spawn ethtool")?;
        if !out.status.success() {
            anyhow::bail!(
                "ethtool -K {dev} gro on: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Write a sysctl inside the namespace (`/proc/sys/...` as seen from it).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_owned();
        self.run(move || std::fs::write(&path, &value).with_context(|| format!("write {path}")))?
    }

    /// Run `f` on a new thread inside the namespace and wait for its result. Sockets `f`
    /// creates belong to the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        self.spawn(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))
    }

    /// Spawn a thread inside the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>> {
        let path = self.path();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let entered = setns(&path);
            let ok = entered.is_ok();
            let _ = tx.send(entered);
            if !ok {
                panic!("setns failed");
            }
            f()
        });
        rx.recv()
            .context("namespace thread died")?
            .with_context(|| format!("enter netns {}", self.name))?;
        Ok(handle)
    }

    /// A command that runs inside the namespace (only the network namespace changes; the
    /// mount namespace, and with it /sys/fs/bpf, stays the caller's — unlike
    /// `ip netns exec`, which remounts /sys).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        let mut cmd = Command::new(program);
        // Opened before fork: between fork and exec only async-signal-safe calls are allowed.
        let ns =
            File::open(self.path()).with_context(|| format!("open {}", self.path().display()))?;
        #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
        // SAFETY: the closure only calls setns(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: cannot delete netns {}: {e}", self.name);
        }
    }
}

/// Pin the calling thread to one CPU (load generators spread over CPUs on purpose).
pub fn pin_to_cpu(cpu: usize) {
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity act on it and on
    // the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Number of online CPUs.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
