//! Unpacked layers: `layers/sha256/<diff_id>`, each staged in `layers/tmp/` and renamed into place whole.

use super::{IoContext, Result, Store};
use crate::digest::Digest;
use crate::store::lock::FileLock;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

impl Store {
    /// Is the layer with this uncompressed digest unpacked?
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// Start unpacking the layer `diff_id`. Holds the layer's lock (a concurrent unpack of the same layer
    /// waits, then sees it done) and clears leftovers of an attempt that was killed.
    pub fn stage_layer(&self, diff_id: &Digest) -> Result<LayerStaging> {
        self.hold_layers(std::slice::from_ref(diff_id))?;
        let lock = self.lock(&format!("layer-{}", diff_id.hex()))?;
        let path = self.layers_tmp_dir().join(diff_id.hex());
        if path.symlink_metadata().is_ok() {
            remove_tree(&path)?;
        }
        Ok(LayerStaging {
            store: self.clone(),
            diff_id: diff_id.clone(),
            path,
            committed: false,
            _lock: lock,
        })
    }
}

/// A layer directory being written. Dropped without [`LayerStaging::commit`], it is removed, so an error
/// half-way through a hostile or truncated layer leaves nothing behind.
#[derive(Debug)]
pub struct LayerStaging {
    store: Store,
    diff_id: Digest,
    path: PathBuf,
    committed: bool,
    _lock: FileLock,
}

impl LayerStaging {
    /// Has another process finished this layer while we waited for the lock?
    pub fn already_complete(&self) -> bool {
        self.store.has_layer(&self.diff_id)
    }

    /// The directory to unpack into (not yet created: `layer::apply` creates it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flush the unpacked files (one syncfs, not an fsync per file) and rename the directory into place.
    pub fn commit(mut self) -> Result<PathBuf> {
        fs::create_dir_all(&self.path).ctx("create", &self.path)?;
        let dir = fs::File::open(&self.path).ctx("open", &self.path)?;
        // SAFETY: syncfs on a valid fd.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error()).ctx("sync", &self.path);
        }
        let dest = self.store.layer_dir(&self.diff_id);
        fs::rename(&self.path, &dest).ctx("commit", &dest)?;
        super::sync_dir(dest.parent().unwrap_or(self.store.root()))?;
        self.committed = true;
        Ok(dest)
    }
}

impl Drop for LayerStaging {
    fn drop(&mut self) {
        if !self.committed && self.path.symlink_metadata().is_ok() {
            if let Err(e) = remove_tree(&self.path) {
                log::warn!("could not remove unfinished layer {}: {e}", self.path.display());
            }
        }
    }
}

/// Remove a directory tree that may contain read-only directories (layers keep their modes, so a
/// `0555` directory must be made writable before its entries can be removed).
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    make_writable(path);
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("remove", path),
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = path.symlink_metadata() else { return };
    if meta.is_dir() {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

impl Store {
    /// The unpacked size of a layer as `docker images`/`podman images` count it: the length of its
    /// uncompressed tar (what its diff_id hashes). A pull or load records it while unpacking
    /// ([`Store::note_layer_size`]); otherwise it is learnt once by decompressing `blob` (the layer's
    /// stored blob) or, without one, estimated from the unpacked files. Kept in
    /// `layers/size/<diff_id hex>` (layers never change once committed); `gc` removes it with its layer.
    pub fn layer_size(&self, diff_id: &Digest, blob: Option<&Digest>) -> Result<u64> {
        let cache = self.layer_size_path(diff_id);
        if let Some(n) = fs::read_to_string(&cache).ok().and_then(|t| t.trim().parse().ok()) {
            return Ok(n);
        }
        let n = match blob.filter(|b| self.has_blob(b)) {
            Some(b) => {
                let path = self.blob_path(b);
                let file = fs::File::open(&path).ctx("open", &path)?;
                let (_, mut plain) =
                    crate::layer::decompress_auto(None, std::io::BufReader::new(file)).ctx("read", &path)?;
                std::io::copy(&mut plain, &mut std::io::sink()).ctx("read", &path)?
            }
            None => {
                let dir = self.layer_dir(diff_id);
                if !dir.is_dir() {
                    return Err(super::StoreError::LayerMissing(diff_id.clone()));
                }
                tree_size(&dir)?
            }
        };
        self.note_layer_size(diff_id, n);
        Ok(n)
    }

    /// Remember the uncompressed size of layer `diff_id` (a lost write only costs a recount later).
    pub fn note_layer_size(&self, diff_id: &Digest, len: u64) {
        let cache = self.layer_size_path(diff_id);
        if let Some(parent) = cache.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let _ = super::write_atomic(&cache, len.to_string().as_bytes());
    }

    pub(crate) fn layer_size_path(&self, diff_id: &Digest) -> PathBuf {
        self.root().join("layers/size").join(diff_id.hex())
    }
}

/// Bytes of the non-directory entries below `dir` (symlinks not followed), each inode once.
pub fn tree_size(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).ctx("read", &d)? {
            let e = e.ctx("read", &d)?;
            let md = e.path().symlink_metadata().ctx("stat", &e.path())?;
            if md.is_dir() {
                stack.push(e.path());
            } else if md.nlink() <= 1 || seen.insert((md.dev(), md.ino())) {
                total += md.len();
            }
        }
    }
    Ok(total)
}
