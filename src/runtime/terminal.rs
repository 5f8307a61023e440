//! Terminals and the signals that travel with them, for every process of the runtime: the container's pty
//! (allocated from the container's own devpts, so `tty`, `ps` and ttyname() inside see `/dev/pts/0` as
//! with docker, its master handed back to rimg over a unix socket), rimg's own terminal in raw mode and its
//! size, and the set of signals rimg forwards to the container.

use super::RuntimeError;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsFd, OwnedFd};

/// Signals `rimg run` and `rimg exec` forward to the container.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The forwarded signals plus SIGCHLD: what the foreground relay waits for.
pub fn relayed_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Block the relayed signals (so none is lost between a fork and the relay loop); returns the mask to
/// restore.
pub fn block_relayed() -> SigSet {
    let mut old = SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&relayed_signals()), Some(&mut old));
    old
}

/// Restore a signal mask saved by [`block_relayed`].
pub fn restore_mask(old: &SigSet) {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(old), None);
}

/// A terminal size.
pub type Size = rustix::termios::Winsize;

/// The window size of rimg's own terminal (stdin), if it has one.
pub fn own_size() -> Option<Size> {
    crate::sys::term::window_size(crate::sys::term::stdin())
}

/// Apply rimg's own terminal size (if any) to a container terminal.
pub fn copy_own_size(master: impl AsFd) {
    if let Some(ws) = own_size() {
        crate::sys::term::set_window_size(master, ws);
    }
}

/// Puts rimg's terminal in raw mode and restores it when dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on stdin, if it is a terminal.
    pub fn enable() -> Option<RawMode> {
        let stdin = crate::sys::term::stdin();
        let saved = termios::tcgetattr(stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(crate::sys::term::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// A connected socket pair over which the container's terminal master travels: (rimg's end, the end of
/// the process that allocates the pty).
pub fn channel() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| RuntimeError::os("socketpair for the terminal", e))
}

/// In the container's mount namespace: a pty from the devpts of `ptmx`; the master goes to rimg over
/// `sock`, the slave becomes the caller's stdio and controlling terminal (the caller leads a session).
/// Returns the pty's number.
pub fn open_in_container(ptmx: impl AsFd, sock: impl AsFd, size: Option<Size>) -> Result<u32, RuntimeError> {
    let (master, slave, n) =
        crate::sys::term::open_pty_pair(ptmx, size).map_err(|e| RuntimeError::os("open a pty", e))?;
    crate::sys::term::send_fd(sock, &master).map_err(|e| RuntimeError::os("send the terminal", e))?;
    drop(master);
    crate::sys::term::become_terminal_of(&slave).map_err(|e| RuntimeError::os("take the terminal", e))?;
    Ok(n)
}

/// The terminal master sent over `sock`, if one is waiting.
pub fn receive_master(sock: impl AsFd) -> Option<OwnedFd> {
    crate::sys::term::recv_fd(sock, false).ok()
}
