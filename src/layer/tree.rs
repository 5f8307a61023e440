//! Snapshots of directory trees and their comparison: the oracle check.
//!
//! rimg's claims ("the unpacked image equals `umoci unpack`", "the FUSE overlay shows what kernel
//! overlayfs shows") are checked by walking two trees and comparing every observable property: names,
//! types, modes, owners, sizes, content hashes, link targets, device numbers, xattrs and hard-link
//! groups. This lives in the library (not in one test) so the layer, FUSE, store and build tests all
//! compare with the same, strict rules.

use super::sys;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// Everything observable about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// Entry type.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Byte size for files and symlinks (target length); 0 for directories and others (directory sizes
    /// are file-system specific).
    pub size: u64,
    /// Hex sha256 of a regular file's content.
    pub sha256: Option<String>,
    /// A symlink's target, raw.
    pub link_target: Option<PathBuf>,
    /// (major, minor) of a device node.
    pub rdev: Option<(u32, u32)>,
    /// All extended attributes (name → raw value).
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Device of the file system the entry was seen on (with `ino`: hard-link groups).
    pub dev: u64,
    /// Inode number, as seen through the mount that was walked (for hard-link groups).
    pub ino: u64,
    /// Link count as reported (may count links hidden by whiteouts in an overlay).
    pub nlink: u64,
}

/// A tree: relative path (the root itself is `""`) → entry. Sorted, so diffs read in path order.
pub type Snapshot = BTreeMap<PathBuf, EntryInfo>;

/// Walk `root` (without following symlinks) and record every entry, including the root itself.
pub fn snapshot(root: &Path) -> io::Result<Snapshot> {
    let mut out = Snapshot::new();
    let mut buf = vec![0u8; 256 * 1024];
    walk(root, PathBuf::new(), &mut out, &mut buf)?;
    Ok(out)
}

fn walk(root: &Path, rel: PathBuf, out: &mut Snapshot, buf: &mut [u8]) -> io::Result<()> {
    let full = if rel.as_os_str().is_empty() { root.to_path_buf() } else { root.join(&rel) };
    let info =
        entry_info(&full, buf).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", full.display())))?;
    let is_dir = info.kind == Kind::Dir;
    out.insert(rel.clone(), info);
    if is_dir {
        let mut names: Vec<_> =
            std::fs::read_dir(&full)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort();
        for n in names {
            walk(root, rel.join(n), out, buf)?;
        }
    }
    Ok(())
}

fn entry_info(p: &Path, buf: &mut [u8]) -> io::Result<EntryInfo> {
    let md = p.symlink_metadata()?;
    let ft = md.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let mut sha256 = None;
    let mut link_target = None;
    let mut size = 0;
    match kind {
        Kind::File => {
            let mut f = File::open(p)?;
            let mut h = Sha256::new();
            loop {
                let n = f.read(buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                size += n as u64;
            }
            sha256 = Some(hex::encode(h.finalize()));
        }
        Kind::Symlink => {
            let t = std::fs::read_link(p)?;
            size = t.as_os_str().len() as u64;
            link_target = Some(t);
        }
        _ => {}
    }
    let rdev =
        matches!(kind, Kind::Char | Kind::Block).then(|| (libc::major(md.rdev()), libc::minor(md.rdev())));
    let xattrs =
        sys::lxattrs(p)?.into_iter().map(|(n, v)| (String::from_utf8_lossy(&n).into_owned(), v)).collect();
    Ok(EntryInfo {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size,
        sha256,
        link_target,
        rdev,
        xattrs,
        mtime: (md.mtime(), md.mtime_nsec() as u32),
        dev: md.dev(),
        ino: md.ino(),
        nlink: md.nlink(),
    })
}

/// What [`diff_trees`] compares. The defaults are strict where the OCI layer spec is, and lenient where
/// tools legitimately differ (timestamps of directories, overlay bookkeeping xattrs).
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Compare mtimes of non-directories (seconds only: not every producer keeps nanoseconds).
    pub mtime: bool,
    /// Compare mtimes of directories (they change whenever an entry is added, so tools differ).
    pub dir_mtime: bool,
    /// Compare the root directory's metadata (it comes from the bundle/mount point in some tools).
    pub root: bool,
    /// Compare hard-link groups (which visible paths share an inode).
    pub hardlinks: bool,
    /// Xattr name prefixes to ignore on both sides.
    pub ignore_xattr_prefixes: Vec<String>,
    /// Relative paths (and everything below them) to ignore on both sides.
    pub ignore_paths: Vec<PathBuf>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            mtime: true,
            dir_mtime: false,
            root: false,
            hardlinks: true,
            ignore_xattr_prefixes: vec![
                "trusted.overlay.".into(),
                "user.overlay.".into(),
                "security.selinux".into(),
            ],
            ignore_paths: Vec::new(),
        }
    }
}

