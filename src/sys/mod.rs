//! Every `unsafe` of rimg's own code lives under this module (the crate denies it elsewhere): the few
//! system calls that no well-kept crate wraps safely (`rustix` and `nix` cover the rest, and callers use
//! them directly), each behind a safe function whose contract it checks, each block with a SAFETY note.
//!
//! - [`process`]: fork/clone (refused unless the caller is single-threaded), `_exit`, signal dispositions,
//!   descriptor hygiene, the allocator knobs the monitor uses, exec from a descriptor.
//! - [`term`]: terminals: window sizes, controlling terminal, pty pairs, descriptors over unix sockets.
//! - [`caps`]: the capability sets of the calling thread.
//! - [`seccomp`]: installing a compiled BPF filter without forcing no_new_privs.
//! - [`bpf`]: loading, attaching and querying cgroup device programs.
//! - [`net`]: raising an interface.

pub mod bpf;
pub mod caps;
pub mod net;
pub mod process;
pub mod seccomp;
pub mod term;

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Take ownership of a descriptor a system call just returned (`r >= 0`), or the error it set.
pub(crate) fn owned_fd(r: libc::c_long) -> std::io::Result<OwnedFd> {
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = RawFd::try_from(r).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
