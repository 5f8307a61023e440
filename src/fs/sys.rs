//! Thin, errno-returning wrappers over the `*at` system calls the overlay needs.
//!
//! Every operation on a layer is made relative to a directory file descriptor the filesystem holds, with
//! `AT_SYMLINK_NOFOLLOW`/`O_NOFOLLOW`, so a symlink planted in a layer can never redirect the server (which
//! runs as root) outside the layer. Errors are raw errno values because they go straight back to the kernel.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// A raw errno value, as returned to the FUSE kernel module.
pub type Errno = i32;
/// Result of a system call wrapper.
pub type SysResult<T> = Result<T, Errno>;

fn last() -> Errno {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn check(ret: libc::c_int) -> SysResult<()> {
    if ret < 0 {
        Err(last())
    } else {
        Ok(())
    }
}

/// A name as a C string; names with interior NULs cannot exist on Linux, so they are EINVAL.
pub fn cstr(name: &OsStr) -> SysResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| libc::EINVAL)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dir` itself.
pub fn stat_at(dir: RawFd, name: &OsStr) -> SysResult<libc::stat> {
    let c = cstr(name)?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: valid C string and a zeroed stat buffer of the right type.
    check(unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// `fstat(fd)`.
pub fn fstat(fd: RawFd) -> SysResult<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a zeroed stat buffer of the right type.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// `openat(dir, name, flags | O_CLOEXEC | O_NOFOLLOW, mode)`.
pub fn open_at(dir: RawFd, name: &OsStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid C string; the returned fd is owned by the OwnedFd.
    let fd = unsafe {
        libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW, mode as libc::c_uint)
    };
    if fd < 0 {
        return Err(last());
    }
    // SAFETY: fd was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open a directory below `dir` for reading (also usable as a `*at` anchor and for f*xattr).
pub fn open_dir_at(dir: RawFd, name: &OsStr) -> SysResult<OwnedFd> {
    let n = if name.is_empty() { OsStr::new(".") } else { name };
    open_at(dir, n, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Open a path relative to `root` that must not traverse symlinks nor leave `root` (openat2
/// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), as a directory.
pub fn open_dir_beneath(root: RawFd, path: &OsStr) -> SysResult<OwnedFd> {
    const RESOLVE_NO_SYMLINKS: u64 = 0x04;
    const RESOLVE_BENEATH: u64 = 0x08;
    openat2(root, path, libc::O_RDONLY | libc::O_DIRECTORY, RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)
}

/// Open `path` as if `root` were `/` (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): absolute
/// symlinks and `..` resolve inside `root` and can never name anything outside it, the way a chroot at
/// `root` would see the tree. A final symlink is followed (inside `root`) unless `flags` has
/// `O_NOFOLLOW`. This is how docker/BuildKit scope COPY sources to the build context or a stage's rootfs.
pub fn open_in_root(root: RawFd, path: &OsStr, flags: i32) -> SysResult<OwnedFd> {
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_IN_ROOT: u64 = 0x10;
    openat2(root, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
}

/// `openat2(2)` of `path` (a leading `/` dropped; empty = `.`) relative to `root` with `resolve` flags.
fn openat2(root: RawFd, path: &OsStr, flags: i32, resolve: u64) -> SysResult<OwnedFd> {
    let rel = path.as_bytes().strip_prefix(b"/").unwrap_or(path.as_bytes());
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    let c = CString::new(rel).map_err(|_| libc::EINVAL)?;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: 0, resolve };
    let mut raced = 0;
    loop {
        // SAFETY: openat2 with a valid path and a correctly laid out open_how of the given size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root,
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: fd was just returned by openat2.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        // EAGAIN: a concurrent rename raced a scoped `..` (the kernel refuses rather than risk an escape);
        // retried a bounded number of times, so a tree renamed without pause cannot keep us spinning.
        match last() {
            libc::EINTR => continue,
            libc::EAGAIN if raced < 64 => raced += 1,
            e => return Err(e),
        }
    }
}

/// The `/proc/self/fd/N` path of a descriptor: the kernel resolves it to exactly the file `fd` pins.
fn fd_proc_path(fd: RawFd) -> CString {
    // A decimal number has no NUL byte.
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

/// A new open file description, with `flags`, of the file that `fd` pins (typically an `O_PATH`
/// descriptor): the reopen goes through `/proc/self/fd/N`, so it is the same inode whatever has been
/// renamed or replaced since, and it is never a symlink (reopening one fails with ELOOP).
pub fn reopen(fd: RawFd, flags: i32) -> SysResult<OwnedFd> {
    let path = fd_proc_path(fd);
    loop {
        // SAFETY: valid C string; the returned fd is owned by the OwnedFd.
        let r = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
        if r >= 0 {
            // SAFETY: r was just returned by open and is not owned elsewhere.
            return Ok(unsafe { OwnedFd::from_raw_fd(r) });
        }
        match last() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Names of the xattrs (NUL-separated) of the file `fd` pins, for any file type: through
/// `/proc/self/fd/N`, whose magic link lands on the pinned inode itself, so for an `O_PATH|O_NOFOLLOW`
/// descriptor of a symlink these are the symlink's own xattrs, and a device is never opened.
pub fn list_xattr_pinned(fd: RawFd) -> SysResult<Vec<u8>> {
    let path = fd_proc_path(fd);
    // SAFETY: buffer pointer/length pairs come from xattr_buf.
    xattr_buf(|p, l| unsafe { libc::listxattr(path.as_ptr(), p.cast(), l) })
}

/// Value of xattr `attr` of the file `fd` pins (see [`list_xattr_pinned`]).
pub fn get_xattr_pinned(fd: RawFd, attr: &CStr) -> SysResult<Vec<u8>> {
    let path = fd_proc_path(fd);
    // SAFETY: buffer pointer/length pairs come from xattr_buf.
    xattr_buf(|p, l| unsafe { libc::getxattr(path.as_ptr(), attr.as_ptr(), p, l) })
}

/// `mkdirat`.
pub fn mkdir_at(dir: RawFd, name: &OsStr, mode: u32) -> SysResult<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode as libc::mode_t) })
}

/// `mknodat` (mode includes the file type bits).
pub fn mknod_at(dir: RawFd, name: &OsStr, mode: u32, rdev: u64) -> SysResult<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) })
}

/// Create an overlayfs whiteout (a 0/0 character device) at `dir/name`.
pub fn whiteout_at(dir: RawFd, name: &OsStr) -> SysResult<()> {
    mknod_at(dir, name, libc::S_IFCHR, 0)
}

/// `symlinkat(target, dir, name)`.
pub fn symlink_at(target: &OsStr, dir: RawFd, name: &OsStr) -> SysResult<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) })
}

/// `linkat(odir, oname, ndir, nname, 0)` (never follows a symlink source).
pub fn link_at(odir: RawFd, oname: &OsStr, ndir: RawFd, nname: &OsStr) -> SysResult<()> {
    let o = cstr(oname)?;
    let n = cstr(nname)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::linkat(odir, o.as_ptr(), ndir, n.as_ptr(), 0) })
}

/// `unlinkat` (flags 0 or AT_REMOVEDIR).
pub fn unlink_at(dir: RawFd, name: &OsStr, flags: i32) -> SysResult<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) })
}

/// `renameat2` with RENAME_* flags.
pub fn rename_at(odir: RawFd, oname: &OsStr, ndir: RawFd, nname: &OsStr, flags: u32) -> SysResult<()> {
    let o = cstr(oname)?;
    let n = cstr(nname)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::renameat2(odir, o.as_ptr(), ndir, n.as_ptr(), flags) })
}

/// `readlinkat`.
pub fn readlink_at(dir: RawFd, name: &OsStr) -> SysResult<OsString> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buffer of the given length.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(last());
    }
    buf.truncate(n as usize);
    Ok(OsString::from_vec(buf))
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`; `u32::MAX` leaves an id unchanged.
pub fn chown_at(dir: RawFd, name: &OsStr, uid: u32, gid: u32) -> SysResult<()> {
    let c = cstr(name)?;
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: valid C string.
    check(unsafe { libc::fchownat(dir, c.as_ptr(), uid, gid, flags) })
}

