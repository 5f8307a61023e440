//! Flattened root filesystems: a read-only merged view of a layer stack, and what users who want the
//! rootfs itself get from it — `rimg unpack` (a plain directory, as `umoci unpack`) and `rimg export` (one
//! tar, as `docker export`).
//!
//! The view is the kernel's overlayfs, read-only: the reference implementation of the layer semantics,
//! mounted in a private mount namespace (see [`enter_private_mount_namespace`]) so it can
//! never outlive the process that needs it.

use crate::layer::{self, ApplyOptions, DiffOptions};
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
    empty: Option<PathBuf>,
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
        let mut view = MergedView { path: path.clone(), empty: None };
        let mut dirs = dirs.to_vec();
        if dirs.is_empty() {
            let empty = path.with_extension("empty");
            std::fs::create_dir_all(&empty).map_err(|e| format!("{}: {e}", empty.display()))?;
            view.empty = Some(empty.clone());
            dirs.push(empty);
        }
        let res = if dirs.len() == 1 {
            nix::mount::mount(Some(&dirs[0]), &path, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
                .and_then(|_| {
                    nix::mount::mount(
                        None::<&str>,
                        &path,
                        None::<&str>,
                        nix::mount::MsFlags::MS_BIND
                            | nix::mount::MsFlags::MS_REMOUNT
                            | nix::mount::MsFlags::MS_RDONLY,
                        None::<&str>,
                    )
                })
        } else {
            let lower = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":");
            // Uppers written by rimg's FUSE overlay may carry metacopy/redirect xattrs: let the kernel
            // follow them when it can, else mount plainly.
            let ro = nix::mount::MsFlags::MS_RDONLY;
            nix::mount::mount(
                Some("overlay"),
                &path,
                Some("overlay"),
                ro,
                Some(format!("lowerdir={lower},metacopy=on,redirect_dir=follow").as_str()),
            )
            .or_else(|_| {
                nix::mount::mount(
                    Some("overlay"),
                    &path,
                    Some("overlay"),
                    ro,
                    Some(format!("lowerdir={lower}").as_str()),
                )
            })
        };
        res.map_err(|e| format!("mounting the layers read-only: {e}"))?;
        Ok(view)
    }
}

impl Drop for MergedView {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.path);
        if let Some(e) = &self.empty {
            let _ = std::fs::remove_dir(e);
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
