//! Flattened root filesystems: a read-only merged view of a layer stack, and what users who want the
//! rootfs itself get from it — `rimg unpack` (a plain directory, as `umoci unpack`) and `rimg export` (one
//! tar, as `docker export`).
//!
//! The view is the kernel's overlayfs, read-only: the reference implementation of the layer semantics,
//! mounted in a private mount namespace (see [`enter_private_mount_namespace`]) so it can
//! never outlive the process that needs it. Each layer is its own `lowerdir+` (not one mount(2) string,
//! which holds only ~45 store paths); an image deeper than the kernel's 500 lowers is merged in two
//! levels: its bottom layers, 500 at a time, as read-only overlays that serve as lowers of the top one
//! (overlayfs stacks on overlayfs once).

use crate::layer::{self, ApplyOptions, DiffOptions};
use crate::runtime::mounts::{self, Overlay, OVERLAY_MAX_LOWERS};
use crate::store::Store;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Give the build its own mount namespace (private propagation), so the read-only views it mounts are
/// invisible to the host and disappear with the process, even when it is killed.
pub fn enter_private_mount_namespace() -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare mount namespace: {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))
}

/// A read-only merged view of layer directories (top first), unmounted on drop.
pub struct MergedView {
    /// Where the merged tree is visible.
    pub path: PathBuf,
    /// Directories the view made besides `path`: an empty lower, mount points of nested overlays.
    extra: Vec<PathBuf>,
}

impl MergedView {
    /// Mount `dirs` (top first) read-only in a fresh directory under the store's ingest area.
    pub fn mount(dirs: &[PathBuf], store: &Store) -> Result<MergedView, String> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let path = store.root().join(format!(
            "ingest/view-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut view = MergedView { path: path.clone(), extra: Vec::new() };
        let mut dirs = mounts::distinct_lowers(dirs);
        if dirs.is_empty() {
            dirs.push(view.make_dir("empty")?);
        }
        if dirs.len() == 1 {
            bind_read_only(&dirs[0], &path).map_err(|e| format!("mounting the layer read-only: {e}"))?;
        } else {
            let lowers = view.nest(&dirs)?;
            mount_read_only(&lowers, &path)?;
        }
        Ok(view)
    }

    /// A new directory next to the view's, removed with it.
    fn make_dir(&mut self, suffix: &str) -> Result<PathBuf, String> {
        let dir = self.path.with_extension(suffix);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        self.extra.push(dir.clone());
        Ok(dir)
    }

    /// The lowers of the top overlay for `dirs` (top first): the top layers themselves, then, when there are
    /// more than the kernel stacks, read-only overlays of the bottom ones, up to 500 layers each.
    fn nest(&mut self, dirs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
        let mut rest = dirs;
        let mut nested: Vec<PathBuf> = Vec::new(); // bottom first
        while !rest.is_empty() && rest.len() + nested.len() > OVERLAY_MAX_LOWERS {
            let (top, bottom) = rest.split_at(rest.len() - OVERLAY_MAX_LOWERS.min(rest.len()));
            let dir = self.make_dir(&format!("lower{}", nested.len()))?;
            mount_read_only(bottom, &dir)?;
            nested.push(dir);
            rest = top;
        }
        let mut lowers = rest.to_vec();
        lowers.extend(nested.into_iter().rev());
        Ok(lowers)
    }
}

/// Bind `dir` read-only at `target`.
fn bind_read_only(dir: &Path, target: &Path) -> nix::Result<()> {
    use nix::mount::{mount, MsFlags};
    mount(Some(dir), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
}

/// A read-only kernel overlay of `lowers` (top first, at most 500) at `target`.
fn mount_read_only(lowers: &[PathBuf], target: &Path) -> Result<(), String> {
    // Uppers written by rimg's FUSE overlay may carry metacopy/redirect xattrs: let the kernel follow them
    // when it can, else mount plainly.
    let follow = [("metacopy", "on"), ("redirect_dir", "follow")];
    let ovl = Overlay { lowers, upper: None, options: &follow };
    mounts::mount_overlay(&ovl, target)
        .or_else(|e| {
            log::debug!("read-only overlay with metacopy: {e}; mounting without");
            mounts::mount_overlay(&Overlay { options: &[], ..ovl }, target)
        })
        .map_err(|e| format!("mounting the layers read-only: {e}"))
}

impl Drop for MergedView {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.path);
        for dir in self.extra.iter().rev() {
            let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Write the merged tree of `dirs` (top first) as one tar to `out` (docker export): numeric owners,
/// modes, xattrs, hard links, devices; entries sorted.
pub fn export(store: &Store, dirs: &[PathBuf], out: impl Write) -> Result<(), String> {
    let view = MergedView::mount(dirs, store)?;
    layer::diff::diff(&view.path, &[], out, &DiffOptions::default()).map_err(|e| e.to_string())?;
    Ok(())
}

/// Write the merged tree of `dirs` (top first) into the new directory `dest` (umoci unpack's rootfs).
pub fn unpack(store: &Store, dirs: &[PathBuf], dest: &Path) -> Result<(), String> {
    if dest.exists() && std::fs::read_dir(dest).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(format!("{} exists and is not empty", dest.display()));
    }
    let view = MergedView::mount(dirs, store)?;
    let (reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
    let src = view.path.clone();
    let producer = std::thread::spawn(move || {
        layer::diff::diff(&src, &[], std::io::BufWriter::new(writer), &DiffOptions::default())
            .map_err(|e| e.to_string())
    });
    let applied = layer::apply(std::io::BufReader::new(reader), dest, &ApplyOptions::default())
        .map_err(|e| e.to_string());
    let produced = producer.join().map_err(|_| "export thread panicked".to_string())?;
    produced?;
    applied.map(|_| ())
}
