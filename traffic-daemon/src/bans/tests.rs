use super::*;

fn req(target: &str, duration: &str, reason: Option<&str>) -> BanRequest {
    BanRequest {
        target: target.into(),
        duration: duration.into(),
        reason: reason.map(str::to_owned),
        force: false,
        fleet: false,
    }
}

#[test]
fn prefixes_of_both_families_are_parsed_and_keyed_like_rules() {
    let p = Prefix::parse("198.18.0.7").unwrap();
    assert_eq!(p.to_string(), "198.18.0.7/32");
    assert_eq!(p.key().1, 128);
    assert_eq!(Prefix::from_key(p.key()), Some(p));
    let p = Prefix::parse("2001:db8:1::/64").unwrap();
    assert_eq!(p.key().1, 64);
    assert_eq!(Prefix::from_key(p.key()), Some(p));
    assert_eq!(Prefix::parse("10.0.0.0/8").unwrap().len, 8);
}

#[test]
fn bad_prefixes_are_refused_with_the_reason() {
    for (text, why) in [
        ("0.0.0.0/0", "at most a /8"),
        ("10.0.0.0/7", "at most a /8"),
        ("::/0", "at most a /16"),
        ("2001::/15", "at most a /16"),
        ("198.18.0.7/24", "did you mean 198.18.0.0/24"),
        ("198.18.0.0/33", "0–32"),
        ("2001:db8::/129", "0–128"),
        ("::ffff:198.18.0.7", "IPv4-mapped"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("example.com", "not an IPv4 or IPv6"),
        ("198.18.0.1/", "0–32"),
        ("", "not an IPv4"),
    ] {
        let e = Prefix::parse(text).unwrap_err().to_string();
        assert!(e.contains(why), "{text}: {e}");
    }
}

#[test]
fn durations_are_bounded() {
    assert_eq!(validate_duration("1h").unwrap(), Duration::from_secs(3600));
    assert_eq!(validate_duration("1s").unwrap(), Duration::from_secs(1));
    assert_eq!(validate_duration("365d").unwrap(), MAX_DURATION);
    for bad in ["0s", "500ms", "366d", "3650d", "1", "forever", "-1h", ""] {
        let e = validate_duration(bad).unwrap_err().to_string();
        assert!(e.contains("invalid ban duration"), "{bad}: {e}");
    }
}

#[test]
fn reasons_are_bounded_in_length_and_charset() {
    assert_eq!(
        validate_reason("  ssh brute force (sshd) #42 ").unwrap(),
        "ssh brute force (sshd) #42"
    );
    assert!(validate_reason("").is_err());
    assert!(validate_reason("   ").is_err());
    let long = "x".repeat(10_240);
    let e = validate_reason(&long).unwrap_err().to_string();
    assert!(e.contains("at most 128"), "{e}");
    for bad in [
        "a\"b",
        "a\\b",
        "line\nbreak",
        "tab\there",
        "caf\u{e9}",
        "{x}",
    ] {
        assert!(validate_reason(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_request_becomes_a_ban_ending_after_its_duration() {
    let b = req("2001:db8::/64", "10m", None)
        .ban(1_000, Origin::Operator)
        .unwrap();
    assert_eq!(b.until_unix_ms, 1_000 + 600_000);
    assert_eq!(b.reason, DEFAULT_REASON);
    assert!(!b.expired(600_999));
    assert!(b.expired(601_000));
    // The kernel entry ends as far ahead on the kernel clock.
    let e = b.entry(1_000, 5_000_000_000);
    assert_eq!(e.until_ns, 5_000_000_000 + 600_000 * 1_000_000);
    assert_eq!(e.flags, 0);
    // Already over: ends at once in the kernel (never 0, the cache's "no ban").
    assert_eq!(b.entry(700_000, 5).until_ns, 5);
    assert_eq!(b.entry(700_000, 0).until_ns, 1);
    let f = BanRequest {
        force: true,
        ..req("198.18.0.1", "1h", Some("x"))
    };
    assert_eq!(
        f.ban(0, Origin::Operator).unwrap().entry(0, 0).flags,
        BAN_FORCE
    );
}

#[test]
fn the_book_replaces_refuses_when_full_and_tracks_its_digest() {
    let mut book = BanBook::default();
    assert_eq!(book.digest(), 0);
    let a = req("198.18.0.1", "1h", None)
        .ban(0, Origin::Operator)
        .unwrap();
    let b = req("198.18.0.2", "2h", None)
        .ban(0, Origin::Operator)
        .unwrap();
    assert!(book.insert(a.clone()).unwrap().is_none());
    let d1 = book.digest();
    assert_ne!(d1, 0);
    book.insert(b.clone()).unwrap();
    assert_ne!(book.digest(), d1);
    book.remove(&b.prefix).unwrap();
    assert_eq!(book.digest(), d1, "digest depends on the contents only");
    let longer = Ban {
        until_unix_ms: a.until_unix_ms + 1,
        ..a.clone()
    };
    assert_eq!(book.insert(longer).unwrap(), Some(a.clone()));
    assert_ne!(book.digest(), d1);
    assert_eq!(book.len(), 1);
    assert_eq!(book.next_expiry(), Some(a.until_unix_ms + 1));
    assert!(book.expired(a.until_unix_ms).is_empty());
    assert_eq!(book.expired(a.until_unix_ms + 1), vec![a.prefix]);
    book.insert(b.clone()).unwrap();
    book.remove(&a.prefix).unwrap();
    assert_eq!(book.next_expiry(), Some(b.until_unix_ms), "recomputed");
    book.remove(&b.prefix).unwrap();
    assert_eq!(book.next_expiry(), None);
    assert_eq!(book.digest(), 0);

    let mut full = BanBook::default();
    for i in 0..MAX_BANS as u32 {
        let addr = std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i));
        full.insert(Ban {
            prefix: Prefix {
                addr: addr.into(),
                len: 128,
            },
            ..a.clone()
        })
        .unwrap();
    }
    assert_eq!(
        full.insert(b.clone()).unwrap_err(),
        BanError::Full { capacity: MAX_BANS }
    );
    assert_eq!(full.len(), MAX_BANS, "existing bans stay");
}

#[test]
fn reason_labels_are_bounded() {
    let mut s = BanState::default();
    for i in 0..100 {
        s.count(&format!("r{i}"));
    }
    s.count("r0");
    assert_eq!(s.made.len(), MAX_REASON_LABELS);
    assert_eq!(s.made["r0"], 2);
    assert_eq!(s.made["other"], 100 - (MAX_REASON_LABELS as u64 - 1));
}

#[test]
fn the_state_file_round_trips_and_a_corrupt_one_is_set_aside() {
    let dir = std::env::temp_dir().join(format!("trf-bans-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("sub").join("bans.json");
    assert!(!store::load(&path, 0).found, "no file: nothing found");
    let a = req("198.18.0.1", "1h", Some("ssh brute force"))
        .ban(1_000, Origin::Operator)
        .unwrap();
    let b = Ban {
        force: true,
        origin: Origin::Auto,
        ..req("2001:db8::/64", "1m", None)
            .ban(1_000, Origin::Operator)
            .unwrap()
    };
    store::save(&path, [a.clone(), b.clone()].iter()).unwrap();
    let l = store::load(&path, 2_000);
    assert!(
        l.found && l.error.is_none() && l.skipped.is_empty(),
        "{l:?}"
    );
    assert_eq!(l.bans, vec![a.clone(), b.clone()]);
    // Expired entries are dropped on load.
    assert_eq!(store::load(&path, 100_000).bans, vec![a.clone()]);

    // An entry that would be refused from an operator is skipped, the rest kept.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("ssh brute force", "bad \\\" reason");
    std::fs::write(&path, text).unwrap();
    let l = store::load(&path, 2_000);
    assert_eq!(l.bans, vec![b.clone()]);
    assert_eq!(l.skipped.len(), 1, "{l:?}");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("198.18.0.1/32", "0.0.0.0/0");
    std::fs::write(&path, text).unwrap();
    let l = store::load(&path, 2_000);
    assert!(l.error.is_some(), "a refused prefix fails the parse: {l:?}");

    std::fs::write(&path, "{ not json").unwrap();
    let l = store::load(&path, 0);
    assert!(!l.found);
    assert!(l.error.as_deref().unwrap().contains("moved to"), "{l:?}");
    assert!(!path.exists());
    assert!(dir.join("sub/bans.json.corrupt").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
