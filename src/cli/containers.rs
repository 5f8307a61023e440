//! CLI: ps:PsArgs (being written).
use super::Globals;

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn ps(_a: PsArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn stop(_a: StopArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct KillArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn kill(_a: KillArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn rm(_a: RmArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn logs(_a: LogsArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn exec(_a: ExecArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn wait(_a: WaitArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn commit(_a: CommitArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Subcommand, Debug)]
pub enum ContainerCommand {
    /// Remove all stopped containers.
    Prune,
}

pub fn container(_a: ContainerCommand, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