/// `fchmodat(dir, name, mode)` for anything but a symlink (whose mode Linux cannot change).
pub fn chmod_at(dir: RawFd, name: &OsStr, mode: u32) -> SysResult<()> {
    if name.is_empty() {
        return fchmod(dir, mode);
    }
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::fchmodat(dir, c.as_ptr(), mode as libc::mode_t, 0) })
}

/// `fchmod(fd, mode)`.
pub fn fchmod(fd: RawFd, mode: u32) -> SysResult<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fchmod(fd, mode as libc::mode_t) })
}

/// `fchown(fd, uid, gid)`.
pub fn fchown(fd: RawFd, uid: u32, gid: u32) -> SysResult<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fchown(fd, uid, gid) })
}

/// `utimensat(dir, name, times, AT_SYMLINK_NOFOLLOW)`.
pub fn utimens_at(dir: RawFd, name: &OsStr, times: &[libc::timespec; 2]) -> SysResult<()> {
    let c = cstr(name)?;
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe { libc::utimensat(dir, c.as_ptr(), times.as_ptr(), flags) })
}

/// `ftruncate`.
pub fn ftruncate(fd: RawFd, size: u64) -> SysResult<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::ftruncate(fd, size as libc::off_t) })
}

/// `fsync`/`fdatasync`.
pub fn fsync(fd: RawFd, datasync: bool) -> SysResult<()> {
    // SAFETY: plain syscalls.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    })
}

