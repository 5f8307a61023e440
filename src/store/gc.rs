//! Garbage collection: blobs and unpacked layers that no image, no container and no lease needs any more.
//!
//! Pulls, builds and commits hold what they store or reuse in a lease (see [`super::lease`]) until their
//! image is in the index; collection holds the `gc` lock exclusively from reading the leases to its last
//! deletion, so it never deletes the half of an image that is still arriving.

use super::{layers::remove_tree, IoContext, Result, Store};
use crate::digest::Digest;
use std::collections::HashSet;
use std::fs;

/// What a collection removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct GcStats {
    /// Blobs deleted.
    pub blobs: usize,
    /// Layer directories deleted.
    pub layers: usize,
    /// Bytes of blobs reclaimed.
    pub bytes: u64,
}

impl Store {
    /// Remove every blob and layer directory not reachable from the index or from `keep_manifests`
    /// (images that containers still run on), not listed in `keep_layer_dirs` (layers containers mount)
    /// and not held by a live lease (leases of dead processes are removed).
    pub fn gc(&self, keep_manifests: &[Digest], keep_layer_dirs: &[std::path::PathBuf]) -> Result<GcStats> {
        let _gc = self.lock("gc")?;
        let _index = self.lock("index")?;
        let held = self.live_leases()?;
        let mut blobs: HashSet<Digest> = held.blobs;
        let mut layers: HashSet<Digest> = held.layers;
        let mut manifests: Vec<Digest> = self.list_images()?.into_iter().map(|e| e.manifest_digest).collect();
        manifests.extend(keep_manifests.iter().cloned());
        for m in &manifests {
            blobs.insert(m.clone());
            let Ok(manifest) = self.manifest(m) else { continue };
            if let Ok(d) = manifest.config().digest().to_string().parse::<Digest>() {
                blobs.insert(d.clone());
                if let Ok(rec) = self.record_for_gc(m) {
                    layers.extend(rec);
                }
            }
            for l in manifest.layers() {
                if let Ok(d) = l.digest().to_string().parse::<Digest>() {
                    blobs.insert(d);
                }
            }
        }
        // Index blobs (multi-platform lists) named by repo digests stay while any image names them.
        for e in self.list_images()? {
            if let Some(d) =
                e.repo_digest.as_deref().and_then(|r| r.rsplit('@').next()).and_then(|d| d.parse().ok())
            {
                blobs.insert(d);
            }
        }
        let mut stats = GcStats::default();
        let blob_dir = self.root().join("blobs/sha256");
        for entry in fs::read_dir(&blob_dir).ctx("read", &blob_dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep =
                format!("sha256:{name}").parse::<Digest>().map(|d| blobs.contains(&d)).unwrap_or(false);
            if !keep {
                stats.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).ctx("remove", &entry.path())?;
                stats.blobs += 1;
            }
        }
        let layer_dir = self.root().join("layers/sha256");
        for entry in fs::read_dir(&layer_dir).ctx("read", &layer_dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep =
                format!("sha256:{name}").parse::<Digest>().map(|d| layers.contains(&d)).unwrap_or(false)
                    || keep_layer_dirs.iter().any(|k| k == &entry.path());
            if !keep {
                remove_tree(&entry.path())?;
                stats.layers += 1;
            }
        }
        // Recorded layer sizes (`layers/size/<hex>`) of layers that are gone.
        let sizes = self.root().join("layers/size");
        for entry in fs::read_dir(&sizes).into_iter().flatten().flatten() {
            if !layer_dir.join(entry.file_name()).is_dir() {
                let _ = fs::remove_file(entry.path());
            }
        }
        self.prune_sources()?;
        Ok(stats)
    }

    fn record_for_gc(&self, manifest: &Digest) -> Result<Vec<Digest>> {
        let m = self.manifest(manifest)?;
        let id: Digest = m.config().digest().to_string().parse()?;
        let raw = self.read_blob(&id, super::images::MAX_METADATA)?;
        let config = oci_spec::image::ImageConfiguration::from_reader(raw.as_slice()).map_err(|e| {
            super::StoreError::Corrupt { what: "config", digest: id.to_string(), reason: e.to_string() }
        })?;
        Ok(config.rootfs().diff_ids().iter().filter_map(|d| d.parse().ok()).collect())
    }
}
