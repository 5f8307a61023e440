//! `--init`: the container's PID 1 stays rimg code (already in memory, nothing to bind into the rootfs),
//! forks the real command, forwards every catchable signal to it, reaps every zombie reparented to PID 1,
//! and exits with the command's status when it ends (which makes the kernel kill the rest of the pid
//! namespace, as docker-init/tini do).

use super::command::{self, Failure};
use super::process::exit_code_of;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::os::fd::OwnedFd;

/// Run as PID 1: fork `prepared` into a child, then reap and forward until it exits. Never returns.
pub fn run(prepared: command::Prepared, err_pipe: OwnedFd) -> ! {
    // The init is the container's PID 1: it gets the container's no_new_privs and seccomp filter too.
    if let Err(f) = command::confine(&prepared) {
        command::fail(&err_pipe, f);
    }
    let prepared = prepared.confined();
    let all = SigSet::all();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None);
    // SAFETY: fork in a single-threaded process.
    let child = unsafe { libc::fork() };
    if child < 0 {
        command::fail(
            &err_pipe,
            Failure {
                code: command::EXIT_RIMG,
                message: format!("fork: {}", std::io::Error::last_os_error()),
            },
        );
    }
    if child == 0 {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        let f = command::exec(&prepared);
        command::fail(&err_pipe, f);
    }
    drop(err_pipe);
    loop {
        let Ok(sig) = all.wait() else { continue };
        if sig == Signal::SIGCHLD {
            loop {
                let mut status = 0;
                // SAFETY: waitpid(-1, WNOHANG) with a valid out-pointer.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if pid == child {
                    // SAFETY: _exit ends PID 1; the kernel then tears down the namespace.
                    unsafe { libc::_exit(exit_code_of(status)) };
                }
            }
        } else {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(child, sig as i32) };
        }
    }
}
