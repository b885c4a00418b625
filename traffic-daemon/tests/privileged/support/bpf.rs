//! Shared harness of the BPF_PROG_TEST_RUN tests: loading the program on a test's own
//! pinned maps, configuring it as the daemon would, and naming actions and counters.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context as _, Result, ensure};
use traffic_common::{
    Bucket, BucketKey, Counter, MONITOR_OFFSET, REASON_SLOTS, Reason, UNCLASSIFIED, counter_index,
};
use traffic_daemon::{
    config::Config,
    dataplane::{
        Dataplane as _,
        kernel::{Kernel, LoadOptions},
    },
    plan::{Desired, Slots, desired, diff},
};

use super::PinDir;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// Destination of every crafted packet: the node under test.
pub const NODE4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
pub const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// The embedded program loaded on the maps pinned in `pins`, left unconfigured.
pub fn load(pins: &PinDir, max_sources: u32) -> Result<Kernel> {
    Kernel::open_object(
        traffic_daemon::EBPF_OBJECT,
        &LoadOptions {
            pin_dir: pins.0.clone(),
            max_sources,
        },
    )
    .with_context(|| format!("load the program with pins in {}", pins.0.display()))
}

/// A loaded program configured from config text as the daemon would on start; `adjust`
/// may change the desired state before it is written (port rules, chaos).
pub fn load_configured(
    pins: &PinDir,
    max_sources: u32,
    text: &str,
    adjust: impl FnOnce(Desired, &Slots) -> Desired,
) -> Result<(Kernel, Config, Slots, Desired)> {
    let mut kernel = load(pins, max_sources)?;
    let config = Config::parse(Path::new("t.toml"), text).context("test config")?;
    let slots = Slots::default().assign(&config);
    let want = adjust(desired(&config, &slots, |_| 1.0), &slots);
    kernel
        .apply(&diff(None, &want))
        .context("apply the test config")?;
    Ok((kernel, config, slots, want))
}

/// A counter index as `row/reason[/monitored]`.
pub fn describe(index: usize) -> String {
    let row = index as u32 / REASON_SLOTS;
    let mut r = index as u32 % REASON_SLOTS;
    let monitored = r >= MONITOR_OFFSET;
    if monitored {
        r -= MONITOR_OFFSET;
    }
    let row = if row == UNCLASSIFIED {
        "unclassified".to_owned()
    } else {
        format!("class {row}")
    };
    let reason = Reason::from_u32(r).map_or_else(|| format!("reason {r}"), |r| r.name().to_owned());
    format!(
        "{row}/{reason}{}",
        if monitored { "/monitored" } else { "" }
    )
}

/// An XDP action by name.
pub fn action_name(action: u32) -> String {
    match action {
        XDP_ABORTED => "XDP_ABORTED".into(),
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        other => format!("action {other}"),
    }
}

/// Counter slots that moved in a run, with by how much.
pub type Moved = Vec<(usize, Counter)>;

/// Test runs on small maps: enough sources for every table, small enough to fill on purpose.
pub const SOURCES: u32 = 4096;

/// One loaded program on a test's own pinned maps, configured from config text as the daemon
/// would on start (or left unconfigured). Fields drop in order: the program and map handles
/// close before the guard removes the pins.
pub struct Lab {
    pub kernel: Kernel,
    pub slots: Slots,
    /// The config and what was written from it; `None` when unconfigured.
    pub config: Option<Config>,
    pub applied: Option<Desired>,
    _pins: PinDir,
}

impl Lab {
    /// The program loaded and left unconfigured (nothing applied).
    pub fn unconfigured(test: &str) -> Result<Lab> {
        let pins = PinDir::new(test);
        let kernel = load(&pins, SOURCES)?;
        Ok(Lab {
            kernel,
            slots: Slots::default(),
            config: None,
            applied: None,
            _pins: pins,
        })
    }

    /// The program configured from config text, on a bucket map of [`SOURCES`] entries.
    pub fn configured(test: &str, text: &str) -> Result<Lab> {
        Lab::build(test, SOURCES, text, |d, _| d)
    }

    /// Configured on a bucket map of `max_sources` entries; `adjust` may change the desired
    /// state before it is written (port rules, chaos).
    pub fn build(
        test: &str,
        max_sources: u32,
        text: &str,
        adjust: impl FnOnce(Desired, &Slots) -> Desired,
    ) -> Result<Lab> {
        let pins = PinDir::new(test);
        let (kernel, config, slots, applied) = load_configured(&pins, max_sources, text, adjust)?;
        Ok(Lab {
            kernel,
            slots,
            config: Some(config),
            applied: Some(applied),
            _pins: pins,
        })
    }

