//! Cases: see the table in main.rs.
//!
//! Issue 12 item 7: applying rules is transactional enough. On the main of 2026-12-04 a
//! reload swapping 10k rules for 10k others inserted all new rules before removing the old
//! ones and overflowed the 16,384-entry map; and a failed apply left the kernel
//! half-written while the daemon believed the old state (orphans never removed).

use std::{collections::BTreeSet, time::Duration};

use aya::maps::{LpmTrie, Map, MapData, lpm_trie::Key};
use traffic_common::{Addr, Rule, map_names};

use super::links::Rig;
use crate::support::trafficctl;

const RULES: u16 = 10_000;

/// `RULES` /64s under `2001:db8:<base>::/48`, and (when `deny`) 198.18.1.0/25 denied.
fn rules_toml(base: u16, deny: bool) -> String {
    let mut t = String::new();
    for i in 0..RULES {
        t += &format!("[[rules]]\ncidr = \"2001:db8:{base:x}:{i:x}::/64\"\nclass = \"premium\"\n");
    }
    if deny {
        t += "[[rules]]\ncidr = \"198.18.1.0/25\"\naction = \"deny\"\n";
    }
    t
}

/// The keys `rules_toml` gives, plus the rig's own 198.18.1.0/24 rule.
fn keys(base: u16, deny: bool) -> BTreeSet<(Addr, u32)> {
    let v4 = |c: u8| {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&[198, 18, 1, c]);
        a
    };
    let mut k: BTreeSet<(Addr, u32)> = (0..RULES)
        .map(|i| {
            let mut a = [0u8; 16];
            a[..8].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0]);
            a[4..6].copy_from_slice(&base.to_be_bytes());
            a[6..8].copy_from_slice(&i.to_be_bytes());
            (a, 64)
        })
        .collect();
    k.insert((v4(0), 120));
    if deny {
        k.insert((v4(0), 121));
    }
    k
}

fn rules_map(rig: &Rig) -> LpmTrie<MapData, Addr, Rule> {
    let md = MapData::from_pin(rig.pins.0.join(map_names::RULES)).unwrap();
    LpmTrie::try_from(Map::LpmTrie(md)).unwrap()
}

fn kernel_keys(rig: &Rig) -> BTreeSet<(Addr, u32)> {
    rules_map(rig)
        .iter()
        .map(|kv| {
            let (k, _) = kv.unwrap();
            (k.data(), k.prefix_len())
        })
        .collect()
}

fn reload(rig: &Rig) -> (i32, String) {
    let (code, out, err) = trafficctl(&["--socket", &rig.socket(), "reload"]);
    (code, format!("{out}{err}"))
}

pub fn a_10k_rule_swap_leaves_exactly_the_new_rules_and_a_failed_one_the_old() {
    let rig = Rig::new("swap", "127.0.0.1:19193");
    rig.write_config("", &rules_toml(0xaaaa, false));
    let mut d = rig.start();
    assert_eq!(kernel_keys(&rig), keys(0xaaaa, false));
    assert_eq!(rig.burst(1, 40), 20, "premium limit before the swap");

    // 10k → 10k, all different: the map holds at most 16,384, so a swap that inserts
    // everything before removing anything overflows.
    rig.write_config("", &rules_toml(0xbbbb, true));
    let (code, out) = reload(&rig);
    assert_eq!(code, 0, "swap reload: {out}");
    assert_eq!(
        kernel_keys(&rig),
        keys(0xbbbb, true),
        "not exactly the new rules"
    );
    assert_eq!(rig.burst(2, 10), 0, "the new deny rule is not enforced");

    // Entries the daemon does not know of (what a half-written apply used to leave) fill
    // the map, so the next swap fails midway at the kernel.
    let mut map = rules_map(&rig);
    for i in 0..3000u16 {
        let mut a = [0u8; 16];
        a[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0xcc, 0xcc]);
        a[6..8].copy_from_slice(&i.to_be_bytes());
        map.insert(&Key::new(64, a), &Rule::default(), 0).unwrap();
    }
    rig.write_config("", &rules_toml(0xaaaa, false));
    let (code, out) = reload(&rig);
    assert_ne!(
        code, 0,
        "the reload should have failed at the kernel: {out}"
    );
    assert_eq!(
        kernel_keys(&rig),
        keys(0xbbbb, true),
        "after a failed swap the kernel must hold the running rules, no half-written or orphan ones"
    );
    assert_eq!(
        rig.burst(3, 10),
        0,
        "the running deny rule stopped enforcing"
    );
    let st = rig.status();
    assert_eq!(st.reload.failed, 1, "{:?}", st.reload);
    assert!(
        d.log_text().contains("running config was restored"),
        "{}",
        d.log_text()
    );

    // Retried (the orphans are gone now): through, exactly the new rules.
    let (code, out) = reload(&rig);
    assert_eq!(code, 0, "retried reload: {out}");
    assert_eq!(kernel_keys(&rig), keys(0xaaaa, false));
    assert_eq!(rig.burst(4, 40), 20, "premium limit after the swap back");
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
}
