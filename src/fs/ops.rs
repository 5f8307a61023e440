//! The FUSE request handlers: each one translates a kernel request into overlay operations and replies.
//! Regular-file I/O is handed to the kernel through FUSE passthrough whenever it is available; without
//! it, the kernel's page cache serves it, with the FUSE writeback cache unless the mount turns it off.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::attr::{decode_dev, dtype_of_kind, kind_of_dtype, timespec};
use super::dirlist::{DirEnt, Listing};
use super::overlay::{lock, private_xattr, CopyMode, Handle, NewEntry, Overlay};
use super::sys;
use super::tree::DirLayers;

/// Entry and attribute cache lifetime: every change goes through this server, so the kernel's caches
/// can be trusted for long.
const TTL: Duration = Duration::from_secs(86400);
const GEN: Generation = Generation(0);
/// Listing entries copied out per look at a directory's cached listing while a READDIR reply is filled
/// (the listing is not held while the reply is sent or subdirectories are resolved).
const DIR_BATCH: usize = 128;

fn err(e: i32) -> Errno {
    Errno::from_i32(e)
}

/// How the I/O of one open file is served.
enum Served {
    /// By the kernel, on the inode's passthrough backing file.
    Passthrough(Arc<fuser::BackingId>),
    /// Here, with direct I/O; the inode's backing file (if it has one) must still be named in the reply.
    Direct(Option<Arc<fuser::BackingId>>),
    /// Here, through the kernel's page cache.
    Cached,
}

/// The mode bits a write by a caller without CAP_FSETID clears: S_ISUID always, S_ISGID when the
/// group may execute (without S_IXGRP it marks mandatory locking and stays), as the kernel does.
pub fn suid_kill_bits(mode: u32) -> u32 {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return 0;
    }
    let mut kill = mode & libc::S_ISUID;
    if mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP {
        kill |= libc::S_ISGID;
    }
    kill
}

impl Overlay {
    /// Open the current copy of `ino` (copying it up first for writing or truncation) for a caller
    /// with host uid `caller`. Returns the handle, whether it is the upper copy, and whether it was
    /// opened for writing.
    fn open_file(&self, ino: u64, flags: i32, caller: u32) -> Result<(Handle, bool, bool), i32> {
        let acc = flags & libc::O_ACCMODE;
        let write = acc != libc::O_RDONLY;
        if write || flags & libc::O_TRUNC != 0 {
            self.writable()?;
            let _g = lock(&self.mutate);
            let mode = if flags & libc::O_TRUNC != 0 { CopyMode::Empty } else { CopyMode::Full };
            self.copy_up(ino, mode)?;
        }
        if write || flags & libc::O_TRUNC != 0 {
            self.reopen_on_upper(ino);
        }
        let ((dir, name), upper) = {
            let t = lock(&self.t);
            match t.nodes.get(&ino) {
                // a metacopy file's data is still in the lower layer (opens for write copied it up above)
                Some(n) if n.metacopy && !write => {
                    let l = n.lower.as_ref().ok_or(libc::EIO)?;
                    ((l.dir.clone(), l.name.clone()), false)
                }
                _ => Self::loc_locked(&t, ino)?,
            }
        };
        // upper copies are always opened read-write (the server runs with CAP_DAC_OVERRIDE): with the
        // writeback cache the kernel reads through a handle the caller opened write-only (to fill the
        // rest of a page it writes part of), and it writes back dirty pages through any handle open
        // for writing. O_APPEND is never passed on: the kernel computes append offsets itself and
        // sends them with each write, which pwrite on an O_APPEND descriptor would ignore.
        let oflags = if upper && !self.opts.read_only { libc::O_RDWR } else { libc::O_RDONLY };
        let mut pass = libc::O_DIRECT | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;
        if !self.passthrough.load(Ordering::Relaxed) {
            // every handle is served here, from request buffers O_DIRECT's alignment rules do not
            // hold for, and with the writeback cache the kernel writes back other opens' dirty pages
            // through it too. An O_DIRECT open still bypasses the kernel's cache of this mount (the
            // kernel sends its I/O as direct FUSE requests).
            pass &= !libc::O_DIRECT;
        }
        let mut extra = flags & pass;
        if upper {
            // FUSE_ATOMIC_O_TRUNC: the truncation is ours to do
            extra |= flags & libc::O_TRUNC;
        }
        let fd = match sys::open_at(dir.as_raw_fd(), &name, oflags | extra, 0) {
            Err(libc::EPERM) if extra & libc::O_NOATIME != 0 => {
                sys::open_at(dir.as_raw_fd(), &name, oflags | (extra & !libc::O_NOATIME), 0)?
            }
            r => r?,
        };
        if upper && flags & libc::O_TRUNC != 0 {
            // what the kernel asks for with FUSE_OPEN_KILL_SUIDGID (which fuser does not pass on)
            self.kill_privs(ino, fd.as_raw_fd(), OsStr::new(""), caller != 0)?;
        }
        Ok((Handle { fd: Arc::new(fd), backing: None, ino, cached: false, upper }, upper, write))
    }