    /// Counter row (slot) of a class.
    pub fn class(&self, name: &str) -> u32 {
        self.slots
            .slot_of(name)
            .unwrap_or_else(|| panic!("the test config has no class {name}"))
    }

    /// The loaded config (panics when unconfigured: a test bug).
    pub fn config(&self) -> &Config {
        self.config.as_ref().expect("the lab is configured")
    }

    /// Run one frame: the XDP action, the frame the program left, and the counter slots
    /// that moved, with by how much.
    pub fn run_out(&self, frame: &[u8]) -> Result<(u32, Vec<u8>, Moved)> {
        let before = self.kernel.counters()?;
        let (action, _, out) = self
            .kernel
            .test_run_out(frame, 1)
            .with_context(|| format!("test run of a {}-byte frame", frame.len()))?;
        let after = self.kernel.counters()?;
        Ok((action, out, moved(&before, &after)?))
    }

    /// Run one frame: the XDP action and the counter slots that moved.
    pub fn run(&self, frame: &[u8]) -> Result<(u32, Moved)> {
        let (action, _, moved) = self.run_out(frame)?;
        Ok((action, moved))
    }

    /// Run one frame and fail unless it got `action` and moved exactly `slot` by one packet
    /// and the frame's bytes.
    pub fn expect(&self, name: &str, frame: &[u8], action: u32, slot: Slot) -> Result<()> {
        let (got, moved) = self
            .run(frame)
            .with_context(|| format!("{name}: test run"))?;
        let wrong = verdict_problems(frame.len(), got, &moved, action, slot);
        ensure!(wrong.is_empty(), "{name}: {}", wrong.join("; "));
        Ok(())
    }

    /// Buckets of one class, sorted by address.
    pub fn buckets_of(&self, class: u32) -> Result<Vec<(BucketKey, Bucket)>> {
        let mut b: Vec<_> = self
            .kernel
            .buckets()?
            .into_iter()
            .filter(|(k, _)| k.class == class)
            .collect();
        b.sort_by_key(|(k, _)| k.addr);
        Ok(b)
    }
}

/// The counter slots whose values differ, with the difference.
pub fn moved(before: &[Counter], after: &[Counter]) -> Result<Moved> {
    ensure!(before.len() == after.len(), "counter table changed size");
    Ok(before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (b, a))| b != a)
        .map(|(i, (b, a))| {
            (
                i,
                Counter {
                    packets: a.packets.wrapping_sub(b.packets),
                    bytes: a.bytes.wrapping_sub(b.bytes),
                },
            )
        })
        .collect())
}

/// A counter slot: (row, reason, monitored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub row: u32,
    pub reason: Reason,
    pub monitored: bool,
}

impl Slot {
    /// An enforced (or passing) verdict.
    pub fn new(row: u32, reason: Reason) -> Slot {
        Slot {
            row,
            reason,
            monitored: false,
        }
    }

    /// A would-drop counted in the monitor twin.
    pub fn monitored(row: u32, reason: Reason) -> Slot {
        Slot {
            row,
            reason,
            monitored: true,
        }
    }

    pub fn index(self) -> usize {
        counter_index(self.row, self.reason as u32, self.monitored) as usize
    }
}

/// What is wrong with one run of a `frame_len`-byte frame that must get `want` and move
/// exactly `slot` by one packet and the frame's bytes (empty: nothing).
pub fn verdict_problems(
    frame_len: usize,
    action: u32,
    moved: &[(usize, Counter)],
    want: u32,
    slot: Slot,
) -> Vec<String> {
    let mut wrong = Vec::new();
    if action == XDP_ABORTED {
        wrong.push("returned XDP_ABORTED".to_owned());
    } else if action != want {
        wrong.push(format!(
            "action {}, want {}",
            action_name(action),
            action_name(want)
        ));
    }
    let one = Counter {
        packets: 1,
        bytes: frame_len as u64,
    };
    if moved != [(slot.index(), one)] {
        let got: Vec<String> = moved
            .iter()
            .map(|(i, c)| format!("{} +{}p/+{}B", describe(*i), c.packets, c.bytes))
            .collect();
        wrong.push(format!(
            "counters moved [{}], want only {} +1p/+{}B",
            got.join(", "),
            describe(slot.index()),
            one.bytes
        ));
    }
    wrong
}
