//! Diffing an overlay upper directory back into an OCI layer tar (the inverse of [`super::apply()`]).
//!
//! Used by `rimg commit` and `rimg build`: after a step ran on an overlay, its upper directory holds
//! exactly the step's changes in overlayfs format. This module turns those into the OCI layer
//! representation: 0/0 character devices become `.wh.NAME` files, opaque directories get a
//! `.wh..wh..opq` entry, hard links inside the upper stay hard links, metadata-only copy-ups take their
//! data from the lower layers.
//!
//! The output is deterministic, so a rebuild gives the same digest: entries sorted by name, PAX
//! extended headers (records sorted, fixed header name) for long names, big ids and xattrs, numeric
//! owners without user/group names, whole-second mtimes clamped to `SOURCE_DATE_EPOCH` when given.

use super::lower::{self, OPAQUE_XATTR, USER_OPAQUE_XATTR};
use super::walk::{Dir, Entry, Kind, Meta, Xattrs};
use super::{sys, LayerError};
use crate::digest::{Digest, HashingWriter};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Knobs for [`diff`].
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Clamp every mtime to at most this value (seconds since the epoch), as `SOURCE_DATE_EPOCH`
    /// asks for reproducible builds.
    pub source_date_epoch: Option<u64>,
}

/// What [`diff`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Tar entries written (not counting PAX headers).
    pub entries: u64,
    /// Regular files with data.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Hard links (second and later names of an inode).
    pub hardlinks: u64,
    /// Devices and fifos.
    pub devices: u64,
    /// Whiteouts written as `.wh.NAME`.
    pub whiteouts: u64,
    /// Opaque directories (`.wh..wh..opq` entries).
    pub opaques: u64,
    /// File data bytes.
    pub bytes: u64,
    /// Metadata-only copy-ups whose data was read from a lower layer.
    pub metacopies: u64,
    /// Unix sockets skipped (tar cannot carry them; docker skips them too).
    pub skipped_sockets: u64,
}

/// The result of [`diff_to_blob`]: what an image manifest and config need for the new layer.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    /// Digest of the compressed blob (the manifest's layer digest).
    pub digest: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub diff_size: u64,
    /// What went into it.
    pub stats: DiffStats,
}

const METACOPY: [&str; 2] = ["trusted.overlay.metacopy", "user.overlay.metacopy"];
const REDIRECT: [&str; 2] = ["trusted.overlay.redirect", "user.overlay.redirect"];
const XATTR_WHITEOUT: [&str; 2] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];

/// Write the OCI layer tar of the overlay upper directory `upper` to `out`. `lowers` (top first) are
/// the layers the upper was mounted over; they are read only for metadata-only copy-ups.
pub fn diff<W: Write>(
    upper: &Path,
    lowers: &[PathBuf],
    out: W,
    opts: &DiffOptions,
) -> Result<DiffStats, LayerError> {
    let mut w = Writer {
        out: io::BufWriter::with_capacity(256 * 1024, out),
        lowers,
        opts,
        stats: DiffStats::default(),
        links: HashMap::new(),
        buf: vec![0u8; 256 * 1024],
    };
    // The upper may belong to a running container: it is read from directory descriptors only (see
    // `walk`), so a directory swapped for a symlink mid-walk can never lead outside it.
    let root = Dir::open(upper)?;
    let root_meta = root.meta()?;
    if is_opaque_xattrs(&root.xattrs()?) {
        w.marker(b".wh..wh..opq", &root_meta)?;
        w.stats.opaques += 1;
    }
    w.dir_children(&root, &mut Vec::new())?;
    // End of archive: two zero blocks.
    w.out.write_all(&[0u8; 1024]).map_err(LayerError::Write)?;
    w.out.flush().map_err(LayerError::Write)?;
    Ok(w.stats)
}

