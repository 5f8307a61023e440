//! The last steps before user code runs, shared by a container's init and `rimg exec`: identity,
//! capabilities, environment, working directory, `$PATH` lookup inside the container, and execve — with
//! failures reported through a close-on-exec pipe as docker's 126/127 so the caller can explain them.

use super::caps;
use super::protocol::Sender;
use super::seccomp::{self, SeccompPolicy};
use super::spec::ProcessSpec;
use super::user::{self, Identity};
use super::RuntimeError;
use std::ffi::CString;
use std::path::Path;

/// Exit code: the command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit code: the command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code: rimg itself failed.
pub const EXIT_RIMG: i32 = 125;

/// A start failure with the exit code docker would give it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// 125, 126 or 127.
    pub code: i32,
    /// Human explanation.
    pub message: String,
}

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Self {
        Failure { code: EXIT_RIMG, message: e.to_string() }
    }
}

impl From<super::protocol::ProtocolError> for Failure {
    fn from(e: super::protocol::ProtocolError) -> Self {
        RuntimeError::from(e).into()
    }
}

/// Report `f` on the error channel and exit the (forked) process with its code.
pub fn fail(err: &mut Sender<Failure>, f: Failure) -> ! {
    let _ = err.send(&f);
    crate::sys::process::exit_now(f.code)
}

/// Find `arg0` the way a shell would, with the container's `PATH` (from `env`), inside the current root.
pub fn find_executable(arg0: &str, env: &[String]) -> Result<String, Failure> {
    if arg0.contains('/') {
        return Ok(arg0.to_string());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut denied = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = format!("{dir}/{arg0}");
        let Ok(md) = std::fs::metadata(&cand) else { continue };
        if !md.is_file() {
            continue;
        }
        if nix::unistd::access(cand.as_str(), nix::unistd::AccessFlags::X_OK).is_ok() {
            return Ok(cand);
        }
        denied.get_or_insert(cand);
    }
    match denied {
        Some(p) => {
            Err(Failure { code: EXIT_NOT_EXECUTABLE, message: format!("exec: {p:?}: permission denied") })
        }
        None => Err(Failure {
            code: EXIT_NOT_FOUND,
            message: format!("exec: {arg0:?}: executable file not found in $PATH"),
        }),
    }
}

/// Environment for the process: the spec's, plus `HOME` from the passwd entry and `HOSTNAME`, `TERM`
/// defaults as docker sets them.
pub fn environment(p: &ProcessSpec, id: &Identity, hostname: Option<&str>) -> Vec<String> {
    let mut env = p.env.clone();
    let has = |env: &Vec<String>, k: &str| {
        env.iter().any(|e| e.split_once('=').map(|(a, _)| a == k).unwrap_or(false))
    };
    if !has(&env, "PATH") {
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if let Some(h) = hostname {
        if !has(&env, "HOSTNAME") {
            env.push(format!("HOSTNAME={h}"));
        }
    }
    if p.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", id.home));
    }
    env
}

/// Set no_new_privs and install the seccomp filters of `p` on the calling process (inherited by its
/// children). [`exec`] does it last thing before execve; `--init` does it before forking the command, so
/// rimg's init runs under the same filter as the container (as docker-init does).
pub fn confine(p: &Prepared) -> Result<(), Failure> {
    if p.no_new_privs {
        rustix::thread::set_no_new_privs(true)
            .map_err(|e| Failure { code: EXIT_RIMG, message: format!("set no_new_privs: {e}") })?;
    }
    if let Some(f) = &p.seccomp {
        seccomp::install(f)?;
    }
    Ok(())
}

impl Prepared {
    /// The same exec without confinement, for a child of a process that already called [`confine`]
    /// (filters are inherited; installing them twice would run each syscall through both).
    pub fn confined(mut self) -> Prepared {
        self.no_new_privs = false;
        self.seccomp = None;
        self
    }
}

impl Prepared {
    /// The resolved executable.
    pub fn path(&self) -> &std::ffi::CStr {
        &self.path
    }

    /// The command line (argv[0] as given).
    pub fn argv(&self) -> &[CString] {
        &self.argv
    }

    /// The environment.
    pub fn envp(&self) -> &[CString] {
        &self.envp
    }
}

