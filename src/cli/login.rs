//! `rimg login` / `rimg logout`: docker's commands, writing docker's `config.json` (or its credential
//! helper), so credentials are shared with docker. Credentials are verified against the registry before
//! they are stored. Exit codes as docker's: 0 on success, 1 on failure.

use super::Globals;
use crate::registry::credentials::{default_dir, is_docker_hub, normalize_server, server_key, DockerConfig};
use crate::registry::{Client, Credentials, RegistryConfig};
use anyhow::Context as _;
use std::io::{BufRead, IsTerminal, Write};

/// Arguments of `rimg login`.
#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Username.
    #[arg(short, long)]
    username: Option<String>,
    /// Password (visible in the process list: prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Registry to log in to (default: Docker Hub).
    server: Option<String>,
}

/// Arguments of `rimg logout`.
#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// Registry to log out from (default: Docker Hub).
    server: Option<String>,
}

/// The registry a `login`/`logout` argument names, as references spell it (`docker.io`, `host:port`).
fn registry_of(server: Option<&str>) -> String {
    let host = normalize_server(server.unwrap_or("docker.io"));
    if is_docker_hub(&host) {
        crate::reference::DEFAULT_REGISTRY.to_string()
    } else {
        host
    }
}

fn docker_config() -> anyhow::Result<DockerConfig> {
    let dir = default_dir()?;
    Ok(DockerConfig::load(&dir)?)
}

/// `rimg login [-u USER] [-p PASS | --password-stdin] [SERVER]`.
pub fn login(a: LoginArgs, g: &Globals) -> anyhow::Result<i32> {
    let registry = registry_of(a.server.as_deref());
    let key = server_key(&registry);
    if a.password_stdin && a.username.is_none() {
        crate::errln!("Error: Must provide --username with --password-stdin");
        return Ok(1);
    }
    if a.password.is_some() {
        crate::errln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let mut cfg = docker_config()?;
    let stored = if a.username.is_none() && a.password.is_none() { cfg.lookup(&registry)? } else { None };

    let creds = match stored {
        Some(c) => {
            crate::errln!("Authenticating with existing credentials...");
            c
        }
        None => {
            let username = match a.username {
                Some(u) => u,
                None => match prompt("Username: ", false) {
                    Ok(u) => u,
                    Err(e) => {
                        crate::errln!("Error: {e}");
                        return Ok(1);
                    }
                },
            };
            let password = if a.password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).context("reading password from stdin")?;
                line.trim_end_matches(['\n', '\r']).to_string()
            } else {
                match a.password.map(Ok).unwrap_or_else(|| prompt("Password: ", true)) {
                    Ok(p) => p,
                    Err(e) => {
                        crate::errln!("Error: {e}");
                        return Ok(1);
                    }
                }
            };
            if username.is_empty() || password.is_empty() {
                crate::errln!("Error: Username and password are required");
                return Ok(1);
            }
            Credentials { username, password }
        }
    };

    let rcfg = RegistryConfig::load(g.config.as_deref(), &g.registry_mirrors, &g.insecure_registries)?;
    let client = Client::new(rcfg)?;
    if let Err(e) = client.check_login(&registry, &creds) {
        crate::errln!("Error: {e}");
        return Ok(1);
    }
    cfg.store(&registry, &creds).with_context(|| format!("storing credentials for {key}"))?;
    if !cfg.uses_helper(&registry) {
        crate::errln!(
            "WARNING! Your password is stored unencrypted in {} (set \"credsStore\" to use a credential helper).",
            cfg.path().display()
        );
    }
    crate::outln!("Login Succeeded");
    Ok(0)
}

/// `rimg logout [SERVER]`.
pub fn logout(a: LogoutArgs, _g: &Globals) -> anyhow::Result<i32> {
    let registry = registry_of(a.server.as_deref());
    let key = server_key(&registry);
    let mut cfg = docker_config()?;
    if cfg.erase(&registry)? {
        crate::outln!("Removing login credentials for {key}");
    } else {
        crate::outln!("Not logged in to {key}");
    }
    Ok(0)
}

/// Ask on the terminal; the password without echo. Refuses when stdin is not a terminal, as docker does.
fn prompt(label: &str, secret: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!("cannot perform an interactive login from a non TTY device");
    }
    crate::err!("{label}");
    std::io::stderr().flush().ok();
    let saved = if secret { disable_echo(&stdin) } else { None };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &t);
        crate::errln!();
    }
    read.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Turn terminal echo off; returns the settings to restore.
fn disable_echo(stdin: &std::io::Stdin) -> Option<nix::sys::termios::Termios> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let saved = tcgetattr(stdin).ok()?;
    let mut t = saved.clone();
    t.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(stdin, SetArg::TCSANOW, &t).ok()?;
    Some(saved)
}
