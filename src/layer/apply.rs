//! Applying one layer tar into its own directory, in kernel-overlayfs format.
//!
//! The result is one `lowerdir` of an overlay stack: whiteouts (`.wh.NAME`) become 0/0 character
//! devices, opaque markers (`.wh..wh..opq`) become `trusted.overlay.opaque=y` on the directory. Nothing is
//! flattened onto the layers below; they are only consulted for hard links into them and for the
//! metadata of implicit parent directories.
//!
//! Safety against hostile tars: every name is cleaned lexically ([`super::path::clean`]) and then
//! resolved one component at a time from an fd of the layer root with `O_NOFOLLOW | O_DIRECTORY`, so a
//! symlink anywhere in a parent position is refused, never followed; each write is an `*at` call on the
//! final component relative to its parent's fd. A path therefore cannot leave the layer directory, no
//! matter what earlier entries created.

use super::guard::Guard;
use super::lower::{self, OPAQUE_XATTR};
use super::path::{self, BadPath};
use super::sparse::{self, PaxSparse, SparseError};
use super::sys;
use super::LayerError;
use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tar::EntryType;

/// Knobs for [`apply`]. The limits bound what a hostile layer can make rimg do; the defaults are far
/// above anything a real image needs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The already-applied layer directories below this one, top first. Used for hard links whose
    /// target is in a lower layer (the target is copied up into this layer, as an overlay snapshotter
    /// would) and to give implicit parent directories the owner/mode/times they have below. May be empty:
    /// then such hard links are an error and implicit parents get `0755 root:root`.
    pub lowers: Vec<PathBuf>,
    /// Maximum number of tar entries (headers) in the layer.
    pub max_entries: u64,
    /// Maximum length in bytes of an entry name or link target.
    pub max_path_len: usize,
    /// Maximum size in bytes of one xattr value.
    pub max_xattr_size: usize,
    /// Maximum size in bytes of one PAX header or GNU long-name entry (they are read into memory
    /// whole; a bomb of compressed zeros must not exhaust it).
    pub max_header_size: u64,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            lowers: Vec::new(),
            max_entries: 1_000_000,
            max_path_len: 4096,
            max_xattr_size: 64 * 1024,
            max_header_size: 16 << 20,
        }
    }
}

/// What [`apply`] wrote, for progress output and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries read (not counting the PAX/GNU headers the tar reader folds into them).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hard links.
    pub hardlinks: u64,
    /// Character/block devices and fifos.
    pub devices: u64,
    /// Whiteouts (`.wh.NAME` → 0/0 character device).
    pub whiteouts: u64,
    /// Opaque directory markers (`.wh..wh..opq`).
    pub opaques: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Files copied up from a lower layer because a hard link in this layer pointed at them.
    pub lower_copies: u64,
    /// Extended attributes set.
    pub xattrs: u64,
    /// Extended attributes dropped (overlay-private names, or not supported by the file system).
    pub xattrs_dropped: u64,
    /// Entries ignored (PAX global headers, aufs `.wh..wh.*` metadata).
    pub ignored: u64,
}

const COPY_BUF: usize = 256 * 1024;

/// Apply the uncompressed layer tar `reader` into `dest` (created if missing) in kernel-overlayfs
/// format, and read `reader` to its end (so a hashing reader underneath sees every byte).
///
/// Reading (and with it decompression and any hashing the caller stacked under `reader`) runs on a
/// second thread, pipelined with the file writes on this one, the way `gzip -dc | tar -x` uses two
/// processes.
///
/// On error the directory is left partially written; the caller discards it.
pub fn apply<R: Read + Send>(reader: R, dest: &Path, opts: &ApplyOptions) -> Result<ApplyStats, LayerError> {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(PIPE_DEPTH);
        let (back_tx, back_rx) = mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH + 2);
        let producer = scope.spawn(move || pump(reader, tx, back_rx));
        let guard = Guard::new(opts.max_header_size);
        let res =
            apply_buffered(ChanReader { rx, back: back_tx, cur: Vec::new(), pos: 0, guard }, dest, opts);
        // On an early error the reader was dropped, so the pump stops at its next send.
        let _ = producer.join();
        res
    })
}

const PIPE_CHUNK: usize = 512 * 1024;
const PIPE_DEPTH: usize = 8;

/// The reading side of [`apply`]: fill chunks from `reader` and send them on, reusing returned chunks.
fn pump<R: Read>(mut reader: R, tx: mpsc::SyncSender<io::Result<Vec<u8>>>, back: mpsc::Receiver<Vec<u8>>) {
    loop {
        let mut buf = back.try_recv().unwrap_or_default();
        buf.resize(PIPE_CHUNK, 0);
        let mut n = 0;
        while n < buf.len() {
            match reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        if n == 0 {
            return;
        }
        buf.truncate(n);
        if tx.send(Ok(buf)).is_err() {
            return;
        }
    }
}

/// The consuming side: chunks from [`pump`] as one buffered stream.
struct ChanReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    back: mpsc::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    /// Follows the tar framing to refuse oversized extension headers before they are read.
    guard: Guard,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChanReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Some(v) = &self.guard.violation {
            return Err(io::Error::new(io::ErrorKind::InvalidData, v.clone()));
        }
        if self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let old = std::mem::replace(&mut self.cur, next);
                    let _ = self.back.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(&[]), // the pump finished: end of stream
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        let end = (self.pos + n).min(self.cur.len());
        self.guard.feed(&self.cur[self.pos..end]);
        self.pos += n;
    }
}

