//! CLI: login:LoginArgs (being written).
use super::Globals;

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn login(_a: LoginArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

pub fn logout(_a: LogoutArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
