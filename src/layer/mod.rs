//! Layers: OCI layer tarballs ⇄ kernel-overlayfs-format directories.
//!
//! - [`apply()`] materialises one layer tar as its own directory, usable as an overlay `lowerdir`
//!   (whiteouts as 0/0 character devices, opaque directories marked with `trusted.overlay.opaque=y`),
//!   refusing hostile entries instead of ever writing outside that directory.
//! - [`diff()`] is the inverse for `rimg commit`/`rimg build`: an overlay upper directory back into a
//!   deterministic OCI layer tar.
//! - [`compression`] detects and decodes gzip/zstd layer blobs.
//! - [`tree`] snapshots a directory tree and compares two snapshots, the oracle check tests use against
//!   `umoci unpack` and kernel overlayfs.
//! - [`walk`] is the one way rimg reads a tree someone else may be changing (a running container's upper,
//!   a build context, a stage's rootfs): from directory descriptors, each entry pinned before use.

pub mod apply;
pub mod compression;
pub mod diff;
mod guard;
pub mod lower;
pub mod pargz;
pub mod path;
pub mod sparse;
mod sys;
pub mod tree;
pub mod walk;

pub use apply::{apply, ApplyOptions, ApplyStats};
pub use compression::{decompress, decompress_auto, Compression};
pub use diff::{diff, diff_to_blob, BlobInfo, DiffOptions, DiffStats};

use std::io;
use std::path::Path;

/// Why a layer could not be applied or produced. Every variant names the tar entry or file involved, so
/// a refused image says which entry was hostile.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The tar stream itself is unreadable (corrupt header, truncated, decompression error).
    #[error("reading layer tar: {0}")]
    Read(#[source] io::Error),
    /// An entry name climbs out of the layer root with `..`.
    #[error("layer entry {path:?} escapes the layer root")]
    Escape {
        /// The entry name as it appears in the tar.
        path: String,
    },
    /// An entry rimg refuses: a write through a symlink, a hard link out of the layer, a bad header.
    #[error("layer entry {path:?}: {reason}")]
    Invalid {
        /// The (cleaned) entry name.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A hard link points at a file that is neither in this layer nor in the given lower layers. When
    /// `lowers` is 0 and the layer has parents, apply it again once they are applied (parallel pulls
    /// apply layers without their lowers first).
    #[error("layer entry {path:?}: hard link target {target:?} is neither in this layer nor in the {lowers} layer(s) below")]
    LinkTargetMissing {
        /// The link's (cleaned) name.
        path: String,
        /// The (cleaned) target name.
        target: String,
        /// How many lower layers were searched.
        lowers: usize,
    },
    /// The layer exceeds a configured limit ([`ApplyOptions`]).
    #[error("layer exceeds the limit on {what} ({limit}){}", if path.is_empty() { String::new() } else { format!(" at entry {path:?}") })]
    Limit {
        /// The entry where the limit was hit (empty for whole-layer limits).
        path: String,
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: u64,
    },
    /// A file-system operation on an entry failed.
    #[error("layer entry {path:?}: {op}: {source}")]
    Io {
        /// The entry (or file) name.
        path: String,
        /// The operation that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing the output tar failed.
    #[error("writing layer tar: {0}")]
    Write(#[source] io::Error),
}

impl From<walk::WalkError> for LayerError {
    fn from(e: walk::WalkError) -> LayerError {
        LayerError::Io { path: e.path.display().to_string(), op: e.op, source: e.source }
    }
}

impl LayerError {
    fn io_path(path: &Path, op: &'static str, source: io::Error) -> LayerError {
        LayerError::Io { path: path.display().to_string(), op, source }
    }
}
