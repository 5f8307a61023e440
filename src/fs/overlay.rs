//! The overlay's state and its mutating operations: copy-up (built in the workdir, renamed into place),
//! creation as the caller, whiteouts, opaque directories, redirects for directory renames — all written in
//! kernel overlayfs format so the kernel can mount the same upper and work directories.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{FileAttr, INodeNo};

use super::attr::{stat_times, to_attr};
use super::sys::{self, SysResult};
use super::tree::{DirLayers, Found, Key, Stack, Tables, XATTR_METACOPY, XATTR_OPAQUE, XATTR_REDIRECT};

/// Behaviour switches of one mount.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// No upper layer or mounted read-only: every change is EROFS.
    pub read_only: bool,
    /// Rename directories that exist in lower layers by writing `trusted.overlay.redirect` (else EXDEV).
    pub redirect_dir: bool,
    /// Metadata-only changes of lower files copy up metadata only (`trusted.overlay.metacopy`).
    pub metacopy: bool,
    /// Use FUSE passthrough for regular-file I/O when the kernel offers it.
    pub passthrough: bool,
    /// Ask for the FUSE writeback cache when passthrough is not in use.
    pub writeback: bool,
    /// Ask for FUSE over io_uring (see [`crate::fs::MountOptions::uring`]).
    pub uring: bool,
    /// Read directories ahead of a tree walk (see [`crate::fs::MountOptions::readahead`]).
    pub readahead: bool,
    /// Container ↔ host id maps (identity without a user namespace).
    pub ids: super::ids::IdMaps,
}

/// How much of a file a copy-up brings into the upper layer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CopyMode {
    /// Metadata only when metacopy is enabled (data stays in the lower layer), else full.
    Meta,
    /// Metadata and data.
    Full,
    /// Metadata and an empty file (the caller truncates it to zero anyway).
    Empty,
}

/// A file opened through the overlay.
pub struct Handle {
    /// The real file.
    pub fd: Arc<OwnedFd>,
    /// Passthrough backing registration, kept alive while the handle is open.
    pub backing: Option<Arc<fuser::BackingId>>,
    /// The inode it belongs to.
    pub ino: u64,
    /// Served through the page cache (counted in the node's `cached_opens`).
    pub cached: bool,
    /// `fd` is the upper copy (else a lower file, opened for reading before a copy-up).
    pub upper: bool,
}

/// The filesystem: layers, inode table, open handles.
pub struct Overlay {
    /// The layers.
    pub stack: Stack,
    /// `workdir/work`, where copy-ups and whiteouts are prepared.
    pub work: Option<Arc<OwnedFd>>,
    /// Options.
    pub opts: FsOptions,
    /// Inode table.
    pub t: Mutex<Tables>,
    /// Serialises all changes to the layers.
    pub mutate: Mutex<()>,
    /// Open files.
    pub handles: Mutex<HashMap<u64, Handle>>,
    /// Next file handle.
    pub next_fh: AtomicU64,
    tmp_seq: AtomicU64,
    /// The whiteout every whiteout of this mount is a hard link to (see [`Overlay::make_whiteout`]).
    shared_whiteout: Mutex<SharedWhiteout>,
    /// The kernel accepted FUSE_PASSTHROUGH.
    pub passthrough: AtomicBool,
    /// The kernel accepted FUSE_WRITEBACK_CACHE: it caches writes, keeps the size and times of regular
    /// files itself while it has dirty pages, reads through handles opened write-only and computes
    /// O_APPEND offsets itself.
    pub writeback: AtomicBool,
    /// The kernel can do without OPENDIR (FUSE_NO_OPENDIR_SUPPORT): directories are then opened without
    /// a round trip and their listings cached per inode.
    pub no_opendir: AtomicBool,
    /// Channel for telling the kernel that cached attributes went stale (set once the session exists).
    pub notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// Directory read-ahead for tree walks (see [`super::readahead`]).
    pub readahead: super::readahead::ReadAhead,
    /// Setuid/setgid bits and file capabilities kept off disk on an id-mapped mount (see [`super::kept`]).
    pub kept: super::kept::Kept,
}

/// The state of a mount's shared whiteout.
enum SharedWhiteout {
    /// None made yet (or the last one is full).
    NotYet,
    /// Its name in the work directory.
    At(OsString),
    /// The upper filesystem refused a hard link to one: every whiteout is a device of its own.
    Off,
}

/// Where a node's current copy is: a directory fd and a name in it (empty = the fd itself).
pub type Loc = (Arc<OwnedFd>, OsString);

/// Lock a mutex, surviving a panicked holder (the data is still consistent enough to serve or unmount).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const ROOT: u64 = INodeNo::ROOT.0;

