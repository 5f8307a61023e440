//! Small process facts the runtime needs: start times (to tell a live pid from a reused one), pidfds, and
//! docker's mapping of wait statuses to exit codes.

use std::fs;

/// Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22), if it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parens; everything after the last ')' is well-formed.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Is `pid` still the process that had `start` (or alive at all when `start` is unknown)?
pub fn same_process(pid: i32, start: Option<u64>) -> bool {
    match (start_time(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// docker's exit code for a raw wait status: the code itself, or 128+N for death by signal N.
pub fn exit_code_of(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        125
    }
}

/// waitpid that retries on EINTR; returns the raw status.
pub fn wait_pid(pid: i32) -> std::io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if r < 0 && e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Close every descriptor above 2 except `keep`.
pub fn close_fds_except(keep: &[i32]) {
    let mut keep: Vec<u32> = keep.iter().filter(|&&f| f > 2).map(|&f| f as u32).collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for k in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if k > from {
            // SAFETY: close_range(2) over descriptors this process owns and no longer needs.
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
        }
        from = k.saturating_add(1);
    }
}

/// Make descriptors of `range` survive the coming exec (`--preserve-fds`).
pub fn clear_cloexec(range: std::ops::Range<i32>) {
    for fd in range {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()));
    }
}

/// `--preserve-fds N` passes the caller's descriptors 3..3+N: each must be open when rimg starts, so every
/// descriptor rimg opens itself gets a higher number and can never be passed on by mistake.
pub fn check_preserved_fds(n: u32) -> Result<(), String> {
    for fd in 3..3 + n as i32 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            return Err(format!("--preserve-fds {n}: file descriptor {fd} is not open"));
        }
    }
    Ok(())
}

/// Parse a signal as docker accepts it: `TERM`, `SIGTERM`, `sigterm`, or a number.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals_and_codes() {
        assert_eq!(super::parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(super::parse_signal("sigkill"), Some(libc::SIGKILL));
        assert_eq!(super::parse_signal("SIGUSR1"), Some(libc::SIGUSR1));
        assert_eq!(super::parse_signal("9"), Some(9));
        assert_eq!(super::parse_signal("NOPE"), None);
        assert_eq!(super::parse_signal("0"), None);
        // raw wait statuses: exit 3, killed by SIGKILL
        assert_eq!(super::exit_code_of(3 << 8), 3);
        assert_eq!(super::exit_code_of(libc::SIGKILL), 137);
        assert!(super::same_process(std::process::id() as i32, super::start_time(std::process::id() as i32)));
    }
}