/// [`apply`] on the current thread, from a buffered reader.
fn apply_buffered<B: BufRead>(
    mut reader: B,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    match std::fs::create_dir(dest) {
        Ok(()) => {
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| LayerError::io_path(dest, "chmod", e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(LayerError::io_path(dest, "create", e)),
    }
    let root = sys::open_dir(dest).map_err(|e| LayerError::io_path(dest, "open", e))?;
    let mut ctx = Ctx {
        opts,
        stats: ApplyStats::default(),
        path: Vec::with_capacity(256),
        link: Vec::with_capacity(256),
        cbuf: Vec::with_capacity(256),
        cbuf2: Vec::with_capacity(256),
        xattrs: Vec::new(),
        sparse: None,
        dir_times: HashMap::new(),
        buf: vec![0u8; COPY_BUF],
        // SAFETY: geteuid/getegid cannot fail.
        ids: unsafe { (libc::geteuid(), libc::getegid()) },
    };
    let mut stack = DirStack::default();
    {
        let mut archive = tar::Archive::new(&mut reader);
        let entries = archive.entries().map_err(LayerError::Read)?;
        for entry in entries {
            let mut entry = entry.map_err(LayerError::Read)?;
            ctx.stats.entries += 1;
            if ctx.stats.entries > opts.max_entries {
                return Err(LayerError::Limit {
                    path: String::new(),
                    what: "entries",
                    limit: opts.max_entries,
                });
            }
            ctx.entry(root.as_fd(), &mut stack, &mut entry)?;
        }
    }
    ctx.finish_dir_times(root.as_fd(), &mut stack)?;
    // Tar writers pad the archive (to 10 KiB records, or more); drain it so the caller's digest covers the
    // whole blob.
    io::copy(&mut reader, &mut io::sink()).map_err(LayerError::Read)?;
    Ok(ctx.stats)
}

/// Metadata common to all entry kinds.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    times: [libc::timespec; 2],
}

struct Ctx<'o> {
    opts: &'o ApplyOptions,
    stats: ApplyStats,
    /// The cleaned name of the current entry.
    path: Vec<u8>,
    /// The cleaned hard-link target of the current entry.
    link: Vec<u8>,
    cbuf: Vec<u8>,
    cbuf2: Vec<u8>,
    /// SCHILY xattrs of the current entry (after filtering).
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The current entry's GNU PAX sparse map, if it is a sparse file in one of the PAX formats.
    sparse: Option<PaxSparse>,
    /// Directory times to set after everything is written (writing into a directory changes its mtime).
    dir_times: HashMap<Vec<u8>, [libc::timespec; 2]>,
    buf: Vec<u8>,
    ids: (u32, u32),
}

/// The chain of directory fds leading to the previous entry's parent: consecutive tar entries are
/// mostly in the same or a neighbouring directory, so only the differing tail is re-opened.
#[derive(Default)]
struct DirStack {
    stack: Vec<(Vec<u8>, OwnedFd)>,
}

/// Why a parent path could not be walked.
enum WalkErr {
    /// A component (the prefix given) is a symlink.
    Symlink(Vec<u8>),
    /// A component is neither a directory nor a symlink.
    NotDir(Vec<u8>),
    /// The path does not exist and creation was not asked for.
    Missing,
    Io(&'static str, io::Error),
}

impl DirStack {
    /// An fd for the directory `parent` (cleaned, relative to `root`). With `create`, missing components
    /// are created as implicit directories (metadata from the lowers when they have the directory).
    fn walk<'s>(
        &'s mut self,
        root: BorrowedFd<'s>,
        parent: &[u8],
        mut create: Option<&mut Ctx<'_>>,
    ) -> Result<BorrowedFd<'s>, WalkErr> {
        let mut depth = 0;
        let mut end = 0;
        if !parent.is_empty() {
            let mut cbuf = Vec::new();
            for comp in parent.split(|&b| b == b'/') {
                end += comp.len() + usize::from(end != 0);
                if depth < self.stack.len() && self.stack[depth].0 == comp {
                    depth += 1;
                    continue;
                }
                self.stack.truncate(depth);
                let dir = if depth == 0 { root } else { self.stack[depth - 1].1.as_fd() };
                let fd = open_component(dir, comp, &parent[..end], &mut cbuf, create.as_deref_mut())?;
                self.stack.push((comp.to_vec(), fd));
                depth += 1;
            }
        }
        self.stack.truncate(depth);
        Ok(if depth == 0 { root } else { self.stack[depth - 1].1.as_fd() })
    }
}

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

