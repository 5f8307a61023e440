//! The merged tree: how a name in a merged directory resolves through the upper and lower layers
//! (whiteouts, opaque directories, redirects, metacopy), the inode table that gives each merged object a
//! stable FUSE inode number, and the merged directory listing.

use std::collections::HashSet;
use std::ffi::{CStr, OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Weak};

use rustc_hash::FxHashMap;

use super::sys::{self, SysResult};

/// Kernel overlayfs xattr marking an opaque directory (value `y`).
pub const XATTR_OPAQUE: &CStr = c"trusted.overlay.opaque";
/// The same for rootless tools that cannot write trusted.* xattrs.
pub const XATTR_USER_OPAQUE: &CStr = c"user.overlay.opaque";
/// Kernel overlayfs xattr redirecting a renamed directory to its lower path.
pub const XATTR_REDIRECT: &CStr = c"trusted.overlay.redirect";
/// Kernel overlayfs xattr marking an upper file whose data still lives in a lower layer.
pub const XATTR_METACOPY: &CStr = c"trusted.overlay.metacopy";
/// Rootless whiteout marker xattr.
pub const XATTR_USER_WHITEOUT: &CStr = c"user.overlay.whiteout";
/// Prefix of the AUFS-style whiteout files some layer tarballs carry.
pub const WH_PREFIX: &[u8] = b".wh.";
/// AUFS-style opaque marker file.
pub const WH_OPAQUE: &str = ".wh..wh..opq";

/// One layer directory: its root and the device it lives on (part of inode identity).
pub struct Layer {
    /// Root directory of the layer, opened for reading.
    pub root: Arc<OwnedFd>,
    /// `st_dev` of the root.
    pub dev: u64,
}

/// What a merged directory is made of: an optional upper directory and the lower directories that merge
/// into it (top first, ending at the first opaque one).
#[derive(Clone, Default)]
pub struct DirLayers {
    /// The directory in the upper layer, if copied up / created there.
    pub upper: Option<Arc<OwnedFd>>,
    /// (layer index, directory) of each contributing lower, top first.
    pub lowers: Vec<(usize, Arc<OwnedFd>)>,
    /// Path of this directory inside the lower layers ("" for the root), as a redirect would name it.
    pub lower_path: OsString,
}

/// Where a non-directory's lower copy is (the data source for reads and copy-up).
#[derive(Clone)]
pub struct LowerLoc {
    /// The lower directory holding it.
    pub dir: Arc<OwnedFd>,
    /// Its name there.
    pub name: OsString,
}

/// Identity of a merged object, used to keep its FUSE inode number stable for the life of the mount
/// (also across copy-up, which registers the new upper identity for the same number).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Key {
    /// Device of the real file.
    pub dev: u64,
    /// Real inode number.
    pub ino: u64,
    /// 0, or a hash of (parent, name) for lower non-directories, so that lower hardlinks (which are copied
    /// up separately, as the kernel does without `index`) are separate objects.
    pub extra: u64,
}

/// Result of resolving a name in a merged directory.
#[derive(Clone)]
pub struct Found {
    /// stat of the topmost copy.
    pub st: libc::stat,
    /// The topmost copy is in the upper layer.
    pub upper: bool,
    /// Directory layers, for directories.
    pub dir: Option<DirLayers>,
    /// Lower copy of a non-directory (data source while not copied up, or for a metacopy upper).
    pub lower: Option<LowerLoc>,
    /// Upper file is a metacopy (data still in `lower`).
    pub metacopy: bool,
    /// Identity.
    pub key: Key,
}