    /// With the writeback cache, move page-cache handles of `ino` still reading a lower copy to the
    /// upper copy, once the data is there (as kernel overlayfs does for files opened before a copy-up).
    /// The kernel keeps one page cache per inode: a page such a handle read from the lower copy would
    /// otherwise be taken as current by a writer that changes part of it, and written back whole over
    /// the upper copy.
    fn reopen_on_upper(&self, ino: u64) {
        if !self.writeback.load(Ordering::Relaxed) {
            return;
        }
        let ((dir, name), upper) = {
            let t = lock(&self.t);
            match (t.nodes.get(&ino), Self::loc_locked(&t, ino)) {
                (Some(n), Ok(l)) if !n.metacopy => l,
                _ => return,
            }
        };
        if !upper {
            return;
        }
        let mut hs = lock(&self.handles);
        for h in hs.values_mut().filter(|h| h.ino == ino && h.cached && !h.upper) {
            if let Ok(fd) = sys::open_at(dir.as_raw_fd(), &name, libc::O_RDONLY, 0) {
                h.fd = Arc::new(fd);
                h.upper = true;
            }
        }
    }

    /// Register the handle and decide how its I/O is served. Regular files go through FUSE passthrough,
    /// with one backing file per inode shared by all its opens (upper copies opened read-write), unless
    /// `allow_passthrough` is false (see [`Overlay::passthrough_allowed`]). The kernel takes only one
    /// backing file per inode: while a lower copy is open through passthrough, an open that copied the
    /// file up cannot have the upper copy as its backing, so it is served here with direct I/O, naming
    /// the inode's backing file in the reply as the kernel requires (`FOPEN_DIRECT_IO` takes precedence
    /// over `FOPEN_PASSTHROUGH` for read and write; only an mmap of that handle would map the backing
    /// file). Without passthrough, files are served through the page cache.
    fn register<F>(
        &self,
        ino: u64,
        mut h: Handle,
        upper: bool,
        allow_passthrough: bool,
        open_backing: F,
    ) -> (u64, Served)
    where
        F: FnOnce(&Handle) -> std::io::Result<fuser::BackingId>,
    {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let mut served = Served::Cached;
        let mut t = lock(&self.t);
        if let Some(n) = t.nodes.get_mut(&ino) {
            if self.passthrough.load(Ordering::Relaxed) && n.cached_opens == 0 {
                match n.backing.upgrade() {
                    Some(b) if n.backing_upper == upper && allow_passthrough => {
                        served = Served::Passthrough(b.clone());
                        h.backing = Some(b);
                    }
                    Some(b) => {
                        served = Served::Direct(Some(b.clone()));
                        h.backing = Some(b);
                    }
                    None if !allow_passthrough => served = Served::Direct(None),
                    None => {
                        if let Ok(b) = open_backing(&h) {
                            let b = Arc::new(b);
                            n.backing = Arc::downgrade(&b);
                            n.backing_upper = upper;
                            served = Served::Passthrough(b.clone());
                            h.backing = Some(b);
                        }
                    }
                }
            }
            if matches!(served, Served::Cached) {
                h.cached = true;
                n.cached_opens += 1;
            }
        }
        drop(t);
        lock(&self.handles).insert(fh, h);
        (fh, served)
    }

