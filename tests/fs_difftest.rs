//! Differential test: random sequences of file operations (as root and as an unprivileged uid) run on a
//! kernel overlayfs mount and on a rimg mount over identical copies of the same lower layers. Every
//! result (return value or errno, contents, stat fields other than ino/dev/times), the final merged
//! trees and the resulting upper directories must match.
//!
//! The kernel mount uses this kernel's defaults (redirect_dir and metacopy off), rimg the same settings.
//! Intended deviations that are filtered: the kernel's bookkeeping xattrs (trusted.overlay.origin/impure),
//! inode and device numbers, timestamps, directory sizes.
//!
//! CI runs a fixed seed and a modest number of cases; `RIMG_DIFFTEST_CASES=N RIMG_DIFFTEST_SEED=S` run
//! longer (see benches/fs/difftest-long.sh).

mod common;

use std::ffi::CString;
use std::path::{Path, PathBuf};

use common::fs::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

const POOL: &[&str] = &[
    "file1",
    "dir1",
    "dir1/f2",
    "dir1/f4",
    "dir1/sub",
    "dir1/sub/f3",
    "dir2",
    "dir2/g",
    "userdir",
    "userdir/uf",
    "userdir/n5",
    "rootonly",
    "rootonly/secret",
    "sticky",
    "sticky/rootfile",
    "sticky/n6",
    "opaque_dir",
    "opaque_dir/new",
    "opaque_dir/old",
    "hidden_by_wh",
    "sym",
    "fifo",
    "sgid",
    "sgid/n7",
    "ro_file",
    "n1",
    "n2",
    "dir1/n3",
    "newdir",
    "newdir/n4",
];

const MODES: &[u32] = &[0o644, 0o600, 0o755, 0o700, 0o777, 0o4755, 0o2755, 0o1777, 0o000, 0o444];

