//! One test per overlay semantics bullet, on real rimg mounts (and kernel overlayfs mounts where the
//! point is that the kernel reads what rimg wrote).

mod common;

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::fs::*;
use rimg::fs::MountOptions;

struct Fixture {
    s: Scratch,
    lowers: Vec<PathBuf>,
    u: PathBuf,
    w: PathBuf,
    m: PathBuf,
}

fn fixture() -> Fixture {
    let s = Scratch::new();
    let (l1, l2) = (s.path("l1"), s.path("l2"));
    build_lowers(&l1, &l2);
    let (u, w, m) = (s.path("u"), s.path("w"), s.path("m"));
    Fixture { lowers: vec![l1, l2], u, w, m, s }
}

fn mount(f: &Fixture, opts: &MountOptions) -> rimg::fs::OverlayMount {
    rimg_mount(&f.lowers, Some((&f.u, &f.w)), &f.m, opts)
}

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn lookup_whiteouts_opaque_and_merged_readdir() {
    let f = fixture();
    // AUFS-style and rootless markers in a third layer
    let l3 = f.s.path("l3");
    std::fs::create_dir_all(l3.join("dir2")).unwrap();
    write(&l3.join("dir2/from_l3"), "x");
    write(&l3.join("aufs_hidden"), "x");
    let l4 = f.s.path("l4");
    std::fs::create_dir_all(l4.join("udir")).unwrap();
    write(&l4.join("udir/below"), "x");
    std::fs::create_dir_all(l3.join("udir")).unwrap();
    set_xattr(&l3.join("udir"), "user.overlay.opaque", b"y");
    write(&l3.join("udir/above"), "x");
    let l0 = f.s.path("l0");
    write(&l0.join(".wh.aufs_hidden"), "");
    let lowers = vec![l0, f.lowers[0].clone(), f.lowers[1].clone(), l3, l4];
    let _m = rimg_mount(&lowers, Some((&f.u, &f.w)), &f.m, &MountOptions::default());
    let m = &f.m;
    assert_eq!(std::fs::read_to_string(m.join("file1")).unwrap(), "l1 file1\n", "top layer wins");
    assert!(!m.join("hidden_by_wh").exists(), "0/0 whiteout hides the lower file");
    assert!(!m.join("aufs_hidden").exists(), ".wh. file hides the lower file");
    assert_eq!(names(&m.join("opaque_dir")), vec!["new"], "opaque dir hides lower content");
    assert_eq!(names(&m.join("udir")), vec!["above"], "user.overlay.opaque honoured");
    assert_eq!(names(&m.join("dir1")), vec!["f2", "f4", "sub"], "merged without duplicates");
    assert_eq!(names(&m.join("dir2")), vec!["from_l3", "g"]);
    let root = names(m);
    assert!(!root.iter().any(|n| n.starts_with(".wh.")), "no whiteout markers listed: {root:?}");
    // . and .., and a listing that is stable across seeks
    let c = cpath(&m.join("dir1"));
    // SAFETY: opendir/readdir/telldir/seekdir on a valid directory stream.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null());
        let mut first = Vec::new();
        let mut positions = Vec::new();
        loop {
            let pos = libc::telldir(d);
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            positions.push(pos);
            first.push(std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_string_lossy().into_owned());
        }
        assert!(first.contains(&".".to_string()) && first.contains(&"..".to_string()));
        libc::seekdir(d, positions[2]);
        let e = libc::readdir(d);
        assert_eq!(std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_string_lossy(), first[2]);
        libc::closedir(d);
    }
    // st_nlink: merged directories report 1 (as kernel overlayfs does), pure ones the real count
    assert_eq!(std::fs::metadata(m.join("dir1")).unwrap().nlink(), 1);
    assert_eq!(std::fs::metadata(m.join("dir1/sub")).unwrap().nlink(), 2);
}

