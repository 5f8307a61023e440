//! Counters of the server's work that grows with directory sizes. A clock cannot tell linear from
//! superlinear on a shared machine; these can: tests compare them for inputs of size N and 2N, and the
//! daemon logs them at unmount (`RIMG_LOG=debug`) for benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the server and the mount handle.
#[derive(Debug, Default)]
pub struct Counters {
    /// Merged listings built from the layers for READDIR / READDIRPLUS.
    listings_built: AtomicU64,
    /// Entries read from layer directories to build merged listings (any purpose: readdir, the
    /// emptiness check of rmdir and rename).
    entries_scanned: AtomicU64,
}

impl Counters {
    /// A merged listing was built for a reader.
    pub fn listing_built(&self) {
        self.listings_built.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` entries were read from one layer directory.
    pub fn scanned(&self, n: usize) {
        self.entries_scanned.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> FsStats {
        FsStats {
            listings_built: self.listings_built.load(Ordering::Relaxed),
            entries_scanned: self.entries_scanned.load(Ordering::Relaxed),
        }
    }
}

/// What an overlay mount's server has done so far (see [`crate::fs::OverlayMount::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    /// Merged directory listings built from the layers for readers.
    pub listings_built: u64,
    /// Directory entries read from the layers to build merged listings.
    pub entries_scanned: u64,
}