/// [`diff`] straight into a gzip-compressed blob written to `out`, hashing both the compressed bytes
/// (the blob digest) and the uncompressed tar (the diff_id) in the same pass. The gzip stream is one
/// ordinary member, compressed in parallel in fixed blocks, so the digest does not depend on the machine.
pub fn diff_to_blob<W: Write>(
    upper: &Path,
    lowers: &[PathBuf],
    out: W,
    opts: &DiffOptions,
) -> Result<BlobInfo, LayerError> {
    let compressed = HashingWriter::new(out);
    // Compressed on all cores, deterministically (see `pargz`); header without name, mtime 0.
    let gz = super::pargz::ParGzWriter::new(compressed, flate2::Compression::default());
    let mut tar = HashingWriter::new(gz);
    let stats = diff(upper, lowers, &mut tar, opts)?;
    let (diff_id, diff_size, gz) = tar.finish();
    let compressed = gz.finish().map_err(LayerError::Write)?;
    let (digest, size, mut out) = compressed.finish();
    out.flush().map_err(LayerError::Write)?;
    Ok(BlobInfo { digest, size, diff_id, diff_size, stats })
}

struct Writer<'a, W: Write> {
    out: io::BufWriter<W>,
    lowers: &'a [PathBuf],
    opts: &'a DiffOptions,
    stats: DiffStats,
    /// (dev, ino) of multiply-linked files already written → their tar name.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

fn is_overlay_private(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn has_any_xattr(xattrs: &[(Vec<u8>, Vec<u8>)], names: &[&str]) -> bool {
    xattrs.iter().any(|(n, _)| names.iter().any(|m| n == m.as_bytes()))
}

fn xattr_value<'x>(xattrs: &'x [(Vec<u8>, Vec<u8>)], names: &[&str]) -> Option<&'x [u8]> {
    xattrs.iter().find(|(n, _)| names.iter().any(|m| n == m.as_bytes())).map(|(_, v)| v.as_slice())
}

fn is_opaque_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)]) -> bool {
    [OPAQUE_XATTR, USER_OPAQUE_XATTR].iter().any(|n| xattr_value(xattrs, &[n]) == Some(b"y".as_slice()))
}

