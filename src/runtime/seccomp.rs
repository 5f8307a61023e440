//! Seccomp: Docker's JSON profile format (`defaultAction`, `syscalls[{names, action, errnoRet, args,
//! includes, excludes}]`) compiled to BPF with `seccompiler`, and installed as the very last step before
//! execve. Containers get [`DEFAULT_PROFILE`] (following moby's default) unless `--security-opt
//! seccomp=unconfined` or `seccomp=FILE.json`.
//!
//! seccompiler builds one filter with a single match action and a single mismatch action, while a Docker
//! profile mixes actions. The profile is therefore split: a base filter that allows every listed syscall
//! (under its argument conditions) and returns `defaultAction` for the rest, plus one filter per other
//! action that returns it for its syscalls and allows the rest. The kernel runs every filter and applies
//! the most restrictive result (and, between two errno results, the later filter's errno), which is what
//! libseccomp's single filter would decide.
//!
//! Limits: only the native architecture is filtered. A syscall through another ABI (i386 `int 0x80` on
//! x86_64) fails seccompiler's architecture check, which kills the process; docker instead filters x86 and
//! x32 too (`archMap`), so 32-bit binaries run there and not here. `SCMP_ACT_NOTIFY` is not supported.
//! Compiling costs one seccompiler probe per syscall name (its name table is private): about 50 ms per
//! container start or exec in a debug build.

use super::capability::{parse_name, CapName};
pub use super::spec::SeccompPolicy;
use super::RuntimeError;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// rimg's default profile, Docker's JSON format; it follows moby's `profiles/seccomp/default.json`.
pub const DEFAULT_PROFILE: &str = include_str!("seccomp-default.json");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(default)]
    names: Vec<String>,
    /// The pre-2016 spelling: one name per entry.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    includes: Selector,
    #[serde(default)]
    excludes: Selector,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Selector {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// BPF programs ready to install, in order.
#[derive(Debug, Clone)]
pub struct Filters(Vec<BpfProgram>);

fn err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Seccomp(msg.into())
}

fn action(name: &str, errno: Option<u32>) -> Result<SeccompAction, RuntimeError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(errno.unwrap_or(0)),
        other => return Err(err(format!("action {other:?} is not supported"))),
    })
}

fn condition(a: &Arg) -> Result<SeccompCondition, RuntimeError> {
    let (op, value) = match a.op.as_str() {
        "SCMP_CMP_EQ" => (SeccompCmpOp::Eq, a.value),
        "SCMP_CMP_NE" => (SeccompCmpOp::Ne, a.value),
        "SCMP_CMP_LT" => (SeccompCmpOp::Lt, a.value),
        "SCMP_CMP_LE" => (SeccompCmpOp::Le, a.value),
        "SCMP_CMP_GT" => (SeccompCmpOp::Gt, a.value),
        "SCMP_CMP_GE" => (SeccompCmpOp::Ge, a.value),
        // Docker: `value` is the mask, `valueTwo` what the masked argument must equal.
        "SCMP_CMP_MASKED_EQ" => (SeccompCmpOp::MaskedEq(a.value), a.value_two),
        other => return Err(err(format!("argument operator {other:?} is not supported"))),
    };
    SeccompCondition::new(a.index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| err(format!("argument {}: {e}", a.index)))
}

/// Docker's name for the architecture rimg runs on, as `includes.arches` spells it.
fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn kernel_at_least(min: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> {
        s.split(['.', '-']).take(2).map(|p| p.parse().unwrap_or(0)).collect::<Vec<_>>()
    };
    let release =
        nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    parse(&release) >= parse(min)
}

/// Whether an entry applies to a container holding `held` capabilities, as moby decides it: every
/// `includes` condition met, no `excludes` condition met.
fn applies(e: &Entry, held: &[u32]) -> bool {
    let has = |n: &String| matches!(parse_name(n), Ok(CapName::One(c)) if held.contains(&c));
    let arch = docker_arch();
    let inc = &e.includes;
    if !inc.caps.iter().all(has) || (!inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch)) {
        return false;
    }
    if inc.min_kernel.as_deref().is_some_and(|m| !kernel_at_least(m)) {
        return false;
    }
    let exc = &e.excludes;
    !(exc.caps.iter().any(has) || exc.arches.iter().any(|a| a == arch))
}

/// The syscall number of `name` on `arch`, found by letting seccompiler compile a one-rule filter (its
/// name table is private) and reading the number from the comparison after the syscall-number load.
fn syscall_number(name: &str, arch: TargetArch) -> Option<i64> {
    let probe = serde_json::json!({
        "p": { "mismatch_action": "allow", "filter_action": "trap", "filter": [{ "syscall": name }] }
    });
    let map = seccompiler::compile_from_json(probe.to_string().as_bytes(), arch).ok()?;
    let prog = map.get("p")?;
    // BPF_LD|BPF_W|BPF_ABS of offset 0 (seccomp_data.nr), then BPF_JMP|BPF_JEQ|BPF_K against the number.
    let load = prog.iter().position(|i| i.code == 0x20 && i.k == 0)?;
    prog[load..].iter().find(|i| i.code == 0x15).map(|i| i64::from(i.k))
}

/// What one action matches for one syscall: always, or any of several argument condition sets.
#[derive(Clone)]
enum Match {
    Always,
    Any(Vec<Vec<SeccompCondition>>),
}

