//! Helpers of the FUSE overlay tests (`tests/fs_*.rs`): real kernel overlayfs and rimg mounts with Drop
//! guards, per-thread credentials for unprivileged callers, layer fixtures and tree snapshots.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rimg::fs::{MountOptions, OverlayConfig, OverlayMount};

/// The fs tests wait with this (they glob-import this module).
#[allow(unused_imports)] // not every fs test waits
pub use super::wait_until;

/// Unprivileged test user.
pub const USER: (u32, u32) = (1000, 1000);

/// A kernel overlayfs mount, unmounted on drop.
pub struct KernelMount(pub PathBuf);

impl Drop for KernelMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The sorted names in a directory (what a reader of the merged view sees).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Mount kernel overlayfs.
pub fn kernel_mount(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    mnt: &Path,
    extra: &str,
) -> std::io::Result<KernelMount> {
    let l: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let mut data = format!("lowerdir={}", l.join(":"));
    if let Some((u, w)) = upper {
        data.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
    }
    if !extra.is_empty() {
        data.push(',');
        data.push_str(extra);
    }
    nix::mount::mount(
        Some("overlay"),
        mnt,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )?;
    Ok(KernelMount(mnt.to_owned()))
}

/// Options matching a kernel overlayfs mount with default options on this kernel.
pub fn kernel_like_options() -> MountOptions {
    MountOptions { redirect_dir: false, metacopy: false, threads: 2, ..MountOptions::default() }
}

/// Mount rimg's overlay in this process.
pub fn rimg_mount(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    mnt: &Path,
    opts: &MountOptions,
) -> OverlayMount {
    let cfg = OverlayConfig {
        lowers: lowers.to_vec(),
        upper: upper.map(|(u, _)| u.to_owned()),
        work: upper.map(|(_, w)| w.to_owned()),
    };
    rimg::fs::mount(cfg, mnt, opts).expect("rimg mount")
}

/// A scratch directory with `l1 l2 u w m` (+ more on demand).
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new().prefix("rimg-fs-").tempdir_in("/tmp").expect("tempdir");
        // unprivileged callers must be able to reach the mount points
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Scratch { dir }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }
}

/// Run `f` on a thread whose (and only whose) credentials are (uid, gid), as a container process would
/// be. Raw syscalls: glibc's wrappers would change every thread of the process.
pub fn as_user<T: Send>(uid: u32, gid: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: raw per-thread credential changes on this thread only.
            unsafe {
                assert_eq!(libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()), 0);
                assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
            }
            f()
        })
        .join()
        .expect("user thread")
    })
}

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path")
}

pub fn write(p: &Path, data: &str) {
    std::fs::write(p, data).expect("write");
}

pub fn mknod_whiteout(p: &Path) {
    nix::sys::stat::mknod(p, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
        .expect("whiteout");
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).expect("name");
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::lsetxattr(cpath(p).as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "setxattr {name} on {}", p.display());
}