#[test]
fn copy_up_keeps_owner_mode_times_xattrs() {
    let f = fixture();
    let l1 = &f.lowers[0];
    chown(&l1.join("file1"), 1234, 4321);
    chmod(&l1.join("file1"), 0o4751);
    let t = nix::sys::time::TimeSpec::new(1_000_000, 5);
    nix::sys::stat::utimensat(
        None,
        &l1.join("file1"),
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let opts = MountOptions { metacopy: false, ..MountOptions::default() };
    let _m = mount(&f, &opts);
    // setxattr forces a copy-up of the file and of its parents
    set_xattr(&f.m.join("dir1/sub/f3"), "user.new", b"1");
    let up = std::fs::symlink_metadata(f.u.join("dir1/sub")).unwrap();
    assert!(up.is_dir(), "parents copied up first");
    assert_eq!(get_xattr(&f.u.join("dir1/sub/f3"), "user.new").as_deref(), Some(&b"1"[..]));
    // a read-write open copies up data and metadata
    let mut fh = std::fs::OpenOptions::new().read(true).write(true).open(f.m.join("file1")).unwrap();
    let mut s = String::new();
    fh.read_to_string(&mut s).unwrap();
    assert_eq!(s, "l1 file1\n");
    drop(fh);
    let md = std::fs::symlink_metadata(f.u.join("file1")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (1234, 4321, 0o4751));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000, 5));
    assert_eq!(get_xattr(&f.u.join("file1"), "user.origin").as_deref(), Some(&b"l1"[..]));
    assert_eq!(get_xattr(&f.u.join("file1"), "trusted.note").as_deref(), Some(&b"t"[..]));
    assert_eq!(std::fs::read_to_string(f.u.join("file1")).unwrap(), "l1 file1\n");
    // O_APPEND and O_TRUNC
    let mut a = std::fs::OpenOptions::new().append(true).open(f.m.join("dir2/g")).unwrap();
    a.write_all(b"more\n").unwrap();
    drop(a);
    assert_eq!(std::fs::read_to_string(f.m.join("dir2/g")).unwrap(), "g\nmore\n");
    std::fs::write(f.m.join("dir1/f2"), "new").unwrap();
    assert_eq!(std::fs::read_to_string(f.m.join("dir1/f2")).unwrap(), "new");
    assert_eq!(
        std::fs::read_to_string(f.lowers[1].join("dir1/f2")).unwrap(),
        "lower2 f2\n",
        "lower untouched"
    );
    // fsync and fallocate
    let fh = std::fs::OpenOptions::new().write(true).open(f.m.join("dir1/f2")).unwrap();
    fh.sync_all().unwrap();
    nix::fcntl::fallocate(
        std::os::fd::AsRawFd::as_raw_fd(&fh),
        nix::fcntl::FallocateFlags::empty(),
        0,
        1 << 20,
    )
    .unwrap();
    assert_eq!(fh.metadata().unwrap().len(), 1 << 20);
}