/// Everything the final exec needs, resolved while still privileged.
pub struct Prepared {
    no_new_privs: bool,
    seccomp: Option<seccomp::Filters>,
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// Switch to the process's identity, working directory and capabilities, and resolve the executable.
/// Runs in the container's root (after pivot_root or setns).
/// `caps` is what to keep (all when `None`), from [`caps::for_container`]; `no_new_privs` makes [`exec`]
/// set PR_SET_NO_NEW_PRIVS so setuid binaries and file capabilities cannot raise privileges. The seccomp
/// filters of `policy` (compiled for the capabilities kept) are installed by [`exec`] right after
/// no_new_privs; without no_new_privs the kernel wants CAP_SYS_ADMIN for that, so they are installed here
/// first, while rimg still holds it (as runc does), and the rest of the setup runs under them.
pub fn prepare(
    p: &ProcessSpec,
    caps: Option<&[u32]>,
    no_new_privs: bool,
    policy: &SeccompPolicy,
    hostname: Option<&str>,
) -> Result<Prepared, Failure> {
    if p.args.is_empty() {
        return Err(Failure { code: EXIT_RIMG, message: "no command specified".into() });
    }
    let held: Vec<u32> = caps.map(<[u32]>::to_vec).unwrap_or_else(|| (0..64).collect());
    let mut filters = seccomp::for_container(policy, &held)?;
    if !no_new_privs {
        if let Some(f) = filters.take() {
            seccomp::install(&f)?;
        }
    }
    let id = user::resolve(Path::new("/"), &p.user)?;
    let env = environment(p, &id, hostname);
    let cwd = if p.cwd.is_empty() { "/" } else { p.cwd.as_str() };
    if std::fs::metadata(cwd).is_err() {
        // docker creates a missing working directory.
        let _ = std::fs::create_dir_all(cwd);
        let _ = nix::unistd::chown(cwd, Some(id.uid.into()), Some(id.gid.into()));
    }
    caps::bound(caps)?;
    let gids: Vec<nix::unistd::Gid> = id.groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
    let setup = |what: &str, e: nix::Error| Failure { code: EXIT_RIMG, message: format!("{what}: {e}") };
    nix::unistd::setgroups(&gids).map_err(|e| setup("setgroups", e))?;
    let g = nix::unistd::Gid::from_raw(id.gid);
    nix::unistd::setresgid(g, g, g).map_err(|e| setup("setgid", e))?;
    let u = nix::unistd::Uid::from_raw(id.uid);
    nix::unistd::setresuid(u, u, u).map_err(|e| setup("setuid", e))?;
    // As runc: the working directory and the executable are resolved with the user's own rights (setuid
    // cleared the effective set), and only then are the kept capabilities raised again.
    nix::unistd::chdir(cwd).map_err(|e| Failure {
        code: EXIT_RIMG,
        message: format!("chdir to cwd ({cwd:?}) set in config.json failed: {e}"),
    })?;
    let path = find_executable(&p.args[0], &env)?;
    caps::finish(caps)?;
    let cs = |s: &str| {
        CString::new(s).map_err(|_| Failure { code: EXIT_RIMG, message: format!("NUL byte in {s:?}") })
    };
    Ok(Prepared {
        no_new_privs,
        seccomp: filters,
        path: cs(&path)?,
        argv: p.args.iter().map(|a| cs(a)).collect::<Result<_, _>>()?,
        envp: env.iter().map(|a| cs(a)).collect::<Result<_, _>>()?,
    })
}

/// no_new_privs (unless opted out), the seccomp filters, then execve; returns only on failure, with
/// docker's code for it.
pub fn exec(p: &Prepared) -> Failure {
    if let Err(f) = confine(p) {
        return f;
    }
    let Err(e) = nix::unistd::execve(&p.path, &p.argv, &p.envp);
    exec_failure(&p.path.to_string_lossy(), e)
}

/// docker's code and message for an exec of `path` that failed with `e`.
pub fn exec_failure(path: &str, e: nix::Error) -> Failure {
    match e {
        nix::Error::ENOENT | nix::Error::ENOTDIR => {
            Failure { code: EXIT_NOT_FOUND, message: format!("exec: {path:?}: no such file or directory") }
        }
        e => Failure {
            code: EXIT_NOT_EXECUTABLE,
            message: format!("exec: {path:?}: {}", e.desc().to_lowercase()),
        },
    }
}
