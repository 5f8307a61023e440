//! Advisory file locks (flock) that make the cache safe when several rimg processes run at once.
//!
//! flock is released by the kernel when the holder dies, so a SIGKILLed pull never leaves a stale lock
//! behind: that property is why flock, not lock files with pids, guards the store.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A held lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Block until the exclusive lock on `path` (created if needed) is ours.
    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        Self::take(path, libc::LOCK_EX)
    }

    /// Block until a shared lock on `path` is ours (readers that must not see a writer's half-state).
    pub fn shared(path: &Path) -> io::Result<FileLock> {
        Self::take(path, libc::LOCK_SH)
    }

    /// Take the exclusive lock only if nobody holds it; `None` when busy.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        match Self::take(path, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Like [`FileLock::try_exclusive`] for a file that must exist already (`NotFound` otherwise): a
    /// collector probing whether another process still holds it must not re-create a released one.
    pub fn try_exclusive_existing(path: &Path) -> io::Result<Option<FileLock>> {
        let file = OpenOptions::new().read(true).open(path)?;
        match Self::flock(file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn take(path: &Path, op: libc::c_int) -> io::Result<FileLock> {
        let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
        Self::flock(file, op)
    }

    fn flock(file: File, op: libc::c_int) -> io::Result<FileLock> {
        loop {
            // SAFETY: flock on a valid, owned fd has no memory-safety preconditions.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(FileLock { file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// The locked file, for holders that keep a little state in it.
    pub fn file(&self) -> &File {
        &self.file
    }
}