/// Copy `len` bytes from `src` to `dst` (both from offset 0) with copy_file_range (reflink where the
/// filesystem can), falling back to read/write across filesystems.
pub fn copy_data(src: RawFd, dst: RawFd, len: u64) -> SysResult<()> {
    let mut off_in: libc::loff_t = 0;
    let mut off_out: libc::loff_t = 0;
    let mut left = len;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        // SAFETY: offsets are valid pointers to loff_t.
        let n = unsafe { libc::copy_file_range(src, &mut off_in, dst, &mut off_out, chunk, 0) };
        if n < 0 {
            let e = last();
            if matches!(e, libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) {
                return copy_rw(src, dst, off_in as u64, left);
            }
            return Err(e);
        }
        if n == 0 {
            break; // source shrank
        }
        left -= n as u64;
    }
    Ok(())
}

fn copy_rw(src: RawFd, dst: RawFd, mut off: u64, mut left: u64) -> SysResult<()> {
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = pread(src, &mut buf[..want], off)?;
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n {
            done += pwrite(dst, &buf[done..n], off + done as u64)?;
        }
        off += n as u64;
        left -= n as u64;
    }
    Ok(())
}

/// `pread`.
pub fn pread(fd: RawFd, buf: &mut [u8], off: u64) -> SysResult<usize> {
    // SAFETY: buffer of the given length.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) };
    if n < 0 {
        Err(last())
    } else {
        Ok(n as usize)
    }
}

/// `pwrite`.
pub fn pwrite(fd: RawFd, buf: &[u8], off: u64) -> SysResult<usize> {
    // SAFETY: buffer of the given length.
    let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off as libc::off_t) };
    if n < 0 {
        Err(last())
    } else {
        Ok(n as usize)
    }
}

/// Path through /proc that names `name` inside the directory `dir` without following a final symlink
/// when used with the `l*xattr` calls (the directory fd itself pins the parent).
fn proc_path(dir: RawFd, name: &OsStr) -> SysResult<CString> {
    let mut p = format!("/proc/self/fd/{dir}").into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name.as_bytes());
    }
    CString::new(p).map_err(|_| libc::EINVAL)
}