fn open_component(
    dir: BorrowedFd<'_>,
    comp: &[u8],
    prefix: &[u8],
    cbuf: &mut Vec<u8>,
    create: Option<&mut Ctx<'_>>,
) -> Result<OwnedFd, WalkErr> {
    let c = sys::cstr(cbuf, comp).map_err(|e| WalkErr::Io("open", e))?;
    match sys::openat(dir, c, DIR_FLAGS, 0) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            let Some(ctx) = create else { return Err(WalkErr::Missing) };
            sys::mkdirat(dir, c, 0o755).map_err(|e| WalkErr::Io("mkdir", e))?;
            let fd = sys::openat(dir, c, DIR_FLAGS, 0).map_err(|e| WalkErr::Io("open", e))?;
            ctx.implicit_dir_meta(fd.as_fd(), prefix).map_err(|e| WalkErr::Io("copy lower metadata", e))?;
            Ok(fd)
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            let st = sys::lstatat(dir, c).map_err(|e| WalkErr::Io("stat", e))?;
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return Err(WalkErr::Symlink(prefix.to_vec()));
            }
            match create {
                // A whiteout of this same layer in a parent position (`.wh.a` then `a/b` without an `a/`
                // entry): the new `a` replaces the lower one entirely, i.e. an opaque directory.
                Some(ctx) if sys::is_whiteout(&st) => {
                    sys::unlinkat(dir, c, false).map_err(|e| WalkErr::Io("unlink", e))?;
                    sys::mkdirat(dir, c, 0o755).map_err(|e| WalkErr::Io("mkdir", e))?;
                    let fd = sys::openat(dir, c, DIR_FLAGS, 0).map_err(|e| WalkErr::Io("open", e))?;
                    let mut nb = Vec::new();
                    let xn =
                        sys::cstr(&mut nb, OPAQUE_XATTR.as_bytes()).map_err(|e| WalkErr::Io("xattr", e))?;
                    sys::fsetxattr(fd.as_fd(), xn, b"y").map_err(|e| WalkErr::Io("set opaque xattr", e))?;
                    ctx.stats.opaques += 1;
                    Ok(fd)
                }
                _ => Err(WalkErr::NotDir(prefix.to_vec())),
            }
        }
        Err(e) => Err(WalkErr::Io("open", e)),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn is_aufs_meta(parent: &[u8]) -> bool {
    parent.split(|&b| b == b'/').any(|c| c.starts_with(b".wh..wh."))
}

