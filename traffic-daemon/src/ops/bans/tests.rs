use std::path::{Path, PathBuf};

use traffic_common::{Bucket, BucketKey, v4_mapped};

use crate::{
    bans::{BanRequest, Origin, Prefix},
    config::Config,
    dataplane::fake::Fake,
    engine::Core,
    ops::OpError,
};

const TEXT: &str = "[daemon]\ninterfaces = [\"veth0\"]\n[classes.default]\n\
    [classes.public]\npackets = { rate = 10 }\n\
    [classes.public.offender]\ndrop_ratio = 0.9\nwindow = \"30s\"\nmin_packets = 100\nban_for = \"10m\"\n\
    [[rules]]\ncidr = \"198.18.0.0/16\"\nclass = \"public\"\n";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trf-opbans-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn core(fake: &Fake, file: &Path, now_ms: u64) -> Core {
    let config = Config::parse(Path::new("t.toml"), TEXT).unwrap();
    let mut c = Core::new(config, Box::new(fake.clone())).unwrap();
    c.bans.fixed_now_ms = Some(now_ms);
    c.open_bans(file).unwrap();
    c
}

fn req(target: &str, duration: &str) -> BanRequest {
    BanRequest {
        target: target.into(),
        duration: duration.into(),
        reason: Some("ssh brute force".into()),
        force: false,
        fleet: false,
    }
}

