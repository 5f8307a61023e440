//! Image records: `index.json` maps names to manifests; a manifest names a config and layers.

use super::{write_atomic, IoContext, Result, Store, StoreError};
use crate::digest::Digest;
use crate::reference::Reference;
use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

/// The index of an empty cache.
pub(crate) const EMPTY_INDEX: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

/// OCI annotation naming an image in an image layout.
pub const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The `repo@digest` the image was pulled as (docker's RepoDigests).
pub const ANN_REPO_DIGEST: &str = "io.rimg.repo-digest";
/// When the image entered the cache (RFC 3339).
pub const ANN_ADDED: &str = "io.rimg.added";

/// Largest manifest or config rimg reads (the distribution spec's 4 MiB limit).
pub const MAX_METADATA: u64 = 4 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// One line of `index.json`: a name (or none, for an image whose tag moved on) pointing at a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Full reference with tag (`docker.io/library/centos:latest`), or with digest for an image pulled by
    /// digest (`docker.io/library/alpine@sha256:…`); `None` when untagged (dangling).
    pub name: Option<String>,
    /// The image manifest.
    pub manifest_digest: Digest,
    /// Manifest size in bytes.
    pub manifest_size: u64,
    /// Manifest media type (OCI or Docker schema2).
    pub media_type: String,
    /// `repo@sha256:…` as pulled (the digest the registry knows the image by, maybe an index's).
    pub repo_digest: Option<String>,
    /// When it entered the cache.
    pub added: Option<String>,
}

impl From<&IndexEntry> for ImageEntry {
    fn from(e: &IndexEntry) -> Self {
        ImageEntry {
            name: e.annotations.get(ANN_REF_NAME).cloned(),
            manifest_digest: e.digest.clone(),
            manifest_size: e.size,
            media_type: e.media_type.clone(),
            repo_digest: e.annotations.get(ANN_REPO_DIGEST).cloned(),
            added: e.annotations.get(ANN_ADDED).cloned(),
        }
    }
}

impl From<&ImageEntry> for IndexEntry {
    fn from(e: &ImageEntry) -> Self {
        let mut annotations = BTreeMap::new();
        if let Some(n) = &e.name {
            annotations.insert(ANN_REF_NAME.to_string(), n.clone());
        }
        if let Some(r) = &e.repo_digest {
            annotations.insert(ANN_REPO_DIGEST.to_string(), r.clone());
        }
        if let Some(a) = &e.added {
            annotations.insert(ANN_ADDED.to_string(), a.clone());
        }
        IndexEntry {
            media_type: e.media_type.clone(),
            digest: e.manifest_digest.clone(),
            size: e.manifest_size,
            annotations,
        }
    }
}

/// Everything needed to run or inspect an image, read from the cache.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    /// The name it was looked up by, if any (full reference).
    pub name: Option<String>,
    /// Image ID: the config digest, as docker defines it.
    pub id: Digest,
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// The manifest itself.
    pub manifest: ImageManifest,
    /// The image configuration (Entrypoint, Cmd, Env, …).
    pub config: ImageConfiguration,
    /// Uncompressed layer digests, bottom layer first (the config's rootfs.diff_ids).
    pub diff_ids: Vec<Digest>,
    /// Every tagged name pointing at this manifest (not the `repo@digest` names of by-digest pulls:
    /// those are in `repo_digests`).
    pub tags: Vec<String>,
    /// Every `repo@digest` recorded for this manifest.
    pub repo_digests: Vec<String>,
}

impl ImageRecord {
    /// The unpacked layer directories, top layer first: the order overlayfs's `lowerdir=` wants.
    pub fn layer_dirs(&self, store: &Store) -> Vec<PathBuf> {
        self.diff_ids.iter().rev().map(|d| store.layer_dir(d)).collect()
    }
}