#[test]
fn unlink_rmdir_leave_whiteouts_and_mkdir_makes_opaque() {
    let f = fixture();
    let _m = mount(&f, &MountOptions::default());
    let m = &f.m;
    std::fs::remove_file(m.join("dir1/f2")).unwrap();
    std::fs::remove_dir_all(m.join("dir2")).unwrap();
    assert!(!m.join("dir2").exists());
    let wh = std::fs::symlink_metadata(f.u.join("dir2")).unwrap();
    assert_eq!((wh.mode() & libc::S_IFMT, wh.rdev()), (libc::S_IFCHR, 0), "dir2 whiteout");
    let wh = std::fs::symlink_metadata(f.u.join("dir1/f2")).unwrap();
    assert_eq!((wh.mode() & libc::S_IFMT, wh.rdev()), (libc::S_IFCHR, 0), "f2 whiteout");
    std::fs::create_dir(m.join("dir2")).unwrap();
    assert!(names(&m.join("dir2")).is_empty(), "new dir over a whiteout is empty");
    assert_eq!(get_xattr(&f.u.join("dir2"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(errno_of(std::fs::remove_dir(m.join("dir1"))), libc::ENOTEMPTY);
    // hardlinks, symlinks, fifos, sockets, device nodes, xattrs
    std::fs::hard_link(m.join("file1"), m.join("hl")).unwrap();
    assert_eq!(
        std::fs::metadata(m.join("hl")).unwrap().ino(),
        std::fs::metadata(m.join("file1")).unwrap().ino()
    );
    assert_eq!(std::fs::metadata(m.join("hl")).unwrap().nlink(), 2);
    std::os::unix::fs::symlink("dir1/f4", m.join("sl")).unwrap();
    assert_eq!(std::fs::read_to_string(m.join("sl")).unwrap(), "lower1 f4\n");
    nix::unistd::mkfifo(&m.join("ff"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(m.join("sock")).unwrap();
    nix::sys::stat::mknod(
        &m.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        libc::makedev(1, 3),
    )
    .unwrap();
    std::fs::write(m.join("null"), "discarded").unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(m.join("ff")).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata(m.join("sock")).unwrap().file_type().is_socket());
    assert_eq!(std::fs::symlink_metadata(m.join("null")).unwrap().rdev(), libc::makedev(1, 3));
    for x in ["user.a", "trusted.b", "security.c"] {
        set_xattr(&m.join("dir1/f4"), x, b"v");
        assert_eq!(get_xattr(&m.join("dir1/f4"), x).as_deref(), Some(&b"v"[..]), "{x}");
    }
    assert!(get_xattr(&m.join("opaque_dir"), "trusted.overlay.opaque").is_none(), "private xattrs hidden");
}

#[test]
fn whiteouts_are_links_to_one_shared_inode_like_the_kernel() {
    // kernel overlayfs hard-links every whiteout to one inode in its work directory, so deleting a
    // lower file allocates none; rimg does the same (an inode per whiteout made each deletion scan
    // ext4's recently freed inodes)
    let mut seen = Vec::new();
    for which in ["kernel", "rimg"] {
        let f = fixture();
        let _k;
        let _r;
        if which == "kernel" {
            _k = kernel_mount(&f.lowers, Some((&f.u, &f.w)), &f.m, "").expect("kernel overlayfs");
        } else {
            _r = mount(&f, &MountOptions::default());
        }
        let m = &f.m;
        std::fs::remove_file(m.join("file1")).unwrap();
        std::fs::remove_file(m.join("dir1/f2")).unwrap();
        std::fs::remove_dir_all(m.join("dir2")).unwrap();
        std::fs::write(m.join("dir1/f4"), "copied up").unwrap();
        std::fs::remove_file(m.join("dir1/f4")).unwrap();
        let mut inodes = Vec::new();
        for n in ["file1", "dir1/f2", "dir2", "dir1/f4"] {
            let st = std::fs::symlink_metadata(f.u.join(n)).unwrap();
            assert_eq!((st.mode() & libc::S_IFMT, st.rdev()), (libc::S_IFCHR, 0), "{which}: {n} whiteout");
            inodes.push(st.ino());
        }
        for n in ["file1", "dir1/f2", "dir2", "dir1/f4"] {
            assert!(!m.join(n).exists(), "{which}: {n} deleted");
        }
        inodes.dedup();
        seen.push((inodes.len(), std::fs::symlink_metadata(f.u.join("file1")).unwrap().nlink() >= 4));
    }
    assert_eq!(seen, vec![(1, true), (1, true)], "one shared whiteout inode (kernel, rimg)");
}

#[test]
fn a_shared_whiteout_at_the_link_limit_is_replaced_by_a_new_one() {
    let f = fixture();
    let _m = mount(&f, &MountOptions::default());
    std::fs::remove_file(f.m.join("file1")).unwrap();
    // fill the shared whiteout (the one entry of the work directory) up to the filesystem's limit
    let work = f.w.join("work");
    let shared = std::fs::read_dir(&work).unwrap().next().expect("shared whiteout").unwrap().path();
    let mut links = 0;
    let full = loop {
        match std::fs::hard_link(&shared, work.join(format!("fill{links}"))) {
            Ok(()) => links += 1,
            Err(e) if e.raw_os_error() == Some(libc::EMLINK) => break true,
            Err(e) => panic!("link: {e}"),
        }
        if links > 70_000 {
            break false;
        }
    };
    if !full {
        eprintln!("the upper filesystem has no link limit: nothing to test");
        return;
    }
    std::fs::remove_file(f.m.join("dir1/f2")).unwrap();
    std::fs::remove_file(f.m.join("dir1/f4")).unwrap();
    assert!(!f.m.join("dir1/f2").exists() && !f.m.join("dir1/f4").exists());
    let st = |n: &str| std::fs::symlink_metadata(f.u.join(n)).unwrap();
    for n in ["file1", "dir1/f2", "dir1/f4"] {
        assert_eq!((st(n).mode() & libc::S_IFMT, st(n).rdev()), (libc::S_IFCHR, 0), "{n} whiteout");
    }
    assert_ne!(st("file1").ino(), st("dir1/f2").ino(), "a new shared whiteout once the first is full");
    assert_eq!(st("dir1/f2").ino(), st("dir1/f4").ino(), "which the next whiteouts share");
}

/// mknod(`p`, S_IFCHR | 0644, 0/0) as the caller: 0 or the errno.
fn mknod_whiteout_as_caller(p: &Path) -> i32 {
    let c = cpath(p);
    // SAFETY: a plain system call on a NUL-terminated path.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, 0) } == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

#[test]
fn mknod_of_a_whiteout_device_is_refused_like_the_kernel() {
    // a 0/0 character device is a whiteout in the upper layer: made through the mount, the new name
    // would vanish at once and commit as a deletion. Kernel overlayfs refuses it with EPERM, for root
    // and for an unprivileged caller alike (the VFS lets anyone make a whiteout device).
    for which in ["kernel", "rimg"] {
        let f = fixture();
        let _k;
        let _r;
        if which == "kernel" {
            _k = kernel_mount(&f.lowers, Some((&f.u, &f.w)), &f.m, "").expect("kernel overlayfs");
        } else {
            _r = mount(&f, &MountOptions::default());
        }
        let m = &f.m;
        assert_eq!(mknod_whiteout_as_caller(&m.join("wh")), libc::EPERM, "{which}: new name");
        assert_eq!(mknod_whiteout_as_caller(&m.join("dir1/wh")), libc::EPERM, "{which}: in a lower dir");
        let user = as_user(USER.0, USER.1, || mknod_whiteout_as_caller(&m.join("userdir/wh")));
        assert_eq!(user, libc::EPERM, "{which}: unprivileged caller");
        assert_eq!(mknod_whiteout_as_caller(&m.join("file1")), libc::EEXIST, "{which}: existing name");
        // other devices are still made
        let null = cpath(&m.join("null"));
        // SAFETY: a plain system call on a NUL-terminated path.
        assert_eq!(unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) }, 0);
        for n in ["wh", "dir1/wh", "userdir/wh"] {
            assert!(
                std::fs::symlink_metadata(f.u.join(n)).is_err(),
                "{which}: nothing of {n} in the upper layer"
            );
        }
        assert!(names(m).contains(&"null".to_string()), "{which}");
    }
}

#[test]
fn rename_of_lower_directory_uses_redirect_and_kernel_reads_it() {
    let f = fixture();
    {
        let _m = mount(&f, &MountOptions::default());
        std::fs::rename(f.m.join("dir1"), f.m.join("dir2/moved")).unwrap();
        assert!(!f.m.join("dir1").exists());
        assert_eq!(names(&f.m.join("dir2/moved")), vec!["f2", "f4", "sub"]);
        assert_eq!(std::fs::read_to_string(f.m.join("dir2/moved/sub/f3")).unwrap(), "lower2 f3\n");
        std::fs::rename(f.m.join("file1"), f.m.join("dir2/moved/file1")).unwrap();
    }
    assert_eq!(
        get_xattr(&f.u.join("dir2/moved"), "trusted.overlay.redirect").as_deref(),
        Some(&b"/dir1"[..])
    );
    // the kernel, with redirect_dir=on, sees the same tree in what rimg wrote
    let km = f.s.path("km");
    let _k = kernel_mount(&f.lowers, Some((&f.u, &f.w)), &km, "redirect_dir=on").expect("kernel mount");
    assert!(!km.join("dir1").exists());
    assert_eq!(names(&km.join("dir2/moved")), vec!["f2", "f4", "file1", "sub"]);
    assert_eq!(std::fs::read_to_string(km.join("dir2/moved/sub/f3")).unwrap(), "lower2 f3\n");
}

#[test]
fn chmod_of_big_lower_file_is_metadata_only() {
    let f = fixture();
    let big = f.lowers[1].join("big");
    let fh = std::fs::File::create(&big).unwrap();
    fh.set_len(1 << 30).unwrap();
    fh.write_all_at(b"tail", (1 << 30) - 4).unwrap();
    drop(fh);
    {
        let _m = mount(&f, &MountOptions::default());
        std::fs::set_permissions(f.m.join("big"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let up = std::fs::metadata(f.u.join("big")).unwrap();
        assert_eq!(up.blocks(), 0, "no data copied");
        assert_eq!(up.len(), 1 << 30);
        assert!(get_xattr(&f.u.join("big"), "trusted.overlay.metacopy").is_some());
        let mut b = [0u8; 4];
        std::fs::File::open(f.m.join("big")).unwrap().read_exact_at(&mut b, (1 << 30) - 4).unwrap();
        assert_eq!(&b, b"tail", "data still read from the lower layer");
        assert_eq!(std::fs::metadata(f.m.join("big")).unwrap().mode() & 0o777, 0o600);
    }
    let km = f.s.path("km");
    let _k = kernel_mount(&f.lowers, Some((&f.u, &f.w)), &km, "metacopy=on,redirect_dir=on")
        .expect("kernel mount");
    let mut b = [0u8; 4];
    std::fs::File::open(km.join("big")).unwrap().read_exact_at(&mut b, (1 << 30) - 4).unwrap();
    assert_eq!(&b, b"tail", "kernel reads the metacopy file's data from the lower layer");
    assert_eq!(std::fs::metadata(km.join("big")).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn metacopy_file_gets_its_data_on_write() {
    let f = fixture();
    let _m = mount(&f, &MountOptions::default());
    std::os::unix::fs::lchown(f.m.join("dir2/g"), Some(5), Some(5)).unwrap();
    assert!(get_xattr(&f.u.join("dir2/g"), "trusted.overlay.metacopy").is_some());
    let mut fh = std::fs::OpenOptions::new().read(true).write(true).open(f.m.join("dir2/g")).unwrap();
    fh.seek(SeekFrom::End(0)).unwrap();
    fh.write_all(b"h\n").unwrap();
    drop(fh);
    assert_eq!(std::fs::read_to_string(f.m.join("dir2/g")).unwrap(), "g\nh\n");
    assert!(get_xattr(&f.u.join("dir2/g"), "trusted.overlay.metacopy").is_none());
    assert_eq!(std::fs::read_to_string(f.u.join("dir2/g")).unwrap(), "g\nh\n");
}

#[test]
fn permissions_are_enforced_for_unprivileged_callers() {
    let f = fixture();
    let _m = mount(&f, &MountOptions::default());
    let m = f.m.clone();
    as_user(USER.0, USER.1, || {
        assert_eq!(errno_of(std::fs::read(m.join("rootonly/secret"))), libc::EACCES);
        assert_eq!(errno_of(std::fs::read_dir(m.join("rootonly"))), libc::EACCES);
        assert_eq!(errno_of(std::fs::write(m.join("newfile"), "x")), libc::EACCES);
        assert_eq!(errno_of(std::fs::OpenOptions::new().write(true).open(m.join("ro_file"))), libc::EACCES);
        assert_eq!(errno_of(std::fs::remove_file(m.join("file1"))), libc::EACCES);
        assert_eq!(errno_of(std::fs::remove_file(m.join("sticky/rootfile"))), libc::EPERM);
        assert_eq!(
            errno_of(std::fs::set_permissions(
                m.join("file1"),
                std::os::unix::fs::PermissionsExt::from_mode(0o777)
            )),
            libc::EPERM
        );
        std::fs::write(m.join("userdir/mine"), "x").unwrap();
        std::fs::write(m.join("sticky/mine"), "x").unwrap();
        std::fs::write(m.join("sgid/mine"), "x").unwrap();
        std::fs::create_dir(m.join("sgid/minedir")).unwrap();
        std::fs::write(m.join("userdir/uf"), "changed").unwrap();
    });
    let md = std::fs::metadata(m.join("userdir/mine")).unwrap();
    assert_eq!((md.uid(), md.gid()), USER, "created as the caller");
    let md = std::fs::metadata(m.join("sgid/mine")).unwrap();
    assert_eq!((md.uid(), md.gid()), (USER.0, 2000), "setgid directory passes on its group");
    let md = std::fs::metadata(m.join("sgid/minedir")).unwrap();
    assert_eq!(md.gid(), 2000);
    assert!(md.mode() & libc::S_ISGID != 0, "and its setgid bit to subdirectories");
    assert_eq!(std::fs::read_to_string(m.join("userdir/uf")).unwrap(), "changed");
}

#[test]
fn files_over_4gib_and_shared_writable_mmap() {
    let f = fixture();
    let _m = mount(&f, &MountOptions::default());
    let p = f.m.join("huge");
    let fh = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&p).unwrap();
    let off = 5u64 << 30;
    fh.write_all_at(b"end", off).unwrap();
    drop(fh);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), off + 3);
    let mut b = [0u8; 3];
    std::fs::File::open(&p).unwrap().read_exact_at(&mut b, off).unwrap();
    assert_eq!(&b, b"end");
    // shared writable mapping of a lower file (copied up on the read-write open)
    let fh = std::fs::OpenOptions::new().read(true).write(true).open(f.m.join("dir1/f4")).unwrap();
    let len = fh.metadata().unwrap().len() as usize;
    // SAFETY: mapping a regular file we hold open; unmapped before the file is closed.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&fh),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        *(p as *mut u8) = b'L';
        assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
        libc::munmap(p, len);
    }
    drop(fh);
    assert_eq!(std::fs::read_to_string(f.m.join("dir1/f4")).unwrap(), "Lower1 f4\n");
    assert_eq!(std::fs::read_to_string(f.u.join("dir1/f4")).unwrap(), "Lower1 f4\n");
}

#[test]
fn inode_numbers_are_stable_for_the_life_of_the_mount() {
    let f = fixture();
    let _m = mount(&f, &MountOptions::default());
    let m = &f.m;
    let before: Vec<u64> = ["file1", "dir1", "dir1/sub/f3", "dir2/g"]
        .iter()
        .map(|p| std::fs::symlink_metadata(m.join(p)).unwrap().ino())
        .collect();
    // copy-ups of all of them
    std::fs::write(m.join("file1"), "x").unwrap();
    set_xattr(&m.join("dir1"), "user.x", b"1");
    std::fs::OpenOptions::new().append(true).open(m.join("dir1/sub/f3")).unwrap().write_all(b"y").unwrap();
    std::os::unix::fs::lchown(m.join("dir2/g"), Some(7), None).unwrap();
    // make the kernel forget its inodes
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let after: Vec<u64> = ["file1", "dir1", "dir1/sub/f3", "dir2/g"]
        .iter()
        .map(|p| std::fs::symlink_metadata(m.join(p)).unwrap().ino())
        .collect();
    assert_eq!(before, after);
    // and a rename keeps it too
    std::fs::rename(m.join("file1"), m.join("dir1/renamed")).unwrap();
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    assert_eq!(std::fs::symlink_metadata(m.join("dir1/renamed")).unwrap().ino(), before[0]);
}

#[test]
fn statfs_reports_the_upper_filesystem() {
    let f = fixture();
    let _m = mount(&f, &MountOptions::default());
    let a = nix::sys::statvfs::statvfs(&f.m).unwrap();
    let b = nix::sys::statvfs::statvfs(&f.u).unwrap();
    assert_eq!((a.blocks(), a.block_size(), a.files()), (b.blocks(), b.block_size(), b.files()));
}

#[test]
fn read_only_without_upper() {
    let f = fixture();
    let _m = rimg_mount(&f.lowers, None, &f.m, &MountOptions::default());
    assert_eq!(std::fs::read_to_string(f.m.join("file1")).unwrap(), "l1 file1\n");
    assert_eq!(errno_of(std::fs::write(f.m.join("x"), "x")), libc::EROFS);
    assert_eq!(errno_of(std::fs::remove_file(f.m.join("file1"))), libc::EROFS);
    let _ = CString::new("x");
    let _ = std::fs::OpenOptions::new().custom_flags(0);
}

#[test]
fn a_lower_file_open_for_reading_and_then_for_writing() {
    let f = fixture();
    // through the page cache (no passthrough) both opens work, as on kernel overlayfs
    {
        let _m = mount(&f, &MountOptions { passthrough: false, ..MountOptions::default() });
        let p = f.m.join("dir1/f4");
        let mut reader = std::fs::File::open(&p).unwrap();
        let mut s = String::new();
        reader.read_to_string(&mut s).unwrap();
        assert_eq!(s, "lower1 f4\n");
        let mut w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        w.write_all(b"L").unwrap();
        drop(w);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "Lower1 f4\n");
        drop(reader);
    }
    // with passthrough (one backing file per inode) the write-open is served with direct I/O while the
    // lower copy is open through passthrough (tests/fs_passthrough.rs compares it with kernel overlayfs)
    let _m = mount(&f, &MountOptions::default());
    let p = f.m.join("dir2/g");
    let reader = std::fs::File::open(&p).unwrap();
    std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"!").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "g\n!");
    drop(reader);
}

