//! The offline, content-addressed image cache under `--root`.
//!
//! Layout (see ARCHITECTURE.md): an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`) that
//! other tools (skopeo, umoci) can read as is, plus every layer unpacked once into `layers/sha256/<diff_id>`
//! in kernel-overlayfs format, shared by every image and container that uses it.
//!
//! Crash safety comes from one rule: nothing becomes visible under its final name until it is complete and
//! verified. Blobs are written in `ingest/` and renamed into `blobs/` after their digest matched; layers are
//! unpacked in `layers/tmp/` and renamed into place; `index.json` is replaced by rename. Concurrency comes
//! from flock (see [`lock`]), which the kernel releases when a holder dies.

pub mod archive;
pub mod blobs;
pub mod gc;
pub mod images;
pub mod layers;
pub mod lease;
pub mod lock;
pub mod perms;
pub mod sources;
pub mod volumes;

pub use images::{ImageEntry, ImageRecord};
pub use lease::Lease;
pub use lock::FileLock;

use crate::digest::{Digest, InvalidDigest};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What can go wrong in the cache. Each variant names the path or object involved so the CLI can print a
/// one-line error a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation, in words ("create", "read", …).
        what: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No image by that name or ID.
    #[error("no such image: {0}")]
    ImageNotFound(String),
    /// An ID prefix matched more than one image.
    #[error("image ID prefix {0} is ambiguous")]
    Ambiguous(String),
    /// A blob the index refers to is missing (the cache was tampered with or an old bug lost it).
    #[error("blob {0} is missing from the cache")]
    BlobMissing(Digest),
    /// An unpacked layer an image needs is missing.
    #[error("layer {0} is missing from the cache")]
    LayerMissing(Digest),
    /// Stored metadata does not parse.
    #[error("corrupt {what} {digest}: {reason}")]
    Corrupt {
        /// Manifest, config, index.
        what: &'static str,
        /// The offending object (or the index path, as text).
        digest: String,
        /// Why.
        reason: String,
    },
    /// Content did not match the digest it was stored under.
    #[error("digest mismatch for {expected}: content hashes to {actual}")]
    DigestMismatch {
        /// What it should have been.
        expected: Digest,
        /// What it was.
        actual: Digest,
    },
    /// A digest in stored metadata is not a sha256 digest.
    #[error(transparent)]
    InvalidDigest(#[from] InvalidDigest),
    /// The image reference is not valid.
    #[error("{0}")]
    Reference(String),
    /// No volume by that name.
    #[error("get {0}: no such volume")]
    VolumeNotFound(String),
    /// The image is used by a container and cannot be removed without force.
    #[error("image {image} is in use by container {container}")]
    InUse {
        /// The image.
        image: String,
        /// A container that uses it.
        container: String,
    },
}

/// Shorthand for results in this module.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attach a path and an operation name to an io error.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| StoreError::Io { what, path: path.to_path_buf(), source })
    }
}

/// An open image cache. Cheap to clone; all state lives on disk, so many processes can open the same root.
/// A store with a [`Lease`] attached ([`Store::with_lease`]) holds whatever it stores in that lease.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    lease: Option<Lease>,
}

impl Store {
    /// Open (creating if needed) the cache at `root`, with the modes of [`perms`] (an older store is
    /// tightened on the way).
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store { root: root.to_path_buf(), lease: None };
        store.apply_modes()?;
        for dir in [store.root.join("blobs/sha256"), store.root.join("layers/sha256"), store.layers_tmp_dir()]
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(perms::PRIVATE_DIR_MODE)
                .create(&dir)
                .ctx("create", &dir)?;
        }
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = store.index_path();
        if !index.exists() {
            let _lock = store.lock("index")?;
            if !index.exists() {
                write_atomic(&index, images::EMPTY_INDEX.as_bytes())?;
            }
        }
        Ok(store)
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where containers keep their state, upper and work directories.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The unpacked, overlayfs-format directory of the layer whose uncompressed digest is `diff_id`.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    /// The stored blob with this digest (it may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub(crate) fn layers_tmp_dir(&self) -> PathBuf {
        self.root.join("layers/tmp")
    }

    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Take the named store-wide lock (`index`, `blob-<hex>`, `layer-<hex>`, `gc`).
    pub fn lock(&self, name: &str) -> Result<FileLock> {
        let path = self.locks_dir().join(format!("{name}.lock"));
        FileLock::exclusive(&path).ctx("lock", &path)
    }

    /// Take the named lock shared (many readers, no writer).
    pub fn lock_shared(&self, name: &str) -> Result<FileLock> {
        let path = self.locks_dir().join(format!("{name}.lock"));
        FileLock::shared(&path).ctx("lock", &path)
    }
}

/// Write `data` to `path` so that readers see either the old file or the whole new one, never a mix, even
/// across a crash: write a sibling temp file, fsync it, rename it over `path`, fsync the directory. The
/// file is private (0600, see [`perms`]).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(perms::PRIVATE_FILE_MODE)
        .open(&tmp)
        .ctx("create", &tmp)?;
    f.write_all(data).ctx("write", &tmp)?;
    f.sync_all().ctx("sync", &tmp)?;
    drop(f);
    fs::rename(&tmp, path).ctx("rename", path)?;
    sync_dir(dir)
}

/// fsync a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).ctx("sync", dir)
}