pub fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let n = CString::new(name).expect("name");
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::lgetxattr(cpath(p).as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

pub fn list_xattrs(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::llistxattr(cpath(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r <= 0 {
        return Vec::new();
    }
    buf.truncate(r as usize);
    let mut v: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    v.sort();
    v
}

pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("chown");
}

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The two-layer fixture used by most tests: l2 (bottom) and l1 (top) in kernel overlay format.
pub fn build_lowers(l1: &Path, l2: &Path) {
    let mk = |p: &Path| std::fs::create_dir_all(p).expect("mkdir");
    // bottom layer
    mk(&l2.join("dir1/sub"));
    write(&l2.join("dir1/f2"), "lower2 f2\n");
    write(&l2.join("dir1/sub/f3"), "lower2 f3\n");
    mk(&l2.join("dir2"));
    write(&l2.join("dir2/g"), "g\n");
    write(&l2.join("file1"), "l2 file1\n");
    mk(&l2.join("userdir"));
    write(&l2.join("userdir/uf"), "user file\n");
    chown(&l2.join("userdir/uf"), USER.0, USER.1);
    chown(&l2.join("userdir"), USER.0, USER.1);
    mk(&l2.join("rootonly"));
    write(&l2.join("rootonly/secret"), "secret\n");
    chmod(&l2.join("rootonly"), 0o700);
    mk(&l2.join("sticky"));
    write(&l2.join("sticky/rootfile"), "r\n");
    chmod(&l2.join("sticky"), 0o1777);
    write(&l2.join("hidden_by_wh"), "should not show\n");
    mk(&l2.join("opaque_dir"));
    write(&l2.join("opaque_dir/old"), "old\n");
    mk(&l2.join("sgid"));
    chown(&l2.join("sgid"), 0, 2000);
    chmod(&l2.join("sgid"), 0o2777);
    write(&l2.join("ro_file"), "read only\n");
    chmod(&l2.join("ro_file"), 0o444);
    set_xattr(&l2.join("file1"), "user.origin", b"l2");
    // top layer
    write(&l1.join("file1"), "l1 file1\n");
    set_xattr(&l1.join("file1"), "user.origin", b"l1");
    set_xattr(&l1.join("file1"), "trusted.note", b"t");
    mk(&l1.join("dir1"));
    write(&l1.join("dir1/f4"), "lower1 f4\n");
    mknod_whiteout(&l1.join("hidden_by_wh"));
    mk(&l1.join("opaque_dir"));
    write(&l1.join("opaque_dir/new"), "new\n");
    set_xattr(&l1.join("opaque_dir"), "trusted.overlay.opaque", b"y");
    std::os::unix::fs::symlink("file1", l1.join("sym")).expect("symlink");
    nix::unistd::mkfifo(&l1.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("fifo");
    chmod(&l1.join("dir1"), 0o755);
}

/// One object of a tree snapshot.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Obj {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// size for regular files, 0 otherwise
    pub size: u64,
    pub nlink: u64,
    pub rdev: u64,
    pub content: Vec<u8>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

fn kind_char(ft: std::fs::FileType) -> char {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_socket() {
        's'
    } else {
        'f'
    }
}

/// Snapshot a tree (metadata, contents, xattrs) for comparison; `ignore_xattr` filters xattrs that are
/// expected to differ (kernel-private bookkeeping such as trusted.overlay.origin).
pub fn snapshot(root: &Path, ignore_xattr: &dyn Fn(&str) -> bool, dir_nlink: bool) -> BTreeMap<String, Obj> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        let kind = kind_char(md.file_type());
        let content = match kind {
            'f' => std::fs::read(&p).unwrap_or_else(|e| format!("<{e}>").into_bytes()),
            'l' => std::fs::read_link(&p).map(|t| t.as_os_str().as_bytes().to_vec()).unwrap_or_default(),
            _ => Vec::new(),
        };
        let xattrs = list_xattrs(&p)
            .into_iter()
            .filter(|n| !ignore_xattr(n))
            .map(|n| {
                let v = get_xattr(&p, &n).unwrap_or_default();
                (n, v)
            })
            .collect();
        out.insert(
            rel.display().to_string(),
            Obj {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == 'f' { md.size() } else { 0 },
                // the kernel hardlinks its whiteouts to one shared inode; the link count means nothing
                nlink: if (kind == 'd' && !dir_nlink) || (kind == 'c' && md.rdev() == 0) {
                    0
                } else {
                    md.nlink()
                },
                rdev: md.rdev(),
                content,
                xattrs,
            },
        );
        if kind == 'd' {
            if let Ok(rd) = std::fs::read_dir(&p) {
                let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
                names.sort();
                for n in names {
                    stack.push(rel.join(n));
                }
            }
        }
    }
    out
}

/// Xattrs the kernel writes for its own bookkeeping that rimg does not (documented deviation).
pub fn kernel_private_xattr(n: &str) -> bool {
    matches!(
        n,
        "trusted.overlay.origin"
            | "trusted.overlay.impure"
            | "trusted.overlay.nlink"
            | "trusted.overlay.upper"
            | "trusted.overlay.uuid"
    )
}

/// Describe the first difference between two snapshots.
pub fn diff(a: &BTreeMap<String, Obj>, b: &BTreeMap<String, Obj>) -> Option<String> {
    for (k, v) in a {
        match b.get(k) {
            None => return Some(format!("{k}: only in first ({v:?})")),
            Some(w) if w != v => return Some(format!("{k}: {v:?} != {w:?}")),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            return Some(format!("{k}: only in second ({:?})", b[k]));
        }
    }
    None
}

/// File descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Threads of this process.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// Threads of this process that serve FUSE requests (fuser names them "fuser-N").
pub fn fuse_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .map(|c| c.starts_with("fuser") || c.starts_with("rimg-readahead"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Mounts at or below `p` in this mount namespace.
pub fn mounts_under(p: &Path) -> usize {
    let s = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let needle = p.display().to_string();
    s.lines().filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&needle))).count()
}