fn is_overlay_private(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

impl Ctx<'_> {
    fn err_io(&self, op: &'static str, e: io::Error) -> LayerError {
        LayerError::Io { path: lossy(&self.path), op, source: e }
    }

    fn invalid(&self, reason: impl Into<String>) -> LayerError {
        LayerError::Invalid { path: lossy(&self.path), reason: reason.into() }
    }

    fn walk_err(&self, e: WalkErr) -> LayerError {
        match e {
            WalkErr::Symlink(p) => {
                self.invalid(format!("parent {:?} is a symlink; refusing to write through it", lossy(&p)))
            }
            WalkErr::NotDir(p) => self.invalid(format!("parent {:?} is not a directory", lossy(&p))),
            WalkErr::Missing => self.invalid("parent directory does not exist"),
            WalkErr::Io(op, e) => self.err_io(op, e),
        }
    }

    fn entry<R: Read>(
        &mut self,
        root: BorrowedFd<'_>,
        stack: &mut DirStack,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        let etype = entry.header().entry_type();
        if matches!(etype, EntryType::XGlobalHeader) {
            self.stats.ignored += 1;
            return Ok(());
        }
        self.sparse = self.pax_sparse(entry)?;
        let trailing_slash;
        {
            // A PAX sparse file's entry name is GNU tar's `GNUSparseFile.NNN/NAME`; the real one is in its map.
            let raw = match self.sparse.as_mut().and_then(|s| s.name.take()) {
                Some(name) => std::borrow::Cow::Owned(name),
                None => entry.path_bytes(),
            };
            if raw.len() > self.opts.max_path_len {
                return Err(LayerError::Limit {
                    path: format!("{}…", lossy(&raw[..64.min(raw.len())])),
                    what: "path length",
                    limit: self.opts.max_path_len as u64,
                });
            }
            trailing_slash = raw.ends_with(b"/");
            if let Err(bad) = path::clean(&raw, &mut self.path) {
                let shown = lossy(&raw);
                return Err(match bad {
                    BadPath::Escapes => LayerError::Escape { path: shown },
                    BadPath::Nul => LayerError::Invalid { path: shown, reason: "NUL byte in name".into() },
                });
            }
        }
        let meta = self.read_meta(entry)?;
        let is_dir = matches!(etype, EntryType::Directory) || (etype.is_file() && trailing_slash);

        if self.path.is_empty() {
            // `./`: the layer root's own metadata.
            if !is_dir {
                return Err(self.invalid("entry replaces the layer root with a non-directory"));
            }
            self.set_fd_meta(root, &meta)?;
            self.dir_times.insert(Vec::new(), meta.times);
            self.stats.dirs += 1;
            return Ok(());
        }

        let path = std::mem::take(&mut self.path);
        let res = self.entry_at(root, stack, entry, etype, is_dir, &path, &meta);
        self.path = path;
        res
    }

    #[allow(clippy::too_many_arguments)]
    fn entry_at<R: Read>(
        &mut self,
        root: BorrowedFd<'_>,
        stack: &mut DirStack,
        entry: &mut tar::Entry<'_, R>,
        etype: EntryType,
        is_dir: bool,
        path: &[u8],
        meta: &Meta,
    ) -> Result<(), LayerError> {
        // Error helpers need self.path; it was moved out, so restore it for messages via a local closure.
        let (parent, name) = path::split(path);
        if is_aufs_meta(parent) {
            // Inside aufs bookkeeping directories (`.wh..wh.plnk/…`): not part of the image.
            self.stats.ignored += 1;
            return Ok(());
        }
        if let Some(rest) = name.strip_prefix(b".wh.") {
            return self.whiteout(root, stack, path, parent, rest);
        }
        if matches!(etype, EntryType::Link) {
            return self.hardlink(root, stack, entry, path);
        }
        let pfd = match stack.walk(root, parent, Some(self)) {
            Ok(fd) => fd,
            Err(e) => return Err(self.with_path(path, |s| s.walk_err(e))),
        };
        let mut cname_buf = std::mem::take(&mut self.cbuf);
        let res = (|| {
            let cname =
                sys::cstr(&mut cname_buf, name).map_err(|e| self.with_path(path, |s| s.err_io("name", e)))?;
            if is_dir {
                self.make_dir(pfd, cname, path, meta)
            } else {
                match etype {
                    EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                        self.make_file(pfd, cname, path, meta, entry)
                    }
                    EntryType::Symlink => self.make_symlink(pfd, cname, name, path, meta, entry),
                    EntryType::Char | EntryType::Block | EntryType::Fifo => {
                        self.make_node(pfd, cname, name, path, meta, entry, etype)
                    }
                    other => Err(self.with_path(path, |s| {
                        s.invalid(format!("unsupported tar entry type {:?}", other.as_byte() as char))
                    })),
                }
            }
        })();
        self.cbuf = cname_buf;
        res
    }

    /// The entry's GNU PAX sparse records, parsed (see [`super::sparse`]).
    fn pax_sparse<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<Option<PaxSparse>, LayerError> {
        let Some(exts) = entry.pax_extensions().map_err(LayerError::Read)? else { return Ok(None) };
        let mut records = Vec::new();
        for ext in exts {
            let ext = ext.map_err(LayerError::Read)?;
            if ext.key_bytes().starts_with(b"GNU.sparse.") {
                records.push((ext.key_bytes().to_vec(), ext.value_bytes().to_vec()));
            }
        }
        PaxSparse::from_records(records.iter().map(|(k, v)| (&k[..], &v[..])))
            .map_err(|e| LayerError::Invalid { path: lossy(&entry.path_bytes()), reason: e.to_string() })
    }

    /// Run an error constructor with `self.path` temporarily set to `path`.
    fn with_path(&mut self, path: &[u8], f: impl FnOnce(&Self) -> LayerError) -> LayerError {
        let saved = std::mem::replace(&mut self.path, path.to_vec());
        let e = f(self);
        self.path = saved;
        e
    }

    fn read_meta<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<Meta, LayerError> {
        let h = entry.header();
        let old = h.as_old();
        let mode = numeric(h.mode().map(u64::from), &old.mode)
            .map_err(|e| self.invalid(format!("bad mode: {e}")))?;
        let mode = mode as u32 & 0o7777;
        let uid = numeric(h.uid(), &old.uid).map_err(|e| self.invalid(format!("bad uid: {e}")))?;
        let gid = numeric(h.gid(), &old.gid).map_err(|e| self.invalid(format!("bad gid: {e}")))?;
        let uid = u32::try_from(uid).map_err(|_| self.invalid(format!("uid {uid} out of range")))?;
        let gid = u32::try_from(gid).map_err(|_| self.invalid(format!("gid {gid} out of range")))?;
        let mtime = numeric(h.mtime(), &old.mtime).map_err(|e| self.invalid(format!("bad mtime: {e}")))?;
        let mut sec = i64::try_from(mtime).unwrap_or(i64::MAX);
        let mut nsec = 0u32;
        self.xattrs.clear();
        let mut dropped = 0;
        let mut err = None;
        if let Some(exts) = entry.pax_extensions().map_err(LayerError::Read)? {
            for ext in exts {
                let ext = ext.map_err(LayerError::Read)?;
                let key = ext.key_bytes();
                if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") {
                    let value = ext.value_bytes();
                    if xname.is_empty() || xname.len() > 255 || xname.contains(&0) {
                        err = Some(format!("invalid xattr name {:?}", lossy(xname)));
                    } else if value.len() > self.opts.max_xattr_size {
                        err = Some(format!(
                            "xattr {} is {} bytes, above the limit of {}",
                            lossy(xname),
                            value.len(),
                            self.opts.max_xattr_size
                        ));
                    } else if is_overlay_private(xname) {
                        dropped += 1;
                        log::warn!(
                            "layer entry {:?}: dropping overlay-private xattr {}",
                            lossy(&self.path),
                            lossy(xname)
                        );
                    } else {
                        self.xattrs.push((xname.to_vec(), value.to_vec()));
                    }
                } else if key == b"mtime" {
                    if let Some((s, n)) = parse_pax_time(ext.value_bytes()) {
                        sec = s;
                        nsec = n;
                    }
                }
            }
        }
        if let Some(e) = err {
            return Err(self.invalid(e));
        }
        self.stats.xattrs_dropped += dropped;
        Ok(Meta { mode, uid, gid, times: sys::times(sec, nsec) })
    }

    /// Owner, xattrs, mode, in that order: chown clears setuid bits and `security.capability`, so those
    /// go after it.
    fn set_fd_meta(&mut self, fd: BorrowedFd<'_>, m: &Meta) -> Result<(), LayerError> {
        if (m.uid, m.gid) != self.ids {
            sys::fchown(fd, m.uid, m.gid).map_err(|e| self.err_io("chown", e))?;
        }
        self.set_xattrs(|xn, v| sys::fsetxattr(fd, xn, v))?;
        sys::fchmod(fd, m.mode).map_err(|e| self.err_io("chmod", e))
    }

    fn set_xattrs(&mut self, mut set: impl FnMut(&CStr, &[u8]) -> io::Result<()>) -> Result<(), LayerError> {
        let xattrs = std::mem::take(&mut self.xattrs);
        let mut res = Ok(());
        for (name, value) in &xattrs {
            let xn = match sys::cstr(&mut self.cbuf2, name) {
                Ok(c) => c,
                Err(e) => {
                    res = Err(self.err_io("xattr name", e));
                    break;
                }
            };
            match set(xn, value) {
                Ok(()) => self.stats.xattrs += 1,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EPERM)) => {
                    // e.g. `user.*` on a symlink or device, or a namespace the file system lacks.
                    log::warn!("layer entry {:?}: cannot set xattr {}: {e}", lossy(&self.path), lossy(name));
                    self.stats.xattrs_dropped += 1;
                }
                Err(e) => {
                    res = Err(LayerError::Io {
                        path: lossy(&self.path),
                        op: "set xattr",
                        source: io::Error::new(e.kind(), format!("{}: {e}", lossy(name))),
                    });
                    break;
                }
            }
        }
        self.xattrs = xattrs;
        res
    }

    /// Remove whatever is at `name` (a file, or a whole directory tree) so a later entry can replace it.
    fn remove_existing(&mut self, pfd: BorrowedFd<'_>, cname: &CStr, path: &[u8]) -> Result<(), LayerError> {
        match sys::unlinkat(pfd, cname, false) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {
                remove_tree_at(pfd, cname).map_err(|e| self.with_path(path, |s| s.err_io("remove", e)))?;
                // Anything recorded below it is gone now.
                self.dir_times.retain(|k, _| {
                    !(k.starts_with(path) && (k.len() == path.len() || k[path.len()] == b'/'))
                });
                Ok(())
            }
            Err(e) => Err(self.with_path(path, |s| s.err_io("remove", e))),
        }
    }

    fn make_dir(
        &mut self,
        pfd: BorrowedFd<'_>,
        cname: &CStr,
        path: &[u8],
        m: &Meta,
    ) -> Result<(), LayerError> {
        let mut replaces_whiteout = false;
        match sys::mkdirat(pfd, cname, 0o700) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let st =
                    sys::lstatat(pfd, cname).map_err(|e| self.with_path(path, |s| s.err_io("stat", e)))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    replaces_whiteout = sys::is_whiteout(&st);
                    self.remove_existing(pfd, cname, path)?;
                    sys::mkdirat(pfd, cname, 0o700)
                        .map_err(|e| self.with_path(path, |s| s.err_io("mkdir", e)))?;
                }
            }
            Err(e) => return Err(self.with_path(path, |s| s.err_io("mkdir", e))),
        }
        let fd = sys::openat(pfd, cname, DIR_FLAGS, 0)
            .map_err(|e| self.with_path(path, |s| s.err_io("open", e)))?;
        if replaces_whiteout {
            // `.wh.a` then `a/` in one layer (kaniko and others write a re-created directory this way):
            // the lower `a` is gone and the new one starts empty, i.e. an opaque directory.
            let mut nb = Vec::new();
            let r = sys::cstr(&mut nb, OPAQUE_XATTR.as_bytes())
                .and_then(|xn| sys::fsetxattr(fd.as_fd(), xn, b"y"));
            r.map_err(|e| self.with_path(path, |s| s.err_io("set opaque xattr", e)))?;
            self.stats.opaques += 1;
        }
        let saved = std::mem::replace(&mut self.path, path.to_vec());
        let r = self.set_fd_meta(fd.as_fd(), m);
        self.path = saved;
        r?;
        self.dir_times.insert(path.to_vec(), m.times);
        self.stats.dirs += 1;
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        pfd: BorrowedFd<'_>,
        cname: &CStr,
        path: &[u8],
        m: &Meta,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        const FLAGS: libc::c_int = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = match sys::openat(pfd, cname, FLAGS, 0o600) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.remove_existing(pfd, cname, path)?;
                self.dir_times.remove(path);
                sys::openat(pfd, cname, FLAGS, 0o600)
                    .map_err(|e| self.with_path(path, |s| s.err_io("create", e)))?
            }
            Err(e) => return Err(self.with_path(path, |s| s.err_io("create", e))),
        };
        let mut file = File::from(fd);
        let written = self.write_data(&mut file, path, entry)?;
        self.stats.bytes += written;
        let saved = std::mem::replace(&mut self.path, path.to_vec());
        let r = self
            .set_fd_meta(file.as_fd(), m)
            .and_then(|()| sys::futimens(file.as_fd(), &m.times).map_err(|e| self.err_io("set times", e)));
        self.path = saved;
        r?;
        self.stats.files += 1;
        Ok(())
    }

    /// Write the entry's data into the new `file`: sparse files with their holes, others as they are.
    fn write_data<R: Read>(
        &mut self,
        file: &mut File,
        path: &[u8],
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<u64, LayerError> {
        let want = entry.size();
        let sparse = match self.sparse.take() {
            Some(mut sp) => Some(sp.write_to(entry, want, file, &mut self.buf, self.opts.max_header_size)),
            None if entry.header().entry_type() == EntryType::GNUSparse => {
                Some(sparse::write_skipping_zeros(entry, file, &mut self.buf))
            }
            None => None,
        };
        match sparse {
            Some(Ok(n)) => return Ok(n),
            Some(Err(SparseError::Read(e))) => return Err(LayerError::Read(e)),
            Some(Err(SparseError::Write(e))) => return Err(self.with_path(path, |s| s.err_io("write", e))),
            Some(Err(e)) => return Err(self.with_path(path, |s| s.invalid(e.to_string()))),
            None => {}
        }
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::Read(e)),
            };
            file.write_all(&self.buf[..n]).map_err(|e| self.with_path(path, |s| s.err_io("write", e)))?;
            written += n as u64;
        }
        if written < want {
            return Err(LayerError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("layer tar truncated inside {:?}", lossy(path)),
            )));
        }
        Ok(written)
    }

    /// Create a non-directory node with `create`, replacing an existing entry if needed.
    fn create_node(
        &mut self,
        pfd: BorrowedFd<'_>,
        cname: &CStr,
        path: &[u8],
        op: &'static str,
        create: impl Fn() -> io::Result<()>,
    ) -> Result<(), LayerError> {
        match create() {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.remove_existing(pfd, cname, path)?;
                self.dir_times.remove(path);
                create().map_err(|e| self.with_path(path, |s| s.err_io(op, e)))
            }
            Err(e) => Err(self.with_path(path, |s| s.err_io(op, e))),
        }
    }

    /// Owner, xattrs, mode (unless a symlink), times of a node that must not be opened.
    #[allow(clippy::too_many_arguments)]
    fn set_node_meta(
        &mut self,
        pfd: BorrowedFd<'_>,
        cname: &CStr,
        name: &[u8],
        path: &[u8],
        m: &Meta,
        symlink: bool,
    ) -> Result<(), LayerError> {
        let saved = std::mem::replace(&mut self.path, path.to_vec());
        let r = (|| {
            if (m.uid, m.gid) != self.ids {
                sys::lchownat(pfd, cname, m.uid, m.gid).map_err(|e| self.err_io("chown", e))?;
            }
            if !self.xattrs.is_empty() {
                self.set_xattrs(|xn, v| sys::lsetxattrat(pfd, name, xn, v))?;
            }
            if !symlink {
                sys::fchmodat(pfd, cname, m.mode).map_err(|e| self.err_io("chmod", e))?;
            }
            sys::lutimensat(pfd, cname, &m.times).map_err(|e| self.err_io("set times", e))
        })();
        self.path = saved;
        r
    }

    fn make_symlink<R: Read>(
        &mut self,
        pfd: BorrowedFd<'_>,
        cname: &CStr,
        name: &[u8],
        path: &[u8],
        m: &Meta,
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        let target = entry.link_name_bytes().unwrap_or_default();
        if target.is_empty() {
            return Err(self.with_path(path, |s| s.invalid("symlink with an empty target")));
        }
        if target.len() > self.opts.max_path_len {
            return Err(LayerError::Limit {
                path: lossy(path),
                what: "link target length",
                limit: self.opts.max_path_len as u64,
            });
        }
        let mut tb = Vec::with_capacity(target.len() + 1);
        let ct = sys::cstr(&mut tb, &target).map_err(|e| self.with_path(path, |s| s.err_io("symlink", e)))?;
        self.create_node(pfd, cname, path, "symlink", || sys::symlinkat(ct, pfd, cname))?;
        self.set_node_meta(pfd, cname, name, path, m, true)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn make_node<R: Read>(
        &mut self,
        pfd: BorrowedFd<'_>,
        cname: &CStr,
        name: &[u8],
        path: &[u8],
        m: &Meta,
        entry: &tar::Entry<'_, R>,
        etype: EntryType,
    ) -> Result<(), LayerError> {
        let h = entry.header();
        let (kind, dev) = match etype {
            EntryType::Fifo => (libc::S_IFIFO, 0),
            _ => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let kind = if matches!(etype, EntryType::Char) { libc::S_IFCHR } else { libc::S_IFBLK };
                (kind, sys::makedev(major, minor))
            }
        };
        self.create_node(pfd, cname, path, "mknod", || sys::mknodat(pfd, cname, kind | 0o600, dev))?;
        self.set_node_meta(pfd, cname, name, path, m, false)?;
        self.stats.devices += 1;
        Ok(())
    }

    fn whiteout(
        &mut self,
        root: BorrowedFd<'_>,
        stack: &mut DirStack,
        path: &[u8],
        parent: &[u8],
        rest: &[u8],
    ) -> Result<(), LayerError> {
        if rest.starts_with(b".wh.") {
            if rest == b".wh..opq" {
                let pfd = match stack.walk(root, parent, Some(self)) {
                    Ok(fd) => fd,
                    Err(e) => return Err(self.with_path(path, |s| s.walk_err(e))),
                };
                let xn = sys::cstr(&mut self.cbuf2, OPAQUE_XATTR.as_bytes()).map_err(|e| LayerError::Io {
                    path: lossy(path),
                    op: "xattr",
                    source: e,
                })?;
                sys::fsetxattr(pfd, xn, b"y").map_err(|e| LayerError::Io {
                    path: lossy(path),
                    op: "set opaque xattr",
                    source: e,
                })?;
                self.stats.opaques += 1;
            } else {
                // aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): meaningless here.
                self.stats.ignored += 1;
            }
            return Ok(());
        }
        if rest.is_empty() || rest == b"." || rest == b".." {
            return Err(self.with_path(path, |s| s.invalid("whiteout without a name")));
        }
        let pfd = match stack.walk(root, parent, Some(self)) {
            Ok(fd) => fd,
            Err(e) => return Err(self.with_path(path, |s| s.walk_err(e))),
        };
        let cname = sys::cstr(&mut self.cbuf, rest).map_err(|e| LayerError::Io {
            path: lossy(path),
            op: "name",
            source: e,
        })?;
        // A whiteout hides lower layers only: an entry of this same layer with that name stays.
        if sys::lstatat(pfd, cname).is_ok() {
            return Ok(());
        }
        sys::mknodat(pfd, cname, libc::S_IFCHR, 0).map_err(|e| LayerError::Io {
            path: lossy(path),
            op: "create whiteout",
            source: e,
        })?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        root: BorrowedFd<'_>,
        stack: &mut DirStack,
        entry: &tar::Entry<'_, R>,
        path: &[u8],
    ) -> Result<(), LayerError> {
        let raw = entry.link_name_bytes().unwrap_or_default();
        if raw.len() > self.opts.max_path_len {
            return Err(LayerError::Limit {
                path: lossy(path),
                what: "link target length",
                limit: self.opts.max_path_len as u64,
            });
        }
        let mut link = std::mem::take(&mut self.link);
        let r = path::clean(&raw, &mut link);
        let res = match r {
            Err(BadPath::Escapes) => Err(LayerError::Invalid {
                path: lossy(path),
                reason: format!("hard link target {:?} escapes the layer root", lossy(&raw)),
            }),
            Err(BadPath::Nul) => Err(self.with_path(path, |s| s.invalid("NUL byte in link target"))),
            Ok(()) if link.is_empty() => {
                Err(self.with_path(path, |s| s.invalid("hard link to the layer root")))
            }
            Ok(()) if link == path => Ok(()),
            Ok(()) => self.hardlink_to(root, stack, path, &link),
        };
        self.link = link;
        res
    }

    fn hardlink_to(
        &mut self,
        root: BorrowedFd<'_>,
        stack: &mut DirStack,
        path: &[u8],
        target: &[u8],
    ) -> Result<(), LayerError> {
        let (tparent, tname) = path::split(target);
        let mut tb = Vec::new();
        let ctname = sys::cstr(&mut tb, tname).map_err(|e| self.with_path(path, |s| s.err_io("link", e)))?;
        // The target's directory, opened on its own chain (the stack will hold the link's parent).
        let tdir = {
            let mut own = DirStack::default();
            match own.walk(root, tparent, None) {
                Ok(fd) => Some(
                    sys::openat(fd, c".", DIR_FLAGS, 0)
                        .map_err(|e| self.with_path(path, |s| s.err_io("open", e)))?,
                ),
                Err(WalkErr::Missing) => None,
                Err(WalkErr::Symlink(_)) | Err(WalkErr::NotDir(_)) => {
                    return Err(self.with_path(path, |s| {
                        s.invalid(format!(
                            "hard link target {:?} is not inside a directory of this layer",
                            lossy(target)
                        ))
                    }))
                }
                Err(e) => return Err(self.with_path(path, |s| s.walk_err(e))),
            }
        };
        let present = match &tdir {
            Some(d) => sys::lstatat(d.as_fd(), ctname).is_ok(),
            None => false,
        };
        let tdir = if present {
            tdir
        } else {
            self.copy_up(root, stack, path, target)?;
            let mut own = DirStack::default();
            let fd = own.walk(root, tparent, None).map_err(|e| self.with_path(path, |s| s.walk_err(e)))?;
            Some(
                sys::openat(fd, c".", DIR_FLAGS, 0)
                    .map_err(|e| self.with_path(path, |s| s.err_io("open", e)))?,
            )
        };
        let Some(tdir) = tdir else {
            return Err(self.with_path(path, |s| s.invalid("hard link target vanished")));
        };
        let (parent, name) = path::split(path);
        let pfd = match stack.walk(root, parent, Some(self)) {
            Ok(fd) => fd,
            Err(e) => return Err(self.with_path(path, |s| s.walk_err(e))),
        };
        let mut nb = Vec::new();
        let cname = sys::cstr(&mut nb, name).map_err(|e| self.with_path(path, |s| s.err_io("link", e)))?;
        let t = tdir.as_fd();
        self.create_node(pfd, cname, path, "link", || sys::linkat(t, ctname, pfd, cname))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Copy a hard link's target from the lower layers into this layer at its own path, as an overlay
    /// copy-up would.
    fn copy_up(
        &mut self,
        root: BorrowedFd<'_>,
        stack: &mut DirStack,
        path: &[u8],
        target: &[u8],
    ) -> Result<(), LayerError> {
        let not_found = |s: &Self| LayerError::LinkTargetMissing {
            path: lossy(path),
            target: lossy(target),
            lowers: s.opts.lowers.len(),
        };
        let found = lower::lookup(&self.opts.lowers, target)
            .map_err(|e| self.with_path(path, |s| s.err_io("look up in lower layers", e)))?;
        let Some((src, md)) = found else { return Err(not_found(self)) };
        if !md.is_file() {
            return Err(self.with_path(path, |s| {
                s.invalid(format!(
                    "hard link target {:?} in a lower layer is not a regular file",
                    lossy(target)
                ))
            }));
        }
        let (tparent, tname) = path::split(target);
        let pfd = match stack.walk(root, tparent, Some(self)) {
            Ok(fd) => fd,
            Err(e) => return Err(self.with_path(path, |s| s.walk_err(e))),
        };
        let mut nb = Vec::new();
        let cname =
            sys::cstr(&mut nb, tname).map_err(|e| self.with_path(path, |s| s.err_io("copy up", e)))?;
        let srcf = File::open(&src).map_err(|e| self.with_path(path, |s| s.err_io("open lower file", e)))?;
        let dst =
            sys::openat(pfd, cname, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW, 0o600)
                .map_err(|e| self.with_path(path, |s| s.err_io("copy up", e)))?;
        sys::copy_data(srcf.as_raw_fd(), dst.as_raw_fd(), md.len())
            .map_err(|e| self.with_path(path, |s| s.err_io("copy up", e)))?;
        self.xattrs =
            lower_xattrs(&src).map_err(|e| self.with_path(path, |s| s.err_io("read lower xattrs", e)))?;
        let m = Meta {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            times: sys::times(md.mtime(), md.mtime_nsec() as u32),
        };
        let saved = std::mem::replace(&mut self.path, target.to_vec());
        let r = self
            .set_fd_meta(dst.as_fd(), &m)
            .and_then(|()| sys::futimens(dst.as_fd(), &m.times).map_err(|e| self.err_io("set times", e)));
        self.path = saved;
        r?;
        self.stats.lower_copies += 1;
        Ok(())
    }

    /// Give an implicitly created parent directory the metadata the lowers have for it.
    fn implicit_dir_meta(&mut self, fd: BorrowedFd<'_>, prefix: &[u8]) -> io::Result<()> {
        if let Some((p, md)) = lower::lookup(&self.opts.lowers, prefix)? {
            if md.is_dir() {
                if (md.uid(), md.gid()) != self.ids {
                    sys::fchown(fd, md.uid(), md.gid())?;
                }
                for (name, value) in lower_xattrs(&p)? {
                    let mut nb = Vec::new();
                    sys::fsetxattr(fd, sys::cstr(&mut nb, &name)?, &value)?;
                }
                sys::fchmod(fd, md.mode() & 0o7777)?;
                self.dir_times.insert(prefix.to_vec(), sys::times(md.mtime(), md.mtime_nsec() as u32));
            }
        }
        Ok(())
    }

    /// Set the recorded directory times, deepest first is not needed: setting a directory's times does
    /// not touch its parent's.
    fn finish_dir_times(&mut self, root: BorrowedFd<'_>, stack: &mut DirStack) -> Result<(), LayerError> {
        let mut all: Vec<(Vec<u8>, [libc::timespec; 2])> = self.dir_times.drain().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut nb = Vec::new();
        for (p, ts) in all {
            if p.is_empty() {
                sys::futimens(root, &ts).map_err(|e| LayerError::Io {
                    path: ".".into(),
                    op: "set times",
                    source: e,
                })?;
                continue;
            }
            let (parent, name) = path::split(&p);
            let pfd = match stack.walk(root, parent, None) {
                Ok(fd) => fd,
                Err(_) => continue, // replaced by a later entry
            };
            let c = sys::cstr(&mut nb, name).map_err(|e| LayerError::Io {
                path: lossy(&p),
                op: "set times",
                source: e,
            })?;
            match sys::lutimensat(pfd, c, &ts) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(LayerError::Io { path: lossy(&p), op: "set times", source: e }),
            }
        }
        Ok(())
    }
}