impl Overlay {
    /// Build the filesystem over opened layers; the root node merges all layer roots.
    pub fn new(stack: Stack, work: Option<OwnedFd>, opts: FsOptions) -> SysResult<Overlay> {
        let mut lowers = Vec::new();
        for (i, l) in stack.lowers.iter().enumerate() {
            lowers.push((i, l.root.clone()));
            if super::tree::lower_dir_opaque(l.root.as_raw_fd()) {
                break;
            }
        }
        let root_dir = DirLayers {
            upper: stack.upper.as_ref().map(|u| u.root.clone()),
            lowers,
            lower_path: OsString::new(),
        };
        let (st, key) = match &stack.upper {
            Some(u) => {
                let st = sys::fstat(u.root.as_raw_fd())?;
                (st, Key { dev: u.dev, ino: st.st_ino, extra: 0 })
            }
            None => {
                let l = stack.lowers.first().ok_or(libc::EINVAL)?;
                let st = sys::fstat(l.root.as_raw_fd())?;
                (st, Key { dev: l.dev, ino: st.st_ino, extra: 0 })
            }
        };
        let mut t = Tables { next_ino: ROOT + 1, ..Default::default() };
        let found = Found {
            st,
            upper: stack.upper.is_some(),
            dir: Some(root_dir),
            lower: None,
            metacopy: false,
            key,
        };
        t.by_key.insert(key, ROOT);
        t.install(ROOT, OsStr::new(""), &found, 1 << 40);
        let kept = super::kept::Kept::new(!opts.ids.is_identity());
        Ok(Overlay {
            stack,
            work: work.map(Arc::new),
            opts,
            t: Mutex::new(t),
            mutate: Mutex::new(()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            tmp_seq: AtomicU64::new(1),
            shared_whiteout: Mutex::new(SharedWhiteout::NotYet),
            passthrough: AtomicBool::new(false),
            writeback: AtomicBool::new(false),
            no_opendir: AtomicBool::new(false),
            notifier: Arc::new(std::sync::OnceLock::new()),
            readahead: Default::default(),
            kept,
        })
    }

    fn tmp_name(&self) -> OsString {
        OsString::from(format!(
            "#rimg-{:x}-{:x}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn work_fd(&self) -> SysResult<RawFd> {
        self.work.as_ref().map(|w| w.as_raw_fd()).ok_or(libc::EROFS)
    }

    /// Make the whiteout `dir/name` (`dir` on the upper filesystem): a hard link to the mount's shared
    /// whiteout in the work directory, as kernel overlayfs makes them, else a 0/0 device of its own.
    /// Deleting a lower file then allocates no inode: on ext4 without a journal each allocation looks
    /// past every inode freed in the last seconds, and whiteouts made one by one took more than half
    /// of the server's time to empty a lower directory after another was deleted. A full link count
    /// (EMLINK) starts a new shared whiteout; any other refusal of the link turns sharing off.
    fn make_whiteout(&self, dir: RawFd, name: &OsStr) -> SysResult<()> {
        let work = self.work_fd()?;
        let mut shared = lock(&self.shared_whiteout);
        for _ in 0..2 {
            let wname = match &*shared {
                SharedWhiteout::Off => break,
                SharedWhiteout::At(n) => n.clone(),
                SharedWhiteout::NotYet => {
                    let n = self.tmp_name();
                    sys::whiteout_at(work, &n)?;
                    *shared = SharedWhiteout::At(n.clone());
                    n
                }
            };
            match sys::link_at(work, &wname, dir, name) {
                Ok(()) => return Ok(()),
                Err(libc::EEXIST) => return Err(libc::EEXIST),
                // full, or gone from the work directory: start another
                Err(libc::EMLINK) | Err(libc::ENOENT) => {
                    let _ = sys::unlink_at(work, &wname, 0);
                    *shared = SharedWhiteout::NotYet;
                }
                Err(e) => {
                    log::debug!("whiteouts are not shared on this upper filesystem: link: errno {e}");
                    *shared = SharedWhiteout::Off;
                }
            }
        }
        sys::whiteout_at(dir, name)
    }

    /// The server is done: take the shared whiteout's name out of the work directory (the whiteouts
    /// linked to it stay), so that a clean unmount leaves the work directory empty.
    pub fn forget_shared_whiteout(&self) {
        if let (SharedWhiteout::At(n), Ok(work)) = (&*lock(&self.shared_whiteout), self.work_fd()) {
            let _ = sys::unlink_at(work, n, 0);
        }
    }

    /// Fail with EROFS on a read-only mount.
    pub fn writable(&self) -> SysResult<()> {
        if self.opts.read_only || self.stack.upper.is_none() {
            Err(libc::EROFS)
        } else {
            Ok(())
        }
    }

    /// The directory layers of a directory inode.
    pub fn dir_of(&self, ino: u64) -> SysResult<DirLayers> {
        let t = lock(&self.t);
        let n = t.nodes.get(&ino).ok_or(libc::ENOENT)?;
        if n.gone {
            return Err(libc::ENOENT);
        }
        n.dir.clone().ok_or(libc::ENOTDIR)
    }

    /// Where the current copy of `ino` is, and whether that is the upper copy.
    pub fn loc_locked(t: &Tables, ino: u64) -> SysResult<(Loc, bool)> {
        let n = t.nodes.get(&ino).ok_or(libc::ENOENT)?;
        if n.gone {
            return Err(libc::ENOENT);
        }
        if let Some(w) = &n.tmpfile {
            return Ok(((w.clone(), n.name.clone()), true));
        }
        if let Some(d) = &n.dir {
            if let Some(u) = &d.upper {
                return Ok(((u.clone(), OsString::new()), true));
            }
            let (_, l) = d.lowers.first().ok_or(libc::ENOENT)?;
            return Ok(((l.clone(), OsString::new()), false));
        }
        if n.upper {
            let p = t.nodes.get(&n.parent).ok_or(libc::ENOENT)?;
            let pu = p.dir.as_ref().and_then(|d| d.upper.clone()).ok_or(libc::EIO)?;
            return Ok(((pu, n.name.clone()), true));
        }
        let l = n.lower.as_ref().ok_or(libc::ENOENT)?;
        Ok(((l.dir.clone(), l.name.clone()), false))
    }

    /// See [`Overlay::loc_locked`].
    pub fn loc(&self, ino: u64) -> SysResult<(Loc, bool)> {
        Self::loc_locked(&lock(&self.t), ino)
    }

    /// Current attributes of `ino` as the overlay presents them.
    pub fn attr(&self, ino: u64) -> SysResult<FileAttr> {
        let (loc, merged, meta_lower, in_lower, unnamed) = {
            let t = lock(&self.t);
            let (loc, _) = Self::loc_locked(&t, ino)?;
            let n = t.nodes.get(&ino).ok_or(libc::ENOENT)?;
            let in_lower = !n.upper;
            let unnamed = n.tmpfile.is_some();
            let merged = n
                .dir
                .as_ref()
                .is_some_and(|d| (d.upper.is_some() && !d.lowers.is_empty()) || d.lowers.len() > 1);
            let meta = if n.metacopy { n.lower.clone() } else { None };
            (loc, merged, meta, in_lower, unnamed)
        };
        let mut st = sys::stat_at(loc.0.as_raw_fd(), &loc.1)?;
        if unnamed {
            // its work directory name is ours, not the user's
            st.st_nlink = 0;
        }
        self.adjust(&mut st, merged, meta_lower.as_ref().map(|l| (l.dir.as_raw_fd(), l.name.as_os_str())));
        Ok(self.present(self.shown_ino(ino, in_lower, &st), &st))
    }

    /// The `st_ino` object `ino` shows: its own number, or for a name of a hard link still in a lower
    /// layer the number all names of that link show (kernel overlayfs shows the lower inode there; a
    /// name copied up gets its own, as the kernel's broken hard links do).
    fn shown_ino(&self, ino: u64, in_lower: bool, st: &libc::stat) -> u64 {
        if in_lower && st.st_mode & libc::S_IFMT != libc::S_IFDIR && st.st_nlink > 1 {
            lock(&self.t).link_group(st.st_dev, st.st_ino)
        } else {
            ino
        }
    }

    /// FUSE attributes of a real file as the kernel is shown them (owners as host ids).
    pub fn present(&self, ino: u64, st: &libc::stat) -> FileAttr {
        let mut a = to_attr(ino, st);
        self.opts.ids.present(&mut a);
        self.show_kept(ino, st, &mut a);
        a
    }

    fn adjust(&self, st: &mut libc::stat, merged: bool, meta: Option<(RawFd, &OsStr)>) {
        if merged {
            st.st_nlink = 1;
        }
        if let Some((d, n)) = meta {
            if let Ok(l) = sys::stat_at(d, n) {
                st.st_blocks = l.st_blocks;
            }
        }
    }

    /// Attributes of a freshly resolved object.
    pub fn found_attr(&self, ino: u64, f: &Found) -> FileAttr {
        let mut st = f.st;
        let merged =
            f.dir.as_ref().is_some_and(|d| (d.upper.is_some() && !d.lowers.is_empty()) || d.lowers.len() > 1);
        let meta = if f.metacopy { f.lower.as_ref() } else { None };
        self.adjust(&mut st, merged, meta.map(|l| (l.dir.as_raw_fd(), l.name.as_os_str())));
        self.present(self.shown_ino(ino, !f.upper, &st), &st)
    }

    /// Resolve `name` in directory `parent` and register it with `lookups` kernel references.
    pub fn lookup_install(&self, parent: u64, name: &OsStr, lookups: u64) -> SysResult<(u64, FileAttr)> {
        let dir = self.dir_of(parent)?;
        let f = self.stack.resolve(&dir, parent, name)?.ok_or(libc::ENOENT)?;
        let ino = lock(&self.t).install(parent, name, &f, lookups);
        self.kept_lookup(ino, &dir, name, &f);
        Ok((ino, self.found_attr(ino, &f)))
    }

    /// Copy `ino` (and first its parents) up into the upper layer. Caller holds `mutate`.
    pub fn copy_up(&self, ino: u64, mode: CopyMode) -> SysResult<()> {
        self.writable()?;
        let (parent, name, upper, metacopy, dir, lower, fmt) = {
            let t = lock(&self.t);
            let n = t.nodes.get(&ino).ok_or(libc::ENOENT)?;
            if n.gone {
                return Err(libc::ENOENT);
            }
            (n.parent, n.name.clone(), n.upper, n.metacopy, n.dir.clone(), n.lower.clone(), n.fmt)
        };
        if upper {
            if metacopy && mode != CopyMode::Meta {
                return self.finish_metacopy(ino, mode);
            }
            return Ok(());
        }
        if ino == ROOT {
            return Err(libc::EROFS);
        }
        self.copy_up(parent, CopyMode::Meta)?;
        let pup = self.dir_of(parent)?.upper.ok_or(libc::EIO)?;
        let work = self.work_fd()?;
        let (sdir, sname): (Arc<OwnedFd>, OsString) = match (&dir, &lower) {
            (Some(d), _) => (d.lowers.first().ok_or(libc::ENOENT)?.1.clone(), OsString::new()),
            (None, Some(l)) => (l.dir.clone(), l.name.clone()),
            _ => return Err(libc::ENOENT),
        };
        let (sfd, sname) = (sdir.as_raw_fd(), sname.as_os_str());
        let st = sys::stat_at(sfd, sname)?;
        let tmp = self.tmp_name();
        let perm = st.st_mode & 0o7777;
        let mut made_metacopy = false;
        let mut new_dir_fd = None;
        let mut kept = None;
        let res: SysResult<()> = (|| {
            match fmt {
                libc::S_IFDIR => {
                    sys::mkdir_at(work, &tmp, 0o700)?;
                    let d = sys::open_dir_at(work, &tmp)?;
                    copy_xattrs(sfd, sname, d.as_raw_fd(), OsStr::new(""))?;
                    sys::fchown(d.as_raw_fd(), st.st_uid, st.st_gid)?;
                    sys::fchmod(d.as_raw_fd(), perm)?;
                    sys::utimens_at(d.as_raw_fd(), OsStr::new(""), &stat_times(&st))?;
                    new_dir_fd = Some(d);
                }
                libc::S_IFREG => {
                    let src = sys::open_at(sfd, sname, libc::O_RDONLY, 0)?;
                    let dst = sys::open_at(work, &tmp, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o600)?;
                    let size = st.st_size as u64;
                    match mode {
                        CopyMode::Meta if self.opts.metacopy && size > 0 => {
                            sys::ftruncate(dst.as_raw_fd(), size)?;
                            made_metacopy = true;
                        }
                        CopyMode::Empty => {}
                        _ => sys::copy_data(src.as_raw_fd(), dst.as_raw_fd(), size)?,
                    }
                    if made_metacopy {
                        sys::set_xattr(dst.as_raw_fd(), OsStr::new(""), XATTR_METACOPY, b"", 0)?;
                    }
                    // the owner first: a chown drops security.capability (the kernel's copy-up sets
                    // owners without that)
                    sys::fchown(dst.as_raw_fd(), st.st_uid, st.st_gid)?;
                    kept = Some(self.copy_up_file_meta(sfd, sname, dst.as_raw_fd(), perm)?);
                    sys::utimens_at(dst.as_raw_fd(), OsStr::new(""), &stat_times(&st))?;
                    if !made_metacopy && size > 0 {
                        sys::fsync(dst.as_raw_fd(), false)?;
                    }
                }
                libc::S_IFLNK => {
                    let target = sys::readlink_at(sfd, sname)?;
                    sys::symlink_at(&target, work, &tmp)?;
                    copy_xattrs(sfd, sname, work, &tmp)?;
                    sys::chown_at(work, &tmp, st.st_uid, st.st_gid)?;
                    sys::utimens_at(work, &tmp, &stat_times(&st))?;
                }
                _ => {
                    sys::mknod_at(work, &tmp, fmt | 0o600, st.st_rdev)?;
                    copy_xattrs(sfd, sname, work, &tmp)?;
                    sys::chown_at(work, &tmp, st.st_uid, st.st_gid)?;
                    sys::chmod_at(work, &tmp, perm)?;
                    sys::utimens_at(work, &tmp, &stat_times(&st))?;
                }
            }
            sys::rename_at(work, &tmp, pup.as_raw_fd(), &name, libc::RENAME_NOREPLACE)
        })();
        if let Err(e) = res {
            let flag = if fmt == libc::S_IFDIR { libc::AT_REMOVEDIR } else { 0 };
            let _ = sys::unlink_at(work, &tmp, flag);
            return Err(e);
        }
        let nst = sys::stat_at(pup.as_raw_fd(), &name)?;
        let key = Key { dev: self.stack.upper_dev(), ino: nst.st_ino, extra: 0 };
        let mut t = lock(&self.t);
        t.by_key.insert(key, ino);
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.upper = true;
            n.metacopy = made_metacopy;
            if !made_metacopy && fmt != libc::S_IFDIR {
                // data now lives in the upper copy; keep `lower` only as the metacopy data source
                n.lower = None;
            }
            if let (Some(d), Some(fd)) = (n.dir.as_mut(), new_dir_fd) {
                d.upper = Some(Arc::new(fd));
            }
            n.keys.push(key);
        }
        drop(t);
        self.kept_copied_up(ino, kept);
        // a directory copied up as a side effect now reports other attributes (st_nlink of a merged dir)
        self.invalidate_attr(ino);
        Ok(())
    }

    /// Drop the kernel's cached attributes of `ino` (never its page cache).
    pub fn invalidate_attr(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            let _ = n.inval_inode(INodeNo(ino), -1, 0);
        }
    }

    /// Bring the data of a metacopy upper file up, in place, and drop the metacopy mark.
    fn finish_metacopy(&self, ino: u64, mode: CopyMode) -> SysResult<()> {
        let (loc, lower) = {
            let t = lock(&self.t);
            let (loc, _) = Self::loc_locked(&t, ino)?;
            (loc, t.nodes.get(&ino).and_then(|n| n.lower.clone()))
        };
        let dst = sys::open_at(loc.0.as_raw_fd(), &loc.1, libc::O_WRONLY, 0)?;
        if mode == CopyMode::Full {
            if let Some(l) = &lower {
                let src = sys::open_at(l.dir.as_raw_fd(), &l.name, libc::O_RDONLY, 0)?;
                let size = sys::fstat(dst.as_raw_fd())?.st_size as u64;
                super::kept::copy_data_keeping_caps(src.as_raw_fd(), dst.as_raw_fd(), size)?;
                sys::fsync(dst.as_raw_fd(), false)?;
            }
        } else {
            sys::ftruncate(dst.as_raw_fd(), 0)?;
        }
        match sys::remove_xattr(dst.as_raw_fd(), OsStr::new(""), XATTR_METACOPY) {
            Ok(()) | Err(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
        let mut t = lock(&self.t);
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.metacopy = false;
            n.lower = None;
        }
        Ok(())
    }

    /// Owner and extra mode bits of a new entry in `parent_st` created by (uid, gid): the caller's ids,
    /// except that a setgid directory passes on its group (and, to directories, the setgid bit).
    fn new_owner(parent_st: &libc::stat, uid: u32, gid: u32, is_dir: bool) -> (u32, u32, u32) {
        if parent_st.st_mode & libc::S_ISGID != 0 {
            (uid, parent_st.st_gid, if is_dir { libc::S_ISGID } else { 0 })
        } else {
            (uid, gid, 0)
        }
    }

    /// Create a new entry as the caller (uid, gid: host ids, as the kernel sends them). Returns the new inode, its attributes and, for
    /// regular files, the open file (read-write).
    pub fn create_entry(
        &self,
        uid: u32,
        gid: u32,
        parent: u64,
        name: &OsStr,
        what: NewEntry<'_>,
    ) -> SysResult<(u64, FileAttr, Option<OwnedFd>)> {
        self.writable()?;
        if matches!(what, NewEntry::Node(mode, 0) if mode & libc::S_IFMT == libc::S_IFCHR) {
            // a 0/0 character device is a whiteout in the upper layer: the name would vanish now and
            // commit as a deletion. Kernel overlayfs refuses it (ovl_mknod) before anything else.
            return Err(libc::EPERM);
        }
        let (uid, gid) = self.opts.ids.creator(uid, gid);
        let _g = lock(&self.mutate);
        let dir = self.dir_of(parent)?;
        // one probe of the upper layer decides most cases; the lowers only matter without an upper entry
        let mut over_whiteout = false;
        if let Some(up) = &dir.upper {
            match sys::stat_at(up.as_raw_fd(), name) {
                Ok(st) if sys::is_whiteout(&st) => over_whiteout = true,
                Ok(_) => return Err(libc::EEXIST),
                Err(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        if !over_whiteout {
            let lowers_only = DirLayers { upper: None, ..dir.clone() };
            if self.stack.resolve(&lowers_only, parent, name)?.is_some() {
                return Err(libc::EEXIST);
            }
        }
        self.copy_up(parent, CopyMode::Meta)?;
        let pup = self.dir_of(parent)?.upper.ok_or(libc::EIO)?;
        let pfd = pup.as_raw_fd();
        let pst = sys::fstat(pfd)?;
        let is_dir = matches!(what, NewEntry::Dir(_));
        let (ouid, ogid, extra) = Self::new_owner(&pst, uid, gid, is_dir);
        // a temporary name (and its getpid) only when the entry is built in the workdir
        let tmp = if over_whiteout { self.tmp_name() } else { OsString::new() };
        let (tdir, tname): (RawFd, &OsStr) =
            if over_whiteout { (self.work_fd()?, &tmp) } else { (pfd, name) };
        let mut file = None;
        let res: SysResult<()> = (|| {
            match what {
                NewEntry::File(mode) => file = Some(self.new_file(tdir, tname, ouid, ogid, mode | extra)?),
                NewEntry::Dir(mode) => {
                    sys::mkdir_at(tdir, tname, 0o700)?;
                    sys::chown_at(tdir, tname, ouid, ogid)?;
                    sys::chmod_at(tdir, tname, (mode & 0o7777) | extra)?;
                    if over_whiteout {
                        sys::set_xattr(tdir, tname, XATTR_OPAQUE, b"y", 0)?;
                    }
                }
                NewEntry::Node(mode, rdev) => {
                    sys::mknod_at(tdir, tname, (mode & libc::S_IFMT) | 0o600, rdev)?;
                    sys::chown_at(tdir, tname, ouid, ogid)?;
                    sys::chmod_at(tdir, tname, (mode & 0o7777) | extra)?;
                }
                NewEntry::Symlink(target) => {
                    sys::symlink_at(target, tdir, tname)?;
                    sys::chown_at(tdir, tname, ouid, ogid)?;
                }
            }
            if over_whiteout {
                if is_dir {
                    sys::rename_at(tdir, tname, pfd, name, libc::RENAME_EXCHANGE)?;
                    let _ = sys::unlink_at(tdir, tname, 0);
                } else {
                    sys::rename_at(tdir, tname, pfd, name, 0)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            if over_whiteout {
                let _ = sys::unlink_at(tdir, tname, if is_dir { libc::AT_REMOVEDIR } else { 0 });
            } else {
                let _ = sys::unlink_at(pfd, name, if is_dir { libc::AT_REMOVEDIR } else { 0 });
            }
            return Err(e);
        }
        if is_dir {
            let (ino, attr) = self.lookup_install(parent, name, 1)?;
            return Ok((ino, attr, file));
        }
        // a new non-directory is exactly its upper file
        let st = match &file {
            Some(f) => sys::fstat(f.as_raw_fd())?,
            None => sys::stat_at(pfd, name)?,
        };
        let ino = self.install_new(&mut lock(&self.t), parent, name, st);
        if let NewEntry::File(mode) = what {
            self.kept_created(ino, mode);
        }
        Ok((ino, self.present(ino, &st), file))
    }

    /// Register a non-directory just created in the upper layer (its stat `st`) as `parent/name` with
    /// one kernel reference: it is exactly its upper file.
    fn install_new(&self, t: &mut Tables, parent: u64, name: &OsStr, st: libc::stat) -> u64 {
        let key = Key { dev: self.stack.upper_dev(), ino: st.st_ino, extra: 0 };
        t.install(parent, name, &Found { st, upper: true, dir: None, lower: None, metacopy: false, key }, 1)
    }

    /// Create the real regular file `tdir/tname` owned by (uid, gid) with `mode`, open for reading and
    /// writing. Others cannot open it before it has its owner: it is created 0600.
    fn new_file(&self, tdir: RawFd, tname: &OsStr, uid: u32, gid: u32, mode: u32) -> SysResult<OwnedFd> {
        let fd = sys::open_at(tdir, tname, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600)?;
        sys::fchown(fd.as_raw_fd(), uid, gid)?;
        self.set_file_perm(fd.as_raw_fd(), OsStr::new(""), mode & 0o7777, false)?;
        Ok(fd)
    }

    /// Create an unnamed file (`O_TMPFILE`) in directory `parent` as the caller. It lives under a
    /// temporary name in the work directory (on the upper filesystem, so a LINK can rename it into
    /// place) and shows `st_nlink` 0; [`Overlay::closed`] removes it if it never got a name.
    pub fn create_tmpfile(
        &self,
        uid: u32,
        gid: u32,
        parent: u64,
        mode: u32,
    ) -> SysResult<(u64, FileAttr, OwnedFd)> {
        self.writable()?;
        let (uid, gid) = self.opts.ids.creator(uid, gid);
        let work = self.work.clone().ok_or(libc::EROFS)?;
        let _g = lock(&self.mutate);
        // as kernel overlayfs: the directory is copied up, its owner and setgid bit decide the file's group
        self.copy_up(parent, CopyMode::Meta)?;
        let pup = self.dir_of(parent)?.upper.ok_or(libc::EIO)?;
        let (ouid, ogid, _) = Self::new_owner(&sys::fstat(pup.as_raw_fd())?, uid, gid, false);
        let tmp = self.tmp_name();
        let file = self.new_file(work.as_raw_fd(), &tmp, ouid, ogid, mode)?;
        let mut st = sys::fstat(file.as_raw_fd())?;
        let ino = {
            let mut t = lock(&self.t);
            let ino = self.install_new(&mut t, parent, &tmp, st);
            if let Some(n) = t.nodes.get_mut(&ino) {
                n.tmpfile = Some(work);
            }
            ino
        };
        self.kept_created(ino, mode);
        st.st_nlink = 0;
        Ok((ino, self.present(ino, &st), file))
    }

    /// The last handle of `ino` was closed: an unnamed file that never got a name goes away now.
    pub fn closed(&self, ino: u64) {
        let _g = lock(&self.mutate);
        let mut t = lock(&self.t);
        let Some(n) = t.nodes.get_mut(&ino) else { return };
        let Some(work) = n.tmpfile.take() else { return };
        n.gone = true;
        let _ = sys::unlink_at(work.as_raw_fd(), &n.name, 0);
        t.drop_keys(ino);
    }

    /// Hard link `ino` as `newparent/newname`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> SysResult<(u64, FileAttr)> {
        self.writable()?;
        let _g = lock(&self.mutate);
        let ndir = self.dir_of(newparent)?;
        if self.stack.resolve(&ndir, newparent, newname)?.is_some() {
            return Err(libc::EEXIST);
        }
        let unnamed = {
            let t = lock(&self.t);
            t.nodes.get(&ino).and_then(|n| n.tmpfile.clone().map(|w| (w, n.name.clone())))
        };
        if let Some((work, tmp)) = unnamed {
            // an O_TMPFILE file's first name: its file moves into place (over a whiteout, if any)
            self.copy_up(newparent, CopyMode::Meta)?;
            let pup = self.dir_of(newparent)?.upper.ok_or(libc::EIO)?;
            sys::rename_at(work.as_raw_fd(), &tmp, pup.as_raw_fd(), newname, 0)?;
            lock(&self.t).adopt_tmpfile(ino, newparent, newname);
            return self.lookup_install(newparent, newname, 1);
        }
        self.copy_up(ino, CopyMode::Full)?;
        self.copy_up(newparent, CopyMode::Meta)?;
        let (src, _) = self.loc(ino)?;
        let pup = self.dir_of(newparent)?.upper.ok_or(libc::EIO)?;
        let pfd = pup.as_raw_fd();
        let over_whiteout = matches!(sys::stat_at(pfd, newname), Ok(st) if sys::is_whiteout(&st));
        if over_whiteout {
            let tmp = self.tmp_name();
            let work = self.work_fd()?;
            sys::link_at(src.0.as_raw_fd(), &src.1, work, &tmp)?;
            if let Err(e) = sys::rename_at(work, &tmp, pfd, newname, 0) {
                let _ = sys::unlink_at(work, &tmp, 0);
                return Err(e);
            }
        } else {
            sys::link_at(src.0.as_raw_fd(), &src.1, pfd, newname)?;
        }
        self.lookup_install(newparent, newname, 1)
    }

    /// Is the merged directory empty (apart from whiteouts)?
    fn merged_empty(&self, dir: &DirLayers, ino: u64) -> SysResult<bool> {
        Ok(self.stack.list(dir, ino)?.is_empty())
    }

    /// Remove the whiteouts left in an upper directory whose merged view is empty.
    fn clear_whiteouts(fd: RawFd) -> SysResult<()> {
        for e in sys::list_dir(fd)? {
            let st = sys::stat_at(fd, &e.name)?;
            if !sys::is_whiteout(&st) {
                return Err(libc::ENOTEMPTY);
            }
            sys::unlink_at(fd, &e.name, 0)?;
        }
        Ok(())
    }

    /// After `parent/name` (object `ino`) went away from the merged view: update the node.
    fn detach(&self, t: &mut Tables, ino: u64, parent: u64, name: &OsStr, last_link: bool) {
        if last_link {
            t.drop_keys(ino);
        }
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.aliases.retain(|(p, a)| !(*p == parent && a == name));
            if n.parent == parent && n.name == name {
                if let Some((p, a)) = n.aliases.pop() {
                    n.parent = p;
                    n.name = a;
                } else {
                    n.gone = true;
                }
            }
        }
    }

    /// unlink or rmdir of `parent/name`.
    pub fn remove(&self, parent: u64, name: &OsStr, dir_wanted: bool) -> SysResult<()> {
        self.writable()?;
        let _g = lock(&self.mutate);
        let pdir = self.dir_of(parent)?;
        let f = self.stack.resolve(&pdir, parent, name)?.ok_or(libc::ENOENT)?;
        let is_dir = f.dir.is_some();
        if dir_wanted && !is_dir {
            return Err(libc::ENOTDIR);
        }
        if !dir_wanted && is_dir {
            return Err(libc::EISDIR);
        }
        let node_ino = lock(&self.t).by_key.get(&f.key).copied();
        if let Some(d) = &f.dir {
            let probe_ino = node_ino.unwrap_or(0);
            if !self.merged_empty(d, probe_ino)? {
                return Err(libc::ENOTEMPTY);
            }
        }
        // (a name found in a lower layer is there: no second look)
        let need_wh = !f.upper || self.stack.lower_positive(&pdir, name)?;
        self.copy_up(parent, CopyMode::Meta)?;
        let pup = self.dir_of(parent)?.upper.ok_or(libc::EIO)?;
        let pfd = pup.as_raw_fd();
        if f.upper {
            if let Some(d) = &f.dir {
                if let Some(u) = &d.upper {
                    Self::clear_whiteouts(u.as_raw_fd())?;
                }
            }
            if need_wh {
                let work = self.work_fd()?;
                let tmp = self.tmp_name();
                self.make_whiteout(work, &tmp)?;
                if is_dir {
                    if let Err(e) = sys::rename_at(work, &tmp, pfd, name, libc::RENAME_EXCHANGE) {
                        let _ = sys::unlink_at(work, &tmp, 0);
                        return Err(e);
                    }
                    sys::unlink_at(work, &tmp, libc::AT_REMOVEDIR)?;
                } else if let Err(e) = sys::rename_at(work, &tmp, pfd, name, 0) {
                    let _ = sys::unlink_at(work, &tmp, 0);
                    return Err(e);
                }
            } else {
                sys::unlink_at(pfd, name, if is_dir { libc::AT_REMOVEDIR } else { 0 })?;
            }
        } else {
            self.make_whiteout(pfd, name)?;
        }
        let last = is_dir || !f.upper || f.st.st_nlink <= 1;
        let mut t = lock(&self.t);
        if let Some(ino) = node_ino {
            self.detach(&mut t, ino, parent, name, last);
        }
        if last {
            t.by_key.remove(&f.key);
        }
        Ok(())
    }

    /// rename(2) within the merged tree. Returns the moved object's inode number and d_type, or None
    /// when both names were the same object's and nothing changed.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> SysResult<Option<(u64, u8)>> {
        self.writable()?;
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return Err(libc::EINVAL);
        }
        let _g = lock(&self.mutate);
        let pdir = self.dir_of(parent)?;
        let src = self.stack.resolve(&pdir, parent, name)?.ok_or(libc::ENOENT)?;
        let ndir = self.dir_of(newparent)?;
        let dst = self.stack.resolve(&ndir, newparent, newname)?;
        let src_ino = lock(&self.t).ino_for(src.key);
        let src_is_dir = src.dir.is_some();
        if let Some(d) = &dst {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(libc::EEXIST);
            }
            if d.key == src.key {
                return Ok(None);
            }
            match (src_is_dir, d.dir.is_some()) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                _ => {}
            }
        }
        // as the kernel: type checks (VFS) first, then EXDEV, then emptiness of the target
        let src_has_lower = src.dir.as_ref().is_some_and(|d| !d.lowers.is_empty());
        if src_has_lower && !self.opts.redirect_dir {
            return Err(libc::EXDEV);
        }
        if let Some(d) = &dst {
            if let Some(dd) = &d.dir {
                if !self.merged_empty(dd, 0)? {
                    return Err(libc::ENOTEMPTY);
                }
            }
        }
        // the source node must exist in the table for copy-up
        {
            let mut t = lock(&self.t);
            if !t.nodes.contains_key(&src_ino) {
                t.install(parent, name, &src, 0);
            }
        }
        let need_wh = self.stack.lower_positive(&pdir, name)?;
        self.copy_up(src_ino, CopyMode::Full)?;
        self.copy_up(newparent, CopyMode::Meta)?;
        let pup = self.dir_of(parent)?.upper.ok_or(libc::EIO)?;
        let npdir = self.dir_of(newparent)?;
        let npup = npdir.upper.clone().ok_or(libc::EIO)?;
        let (pfd, npfd) = (pup.as_raw_fd(), npup.as_raw_fd());
        if src_is_dir {
            let sdir = self.dir_of(src_ino)?;
            let sfd = sdir.upper.clone().ok_or(libc::EIO)?;
            if src_has_lower {
                let cur = sys::get_xattr(sfd.as_raw_fd(), OsStr::new(""), XATTR_REDIRECT).ok();
                if cur.is_none() && !upper_dir_is_opaque(sfd.as_raw_fd()) {
                    let mut path = sdir.lower_path.as_bytes().to_vec();
                    if path.first() != Some(&b'/') {
                        path.insert(0, b'/');
                    }
                    sys::set_xattr(sfd.as_raw_fd(), OsStr::new(""), XATTR_REDIRECT, &path, 0)?;
                }
            } else if !npdir.lowers.is_empty() && !upper_dir_is_opaque(sfd.as_raw_fd()) {
                sys::set_xattr(sfd.as_raw_fd(), OsStr::new(""), XATTR_OPAQUE, b"y", 0)?;
            }
        }
        // make the destination name replaceable in the upper layer
        match sys::stat_at(npfd, newname) {
            Ok(st) if sys::is_whiteout(&st) && src_is_dir => sys::unlink_at(npfd, newname, 0)?,
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                let d = sys::open_dir_at(npfd, newname)?;
                Self::clear_whiteouts(d.as_raw_fd())?;
            }
            _ => {}
        }
        let rflags = if need_wh { libc::RENAME_WHITEOUT } else { 0 };
        sys::rename_at(pfd, name, npfd, newname, rflags)?;
        let mut t = lock(&self.t);
        if let Some(d) = &dst {
            if let Some(dino) = t.by_key.get(&d.key).copied() {
                let last = d.dir.is_some() || !d.upper || d.st.st_nlink <= 1;
                self.detach(&mut t, dino, newparent, newname, last);
            }
        }
        let old_parent = t.nodes.get(&src_ino).map(|n| n.parent);
        if let Some(n) = t.nodes.get_mut(&src_ino) {
            if n.parent == parent && n.name == name {
                n.parent = newparent;
                n.name = newname.to_owned();
            } else {
                n.aliases.retain(|(p, a)| !(*p == parent && a == name));
                n.aliases.push((newparent, newname.to_owned()));
            }
        }
        if old_parent == Some(parent) && parent != newparent {
            let still = t.nodes.get(&src_ino).map(|n| n.parent) == Some(newparent);
            if still {
                if let Some(p) = t.nodes.get_mut(&parent) {
                    p.children = p.children.saturating_sub(1);
                }
                if let Some(p) = t.nodes.get_mut(&newparent) {
                    p.children += 1;
                }
            }
        }
        Ok(Some((src_ino, super::tree::dtype_of(src.st.st_mode))))
    }
}

fn upper_dir_is_opaque(fd: RawFd) -> bool {
    super::tree::upper_dir_opaque(fd)
}

/// What [`Overlay::create_entry`] makes.
#[derive(Clone, Copy)]
pub enum NewEntry<'a> {
    /// Regular file with mode.
    File(u32),
    /// Directory with mode.
    Dir(u32),
    /// Special file: mode (with type bits) and glibc device number.
    Node(u32, u64),
    /// Symbolic link to a target.
    Symlink(&'a OsStr),
}

/// Is this xattr the overlay's own (never copied, never shown)?
pub fn private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name.starts_with(super::kept::PREFIX)
}

