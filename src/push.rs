//! Push: store → registry. Blobs first (skipping what the registry has, mounting across repositories of
//! the same registry when the image came from one, uploading the rest in parallel), the manifest last, so
//! a reader never sees a manifest whose blobs are missing.

use crate::digest::Digest;
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::{Client, RegistryError};
use crate::store::{ImageRecord, Store, StoreError};
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The cache failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the registry now holds.
#[derive(Debug)]
pub struct Pushed {
    /// Manifest digest as the registry computed it.
    pub digest: Digest,
    /// Manifest size.
    pub size: u64,
}

/// Push `rec` to `dest` with `jobs` uploads at once.
pub fn push(
    store: &Store,
    client: &Client,
    rec: &ImageRecord,
    dest: &Reference,
    jobs: usize,
    progress: &Progress,
) -> Result<Pushed, PushError> {
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    for l in rec.manifest.layers() {
        let d: Digest = l.digest().to_string().parse().map_err(StoreError::from)?;
        blobs.push((d, l.size()));
    }
    blobs.push((rec.id.clone(), rec.manifest.config().size()));
    // Repositories of the same registry this image was pulled from: candidates for a cross-repo mount.
    let mount_from: Vec<String> = rec
        .repo_digests
        .iter()
        .filter_map(|rd| rd.rsplit_once('@').map(|(n, _)| n.to_string()))
        .filter_map(|n| Reference::parse(&n).ok())
        .filter(|r| r.registry == dest.registry && r.repository != dest.repository)
        .map(|r| r.repository)
        .collect();
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<PushError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, blobs.len().max(1)) {
            s.spawn(|| loop {
                if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((d, size)) = blobs.get(i) else { return };
                if let Err(e) = push_blob(store, client, dest, d, *size, &mount_from, progress) {
                    if let Ok(mut slot) = first_error.lock() {
                        slot.get_or_insert(e);
                    }
                    return;
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let raw = store.read_blob(&rec.manifest_digest, crate::store::images::MAX_METADATA)?;
    let media = rec
        .manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
    let digest = client.put_manifest(dest, &media, &raw)?;
    Ok(Pushed { digest, size: raw.len() as u64 })
}

fn push_blob(
    store: &Store,
    client: &Client,
    dest: &Reference,
    d: &Digest,
    size: u64,
    mount_from: &[String],
    progress: &Progress,
) -> Result<(), PushError> {
    let mut task = progress.task(d.short(), Some(size));
    if client.blob_exists(dest, d)?.is_some() {
        task.finish("Layer already exists");
        return Ok(());
    }
    for repo in mount_from {
        if client.mount_blob(dest, d, repo)? {
            task.finish(&format!("Mounted from {repo}"));
            return Ok(());
        }
    }
    task.status("Pushing");
    let path = store.blob_path(d);
    let mut f =
        File::open(&path).map_err(|e| StoreError::Io { what: "open", path: path.clone(), source: e })?;
    let last = std::sync::atomic::AtomicU64::new(0);
    client.upload_blob(dest, d, size, &mut f, &|sent| {
        let prev = last.swap(sent, Ordering::Relaxed);
        task.inc(sent.saturating_sub(prev));
    })?;
    task.finish("Pushed");
    Ok(())
}
