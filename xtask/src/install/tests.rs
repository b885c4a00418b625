//! The install layout, the package's assets and the unit checks, without root.

use super::*;
use crate::package_check::{
    Entry, TempDir, depends_names, parse_listing, perms_string, regular_files,
};

/// A fake release directory: two shell scripts named like the binaries.
fn fake_bins(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for name in ["trafficd", "trafficctl"] {
        fs::write(bin.join(name), format!("#!/bin/sh\necho {name}\n")).unwrap();
        fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o700)).unwrap();
    }
    let generated = bin.join(crate::generated::DIR);
    fs::create_dir_all(&generated).unwrap();
    for f in FILES {
        if let Source::Generated(name) = f.source {
            fs::write(generated.join(name), format!("generated {name}\n")).unwrap();
        }
    }
    bin
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn install_layout_into_a_prefix() {
    let tmp = TempDir::new("t-layout").unwrap();
    let bin = fake_bins(&tmp.0);
    let prefix = tmp.0.join("root");
    let out = install_files(&bin, &util::root(), &prefix).unwrap();
    assert!(
        out.iter().all(|o| matches!(o, FileOutcome::Written(_))),
        "{out:?}"
    );
    for f in FILES {
        let p = prefix.join(f.dest);
        assert_eq!(mode(&p), f.mode, "{}", p.display());
        let src = source_path(f.source, &bin, &util::root());
        assert_eq!(
            fs::read(&p).unwrap(),
            fs::read(&src).unwrap(),
            "{}",
            p.display()
        );
    }
    assert!(prefix.join("usr/bin/trafficd").is_file());
    assert!(prefix.join("etc/traffic/traffic.toml").is_file());
    assert!(
        prefix
            .join("usr/lib/systemd/system/trafficd.service")
            .is_file()
    );
    assert!(prefix.join("usr/share/man/man8/trafficd.8.gz").is_file());
    assert!(
        prefix
            .join("usr/share/bash-completion/completions/trafficctl")
            .is_file()
    );
    assert!(prefix.join("usr/lib/sysusers.d/traffic.conf").is_file());
    assert!(prefix.join("usr/share/doc/traffic/README.md").is_file());
    // Nothing else (no temporary files left behind).
    let mut want: Vec<PathBuf> = FILES.iter().map(|f| PathBuf::from(f.dest)).collect();
    want.sort();
    assert_eq!(regular_files(&prefix).unwrap(), want);
}

#[test]
fn existing_config_is_not_overwritten() {
    let tmp = TempDir::new("t-config").unwrap();
    let bin = fake_bins(&tmp.0);
    let prefix = tmp.0.join("root");
    let config = prefix.join(CONFIG);
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    fs::write(&config, "# the operator's config\n").unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let out = install_files(&bin, &util::root(), &prefix).unwrap();
    assert!(out.contains(&FileOutcome::Kept(config.clone())), "{out:?}");
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "# the operator's config\n"
    );
    assert_eq!(mode(&config), 0o600);
    // A second install (an upgrade) replaces the binaries and still keeps the config.
    fs::write(bin.join("trafficd"), "#!/bin/sh\necho new\n").unwrap();
    install_files(&bin, &util::root(), &prefix).unwrap();
    assert_eq!(
        fs::read_to_string(prefix.join("usr/bin/trafficd")).unwrap(),
        "#!/bin/sh\necho new\n"
    );
    assert_eq!(mode(&prefix.join("usr/bin/trafficd")), 0o755);
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "# the operator's config\n"
    );
}

