//! (to be written)

use crate::{Ctx, Section};

pub fn run(_ctx: &Ctx) -> anyhow::Result<Section> {
    anyhow::bail!("not written yet")
}