/// One merged object known to the kernel.
pub struct Node {
    /// Parent inode (root is its own parent).
    pub parent: u64,
    /// Name in the parent.
    pub name: OsString,
    /// Other (parent, name) pairs of an upper hardlinked file.
    pub aliases: Vec<(u64, OsString)>,
    /// File type bits (S_IFMT).
    pub fmt: u32,
    /// Present in the upper layer at (parent's upper dir, name).
    pub upper: bool,
    /// Layers, for directories.
    pub dir: Option<DirLayers>,
    /// Lower copy, for non-directories.
    pub lower: Option<LowerLoc>,
    /// Upper file whose data is still in `lower`.
    pub metacopy: bool,
    /// Unlinked while the kernel still knew it.
    pub gone: bool,
    /// Kernel lookup count.
    pub nlookup: u64,
    /// Number of child nodes (a parent outlives its children in the table).
    pub children: u64,
    /// Identities mapped to this node.
    pub keys: Vec<Key>,
    /// Passthrough backing file shared by all opens of this inode, and whether it is the upper copy.
    pub backing: Weak<fuser::BackingId>,
    /// The backing file is the upper copy.
    pub backing_upper: bool,
    /// Open handles served through the page cache (not passthrough); while any exist the kernel refuses
    /// passthrough opens of the inode.
    pub cached_opens: u64,
    /// The merged listing of a directory being read (see [`super::dirlist`]); kept up to date by the
    /// changes made through the mount, dropped when a reader reaches its end.
    pub listing: Option<Box<super::dirlist::Listing>>,
    /// Changes made to a directory's entries so far: a listing built from the layers is kept only if
    /// none came in while it was read, else it could miss one for good.
    pub dir_changes: u64,
    /// An unnamed (`O_TMPFILE`) file: the work directory holding it under its temporary `name` until a
    /// LINK gives it a real name or its last handle closes.
    pub tmpfile: Option<Arc<OwnedFd>>,
}

/// All nodes plus the identity → inode number map.
#[derive(Default)]
pub struct Tables {
    /// Live nodes by FUSE inode number.
    pub nodes: FxHashMap<u64, Node>,
    /// Identity → inode number; entries outlive nodes so numbers stay stable.
    pub by_key: FxHashMap<Key, u64>,
    /// Next inode number to hand out.
    pub next_ino: u64,
    /// The `st_ino` shown by all names of a hard link still in a lower layer: (device, real inode) → a
    /// number from the same counter as inode numbers, so it is no other object's. Each name is its own
    /// object (copied up on its own, breaking the link, as kernel overlayfs does without `index`), but
    /// until then they show one `st_ino`, as the kernel shows the lower inode. Grows with the hard-linked
    /// lower files the mount has seen, which the image bounds.
    pub link_groups: FxHashMap<(u64, u64), u64>,
}

impl Tables {
    /// The inode number of an identity, allocating one the first time.
    pub fn ino_for(&mut self, key: Key) -> u64 {
        if let Some(i) = self.by_key.get(&key) {
            return *i;
        }
        let i = self.next_ino;
        self.next_ino += 1;
        self.by_key.insert(key, i);
        i
    }

    /// The `st_ino` every name of the lower hard link (`dev`, `ino`) shows.
    pub fn link_group(&mut self, dev: u64, ino: u64) -> u64 {
        let next = &mut self.next_ino;
        *self.link_groups.entry((dev, ino)).or_insert_with(|| {
            *next += 1;
            *next - 1
        })
    }