#[derive(Clone, Debug)]
enum Op {
    Create(&'static str, u32),
    Mkdir(&'static str, u32),
    Write(&'static str, u16, u8),
    Append(&'static str, u8),
    Truncate(&'static str, u16),
    OpenTrunc(&'static str),
    Read(&'static str),
    Chmod(&'static str, u32),
    Chown(&'static str, u32, u32),
    Link(&'static str, &'static str),
    Symlink(&'static str, &'static str),
    Rename(&'static str, &'static str),
    Unlink(&'static str),
    Rmdir(&'static str),
    Mkfifo(&'static str),
    MknodNull(&'static str),
    /// mknod of a 0/0 character device: a whiteout in overlay format, which the kernel refuses.
    MknodWhiteout(&'static str),
    SetXattr(&'static str, bool, u8),
    GetXattr(&'static str, bool),
    RemoveXattr(&'static str, bool),
    ListXattr(&'static str),
    Stat(&'static str),
    Readdir(&'static str),
    Readlink(&'static str),
    Utime(&'static str, u32),
    /// O_TMPFILE in a directory, `len` bytes written, then linked (the /proc/self/fd way) as a name.
    Tmpfile(&'static str, &'static str, u32, u8),
}

fn path() -> impl Strategy<Value = &'static str> {
    prop::sample::select(POOL)
}

fn mode() -> impl Strategy<Value = u32> {
    prop::sample::select(MODES)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (path(), mode()).prop_map(|(p, m)| Op::Create(p, m)),
        (path(), mode()).prop_map(|(p, m)| Op::Mkdir(p, m)),
        (path(), any::<u16>(), any::<u8>()).prop_map(|(p, o, l)| Op::Write(p, o % 9000, l)),
        (path(), any::<u8>()).prop_map(|(p, l)| Op::Append(p, l)),
        (path(), any::<u16>()).prop_map(|(p, l)| Op::Truncate(p, l % 9000)),
        path().prop_map(Op::OpenTrunc),
        path().prop_map(Op::Read),
        (path(), mode()).prop_map(|(p, m)| Op::Chmod(p, m)),
        (
            path(),
            prop::sample::select(&[0u32, 1000, 1001][..]),
            prop::sample::select(&[0u32, 1000, 2000][..])
        )
            .prop_map(|(p, u, g)| Op::Chown(p, u, g)),
        (path(), path()).prop_map(|(a, b)| Op::Link(a, b)),
        (path(), path()).prop_map(|(a, b)| Op::Symlink(a, b)),
        (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
        (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
        path().prop_map(Op::Unlink),
        path().prop_map(Op::Rmdir),
        path().prop_map(Op::Mkfifo),
        path().prop_map(Op::MknodNull),
        path().prop_map(Op::MknodWhiteout),
        (path(), any::<bool>(), any::<u8>()).prop_map(|(p, t, v)| Op::SetXattr(p, t, v)),
        (path(), any::<bool>()).prop_map(|(p, t)| Op::GetXattr(p, t)),
        (path(), any::<bool>()).prop_map(|(p, t)| Op::RemoveXattr(p, t)),
        path().prop_map(Op::ListXattr),
        path().prop_map(Op::Stat),
        path().prop_map(Op::Readdir),
        path().prop_map(Op::Readlink),
        (path(), any::<u32>()).prop_map(|(p, t)| Op::Utime(p, t)),
        (path(), path(), mode(), any::<u8>()).prop_map(|(d, p, m, l)| Op::Tmpfile(d, p, m, l)),
    ]
}

fn errno() -> String {
    format!("E{}", std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

fn c(root: &Path, p: &str) -> CString {
    cpath(&root.join(p))
}

fn xname(trusted: bool) -> CString {
    CString::new(if trusted { "trusted.k" } else { "user.k" }).expect("name")
}

fn stat_str(root: &Path, p: &str) -> String {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and buffer.
    if unsafe { libc::lstat(c(root, p).as_ptr(), &mut st) } != 0 {
        return errno();
    }
    let fmt = st.st_mode & libc::S_IFMT;
    let size = if fmt == libc::S_IFREG || fmt == libc::S_IFLNK { st.st_size } else { -1 };
    format!(
        "mode={:o} uid={} gid={} size={} nlink={} rdev={}",
        st.st_mode, st.st_uid, st.st_gid, size, st.st_nlink, st.st_rdev
    )
}

/// Run one operation under `root`; the result as a comparable string.
fn run(root: &Path, op: &Op) -> String {
    let fl = libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY (whole function): plain system calls on NUL-terminated paths and owned buffers.
    unsafe {
        let r: i64 = match op {
            Op::Create(p, m) => {
                let fd =
                    libc::open(c(root, p).as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | fl, *m);
                if fd >= 0 {
                    libc::close(fd);
                }
                fd as i64
            }
            Op::Mkdir(p, m) => libc::mkdir(c(root, p).as_ptr(), *m) as i64,
            Op::Write(p, off, len) => return write_op(root, p, false, *off as i64, *len),
            Op::Append(p, len) => return write_op(root, p, true, 0, *len),
            Op::Truncate(p, l) => libc::truncate(c(root, p).as_ptr(), *l as i64) as i64,
            Op::OpenTrunc(p) => {
                let fd = libc::open(c(root, p).as_ptr(), libc::O_WRONLY | libc::O_TRUNC | fl);
                if fd >= 0 {
                    libc::close(fd);
                }
                fd.min(0) as i64
            }
            Op::Read(p) => {
                let fd = libc::open(c(root, p).as_ptr(), libc::O_RDONLY | fl);
                if fd < 0 {
                    return errno();
                }
                let mut buf = vec![0u8; 65536];
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                let res =
                    if n < 0 { errno() } else { String::from_utf8_lossy(&buf[..n as usize]).into_owned() };
                libc::close(fd);
                return res;
            }
            Op::Chmod(p, m) => libc::chmod(c(root, p).as_ptr(), *m) as i64,
            Op::Chown(p, u, g) => libc::lchown(c(root, p).as_ptr(), *u, *g) as i64,
            Op::Link(a, b) => libc::link(c(root, a).as_ptr(), c(root, b).as_ptr()) as i64,
            Op::Tmpfile(d, p, m, len) => {
                let fd =
                    libc::open(c(root, d).as_ptr(), libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC, *m);
                if fd < 0 {
                    return format!("open {}", errno());
                }
                let data = vec![b't'; *len as usize];
                let n = libc::write(fd, data.as_ptr().cast(), data.len());
                let wrote = if n < 0 { errno() } else { n.to_string() };
                let from = CString::new(format!("/proc/self/fd/{fd}")).expect("path");
                let r = libc::linkat(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    c(root, p).as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                );
                let linked = if r < 0 { errno() } else { "0".into() };
                libc::close(fd);
                return format!("wrote {wrote} link {linked}");
            }
            Op::Symlink(t, p) => {
                let t = CString::new(*t).expect("target");
                libc::symlink(t.as_ptr(), c(root, p).as_ptr()) as i64
            }
            Op::Rename(a, b) => libc::rename(c(root, a).as_ptr(), c(root, b).as_ptr()) as i64,
            Op::Unlink(p) => libc::unlink(c(root, p).as_ptr()) as i64,
            Op::Rmdir(p) => libc::rmdir(c(root, p).as_ptr()) as i64,
            Op::Mkfifo(p) => libc::mkfifo(c(root, p).as_ptr(), 0o640) as i64,
            Op::MknodNull(p) => {
                libc::mknod(c(root, p).as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) as i64
            }
            Op::MknodWhiteout(p) => libc::mknod(c(root, p).as_ptr(), libc::S_IFCHR | 0o644, 0) as i64,
            Op::SetXattr(p, t, v) => {
                let val = format!("v{v}");
                libc::lsetxattr(c(root, p).as_ptr(), xname(*t).as_ptr(), val.as_ptr().cast(), val.len(), 0)
                    as i64
            }
            Op::GetXattr(p, t) => {
                let mut buf = vec![0u8; 256];
                let n = libc::lgetxattr(
                    c(root, p).as_ptr(),
                    xname(*t).as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                );
                if n < 0 {
                    return errno();
                }
                return String::from_utf8_lossy(&buf[..n as usize]).into_owned();
            }
            Op::RemoveXattr(p, t) => libc::lremovexattr(c(root, p).as_ptr(), xname(*t).as_ptr()) as i64,
            Op::ListXattr(p) => {
                let mut buf = vec![0u8; 4096];
                let n = libc::llistxattr(c(root, p).as_ptr(), buf.as_mut_ptr().cast(), buf.len());
                if n < 0 {
                    return errno();
                }
                let mut names: Vec<String> = buf[..n as usize]
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .filter(|s| !kernel_private_xattr(s))
                    .collect();
                names.sort();
                return names.join(",");
            }
            Op::Stat(p) => return stat_str(root, p),
            Op::Readdir(p) => {
                return match std::fs::read_dir(root.join(p)) {
                    Ok(rd) => {
                        let mut v: Vec<String> = rd
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect();
                        v.sort();
                        v.join(",")
                    }
                    Err(e) => format!("E{}", e.raw_os_error().unwrap_or(0)),
                }
            }
            Op::Readlink(p) => {
                return match std::fs::read_link(root.join(p)) {
                    Ok(t) => t.display().to_string(),
                    Err(e) => format!("E{}", e.raw_os_error().unwrap_or(0)),
                }
            }
            Op::Utime(p, t) => {
                let ts = [
                    libc::timespec { tv_sec: *t as i64, tv_nsec: 0 },
                    libc::timespec { tv_sec: *t as i64 / 2, tv_nsec: 500 },
                ];
                let r = libc::utimensat(
                    libc::AT_FDCWD,
                    c(root, p).as_ptr(),
                    ts.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                );
                if r != 0 {
                    return errno();
                }
                let mut st: libc::stat = std::mem::zeroed();
                libc::lstat(c(root, p).as_ptr(), &mut st);
                return format!("{} {} {} {}", st.st_atime, st.st_atime_nsec, st.st_mtime, st.st_mtime_nsec);
            }
        };
        if r < 0 {
            errno()
        } else {
            "ok".into()
        }
    }
}

fn write_op(root: &Path, p: &str, append: bool, off: i64, len: u8) -> String {
    let flags = libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | if append { libc::O_APPEND } else { 0 };
    // SAFETY: plain system calls on a NUL-terminated path and an owned buffer.
    unsafe {
        let fd = libc::open(c(root, p).as_ptr(), flags);
        if fd < 0 {
            return errno();
        }
        let data: Vec<u8> = (0..len as usize).map(|i| b'a' + (i % 26) as u8).collect();
        let n = if append {
            libc::write(fd, data.as_ptr().cast(), data.len())
        } else {
            libc::pwrite(fd, data.as_ptr().cast(), data.len(), off)
        };
        let res = if n < 0 { errno() } else { format!("{n}") };
        libc::close(fd);
        res
    }
}

struct Side {
    l1: PathBuf,
    l2: PathBuf,
    u: PathBuf,
    w: PathBuf,
    m: PathBuf,
}

fn side(s: &Scratch, name: &str) -> Side {
    let side = Side {
        l1: s.path(&format!("{name}/l1")),
        l2: s.path(&format!("{name}/l2")),
        u: s.path(&format!("{name}/u")),
        w: s.path(&format!("{name}/w")),
        m: s.path(&format!("{name}/m")),
    };
    build_lowers(&side.l1, &side.l2);
    side
}

fn one_case(ops: &[(Op, bool)]) -> Result<(), TestCaseError> {
    one_case_with(ops, "", &kernel_like_options())
}

/// Compare with the kernel mounted with `kernel_opts` and rimg with `opts`.
fn one_case_with(
    ops: &[(Op, bool)],
    kernel_opts: &str,
    opts: &rimg::fs::MountOptions,
) -> Result<(), TestCaseError> {
    let full = kernel_opts.is_empty();
    // SAFETY: umask is process-wide and both mounts see the same one.
    unsafe { libc::umask(0o022) };
    let s = Scratch::new();
    let k = side(&s, "k");
    let r = side(&s, "r");
    let lowers_k = vec![k.l1.clone(), k.l2.clone()];
    let lowers_r = vec![r.l1.clone(), r.l2.clone()];
    let km = kernel_mount(&lowers_k, Some((&k.u, &k.w)), &k.m, kernel_opts)
        .map_err(|e| TestCaseError::fail(format!("kernel mount: {e}")))?;
    let rm = rimg_mount(&lowers_r, Some((&r.u, &r.w)), &r.m, opts);
    for (i, (op, user)) in ops.iter().enumerate() {
        let (kr, rr) = if *user {
            (as_user(USER.0, USER.1, || run(&k.m, op)), as_user(USER.0, USER.1, || run(&r.m, op)))
        } else {
            (run(&k.m, op), run(&r.m, op))
        };
        if kr != rr {
            return Err(TestCaseError::fail(format!(
                "step {i} {op:?} (user={user}): kernel={kr:?} rimg={rr:?}\nsequence: {ops:?}"
            )));
        }
    }
    let ks = snapshot(&k.m, &|n| kernel_private_xattr(n), true);
    let rs = snapshot(&r.m, &|n| kernel_private_xattr(n), true);
    if let Some(d) = diff(&ks, &rs) {
        return Err(TestCaseError::fail(format!(
            "merged trees differ (kernel vs rimg): {d}\nsequence: {ops:?}"
        )));
    }
    drop(rm);
    drop(km);
    if !full {
        // with metacopy/redirect the kernel decides case by case (origin handles, relative redirects)
        // how to write the upper layer; the merged views above must still agree
        return Ok(());
    }
    let ku = snapshot(&k.u, &|n| kernel_private_xattr(n), true);
    let ru = snapshot(&r.u, &|n| kernel_private_xattr(n), true);
    if let Some(d) = diff(&ku, &ru) {
        return Err(TestCaseError::fail(format!(
            "upper dirs differ (kernel vs rimg): {d}\nsequence: {ops:?}"
        )));
    }
    Ok(())
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn kernel_overlayfs_and_rimg_agree_on_random_operation_sequences() {
    let cases = env_num("RIMG_DIFFTEST_CASES", 40) as u32;
    let seed = env_num("RIMG_DIFFTEST_SEED", 0x5eed);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 200, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let strat = prop::collection::vec((op(), prop::bool::weighted(0.3)), 1..30);
    if let Err(e) = runner.run(&strat, |ops| one_case(&ops)) {
        panic!("{e}");
    }
}

#[test]
fn with_redirect_dir_and_metacopy_the_merged_views_agree() {
    let cases = env_num("RIMG_DIFFTEST_CASES", 24) as u32;
    let seed = env_num("RIMG_DIFFTEST_SEED", 0x5eed) ^ 0xabcdef;
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 200, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let strat = prop::collection::vec((op(), prop::bool::weighted(0.3)), 1..30);
    let opts = rimg::fs::MountOptions { threads: 2, ..rimg::fs::MountOptions::default() };
    if let Err(e) = runner.run(&strat, |ops| one_case_with(&ops, "redirect_dir=on,metacopy=on", &opts)) {
        panic!("{e}");
    }
}

#[test]
fn through_the_writeback_cache_the_results_agree() {
    // passthrough off: regular-file I/O goes through the page cache with the FUSE writeback cache, so
    // the kernel keeps sizes and times while it holds dirty pages and sends writes back later
    let cases = env_num("RIMG_DIFFTEST_CASES", 16) as u32;
    let seed = env_num("RIMG_DIFFTEST_SEED", 0x5eed) ^ 0x3b3b;
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 200, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let strat = prop::collection::vec((op(), prop::bool::weighted(0.3)), 1..30);
    let opts = rimg::fs::MountOptions { passthrough: false, ..kernel_like_options() };
    assert!(opts.writeback);
    if let Err(e) = runner.run(&strat, |ops| one_case_with(&ops, "", &opts)) {
        panic!("{e}");
    }
}

#[test]
fn through_io_uring_the_results_agree() {
    // requests through the per-CPU rings instead of /dev/fuse (tests/fs_uring.rs checks they are used)
    let _uring = UringEnabled::enable();
    let cases = env_num("RIMG_DIFFTEST_CASES", 16) as u32;
    let seed = env_num("RIMG_DIFFTEST_SEED", 0x5eed) ^ 0x1071;
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 200, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    let strat = prop::collection::vec((op(), prop::bool::weighted(0.3)), 1..30);
    let opts = rimg::fs::MountOptions { uring: true, ..kernel_like_options() };
    if let Err(e) = runner.run(&strat, |ops| one_case_with(&ops, "", &opts)) {
        panic!("{e}");
    }
}

#[test]
fn fixed_sequences_agree() {
    use Op::*;
    let seqs: Vec<Vec<(Op, bool)>> = vec![
        vec![(Unlink("file1"), false), (Create("file1", 0o600), false), (Stat("file1"), false)],
        vec![
            (Rmdir("dir2"), false),
            (Unlink("dir2/g"), false),
            (Rmdir("dir2"), false),
            (Mkdir("dir2", 0o750), false),
            (Readdir("dir2"), false),
        ],
        vec![(Rename("dir1/f2", "n1"), false), (Readdir("dir1"), false), (Rename("n1", "dir1/f4"), false)],
        vec![(Rename("dir1", "newdir"), false), (Rename("dir2", "newdir"), false)],
        vec![(Chown("userdir/uf", 1001, 2000), false), (Write("userdir/uf", 3, 10), true)],
        vec![
            (Create("sticky/n6", 0o644), true),
            (Unlink("sticky/rootfile"), true),
            (Unlink("sticky/n6"), true),
        ],
        vec![(Create("sgid/n7", 0o644), true), (Mkdir("sgid/n7", 0o755), false), (Stat("sgid/n7"), false)],
        vec![
            (Link("file1", "n2"), false),
            (Append("n2", 5), false),
            (Read("file1"), false),
            (Stat("file1"), false),
        ],
        vec![
            (SetXattr("dir1", false, 3), false),
            (ListXattr("dir1"), false),
            (RemoveXattr("file1", false), false),
        ],
        vec![(Read("rootonly/secret"), true), (Readdir("rootonly"), true), (Write("ro_file", 0, 3), true)],
        vec![
            (Rmdir("opaque_dir"), false),
            (Unlink("opaque_dir/new"), false),
            (Rmdir("opaque_dir"), false),
            (Mkdir("opaque_dir", 0o755), false),
        ],
        vec![
            (Chmod("fifo", 0o600), false),
            (MknodNull("n1"), false),
            (Write("n1", 0, 4), true),
            (Symlink("x/y", "dir1/n3"), true),
        ],
        vec![
            (MknodWhiteout("n1"), false),
            (MknodWhiteout("dir1/n3"), false),
            (MknodWhiteout("userdir/n5"), true),
            (MknodWhiteout("file1"), false),
            (Readdir("dir1"), false),
            (Stat("n1"), false),
        ],
    ];
    for s in seqs {
        if let Err(e) = one_case(&s) {
            panic!("{e}");
        }
    }
}