    /// May a write-open by host uid `caller` of inode `ino`, open as `fd`, use passthrough? Not when the
    /// write must clear setuid/setgid bits: passthrough writes reach the backing file with the server's
    /// credentials (which keep them), so such opens are served here, where FUSE_WRITE_KILL_SUIDGID is
    /// honoured. Host uid 0 stands in for CAP_FSETID (a container's root under a user namespace does
    /// not have it either, as for the kernel). Nor when a file capability is kept off disk (see
    /// [`super::kept`]): any write clears it, and only a write served here can.
    fn passthrough_allowed(&self, write: bool, caller: u32, ino: u64, fd: std::os::fd::RawFd) -> bool {
        if !write {
            return true;
        }
        if self.kept_caps(ino) {
            return false;
        }
        caller == 0 || sys::fstat(fd).map_or(true, |st| suid_kill_bits(self.real_mode(ino, &st)) == 0)
    }

    /// Whether an open served through the page cache keeps the pages the kernel has of the file.
    /// Lower files never change. Upper files change only through this mount while it is mounted, so
    /// with the writeback cache their pages are kept too: dropping them would first write back every
    /// dirty page at each open (without it, writes go through at once and opens drop the pages, as
    /// before).
    fn keep_cache(&self, upper: bool) -> FopenFlags {
        if !upper || self.writeback.load(Ordering::Relaxed) {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        }
    }

    fn handle_fd(&self, fh: FileHandle) -> Result<Arc<std::os::fd::OwnedFd>, i32> {
        lock(&self.handles).get(&fh.0).map(|h| h.fd.clone()).ok_or(libc::EBADF)
    }

    /// Answer a CREATE or TMPFILE with the new file `ino`, open as `file`: through passthrough when
    /// possible, else served here.
    fn reply_created(
        &self,
        req: &Request,
        ino: u64,
        attr: &fuser::FileAttr,
        file: std::os::fd::OwnedFd,
        reply: ReplyCreate,
    ) {
        let h = Handle { fd: Arc::new(file), backing: None, ino, cached: false, upper: true };
        let allow = self.passthrough_allowed(true, req.uid(), ino, h.fd.as_raw_fd());
        let (fh, served) = self.register(ino, h, true, allow, |h| reply.open_backing(h.fd.as_fd()));
        let (fh, nf) = (FileHandle(fh), FopenFlags::FOPEN_NOFLUSH);
        match served {
            Served::Passthrough(b) => reply.created_passthrough(&TTL, attr, GEN, fh, nf, &b),
            Served::Direct(Some(b)) => {
                reply.created_passthrough(&TTL, attr, GEN, fh, nf | FopenFlags::FOPEN_DIRECT_IO, &b)
            }
            Served::Direct(None) => reply.created(&TTL, attr, GEN, fh, nf | FopenFlags::FOPEN_DIRECT_IO),
            Served::Cached => reply.created(&TTL, attr, GEN, fh, nf | self.keep_cache(true)),
        }
    }

    /// The next entries of directory `ino` after readdir offset `offset`, at most [`DIR_BATCH`]: from the
    /// listing cached on the node or, for the `first` batch of a reply, one built afresh at offset 0
    /// (as POSIX wants of rewinddir) or when none is cached. A reader whose first batch is empty has
    /// reached the end, and the listing is let go. A later batch finds none if the listing went away
    /// meanwhile: the reply then ends early and the kernel asks again from where it stopped.
    fn dir_batch(&self, ino: u64, offset: u64, first: bool) -> Result<Vec<DirEnt>, i32> {
        let changes = {
            let mut t = lock(&self.t);
            let n = t.nodes.get_mut(&ino).ok_or(libc::ENOENT)?;
            if offset != 0 || !first {
                if let Some(l) = &n.listing {
                    let batch = l.batch(offset, DIR_BATCH);
                    if first && batch.is_empty() {
                        n.listing = None;
                    }
                    return Ok(batch);
                }
                if !first {
                    return Ok(Vec::new());
                }
            }
            n.dir_changes
        };
        let dir = self.dir_of(ino)?;
        let entries = self.stack.list(&dir, ino)?;
        self.stack.counters.listing_built();
        let mut t = lock(&self.t);
        let parent = t.nodes.get(&ino).map(|n| n.parent).unwrap_or(ino);
        let named = entries.into_iter().map(|(name, dtype, key)| (name, dtype, t.ino_for(key))).collect();
        let l = Listing::new(ino, parent, named);
        let batch = l.batch(offset, DIR_BATCH);
        if let Some(n) = t.nodes.get_mut(&ino) {
            // a change that came in while the layers were read may be missing from `l`: then it
            // serves this batch only
            if n.dir_changes == changes && !batch.is_empty() {
                n.listing = Some(Box::new(l));
            }
        }
        Ok(batch)
    }