impl Store {
    fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let data = fs::read(&path).ctx("read", &path)?;
        serde_json::from_slice(&data).map_err(|e| StoreError::Corrupt {
            what: "index",
            digest: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let data = serde_json::to_vec_pretty(index).map_err(|e| StoreError::Corrupt {
            what: "index",
            digest: "index.json".into(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.index_path(), &data)
    }

    /// Every entry of the index, in index order.
    pub fn list_images(&self) -> Result<Vec<ImageEntry>> {
        Ok(self.read_index()?.manifests.iter().map(ImageEntry::from).collect())
    }

    /// Record `entry` in the index. A name moves: any other entry holding the same name loses it and, if
    /// nothing else names its manifest, stays as an untagged image (docker's `<none>`) until pruned.
    pub fn add_image(&self, entry: ImageEntry) -> Result<()> {
        let _lock = self.lock("index")?;
        let mut index = self.read_index()?;
        let mut entries: Vec<ImageEntry> = index.manifests.iter().map(ImageEntry::from).collect();
        if let Some(name) = &entry.name {
            for e in entries.iter_mut() {
                if e.name.as_deref() == Some(name) {
                    e.name = None;
                }
            }
        }
        entries.push(entry);
        index.manifests = normalize(entries).iter().map(IndexEntry::from).collect();
        self.write_index(&index)
    }

    /// Remove `name` from the index; returns the manifest it pointed at. The manifest stays if another
    /// name points at it; otherwise its entry goes (blobs and layers go at the next prune).
    pub fn remove_name(&self, name: &str) -> Result<Digest> {
        let _lock = self.lock("index")?;
        let mut index = self.read_index()?;
        let entries: Vec<ImageEntry> = index.manifests.iter().map(ImageEntry::from).collect();
        let Some(pos) = entries.iter().position(|e| e.name.as_deref() == Some(name)) else {
            return Err(StoreError::ImageNotFound(name.to_string()));
        };
        let digest = entries[pos].manifest_digest.clone();
        let mut rest = entries;
        rest.remove(pos);
        index.manifests = normalize(rest).iter().map(IndexEntry::from).collect();
        self.write_index(&index)?;
        Ok(digest)
    }

    /// Remove every index entry for `manifest` (all its names): `rmi` by ID.
    pub fn remove_manifest(&self, manifest: &Digest) -> Result<()> {
        let _lock = self.lock("index")?;
        let mut index = self.read_index()?;
        index.manifests.retain(|e| &e.digest != manifest);
        self.write_index(&index)
    }

    /// Find an image by name (`centos`, `centos:7`, `repo@sha256:…`), by full or short ID (config digest,
    /// with or without `sha256:`), or by manifest digest.
    pub fn image(&self, name_or_id: &str) -> Result<ImageRecord> {
        let entries = self.list_images()?;
        if let Some(manifest) = self.find_by_id(&entries, name_or_id)? {
            return self.record(&entries, &manifest, None);
        }
        let r = Reference::parse(name_or_id).map_err(|e| StoreError::Reference(e.to_string()))?;
        let manifest = match &r.digest {
            Some(d) => entries.iter().find(|e| {
                &e.manifest_digest == d || e.repo_digest.as_deref() == Some(&format!("{}@{}", r.name(), d))
            }),
            None => {
                let full = r.to_string();
                entries.iter().find(|e| e.name.as_deref() == Some(full.as_str()))
            }
        };
        match manifest {
            Some(e) => {
                let name = r
                    .tag
                    .as_ref()
                    .map(|_| r.repo_only().with_tag(r.tag_or_latest()))
                    .and_then(|x| x.ok())
                    .map(|x| x.to_string());
                self.record(&entries, &e.manifest_digest.clone(), name)
            }
            None => Err(StoreError::ImageNotFound(r.familiar())),
        }
    }

    fn find_by_id(&self, entries: &[ImageEntry], s: &str) -> Result<Option<Digest>> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() < 4 || hex.len() > 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Ok(None);
        }
        let mut found: Option<Digest> = None;
        for e in entries {
            let candidates = [Some(e.manifest_digest.clone()), self.config_digest(&e.manifest_digest).ok()];
            if candidates.iter().flatten().any(|d| d.hex().starts_with(hex)) {
                match &found {
                    Some(f) if f != &e.manifest_digest => return Err(StoreError::Ambiguous(s.to_string())),
                    _ => found = Some(e.manifest_digest.clone()),
                }
            }
        }
        Ok(found)
    }

    /// Read and parse a stored manifest.
    pub fn manifest(&self, digest: &Digest) -> Result<ImageManifest> {
        let raw = self.read_blob(digest, MAX_METADATA)?;
        ImageManifest::from_reader(raw.as_slice()).map_err(|e| StoreError::Corrupt {
            what: "manifest",
            digest: digest.to_string(),
            reason: e.to_string(),
        })
    }

    fn config_digest(&self, manifest: &Digest) -> Result<Digest> {
        Ok(self.manifest(manifest)?.config().digest().to_string().parse()?)
    }

    fn record(
        &self,
        entries: &[ImageEntry],
        manifest_digest: &Digest,
        name: Option<String>,
    ) -> Result<ImageRecord> {
        let manifest = self.manifest(manifest_digest)?;
        let id: Digest = manifest.config().digest().to_string().parse()?;
        let raw = self.read_blob(&id, MAX_METADATA)?;
        let config = ImageConfiguration::from_reader(raw.as_slice()).map_err(|e| StoreError::Corrupt {
            what: "config",
            digest: id.to_string(),
            reason: e.to_string(),
        })?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.parse::<Digest>())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(StoreError::Corrupt {
                what: "config",
                digest: id.to_string(),
                reason: format!("{} diff_ids for {} layers", diff_ids.len(), manifest.layers().len()),
            });
        }
        let same: Vec<&ImageEntry> =
            entries.iter().filter(|e| &e.manifest_digest == manifest_digest).collect();
        let tags = same.iter().filter_map(|e| e.name.clone()).filter(|n| !is_digest_name(n)).collect();
        let mut repo_digests: Vec<String> = same.iter().filter_map(|e| e.repo_digest.clone()).collect();
        repo_digests.sort();
        repo_digests.dedup();
        Ok(ImageRecord {
            name,
            id,
            manifest_digest: manifest_digest.clone(),
            manifest,
            config,
            diff_ids,
            tags,
            repo_digests,
        })
    }
}

