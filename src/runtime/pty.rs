//! Container terminals. The pty is allocated from the container's own devpts instance (so `tty`, `ps` and
//! ttyname() inside see `/dev/pts/0`, as with docker) and its master is handed back to rimg over a unix
//! socket with SCM_RIGHTS.

use super::RuntimeError;
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn err(what: &str) -> RuntimeError {
    RuntimeError::Setup(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// A connected socket pair for passing the master descriptor.
pub fn channel() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    socket::socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| RuntimeError::Setup(format!("socketpair: {e}")))
}

/// Open a new pty from the `ptmx` descriptor's devpts instance, sized `winsize`: (master, slave, index).
pub fn open_pair(
    ptmx: RawFd,
    winsize: Option<libc::winsize>,
) -> Result<(OwnedFd, OwnedFd, u32), RuntimeError> {
    let path = format!("/proc/self/fd/{ptmx}\0");
    // SAFETY: reopen the O_PATH ptmx descriptor for I/O through its magic link.
    let m = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if m < 0 {
        return Err(err("open ptmx"));
    }
    // SAFETY: fresh descriptor we own.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: pty ioctls on the master with valid pointers.
    unsafe {
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(err("unlock pty"));
        }
        if libc::ioctl(m, libc::TIOCGPTN, &mut n) != 0 {
            return Err(err("pty number"));
        }
        if let Some(ws) = winsize {
            libc::ioctl(m, libc::TIOCSWINSZ, &ws);
        }
    }
    // SAFETY: TIOCGPTPEER opens the slave of this master without a path lookup.
    let s = unsafe { libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if s < 0 {
        return Err(err("open pty slave"));
    }
    // SAFETY: fresh descriptor we own.
    Ok((master, unsafe { OwnedFd::from_raw_fd(s) }, n))
}

/// Send one descriptor over the channel.
pub fn send_fd(sock: &OwnedFd, fd: &OwnedFd) -> Result<(), RuntimeError> {
    let fds = [fd.as_raw_fd()];
    let iov = [IoSlice::new(b"m")];
    socket::sendmsg::<()>(sock.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .map(|_| ())
        .map_err(|e| RuntimeError::Setup(format!("send terminal: {e}")))
}

/// Receive one descriptor from the channel (without blocking when `wait` is false).
pub fn recv_fd(sock: &OwnedFd, wait: bool) -> Result<OwnedFd, RuntimeError> {
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let flags =
        if wait { MsgFlags::MSG_CMSG_CLOEXEC } else { MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT };
    let msg = socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags)
        .map_err(|e| RuntimeError::Setup(format!("receive terminal: {e}")))?;
    for c in msg.cmsgs().map_err(|e| RuntimeError::Setup(format!("receive terminal: {e}")))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(RuntimeError::Setup("receive terminal: no descriptor".into()))
}

/// Apply rimg's own terminal size (if any) to a container terminal.
pub fn copy_size(master: &OwnedFd) {
    if let Some(ws) = super::attach::terminal_size() {
        // SAFETY: TIOCSWINSZ with a valid winsize.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}
