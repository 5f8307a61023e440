//! Assembling new images: a base (an image in the store, or scratch), layers added on top, config changes
//! and history — written as config + manifest blobs and an index entry. `rimg build` and `rimg commit`
//! both end here.
//!
//! The config is the typed [`ImageConfig`] (oci_spec's model plus docker's extension fields, see
//! [`super::config`]); the manifest is oci_spec's [`ImageManifest`]. Both are written as canonical JSON
//! (keys sorted), so the same content always gives the same bytes and the same digests.

use super::config::{history_entry, ConfigEdit, ImageConfig};
use crate::digest::{Digest, HashingWriter, InvalidDigest};
use crate::layer::{diff_to_blob, DiffOptions, LayerError};
use crate::pull::PullError;
use crate::store::images::MAX_METADATA;
use crate::store::{ImageEntry, ImageRecord, Store, StoreError};
use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType};
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
    /// A stored config is not an image config.
    #[error("image config {digest}: {source}")]
    Config {
        /// The config blob.
        digest: Digest,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A stored manifest names a layer by a digest rimg does not use.
    #[error("image {image}: {source}")]
    LayerDigest {
        /// The image (its config digest).
        image: Digest,
        /// The bad digest.
        #[source]
        source: InvalidDigest,
    },
    /// The new config or manifest could not be encoded.
    #[error("encoding the image {what}: {source}")]
    Encode {
        /// `config` or `manifest`.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The new manifest is not one oci_spec accepts.
    #[error("building the image manifest: {0}")]
    Manifest(#[source] oci_spec::OciSpecError),
    /// Unpacking the new layer failed.
    #[error(transparent)]
    Unpack(Box<PullError>),
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

impl LayerRef {
    /// Its manifest descriptor.
    fn descriptor(&self) -> Result<Descriptor, ImageError> {
        Ok(Descriptor::new(MediaType::from(self.media_type.as_str()), self.size, oci_digest(&self.digest)?))
    }
}

/// rimg's digest as oci_spec's (both validate; rimg's is the stricter, so this does not fail).
fn oci_digest(d: &Digest) -> Result<oci_spec::image::Digest, ImageError> {
    d.to_string().parse().map_err(ImageError::Manifest)
}

/// An image under construction.
#[derive(Debug, Clone)]
pub struct NewImage {
    config: ImageConfig,
    layers: Vec<LayerRef>,
}

impl NewImage {
    /// Start from nothing (`FROM scratch`) for this machine's platform.
    pub fn scratch() -> NewImage {
        NewImage { config: ImageConfig::scratch(&crate::registry::Platform::host()), layers: Vec::new() }
    }

    /// Start from an image in the store (its layers, config and history).
    pub fn from_image(store: &Store, rec: &ImageRecord) -> Result<NewImage, ImageError> {
        let raw = store.read_blob(&rec.id, MAX_METADATA)?;
        let config = ImageConfig::from_json(&raw)
            .map_err(|source| ImageError::Config { digest: rec.id.clone(), source })?;
        let layers = rec
            .manifest
            .layers()
            .iter()
            .zip(&rec.diff_ids)
            .map(|(l, diff)| {
                Ok(LayerRef {
                    digest: l
                        .digest()
                        .to_string()
                        .parse()
                        .map_err(|source| ImageError::LayerDigest { image: rec.id.clone(), source })?,
                    size: l.size(),
                    media_type: l.media_type().to_string(),
                    diff_id: diff.clone(),
                })
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        Ok(NewImage { config, layers })
    }

    /// The config as it stands (its `rootfs` is filled in only when written).
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    /// Apply a config instruction's change.
    pub fn apply(&mut self, edit: &ConfigEdit) {
        self.config.apply(edit);
    }

    /// Set the image's author.
    pub fn set_author(&mut self, author: &str) {
        self.config.set_author(author);
    }

    /// The layers so far, bottom first.
    pub fn layers(&self) -> &[LayerRef] {
        &self.layers
    }

    /// The layers' uncompressed digests, bottom first.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// The layer directories, top first (lowers for a container running on this image).
    pub fn layer_dirs(&self, store: &Store) -> Vec<PathBuf> {
        self.layers.iter().rev().map(|l| store.layer_dir(&l.diff_id)).collect()
    }

    /// Add a layer with its history entry.
    pub fn push_layer(&mut self, layer: LayerRef, created_by: &str, created: &str, comment: Option<&str>) {
        self.layers.push(layer);
        self.config.push_history(history_entry(created_by, created, false, comment));
    }

    /// Record a step that changed only the config.
    pub fn push_empty(&mut self, created_by: &str, created: &str) {
        self.config.push_history(history_entry(created_by, created, true, None));
    }

    /// The config as it would be written now: `rootfs` names the layers.
    pub fn final_config(&self) -> ImageConfig {
        let mut c = self.config.clone();
        c.set_diff_ids(self.layers.iter().map(|l| l.diff_id.to_string()).collect());
        c
    }

    /// The manifest of this image with config blob `config` (`len` bytes).
    fn manifest(&self, config: &Digest, len: usize) -> Result<ImageManifest, ImageError> {
        let layers = self.layers.iter().map(LayerRef::descriptor).collect::<Result<Vec<_>, _>>()?;
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::from(MEDIA_MANIFEST))
            .config(Descriptor::new(MediaType::from(MEDIA_CONFIG), len as u64, oci_digest(config)?))
            .layers(layers)
            .build()
            .map_err(ImageError::Manifest)
    }

    /// Write config and manifest blobs and, with a name, point the name at the new image. Returns the
    /// record as the store now has it.
    pub fn write(&self, store: &Store, name: Option<&str>) -> Result<ImageRecord, ImageError> {
        let config =
            self.final_config().to_json().map_err(|source| ImageError::Encode { what: "config", source })?;
        let config_digest = Digest::of_bytes(&config);
        store.put_blob(&config_digest, &config)?;
        let manifest = canonical_json(&self.manifest(&config_digest, config.len())?)
            .map_err(|source| ImageError::Encode { what: "manifest", source })?;
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

/// `value` as JSON with the keys of every object sorted: the same manifest always gives the same bytes.
fn canonical_json(value: &impl serde::Serialize) -> Result<Vec<u8>, serde_json::Error> {
    let mut doc = serde_json::to_value(value)?;
    doc.sort_all_objects();
    serde_json::to_vec(&doc)
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
                .map_err(|e| ImageError::Unpack(Box::new(e)))?;
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
                .map_err(|e| ImageError::Unpack(Box::new(e)))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::config::ConfigEdit;

    #[test]
    fn written_images_read_back_the_same_and_the_manifest_is_canonical() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut img = NewImage::scratch();
        img.apply(&ConfigEdit::Labels(vec![("b".into(), "2".into()), ("a".into(), "1".into())]));
        img.push_empty("/bin/sh -c #(nop) LABEL b=2 a=1", "2023-11-14T22:13:20Z");
        img.set_author("me");
        let rec = img.write(&store, Some("docker.io/library/t:1")).unwrap();

        let config = img.final_config().to_json().unwrap();
        assert_eq!(rec.id, Digest::of_bytes(&config), "the image ID is the config's digest");
        let manifest = store.read_blob(&rec.manifest_digest, MAX_METADATA).unwrap();
        assert_eq!(
            String::from_utf8(manifest).unwrap(),
            format!(
                r#"{{"config":{{"digest":"{}","mediaType":"{MEDIA_CONFIG}","size":{}}},"layers":[],"mediaType":"{MEDIA_MANIFEST}","schemaVersion":2}}"#,
                rec.id,
                config.len()
            )
        );
        let again = NewImage::from_image(&store, &rec).unwrap();
        assert_eq!(again.final_config(), img.final_config());
        assert_eq!(store.image("docker.io/library/t:1").unwrap().id, rec.id);
    }

    #[test]
    fn history_marks_empty_layers_only() {
        let mut img = NewImage::scratch();
        let d = |c: &str| -> Digest { format!("sha256:{}", c.repeat(64)).parse().unwrap() };
        let layer =
            LayerRef { digest: d("1"), size: 9, media_type: MEDIA_LAYER_GZIP.into(), diff_id: d("2") };
        img.push_empty("/bin/sh -c #(nop) USER x", "2023-01-01T00:00:00Z");
        img.push_layer(layer.clone(), "RUN x", "2023-01-02T00:00:00Z", Some("a comment"));
        let config = img.final_config();
        let h = config.history();
        assert_eq!((h[0].empty_layer(), h[1].empty_layer()), (Some(true), None));
        assert_eq!(h[1].comment().as_deref(), Some("a comment"));
        assert_eq!(config.oci().created().as_deref(), Some("2023-01-02T00:00:00Z"));
        assert_eq!(config.oci().rootfs().diff_ids(), &vec![layer.diff_id.to_string()]);
        assert_eq!(img.diff_ids(), vec![layer.diff_id]);
    }
}