#[test]
fn uninstall_removes_everything_but_the_config() {
    let tmp = TempDir::new("t-uninstall").unwrap();
    let bin = fake_bins(&tmp.0);
    let prefix = tmp.0.join("root");
    install_files(&bin, &util::root(), &prefix).unwrap();
    let link = prefix.join(ENABLE_LINK);
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(format!("/{UNIT}"), &link).unwrap();
    let out = uninstall_files(&prefix).unwrap();
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, FileOutcome::Removed(_)))
            .count(),
        FILES.len() - 1
    );
    assert!(
        out.contains(&FileOutcome::Kept(prefix.join(CONFIG))),
        "{out:?}"
    );
    assert_eq!(regular_files(&prefix).unwrap(), [PathBuf::from(CONFIG)]);
    assert!(!prefix.join(DOC_DIR).exists(), "doc directory left");
    // Idempotent: a second uninstall finds nothing and still keeps the config.
    let out = uninstall_files(&prefix).unwrap();
    assert!(
        out.iter()
            .all(|o| matches!(o, FileOutcome::Absent(_) | FileOutcome::Kept(_))),
        "{out:?}"
    );
    assert!(prefix.join(CONFIG).is_file());
}

#[test]
fn installed_unit_runs_the_installed_binary() {
    let tmp = TempDir::new("t-unit").unwrap();
    let bin = fake_bins(&tmp.0);
    let prefix = tmp.0.join("root");
    install_files(&bin, &util::root(), &prefix).unwrap();
    let found = verify_unit(&prefix).unwrap();
    assert_eq!(
        found,
        [
            (
                "/usr/bin/trafficd".to_owned(),
                prefix.join("usr/bin/trafficd")
            ),
            (
                "/usr/bin/trafficctl".to_owned(),
                prefix.join("usr/bin/trafficctl")
            )
        ]
    );
    let unit = fs::read_to_string(prefix.join(UNIT)).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/trafficd --config /etc/traffic/traffic.toml"));

    // The check fails when the binary is not where the unit says…
    fs::remove_file(prefix.join("usr/bin/trafficd")).unwrap();
    let e = verify_unit(&prefix).unwrap_err().to_string();
    assert!(e.contains("not an installed executable"), "{e}");
    install_files(&bin, &util::root(), &prefix).unwrap();
    // …when the unit runs a trafficd elsewhere…
    let moved = unit.replace("/usr/bin/trafficd", "/usr/local/bin/trafficd");
    fs::write(prefix.join(UNIT), &moved).unwrap();
    assert!(verify_unit(&prefix).is_err());
    // …when it reads a config that is not installed…
    let other = unit.replace("/etc/traffic/traffic.toml", "/etc/traffic/other.toml");
    fs::write(prefix.join(UNIT), &other).unwrap();
    let e = verify_unit(&prefix).unwrap_err().to_string();
    assert!(e.contains("other.toml"), "{e}");
    // …and when ExecStart runs something else.
    let none = unit.replace("ExecStart=/usr/bin/trafficd", "ExecStart=/bin/true");
    fs::write(prefix.join(UNIT), &none).unwrap();
    assert!(verify_unit(&prefix).is_err());
}