/// The kernel's switch for FUSE over io_uring.
pub const URING_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Turns the kernel's FUSE-over-io_uring switch on while it lives, and back to what it was when dropped
/// (test failures included). Panics on a kernel without it (before 6.14): the io_uring tests must not
/// pass by testing nothing.
pub struct UringEnabled(String);

impl UringEnabled {
    pub fn enable() -> UringEnabled {
        let old = std::fs::read_to_string(URING_PARAM)
            .unwrap_or_else(|e| panic!("this kernel has no FUSE over io_uring ({URING_PARAM}: {e})"));
        std::fs::write(URING_PARAM, "1").expect("enable fuse.enable_uring");
        UringEnabled(old.trim().to_string())
    }
}

impl Drop for UringEnabled {
    fn drop(&mut self) {
        let _ = std::fs::write(URING_PARAM, if self.0 == "Y" { "1" } else { "0" });
    }
}

/// This process's io_uring queue threads (`fuser-uring-N`, the guard not counted), by thread id.
pub fn uring_threads() -> Vec<i32> {
    let Ok(d) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    d.filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .map(|c| c.trim_end().strip_prefix("fuser-uring-").is_some_and(|n| n.parse::<u32>().is_ok()))
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The kernel's FUSE control directory (fusectl), mounted if it is not (a bare machine may not have it).
pub fn fuse_connections() -> PathBuf {
    let dir = PathBuf::from("/sys/fs/fuse/connections");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/sys/fs/fuse/connections"));
    if !mounted {
        let st = std::process::Command::new("mount")
            .args(["-t", "fusectl", "none", "/sys/fs/fuse/connections"])
            .status()
            .expect("mount fusectl");
        assert!(st.success(), "mount -t fusectl failed");
    }
    dir
}

/// Tests that count this process's threads, fds or mounts, or flip global switches, take this lock so
/// that they run one at a time (each test binary has its own).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Hold [`SERIAL`] for the rest of the test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The two-lower fixture of [`build_lowers`] with an upper and work directory, built on first use.
pub fn layered_config(s: &Scratch) -> OverlayConfig {
    let (l1, l2) = (s.path("l1"), s.path("l2"));
    if !l1.join("file1").exists() {
        build_lowers(&l1, &l2);
    }
    OverlayConfig { lowers: vec![l1, l2], upper: Some(s.path("u")), work: Some(s.path("w")) }
}

/// Kills and reaps a child process on drop (test failure paths included).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Mount and unmount `RIMG_FS_CYCLES` times (default 100), each time reading, writing and opening a
/// file through the mount; then no mount, fd or server thread of them may be left.
pub fn mount_cycles_leak_nothing(opts: &MountOptions) {
    let cycles: usize = std::env::var("RIMG_FS_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let s = Scratch::new();
    let c = layered_config(&s);
    let m = s.path("m");
    let cycle = |i: usize| {
        let mnt = rimg::fs::mount(c.clone(), &m, opts).expect("mount");
        assert_eq!(std::fs::read_to_string(m.join("dir1/f4")).unwrap(), "lower1 f4\n");
        // a listing with subdirectories starts the read-ahead threads, which must end with the mount
        assert!(std::fs::read_dir(&m).unwrap().count() > 2);
        std::fs::write(m.join(format!("n{}", i % 7)), "x").unwrap();
        let f = std::fs::File::open(m.join("file1")).unwrap();
        drop(f);
        mnt.unmount().expect("unmount");
    };
    cycle(0);
    let fds = open_fds();
    for i in 1..=cycles {
        cycle(i);
    }
    assert_eq!(mounts_under(s.dir.path()), 0, "no mount left");
    assert_eq!(open_fds(), fds, "no fd leaked");
    assert_eq!(fuse_threads(), 0, "no server thread left");
}
