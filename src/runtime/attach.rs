//! The foreground side of `rimg run` / `rimg exec`: relay signals to the container, copy the terminal both
//! ways in raw mode, follow window-size changes, and collect the exit code.

use super::launch::FORWARDED;
use super::process::exit_code_of;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::termios::{self, SetArg, Termios};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The window size of rimg's own terminal (stdin), if it has one.
pub fn terminal_size() -> Option<nix::pty::Winsize> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ into a winsize struct.
    let r = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(ws)
}

/// Puts rimg's terminal in raw mode and restores it when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enable() -> Option<RawMode> {
        // SAFETY: stdin outlives this guard.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let saved = termios::tcgetattr(stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: stdin is still open.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let _ = termios::tcsetattr(stdin, SetArg::TCSANOW, &self.saved);
    }
}

/// What the foreground relay works with.
pub struct Relay {
    /// The process to wait for (rimg's direct child).
    pub child: i32,
    /// Where forwarded signals go (the container's PID 1 or the exec'd process).
    pub target: i32,
    /// Master side of the container's terminal, if it has one.
    pub pty_master: Option<OwnedFd>,
    /// Copy rimg's stdin into the terminal (`-i`).
    pub stdin: bool,
    /// Signal mask to restore at the end (the relayed signals were blocked before forking `child`).
    pub old_mask: SigSet,
}

/// Relay until `child` exits; returns its exit code (docker's convention).
pub fn wait(relay: Relay) -> i32 {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    let mut output = None;
    let mut _raw = None;
    if let Some(master) = &relay.pty_master {
        if relay.stdin {
            _raw = RawMode::enable();
            if let Ok(m) = master.try_clone() {
                // Detached thread: it blocks in read(stdin) and dies with the process.
                std::thread::spawn(move || {
                    let mut to = File::from(m);
                    let mut buf = [0u8; 4096];
                    let mut stdin = std::io::stdin().lock();
                    while let Ok(n) = stdin.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        if let Ok(m) = master.try_clone() {
            output = Some(std::thread::spawn(move || {
                let mut from = File::from(m);
                let mut out = std::io::stdout();
                let mut buf = [0u8; 8192];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if out.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            let _ = out.flush();
                        }
                    }
                }
            }));
        }
    }
    let code = loop {
        let Ok(sig) = set.wait() else { continue };
        match sig {
            Signal::SIGCHLD => {
                let mut status = 0;
                // SAFETY: waitpid of our own child with a valid out-pointer.
                let r = unsafe { libc::waitpid(relay.child, &mut status, libc::WNOHANG) };
                if r == relay.child {
                    break exit_code_of(status);
                }
            }
            Signal::SIGWINCH => {
                if let (Some(m), Some(ws)) = (&relay.pty_master, terminal_size()) {
                    // SAFETY: TIOCSWINSZ on the pty master with a valid winsize.
                    unsafe { libc::ioctl(m.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                }
            }
            other => {
                // SAFETY: kill(2) of the container process we started.
                unsafe { libc::kill(relay.target, other as i32) };
            }
        }
    };
    drop(relay.pty_master);
    if let Some(t) = output {
        let _ = t.join();
    }
    drop(_raw);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&relay.old_mask), None);
    code
}
