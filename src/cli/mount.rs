//! CLI: `rimg mount [--read-only] REF MOUNTPOINT` and `rimg umount MOUNTPOINT`.
//!
//! `rimg mount` stacks an image's cached layer directories under a fresh upper directory kept in
//! `ROOT/mounts/<hash of the mount point>/` and serves the overlay from a daemon; `rimg umount` unmounts
//! (the daemon then exits) and removes that directory.
use super::pull::open_store;
use super::Globals;
use crate::digest::Digest;
use crate::fs::{MountOptions, OverlayConfig};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// `rimg mount` arguments.
#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Mount the image's layers without a writable upper directory.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Image reference or ID.
    image: String,
    /// Directory to mount on.
    mountpoint: PathBuf,
}

/// Per-mount state directory: ROOT/mounts/<sha256 of the canonical mount point, 16 hex>.
fn state_dir(root: &Path, mountpoint: &Path) -> PathBuf {
    let d = Digest::of_bytes(std::os::unix::ffi::OsStrExt::as_bytes(mountpoint.as_os_str()));
    root.join("mounts").join(&d.hex()[..16])
}

/// Mount an image's rootfs; returns once the mount is ready.
pub fn mount(a: MountArgs, g: &Globals) -> anyhow::Result<i32> {
    let store = open_store(g)?;
    let img = store.image(&a.image).with_context(|| format!("looking up image {}", a.image))?;
    let mountpoint =
        a.mountpoint.canonicalize().with_context(|| format!("mount point {}", a.mountpoint.display()))?;
    let state = state_dir(store.root(), &mountpoint);
    if state.exists() {
        anyhow::bail!("{} is already mounted by rimg (state in {})", mountpoint.display(), state.display());
    }
    let mut lowers = img.layer_dirs(&store);
    for l in &lowers {
        anyhow::ensure!(l.is_dir(), "layer directory {} is missing; pull the image again", l.display());
    }
    if lowers.is_empty() {
        // an image without layers: an empty lower
        let empty = state.join("empty");
        std::fs::create_dir_all(&empty).with_context(|| format!("creating {}", empty.display()))?;
        lowers.push(empty);
    }
    let mut cfg = OverlayConfig { lowers, upper: None, work: None };
    if !a.read_only {
        let (u, w) = (state.join("upper"), state.join("work"));
        for d in [&u, &w] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        cfg.upper = Some(u);
        cfg.work = Some(w);
    } else {
        std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    }
    std::fs::write(state.join("mountpoint"), mountpoint.as_os_str().as_encoded_bytes())
        .with_context(|| format!("writing {}", state.display()))?;
    let opts = MountOptions {
        read_only: a.read_only,
        fsname: format!("rimg:{}", a.image),
        ..MountOptions::default()
    };
    match super::overlayfs::daemon_mount(cfg, &mountpoint, &opts) {
        Ok(code) => Ok(code),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&state);
            Err(e)
        }
    }
}

/// `rimg umount` arguments.
#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// Mount point of a `rimg mount` or `rimg overlayfs` mount.
    mountpoint: PathBuf,
}

/// Unmount (the serving daemon notices and exits); for `rimg mount` mounts also drop the upper directory.
pub fn umount(a: UmountArgs, g: &Globals) -> anyhow::Result<i32> {
    let mp = a.mountpoint.canonicalize().unwrap_or_else(|_| a.mountpoint.clone());
    crate::fs::unmount_path(&mp).with_context(|| format!("unmounting {}", mp.display()))?;
    let state = state_dir(&g.root, &mp);
    if state.join("mountpoint").exists() {
        std::fs::remove_dir_all(&state).with_context(|| format!("removing {}", state.display()))?;
    }
    Ok(0)
}