/// The xattrs of a lower entry worth carrying over (not overlay-private ones).
fn lower_xattrs(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut v = sys::lxattrs(p)?;
    v.retain(|(n, _)| !is_overlay_private(n));
    Ok(v)
}

/// Remove the directory tree `name` in `dir` without following symlinks.
fn remove_tree_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let fd = sys::openat(dir, name, DIR_FLAGS, 0)?;
    let mut d = nix::dir::Dir::from(fd).map_err(io::Error::from)?;
    let dfd = d.as_raw_fd();
    // SAFETY: `d` keeps the fd open for as long as this borrow is used.
    let dborrow = unsafe { BorrowedFd::borrow_raw(dfd) };
    let mut children = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(io::Error::from)?;
        let n = ent.file_name();
        if n.to_bytes() == b"." || n.to_bytes() == b".." {
            continue;
        }
        children.push((n.to_owned(), matches!(ent.file_type(), Some(nix::dir::Type::Directory))));
    }
    for (child, is_dir) in children {
        if is_dir {
            remove_tree_at(dborrow, &child)?;
        } else {
            match sys::unlinkat(dborrow, &child, false) {
                Err(e) if e.raw_os_error() == Some(libc::EISDIR) => remove_tree_at(dborrow, &child)?,
                r => r?,
            }
        }
    }
    sys::unlinkat(dir, name, true)
}

/// A numeric header field, where an empty one (all NULs/spaces) means 0 as in Go's `archive/tar`, which
/// is what most layers are written and read with.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(e),
    }
}

/// Parse a PAX time (`1700000000.123456789`, possibly negative) into seconds and nanoseconds.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut sec: i64 = int.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    let mut nsec: u32 = digits.parse().ok()?;
    if neg {
        sec = -sec;
        if nsec > 0 {
            sec -= 1;
            nsec = 1_000_000_000 - nsec;
        }
    }
    Some((sec, nsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1700000000, 0)));
        assert_eq!(parse_pax_time(b"1700000000.5"), Some((1700000000, 500_000_000)));
        assert_eq!(parse_pax_time(b"1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