/// Copy all xattrs but the overlay's private ones from `sdir/sname` to `ddir/dname`.
fn copy_xattrs(sdir: RawFd, sname: &OsStr, ddir: RawFd, dname: &OsStr) -> SysResult<()> {
    copy_xattrs_except(sdir, sname, ddir, dname, &[])
}

/// [`copy_xattrs`] but for `except` as well.
pub fn copy_xattrs_except(
    sdir: RawFd,
    sname: &OsStr,
    ddir: RawFd,
    dname: &OsStr,
    except: &[u8],
) -> SysResult<()> {
    let list = match sys::list_xattr(sdir, sname) {
        Ok(l) => l,
        Err(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for attr in list.split(|b| *b == 0).filter(|a| !a.is_empty()) {
        if private_xattr(attr) || attr == except {
            continue;
        }
        let Ok(c) = std::ffi::CString::new(attr) else { continue };
        let c: &CStr = &c;
        let value = match sys::get_xattr(sdir, sname, c) {
            Ok(v) => v,
            Err(libc::ENODATA) => continue,
            Err(e) => return Err(e),
        };
        match sys::set_xattr(ddir, dname, c, &value, 0) {
            Ok(()) => {}
            // security.* labels the target filesystem refuses are not fatal (as in the kernel)
            Err(libc::ENOTSUP) | Err(libc::EPERM) if attr.starts_with(b"security.") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