impl Match {
    fn merge(&mut self, other: Match) {
        match (self as &mut Match, other) {
            (Match::Always, _) => {}
            (s, Match::Always) => *s = Match::Always,
            (Match::Any(a), Match::Any(b)) => a.extend(b),
        }
    }

    fn rules(self) -> Result<Vec<SeccompRule>, RuntimeError> {
        match self {
            Match::Always => Ok(Vec::new()),
            Match::Any(sets) => {
                sets.into_iter().map(|c| SeccompRule::new(c).map_err(|e| err(e.to_string()))).collect()
            }
        }
    }
}

type Group = BTreeMap<i64, Match>;

fn program(
    group: Group,
    mismatch: SeccompAction,
    on_match: SeccompAction,
) -> Result<BpfProgram, RuntimeError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| err(e.to_string()))?;
    let mut rules = BTreeMap::new();
    for (nr, m) in group {
        rules.insert(nr, m.rules()?);
    }
    let filter = SeccompFilter::new(rules, mismatch, on_match, arch).map_err(|e| err(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| err(e.to_string()))
}

/// Compile a Docker-format profile for a container holding capabilities `held` (which select the
/// capability-conditional entries). Syscall names unknown on this architecture are skipped, as
/// libseccomp-based runtimes do.
pub fn compile(profile_json: &str, held: &[u32]) -> Result<Filters, RuntimeError> {
    let profile: Profile =
        serde_json::from_str(profile_json).map_err(|e| err(format!("invalid profile: {e}")))?;
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| err(e.to_string()))?;
    let default = action(&profile.default_action, profile.default_errno_ret)?;
    let mut numbers: HashMap<String, Option<i64>> = HashMap::new();
    let mut groups: Vec<(SeccompAction, Group)> = Vec::new();
    for e in &profile.syscalls {
        let act = action(&e.action, e.errno_ret)?;
        if act == default || !applies(e, held) {
            continue;
        }
        let m = if e.args.is_empty() {
            Match::Always
        } else {
            Match::Any(vec![e.args.iter().map(condition).collect::<Result<_, _>>()?])
        };
        let idx = match groups.iter().position(|(a, _)| *a == act) {
            Some(i) => i,
            None => {
                groups.push((act, Group::new()));
                groups.len() - 1
            }
        };
        for name in e.names.iter().chain(e.name.iter()) {
            let nr = *numbers.entry(name.clone()).or_insert_with(|| syscall_number(name, arch));
            let Some(nr) = nr else { continue };
            let g = &mut groups[idx].1;
            match g.get_mut(&nr) {
                Some(have) => have.merge(m.clone()),
                None => {
                    g.insert(nr, m.clone());
                }
            }
        }
    }
    let mut programs = Vec::new();
    if default != SeccompAction::Allow {
        // Base: every syscall some entry names passes (under its conditions); the rest gets the default.
        let mut base = Group::new();
        for (_, g) in &groups {
            for (nr, m) in g {
                match base.get_mut(nr) {
                    Some(have) => have.merge(m.clone()),
                    None => {
                        base.insert(*nr, m.clone());
                    }
                }
            }
        }
        programs.push(program(base, default.clone(), SeccompAction::Allow)?);
    }
    for (act, g) in groups {
        if act != SeccompAction::Allow && !g.is_empty() {
            programs.push(program(g, SeccompAction::Allow, act)?);
        }
    }
    Ok(Filters(programs))
}

/// The filters for a container under `policy` holding `held` capabilities; `None` when unconfined.
pub fn for_container(policy: &SeccompPolicy, held: &[u32]) -> Result<Option<Filters>, RuntimeError> {
    match policy {
        SeccompPolicy::Unconfined => Ok(None),
        SeccompPolicy::Default => compile(DEFAULT_PROFILE, held).map(Some),
        SeccompPolicy::Custom(json) => compile(json, held).map(Some),
    }
}

/// Install the filters on the calling thread. The kernel requires no_new_privs or CAP_SYS_ADMIN; unlike
/// `seccompiler::apply_filter` this does not set no_new_privs itself, so `no-new-privileges=false` stays
/// honoured (the caller then installs while still privileged).
pub fn install(f: &Filters) -> Result<(), RuntimeError> {
    for prog in &f.0 {
        crate::sys::seccomp::install_filter(prog)
            .map_err(|e| RuntimeError::os("seccomp: install filter", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_with_and_without_caps() {
        let f = compile(DEFAULT_PROFILE, super::super::caps::DEFAULT_CAPS).unwrap();
        // base + clone3's ENOSYS filter.
        assert_eq!(f.0.len(), 2);
        let all: Vec<u32> = (0..=40).collect();
        let f = compile(DEFAULT_PROFILE, &all).unwrap();
        assert_eq!(f.0.len(), 1, "with CAP_SYS_ADMIN clone3 is allowed");
    }

    #[test]
    fn syscall_numbers_come_from_seccompilers_table() {
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(syscall_number("read", TargetArch::x86_64), Some(0));
            assert_eq!(syscall_number("mkdir", TargetArch::x86_64), Some(83));
            assert_eq!(syscall_number("clone3", TargetArch::x86_64), Some(435));
            assert_eq!(syscall_number("chown32", TargetArch::x86_64), None);
        }
    }

    #[test]
    fn bad_profiles_are_errors() {
        assert!(compile("{", &[]).is_err());
        assert!(compile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#, &[]).is_err());
        let bad_op = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],
            "action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_SOMETIMES"}]}]}"#;
        assert!(compile(bad_op, &[]).is_err());
    }
}