/// Compare two snapshots. Returns one human-readable line per difference (empty = equal), naming the
/// path and both values, so a failing test says exactly what differs.
pub fn diff_trees(a: &Snapshot, b: &Snapshot, opts: &CompareOptions) -> Vec<String> {
    let ignored = |p: &Path| {
        opts.ignore_paths.iter().any(|i| p.starts_with(i)) || (!opts.root && p.as_os_str().is_empty())
    };
    let mut out = Vec::new();
    for (p, ea) in a {
        if ignored(p) {
            continue;
        }
        match b.get(p) {
            None => out.push(format!("{}: only in first ({:?})", show(p), ea.kind)),
            Some(eb) => compare_entry(p, ea, eb, opts, &mut out),
        }
    }
    for (p, eb) in b {
        if !ignored(p) && !a.contains_key(p) {
            out.push(format!("{}: only in second ({:?})", show(p), eb.kind));
        }
    }
    if opts.hardlinks {
        let ga = link_groups(a, &ignored);
        let gb = link_groups(b, &ignored);
        for (p, la) in &ga {
            let lb = gb.get(p).cloned().unwrap_or_default();
            if *la != lb && b.contains_key(p) {
                out.push(format!("{}: hard-linked with {:?} vs {:?}", show(p), la, lb));
            }
        }
        for (p, lb) in &gb {
            if !ga.contains_key(p) && a.contains_key(p) {
                out.push(format!("{}: hard-linked with {:?} vs {:?}", show(p), Vec::<PathBuf>::new(), lb));
            }
        }
    }
    out
}

fn show(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        "/".into()
    } else {
        format!("/{}", p.display())
    }
}

/// For each non-directory that shares its inode with another visible path: the other paths.
fn link_groups(s: &Snapshot, ignored: &dyn Fn(&Path) -> bool) -> BTreeMap<PathBuf, Vec<PathBuf>> {
    let mut by_ino: BTreeMap<(u64, u64), Vec<&PathBuf>> = BTreeMap::new();
    for (p, e) in s {
        if e.kind != Kind::Dir && e.nlink > 1 && !ignored(p) {
            by_ino.entry((e.dev, e.ino)).or_default().push(p);
        }
    }
    let mut out = BTreeMap::new();
    for paths in by_ino.values().filter(|v| v.len() > 1) {
        for p in paths {
            out.insert((*p).clone(), paths.iter().filter(|q| *q != p).map(|q| (*q).clone()).collect());
        }
    }
    out
}

fn compare_entry(p: &Path, a: &EntryInfo, b: &EntryInfo, opts: &CompareOptions, out: &mut Vec<String>) {
    let mut d = String::new();
    if a.kind != b.kind {
        out.push(format!("{}: type {:?} vs {:?}", show(p), a.kind, b.kind));
        return;
    }
    if a.mode != b.mode {
        let _ = write!(d, " mode {:o} vs {:o};", a.mode, b.mode);
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        let _ = write!(d, " owner {}:{} vs {}:{};", a.uid, a.gid, b.uid, b.gid);
    }
    if a.size != b.size {
        let _ = write!(d, " size {} vs {};", a.size, b.size);
    }
    if a.sha256 != b.sha256 {
        let _ = write!(d, " content differs;");
    }
    if a.link_target != b.link_target {
        let _ = write!(d, " link target {:?} vs {:?};", a.link_target, b.link_target);
    }
    if a.rdev != b.rdev {
        let _ = write!(d, " device {:?} vs {:?};", a.rdev, b.rdev);
    }
    let keep = |m: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        m.iter()
            .filter(|(k, _)| !opts.ignore_xattr_prefixes.iter().any(|pre| k.starts_with(pre.as_str())))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (xa, xb) = (keep(&a.xattrs), keep(&b.xattrs));
    if xa != xb {
        let _ = write!(d, " xattrs {:?} vs {:?};", xattr_show(&xa), xattr_show(&xb));
    }
    let check_time = if a.kind == Kind::Dir { opts.dir_mtime } else { opts.mtime };
    if check_time && a.mtime.0 != b.mtime.0 {
        let _ = write!(d, " mtime {} vs {};", a.mtime.0, b.mtime.0);
    }
    if !d.is_empty() {
        out.push(format!("{} ({:?}):{}", show(p), a.kind, d.trim_end_matches(';')));
    }
}

fn xattr_show(m: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    m.iter().map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v).escape_debug())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn finds_every_kind_of_difference() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::write(d.join("same"), b"x").unwrap();
            std::fs::write(d.join("f"), b"x").unwrap();
            std::fs::create_dir(d.join("dir")).unwrap();
        }
        std::fs::write(b.path().join("f"), b"y").unwrap();
        std::fs::set_permissions(b.path().join("dir"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(a.path().join("only-a"), b"").unwrap();
        std::os::unix::fs::symlink("t", b.path().join("only-b")).unwrap();
        std::fs::hard_link(a.path().join("same"), a.path().join("same2")).unwrap();
        std::fs::write(b.path().join("same2"), b"x").unwrap();
        let opts = CompareOptions { mtime: false, ..Default::default() };
        let d = diff_trees(&snapshot(a.path()).unwrap(), &snapshot(b.path()).unwrap(), &opts);
        let all = d.join("\n");
        assert!(all.contains("/f (File): content differs"), "{all}");
        assert!(all.contains("/dir (Dir): mode 755 vs 700"), "{all}");
        assert!(all.contains("/only-a: only in first"), "{all}");
        assert!(all.contains("/only-b: only in second"), "{all}");
        assert!(all.contains("/same: hard-linked with"), "{all}");
        let same = snapshot(a.path()).unwrap();
        assert!(diff_trees(&same, &same, &CompareOptions::default()).is_empty());
    }
}
