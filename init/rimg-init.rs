//! rimg-init: the container's PID 1 with `rimg run --init` (what docker-init/tini and podman's catatonit
//! are). It forks the command, forwards every catchable signal to it, reaps every zombie reparented to
//! PID 1, and exits with the command's status when it ends.
//!
//! It is a separate, small, static program that rimg embeds and runs from a sealed memfd, so that
//! `/proc/1/exe` of a container is never the host's rimg binary (CVE-2019-5736's set-up: a container
//! that can open its PID 1's executable for writing once nothing runs it overwrites the host's binary).
//! build.rs compiles it with plain `rustc` (no crates), so it declares the few libc calls it makes.
//!
//! Calling convention (set by rimg, never by a user): `rimg-init ERRFD PATH ARGV0 [ARGS...]` with the
//! command's environment. Identity, capabilities, no_new_privs and seccomp are already in place; ERRFD is
//! rimg's error channel, on which an exec failure is reported as rimg's `Failure` message, one JSON line
//! `{"code":N,"message":"..."}` (docker's 126/127), and which closes when the command's exec succeeds.

use std::ffi::{c_char, c_int, CString};
use std::os::unix::ffi::OsStrExt;

/// glibc's sigset_t: 1024 bits on every Linux architecture.
#[repr(C)]
struct SigSet([u64; 16]);

extern "C" {
    fn fork() -> c_int;
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn sigfillset(set: *mut SigSet) -> c_int;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigwait(set: *const SigSet, sig: *mut c_int) -> c_int;
    fn write(fd: c_int, buf: *const u8, n: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn _exit(code: c_int) -> !;
    fn __errno_location() -> *mut c_int;
}

const SIG_SETMASK: c_int = 2;
const F_SETFD: c_int = 2;
const FD_CLOEXEC: c_int = 1;
const SIGCHLD: c_int = 17;
const WNOHANG: c_int = 1;
const ENOENT: c_int = 2;
const ENOTDIR: c_int = 20;

/// docker's exit code for a wait status: the code, or 128+N for death by signal N.
fn exit_code_of(status: c_int) -> c_int {
    if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        128 + (status & 0x7f)
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn fail(errfd: c_int, code: c_int, msg: &str) -> ! {
    let line = format!("{{\"code\":{code},\"message\":{}}}\n", json_string(msg));
    // SAFETY: write(2) of a local buffer, then _exit; nothing else runs in this process afterwards.
    unsafe {
        write(errfd, line.as_ptr(), line.len());
        _exit(code)
    }
}

fn main() {
    let args: Vec<CString> =
        std::env::args_os().skip(1).map(|a| CString::new(a.as_bytes()).unwrap_or_default()).collect();
    let errfd: c_int = args.first().and_then(|a| a.to_str().ok()?.parse().ok()).unwrap_or(-1);
    if args.len() < 3 || errfd < 0 {
        fail(2, 125, "rimg-init: usage: rimg-init ERRFD PATH ARGV0 [ARGS...] (started by rimg run --init)");
    }
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).unwrap_or_default()
        })
        .collect();
    let mut argv: Vec<*const c_char> = args[2..].iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut all = SigSet([0; 16]);
    let mut none = SigSet([0; 16]);
    // SAFETY: libc calls on local, properly sized sigsets; fork in a single-threaded process; the child
    // only unblocks signals and execs or _exits.
    let child = unsafe {
        sigfillset(&mut all);
        sigemptyset(&mut none);
        sigprocmask(SIG_SETMASK, &all, std::ptr::null_mut());
        fork()
    };
    if child < 0 {
        fail(errfd, 125, "rimg-init: fork failed");
    }
    if child == 0 {
        // SAFETY: as above; the error pipe closes at the exec (so rimg learns it succeeded, and the command
        // does not inherit it); execve with NULL-terminated arrays of NUL-terminated strings.
        let errno = unsafe {
            fcntl(errfd, F_SETFD, FD_CLOEXEC);
            sigprocmask(SIG_SETMASK, &none, std::ptr::null_mut());
            execve(args[1].as_ptr(), argv.as_ptr(), envp.as_ptr());
            *__errno_location()
        };
        let shown = args[1].to_string_lossy();
        match errno {
            ENOENT | ENOTDIR => fail(errfd, 127, &format!("exec: {shown:?}: no such file or directory")),
            _ => {
                let e = std::io::Error::from_raw_os_error(errno).to_string();
                let e = e.split(" (os error").next().unwrap_or("").to_lowercase();
                fail(errfd, 126, &format!("exec: {shown:?}: {e}"))
            }
        }
    }
    // SAFETY: closing our copy of the error pipe; the child's closes at its exec.
    unsafe { close(errfd) };
    loop {
        let mut sig: c_int = 0;
        // SAFETY: sigwait on the full set, which is blocked.
        if unsafe { sigwait(&all, &mut sig) } != 0 {
            continue;
        }
        if sig != SIGCHLD {
            // SAFETY: kill(2) of our own child.
            unsafe { kill(child, sig) };
            continue;
        }
        loop {
            let mut status: c_int = 0;
            // SAFETY: waitpid(-1, WNOHANG) with a valid out-pointer.
            let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                // SAFETY: _exit ends PID 1; the kernel then tears down the namespace.
                unsafe { _exit(exit_code_of(status)) };
            }
        }
    }
}
