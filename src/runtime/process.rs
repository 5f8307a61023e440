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
