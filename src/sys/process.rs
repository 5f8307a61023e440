//! Processes: fork and clone into namespaces, leaving without unwinding, signal dispositions for a fresh
//! program, descriptor hygiene before user code runs, and exec of a sealed program.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

/// Which side of a fork the caller is on.
#[derive(Debug)]
pub enum Forked {
    /// The original process; the child's pid.
    Parent(i32),
    /// The new process, single-threaded by construction (fork copies only the calling thread).
    Child(SingleThreaded),
}

/// Proof that the calling process has exactly one thread, which fork(2) needs: it copies only the calling
/// thread, so a child of a multi-threaded process may find locks (malloc's among them) held forever by
/// threads that are gone. Got by [`SingleThreaded::check`], or from the child side of a fork; valid until
/// the process starts a thread (not `Send`: it cannot move to one).
#[derive(Debug)]
pub struct SingleThreaded(std::marker::PhantomData<*const ()>);

impl SingleThreaded {
    /// Count the calling process's threads (in /proc, which must be the process's own pid namespace's).
    pub fn check() -> io::Result<SingleThreaded> {
        let threads = std::fs::read_dir("/proc/thread-self/..")?.count();
        if threads == 1 {
            Ok(SingleThreaded(std::marker::PhantomData))
        } else {
            Err(io::Error::other(format!("refusing to fork a process of {threads} threads")))
        }
    }
}

/// fork(2) of a single-threaded process.
pub fn fork(proof: &SingleThreaded) -> io::Result<Forked> {
    clone_with(proof, 0)
}

/// clone(2) as fork(2) plus `flags` (`CLONE_NEW*` namespaces, `CLONE_PARENT`) of a single-threaded
/// process. The child runs on a copy of the caller's stack, as after fork.
pub fn clone_with(_proof: &SingleThreaded, flags: libc::c_ulong) -> io::Result<Forked> {
    // SAFETY: clone(2) without a new stack behaves as fork(2); the caller is single-threaded (the proof),
    // so the child inherits no lock held by a thread it does not have.
    let r = unsafe {
        libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as libc::c_ulong, 0usize, 0usize, 0usize, 0usize)
    };
    match r {
        0 => Ok(Forked::Child(SingleThreaded(std::marker::PhantomData))),
        p if p > 0 => Ok(Forked::Parent(p as i32)),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Leave the process at once with `code`, running no destructor and no atexit handler (a forked child
/// must not run its parent's).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Default dispositions for every signal and an empty mask, as a freshly exec'd program expects: ignored
/// dispositions survive exec (rimg ignores SIGPIPE, as every Rust program does), and a shell could then
/// not even trap them.
pub fn reset_signal_dispositions() {
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
    let empty = nix::sys::signal::SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&empty), None);
}

/// Ignore `signals` (no handler runs, so this is sound in any process).
pub fn ignore_signals(signals: &[nix::sys::signal::Signal]) {
    for s in signals {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(*s, nix::sys::signal::SigHandler::SigIgn) };
    }
}

/// Restore the default disposition of `signal` (no handler runs).
pub fn default_signal(signal: nix::sys::signal::Signal) {
    // SAFETY: SIG_DFL installs no handler code.
    let _ = unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl) };
}

/// Close every descriptor above 2 except `keep`.
pub fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep.iter().filter(|&&f| f > 2).map(|&f| f as u32).collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for k in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if k > from {
            // SAFETY: close_range(2) drops descriptors of this process; no Rust object may still own one
            // of them (callers are forked children about to exec, holding only what `keep` names).
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
        }
        from = k.saturating_add(1);
    }
}

/// Close the descriptors of `range` (`--preserve-fds` ones the caller no longer needs).
pub fn close_fds(range: std::ops::Range<RawFd>) {
    if range.is_empty() {
        return;
    }
    // SAFETY: as in close_fds_except: descriptors inherited for a child, owned by no Rust object.
    unsafe { libc::syscall(libc::SYS_close_range, range.start as u32, (range.end - 1) as u32, 0) };
}

/// Hand heap pages nobody uses back to the kernel (an idle monitor lives for the container's lifetime).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
}

/// Limit malloc to `n` arenas (a process with few, mostly idle threads does not need one per thread).
/// Takes effect for threads started afterwards.
pub fn limit_malloc_arenas(n: i32) {
    // SAFETY: mallopt with a constant option.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
}

/// execveat(2) of the program behind `program` (a memfd: `AT_EMPTY_PATH`); returns only on failure.
pub fn exec_fd(program: impl AsFd, argv: &[&CStr], envp: &[CString]) -> io::Error {
    let mut argv: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: execveat(2) with a live descriptor and NULL-terminated arrays of NUL-terminated strings
    // that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            program.as_fd().as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_multi_threaded_process_gets_no_proof() {
        let t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        assert!(super::SingleThreaded::check().is_err());
        let _ = t.join();
    }
}
