//! Terminals: window sizes, the controlling terminal, pty pairs from a given devpts instance, and passing
//! a descriptor over a unix socket.

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// The window size of the terminal behind `fd`, if it is one.
pub fn window_size(fd: impl AsFd) -> Option<rustix::termios::Winsize> {
    rustix::termios::tcgetwinsize(fd).ok()
}

/// Set the window size of the terminal behind `fd`.
pub fn set_window_size(fd: impl AsFd, ws: rustix::termios::Winsize) {
    let _ = rustix::termios::tcsetwinsize(fd, ws);
}

/// The calling process's standard input (descriptor 0), borrowed.
pub fn stdin() -> BorrowedFd<'static> {
    rustix::stdio::stdin()
}

/// Make `tty` the caller's stdin, stdout, stderr and controlling terminal (the caller leads a session).
pub fn become_terminal_of(tty: impl AsFd) -> io::Result<()> {
    for fd in 0..3 {
        nix::unistd::dup2(tty.as_fd().as_raw_fd(), fd)?;
    }
    rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
    Ok(())
}

/// A new pty of the devpts instance `ptmx` belongs to (a descriptor of its `ptmx`, `O_PATH` will do), sized
/// `winsize`: (master, slave, its number in that instance).
pub fn open_pty_pair(
    ptmx: impl AsFd,
    winsize: Option<rustix::termios::Winsize>,
) -> io::Result<(OwnedFd, OwnedFd, u32)> {
    use rustix::fs::{Mode, OFlags};
    // Reopened through its magic link: the master of a new pty of that very devpts instance.
    let path = format!("/proc/self/fd/{}", ptmx.as_fd().as_raw_fd());
    let master =
        rustix::fs::open(path.as_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let n = name
        .to_str()
        .ok()
        .and_then(|s| s.rsplit('/').next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("pty without a number"))?;
    if let Some(ws) = winsize {
        set_window_size(&master, ws);
    }
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY | rustix::pty::OpenptFlags::CLOEXEC,
    )?;
    Ok((master, slave, n))
}

/// Send one descriptor over a unix socket.
pub fn send_fd(sock: impl AsFd, fd: impl AsFd) -> io::Result<()> {
    let fds = [fd.as_fd().as_raw_fd()];
    let iov = [IoSlice::new(b"m")];
    socket::sendmsg::<()>(
        sock.as_fd().as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Receive one descriptor from a unix socket (without blocking when `wait` is false).
pub fn recv_fd(sock: impl AsFd, wait: bool) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let flags =
        if wait { MsgFlags::MSG_CMSG_CLOEXEC } else { MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT };
    let msg = socket::recvmsg::<()>(sock.as_fd().as_raw_fd(), &mut iov, Some(&mut space), flags)?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                return super::owned_fd(fd as libc::c_long);
            }
        }
    }
    Err(io::Error::other("no descriptor received"))
}