    /// Record that the kernel now holds `lookups` more references to the object `f` at (parent, name);
    /// creates or refreshes its node and returns its inode number.
    pub fn install(&mut self, parent: u64, name: &OsStr, f: &Found, lookups: u64) -> u64 {
        let ino = self.ino_for(f.key);
        let fmt = f.st.st_mode & libc::S_IFMT;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlookup += lookups;
            let mut moved_from = None;
            if n.gone || n.fmt != fmt {
                if n.parent != parent {
                    moved_from = Some(n.parent);
                }
                n.parent = parent;
                n.name = name.to_owned();
                n.aliases.clear();
                n.gone = false;
            } else if (n.parent != parent || n.name != name)
                && !n.aliases.iter().any(|(p, a)| *p == parent && a == name)
            {
                if f.dir.is_some() {
                    if n.parent != parent {
                        moved_from = Some(n.parent);
                    }
                    n.parent = parent;
                    n.name = name.to_owned();
                } else {
                    n.aliases.push((parent, name.to_owned()));
                }
            }
            n.fmt = fmt;
            n.upper = f.upper;
            n.dir = f.dir.clone();
            n.lower = f.lower.clone();
            n.metacopy = f.metacopy;
            if !n.keys.contains(&f.key) {
                n.keys.push(f.key);
            }
            if let Some(old) = moved_from {
                if let Some(p) = self.nodes.get_mut(&old) {
                    p.children = p.children.saturating_sub(1);
                }
                if let Some(p) = self.nodes.get_mut(&parent) {
                    p.children += 1;
                }
            }
            return ino;
        }
        self.nodes.insert(
            ino,
            Node {
                parent,
                name: name.to_owned(),
                aliases: Vec::new(),
                fmt,
                upper: f.upper,
                dir: f.dir.clone(),
                lower: f.lower.clone(),
                metacopy: f.metacopy,
                gone: false,
                nlookup: lookups,
                children: 0,
                keys: vec![f.key],
                backing: Weak::new(),
                backing_upper: false,
                cached_opens: 0,
                listing: None,
                dir_changes: 0,
                tmpfile: None,
            },
        );
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children += 1;
        }
        ino
    }

    /// Drop `n` kernel references; removes nodes nobody references any more (and then their parents).
    pub fn forget(&mut self, ino: u64, n: u64) {
        let mut cur = ino;
        let mut dec = n;
        let mut child_gone = false;
        loop {
            if cur == fuser::INodeNo::ROOT.0 {
                return;
            }
            let Some(node) = self.nodes.get_mut(&cur) else { return };
            node.nlookup = node.nlookup.saturating_sub(dec);
            if child_gone {
                node.children = node.children.saturating_sub(1);
            }
            if node.nlookup > 0 || node.children > 0 {
                return;
            }
            let parent = node.parent;
            self.nodes.remove(&cur);
            cur = parent;
            dec = 0;
            child_gone = true;
        }
    }

    /// Give the unnamed file `ino` its first name, `parent/name` (where its file has just been renamed
    /// to), so that it is found there from now on instead of in the work directory.
    pub fn adopt_tmpfile(&mut self, ino: u64, parent: u64, name: &OsStr) {
        let Some(n) = self.nodes.get_mut(&ino) else { return };
        n.tmpfile = None;
        let old = std::mem::replace(&mut n.parent, parent);
        n.name = name.to_owned();
        if old != parent {
            if let Some(p) = self.nodes.get_mut(&old) {
                p.children = p.children.saturating_sub(1);
            }
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.children += 1;
            }
        }
    }

    /// Drop the cached listing of directory `ino` after a change to its entries that is not known
    /// exactly (a failed operation may have done part of its work).
    pub fn dir_changed(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.dir_changes += 1;
            n.listing = None;
        }
    }

    /// `name` was created in (or moved into, or replaced in) directory `dir` as object `ino` of type
    /// `dtype`: list it in the cached listing, if there is one.
    pub fn entry_added(&mut self, dir: u64, name: &OsStr, ino: u64, dtype: u8) {
        if let Some(n) = self.nodes.get_mut(&dir) {
            n.dir_changes += 1;
            if let Some(l) = n.listing.as_mut() {
                l.insert(name, ino, dtype);
            }
        }
    }

    /// `name` went away from directory `dir`: take it out of the cached listing, if there is one.
    pub fn entry_removed(&mut self, dir: u64, name: &OsStr) {
        if let Some(n) = self.nodes.get_mut(&dir) {
            n.dir_changes += 1;
            if let Some(l) = n.listing.as_mut() {
                l.remove(name);
            }
        }
    }

    /// Forget the identities of an object whose last link went away, so a recycled real inode number
    /// cannot alias it.
    pub fn drop_keys(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            for k in n.keys.drain(..) {
                self.by_key.remove(&k);
            }
        }
    }
}

/// Hash of (parent, name) for lower non-directory identities; never 0.
pub fn name_hash(parent: u64, name: &OsStr) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    name.as_bytes().hash(&mut h);
    h.finish() | 1
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn xattr_is_y(fd: RawFd, name: &OsStr, attr: &CStr) -> bool {
    matches!(sys::get_xattr(fd, name, attr), Ok(v) if v.as_slice() == b"y")
}

