//! Shared harness of the BPF_PROG_TEST_RUN tests: loading the program on a test's own
//! pinned maps, configuring it as the daemon would, and naming actions and counters.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context as _, Result};
use traffic_common::{MONITOR_OFFSET, REASON_SLOTS, Reason, UNCLASSIFIED};
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
