use super::*;

fn ok(text: &str) -> Parsed {
    parse(text.as_bytes(), 1000).expect("parses")
}

fn texts(p: &Prefixes) -> Vec<String> {
    p.v4.iter()
        .map(|k| key_text(false, *k))
        .chain(p.v6.iter().map(|k| key_text(true, *k)))
        .collect()
}

#[test]
fn plain_list_with_comments_both_families() {
    let p =
        ok("# a list\n198.18.0.1\n198.18.1.0/24 # trailing\n\n2001:db8::/32\n  2001:db8:1::1  \n");
    assert_eq!(
        texts(&p.prefixes),
        [
            "198.18.0.1/32",
            "198.18.1.0/24",
            "2001:db8::/32",
            "2001:db8:1::1/128"
        ]
    );
    assert_eq!(p.invalid, 0);
}

#[test]
fn firehol_netset() {
    let text = "#\n# firehol_level1\n#\n# ipv4 hash:net ipset\n#\n0.0.0.0/8\n1.10.16.0/20\n223.254.0.0/16\n";
    assert_eq!(
        texts(&ok(text).prefixes),
        ["0.0.0.0/8", "1.10.16.0/20", "223.254.0.0/16"]
    );
}

#[test]
fn spamhaus_drop_and_edrop() {
    let text = "; Spamhaus DROP List 2026/12/04 - (c) 2026 The Spamhaus Project\n\
                ; Last-Modified: Fri, 04 Dec 2026 10:00:00 GMT\n\
                1.10.16.0/20 ; SBL256894\n1.19.0.0/16 ; SBL434604\n\
                2001:db8:40::/48 ; SBL1\n";
    let p = ok(text);
    assert_eq!(
        texts(&p.prefixes),
        ["1.10.16.0/20", "1.19.0.0/16", "2001:db8:40::/48"]
    );
}

#[test]
fn host_bits_are_cleared_duplicates_merged_and_mapped_addresses_are_v4() {
    let p = ok("10.1.2.3/8\n10.0.0.0/8\n::ffff:198.18.0.0/112\n");
    assert_eq!(texts(&p.prefixes), ["10.0.0.0/8", "198.18.0.0/16"]);
}

#[test]
fn a_few_invalid_lines_are_skipped_and_reported() {
    let mut text = String::new();
    for i in 0..95 {
        text += &format!("198.18.0.{i}\n");
    }
    text +=
        "300.1.1.1\n198.18.0.0/33\nnot an address\n198.18.0.1/\n2001:db8::/129\n198.18.0.0/24 x\n";
    let p = ok(&text);
    assert_eq!(p.prefixes.len(), 95);
    assert_eq!(p.invalid, 6);
    assert_eq!(p.first_invalid.len(), REPORTED_INVALID);
    assert_eq!(p.first_invalid[0], (96, "300.1.1.1".to_owned()));
}

#[test]
fn mostly_garbage_is_refused() {
    let html = "<html>\n<body>Service unavailable</body>\n</html>\n198.18.0.1\n";
    match parse(html.as_bytes(), 1000) {
        Err(ParseError::MostlyGarbage {
            invalid,
            lines,
            first,
        }) => {
            assert_eq!((invalid, lines), (3, 4));
            assert_eq!(first[0].0, 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_and_binary_feeds_are_refused() {
    assert!(matches!(
        parse(b"# nothing\n; here\n", 10),
        Err(ParseError::Empty { .. })
    ));
    assert!(matches!(parse(b"", 10), Err(ParseError::Empty { .. })));
    assert_eq!(parse(&[0xff, 0xfe, 0], 10), Err(ParseError::NotText));
}

#[test]
fn over_max_prefixes_is_refused_but_duplicates_do_not_count() {
    let text: String = (0..20).map(|i| format!("198.18.0.{i}\n")).collect();
    assert!(matches!(
        parse(text.as_bytes(), 19),
        Err(ParseError::TooMany { count: 20, max: 19 })
    ));
    assert_eq!(parse(text.as_bytes(), 20).map(|p| p.prefixes.len()), Ok(20));
    let dup = "198.18.0.1\n".repeat(30);
    assert_eq!(parse(dup.as_bytes(), 1).map(|p| p.prefixes.len()), Ok(1));
}

#[test]
fn a_long_line_is_invalid_not_a_panic() {
    let text = format!("198.18.0.1\n{}\n", "1".repeat(10_000));
    let r = parse(text.as_bytes(), 10);
    assert!(matches!(r, Err(ParseError::MostlyGarbage { .. })), "{r:?}");
}
