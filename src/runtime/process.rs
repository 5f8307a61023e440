//! Small process facts the runtime needs: start times (to tell a live pid from a reused one), pidfds, and
//! docker's mapping of wait statuses to exit codes.

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
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

/// docker's exit code for a wait status: the code itself, or 128+N for death by signal N; `None` for a
/// status that is no end (stopped, continued).
pub fn exit_code_of(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Wait for our child `pid` to end (retrying on EINTR); its docker exit code.
pub fn wait_pid(pid: i32) -> std::io::Result<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(s) => {
                if let Some(code) = exit_code_of(s) {
                    return Ok(code);
                }
            }
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
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
        let pid = nix::unistd::Pid::from_raw(1);
        assert_eq!(super::exit_code_of(super::WaitStatus::Exited(pid, 3)), Some(3));
        let killed = super::WaitStatus::Signaled(pid, nix::sys::signal::Signal::SIGKILL, false);
        assert_eq!(super::exit_code_of(killed), Some(137));
        assert!(super::same_process(std::process::id() as i32, super::start_time(std::process::id() as i32)));
    }
}
