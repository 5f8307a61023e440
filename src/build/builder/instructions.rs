//! Config-only instructions (ARG, ENV, LABEL, WORKDIR, USER, CMD, ENTRYPOINT, EXPOSE, VOLUME, SHELL,
//! STOPSIGNAL, MAINTAINER, HEALTHCHECK) as a pure function of the instruction, the stage's variables
//! and its config: the history text (which is also the step's cache key, see [`super::cache`]) and the
//! typed change. Nothing here touches the store, so every instruction is unit-tested without root.

use crate::build::config::{parse_duration_ns, ConfigEdit, Healthcheck, ImageConfig};
use crate::build::dockerfile::{self, Command, Instruction};
use crate::build::words::expand;
use serde_json::json;
use std::collections::HashMap;

/// Word expansion with a stage's variables (declared ARGs, overridden by ENV).
pub(super) struct Words<'a> {
    /// Variable values.
    pub vars: &'a HashMap<String, String>,
    /// The Dockerfile's escape character.
    pub escape: char,
}

impl Words<'_> {
    /// `word` with `$VAR`, `${VAR:-…}` … substituted.
    pub fn x(&self, word: &str) -> Result<String, String> {
        expand(word, self.vars, self.escape).map_err(|e| e.to_string())
    }

    fn all(&self, words: &[String]) -> Result<Vec<String>, String> {
        words.iter().map(|w| self.x(w)).collect()
    }

    fn pairs(&self, pairs: &[(String, String)], expand_keys: bool) -> Result<Vec<(String, String)>, String> {
        pairs
            .iter()
            .map(|(k, v)| Ok((if expand_keys { self.x(k)? } else { k.clone() }, self.x(v)?)))
            .collect()
    }
}

/// The history text and the config change of a config-only instruction; `config` is the stage's config
/// before it (for a relative WORKDIR and the shell of a shell-form CMD or ENTRYPOINT).
pub(super) fn config_edit(
    instruction: &Instruction,
    words: &Words<'_>,
    config: &ImageConfig,
) -> Result<(String, ConfigEdit), String> {
    Ok(match instruction {
        Instruction::Arg(list) => {
            let names: Vec<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
            (format!("ARG {}", names.join(" ")), ConfigEdit::Nothing)
        }
        Instruction::Env(pairs) => {
            let pairs = words.pairs(pairs, false)?;
            (format!("ENV {}", key_values(&pairs)), ConfigEdit::Env(pairs))
        }
        Instruction::Label(pairs) => {
            let pairs = words.pairs(pairs, true)?;
            (format!("LABEL {}", key_values(&pairs)), ConfigEdit::Labels(pairs))
        }
        Instruction::Workdir(w) => {
            let dir = absolute_workdir(&words.x(w)?, config.working_dir());
            (format!("WORKDIR {dir}"), ConfigEdit::WorkingDir(dir))
        }
        Instruction::User(u) => {
            let u = words.x(u)?;
            (format!("USER {u}"), ConfigEdit::User(u))
        }
        Instruction::Cmd(c) => {
            let argv = argv_of(c, &config.shell());
            (format!("CMD {}", json!(argv)), ConfigEdit::Cmd(argv))
        }
        Instruction::Entrypoint(c) => {
            let argv = argv_of(c, &config.shell());
            (format!("ENTRYPOINT {}", json!(argv)), ConfigEdit::Entrypoint(argv))
        }
        Instruction::Expose(ports) => {
            let ports: Vec<String> = words
                .all(ports)?
                .into_iter()
                .map(|p| if p.contains('/') { p } else { format!("{p}/tcp") })
                .collect();
            (format!("EXPOSE {}", ports.join(" ")), ConfigEdit::ExposedPorts(ports))
        }
        Instruction::Volume(vols) => {
            let vols = words.all(vols)?;
            (format!("VOLUME {}", json!(vols)), ConfigEdit::Volumes(vols))
        }
        Instruction::Shell(sh) => (format!("SHELL {}", json!(sh)), ConfigEdit::Shell(sh.clone())),
        Instruction::StopSignal(s) => {
            let s = words.x(s)?;
            (format!("STOPSIGNAL {s}"), ConfigEdit::StopSignal(s))
        }
        Instruction::Maintainer(m) => (format!("MAINTAINER {m}"), ConfigEdit::Author(m.clone())),
        Instruction::Healthcheck(hc) => {
            let hc = healthcheck(hc)?;
            let text = serde_json::to_value(&hc).map_err(|e| e.to_string())?;
            (format!("HEALTHCHECK {text}"), ConfigEdit::Healthcheck(hc))
        }
        Instruction::From { .. } | Instruction::Run { .. } | Instruction::Copy { .. } => {
            return Err("not a config instruction".into())
        }
    })
}

/// `K=V K2=V2`, as history texts show ENV and LABEL (values unquoted, as docker's legacy builder did).
fn key_values(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// WORKDIR `w` against the current working directory (`/` when unset); not normalised, as before.
fn absolute_workdir(w: &str, current: &str) -> String {
    if w.starts_with('/') {
        return w.to_string();
    }
    let current = if current.is_empty() { "/" } else { current };
    format!("{}/{w}", current.trim_end_matches('/'))
}

/// The argv of a command: exec form as written, shell form as `shell… text`.
pub(super) fn argv_of(c: &Command, shell: &[String]) -> Vec<String> {
    match c {
        Command::Exec(a) => a.clone(),
        Command::Shell(s) => {
            let mut a = shell.to_vec();
            a.push(s.clone());
            a
        }
    }
}

/// HEALTHCHECK as docker stores it: `Test` from the command (`NONE` disables an inherited check),
/// durations in nanoseconds, `Retries` a number.
fn healthcheck(hc: &dockerfile::Healthcheck) -> Result<Healthcheck, String> {
    let mut out = Healthcheck {
        test: Some(match &hc.test {
            None => vec!["NONE".to_string()],
            Some(Command::Exec(a)) => std::iter::once("CMD".to_string()).chain(a.iter().cloned()).collect(),
            Some(Command::Shell(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
        }),
        ..Healthcheck::default()
    };
    for (k, val) in &hc.flags {
        let duration = || parse_duration_ns(val).ok_or_else(|| format!("--{k} {val:?} is not a duration"));
        match k.as_str() {
            "interval" => out.interval = Some(duration()?),
            "timeout" => out.timeout = Some(duration()?),
            "start-period" => out.start_period = Some(duration()?),
            "start-interval" => out.start_interval = Some(duration()?),
            _ => {
                let n = val.parse::<u64>().ok().and_then(|n| i64::try_from(n).ok());
                out.retries = Some(n.ok_or_else(|| format!("--retries {val:?} is not a number"))?);
            }
        }
    }
    Ok(out)
}
