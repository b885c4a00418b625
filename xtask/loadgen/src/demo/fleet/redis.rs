//! The fleet demo's redis-server: its own namespace, no persistence, the README's minimal
//! ACL (the default user off; user `traffic` limited to the namespace's keys and channel
//! and the commands the daemons send). Killed on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use traffic_testkit::netns::Netns;

/// The fleet's key namespace.
pub(super) const NAMESPACE: &str = "demo";
/// The fleet user's password (the run's own server, gone with it).
pub(super) const PASSWORD: &str = "fleet-demo-secret";

/// The README's minimal ACL for [`NAMESPACE`], plus an admin user for `INFO`.
fn acl() -> String {
    let ns = NAMESPACE;
    format!(
        "user default off\nuser admin on >{PASSWORD}-admin ~* &* +@all\n\
         user traffic on >{PASSWORD} resetkeys ~{{{ns}}}:* resetchannels &{{{ns}}}:* \
         -@all +ping +set +sadd +srem +srandmember +mget +hset +hdel +hscan +pexpire \
         +publish +subscribe +unsubscribe\n"
    )
}

/// A running redis-server.
pub(super) struct Redis {
    child: Option<Child>,
    pub(super) log: PathBuf,
}

impl Redis {
    /// Start it in `ns` with its files in `dir`, listening on every address of `ns`, and
    /// wait (polled, with a deadline) until it answers PING.
    pub(super) fn start(ns: &Netns, dir: &Path) -> Result<Self> {
        let conf = dir.join("redis.conf");
        let acl_file = dir.join("users.acl");
        std::fs::write(&acl_file, acl())?;
        std::fs::write(
            &conf,
            format!(
                "bind 0.0.0.0\nport 6379\nprotected-mode no\nsave \"\"\nappendonly no\n\
                 dir {}\naclfile {}\n",
                dir.display(),
                acl_file.display()
            ),
        )?;
        let log = dir.join("redis.log");
        let out = std::fs::File::create(&log)?;
        let child = ns
            .command("redis-server")?
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("redis-server (`cargo xtask setup` installs it)")?;
        let r = Self {
            child: Some(child),
            log,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while r.cli(ns, &["PING"]).trim() != "PONG" {
            if Instant::now() > end {
                bail!(
                    "redis-server does not answer PING:\n{}",
                    std::fs::read_to_string(&r.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(r)
    }

    /// redis-cli as the admin user, in the server's namespace (empty on failure).
    pub(super) fn cli(&self, ns: &Netns, args: &[&str]) -> String {
        let pass = format!("{PASSWORD}-admin");
        ns.command("redis-cli")
            .ok()
            .and_then(|mut c| {
                c.args([
                    "-h",
                    "127.0.0.1",
                    "--user",
                    "admin",
                    "--pass",
                    &pass,
                    "--no-auth-warning",
                ])
                .args(args)
                .output()
                .ok()
            })
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Commands the server has processed since it started (`INFO stats`).
    pub(super) fn commands_processed(&self, ns: &Netns) -> u64 {
        self.cli(ns, &["INFO", "stats"])
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Stop the server (SIGKILL: nothing is persisted) and reap it.
    pub(super) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
