//! Looking a path up in a stack of overlay-format layer directories, as overlayfs resolves it.
//!
//! Needed where a layer refers to content of the layers below it: a hard link in a layer tar whose
//! target lives in a lower layer (apply copies it up, as a containerd overlay snapshot would), an implicit
//! parent directory (which must carry the lower directory's owner and mode, or it would shadow them), and
//! a metadata-only copy-up in an upper directory (diff reads the data from below).

use super::sys;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The overlay xattr that marks a directory opaque in kernel overlayfs (mounted without `userxattr`).
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same marker as written by overlayfs mounted with `userxattr` (rootless overlays, fuse-overlayfs).
pub const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";

/// Is `meta` an overlayfs whiteout (a 0/0 character device)?
pub fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Is the directory at `path` opaque (`trusted.overlay.opaque` or `user.overlay.opaque` = `y`)?
pub fn is_opaque(path: &Path) -> io::Result<bool> {
    for name in [OPAQUE_XATTR, USER_OPAQUE_XATTR] {
        if sys::lgetxattr(path, name.as_bytes())?.as_deref() == Some(b"y") {
            return Ok(true);
        }
    }
    Ok(false)
}

fn lstat(p: &Path) -> io::Result<Option<std::fs::Metadata>> {
    match p.symlink_metadata() {
        Ok(m) => Ok(Some(m)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Resolve the cleaned relative path `rel` (`a/b/c`, no `..`) through `lowers` (top first) with
/// overlayfs's rules: a whiteout hides the name in all layers below, an opaque directory hides the
/// directories below it, a non-directory ends the merge of a directory. Symlinks are never followed.
/// Returns the real path of the visible entry and its metadata, or `None` when nothing is visible.
pub fn lookup(lowers: &[PathBuf], rel: &[u8]) -> io::Result<Option<(PathBuf, std::fs::Metadata)>> {
    let mut active: Vec<&Path> = lowers.iter().map(|p| p.as_path()).collect();
    let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
    let Some((last, dirs)) = comps.split_last() else {
        // The root: the top lower's root directory is what overlayfs shows.
        return match active.first() {
            Some(p) => Ok(lstat(p)?.map(|m| (p.to_path_buf(), m))),
            None => Ok(None),
        };
    };
    let mut prefix = PathBuf::new();
    for comp in dirs {
        prefix.push(sys::os(comp));
        let mut next = Vec::new();
        for layer in &active {
            let p = layer.join(&prefix);
            let Some(m) = lstat(&p)? else { continue };
            if !m.is_dir() {
                // A whiteout or a non-directory hides everything below; a non-directory on top makes the
                // path unresolvable (it is not followed).
                break;
            }
            next.push(*layer);
            if is_opaque(&p)? {
                break;
            }
        }
        if next.is_empty() {
            return Ok(None);
        }
        active = next;
    }
    prefix.push(sys::os(last));
    for layer in &active {
        let p = layer.join(&prefix);
        if let Some(m) = lstat(&p)? {
            if is_whiteout(&m) {
                return Ok(None);
            }
            return Ok(Some((p, m)));
        }
    }
    Ok(None)
}

/// The directories named `name` in `sources` (directories of one path in successive layers, top first)
/// that overlayfs merges: collected top-down until a whiteout, a non-directory or an opaque directory
/// ends the merge.
pub fn sub_sources(sources: &[PathBuf], name: &[u8]) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for s in sources {
        let p = s.join(sys::os(name));
        let Some(m) = lstat(&p)? else { continue };
        if !m.is_dir() {
            break;
        }
        let opaque = is_opaque(&p)?;
        out.push(p);
        if opaque {
            break;
        }
    }
    Ok(out)
}

/// All layer directories (top first) whose content overlayfs merges at the cleaned relative path `rel`;
/// empty when `rel` is not a visible directory.
pub fn dir_sources(lowers: &[PathBuf], rel: &[u8]) -> io::Result<Vec<PathBuf>> {
    let mut sources: Vec<PathBuf> = lowers.to_vec();
    for comp in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        sources = sub_sources(&sources, comp)?;
        if sources.is_empty() {
            break;
        }
    }
    Ok(sources)
}
