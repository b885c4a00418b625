//! `cargo xtask setup` (to be written).
use anyhow::Result;

use crate::toolchains::Toolchains;

pub fn run(_tc: &Toolchains) -> Result<()> {
    Ok(())
}
