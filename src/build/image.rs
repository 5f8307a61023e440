//! Assembling new images: a base (an image in the store, or scratch), layers added on top, config changes
//! and history — written as config + manifest blobs and an index entry. `rimg build` and `rimg commit`
//! both end here.
//!
//! The config is kept as JSON rather than a typed struct so fields rimg does not know (docker's
//! `Healthcheck`, `Shell`, `OnBuild`, vendor extensions of a base image) survive a rebuild untouched.
//! serde_json's map is ordered by key, so the same content always serialises to the same bytes (and the
//! same digest).

use crate::digest::{Digest, HashingWriter};
use crate::layer::{diff_to_blob, DiffOptions, LayerError};
use crate::store::images::MAX_METADATA;
use crate::store::{ImageEntry, ImageRecord, Store, StoreError};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Media type of the manifests rimg writes.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the configs rimg writes.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of the layers rimg writes (gzip, the format every registry and runtime reads).
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Errors while assembling an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The cache failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Making a layer failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// A stored config is not JSON we understand.
    #[error("image config {0}: {1}")]
    Config(Digest, String),
    /// Unpacking the new layer failed.
    #[error("{0}")]
    Unpack(String),
}

/// One layer of an image being assembled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerRef {
    /// Compressed blob digest.
    pub digest: Digest,
    /// Compressed size.
    pub size: u64,
    /// Blob media type.
    pub media_type: String,
    /// Uncompressed digest.
    pub diff_id: Digest,
}

/// An image under construction.
#[derive(Debug, Clone)]
pub struct NewImage {
    config: Value,
    layers: Vec<LayerRef>,
}

impl NewImage {
    /// Start from nothing (`FROM scratch`) for this machine's platform.
    pub fn scratch() -> NewImage {
        let p = crate::registry::Platform::host();
        let mut config = json!({
            "architecture": p.architecture,
            "os": p.os,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        });
        if let Some(v) = p.variant {
            config["variant"] = json!(v);
        }
        NewImage { config, layers: Vec::new() }
    }

