//! Leases: what an unfinished pull, build or commit holds, so garbage collection leaves it alone.
//!
//! An image becomes reachable from `index.json` only at the very end of a pull or build, yet its blobs and
//! layers land in the store one by one long before, and a pull also *reuses* layers that are already there
//! ("Already exists"). Without a record of that work, `image prune` or `rmi` in the meantime deletes the
//! config the pull just stored or the base layer it counted on, and the pull fails or records a broken
//! image. A lease is that record, as containerd's: a file `ROOT/leases/<id>.json` naming the blobs and
//! layer directories its holder needs, flock-ed exclusively by the holder for as long as it lives.
//!
//! Two rules make it race-free:
//! - A holder adds a digest to its lease *before* it checks whether that blob or layer exists (and before
//!   it commits one), and it writes the lease file only while holding the store's `gc` lock shared;
//!   collection holds `gc` exclusively from reading the leases to its last deletion. So either the
//!   collector sees the digest, or the holder's existence check runs after the collector finished.
//! - Liveness is the flock, which the kernel drops when the holder dies however it dies: a lease whose lock
//!   can be taken belongs to a dead process; the collector ignores and removes it (no pid files, no
//!   timeouts, no guessing).

use super::lock::FileLock;
use super::{IoContext, Result, Store, StoreError};
use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The content of a lease file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct LeaseRecord {
    /// Who holds it, for people reading the directory (liveness is the flock, not this).
    pid: u32,
    /// What it is for (`pull docker.io/library/alpine:latest`, `build`).
    purpose: String,
    /// Blobs (manifests, configs, layer blobs) held.
    #[serde(default)]
    blobs: BTreeSet<Digest>,
    /// Unpacked layer directories held, by diff_id.
    #[serde(default)]
    layers: BTreeSet<Digest>,
}

/// A held lease; released (its file removed) when the last clone is dropped, or by the kernel's release
/// of the flock when the process dies. Cheap to clone: clones share the one lease.
#[derive(Debug, Clone)]
pub struct Lease {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    lock: FileLock,
    record: Mutex<LeaseRecord>,
}

/// What live leases hold, for the collector.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub blobs: HashSet<Digest>,
    pub layers: HashSet<Digest>,
}

impl Store {
    /// Take a new lease for work described by `purpose`. Attach it with [`Store::with_lease`] so that what
    /// the work stores is held, and hold what it reuses with [`Store::hold_blobs`] / [`Store::hold_image`].
    pub fn lease(&self, purpose: &str) -> Result<Lease> {
        let dir = self.leases_dir();
        let id = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        let path = dir.join(format!("{id}.json"));
        let record =
            LeaseRecord { pid: std::process::id(), purpose: purpose.to_string(), ..Default::default() };
        // Created under `gc` shared: a collector never sees the file before its flock is taken.
        let _gc = self.lock_shared("gc")?;
        let lock = FileLock::exclusive(&path).ctx("create", &path)?;
        write_record(lock.file(), &path, &record)?;
        Ok(Lease { inner: Arc::new(Inner { path, lock, record: Mutex::new(record) }) })
    }

    /// This store with `lease` attached: every blob and layer it ingests, stages or commits from now on is
    /// held by the lease before it is looked at.
    pub fn with_lease(&self, lease: &Lease) -> Store {
        Store { root: self.root.clone(), lease: Some(lease.clone()) }
    }

    /// Hold blobs in the attached lease (no-op without one). Call before checking whether they exist.
    pub fn hold_blobs(&self, digests: &[Digest]) -> Result<()> {
        self.hold(digests, &[])
    }

    /// Hold unpacked layer directories (by diff_id) in the attached lease (no-op without one).
    pub fn hold_layers(&self, diff_ids: &[Digest]) -> Result<()> {
        self.hold(&[], diff_ids)
    }

    /// Hold everything an image needs (manifest, config, layer blobs and directories, the multi-platform
    /// index it was pulled through), then check it is all still there: the image may have been removed
    /// between looking it up and holding it.
    pub fn hold_image(&self, rec: &super::ImageRecord) -> Result<()> {
        let mut blobs = vec![rec.manifest_digest.clone(), rec.id.clone()];
        blobs.extend(layer_blobs(rec)?);
        blobs.extend(
            rec.repo_digests.iter().filter_map(|r| r.rsplit_once('@')).filter_map(|(_, d)| d.parse().ok()),
        );
        self.hold(&blobs, &rec.diff_ids)?;
        self.check_parts(&[rec.manifest_digest.clone(), rec.id.clone()], &layer_blobs(rec)?, &rec.diff_ids)
    }

    /// Fail with [`StoreError::BlobMissing`] / [`StoreError::LayerMissing`] unless every named blob and
    /// layer directory is present: the last check before an image is recorded or used.
    pub fn check_parts(
        &self,
        metadata: &[Digest],
        layer_blobs: &[Digest],
        diff_ids: &[Digest],
    ) -> Result<()> {
        if let Some(d) = metadata.iter().chain(layer_blobs).find(|d| !self.has_blob(d)) {
            return Err(StoreError::BlobMissing(d.clone()));
        }
        match diff_ids.iter().find(|d| !self.has_layer(d)) {
            Some(d) => Err(StoreError::LayerMissing(d.clone())),
            None => Ok(()),
        }
    }