    /// Hand the entries of directory `ino` after `offset` to `add` until it says the reply is full
    /// (returns true) or the listing ends.
    fn fill_dir(&self, ino: u64, offset: u64, mut add: impl FnMut(&DirEnt) -> bool) -> Result<(), i32> {
        let mut next = offset;
        let mut first = true;
        loop {
            let batch = self.dir_batch(ino, next, first)?;
            first = false;
            let Some(last) = batch.last() else { return Ok(()) };
            next = last.cookie;
            for e in &batch {
                if add(e) {
                    return Ok(());
                }
            }
        }
    }

    /// Add entry `e` of directory `ino` (layers `dir`) to a READDIRPLUS reply; true when it is full.
    /// Subdirectories come with their attributes: a tree walk (find, du, ls -R) opens each of them next,
    /// and this saves that LOOKUP. Everything else goes as a name only (node id 0): such walks never
    /// stat it, and resolving it here would cost a stat per layer and a kernel inode per name for
    /// nothing. "." and ".." the kernel never links.
    fn add_plus(&self, dir: &DirLayers, ino: u64, e: &DirEnt, reply: &mut ReplyDirectoryPlus) -> bool {
        if e.dtype == libc::DT_DIR && e.name != "." && e.name != ".." {
            if let Ok(Some(f)) = self.stack.resolve(dir, ino, &e.name) {
                if self.opts.readahead {
                    if let Some(d) = &f.dir {
                        d.upper
                            .iter()
                            .chain(d.lowers.iter().map(|(_, fd)| fd))
                            .for_each(|fd| self.readahead.push(fd));
                    }
                }
                let eino = lock(&self.t).ino_for(f.key);
                let attr = self.found_attr(eino, &f);
                if reply.add(INodeNo(eino), e.cookie, &e.name, &TTL, &attr, GEN) {
                    return true;
                }
                lock(&self.t).install(ino, &e.name, &f, 1);
                return false;
            }
        }
        // SAFETY: a plain C struct, all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_mode = u32::from(e.dtype) << 12;
        reply.add(INodeNo(0), e.cookie, &e.name, &TTL, &super::attr::to_attr(e.ino, &st), GEN)
    }

    /// A change to the entries of directory `parent` through the mount is done: apply it to the cached
    /// listing (`added` names the new entry's object and type), or, after a failure, which may have done
    /// part of its work, drop that listing.
    fn changed<T>(&self, parent: u64, r: &Result<T, i32>, name: &OsStr, added: impl FnOnce(&T) -> (u64, u8)) {
        let mut t = lock(&self.t);
        match r {
            Ok(v) => {
                let (ino, dtype) = added(v);
                t.entry_added(parent, name, ino, dtype);
            }
            Err(_) => t.dir_changed(parent),
        }
    }