    /// Start from an image in the store (its layers, config and history).
    pub fn from_image(store: &Store, rec: &ImageRecord) -> Result<NewImage, ImageError> {
        let raw = store.read_blob(&rec.id, MAX_METADATA)?;
        let mut config: Value =
            serde_json::from_slice(&raw).map_err(|e| ImageError::Config(rec.id.clone(), e.to_string()))?;
        if !config.get("config").is_some_and(Value::is_object) {
            config["config"] = json!({});
        }
        if !config.get("history").is_some_and(Value::is_array) {
            config["history"] = json!([]);
        }
        let layers = rec
            .manifest
            .layers()
            .iter()
            .zip(&rec.diff_ids)
            .map(|(l, diff)| {
                Ok(LayerRef {
                    digest: l.digest().to_string().parse().map_err(|e: crate::digest::InvalidDigest| {
                        ImageError::Config(rec.id.clone(), e.to_string())
                    })?,
                    size: l.size(),
                    media_type: l.media_type().to_string(),
                    diff_id: diff.clone(),
                })
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        Ok(NewImage { config, layers })
    }

    /// The runtime part of the config (`Env`, `Cmd`, `Entrypoint`, `WorkingDir`, `User`, `Labels`, …).
    pub fn runtime_config(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.config.get("config").and_then(Value::as_object).unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    /// Mutable access to the runtime part of the config.
    pub fn runtime_config_mut(&mut self) -> &mut Map<String, Value> {
        if !self.config.get("config").is_some_and(Value::is_object) {
            self.config["config"] = json!({});
        }
        match self.config.get_mut("config") {
            Some(Value::Object(m)) => m,
            _ => unreachable!("config was just made an object"),
        }
    }

    /// Set a top-level config field (`author`, `created`, …).
    pub fn set_top(&mut self, key: &str, value: Value) {
        self.config[key] = value;
    }

    /// The layers so far, bottom first.
    pub fn layers(&self) -> &[LayerRef] {
        &self.layers
    }

    /// The layer directories, top first (lowers for a container running on this image).
    pub fn layer_dirs(&self, store: &Store) -> Vec<PathBuf> {
        self.layers.iter().rev().map(|l| store.layer_dir(&l.diff_id)).collect()
    }

    /// Add a layer with its history entry.
    pub fn push_layer(&mut self, layer: LayerRef, created_by: &str, created: &str, comment: Option<&str>) {
        self.layers.push(layer);
        self.push_history(created_by, created, false, comment);
    }

    /// Record a step that changed only the config.
    pub fn push_empty(&mut self, created_by: &str, created: &str) {
        self.push_history(created_by, created, true, None);
    }

    fn push_history(&mut self, created_by: &str, created: &str, empty: bool, comment: Option<&str>) {
        let mut h = json!({"created": created, "created_by": created_by});
        if empty {
            h["empty_layer"] = json!(true);
        }
        if let Some(c) = comment {
            h["comment"] = json!(c);
        }
        if let Some(Value::Array(a)) = self.config.get_mut("history") {
            a.push(h);
        }
        self.config["created"] = json!(created);
    }

    /// The config JSON as it would be written now (for cache keys and tests).
    pub fn config_json(&self) -> Value {
        let mut c = self.config.clone();
        c["rootfs"] = json!({
            "type": "layers",
            "diff_ids": self.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        });
        c
    }

    /// Write config and manifest blobs and, with a name, point the name at the new image. Returns the
    /// record as the store now has it.
    pub fn write(&self, store: &Store, name: Option<&str>) -> Result<ImageRecord, ImageError> {
        let config =
            serde_json::to_vec(&self.config_json()).map_err(|e| ImageError::Unpack(e.to_string()))?;
        let config_digest = Digest::of_bytes(&config);
        store.put_blob(&config_digest, &config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).map_err(|e| ImageError::Unpack(e.to_string()))?;
        let manifest_digest = Digest::of_bytes(&manifest);
        store.put_blob(&manifest_digest, &manifest)?;
        store.add_image(ImageEntry {
            name: name.map(str::to_string),
            manifest_digest: manifest_digest.clone(),
            manifest_size: manifest.len() as u64,
            media_type: MEDIA_MANIFEST.into(),
            repo_digest: None,
            added: Some(now_rfc3339()),
        })?;
        Ok(store.image(&manifest_digest.to_string())?)
    }
}

/// Turn an overlay upper directory into a layer in the store: a gzip OCI layer blob (whiteouts as `.wh.`
/// entries, opaque dirs as `.wh..wh..opq`) plus its unpacked directory, so the next step can stack on it.
pub fn layer_from_upper(
    store: &Store,
    upper: &Path,
    lowers: &[PathBuf],
    below: &[Digest],
    source_date_epoch: Option<u64>,
) -> Result<LayerRef, ImageError> {
    let tmp = store.temp_blob_path();
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| StoreError::Io {
            what: "create",
            path: tmp.clone(),
            source: e,
        })?;
        let info =
            diff_to_blob(upper, lowers, std::io::BufWriter::new(file), &DiffOptions { source_date_epoch })?;
        store.commit_temp_blob(&tmp, &info.digest)?;
        if !store.has_layer(&info.diff_id) {
            crate::pull::unpack_blob(store, &info.digest, &info.diff_id, below)
                .map_err(|e| ImageError::Unpack(e.to_string()))?;
        }
        Ok(LayerRef {
            digest: info.digest,
            size: info.size,
            media_type: MEDIA_LAYER_GZIP.into(),
            diff_id: info.diff_id,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Turn an uncompressed layer tar produced by a closure (COPY/ADD) into a stored layer.
pub fn layer_from_tar(
    store: &Store,
    below: &[Digest],
    write_tar: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<LayerRef, ImageError> {
    let tmp = store.temp_blob_path();
    let result = (|| {
        let io = |e: std::io::Error| StoreError::Io { what: "write", path: tmp.clone(), source: e };
        let file = File::create(&tmp).map_err(io)?;
        let compressed = HashingWriter::new(std::io::BufWriter::new(file));
        let gz = flate2::write::GzEncoder::new(compressed, flate2::Compression::default());
        let mut tar = HashingWriter::new(gz);
        write_tar(&mut tar).map_err(io)?;
        let (diff_id, _, gz) = tar.finish();
        let compressed = gz.finish().map_err(io)?;
        let (digest, size, mut out) = compressed.finish();
        std::io::Write::flush(&mut out).map_err(io)?;
        drop(out);
        store.commit_temp_blob(&tmp, &digest)?;
        if !store.has_layer(&diff_id) {
            crate::pull::unpack_blob(store, &digest, &diff_id, below)
                .map_err(|e| ImageError::Unpack(e.to_string()))?;
        }
        Ok(LayerRef { digest, size, media_type: MEDIA_LAYER_GZIP.into(), diff_id })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Now, or `SOURCE_DATE_EPOCH` when set (reproducible builds), as RFC 3339.
pub fn now_rfc3339() -> String {
    let secs = source_date_epoch().unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    });
    crate::store::images::rfc3339(secs)
}

/// `SOURCE_DATE_EPOCH` from the environment, if set to a number.
pub fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok())
}
