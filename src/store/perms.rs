//! Who may look into the store. Layers hold the images' setuid-root files and devices, containers' uppers
//! hold whatever their root wrote (including setuid files), `state.json` holds `-e` secrets and logs the
//! containers' output: a local user who can reach any of them can read secrets or become root. So, as
//! podman's graph root (0700) and docker's `/var/lib/docker` (0710):
//!
//! - `ROOT` is 0711: searchable, not listable, so a path below it can be reached only through a
//!   directory that allows it (none does today; the runtime may add one for user-namespaced containers,
//!   whose mapped root must reach its own rootfs);
//! - every directory directly under `ROOT` ([`PRIVATE_DIRS`]) is 0700;
//! - files rimg writes for itself (`index.json`, `oci-layout`, blobs, leases, `state.json`, logs) are 0600.
//!
//! [`Store::open`] applies this through [`Store::apply_modes`], the one place the modes are decided: it
//! creates missing directories with their mode and narrows ones an older rimg created 0755. It only
//! ever removes permission bits (a `--root` someone made 0700 stays 0700) and it leaves a `--root` that
//! rimg did not create alone unless it already is a store (holds `oci-layout`): `--root /srv` must not
//! chmod `/srv`.

use super::{IoContext, Result, Store};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Mode of `ROOT`.
pub const ROOT_MODE: u32 = 0o711;
/// Mode of every directory directly under `ROOT`.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the files rimg writes for itself.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// The directories directly under `ROOT`, all [`PRIVATE_DIR_MODE`]. `volumes` holds the volumes
/// (store/volumes.rs); `mounts` holds `rimg mount`'s uppers.
pub const PRIVATE_DIRS: &[&str] = &[
    "blobs",
    "ingest",
    "layers",
    "containers",
    "volumes",
    "mounts",
    "build-cache",
    "locks",
    "leases",
    "sources",
];

/// The files directly under `ROOT`, all [`PRIVATE_FILE_MODE`].
const ROOT_FILES: &[&str] = &["oci-layout", "index.json"];

impl Store {
    /// Create the store's directories with their modes, and narrow any that an older rimg left wider
    /// (see the module docs). Idempotent and cheap: a few `stat`s when nothing needs changing.
    pub fn apply_modes(&self) -> Result<()> {
        let root = self.root();
        let created = ensure_dir(root, ROOT_MODE, false)?;
        let ours = created || root.join("oci-layout").exists() || is_empty_dir(root);
        if ours {
            narrow(root, ROOT_MODE)?;
        }
        for name in PRIVATE_DIRS {
            ensure_dir(&root.join(name), PRIVATE_DIR_MODE, true)?;
        }
        for name in ROOT_FILES {
            let p = root.join(name);
            if p.exists() {
                narrow(&p, PRIVATE_FILE_MODE)?;
            }
        }
        Ok(())
    }
}

/// Create `dir` (and missing parents) with `mode`; when `tighten`, narrow an existing one to `mode`.
/// Returns whether it was created.
fn ensure_dir(dir: &Path, mode: u32, tighten: bool) -> Result<bool> {
    if dir.is_dir() {
        if tighten {
            narrow(dir, mode)?;
        }
        return Ok(false);
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        fs::create_dir_all(parent).ctx("create", parent)?;
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => Ok(true),
        // Another rimg made it meanwhile: treat as existing.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if tighten {
                narrow(dir, mode)?;
            }
            Ok(false)
        }
        Err(e) => Err(e).ctx("create", dir),
    }
}

/// Remove from `path` every permission bit `mode` does not have (never adds one). Only for paths owned
/// by the caller: another user's directory is theirs to decide.
fn narrow(path: &Path, mode: u32) -> Result<()> {
    let meta = fs::metadata(path).ctx("stat", path)?;
    // SAFETY: geteuid has no preconditions.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Ok(());
    }
    let current = meta.mode() & 0o7777;
    let wanted = current & mode;
    if wanted != current {
        fs::set_permissions(path, fs::Permissions::from_mode(wanted)).ctx("chmod", path)?;
    }
    Ok(())
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false)
}
