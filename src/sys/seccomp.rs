//! Installing a compiled seccomp filter on the calling thread.

use std::io;

/// Install `program` (classic BPF, as `seccompiler` compiles it). The kernel requires no_new_privs or
/// CAP_SYS_ADMIN; unlike `seccompiler::apply_filter` this does not set no_new_privs itself, so
/// `no-new-privileges=false` stays honoured (the caller then installs while still privileged).
pub fn install_filter(program: &[seccompiler::sock_filter]) -> io::Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const seccompiler::sock_filter,
    }
    let len = libc::c_ushort::try_from(program.len()).map_err(|_| io::Error::other("filter too large"))?;
    let fprog = SockFprog { len, filter: program.as_ptr() };
    // SAFETY: seccomp(2) with a valid sock_fprog pointing at a live program; the kernel copies it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &fprog as *const SockFprog,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    /// Installs the default filter on a fresh thread (filters and no_new_privs are per-thread, so the
    /// test process is not affected) and checks what the kernel then answers.
    #[test]
    fn default_filter_in_the_kernel() {
        let errno =
            |r: libc::c_long| if r < 0 { std::io::Error::last_os_error().raw_os_error() } else { None };
        let f = crate::runtime::seccomp::compile(
            crate::runtime::seccomp::DEFAULT_PROFILE,
            crate::runtime::caps::DEFAULT_CAPS,
        )
        .unwrap();
        let results = std::thread::spawn(move || {
            rustix::thread::set_no_new_privs(true).unwrap();
            crate::runtime::seccomp::install(&f).unwrap();
            // SAFETY: raw syscalls with harmless arguments; each fails before doing anything.
            unsafe {
                (
                    errno(libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize)),
                    errno(libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0)),
                    errno(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)),
                    errno(libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0)),
                    errno(libc::syscall(libc::SYS_socket, 40, libc::SOCK_STREAM, 0)),
                    libc::syscall(libc::SYS_getpid) > 0,
                )
            }
        })
        .join()
        .unwrap();
        let (clone3, keyctl, unshare, kexec, vsock, getpid) = results;
        assert_eq!(clone3, Some(libc::ENOSYS), "clone3 answers ENOSYS so libc falls back to clone");
        assert_eq!(keyctl, Some(libc::EPERM));
        assert_eq!(unshare, Some(libc::EPERM));
        assert_eq!(kexec, Some(libc::EPERM));
        assert_eq!(vsock, Some(libc::EPERM), "AF_VSOCK");
        assert!(getpid);
    }
}
