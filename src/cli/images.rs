//! CLI: images:ImagesArgs (being written).
use super::Globals;

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn images(_a: ImagesArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn inspect(_a: InspectArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct TagArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn tag(_a: TagArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn rmi(_a: RmiArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct SaveArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn save(_a: SaveArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn load(_a: LoadArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Remove unused images.
    Prune(PruneArgs),
}

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    #[arg(short, long)]
    all: bool,
}

pub fn image(_a: ImageCommand, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