    fn hold(&self, blobs: &[Digest], layers: &[Digest]) -> Result<()> {
        let Some(lease) = &self.lease else { return Ok(()) };
        let inner = &lease.inner;
        let mut record = inner.record.lock().unwrap_or_else(|p| p.into_inner());
        let new = blobs.iter().any(|d| !record.blobs.contains(d))
            || layers.iter().any(|d| !record.layers.contains(d));
        if !new {
            return Ok(());
        }
        record.blobs.extend(blobs.iter().cloned());
        record.layers.extend(layers.iter().cloned());
        let _gc = self.lock_shared("gc")?;
        write_record(inner.lock.file(), &inner.path, &record)
    }

    pub(crate) fn leases_dir(&self) -> PathBuf {
        self.root.join("leases")
    }

    /// What every live lease holds; leases of dead holders are removed on the way. Call with the `gc`
    /// lock held exclusively (no lease changes meanwhile).
    pub(crate) fn live_leases(&self) -> Result<Held> {
        let dir = self.leases_dir();
        let mut held = Held::default();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(held),
            Err(e) => return Err(e).ctx("read", &dir),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match FileLock::try_exclusive_existing(&path) {
                // Gone meanwhile: released by its holder.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("lock", &path),
                Ok(Some(_stale)) => {
                    log::info!("removing the lease of a process that died: {}", path.display());
                    remove_if_present(&path)?;
                }
                Ok(None) => {
                    let record = read_record(&path)?;
                    held.blobs.extend(record.blobs);
                    held.layers.extend(record.layers);
                }
            }
        }
        Ok(held)
    }
}

/// The layer blob digests of an image's manifest.
fn layer_blobs(rec: &super::ImageRecord) -> Result<Vec<Digest>> {
    rec.manifest.layers().iter().map(|l| Ok(l.digest().to_string().parse::<Digest>()?)).collect()
}

fn write_record(file: &File, path: &Path, record: &LeaseRecord) -> Result<()> {
    let data = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
        what: "lease",
        digest: path.display().to_string(),
        reason: e.to_string(),
    })?;
    // Rewritten in place (the flock belongs to this inode); collectors read it only under `gc` exclusive,
    // which excludes this write. No fsync: after a crash the holder is dead and the lease void anyway.
    file.set_len(0).ctx("write", path)?;
    file.write_all_at(&data, 0).ctx("write", path)
}

fn read_record(path: &Path) -> Result<LeaseRecord> {
    let data = fs::read(path).ctx("read", path)?;
    // A live lease that does not parse is not ignored: collecting what it may hold could break its holder.
    serde_json::from_slice(&data).map_err(|e| StoreError::Corrupt {
        what: "lease",
        digest: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).ctx("remove", path),
        _ => Ok(()),
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Unlinked while still locked: a collector that opened it before sees a lock it cannot take (live)
        // or, after our close, takes it and finds the file gone.
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("could not release lease {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(store: &Store, data: &[u8]) -> Digest {
        let d = Digest::of_bytes(data);
        store.put_blob(&d, data).unwrap();
        d
    }

    #[test]
    fn held_blobs_survive_collection_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store.lease("test").unwrap();
        let held = store.with_lease(&lease);
        let kept = blob(&held, b"held by the lease");
        let loose = blob(&store, b"held by nobody");
        let stats = store.gc(&[], &[]).unwrap();
        assert_eq!(stats.blobs, 1);
        assert!(store.has_blob(&kept) && !store.has_blob(&loose));
        drop(held);
        drop(lease);
        assert!(fs::read_dir(store.leases_dir()).unwrap().next().is_none(), "lease file removed");
        store.gc(&[], &[]).unwrap();
        assert!(!store.has_blob(&kept), "released content is collected");
    }

    #[test]
    fn a_lease_nobody_holds_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = blob(&store, b"held by a dead process");
        // What a SIGKILLed holder leaves: the file, but no flock on it.
        let record =
            LeaseRecord { pid: 1, purpose: "dead".into(), blobs: [d.clone()].into(), ..Default::default() };
        let path = store.leases_dir().join("1-dead.json");
        fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        store.gc(&[], &[]).unwrap();
        assert!(!path.exists(), "stale lease removed");
        assert!(!store.has_blob(&d), "what only a dead lease held is collected");
    }

    #[test]
    fn holding_is_idempotent_and_checks_parts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store.lease("test").unwrap();
        let held = store.with_lease(&lease);
        let d = Digest::of_bytes(b"not stored yet");
        held.hold_blobs(std::slice::from_ref(&d)).unwrap();
        held.hold_blobs(std::slice::from_ref(&d)).unwrap();
        let rec = read_record(&lease.inner.path).unwrap();
        assert_eq!(rec.blobs.len(), 1);
        assert!(matches!(
            held.check_parts(std::slice::from_ref(&d), &[], &[]),
            Err(StoreError::BlobMissing(_))
        ));
        assert!(matches!(held.check_parts(&[], &[], &[d]), Err(StoreError::LayerMissing(_))));
    }
}
