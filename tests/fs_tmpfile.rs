//! `O_TMPFILE` on the overlay, checked against kernel overlayfs doing the same over identical lowers:
//! an unnamed file shows `st_nlink` 0 and no name anywhere, `linkat` gives it one (also over a
//! whiteout and in a directory still in a lower layer), `O_EXCL` makes it unlinkable, a file closed
//! without a name leaves nothing behind, and creation runs with the caller's permissions and ids.

mod common;

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::fs::*;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// open(dir, O_TMPFILE | flags, mode): the fd or the errno.
fn tmpfile(dir: &Path, flags: i32, mode: u32) -> Result<OwnedFd, i32> {
    let c = cpath(dir);
    // SAFETY: plain syscall on a NUL-terminated path; the fd is owned on success.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | flags, mode) };
    if fd < 0 {
        Err(errno())
    } else {
        // SAFETY: a fresh fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Give the open unnamed file `fd` the name `to` (the /proc/self/fd way, which needs no capability).
fn link_fd(fd: &OwnedFd, to: &Path) -> i32 {
    let from = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("path");
    let to = cpath(to);
    // SAFETY: plain syscall on NUL-terminated paths.
    let r = unsafe {
        libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW)
    };
    if r == 0 {
        0
    } else {
        errno()
    }
}

fn fstat(fd: &OwnedFd) -> libc::stat {
    // SAFETY: zeroed stat filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
    st
}

fn write_fd(fd: &OwnedFd, data: &[u8]) {
    // SAFETY: valid fd and buffer.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize);
}

/// What a user sees doing O_TMPFILE things on a mount.
fn scenario(m: &Path) -> Vec<String> {
    let mut seen = Vec::new();
    // an unnamed file in a directory that exists only in a lower layer
    let fd = tmpfile(&m.join("dir1"), libc::O_RDWR, 0o640).expect("O_TMPFILE");
    write_fd(&fd, b"hello");
    let st = fstat(&fd);
    seen.push(format!("unnamed: nlink {} mode {:o} size {}", st.st_nlink, st.st_mode & 0o7777, st.st_size));
    seen.push(format!("dir1 while unnamed: {:?}", names(&m.join("dir1"))));
    seen.push(format!("link: {}", link_fd(&fd, &m.join("dir1/named"))));
    let st = fstat(&fd);
    seen.push(format!("named: nlink {} size {}", st.st_nlink, st.st_size));
    seen.push(format!("content: {:?}", std::fs::read_to_string(m.join("dir1/named")).ok()));
    seen.push(format!("second link: {}", link_fd(&fd, &m.join("dir1/again"))));
    seen.push(format!("nlink after second: {}", fstat(&fd).st_nlink));
    drop(fd);
    // over a whiteout: a lower file deleted, then an unnamed file linked in its place
    std::fs::remove_file(m.join("dir1/f2")).expect("rm f2");
    let fd = tmpfile(m, libc::O_WRONLY, 0o600).expect("O_TMPFILE");
    write_fd(&fd, b"replacement");
    seen.push(format!("link over whiteout: {}", link_fd(&fd, &m.join("dir1/f2"))));
    seen.push(format!("f2: {:?}", std::fs::read_to_string(m.join("dir1/f2")).ok()));
    drop(fd);
    // a name that exists
    let fd = tmpfile(m, libc::O_RDWR, 0o600).expect("O_TMPFILE");
    seen.push(format!("link onto existing: {}", link_fd(&fd, &m.join("file1"))));
    drop(fd);
    // O_EXCL: never linkable
    let fd = tmpfile(m, libc::O_RDWR | libc::O_EXCL, 0o600).expect("O_TMPFILE|O_EXCL");
    seen.push(format!("link of O_EXCL: {}", link_fd(&fd, &m.join("excl"))));
    drop(fd);
    // closed without a name: nothing anywhere
    let fd = tmpfile(&m.join("dir2"), libc::O_RDWR, 0o600).expect("O_TMPFILE");
    write_fd(&fd, b"scratch");
    drop(fd);
    seen.push(format!("dir2 after: {:?}", names(&m.join("dir2"))));
    // a directory needs O_TMPFILE with write access; non-directories refuse it
    seen.push(format!("on a file: {:?}", tmpfile(&m.join("file1"), libc::O_RDWR, 0o600).err()));
    seen.push(format!("read-only open: {:?}", tmpfile(m, libc::O_RDONLY, 0o600).err()));
    // as an unprivileged user: permissions of the directory, the caller's ids
    let user = as_user(USER.0, USER.1, || {
        let denied = tmpfile(&m.join("rootonly"), libc::O_RDWR, 0o600).err();
        let fd = tmpfile(&m.join("userdir"), libc::O_RDWR, 0o644).expect("user O_TMPFILE");
        let st = fstat(&fd);
        let linked = link_fd(&fd, &m.join("userdir/mine"));
        (denied, st.st_uid, st.st_gid, linked)
    });
    seen.push(format!("user: {user:?}"));
    let md = std::fs::metadata(m.join("userdir/mine")).expect("mine");
    seen.push(format!("mine: {} {} {:o}", md.uid(), md.gid(), md.mode() & 0o7777));
    seen
}

#[test]
fn o_tmpfile_behaves_as_on_kernel_overlayfs() {
    let s = Scratch::new();
    let mut seen = Vec::new();
    let mut uppers = Vec::new();
    for which in ["kernel", "rimg"] {
        let (l1, l2) = (s.path(&format!("{which}-l1")), s.path(&format!("{which}-l2")));
        build_lowers(&l1, &l2);
        let (u, w, m) =
            (s.path(&format!("{which}-u")), s.path(&format!("{which}-w")), s.path(&format!("{which}-m")));
        let lowers = vec![l1, l2];
        if which == "kernel" {
            let _k = kernel_mount(&lowers, Some((&u, &w)), &m, "").expect("kernel overlayfs");
            seen.push(scenario(&m));
        } else {
            let _r = rimg_mount(&lowers, Some((&u, &w)), &m, &kernel_like_options());
            seen.push(scenario(&m));
        }
        // (the kernel keeps a shared whiteout there; rimg must leave nothing)
        if which == "rimg" {
            assert!(names(&w.join("work")).is_empty(), "work dir left with {:?}", names(&w.join("work")));
        }
        uppers.push(snapshot(&u, &|x| kernel_private_xattr(x), false));
    }
    assert_eq!(seen[0], seen[1], "kernel overlayfs (left) vs rimg (right)");
    if let Some(d) = diff(&uppers[0], &uppers[1]) {
        panic!("upper directories differ: {d}");
    }
    // concrete values, so that two equal mistakes cannot pass
    let r = &seen[1];
    assert_eq!(r[0], "unnamed: nlink 0 mode 640 size 5");
    assert_eq!(r[1], "dir1 while unnamed: [\"f2\", \"f4\", \"sub\"]");
    assert_eq!(r[2], "link: 0");
    assert_eq!(r[3], "named: nlink 1 size 5");
    assert_eq!(r[4], "content: Some(\"hello\")");
    assert_eq!(r[8], "f2: Some(\"replacement\")");
    assert_eq!(r[9], format!("link onto existing: {}", libc::EEXIST));
    assert_eq!(r[10], format!("link of O_EXCL: {}", libc::ENOENT));
    assert_eq!(r[11], "dir2 after: [\"g\"]");
    assert_eq!(r[14], format!("user: (Some({}), 1000, 1000, 0)", libc::EACCES));
}