/// The `.deb` and `cargo xtask install` install the same files, from the same sources,
/// with the same modes.
#[test]
fn deb_assets_equal_the_install_layout() {
    let manifest = util::root().join("traffic-daemon/Cargo.toml");
    let t: toml::Table = fs::read_to_string(&manifest).unwrap().parse().unwrap();
    let deb = &t["package"]["metadata"]["deb"];
    assert_eq!(deb["name"].as_str(), Some(DEB_PACKAGE));
    let mut assets: Vec<(String, String, u32)> = deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().expect("assets as [source, dest, mode]");
            let s = |i: usize| a[i].as_str().unwrap().to_owned();
            (s(0), s(1), u32::from_str_radix(&s(2), 8).unwrap())
        })
        .collect();
    // The unit is not an asset: systemd-units installs it (dh_installsystemd's layout).
    let mut files: Vec<(String, String, u32)> = FILES
        .iter()
        .filter(|f| f.dest != UNIT)
        .map(|f| {
            let src = match f.source {
                Source::Bin(n) => format!("target/release/{n}"),
                Source::Repo(r) => format!("../{r}"),
                Source::Generated(n) => {
                    format!("target/release/{}/{n}", crate::generated::DIR)
                }
            };
            (src, f.dest.to_owned(), f.mode)
        })
        .chain(
            DEB_ONLY
                .iter()
                .map(|(src, dest)| (format!("../{src}"), (*dest).to_owned(), 0o644)),
        )
        .collect();
    assets.sort();
    files.sort();
    assert_eq!(assets, files);
    let units = &deb["systemd-units"];
    assert_eq!(units["unit-scripts"].as_str(), Some("../config"));
    assert_eq!(units["unit-name"].as_str(), Some("trafficd"));
    assert!(
        FILES
            .iter()
            .any(|f| f.dest == UNIT && f.source == Source::Repo("config/trafficd.service")),
        "the unit of FILES is the one systemd-units packages"
    );
    // Enabled by the operator, never by the package; restarted after an upgrade.
    assert_eq!(units["enable"].as_bool(), Some(false));
    assert_eq!(units["start"].as_bool(), Some(false));
    assert_eq!(units["restart-after-upgrade"].as_bool(), Some(true));
    // The maintainer scripts cargo-deb packages are there, executable and valid sh.
    let scripts = util::root()
        .join("traffic-daemon")
        .join(deb["maintainer-scripts"].as_str().unwrap());
    for s in ["postinst", "prerm", "postrm"] {
        let p = scripts.join(s);
        assert_eq!(mode(&p) & 0o111, 0o111, "{} not executable", p.display());
        let text = fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("\n#DEBHELPER#\n"),
            "{} has no #DEBHELPER#",
            p.display()
        );
        let st = Command::new("sh").arg("-n").arg(&p).status().unwrap();
        assert!(st.success(), "{} is not valid sh", p.display());
    }
}

#[test]
fn pin_dir_comes_from_the_config() {
    let tmp = TempDir::new("t-pins").unwrap();
    let config = tmp.0.join("traffic.toml");
    assert_eq!(pin_dir(&config), Path::new(DEFAULT_PIN_DIR));
    fs::write(&config, "[daemon]\ninterfaces = [\"eth0\"]\n").unwrap();
    assert_eq!(pin_dir(&config), Path::new(DEFAULT_PIN_DIR));
    fs::write(&config, "[daemon]\npin_dir = \"/sys/fs/bpf/edge\"\n").unwrap();
    assert_eq!(pin_dir(&config), Path::new("/sys/fs/bpf/edge"));
    assert_eq!(
        pin_dir(&util::root().join("config/traffic.toml")),
        Path::new(DEFAULT_PIN_DIR)
    );
    assert!(is_removable_pin_dir(Path::new("/sys/fs/bpf/traffic")));
    assert!(!is_removable_pin_dir(Path::new("/sys/fs/bpf")));
    assert!(!is_removable_pin_dir(Path::new("/sys/fs/bpf/")));
    assert!(!is_removable_pin_dir(Path::new("/sys/fs/bpf/../../../etc")));
    assert!(!is_removable_pin_dir(Path::new("/etc/traffic")));
}

#[test]
fn dpkg_deb_listing_and_depends() {
    let l = "drwxr-xr-x root/root         0 2026-01-01 00:00 ./\n\
             drwxr-xr-x root/root         0 2026-01-01 00:00 ./usr/bin/\n\
             -rwxr-xr-x root/root   1234567 2026-01-01 00:00 ./usr/bin/trafficd\n\
             -rw-r----- root/root      5000 2026-01-01 00:00 ./etc/traffic/traffic.toml\n";
    let e = parse_listing(l);
    assert_eq!(e.len(), 3);
    assert_eq!(
        e[1],
        Entry {
            perms: "-rwxr-xr-x".into(),
            owner: "root/root".into(),
            path: "usr/bin/trafficd".into()
        }
    );
    assert_eq!(e[2].perms, perms_string(0o640));
    assert_eq!(perms_string(0o755), "-rwxr-xr-x");
    assert_eq!(perms_string(0o644), "-rw-r--r--");
    assert_eq!(
        depends_names("libc6 (>= 2.34), systemd (>= 252) | systemd-sysusers"),
        ["libc6", "systemd", "systemd-sysusers"]
    );
}