/// The lower path a redirect xattr on the directory at `rel` points to: absolute from the layer root,
/// or (kernel overlayfs writes this for renames within one directory) a sibling name.
fn redirect_origin(path: &Path, rel: &[u8], redirect: &[u8]) -> Result<Vec<u8>, LayerError> {
    let want = if redirect.starts_with(b"/") {
        redirect.to_vec()
    } else {
        let (parent, _) = super::path::split(rel);
        let mut v = parent.to_vec();
        v.push(b'/');
        v.extend_from_slice(redirect);
        v
    };
    let mut out = Vec::new();
    super::path::clean(&want, &mut out).map_err(|_| LayerError::Invalid {
        path: path.display().to_string(),
        reason: format!("overlay redirect {:?} escapes the layer root", String::from_utf8_lossy(redirect)),
    })?;
    Ok(out)
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record including itself.
/// Public so the fuzz harness builds its hostile tars with the same encoder rimg writes layers with.
pub fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The type-specific part of an entry.
enum Body<'f> {
    Dir,
    File { data: &'f mut dyn Read, size: u64 },
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Device { kind: tar::EntryType, major: u32, minor: u32 },
}

impl<W: Write> Writer<'_, W> {
    fn mtime(&self, meta: &Meta) -> u64 {
        let t = u64::try_from(meta.mtime()).unwrap_or(0);
        match self.opts.source_date_epoch {
            Some(sde) => t.min(sde),
            None => t,
        }
    }

    fn dir_children(&mut self, dir: &Dir, rel: &mut Vec<u8>) -> Result<(), LayerError> {
        for name in dir.names()? {
            let base = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            // An entry removed since the listing (a running container) is simply not in the layer.
            let r = match dir.entry(&name) {
                Ok(Some(e)) => self.node(&e, rel),
                Ok(None) => Ok(()),
                Err(e) => Err(e.into()),
            };
            rel.truncate(base);
            r?;
        }
        Ok(())
    }

    fn node(&mut self, e: &Entry, rel: &mut Vec<u8>) -> Result<(), LayerError> {
        let meta = *e.meta();
        if meta.is_whiteout() {
            return self.whiteout(rel, &meta);
        }
        if meta.kind() == Kind::Socket {
            self.stats.skipped_sockets += 1;
            return Ok(());
        }
        let xattrs = e.xattrs()?;
        if meta.is_dir() {
            let dir = e.open_dir()?;
            if let Some(r) = xattr_value(&xattrs, &REDIRECT) {
                // A lower directory renamed here (redirect_dir): OCI has no rename, so the directory is
                // written whole (opaque), merged from the upper and the renamed lower directory.
                let origin = redirect_origin(e.path(), rel, r)?;
                let sources = lower::dir_sources(self.lowers, &origin)
                    .map_err(|err| LayerError::io_path(e.path(), "look up in lower layers", err))?;
                self.dir_header(rel, &meta, &xattrs, true)?;
                return self.merged_children(rel, Some(&dir), &sources, &origin);
            }
            self.dir_header(rel, &meta, &xattrs, is_opaque_xattrs(&xattrs))?;
            return self.dir_children(&dir, rel);
        }
        if meta.is_file() && meta.size() == 0 && has_any_xattr(&xattrs, &XATTR_WHITEOUT) {
            return self.whiteout(rel, &meta);
        }
        let lower_rel = rel.clone();
        self.leaf(e, rel, &xattrs, &lower_rel)
    }

    /// A directory entry, plus its `.wh..wh..opq` marker when `opaque`.
    fn dir_header(
        &mut self,
        rel: &[u8],
        meta: &Meta,
        xattrs: &Xattrs,
        opaque: bool,
    ) -> Result<(), LayerError> {
        let mut name = rel.to_vec();
        name.push(b'/');
        self.entry(&name, meta, xattrs, Body::Dir)?;
        self.stats.dirs += 1;
        if opaque {
            let mut m = rel.to_vec();
            m.extend_from_slice(b"/.wh..wh..opq");
            self.marker(&m, meta)?;
            self.stats.opaques += 1;
        }
        Ok(())
    }

    /// The children of a directory written whole: the upper directory (if any) merged over the lower
    /// directories `sources` (top first), as overlayfs shows them. Everything below is written in full
    /// (the directory is opaque in the layer), so no whiteouts are needed: hidden names are left out.
    fn merged_children(
        &mut self,
        rel: &mut Vec<u8>,
        upper: Option<&Dir>,
        sources: &[PathBuf],
        lower_rel: &[u8],
    ) -> Result<(), LayerError> {
        let source_dirs = sources.iter().map(|s| Dir::open(s)).collect::<Result<Vec<_>, _>>()?;
        let mut names = std::collections::BTreeSet::new();
        for d in upper.into_iter().chain(&source_dirs) {
            names.extend(d.names()?.into_iter().map(OsString::into_vec));
        }
        for name in names {
            let base = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            let mut child_lower = lower_rel.to_vec();
            if !child_lower.is_empty() {
                child_lower.push(b'/');
            }
            child_lower.extend_from_slice(&name);
            let r = self.merged_child(rel, upper, sources, &source_dirs, &name, &child_lower);
            rel.truncate(base);
            r?;
        }
        Ok(())
    }

    fn merged_child(
        &mut self,
        rel: &mut Vec<u8>,
        upper: Option<&Dir>,
        sources: &[PathBuf],
        source_dirs: &[Dir],
        name: &[u8],
        lower_rel: &[u8],
    ) -> Result<(), LayerError> {
        if let Some(e) = upper.map(|u| u.entry(sys::os(name))).transpose()?.flatten() {
            let meta = *e.meta();
            if meta.is_whiteout() || meta.kind() == Kind::Socket {
                return Ok(());
            }
            let xattrs = e.xattrs()?;
            if meta.is_file() && meta.size() == 0 && has_any_xattr(&xattrs, &XATTR_WHITEOUT) {
                return Ok(());
            }
            if !meta.is_dir() {
                return self.leaf(&e, rel, &xattrs, lower_rel);
            }
            let (subs, sub_lower) = if is_opaque_xattrs(&xattrs) {
                (Vec::new(), lower_rel.to_vec())
            } else if let Some(r) = xattr_value(&xattrs, &REDIRECT) {
                let origin = redirect_origin(e.path(), lower_rel, r)?;
                let subs = lower::dir_sources(self.lowers, &origin)
                    .map_err(|err| LayerError::io_path(e.path(), "look up in lower layers", err))?;
                (subs, origin)
            } else {
                (
                    lower::sub_sources(sources, name)
                        .map_err(|err| LayerError::io_path(e.path(), "stat", err))?,
                    lower_rel.to_vec(),
                )
            };
            self.dir_header(rel, &meta, &xattrs, false)?;
            let dir = e.open_dir()?;
            return self.merged_children(rel, Some(&dir), &subs, &sub_lower);
        }
        for (i, (s, sd)) in sources.iter().zip(source_dirs).enumerate() {
            let Some(e) = sd.entry(sys::os(name))? else { continue };
            let meta = *e.meta();
            if meta.is_whiteout() {
                return Ok(());
            }
            let xattrs = e.xattrs()?;
            if !meta.is_dir() {
                return self.leaf(&e, rel, &xattrs, lower_rel);
            }
            let mut subs = vec![s.join(sys::os(name))];
            if !is_opaque_xattrs(&xattrs) {
                subs.extend(
                    lower::sub_sources(&sources[i + 1..], name)
                        .map_err(|err| LayerError::io_path(e.path(), "stat", err))?,
                );
            }
            self.dir_header(rel, &meta, &xattrs, false)?;
            return self.merged_children(rel, None, &subs, lower_rel);
        }
        Ok(())
    }

    /// A non-directory: file (hard link if its inode was written already; data from the lowers for a
    /// metadata-only copy-up, looked up at `lower_rel`), symlink, device or fifo.
    fn leaf(&mut self, e: &Entry, rel: &[u8], xattrs: &Xattrs, lower_rel: &[u8]) -> Result<(), LayerError> {
        let meta = *e.meta();
        let kind = match meta.kind() {
            Kind::File => return self.file(e, rel, xattrs, lower_rel),
            Kind::Symlink => {
                let target = e.read_link()?;
                self.entry(rel, &meta, xattrs, Body::Symlink(target))?;
                self.stats.symlinks += 1;
                return Ok(());
            }
            Kind::Socket => {
                self.stats.skipped_sockets += 1;
                return Ok(());
            }
            Kind::Dir => {
                return Err(LayerError::io_path(
                    e.path(),
                    "write",
                    io::Error::from_raw_os_error(libc::EISDIR),
                ))
            }
            Kind::CharDevice => tar::EntryType::Char,
            Kind::BlockDevice => tar::EntryType::Block,
            Kind::Fifo => tar::EntryType::Fifo,
        };
        let rdev = meta.rdev();
        self.entry(
            rel,
            &meta,
            xattrs,
            Body::Device { kind, major: libc::major(rdev), minor: libc::minor(rdev) },
        )?;
        self.stats.devices += 1;
        Ok(())
    }

    /// A regular file, its data read from the pinned inode (or, for a metadata-only copy-up, from the
    /// lowers); a hard link when its inode was written already.
    fn file(&mut self, e: &Entry, rel: &[u8], xattrs: &Xattrs, lower_rel: &[u8]) -> Result<(), LayerError> {
        let meta = *e.meta();
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let target = first.clone();
                self.entry(rel, &meta, &[], Body::HardLink(target))?;
                self.stats.hardlinks += 1;
                return Ok(());
            }
            self.links.insert(key, rel.to_vec());
        }
        let mut f = if has_any_xattr(xattrs, &METACOPY) {
            self.stats.metacopies += 1;
            let source = self.metacopy_source(e.path(), lower_rel, xattrs)?;
            // The lowers are store layers, never changed once written: a path is safe there.
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&source)
                .map_err(|err| LayerError::io_path(&source, "open", err))?
        } else {
            e.open_file()?
        };
        let size = meta.size();
        self.entry(rel, &meta, xattrs, Body::File { data: &mut f, size })?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    /// Where the data of a metadata-only copy-up lives: the redirect path (absolute from the layer root,
    /// or relative to the file's directory) or the same path, looked up through the lowers.
    fn metacopy_source(
        &self,
        path: &Path,
        rel: &[u8],
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<PathBuf, LayerError> {
        let mut target = Vec::new();
        let want: Vec<u8> = match xattr_value(xattrs, &REDIRECT) {
            Some(r) if r.starts_with(b"/") => r.to_vec(),
            Some(r) => {
                let (parent, _) = super::path::split(rel);
                let mut v = parent.to_vec();
                v.push(b'/');
                v.extend_from_slice(r);
                v
            }
            None => rel.to_vec(),
        };
        super::path::clean(&want, &mut target).map_err(|_| LayerError::Invalid {
            path: path.display().to_string(),
            reason: format!("metacopy redirect {:?} escapes the layer root", String::from_utf8_lossy(&want)),
        })?;
        match lower::lookup(self.lowers, &target) {
            Ok(Some((p, m))) if m.is_file() => Ok(p),
            Ok(_) => Err(LayerError::Invalid {
                path: path.display().to_string(),
                reason: format!(
                    "metadata-only copy-up, but {:?} is not a regular file in the {} lower layer(s)",
                    String::from_utf8_lossy(&target),
                    self.lowers.len()
                ),
            }),
            Err(e) => Err(LayerError::io_path(path, "look up in lower layers", e)),
        }
    }

    fn whiteout(&mut self, rel: &[u8], meta: &Meta) -> Result<(), LayerError> {
        let (parent, name) = super::path::split(rel);
        let mut m = parent.to_vec();
        if !m.is_empty() {
            m.push(b'/');
        }
        m.extend_from_slice(b".wh.");
        m.extend_from_slice(name);
        self.marker(&m, meta)?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// An empty marker file (whiteout, opaque): mode 0, root-owned, the mtime of what it stands for.
    fn marker(&mut self, name: &[u8], meta: &Meta) -> Result<(), LayerError> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_mtime(self.mtime(meta));
        self.write_entry(h, name, None, &[], None, 0)
    }

    fn entry(
        &mut self,
        name: &[u8],
        meta: &Meta,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        body: Body<'_>,
    ) -> Result<(), LayerError> {
        // what the FUSE layer kept off disk under a user namespace (fs/kept.rs) goes back into the layer
        // (the type bits tell restore_kept whether the file is a regular one, the only kind it keeps bits for)
        let (mode, xattrs) = crate::fs::restore_kept(meta.st_mode(), xattrs);
        let mut h = tar::Header::new_ustar();
        h.set_mode(mode & 0o7777);
        h.set_mtime(self.mtime(meta));
        let (uid, gid) = (meta.uid() as u64, meta.gid() as u64);
        h.set_size(0);
        let mut link = None;
        let mut data: Option<&mut dyn Read> = None;
        let mut size = 0;
        match body {
            Body::Dir => h.set_entry_type(tar::EntryType::Directory),
            Body::File { data: d, size: s } => {
                h.set_entry_type(tar::EntryType::Regular);
                size = s;
                data = Some(d);
            }
            Body::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                link = Some(t);
            }
            Body::HardLink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                link = Some(t);
            }
            Body::Device { kind, major, minor } => {
                h.set_entry_type(kind);
                if kind != tar::EntryType::Fifo {
                    h.set_device_major(major).map_err(LayerError::Write)?;
                    h.set_device_minor(minor).map_err(LayerError::Write)?;
                }
            }
        }
        let mut ids = Vec::new();
        const MAX_OCTAL7: u64 = 0o7777777;
        if uid > MAX_OCTAL7 {
            ids.push((b"uid".to_vec(), uid.to_string().into_bytes()));
        } else {
            h.set_uid(uid);
        }
        if gid > MAX_OCTAL7 {
            ids.push((b"gid".to_vec(), gid.to_string().into_bytes()));
        } else {
            h.set_gid(gid);
        }
        let kept: Vec<(Vec<u8>, Vec<u8>)> = xattrs
            .iter()
            .filter(|(n, _)| !is_overlay_private(n))
            .map(|(n, v)| {
                let mut k = b"SCHILY.xattr.".to_vec();
                k.extend_from_slice(n);
                (k, v.clone())
            })
            .chain(ids)
            .collect();
        self.write_entry(h, name, link.as_deref(), &kept, data, size)
    }

    /// Write header (plus a PAX header when needed), then exactly `size` bytes of data and padding.
    fn write_entry(
        &mut self,
        mut h: tar::Header,
        name: &[u8],
        link: Option<&[u8]>,
        extra: &[(Vec<u8>, Vec<u8>)],
        data: Option<&mut dyn Read>,
        size: u64,
    ) -> Result<(), LayerError> {
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = extra.to_vec();
        {
            let ustar =
                h.as_ustar_mut().ok_or_else(|| LayerError::Write(io::Error::other("not a ustar header")))?;
            if name.len() > ustar.name.len() {
                records.push((b"path".to_vec(), name.to_vec()));
            }
            let n = name.len().min(ustar.name.len());
            ustar.name[..n].copy_from_slice(&name[..n]);
            if let Some(l) = link {
                if l.len() > ustar.linkname.len() {
                    records.push((b"linkpath".to_vec(), l.to_vec()));
                }
                let n = l.len().min(ustar.linkname.len());
                ustar.linkname[..n].copy_from_slice(&l[..n]);
            }
        }
        const MAX_OCTAL11: u64 = 0o77777777777;
        if size > MAX_OCTAL11 {
            records.push((b"size".to_vec(), size.to_string().into_bytes()));
        } else {
            h.set_size(size);
        }
        if !records.is_empty() {
            records.sort();
            let mut body = Vec::new();
            for (k, v) in &records {
                pax_record(&mut body, k, v);
            }
            let mut ph = tar::Header::new_ustar();
            ph.set_entry_type(tar::EntryType::XHeader);
            ph.set_mode(0o644);
            ph.set_uid(0);
            ph.set_gid(0);
            ph.set_mtime(h.mtime().unwrap_or(0));
            ph.set_size(body.len() as u64);
            if let Some(u) = ph.as_ustar_mut() {
                let n = b"././@PaxHeader";
                u.name[..n.len()].copy_from_slice(n);
            }
            ph.set_cksum();
            self.raw(ph.as_bytes())?;
            self.raw(&body)?;
            self.pad(body.len() as u64)?;
        }
        h.set_cksum();
        self.raw(h.as_bytes())?;
        if let Some(d) = data {
            let mut left = size;
            while left > 0 {
                let want = (left.min(self.buf.len() as u64)) as usize;
                let n = match d.read(&mut self.buf[..want]) {
                    Ok(0) => {
                        return Err(LayerError::Io {
                            path: String::from_utf8_lossy(name).into_owned(),
                            op: "read",
                            source: io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "file shrank while being read",
                            ),
                        })
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(LayerError::Io {
                            path: String::from_utf8_lossy(name).into_owned(),
                            op: "read",
                            source: e,
                        })
                    }
                };
                self.out.write_all(&self.buf[..n]).map_err(LayerError::Write)?;
                left -= n as u64;
            }
            self.pad(size)?;
        }
        self.stats.entries += 1;
        Ok(())
    }

    fn raw(&mut self, b: &[u8]) -> Result<(), LayerError> {
        self.out.write_all(b).map_err(LayerError::Write)
    }

    fn pad(&mut self, len: u64) -> Result<(), LayerError> {
        let rem = (len % 512) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; 512][..512 - rem]).map_err(LayerError::Write)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"abc");
        assert_eq!(v, b"12 path=abc\n");
        v.clear();
        pax_record(&mut v, b"path", &[b'a'; 94]);
        let s = String::from_utf8(v.clone()).unwrap();
        let (n, _) = s.split_once(' ').unwrap();
        assert_eq!(n.parse::<usize>().unwrap(), v.len());
        for l in 0..1100 {
            let mut v = Vec::new();
            pax_record(&mut v, b"k", &vec![b'x'; l]);
            let s = String::from_utf8(v.clone()).unwrap();
            let (n, _) = s.split_once(' ').unwrap();
            assert_eq!(n.parse::<usize>().unwrap(), v.len(), "value length {l}");
        }
    }
}