    /// `parent/name` was removed (`r` is the outcome).
    fn removed(&self, parent: u64, r: &Result<(), i32>, name: &OsStr) {
        let mut t = lock(&self.t);
        match r {
            Ok(()) => t.entry_removed(parent, name),
            Err(_) => t.dir_changed(parent),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
        caller: u32,
    ) -> Result<fuser::FileAttr, i32> {
        self.writable()?;
        {
            let _g = lock(&self.mutate);
            let cm = match size {
                Some(0) => CopyMode::Empty,
                Some(_) => CopyMode::Full,
                None => CopyMode::Meta,
            };
            self.copy_up(ino, cm)?;
        }
        if size.is_some() {
            self.reopen_on_upper(ino);
        }
        let ((dir, name), upper) = self.loc(ino)?;
        if !upper {
            return Err(libc::EIO);
        }
        let d = dir.as_raw_fd();
        if uid.is_some() || gid.is_some() {
            // the kernel sends host ids; the layers keep container ids
            let ids = &self.opts.ids;
            let uid = uid.map(|u| ids.chown_uid(u)).transpose()?;
            let gid = gid.map(|g| ids.chown_gid(g)).transpose()?;
            sys::chown_at(d, &name, uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))?;
            self.chown_kept(ino, d, &name)?;
        }
        if let Some(m) = mode {
            let st = sys::stat_at(d, &name)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                self.chmod_kept(ino, d, &name, st.st_mode, m & 0o7777)?;
            }
        }
        if let Some(s) = size {
            let from_handle = fh.and_then(|f| self.handle_fd(f).ok());
            match from_handle {
                Some(fd) if sys::ftruncate(fd.as_raw_fd(), s).is_ok() => {}
                _ => {
                    let f = sys::open_at(d, &name, libc::O_WRONLY, 0)?;
                    sys::ftruncate(f.as_raw_fd(), s)?;
                }
            }
            if mode.is_none() {
                // FATTR_KILL_SUIDGID, which fuser does not pass on: a truncation by a caller without
                // CAP_FSETID clears setuid/setgid (and any truncation a file capability)
                self.kill_privs(ino, d, &name, caller != 0)?;
            }
        }
        if atime.is_some() || mtime.is_some() {
            sys::utimens_at(d, &name, &[timespec(atime), timespec(mtime)])?;
        }
        self.attr(ino)
    }
}

