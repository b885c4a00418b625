//! Man pages and shell completions, rendered from the clap definitions the binaries parse,
//! so they never drift from the flags. The package build (`cargo xtask deb`) writes them
//! with `trafficctl manpages DIR` and `trafficctl completions SHELL`.

use std::{io::Write, path::Path};

use clap::CommandFactory as _;

/// The shells `trafficctl completions` knows.
pub use clap_complete::Shell;

/// Write `trafficd.8` and `trafficctl.8` (roff) into `dir`.
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for cmd in [
        crate::trafficd_cli::Args::command(),
        crate::cli::Cli::command(),
    ] {
        let path = dir.join(format!("{}.8", cmd.get_name()));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .section("8")
            .manual("System Administration")
            .source(concat!("traffic ", env!("CARGO_PKG_VERSION")))
            .date("2026-12-04")
            .render(&mut buf)?;
        std::fs::write(&path, buf)?;
        written.push(path);
    }
    Ok(written)
}

/// The completion script of trafficctl for `shell`. Rendered into memory first: the
/// generator panics on a write error (a closed pipe), a plain write does not.
pub fn write_completions(shell: Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = crate::cli::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "trafficctl", &mut buf);
    out.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_name_their_commands() {
        let dir = std::env::temp_dir().join(format!("trf-man-{}", std::process::id()));
        let files = write_man_pages(&dir).unwrap();
        assert_eq!(files.len(), 2);
        let d = std::fs::read_to_string(dir.join("trafficd.8")).unwrap();
        assert!(d.contains(".TH trafficd 8"), "{d}");
        assert!(d.contains("\\-\\-log\\-format"), "{d}");
        let c = std::fs::read_to_string(dir.join("trafficctl.8")).unwrap();
        assert!(c.contains(".TH trafficctl 8"), "{c}");
        assert!(c.contains("check\\-config"), "{c}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_for_every_shell() {
        for (shell, marker) in [
            (Shell::Bash, "complete -F"),
            (Shell::Zsh, "#compdef trafficctl"),
            (Shell::Fish, "complete -c trafficctl"),
        ] {
            let mut out = Vec::new();
            write_completions(shell, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(marker), "{shell}: {text}");
            assert!(text.contains("check-config"), "{shell}");
        }
    }
}
