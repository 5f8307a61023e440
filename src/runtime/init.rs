//! `--init`: the container's PID 1 is rimg-init (init/rimg-init.rs, built by build.rs and embedded here),
//! which forks the real command, forwards every catchable signal to it, reaps every zombie reparented to
//! PID 1, and exits with the command's status when it ends (which makes the kernel kill the rest of the
//! pid namespace, as docker-init/tini do).
//!
//! It runs from a sealed memfd, never from rimg's own binary: a long-lived PID 1 whose `/proc/1/exe` is the
//! host's rimg would hand the container a way to the host binary (CVE-2019-5736's set-up; only ETXTBSY
//! stood in the way). A sealed memfd cannot be written by anyone, and is nothing of the host's.

use super::command::{self, Failure};
use super::protocol::Sender;
use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};

/// The rimg-init program (a static executable).
static INIT_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rimg-init"));

/// Confine the process (no_new_privs, seccomp: the init runs under the container's filter too, as
/// docker-init does), then exec rimg-init from a sealed memfd with `prepared` as its command. Never
/// returns.
pub fn run(prepared: command::Prepared, mut err: Sender<Failure>) -> ! {
    if let Err(f) = command::confine(&prepared) {
        command::fail(&mut err, f);
    }
    let program = match sealed_program() {
        Ok(p) => p,
        Err(e) => {
            command::fail(&mut err, Failure { code: command::EXIT_RIMG, message: format!("--init: {e}") })
        }
    };
    // The error channel stays open across this exec: rimg-init reports the command's exec failure on it
    // (in the channel's format) and closes it.
    let err_fd = err.into_fd();
    let _ = nix::fcntl::fcntl(err_fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()));
    let errfd = CString::new(err_fd.as_raw_fd().to_string()).unwrap_or_default();
    let mut argv: Vec<&CStr> = vec![c"rimg-init", &errfd, prepared.path()];
    argv.extend(prepared.argv().iter().map(CString::as_c_str));
    let e = crate::sys::process::exec_fd(&program, &argv, prepared.envp());
    let mut err = Sender::<Failure>::from_fd(err_fd, "init errors");
    command::fail(
        &mut err,
        Failure { code: command::EXIT_RIMG, message: format!("--init: exec rimg-init: {e}") },
    )
}

/// rimg-init in a memfd sealed against every change.
fn sealed_program() -> std::io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let flags = MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3+) keeps the memfd executable where vm.memfd_noexec would default it not to be.
    let exec = MemFdCreateFlag::from_bits_retain(libc::MFD_EXEC);
    let fd = match memfd_create(c"rimg-init", flags | exec) {
        Err(nix::Error::EINVAL) => memfd_create(c"rimg-init", flags)?,
        r => r?,
    };
    std::fs::File::from(fd.try_clone()?).write_all(INIT_PROGRAM)?;
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals =
        SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE;
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(fd)
}