fn xattr_buf(mut call: impl FnMut(*mut libc::c_void, usize) -> isize) -> SysResult<Vec<u8>> {
    loop {
        let n = call(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(last());
        }
        let mut buf = vec![0u8; n as usize];
        if n == 0 {
            return Ok(buf);
        }
        let m = call(buf.as_mut_ptr().cast(), buf.len());
        if m < 0 {
            let e = last();
            if e == libc::ERANGE {
                continue; // grew in between
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf);
    }
}

/// Value of xattr `attr` of `dir/name` (of `dir` itself for an empty name), not following symlinks.
pub fn get_xattr(dir: RawFd, name: &OsStr, attr: &CStr) -> SysResult<Vec<u8>> {
    if name.is_empty() {
        // SAFETY: buffer pointer/length pairs come from xattr_buf.
        return xattr_buf(|p, l| unsafe { libc::fgetxattr(dir, attr.as_ptr(), p, l) });
    }
    let path = proc_path(dir, name)?;
    // SAFETY: buffer pointer/length pairs come from xattr_buf.
    xattr_buf(|p, l| unsafe { libc::lgetxattr(path.as_ptr(), attr.as_ptr(), p, l) })
}

/// Names of the xattrs of `dir/name` (NUL-separated), not following symlinks.
pub fn list_xattr(dir: RawFd, name: &OsStr) -> SysResult<Vec<u8>> {
    if name.is_empty() {
        // SAFETY: buffer pointer/length pairs come from xattr_buf.
        return xattr_buf(|p, l| unsafe { libc::flistxattr(dir, p.cast(), l) });
    }
    let path = proc_path(dir, name)?;
    // SAFETY: buffer pointer/length pairs come from xattr_buf.
    xattr_buf(|p, l| unsafe { libc::llistxattr(path.as_ptr(), p.cast(), l) })
}

/// Set xattr `attr` on `dir/name`, not following symlinks.
pub fn set_xattr(dir: RawFd, name: &OsStr, attr: &CStr, value: &[u8], flags: i32) -> SysResult<()> {
    if name.is_empty() {
        // SAFETY: value slice pointer and length.
        return check(unsafe {
            libc::fsetxattr(dir, attr.as_ptr(), value.as_ptr().cast(), value.len(), flags)
        });
    }
    let path = proc_path(dir, name)?;
    // SAFETY: value slice pointer and length.
    check(unsafe { libc::lsetxattr(path.as_ptr(), attr.as_ptr(), value.as_ptr().cast(), value.len(), flags) })
}

/// Remove xattr `attr` from `dir/name`, not following symlinks.
pub fn remove_xattr(dir: RawFd, name: &OsStr, attr: &CStr) -> SysResult<()> {
    if name.is_empty() {
        // SAFETY: valid C string.
        return check(unsafe { libc::fremovexattr(dir, attr.as_ptr()) });
    }
    let path = proc_path(dir, name)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(path.as_ptr(), attr.as_ptr()) })
}

/// One entry of a raw directory listing.
pub struct RawEntry {
    /// Entry name (never `.` or `..`).
    pub name: OsString,
    /// Inode number in the layer's filesystem.
    pub ino: u64,
    /// `d_type` (DT_*).
    pub dtype: u8,
}

/// List a directory (without `.`/`..`) through a fresh descriptor so the shared one keeps no offset.
pub fn list_dir(dir: RawFd) -> SysResult<Vec<RawEntry>> {
    let fd = open_at(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    thread_local! {
        // one buffer per server thread, zeroed once: a tree walk lists every directory it enters
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 64 * 1024]);
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => read_entries(fd.as_raw_fd(), &mut buf),
        Err(_) => read_entries(fd.as_raw_fd(), &mut vec![0u8; 64 * 1024]),
    })
}