/// One getdents64 call on `fd` with a buffer of `size` bytes: the names it returned (without "." and
/// ".."), None at the end. No user-space buffering: what comes back is what the server answered now.
fn getdents(fd: &std::os::fd::OwnedFd, size: usize) -> Option<Vec<String>> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; size];
    // SAFETY: getdents64 into a buffer of the given length.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
    assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
    if n == 0 {
        return None;
    }
    let (mut off, mut out) = (0usize, Vec::new());
    while off < n as usize {
        // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name
        let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
        let name = &buf[off + 19..off + reclen];
        let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
        if name != b"." && name != b".." {
            out.push(String::from_utf8_lossy(name).into_owned());
        }
        off += reclen;
    }
    Some(out)
}

/// The names of a whole directory read through `fd` in calls of `size` bytes.
fn getdents_all(fd: &std::os::fd::OwnedFd, size: usize) -> Vec<String> {
    std::iter::from_fn(|| getdents(fd, size)).flatten().collect()
}

#[test]
fn readdir_stays_consistent_while_the_directory_changes() {
    // a merged directory big enough to take several getdents calls, read by two streams while
    // entries are removed, added and renamed through the mount: entries present all along appear
    // exactly once, and what a stream returns after a change is of the directory as it is now
    let f = fixture();
    let (low, up) = (f.lowers[1].join("big"), f.lowers[0].join("big"));
    std::fs::create_dir_all(&low).unwrap();
    std::fs::create_dir_all(&up).unwrap();
    for i in 0..3000 {
        write(&low.join(format!("lower-file-with-a-longish-name-{i}")), "");
    }
    for i in 0..50 {
        write(&up.join(format!("upper-{i}")), "");
    }
    let _m = mount(&f, &MountOptions::default());
    let big = f.m.join("big");
    let open = || std::os::fd::OwnedFd::from(std::fs::File::open(&big).unwrap());
    let (a, b) = (open(), open());
    let mut seen_a = getdents(&a, 4096).unwrap();
    let removed: Vec<String> =
        (0..3000).step_by(10).map(|i| format!("lower-file-with-a-longish-name-{i}")).collect();
    for r in &removed {
        std::fs::remove_file(big.join(r)).unwrap();
    }
    for i in 0..200 {
        write(&big.join(format!("new-{i}")), "");
    }
    let renamed: Vec<(String, String)> = (5..3000)
        .step_by(10)
        .map(|i| (format!("lower-file-with-a-longish-name-{i}"), format!("moved-{i}")))
        .collect();
    for (from, to) in &renamed {
        std::fs::rename(big.join(from), big.join(to)).unwrap();
    }
    let first = seen_a.len();
    seen_a.extend(getdents_all(&a, 4096));
    for gone in removed.iter().chain(renamed.iter().map(|(from, _)| from)) {
        assert!(!seen_a[first..].contains(gone), "{gone} returned after it went away");
    }
    let seen_b = getdents_all(&b, 4096);
    let mut now = names(&big);
    now.retain(|n| !n.is_empty());
    let mut sorted_a = seen_a.clone();
    sorted_a.sort();
    sorted_a.dedup();
    assert_eq!(sorted_a.len(), seen_a.len(), "no entry twice in a stream read across changes");
    for n in &now {
        if !n.starts_with("new-") && !n.starts_with("moved-") {
            assert!(seen_a.contains(n), "{n} present all along but missed");
        }
    }
    let mut sorted_b = seen_b;
    sorted_b.sort();
    assert_eq!(sorted_b, now, "a stream started after the changes sees the new state");
    assert_eq!(now.len(), 3000 - removed.len() + 50 + 200);
}