impl Filesystem for Overlay {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for cap in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            // opens that cannot share an inode's passthrough backing file fall back to direct I/O;
            // they must still be mmap-able
            InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP,
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_SPLICE_READ,
            InitFlags::FUSE_SPLICE_WRITE,
            // READDIRPLUS where it pays: the kernel asks for it on a directory's first chunk and after
            // lookups in it (a tree walk), plain READDIR otherwise
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
        ] {
            let _ = config.add_capabilities(cap);
        }
        if self.opts.passthrough
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        // the two exclude each other: passthrough I/O bypasses the page cache the writeback cache
        // keeps dirty pages (and the size and times that go with them) in
        if self.opts.writeback
            && !self.opts.read_only
            && !self.passthrough.load(Ordering::Relaxed)
            && config.add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE).is_ok()
        {
            self.writeback.store(true, Ordering::Relaxed);
        }
        if self.opts.uring {
            // refused when the kernel does not offer it (fuse.enable_uring=0, before 6.14): /dev/fuse
            let _ = config.add_capabilities(InitFlags::FUSE_OVER_IO_URING);
        }
        if config.capabilities().contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT) {
            self.no_opendir.store(true, Ordering::Relaxed);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn destroy(&mut self) {
        self.forget_shared_whiteout();
        let s = self.stack.counters.snapshot();
        log::debug!(
            "overlay server done: {} merged listings built, {} directory entries scanned",
            s.listings_built,
            s.entries_scanned
        );
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_install(parent.0, name, 1) {
            Ok((node, attr)) => reply.entry_node(INodeNo(node), &TTL, &attr, GEN),
            // a negative entry (node id 0) the kernel may cache: names only appear through this mount
            Err(libc::ENOENT) => {
                let mut attr = super::attr::to_attr(0, &unsafe { std::mem::zeroed() });
                attr.ino = INodeNo(0);
                reply.entry(&TTL, &attr, GEN)
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut t = lock(&self.t);
        t.forget(ino.0, nlookup);
        self.kept_forgotten(&t, ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => {
                // an open file whose name is gone: its handle still knows it
                let st =
                    fh.and_then(|f| self.handle_fd(f).ok()).and_then(|fd| sys::fstat(fd.as_raw_fd()).ok());
                match st {
                    Some(st) => reply.attr(&TTL, &self.present(ino.0, &st)),
                    None => reply.error(err(e)),
                }
            }
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino.0, mode, uid, gid, size, atime, mtime, fh, req.uid()) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.loc(ino.0).and_then(|((d, n), _)| sys::readlink_at(d.as_raw_fd(), &n)) {
            Ok(t) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str())),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let what = if mode & libc::S_IFMT == libc::S_IFREG {
            NewEntry::File(mode)
        } else {
            NewEntry::Node(mode, decode_dev(rdev))
        };
        let r = self.create_entry(req.uid(), req.gid(), parent.0, name, what);
        self.changed(parent.0, &r, name, |(ino, attr, _)| (*ino, dtype_of_kind(attr.kind)));
        match r {
            Ok((_, attr, _)) => reply.entry(&TTL, &attr, GEN),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let r = self.create_entry(req.uid(), req.gid(), parent.0, name, NewEntry::Dir(mode));
        self.changed(parent.0, &r, name, |(ino, _, _)| (*ino, libc::DT_DIR));
        match r {
            Ok((_, attr, _)) => reply.entry(&TTL, &attr, GEN),
            Err(e) => reply.error(err(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.remove(parent.0, name, false);
        self.removed(parent.0, &r, name);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.remove(parent.0, name, true);
        self.removed(parent.0, &r, name);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let what = NewEntry::Symlink(target.as_os_str());
        let r = self.create_entry(req.uid(), req.gid(), parent.0, link_name, what);
        self.changed(parent.0, &r, link_name, |(ino, _, _)| (*ino, libc::DT_LNK));
        match r {
            Ok((_, attr, _)) => reply.entry(&TTL, &attr, GEN),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = Overlay::rename(self, parent.0, name, newparent.0, newname, flags.bits());
        {
            let mut t = lock(&self.t);
            match &r {
                // the same object under both names: nothing moved
                Ok(None) => {}
                Ok(Some((ino, dtype))) => {
                    t.entry_removed(parent.0, name);
                    t.entry_added(newparent.0, newname, *ino, *dtype);
                }
                Err(_) => {
                    t.dir_changed(parent.0);
                    t.dir_changed(newparent.0);
                }
            }
        }
        match r {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let r = Overlay::link(self, ino.0, newparent.0, newname);
        self.changed(newparent.0, &r, newname, |(node, attr)| (*node, dtype_of_kind(attr.kind)));
        match r {
            Ok((node, attr)) => reply.entry_node(INodeNo(node), &TTL, &attr, GEN),
            Err(e) => reply.error(err(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (h, upper, write) = match self.open_file(ino.0, flags.0, req.uid()) {
            Ok(x) => x,
            Err(e) => return reply.error(err(e)),
        };
        let allow = self.passthrough_allowed(write, req.uid(), ino.0, h.fd.as_raw_fd());
        let (fh, served) = self.register(ino.0, h, upper, allow, |h| reply.open_backing(h.fd.as_fd()));
        if matches!(served, Served::Cached) && !upper {
            // a copy-up that finished while this lower copy was being opened moved the handles it could
            // see to the upper copy before this one was registered: look again (the copy-up marks the
            // node upper before it looks at the handles, so one of the two sees the other)
            self.reopen_on_upper(ino.0);
        }
        // flush is a no-op here (no POSIX locks are kept by the server): spare the round trip on close
        let nf = FopenFlags::FOPEN_NOFLUSH;
        match served {
            Served::Passthrough(b) => reply.opened_passthrough(FileHandle(fh), nf, &b),
            Served::Direct(Some(b)) => {
                reply.opened_passthrough(FileHandle(fh), nf | FopenFlags::FOPEN_DIRECT_IO, &b)
            }
            Served::Direct(None) => reply.opened(FileHandle(fh), nf | FopenFlags::FOPEN_DIRECT_IO),
            Served::Cached => reply.opened(FileHandle(fh), nf | self.keep_cache(upper)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fd = match self.handle_fd(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(err(e)),
        };
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match sys::pread(fd.as_raw_fd(), &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(libc::EINTR) => continue,
                Err(e) => return reply.error(err(e)),
            }
        }
        reply.data(&buf[..done]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fd = match self.handle_fd(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(err(e)),
        };
        // the kernel asks for this (HANDLE_KILLPRIV_V2) when the writer lacks CAP_FSETID; a file
        // capability kept off disk goes at any write, as the host's kernel drops one on disk
        let setid = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        if setid || self.kept_caps(ino.0) {
            if let Err(e) = self.kill_privs(ino.0, fd.as_raw_fd(), OsStr::new(""), setid) {
                return reply.error(err(e));
            }
        }
        let mut done = 0;
        while done < data.len() {
            match sys::pwrite(fd.as_raw_fd(), &data[done..], offset + done as u64) {
                Ok(n) => done += n,
                Err(libc::EINTR) => continue,
                Err(e) => return reply.error(err(e)),
            }
        }
        reply.written(done as u32);
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        // nothing to do here (no POSIX locks are kept by the server). Opens say so with FOPEN_NOFLUSH,
        // which the kernel ignores under the writeback cache: it writes the file's dirty pages back at
        // each close and then asks. ENOSYS tells it never to ask again (it still writes back first),
        // sparing a round trip per close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = lock(&self.handles).remove(&fh.0);
        if let Some(h) = &h {
            let unnamed = {
                let mut t = lock(&self.t);
                let n = t.nodes.get_mut(&h.ino);
                let unnamed = n.as_ref().is_some_and(|n| n.tmpfile.is_some());
                if let Some(n) = n.filter(|_| h.cached) {
                    n.cached_opens = n.cached_opens.saturating_sub(1);
                }
                unnamed
            };
            // the last close of an unnamed file removes it (only those are worth a look at the others)
            if unnamed && !lock(&self.handles).values().any(|o| o.ino == h.ino) {
                self.closed(h.ino);
            }
        }
        drop(h);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        match self.handle_fd(fh).and_then(|fd| sys::fsync(fd.as_raw_fd(), datasync)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir.load(Ordering::Relaxed) {
            // from now on the kernel opens directories without asking (no OPENDIR/RELEASEDIR round
            // trips) and caches their listings (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR by default); listings
            // are kept per inode with name-derived offsets (see dirlist), so no handle is needed
            return reply.error(Errno::ENOSYS);
        }
        if let Err(e) = self.dir_of(ino.0) {
            return reply.error(err(e));
        }
        // the kernel may cache listings: every change to a directory goes through this mount, which
        // invalidates the cache
        reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let r = self.fill_dir(ino.0, offset, |e| {
            reply.add(INodeNo(e.ino), e.cookie, kind_of_dtype(e.dtype), &e.name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let dir = match self.dir_of(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(err(e)),
        };
        match self.fill_dir(ino.0, offset, |e| self.add_plus(&dir, ino.0, e, &mut reply)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let r = self.dir_of(ino.0).and_then(|d| match d.upper {
            Some(u) => sys::fsync(u.as_raw_fd(), datasync),
            None => Ok(()),
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let root = match (&self.stack.upper, self.stack.lowers.first()) {
            (Some(u), _) => u.root.clone(),
            (None, Some(l)) => l.root.clone(),
            (None, None) => return reply.error(Errno::EIO),
        };
        match sys::statvfs(root.as_raw_fd()) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            use std::os::unix::ffi::OsStrExt;
            if private_xattr(name.as_bytes()) {
                return Err(libc::EPERM);
            }
            self.writable()?;
            {
                let _g = lock(&self.mutate);
                self.copy_up(ino.0, CopyMode::Meta)?;
            }
            let ((d, n), _) = self.loc(ino.0)?;
            if self.opts.ids.translates(name.as_bytes()) {
                let v = self.opts.ids.xattr_to_disk(name.as_bytes(), value)?;
                return self.kept_set_xattr(ino.0, d.as_raw_fd(), &n, &sys::cstr(name)?, &v, flags);
            }
            sys::set_xattr(d.as_raw_fd(), &n, &sys::cstr(name)?, value, flags)
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = (|| {
            use std::os::unix::ffi::OsStrExt;
            if private_xattr(name.as_bytes()) {
                return Err(libc::ENODATA);
            }
            let ((d, n), _) = self.loc(ino.0)?;
            let v = self.kept_get_xattr(ino.0, d.as_raw_fd(), &n, &sys::cstr(name)?)?;
            if self.opts.ids.translates(name.as_bytes()) {
                // a malformed stored value is shown as it is rather than hidden
                return Ok(self.opts.ids.xattr_from_disk(name.as_bytes(), &v).unwrap_or(v));
            }
            Ok(v)
        })();
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(err(e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        // trusted.* names are visible only to privileged callers (the kernel filters them for the
        // underlying filesystem by the caller's capabilities; here the caller's uid stands in)
        let privileged = req.uid() == 0;
        let r = self.loc(ino.0).and_then(|((d, n), _)| self.kept_list_xattr(ino.0, d.as_raw_fd(), &n));
        match r {
            Ok(list) => {
                let mut out = Vec::with_capacity(list.len());
                for a in list.split(|b| *b == 0).filter(|a| !a.is_empty()) {
                    if !private_xattr(a) && (privileged || !a.starts_with(b"trusted.")) {
                        out.extend_from_slice(a);
                        out.push(0);
                    }
                }
                if size == 0 {
                    reply.size(out.len() as u32);
                } else if out.len() > size as usize {
                    reply.error(Errno::from_i32(libc::ERANGE));
                } else {
                    reply.data(&out);
                }
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = (|| {
            use std::os::unix::ffi::OsStrExt;
            if private_xattr(name.as_bytes()) {
                return Err(libc::EPERM);
            }
            let c = sys::cstr(name)?;
            let ((d, n), upper) = self.loc(ino.0)?;
            if !upper {
                sys::get_xattr(d.as_raw_fd(), &n, &c)?;
            }
            self.writable()?;
            {
                let _g = lock(&self.mutate);
                self.copy_up(ino.0, CopyMode::Meta)?;
            }
            let ((d, n), _) = self.loc(ino.0)?;
            self.kept_remove_xattr(ino.0, d.as_raw_fd(), &n, &c)
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        match self.loc(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.create_entry(req.uid(), req.gid(), parent.0, name, NewEntry::File(mode));
        self.changed(parent.0, &r, name, |(ino, _, _)| (*ino, libc::DT_REG));
        let _ = flags;
        match r {
            Ok((i, a, Some(f))) => self.reply_created(req, i, &a, f, reply),
            Ok(_) => reply.error(Errno::EIO),
            Err(e) => reply.error(err(e)),
        }
    }

    fn tmpfile(
        &self,
        req: &Request,
        parent: INodeNo,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_tmpfile(req.uid(), req.gid(), parent.0, mode) {
            Ok((i, a, f)) => self.reply_created(req, i, &a, f, reply),
            Err(e) => reply.error(err(e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // no ioctls are served (the kernel asks for every one, e.g. the TCGETS of each isatty()): say so
        // at once, without fuser's default per-call warning
        reply.error(Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.handle_fd(fh).and_then(|fd| sys::fallocate(fd.as_raw_fd(), mode, offset, length)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.handle_fd(fh).and_then(|fd| sys::lseek(fd.as_raw_fd(), offset, whence)) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(err(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let r = (|| {
            let a = self.handle_fd(fh_in)?;
            let b = self.handle_fd(fh_out)?;
            let mut oi = offset_in as libc::loff_t;
            let mut oo = offset_out as libc::loff_t;
            let want = len.min(1 << 30) as usize;
            // SAFETY: offsets are valid pointers; fds are open.
            let n = unsafe { libc::copy_file_range(a.as_raw_fd(), &mut oi, b.as_raw_fd(), &mut oo, want, 0) };
            if n < 0 {
                Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
            } else {
                Ok(n as u32)
            }
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        }
    }
}