fn read_entries(fd: RawFd, buf: &mut [u8]) -> SysResult<Vec<RawEntry>> {
    let mut out = Vec::new();
    loop {
        // SAFETY: getdents64 into a buffer of the given length.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(last());
        }
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off < n as usize {
            // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name[]
            let rec = &buf[off..];
            let ino = u64::from_ne_bytes(rec.get(0..8).and_then(|b| b.try_into().ok()).ok_or(libc::EIO)?);
            let reclen = u16::from_ne_bytes(rec.get(16..18).and_then(|b| b.try_into().ok()).ok_or(libc::EIO)?)
                as usize;
            if reclen < 20 || reclen > rec.len() {
                return Err(libc::EIO);
            }
            let dtype = rec[18];
            let name_bytes = &rec[19..reclen];
            let end = name_bytes.iter().position(|&b| b == 0).unwrap_or(name_bytes.len());
            let name = &name_bytes[..end];
            if name != b"." && name != b".." {
                out.push(RawEntry { name: OsString::from_vec(name.to_vec()), ino, dtype });
            }
            off += reclen;
        }
    }
    Ok(out)
}

/// `fstatvfs`.
pub fn statvfs(fd: RawFd) -> SysResult<libc::statvfs> {
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: zeroed statvfs buffer.
    check(unsafe { libc::fstatvfs(fd, &mut st) })?;
    Ok(st)
}

/// `fallocate`.
pub fn fallocate(fd: RawFd, mode: i32, off: u64, len: u64) -> SysResult<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fallocate(fd, mode, off as libc::off_t, len as libc::off_t) })
}

/// `lseek`.
pub fn lseek(fd: RawFd, off: i64, whence: i32) -> SysResult<i64> {
    // SAFETY: plain syscall.
    let r = unsafe { libc::lseek(fd, off as libc::off_t, whence) };
    if r < 0 {
        Err(last())
    } else {
        Ok(r as i64)
    }
}

/// Is this stat a whiteout (a character device with device number 0/0)?
pub fn is_whiteout(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Raise the soft `RLIMIT_NOFILE` to the hard one (never above it: raising the hard limit needs
/// CAP_SYS_RESOURCE); returns the soft limit now in force.
///
/// The server keeps a descriptor open for every directory the kernel knows, so the soft limit (often
/// 1024) caps the directories a walk can enter: past it, lookups fail with EMFILE. The hard limit is
/// what the administrator allows; what it leaves out still fails.
pub fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }).ok()?;
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit with a soft limit no higher than the hard one.
        if check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) }).is_ok() {
            return Some(want.rlim_cur);
        }
    }
    Some(lim.rlim_cur)
}

/// Descriptor-table slots the server reserves up front (see [`reserve_fd_table`]): 32 KiB of kernel
/// memory, enough for the directories of a full distribution rootfs (a Debian one has ~820).
pub const FD_TABLE_RESERVE: u64 = 4096;

/// Grow this process's descriptor table to `slots` slots (the caller keeps it within the soft
/// `RLIMIT_NOFILE`), if the process is still single-threaded; otherwise do nothing.
///
/// The server keeps a descriptor open for every directory the kernel knows, so a tree walk grows the table
/// through 64, 128, … 1024 slots. In a multi-threaded process each growth waits for an RCU grace period
/// (`expand_fdtable` → `synchronize_rcu`) while the request that opened the descriptor waits too: 8–17 ms
/// each on a 2-vCPU VM, about half of a first `find` over a Debian rootfs. A single-threaded process grows
/// it without that wait, and the table never shrinks, so this runs before the server threads start.
pub fn reserve_fd_table(slots: u64) {
    let single_threaded = std::fs::read_to_string("/proc/self/stat").ok().is_some_and(|stat| {
        // fields after the command name (which may hold spaces): state is field 3, num_threads field 20
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(17)) == Some("1")
    });
    if !single_threaded || slots < 128 {
        return;
    }
    let Ok(probe) = open_at(libc::AT_FDCWD, OsStr::new("/"), libc::O_PATH | libc::O_CLOEXEC, 0) else {
        return;
    };
    // SAFETY: F_DUPFD_CLOEXEC takes the lowest free descriptor >= the argument (below the limit).
    let fd = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_DUPFD_CLOEXEC, (slots - 1) as libc::c_int) };
    if fd >= 0 {
        // SAFETY: fd was just returned by fcntl and is owned here.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}