/// What a reader sees of a lower hard link (`a`, `b`, and `c` in a subdirectory) before and after one name
/// is written: shared `st_ino` while both are lower, a broken link after the copy-up.
fn lower_hardlink_scenario(m: &Path) -> Vec<String> {
    let st = |n: &str| std::fs::symlink_metadata(m.join(n)).expect("stat");
    let mut seen = Vec::new();
    let (a, b, c) = (st("a"), st("b"), st("d/c"));
    seen.push(format!(
        "before: a==b {} a==c {} nlink {} {} {}",
        a.ino() == b.ino(),
        a.ino() == c.ino(),
        a.nlink(),
        b.nlink(),
        c.nlink()
    ));
    let other = st("dir1");
    seen.push(format!("a!=dir1 {}", a.ino() != other.ino()));
    std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("a"))
        .expect("open a")
        .write_all(b"more\n")
        .expect("write a");
    let (a2, b2, c2) = (st("a"), st("b"), st("d/c"));
    seen.push(format!(
        "after: a==b {} b==c {} b kept {} a kept {} nlink {} {}",
        a2.ino() == b2.ino(),
        b2.ino() == c2.ino(),
        b2.ino() == b.ino(),
        a2.ino() == a.ino(),
        a2.nlink(),
        b2.nlink()
    ));
    seen.push(std::fs::read_to_string(m.join("a")).expect("read a"));
    seen.push(std::fs::read_to_string(m.join("b")).expect("read b"));
    seen
}

