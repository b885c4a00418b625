use super::*;

#[test]
fn scratch() {
    let cases: Vec<String> = vec![
        "# comment\n[classes.default]\n".into(),
        "[classes.default]\n".into(),
        "".into(),
        "[daemon]\ninterfaces = [\n  \"eth0\",\n  5,\n]\n[classes.default]\n".into(),
        "[daemon]\ninterfaces = [\"eth0\"]\n[classes.default]\npackets = [{ rate = 1 }, { rate = 2, bogus = 3 }]\n".into(),
        "[daemon]\ninterfaces = [\"eth0\"]\n[classes.default]\npackets = { per = \"1s\" }\n".into(),
        "[daemon]\ninterfaces = [\"eth0\"]\nmode = \"block\"\n[classes.default]\n".into(),
        "[daemon]\ninterfaces = [\"eth0\"\n".into(),
        "[daemon]\ninterfaces = [\"eth0\"]\nmode = block\n".into(),
    ];
    for t in &cases {
        if let Err(e) = toml::from_str::<toml::Value>(t).and_then(|_| raw::parse(t).map(|_| ()).map_err(|_| toml::from_str::<toml::Value>("=").unwrap_err())) { let _ = e; }
        match Config::parse(Path::new("t.toml"), t) {
            Ok(_) => println!("OK\n---"),
            Err(e) => println!("{e}\n---"),
        }
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct X { daemon: i64 }
    for t in ["# c\n[a]\n", "[a]\nb=1\n", ""] {
        let e = toml::from_str::<X>(t).err().unwrap();
        println!("{:?} len {}", e.span(), t.len());
    }
    panic!();
}
