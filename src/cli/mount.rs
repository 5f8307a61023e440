//! CLI: mount:MountArgs (being written).
use super::Globals;

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn mount(_a: MountArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn umount(_a: UmountArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
