//! Man pages and shell completions, rendered from the clap definitions the binaries parse,
//! so they never drift from the flags. The package build (`cargo xtask deb`) writes them
//! with `trafficctl manpages DIR` and `trafficctl completions SHELL`.

use std::{io::Write, path::Path};

/// The shells `trafficctl completions` knows.
pub use clap_complete::Shell;

/// Write one section-8 page per command (`trafficd.8`, `trafficctl.8`: roff) into `dir`.
/// The commands come from the callers (the CLI passes both binaries' definitions), so this
/// module depends on clap only.
pub fn write_man_pages(
    dir: &Path,
    commands: impl IntoIterator<Item = clap::Command>,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for cmd in commands {
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

/// The completion script of `cmd` (trafficctl's) for `shell`. Rendered into memory first:
/// the generator panics on a write error (a closed pipe), a plain write does not.
pub fn write_completions(
    shell: Shell,
    mut cmd: clap::Command,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "trafficctl", &mut buf);
    out.write_all(&buf)
}
