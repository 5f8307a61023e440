//! The foreground side of `rimg run` / `rimg exec`: relay signals to the container, copy the terminal both
//! ways in raw mode, follow window-size changes, and collect the exit code.

use super::terminal::{self, RawMode};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

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
    let set = terminal::relayed_signals();
    let _ = terminal::block_relayed();
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
            Signal::SIGCHLD => match waitpid(Pid::from_raw(relay.child), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => break code,
                Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                _ => {}
            },
            Signal::SIGWINCH => {
                if let Some(m) = &relay.pty_master {
                    terminal::copy_own_size(m);
                }
            }
            other => {
                let _ = nix::sys::signal::kill(Pid::from_raw(relay.target), other);
            }
        }
    };
    drop(relay.pty_master);
    if let Some(t) = output {
        let _ = t.join();
    }
    drop(_raw);
    terminal::restore_mask(&relay.old_mask);
    code
}