#[test]
fn lower_hardlinks_show_one_inode_until_copied_up_like_the_kernel() {
    let mut results = Vec::new();
    for which in ["kernel", "rimg"] {
        let f = fixture();
        let l = &f.lowers[0];
        write(&l.join("a"), "linked\n");
        std::fs::create_dir_all(l.join("d")).unwrap();
        std::fs::hard_link(l.join("a"), l.join("b")).unwrap();
        std::fs::hard_link(l.join("a"), l.join("d/c")).unwrap();
        let seen = if which == "kernel" {
            let _k = kernel_mount(&f.lowers, Some((&f.u, &f.w)), &f.m, "").expect("kernel overlayfs");
            lower_hardlink_scenario(&f.m)
        } else {
            let _r = mount(&f, &MountOptions::default());
            lower_hardlink_scenario(&f.m)
        };
        results.push(seen);
    }
    assert_eq!(results[0], results[1], "kernel overlayfs vs rimg");
    // what both must have seen, so that the comparison cannot pass on two equal mistakes
    assert_eq!(results[1][0], "before: a==b true a==c true nlink 3 3 3");
    assert!(results[1][2].starts_with("after: a==b false b==c true b kept true"), "{:?}", results[1]);
    assert_eq!(results[1][3], "linked\nmore\n");
    assert_eq!(results[1][4], "linked\n");
}
