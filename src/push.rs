//! Push: store → registry. Blobs first (skipping what the registry has, mounting across repositories of
//! the same registry where the blob is known to be — see [`crate::store::sources`] — uploading the rest in
//! parallel), the manifest last, so a reader never sees a manifest whose blobs are missing.

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
    // Repositories of the same registry this image was pulled from: candidates for a cross-repo mount of
    // any of its blobs (each blob also has the repositories it was pulled from or pushed to on its own).
    let image_repos: Vec<String> = rec
        .repo_digests
        .iter()
        .filter_map(|rd| rd.rsplit_once('@').map(|(n, _)| n.to_string()))
        .filter_map(|n| Reference::parse(&n).ok())
        .filter(|r| r.registry == dest.registry)
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
                let mount_from = mount_candidates(store, d, dest, &image_repos);
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

/// How many repositories a push asks to mount one blob from before it uploads the blob instead.
const MAX_MOUNT_TRIES: usize = 3;

/// Repositories of `dest`'s registry to mount blob `d` from: where it was last pulled from or pushed to,
/// then the repositories the image was pulled from; never `dest` itself.
fn mount_candidates(store: &Store, d: &Digest, dest: &Reference, image_repos: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for repo in store.sources(d, &dest.registry).into_iter().chain(image_repos.iter().cloned()) {
        if repo != dest.repository && !out.contains(&repo) {
            out.push(repo);
        }
    }
    out.truncate(MAX_MOUNT_TRIES);
    out
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
        remember_source(store, d, dest);
        task.finish("Layer already exists");
        return Ok(());
    }
    for repo in mount_from {
        if client.mount_blob(dest, d, repo)? {
            remember_source(store, d, dest);
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
    remember_source(store, d, dest);
    task.finish("Pushed");
    Ok(())
}

/// Record that `dest`'s repository now holds `d` (a failure only costs a later mount).
fn remember_source(store: &Store, d: &Digest, dest: &Reference) {
    if let Err(e) = store.add_sources(std::slice::from_ref(d), &dest.registry, &dest.repository) {
        log::warn!("could not record that {} holds {d}: {e}", dest.name());
    }
}
