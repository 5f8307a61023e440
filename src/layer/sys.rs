//! Thin, fd-relative wrappers over the syscalls layer application needs.
//!
//! Everything apply writes goes through a directory fd plus a single path component, never a joined
//! path string: that is what keeps a hostile tar from steering a write through a symlink. These
//! wrappers exist so the unsafe FFI is in one small, reviewed place.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Copy `bytes` into `buf` as a NUL-terminated C string; an interior NUL is an invalid name.
pub fn cstr<'b>(buf: &'b mut Vec<u8>, bytes: &[u8]) -> io::Result<&'b CStr> {
    buf.clear();
    buf.extend_from_slice(bytes);
    buf.push(0);
    CStr::from_bytes_with_nul(buf)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

/// A path as a C string (for the few path-based calls: trees rimg itself owns).
pub fn path_cstr(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

/// `openat(2)`.
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: valid fd and NUL-terminated name; the returned fd is owned by us.
        let fd = unsafe {
            libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint)
        };
        if fd >= 0 {
            // SAFETY: fd was just returned by openat and is not owned elsewhere.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Open a directory (a path rimg trusts, like the layer root) as an fd.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = path_cstr(path)?;
    // SAFETY: NUL-terminated path; returned fd is owned by us.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdirat(2)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// `mknodat(2)`.
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) }).map(drop)
}

/// `symlinkat(2)`: create `name` in `dir` pointing at `target` (never followed by rimg).
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fd and C strings.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `linkat(2)` without `AT_SYMLINK_FOLLOW`: a hard link to a symlink links the symlink, as tar does.
pub fn linkat(odir: BorrowedFd<'_>, oname: &CStr, ndir: BorrowedFd<'_>, nname: &CStr) -> io::Result<()> {
    // SAFETY: valid fds and C strings.
    cvt(unsafe { libc::linkat(odir.as_raw_fd(), oname.as_ptr(), ndir.as_raw_fd(), nname.as_ptr(), 0) })
        .map(drop)
}

/// `unlinkat(2)`; `dir` = `AT_REMOVEDIR`.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW` (an `lstat` relative to `dir`).
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd, C string and out-pointer; initialised on success.
    cvt(unsafe {
        libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    })?;
    // SAFETY: fstatat succeeded.
    Ok(unsafe { st.assume_init() })
}

/// `fchownat(2)` with `AT_SYMLINK_NOFOLLOW` (works on symlinks and device nodes without opening them).
pub fn lchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

/// `fchmodat(2)` (never on a symlink: Linux has no symlink modes).
pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

/// `fchown(2)`.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// `fchmod(2)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// Build a timespec pair (atime, mtime) from seconds and nanoseconds.
pub fn times(sec: i64, nsec: u32) -> [libc::timespec; 2] {
    let t = libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as libc::c_long };
    [t, t]
}

/// `futimens(2)`.
pub fn futimens(fd: BorrowedFd<'_>, ts: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: valid fd and a two-element array.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

/// `utimensat(2)` with `AT_SYMLINK_NOFOLLOW` (sets a symlink's own times).
pub fn lutimensat(dir: BorrowedFd<'_>, name: &CStr, ts: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: valid fd, C string and a two-element array.
    cvt(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

/// `fsetxattr(2)`.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid fd, C string, and a value pointer/length pair.
    cvt(unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
        .map(drop)
}

/// `lsetxattr(2)` on `name` inside `dir`, for entries that must not be opened (symlinks, device nodes):
/// the directory is reached through `/proc/self/fd`, which the kernel resolves to exactly that fd, and
/// the last component is not followed.
pub fn lsetxattrat(dir: BorrowedFd<'_>, name: &[u8], xname: &CStr, value: &[u8]) -> io::Result<()> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    let c =
        std::ffi::CString::new(p).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: C strings and value pointer/length pair.
    cvt(unsafe { libc::lsetxattr(c.as_ptr(), xname.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
        .map(drop)
}

/// All xattrs of `path` (not following a final symlink), as (name, value) pairs, sorted by name.
pub fn lxattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = path_cstr(path)?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: C string and buffer pointer/length pair.
        let r = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        match cvt_size(r) {
            Ok(n) => break n,
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        match lgetxattr(path, name)? {
            Some(v) => out.push((name.to_vec(), v)),
            None => continue,
        }
    }
    out.sort();
    Ok(out)
}

/// One xattr of `path` (not following a final symlink); `None` if absent.
pub fn lgetxattr(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let c = path_cstr(path)?;
    let mut nb = Vec::new();
    let xn = cstr(&mut nb, name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: C strings and buffer pointer/length pair.
        let r = unsafe { libc::lgetxattr(c.as_ptr(), xn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match cvt_size(r) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                if buf.len() >= 1 << 20 {
                    return Err(e);
                }
                buf.resize(buf.len() * 4, 0)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA) | Some(libc::ENOTSUP)) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Copy all data of `src` to `dst` (both at offset 0, `dst` empty) with `copy_file_range`, which
/// reflinks or copies in the kernel; falls back to read/write where the kernel refuses.
pub fn copy_data(src: RawFd, dst: RawFd, len: u64) -> io::Result<u64> {
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(1 << 30) as usize;
        // SAFETY: valid fds; null offsets use and advance the file positions.
        let r =
            unsafe { libc::copy_file_range(src, std::ptr::null_mut(), dst, std::ptr::null_mut(), want, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EXDEV) | Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
                    return copy_rw(src, dst).map(|n| done + n)
                }
                _ => return Err(e),
            }
        }
        if r == 0 {
            break;
        }
        done += r as u64;
    }
    Ok(done)
}

fn copy_rw(src: RawFd, dst: RawFd) -> io::Result<u64> {
    use std::io::{Read, Write};
    use std::mem::ManuallyDrop;
    // SAFETY: borrowed fds wrapped without taking ownership (ManuallyDrop: never closed here).
    let mut s = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(src) });
    // SAFETY: as above.
    let mut d = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(dst) });
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match s.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        d.write_all(&buf[..k])?;
        n += k as u64;
    }
}

/// `makedev(3)`.
pub fn makedev(major: u32, minor: u32) -> libc::dev_t {
    libc::makedev(major, minor)
}

/// Is this stat an overlayfs whiteout (a 0/0 character device)?
pub fn is_whiteout(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// A byte-string file name as an `OsStr`.
pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}