/// Is this index name a `repo@digest` reference (an image pulled by digest) rather than a tag?
pub fn is_digest_name(name: &str) -> bool {
    name.contains('@')
}

/// Keep one untagged entry per manifest and only when no named entry holds that manifest.
fn normalize(entries: Vec<ImageEntry>) -> Vec<ImageEntry> {
    let mut out: Vec<ImageEntry> = Vec::new();
    for e in entries {
        if e.name.is_none() {
            if out.iter().any(|o| o.manifest_digest == e.manifest_digest) {
                // Keep the repo digest on the surviving entry if it had none.
                continue;
            }
        } else {
            out.retain(|o| !(o.name.is_none() && o.manifest_digest == e.manifest_digest));
        }
        out.push(e);
    }
    // An untagged entry pushed before a named one of the same manifest was dropped above; one pushed after
    // is dropped here.
    let named: Vec<Digest> =
        out.iter().filter(|e| e.name.is_some()).map(|e| e.manifest_digest.clone()).collect();
    out.retain(|e| e.name.is_some() || !named.contains(&e.manifest_digest));
    out
}

/// Format Unix seconds as RFC 3339 UTC (`2026-11-29T00:24:31Z`), the form OCI configs and docker use.
/// Written here rather than pulling in a date crate: it is the one date operation rimg needs.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Seconds since the Unix epoch of a UTC civil date and time (days-from-civil, Howard Hinnant's
/// algorithm): the inverse of [`rfc3339`], shared by every date rimg parses (configs, HTTP dates).
pub fn unix_seconds(year: i64, month: i64, day: i64, hour: i64, min: i64, sec: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400 + hour * 3600 + min * 60 + sec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_998_271), "2026-11-30T00:24:31Z");
        assert_eq!(unix_seconds(2026, 11, 30, 0, 24, 31), 1_795_998_271);
        assert_eq!(unix_seconds(2000, 2, 29, 0, 0, 0), 951_782_400);
    }

    fn entry(name: Option<&str>, d: &Digest) -> ImageEntry {
        ImageEntry {
            name: name.map(str::to_string),
            manifest_digest: d.clone(),
            manifest_size: 1,
            media_type: "m".into(),
            repo_digest: None,
            added: None,
        }
    }

    #[test]
    fn names_move_and_untagged_entries_collapse() {
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let out = normalize(vec![entry(Some("x:1"), &a), entry(None, &a), entry(Some("x:1"), &b)]);
        assert_eq!(out.len(), 2, "{out:?}");
        let out = normalize(vec![entry(None, &a), entry(None, &a)]);
        assert_eq!(out.len(), 1);
    }
}