/// Is the lower directory `fd` opaque (kernel xattr, rootless xattr, or AUFS marker)?
pub fn lower_dir_opaque(fd: RawFd) -> bool {
    xattr_is_y(fd, OsStr::new(""), XATTR_OPAQUE)
        || xattr_is_y(fd, OsStr::new(""), XATTR_USER_OPAQUE)
        || sys::stat_at(fd, OsStr::new(WH_OPAQUE)).is_ok()
}

/// Is the upper directory `fd` opaque?
pub fn upper_dir_opaque(fd: RawFd) -> bool {
    xattr_is_y(fd, OsStr::new(""), XATTR_OPAQUE)
}

/// Is `dir/name` (stat `st`) in a lower layer a whiteout in any of the accepted formats?
fn lower_whiteout(dir: RawFd, name: &OsStr, st: &libc::stat) -> bool {
    if sys::is_whiteout(st) {
        return true;
    }
    let fmt = st.st_mode & libc::S_IFMT;
    (fmt == libc::S_IFCHR || (fmt == libc::S_IFREG && st.st_size == 0))
        && sys::get_xattr(dir, name, XATTR_USER_WHITEOUT).is_ok()
}

fn aufs_whiteout_name(name: &OsStr) -> OsString {
    let mut w = OsString::from(".wh.");
    w.push(name);
    w
}

/// How a name looks in one lower directory.
enum LowerHit {
    Missing,
    Whiteout,
    Entry(libc::stat),
}

fn probe_lower(dir: RawFd, name: &OsStr) -> SysResult<LowerHit> {
    match sys::stat_at(dir, name) {
        Ok(st) if lower_whiteout(dir, name, &st) => Ok(LowerHit::Whiteout),
        Ok(st) => Ok(LowerHit::Entry(st)),
        Err(libc::ENOENT) => {
            if sys::stat_at(dir, &aufs_whiteout_name(name)).is_ok() {
                Ok(LowerHit::Whiteout)
            } else {
                Ok(LowerHit::Missing)
            }
        }
        Err(e) => Err(e),
    }
}

fn join_lower_path(parent: &OsStr, name: &OsStr) -> OsString {
    let mut p = parent.to_owned();
    p.push("/");
    p.push(name);
    p
}

/// The set of layers a filesystem instance stacks.
pub struct Stack {
    /// Lower layers, top first.
    pub lowers: Vec<Layer>,
    /// Upper layer, if writable.
    pub upper: Option<Layer>,
    /// Work counters (entries read from layer directories for merged listings).
    pub counters: Arc<super::stats::Counters>,
}

impl Stack {
    /// Lower directories named `name` below `parent.lowers[start..]` that merge into one directory.
    /// `first` is what the caller already found at `parent.lowers[start]`, so it is not looked up again.
    fn merge_lower_dirs(
        &self,
        parent: &DirLayers,
        name: &OsStr,
        start: usize,
        mut first: Option<LowerHit>,
    ) -> SysResult<Vec<(usize, Arc<OwnedFd>)>> {
        let mut out = Vec::new();
        for (li, fd) in parent.lowers.iter().skip(start) {
            let hit = match first.take() {
                Some(h) => h,
                None => probe_lower(fd.as_raw_fd(), name)?,
            };
            match hit {
                LowerHit::Missing => continue,
                LowerHit::Whiteout => break,
                LowerHit::Entry(st) if is_dir(&st) => {
                    let d = sys::open_dir_at(fd.as_raw_fd(), name)?;
                    // opacity hides the layers below; the bottom layer has none (3 system calls saved
                    // per directory of a tree walk, most of which lie in the bottom layer)
                    let bottom = *li + 1 == self.lowers.len();
                    let opaque = !bottom && lower_dir_opaque(d.as_raw_fd());
                    out.push((*li, Arc::new(d)));
                    if opaque {
                        break;
                    }
                }
                LowerHit::Entry(_) => break,
            }
        }
        Ok(out)
    }

    /// Lower directories at an absolute lower path (a redirect target), top first.
    fn lower_dirs_by_path(&self, path: &OsStr) -> Vec<(usize, Arc<OwnedFd>)> {
        let mut out = Vec::new();
        for (li, l) in self.lowers.iter().enumerate() {
            if let Ok(d) = sys::open_dir_beneath(l.root.as_raw_fd(), path) {
                let opaque = lower_dir_opaque(d.as_raw_fd());
                out.push((li, Arc::new(d)));
                if opaque {
                    break;
                }
            }
        }
        out
    }