#[test]
fn a_ban_reaches_the_kernel_bumps_the_generation_and_is_removed() {
    let dir = scratch("add");
    let fake = Fake::default();
    let mut c = core(&fake, &dir.join("bans.json"), 1_000_000);
    let gen0 = c.applied.global.rules_gen;
    let (ban, replaced) = c.ban(&req("198.18.0.7", "1h")).unwrap();
    assert!(!replaced);
    let key = ban.prefix.key();
    let entry = fake.bans.lock().unwrap()[&key];
    assert_eq!(entry.until_ns, fake.now_ns + 3_600_000_000_000);
    let gen1 = c.applied.global.rules_gen;
    assert_ne!(gen1, gen0, "the classification cache is refilled");
    assert_eq!(c.list_bans(), vec![ban.clone()]);
    // The same ban again replaces it.
    assert!(c.ban(&req("198.18.0.7", "2h")).unwrap().1);
    assert_eq!(c.list_bans().len(), 1);

    let removed = c.remove_ban(&ban.prefix).unwrap();
    assert_eq!(removed.prefix, ban.prefix);
    assert!(fake.bans.lock().unwrap().is_empty());
    assert_eq!(
        c.applied.global.rules_gen, gen0,
        "no bans: the plain generation"
    );
    assert!(matches!(
        c.remove_ban(&ban.prefix),
        Err(OpError::NotFound(_))
    ));
    assert!(matches!(
        c.ban(&req("0.0.0.0/0", "1h")),
        Err(OpError::Invalid(_))
    ));
    assert!(matches!(
        c.ban(&req("198.18.0.7", "3650d")),
        Err(OpError::Invalid(_))
    ));
    drop(c);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bans_expire_lazily_and_survive_a_restart_and_a_reboot() {
    let dir = scratch("persist");
    let file = dir.join("bans.json");
    let fake = Fake::default();
    let mut c = core(&fake, &file, 1_000_000);
    c.ban(&req("198.18.0.7", "1h")).unwrap();
    c.ban(&req("2001:db8:1::/64", "1m")).unwrap();
    assert_eq!(c.expire_bans().unwrap(), 0);
    c.bans.fixed_now_ms = Some(1_000_000 + 60_000);
    assert_eq!(c.expire_bans().unwrap(), 1);
    assert_eq!(fake.bans.lock().unwrap().len(), 1);
    drop(c);

    // A restart: the same pinned map, the same file.
    let c = core(&fake, &file, 1_000_000 + 120_000);
    assert_eq!(c.list_bans().len(), 1);
    assert_eq!(c.list_bans()[0].reason, "ssh brute force");
    drop(c);

    // A reboot: an empty kernel map, the file restores the ban with its end on the new
    // kernel clock.
    let fresh = Fake {
        now_ns: 7_000_000_000,
        ..Fake::default()
    };
    let c = core(&fresh, &file, 1_000_000 + 1_800_000);
    let bans = fresh.bans.lock().unwrap().clone();
    assert_eq!(bans.len(), 1);
    let left_ns = (3_600_000 - 1_800_000) * 1_000_000;
    assert_eq!(
        bans.values().next().unwrap().until_ns,
        7_000_000_000 + left_ns
    );
    drop(c);

    // No file (deleted), but pinned bans: kept as recovered.
    std::fs::remove_file(&file).unwrap();
    let c = core(&fresh, &file, 1_000_000 + 1_800_000);
    assert_eq!(c.list_bans().len(), 1);
    assert_eq!(c.list_bans()[0].origin, Origin::Recovered);
    c.bans.writer.as_ref().unwrap().flush();
    assert!(file.exists(), "the recovered book is written back");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_persistent_offender_is_banned_and_a_good_source_is_not() {
    let dir = scratch("auto");
    let fake = Fake::default();
    let mut c = core(&fake, &dir.join("bans.json"), 1_000_000);
    let text = crate::serve::metrics::render(&mut c);
    assert!(
        text.contains("traffic_auto_bans_total{class=\"public\"} 0"),
        "{text}"
    );
    let slot = c.slots.slot_of("public").unwrap();
    assert_eq!(c.offender_slots(), 1 << slot);
    let key = |last| BucketKey {
        addr: v4_mapped([198, 18, 0, last]),
        class: slot,
    };
    let b = |packets, dropped| Bucket {
        packets,
        dropped,
        ..Bucket::default()
    };
    c.offender_walk(&[(key(1), b(10, 0)), (key(2), b(10, 0))]);
    c.bans.fixed_now_ms = Some(1_000_000 + 30_000);
    c.offender_walk(&[(key(1), b(5_010, 4_900)), (key(2), b(600, 20))]);
    let bans = c.list_bans();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].prefix, Prefix::parse("198.18.0.1").unwrap());
    assert_eq!(bans[0].origin, Origin::Auto);
    assert_eq!(bans[0].until_unix_ms, 1_030_000 + 600_000);
    assert_eq!(c.bans.auto["public"], 1);
    let text = crate::serve::metrics::render(&mut c);
    assert!(
        text.contains("traffic_auto_bans_total{class=\"public\"} 1"),
        "{text}"
    );
    assert!(text.contains("traffic_bans_active 1"), "{text}");
    assert!(
        text.contains("traffic_bans_total{reason=\"offender in class public\"} 1"),
        "{text}"
    );
    drop(c);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_batch_of_fleet_bans_is_written_once_and_lifted_once() {
    let dir = scratch("batch");
    let fake = Fake::default();
    let file = dir.join("bans.json");
    let mut c = core(&fake, &file, 1_000_000);
    let gen0 = c.applied.global.rules_gen;
    let ban = |i: u32, until| crate::bans::Ban {
        prefix: Prefix::parse(&format!("198.51.100.{i}")).unwrap(),
        until_unix_ms: until,
        reason: "fleet".into(),
        force: false,
        origin: Origin::Fleet,
        created_unix_ms: 1_000_000,
    };
    // One ended ban among them is refused; the others are added.
    let (added, refused) = c.add_bans(vec![ban(1, 2_000_000), ban(2, 2_000_000), ban(3, 10)]);
    assert_eq!((added, refused.len()), (2, 1));
    assert_eq!(fake.bans.lock().unwrap().len(), 2);
    assert_ne!(c.applied.global.rules_gen, gen0);
    c.bans.writer.as_ref().unwrap().flush();
    assert_eq!(crate::bans::store::load(&file, 1_000_000).bans.len(), 2);
    let gone = [ban(1, 0).prefix, ban(9, 0).prefix];
    assert_eq!(c.remove_bans(&gone), 1);
    assert_eq!(c.list_bans().len(), 1);
    assert_eq!(fake.bans.lock().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
