//! CLI: `rimg mount [--read-only] REF MOUNTPOINT` and `rimg umount MOUNTPOINT`.
use super::Globals;
use anyhow::Context;
use std::path::PathBuf;

/// `rimg mount` arguments.
#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Mount the image's layers without a writable upper directory.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Image reference.
    image: String,
    /// Directory to mount on.
    mountpoint: PathBuf,
}

/// Mount an image's rootfs (not implemented until the store lands).
pub fn mount(_a: MountArgs, _g: &Globals) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}

/// `rimg umount` arguments.
#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// Mount point of a `rimg mount` or `rimg overlayfs` mount.
    mountpoint: PathBuf,
}

/// Unmount; the serving daemon notices and exits.
pub fn umount(a: UmountArgs, _g: &Globals) -> anyhow::Result<i32> {
    crate::fs::unmount_path(&a.mountpoint)
        .with_context(|| format!("unmounting {}", a.mountpoint.display()))?;
    Ok(0)
}