    /// Device of the upper layer (part of the identity of everything created or copied up there).
    pub fn upper_dev(&self) -> u64 {
        self.upper.as_ref().map(|u| u.dev).unwrap_or(0)
    }

    /// Resolve `name` in the merged directory `parent` (inode `parent_ino`): top-down through the upper
    /// and lower layers, honouring whiteouts, opaque directories, redirects and metacopy files.
    pub fn resolve(&self, parent: &DirLayers, parent_ino: u64, name: &OsStr) -> SysResult<Option<Found>> {
        if let Some(up) = &parent.upper {
            match sys::stat_at(up.as_raw_fd(), name) {
                Ok(st) if sys::is_whiteout(&st) => return Ok(None),
                Ok(st) => return self.resolve_upper(parent, name, st, up).map(Some),
                Err(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        for (i, (li, fd)) in parent.lowers.iter().enumerate() {
            match probe_lower(fd.as_raw_fd(), name)? {
                LowerHit::Missing => continue,
                LowerHit::Whiteout => return Ok(None),
                LowerHit::Entry(st) => {
                    let dev = self.lowers[*li].dev;
                    if is_dir(&st) {
                        let lowers = self.merge_lower_dirs(parent, name, i, Some(LowerHit::Entry(st)))?;
                        return Ok(Some(Found {
                            st,
                            upper: false,
                            dir: Some(DirLayers {
                                upper: None,
                                lowers,
                                lower_path: join_lower_path(&parent.lower_path, name),
                            }),
                            lower: None,
                            metacopy: false,
                            key: Key { dev, ino: st.st_ino, extra: 0 },
                        }));
                    }
                    return Ok(Some(Found {
                        st,
                        upper: false,
                        dir: None,
                        lower: Some(LowerLoc { dir: fd.clone(), name: name.to_owned() }),
                        metacopy: false,
                        key: Key { dev, ino: st.st_ino, extra: name_hash(parent_ino, name) },
                    }));
                }
            }
        }
        Ok(None)
    }

    fn resolve_upper(
        &self,
        parent: &DirLayers,
        name: &OsStr,
        st: libc::stat,
        up: &Arc<OwnedFd>,
    ) -> SysResult<Found> {
        let key = Key { dev: self.upper_dev(), ino: st.st_ino, extra: 0 };
        if is_dir(&st) {
            let fd = sys::open_dir_at(up.as_raw_fd(), name)?;
            let opaque = upper_dir_opaque(fd.as_raw_fd());
            let redirect = sys::get_xattr(fd.as_raw_fd(), OsStr::new(""), XATTR_REDIRECT).ok();
            let (lower_path, lowers) = match redirect {
                _ if opaque => (join_lower_path(&parent.lower_path, name), Vec::new()),
                Some(r) if r.first() == Some(&b'/') => {
                    let p = OsStr::from_bytes(&r).to_owned();
                    let l = self.lower_dirs_by_path(&p);
                    (p, l)
                }
                Some(r) => {
                    let p = join_lower_path(&parent.lower_path, OsStr::from_bytes(&r));
                    let l = self.lower_dirs_by_path(&p);
                    (p, l)
                }
                None => {
                    (join_lower_path(&parent.lower_path, name), self.merge_lower_dirs(parent, name, 0, None)?)
                }
            };
            return Ok(Found {
                st,
                upper: true,
                dir: Some(DirLayers { upper: Some(Arc::new(fd)), lowers, lower_path }),
                lower: None,
                metacopy: false,
                key,
            });
        }
        let mut found = Found { st, upper: true, dir: None, lower: None, metacopy: false, key };
        // (a metacopy file needs a lower copy, so only directories with lowers are probed; its xattrs may
        // live in an external block, so st_blocks says nothing)
        if st.st_mode & libc::S_IFMT == libc::S_IFREG
            && st.st_size > 0
            && !parent.lowers.is_empty()
            && sys::get_xattr(up.as_raw_fd(), name, XATTR_METACOPY).is_ok()
        {
            for (_, fd) in &parent.lowers {
                match probe_lower(fd.as_raw_fd(), name)? {
                    LowerHit::Missing => continue,
                    LowerHit::Whiteout => break,
                    LowerHit::Entry(lst) => {
                        if lst.st_mode & libc::S_IFMT == libc::S_IFREG {
                            found.metacopy = true;
                            found.lower = Some(LowerLoc { dir: fd.clone(), name: name.to_owned() });
                        }
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    /// Does `name` exist in the lower layers of `parent` (so removing it from the merged view needs a
    /// whiteout)?
    pub fn lower_positive(&self, parent: &DirLayers, name: &OsStr) -> SysResult<bool> {
        for (_, fd) in &parent.lowers {
            match probe_lower(fd.as_raw_fd(), name)? {
                LowerHit::Missing => continue,
                LowerHit::Whiteout => return Ok(false),
                LowerHit::Entry(_) => return Ok(true),
            }
        }
        Ok(false)
    }

    /// The merged listing of a directory: (name, d_type, identity), upper entries first, without
    /// duplicates, whiteouts or AUFS markers.
    pub fn list(&self, dir: &DirLayers, dir_ino: u64) -> SysResult<Vec<(OsString, u8, Key)>> {
        // names already listed (or hidden) by a higher layer; only kept while a lower layer follows
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        if let Some(up) = &dir.upper {
            let dev = self.upper_dev();
            let more = !dir.lowers.is_empty();
            let entries = sys::list_dir(up.as_raw_fd())?;
            self.counters.scanned(entries.len());
            for e in entries {
                let mut dtype = e.dtype;
                if dtype == libc::DT_CHR || dtype == libc::DT_UNKNOWN {
                    match sys::stat_at(up.as_raw_fd(), &e.name) {
                        Ok(st) if sys::is_whiteout(&st) => {
                            if more {
                                seen.insert(e.name);
                            }
                            continue;
                        }
                        Ok(st) => dtype = dtype_of(st.st_mode),
                        Err(_) => continue,
                    }
                }
                if more {
                    seen.insert(e.name.clone());
                }
                out.push((e.name, dtype, Key { dev, ino: e.ino, extra: 0 }));
            }
        }
        for (n, (li, fd)) in dir.lowers.iter().enumerate() {
            let dev = self.lowers[*li].dev;
            let more = n + 1 < dir.lowers.len();
            let entries = sys::list_dir(fd.as_raw_fd())?;
            self.counters.scanned(entries.len());
            let mut hidden_below = Vec::new();
            for e in entries {
                let bytes = e.name.as_bytes();
                if let Some(rest) = bytes.strip_prefix(WH_PREFIX) {
                    if more && !rest.starts_with(WH_PREFIX) {
                        hidden_below.push(OsStr::from_bytes(rest).to_owned());
                    }
                    continue;
                }
                if !seen.is_empty() && seen.contains(&e.name) {
                    continue;
                }
                let mut dtype = e.dtype;
                if dtype == libc::DT_CHR || dtype == libc::DT_UNKNOWN {
                    match sys::stat_at(fd.as_raw_fd(), &e.name) {
                        Ok(st) if lower_whiteout(fd.as_raw_fd(), &e.name, &st) => {
                            if more {
                                seen.insert(e.name);
                            }
                            continue;
                        }
                        Ok(st) => dtype = dtype_of(st.st_mode),
                        Err(_) => continue,
                    }
                }
                let extra = if dtype == libc::DT_DIR { 0 } else { name_hash(dir_ino, &e.name) };
                if more {
                    seen.insert(e.name.clone());
                }
                out.push((e.name, dtype, Key { dev, ino: e.ino, extra }));
            }
            seen.extend(hidden_below);
        }
        Ok(out)
    }
}

/// DT_* of a mode.
pub fn dtype_of(mode: u32) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFREG => libc::DT_REG,
        libc::S_IFLNK => libc::DT_LNK,
        libc::S_IFCHR => libc::DT_CHR,
        libc::S_IFBLK => libc::DT_BLK,
        libc::S_IFIFO => libc::DT_FIFO,
        libc::S_IFSOCK => libc::DT_SOCK,
        _ => libc::DT_UNKNOWN,
    }
}
