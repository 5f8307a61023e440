//! CLI: run:Args (being written).
use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn run(_a: Args, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
