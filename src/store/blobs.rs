//! Content-addressed blobs (`blobs/sha256/<hex>`) and the ingest area where downloads land first.

use super::{IoContext, Result, Store, StoreError};
use crate::digest::{Digest, HashingReader};
use crate::store::lock::FileLock;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::PathBuf;

impl Store {
    /// Is the blob present (complete and verified: only verified blobs are ever renamed into `blobs/`)?
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Read a small blob (manifest, config), refusing anything larger than `max` bytes, and check that the
    /// content still hashes to its name (cheap for small blobs, and it catches a tampered cache).
    pub fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::BlobMissing(digest.clone()));
            }
            Err(e) => return Err(e).ctx("open", &path),
        };
        let mut buf = Vec::new();
        let mut r = HashingReader::new(f.take(max + 1));
        r.read_to_end(&mut buf).ctx("read", &path)?;
        if buf.len() as u64 > max {
            return Err(StoreError::Corrupt {
                what: "blob",
                digest: digest.to_string(),
                reason: format!("larger than {max} bytes"),
            });
        }
        let (actual, _, _) = r.finish();
        if &actual != digest {
            return Err(StoreError::DigestMismatch { expected: digest.clone(), actual });
        }
        Ok(buf)
    }

    /// Store a small blob held in memory after checking it hashes to `digest`.
    pub fn put_blob(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        self.hold_blobs(std::slice::from_ref(digest))?;
        let actual = Digest::of_bytes(data);
        if &actual != digest {
            return Err(StoreError::DigestMismatch { expected: digest.clone(), actual });
        }
        if self.has_blob(digest) {
            return Ok(());
        }
        super::write_atomic(&self.blob_path(digest), data)
    }

    /// Start (or resume) streaming the blob `digest` into the ingest area. Holds the blob's lock, so a
    /// concurrent pull of the same blob waits here and then finds it complete.
    pub fn ingest(&self, digest: &Digest) -> Result<Ingest> {
        self.hold_blobs(std::slice::from_ref(digest))?;
        let lock = self.lock(&format!("blob-{}", digest.hex()))?;
        let path = self.ingest_dir().join(digest.hex());
        Ok(Ingest { store: self.clone(), digest: digest.clone(), path, _lock: lock })
    }
}

/// A blob being downloaded: `ingest/<hex>`, appended to, verified, then renamed into `blobs/`. A killed
/// download leaves the partial file; the next [`Store::ingest`] of the same digest resumes from its length.
#[derive(Debug)]
pub struct Ingest {
    store: Store,
    digest: Digest,
    path: PathBuf,
    _lock: FileLock,
}

impl Ingest {
    /// Has another process finished this blob while we waited for the lock?
    pub fn already_complete(&self) -> bool {
        self.store.has_blob(&self.digest)
    }

    /// Bytes already downloaded by an earlier, interrupted attempt.
    pub fn partial_len(&self) -> u64 {
        fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// The partial file for reading from the start (to re-feed the decompressor on resume).
    pub fn open_partial(&self) -> Result<File> {
        File::open(&self.path).ctx("open", &self.path)
    }

    /// The partial file for appending newly downloaded bytes.
    pub fn open_append(&self) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(super::perms::PRIVATE_FILE_MODE)
            .open(&self.path)
            .ctx("open", &self.path)
    }

    /// Forget what was downloaded (after a mismatch, or when the server ignored our Range request).
    pub fn reset(&self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx("remove", &self.path),
        }
    }

    /// Make the blob visible, given the digest the download actually hashed to. A mismatch discards the
    /// partial file (it can never become right by appending) and is an error.
    pub fn commit(self, actual: &Digest) -> Result<()> {
        if actual != &self.digest {
            self.reset()?;
            return Err(StoreError::DigestMismatch { expected: self.digest.clone(), actual: actual.clone() });
        }
        File::open(&self.path).and_then(|f| f.sync_all()).ctx("sync", &self.path)?;
        let dest = self.store.blob_path(&self.digest);
        fs::rename(&self.path, &dest).ctx("commit", &dest)?;
        super::sync_dir(dest.parent().unwrap_or(self.store.root()))
    }

    /// The digest being ingested.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl Store {
    /// A private temp file in the ingest area for a blob whose digest is known only once it is written
    /// (a layer being built). Hand it to [`Store::commit_temp_blob`] when done.
    pub fn temp_blob_path(&self) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        self.ingest_dir().join(format!("tmp-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
    }

    /// Move a finished temp file under its digest (computed by the writer while writing). If the blob
    /// exists already the temp file is simply dropped: same digest, same bytes.
    pub fn commit_temp_blob(&self, tmp: &std::path::Path, digest: &Digest) -> Result<()> {
        self.hold_blobs(std::slice::from_ref(digest))?;
        let dest = self.blob_path(digest);
        if dest.exists() {
            fs::remove_file(tmp).ctx("remove", tmp)?;
            return Ok(());
        }
        File::open(tmp).and_then(|f| f.sync_all()).ctx("sync", tmp)?;
        fs::rename(tmp, &dest).ctx("commit", &dest)?;
        super::sync_dir(dest.parent().unwrap_or(self.root()))
    }
}
