//! `--init`: the container's PID 1 is rimg-init (init/rimg-init.rs, built by build.rs and embedded here),
//! which forks the real command, forwards every catchable signal to it, reaps every zombie reparented to
//! PID 1, and exits with the command's status when it ends (which makes the kernel kill the rest of the
//! pid namespace, as docker-init/tini do).
//!
//! It runs from a sealed memfd, never from rimg's own binary: a long-lived PID 1 whose `/proc/1/exe` is the
//! host's rimg would hand the container a way to the host binary (CVE-2019-5736's set-up; only ETXTBSY
//! stood in the way). A sealed memfd cannot be written by anyone, and is nothing of the host's.

use super::command::{self, Failure};
use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The rimg-init program (a static executable).
static INIT_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rimg-init"));

/// Confine the process (no_new_privs, seccomp: the init runs under the container's filter too, as
/// docker-init does), then exec rimg-init from a sealed memfd with `prepared` as its command. Never
/// returns.
pub fn run(prepared: command::Prepared, err_pipe: OwnedFd) -> ! {
    if let Err(f) = command::confine(&prepared) {
        command::fail(&err_pipe, f);
    }
    let fail =
        |message: String| -> ! { command::fail(&err_pipe, Failure { code: command::EXIT_RIMG, message }) };
    let program = match sealed_program() {
        Ok(p) => p,
        Err(e) => fail(format!("--init: {e}")),
    };
    let errfd = CString::new(err_pipe.as_raw_fd().to_string()).unwrap_or_default();
    let mut argv: Vec<&CStr> = vec![c"rimg-init", &errfd, prepared.path()];
    argv.extend(prepared.argv().iter().map(CString::as_c_str));
    let mut argv: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = prepared.envp().iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: the error pipe must stay open across this exec (rimg-init reports the command's exec failure
    // on it and closes it); execveat(2) of our memfd with NULL-terminated arrays of NUL-terminated strings
    // that outlive the call.
    unsafe {
        libc::fcntl(err_pipe.as_raw_fd(), libc::F_SETFD, 0);
        libc::syscall(
            libc::SYS_execveat,
            program.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    fail(format!("--init: exec rimg-init: {}", std::io::Error::last_os_error()))
}

/// rimg-init in a memfd sealed against every change.
fn sealed_program() -> std::io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3+) keeps the memfd executable where vm.memfd_noexec would default it not to be.
    // SAFETY: memfd_create with a NUL-terminated name and flags.
    let mut fd = unsafe { libc::memfd_create(c"rimg-init".as_ptr(), flags | libc::MFD_EXEC) };
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above, on a kernel that does not know MFD_EXEC.
        fd = unsafe { libc::memfd_create(c"rimg-init".as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::File::from(fd.try_clone()?).write_all(INIT_PROGRAM)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS on our memfd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}
