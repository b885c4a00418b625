//! Issue 12, item 6: a second trafficd on the same pin directory (another config, and with
//! `--fresh`) exits 1 naming the live daemon's PID, and changes nothing of its state.
//!
//! On the main of 2026-12-04 the second start loaded and wrote the pinned maps (the other
//! config's limits) before failing at the admin socket, and `--fresh` unpinned the live maps
//! first: the new source below got the second config's burst, or the pins were gone.

use std::{process::Stdio, time::Duration};

use super::listeners::{NO_GROUP, Rig};
use crate::support::trafficd;

/// The live daemon's premium limit: 20 packets, then one a minute.
const LIVE: &str = "{ rate = 1, per = \"1m\", burst = 20 }";
/// The intruder's: a much larger burst, so a rewrite would show.
const OTHER: &str = "{ rate = 1, per = \"1m\", burst = 500 }";

/// Dump of the pinned map `name` (bpftool, JSON), or the error text.
fn dump(rig: &Rig, name: &str) -> String {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(rig.pins.0.join(name))
        .output()
        .expect("run bpftool");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn a_second_instance_is_refused_before_it_touches_the_live_maps() {
    let mut rig = Rig::new("instance");
    let config = rig.write_config(
        "live.toml",
        &rig.socket(),
        LIVE,
        NO_GROUP,
        "[metrics]\nenabled = false\n",
    );
    let pid = rig.start(&config).pid().unwrap();
    assert_eq!(rig.burst(1, 40), 20, "the live limit");
    let maps = ["TRF_CLASSES", "TRF_CONFIG", "TRF_RULES", "TRF_BUCKETS"];
    let before: Vec<String> = maps.iter().map(|m| dump(&rig, m)).collect();

    let other_socket = rig.tmp.path("other.sock");
    let other = rig.write_config(
        "other.toml",
        &other_socket,
        OTHER,
        NO_GROUP,
        "[metrics]\nenabled = false\n",
    );
    for fresh in [false, true] {
        let mut cmd = rig.topo.node.command(trafficd()).unwrap();
        cmd.arg("--config").arg(&other).stdin(Stdio::null());
        if fresh {
            cmd.arg("--fresh");
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "fresh={fresh}: {err}");
        assert!(
            err.contains(&format!("PID {pid}")) && err.contains("another trafficd"),
            "fresh={fresh}: the message names the live daemon: {err}"
        );
        assert!(
            !other_socket.exists(),
            "the second instance bound its socket"
        );
    }

    let after: Vec<String> = maps.iter().map(|m| dump(&rig, m)).collect();
    for ((m, b), a) in maps.iter().zip(&before).zip(&after) {
        assert_eq!(b, a, "{m} changed under the live daemon");
    }
    assert_eq!(rig.burst(1, 10), 0, "the exhausted bucket stays exhausted");
    assert_eq!(rig.burst(2, 40), 20, "a new source gets the live burst");
    let mut d = rig.daemon.take().unwrap();
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
}
