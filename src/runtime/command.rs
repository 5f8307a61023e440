//! The last steps before user code runs, shared by a container's init and `rimg exec`: identity,
//! capabilities, environment, working directory, `$PATH` lookup inside the container, and execve — with
//! failures reported through a close-on-exec pipe as docker's 126/127 so the caller can explain them.

use super::caps;
use super::seccomp::{self, SeccompPolicy};
use super::spec::ProcessSpec;
use super::user::{self, Identity};
use super::RuntimeError;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Exit code: the command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit code: the command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code: rimg itself failed.
pub const EXIT_RIMG: i32 = 125;

/// A start failure with the exit code docker would give it.
#[derive(Debug)]
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

/// Write a failure to the error pipe as `CODE\tMESSAGE` and exit the (forked) process with its code.
pub fn fail(err_pipe: &OwnedFd, f: Failure) -> ! {
    let msg = format!("{}\t{}", f.code, f.message.replace('\n', " "));
    // SAFETY: write(2) of a local buffer to a pipe we own; _exit never returns.
    unsafe {
        libc::write(err_pipe.as_raw_fd(), msg.as_ptr().cast(), msg.len());
        libc::_exit(f.code)
    }
}

/// Parse what [`fail`] wrote; `None` when the pipe closed empty (exec succeeded).
pub fn parse_failure(data: &[u8]) -> Option<Failure> {
    if data.is_empty() {
        return None;
    }
    let s = String::from_utf8_lossy(data);
    let (code, msg) = s.split_once('\t').unwrap_or(("125", &s));
    Some(Failure { code: code.parse().unwrap_or(EXIT_RIMG), message: msg.to_string() })
}

/// Give the process default signal dispositions and an empty mask, as a freshly exec'd program expects:
/// ignored dispositions survive exec (rimg itself ignores SIGPIPE, as every Rust program does, and the
/// monitor ignores terminal signals), and a shell could then not even trap them.
pub fn reset_signals() {
    use nix::sys::signal::{SigSet, SigmaskHow};
    // The kernel's struct sigaction; all-zero means SIG_DFL, no flags, empty mask on every architecture.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: raw rt_sigaction (glibc's wrapper refuses its internal real-time signals, which may
            // arrive ignored from whoever started rimg) with a valid struct and the kernel's sigset size.
            unsafe {
                libc::syscall(libc::SYS_rt_sigaction, sig, &dfl as *const KernelSigaction, 0usize, 8usize)
            };
        }
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
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
        let c = CString::new(cand.clone())
            .map_err(|_| Failure { code: EXIT_NOT_FOUND, message: "NUL in path".into() })?;
        // SAFETY: access(2) with a NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
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
    // SAFETY: prctl with integer arguments.
    if p.no_new_privs && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Failure {
            code: EXIT_RIMG,
            message: format!("set no_new_privs: {}", std::io::Error::last_os_error()),
        });
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
        let c = CString::new(cwd).map_err(|_| Failure { code: EXIT_RIMG, message: "NUL in cwd".into() })?;
        // SAFETY: chown(2) of a directory we just created.
        unsafe { libc::chown(c.as_ptr(), id.uid, id.gid) };
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
    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of NUL-terminated strings that outlive the call.
    unsafe { libc::execve(p.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = std::io::Error::last_os_error();
    let shown = p.path.to_string_lossy();
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => {
            Failure { code: EXIT_NOT_FOUND, message: format!("exec: {shown:?}: no such file or directory") }
        }
        _ => Failure {
            code: EXIT_NOT_EXECUTABLE,
            message: format!(
                "exec: {shown:?}: {}",
                e.to_string().split(" (os error").next().unwrap_or("").to_lowercase()
            ),
        },
    }
}
