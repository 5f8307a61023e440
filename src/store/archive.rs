//! `save` and `load`: images as one tar file.
//!
//! `save` writes what docker ≥ 25 writes: an OCI image layout (`oci-layout`, `index.json`, `blobs/`) plus the
//! legacy `manifest.json`, so both docker-archive readers (`docker load`, `skopeo copy docker-archive:`) and
//! OCI readers (`skopeo copy oci-archive:`, umoci after untar) accept it. `load` takes either form.
//!
//! `load` also takes the classic `docker save` layout (`<id>/layer.tar`, `<id>/json`, `repositories`,
//! `manifest.json`, no `index.json`), podman's docker-archive (a layer that occurs twice is a symlink to the
//! first), and any of them compressed with gzip, zstd or xz (`docker save | gzip`), told apart by their
//! magic bytes as `docker load` does.
//!
//! Loading extracts the archive into a private directory first (regular files and directories, plain
//! relative names only): a tar is a stream, and resolving manifest → config → layers needs random access.
//! Symlinks and hard links are never created on disk: they are kept as a table and resolved lexically,
//! inside the archive, when a path from a manifest is looked up, so no link can make a later entry or a
//! lookup leave the directory.

use super::images::{ImageEntry, ANN_REF_NAME, MAX_METADATA};
use super::{IoContext, Result, Store, StoreError};
use crate::digest::{Digest, HashingReader};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// containerd's (and docker ≥ 25's) annotation for the full image name inside an OCI layout.
pub const ANN_CONTAINERD_NAME: &str = "io.containerd.image.name";

const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Write the images named by `names` (already resolved full references or IDs) to `out` as one tar.
pub fn save(store: &Store, names: &[String], out: impl Write) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    let mut blobs: Vec<Digest> = Vec::new();
    let mut index = Vec::new();
    let mut legacy = Vec::new();
    for name in names {
        let rec = store.image(name)?;
        let tag_names: Vec<String> = match &rec.name {
            Some(n) => vec![n.clone()],
            None => rec.tags.clone(),
        };
        let mut annotations = serde_json::Map::new();
        if let Some(n) = tag_names.first() {
            annotations.insert(ANN_CONTAINERD_NAME.into(), n.clone().into());
            let tag = n.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            annotations.insert(ANN_REF_NAME.into(), tag.into());
        }
        let size = fs::metadata(store.blob_path(&rec.manifest_digest)).map(|m| m.len()).unwrap_or(0);
        index.push(serde_json::json!({
            "mediaType": rec.manifest.media_type().as_ref().map(|m| m.to_string()).unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_string()),
            "digest": rec.manifest_digest.to_string(),
            "size": size,
            "annotations": annotations,
        }));
        let layers: Vec<String> = rec
            .manifest
            .layers()
            .iter()
            .map(|l| format!("blobs/sha256/{}", l.digest().as_ref().trim_start_matches("sha256:")))
            .collect();
        let repo_tags: Vec<String> = tag_names
            .iter()
            .filter_map(|n| crate::reference::Reference::parse(n).ok())
            .map(|r| r.familiar())
            .collect();
        legacy.push(serde_json::json!({
            "Config": format!("blobs/sha256/{}", rec.id.hex()),
            "RepoTags": repo_tags,
            "Layers": layers,
        }));
        blobs.push(rec.manifest_digest.clone());
        blobs.push(rec.id.clone());
        for l in rec.manifest.layers() {
            blobs.push(l.digest().to_string().parse()?);
        }
    }
    blobs.sort();
    blobs.dedup();
    let index_json =
        serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": index});
    let io_err = |e: io::Error| StoreError::Io { what: "write", path: PathBuf::from("archive"), source: e };
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err)?;
    append_bytes(&mut tar, "index.json", index_json.to_string().as_bytes()).map_err(io_err)?;
    append_bytes(&mut tar, "manifest.json", serde_json::Value::Array(legacy).to_string().as_bytes())
        .map_err(io_err)?;
    append_dir(&mut tar, "blobs/").map_err(io_err)?;
    append_dir(&mut tar, "blobs/sha256/").map_err(io_err)?;
    for d in &blobs {
        let path = store.blob_path(d);
        let mut f = File::open(&path).ctx("open", &path)?;
        let len = f.metadata().ctx("stat", &path)?.len();
        let mut h = header(tar::EntryType::Regular, 0o644, len);
        tar.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), &mut f).map_err(io_err)?;
    }
    tar.into_inner().and_then(|mut w| w.flush()).map_err(io_err)?;
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
    tar.append_data(&mut h, name, data)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, name, io::empty())
}

#[derive(Deserialize)]
struct LegacyItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    #[serde(default)]
    media_type: Option<String>,
    digest: Digest,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Desc>,
}

/// Materialises one layer blob already in the store: `(store, blob, diff_id, diff_ids below it)`.
pub type UnpackLayer<'a> =
    dyn Fn(&Store, &Digest, &Digest, &[Digest]) -> std::result::Result<(), String> + 'a;

/// One image a `load` added: its name (if the archive named it) and manifest.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Full reference, when the archive carried a name.
    pub name: Option<String>,
    /// Manifest digest in the cache.
    pub manifest: Digest,
    /// Image ID.
    pub id: Digest,
}

/// Load every image of a docker-archive or OCI-layout tar, plain or compressed (gzip, zstd, xz).
/// `unpack(store, blob, diff_id, below)` materialises one layer blob (already in the store) into its layer
/// directory and checks its diff_id; the pull module provides it.
pub fn load(store: &Store, input: impl Read, unpack: &UnpackLayer<'_>) -> Result<Vec<Loaded>> {
    let _gc = store.lock_shared("gc")?;
    let dir = store.ingest_dir().join(format!("load-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    let links = extract_plain(decompressed(input)?, &dir)?;
    let mut ar = Extracted { dir, links, imported: HashMap::new() };
    let mut loaded = Vec::new();
    if ar.dir.join("index.json").is_file() {
        let idx: IndexDoc = read_json(&ar.dir.join("index.json"))?;
        for desc in idx.manifests {
            let name = desc
                .annotations
                .get(ANN_CONTAINERD_NAME)
                .or_else(|| desc.annotations.get(ANN_REF_NAME).filter(|n| n.contains('/') || n.contains(':')))
                .and_then(|n| crate::reference::Reference::parse(n).ok())
                .map(|r| r.to_string());
            loaded.push(load_oci_manifest(store, &mut ar, desc, name, unpack)?);
        }
    } else if ar.dir.join("manifest.json").is_file() {
        let items: Vec<LegacyItem> = read_json(&ar.dir.join("manifest.json"))?;
        for item in items {
            loaded.extend(load_legacy(store, &mut ar, item, unpack)?);
        }
    } else {
        return Err(StoreError::Corrupt {
            what: "archive",
            digest: "input".into(),
            reason: "neither index.json (OCI layout) nor manifest.json (docker-archive) found".into(),
        });
    }
    Ok(loaded)
}

const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The tar stream inside `input`: decompressed when its first bytes are a gzip, zstd or xz magic (docker
/// and podman load all three), as is otherwise.
fn decompressed<'a>(mut input: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let archive = Path::new("archive");
    let mut prefix = [0u8; 6];
    let mut n = 0;
    while n < prefix.len() {
        match input.read(&mut prefix[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).ctx("read", archive),
        }
    }
    let head = &prefix[..n];
    let chained = io::Cursor::new(prefix).take(n as u64).chain(input);
    Ok(if head.starts_with(&GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(chained))
    } else if head.starts_with(&ZSTD_MAGIC) {
        let mut d = zstd::stream::read::Decoder::new(chained).ctx("read zstd", archive)?;
        d.window_log_max(31).ctx("read zstd", archive)?;
        Box::new(d)
    } else if head.starts_with(&XZ_MAGIC) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(chained))
    } else if head.starts_with(b"BZh") {
        return Err(StoreError::Corrupt {
            what: "archive",
            digest: "input".into(),
            reason: "bzip2-compressed archives are not supported; decompress it first (bunzip2)".into(),
        });
    } else {
        Box::new(chained)
    })
}

/// The extracted archive: its directory, its links, and which of its files are already in the store.
struct Extracted {
    dir: PathBuf,
    links: Links,
    /// Files moved into the blob store, by resolved path: the same file can be named twice (a layer shared
    /// by two images, or reached through a link), and after the first move only the digest is left.
    imported: HashMap<PathBuf, (Digest, u64)>,
}

impl Extracted {
    /// The file `rel` (a path from a manifest) names on disk, links resolved.
    fn path(&self, rel: &str) -> Result<PathBuf> {
        safe_join(&self.dir, rel)?;
        Ok(self.dir.join(self.links.resolve(Path::new(rel))?))
    }

    /// Move the file `rel` into the blob store (once) and return its digest and size.
    fn import(&mut self, store: &Store, rel: &str) -> Result<(Digest, u64)> {
        let path = self.path(rel)?;
        if let Some(done) = self.imported.get(&path) {
            return Ok(done.clone());
        }
        let done = import_file(store, &path)?;
        self.imported.insert(path, done.clone());
        Ok(done)
    }
}

/// The symlinks and hard links of an archive, as relative link path → relative target path (both without
/// `.` or `..`), resolved by [`Links::resolve`] without touching the disk.
#[derive(Debug, Default)]
struct Links(HashMap<PathBuf, PathBuf>);

/// How many links one lookup may follow (the kernel's own limit).
const MAX_LINK_HOPS: usize = 40;

impl Links {
    /// Record the link `rel` to `target`: a symlink's target is relative to the link's directory, a hard
    /// link's to the archive root. Absolute targets and targets above the root are refused.
    fn add(&mut self, rel: &Path, target: &Path, symlink: bool) -> Result<()> {
        let base = if symlink { rel.parent().unwrap_or(Path::new("")) } else { Path::new("") };
        let escapes = || StoreError::Corrupt {
            what: "archive",
            digest: rel.display().to_string(),
            reason: format!("link target {} escapes the archive", target.display()),
        };
        let mut out = normalize(base).ok_or_else(escapes)?;
        for c in target.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::CurDir => {}
                Component::ParentDir if out.pop() => {}
                _ => return Err(escapes()),
            }
        }
        self.0.insert(normalize(rel).ok_or_else(escapes)?, out);
        Ok(())
    }

    /// Forget a link that a later entry of the same name replaced.
    fn remove(&mut self, rel: &Path) {
        if let Some(n) = normalize(rel) {
            self.0.remove(&n);
        }
    }

    /// `rel` with every link along it (in any component) replaced by its target.
    fn resolve(&self, rel: &Path) -> Result<PathBuf> {
        let mut path: Vec<std::ffi::OsString> =
            rel.components().filter(|c| *c != Component::CurDir).map(|c| c.as_os_str().to_owned()).collect();
        for _ in 0..=MAX_LINK_HOPS {
            let hit = (1..=path.len()).find_map(|i| {
                let prefix: PathBuf = path[..i].iter().collect();
                self.0.get(&prefix).map(|t| (i, t))
            });
            let Some((i, target)) = hit else { return Ok(path.iter().collect()) };
            let rest = path.split_off(i);
            path = target.components().map(|c| c.as_os_str().to_owned()).chain(rest).collect();
        }
        Err(StoreError::Corrupt {
            what: "archive",
            digest: rel.display().to_string(),
            reason: format!("more than {MAX_LINK_HOPS} links on the way (a link loop)"),
        })
    }
}

/// `p` without `.` components; None if it has anything but plain names and `.`.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn load_oci_manifest(
    store: &Store,
    ar: &mut Extracted,
    desc: Desc,
    name: Option<String>,
    unpack: &UnpackLayer<'_>,
) -> Result<Loaded> {
    let media = desc.media_type.clone().unwrap_or_default();
    if media == MEDIA_OCI_INDEX || media == MEDIA_DOCKER_LIST {
        let idx: IndexDoc = serde_json::from_slice(&import_small(store, ar, &desc.digest)?)
            .map_err(|e| corrupt("index", &desc.digest, e))?;
        let host = crate::registry::Platform::host();
        let pick = idx
            .manifests
            .into_iter()
            .find(|d| {
                d.platform.as_ref().is_some_and(|p| {
                    p.get("os").and_then(|v| v.as_str()) == Some(host.os.as_str())
                        && p.get("architecture").and_then(|v| v.as_str()) == Some(host.architecture.as_str())
                })
            })
            .ok_or_else(|| StoreError::Corrupt {
                what: "index",
                digest: desc.digest.to_string(),
                reason: "no manifest for this platform".into(),
            })?;
        return load_oci_manifest(store, ar, pick, name, unpack);
    }
    let raw = import_small(store, ar, &desc.digest)?;
    let manifest = oci_spec::image::ImageManifest::from_reader(raw.as_slice())
        .map_err(|e| corrupt("manifest", &desc.digest, e))?;
    let id: Digest = manifest.config().digest().to_string().parse()?;
    let cfg_raw = import_small(store, ar, &id)?;
    let config = oci_spec::image::ImageConfiguration::from_reader(cfg_raw.as_slice())
        .map_err(|e| corrupt("config", &id, e))?;
    let diff_ids: Vec<Digest> =
        config.rootfs().diff_ids().iter().map(|d| d.parse()).collect::<std::result::Result<_, _>>()?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(corrupt("config", &id, "diff_ids and layers differ in number"));
    }
    for (i, (l, diff)) in manifest.layers().iter().zip(&diff_ids).enumerate() {
        let d: Digest = l.digest().to_string().parse()?;
        import_blob(store, ar, &d)?;
        if !store.has_layer(diff) {
            unpack(store, &d, diff, &diff_ids[..i]).map_err(|e| corrupt("layer", &d, e))?;
        }
    }
    store.add_image(ImageEntry {
        name: name.clone(),
        manifest_digest: desc.digest.clone(),
        manifest_size: raw.len() as u64,
        media_type: manifest.media_type().as_ref().map(|m| m.to_string()).unwrap_or_else(|| media.clone()),
        repo_digest: None,
        added: None,
    })?;
    Ok(Loaded { name, manifest: desc.digest, id })
}

fn load_legacy(
    store: &Store,
    ar: &mut Extracted,
    item: LegacyItem,
    unpack: &UnpackLayer<'_>,
) -> Result<Vec<Loaded>> {
    let cfg_path = ar.path(&item.config)?;
    let cfg_raw = fs::read(&cfg_path).ctx("read", &cfg_path)?;
    let id = Digest::of_bytes(&cfg_raw);
    store.put_blob(&id, &cfg_raw)?;
    let config = oci_spec::image::ImageConfiguration::from_reader(cfg_raw.as_slice())
        .map_err(|e| corrupt("config", &id, e))?;
    let diff_ids: Vec<Digest> =
        config.rootfs().diff_ids().iter().map(|d| d.parse()).collect::<std::result::Result<_, _>>()?;
    if diff_ids.len() != item.layers.len() {
        return Err(corrupt("config", &id, "diff_ids and layers differ in number"));
    }
    let mut layers = Vec::new();
    for (i, (path, diff)) in item.layers.iter().zip(&diff_ids).enumerate() {
        let (d, size) = ar.import(store, path)?;
        let media = layer_media_type(&store.blob_path(&d))?;
        if !store.has_layer(diff) {
            unpack(store, &d, diff, &diff_ids[..i]).map_err(|e| corrupt("layer", &d, e))?;
        }
        layers.push(serde_json::json!({"mediaType": media, "digest": d.to_string(), "size": size}));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": id.to_string(), "size": cfg_raw.len()},
        "layers": layers,
    });
    let raw = serde_json::to_vec(&manifest).map_err(|e| corrupt("manifest", &id, e))?;
    let mdigest = Digest::of_bytes(&raw);
    store.put_blob(&mdigest, &raw)?;
    let mut out = Vec::new();
    let tags = item.repo_tags.unwrap_or_default();
    let names: Vec<Option<String>> = if tags.is_empty() {
        vec![None]
    } else {
        tags.iter()
            .map(|t| crate::reference::Reference::parse(t).map(|r| Some(r.to_string())))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| StoreError::Reference(e.to_string()))?
    };
    for name in names {
        store.add_image(ImageEntry {
            name: name.clone(),
            manifest_digest: mdigest.clone(),
            manifest_size: raw.len() as u64,
            media_type: MEDIA_OCI_MANIFEST.into(),
            repo_digest: None,
            added: None,
        })?;
        out.push(Loaded { name, manifest: mdigest.clone(), id: id.clone() });
    }
    Ok(out)
}

fn corrupt(what: &'static str, d: &Digest, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { what, digest: d.to_string(), reason: e.to_string() }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let f = File::open(path).ctx("open", path)?;
    serde_json::from_reader(f.take(MAX_METADATA)).map_err(|e| StoreError::Corrupt {
        what: "archive file",
        digest: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The OCI media type of a layer blob of a docker-archive, by its magic bytes (the archive does not say).
fn layer_media_type(blob: &Path) -> Result<&'static str> {
    let mut magic = [0u8; 4];
    let n = File::open(blob).and_then(|mut f| f.read(&mut magic)).ctx("read", blob)?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    })
}

/// Copy a small blob (manifest, config) from the extracted layout into the store, verified.
fn import_small(store: &Store, ar: &mut Extracted, d: &Digest) -> Result<Vec<u8>> {
    import_blob(store, ar, d)?;
    store.read_blob(d, MAX_METADATA)
}

fn import_blob(store: &Store, ar: &mut Extracted, d: &Digest) -> Result<()> {
    if store.has_blob(d) {
        return Ok(());
    }
    let (actual, _) = ar.import(store, &format!("blobs/sha256/{}", d.hex()))?;
    if &actual != d {
        return Err(StoreError::DigestMismatch { expected: d.clone(), actual });
    }
    Ok(())
}

/// Move a file into the blob store under the digest of its content (computed while copying).
fn import_file(store: &Store, path: &Path) -> Result<(Digest, u64)> {
    let f = File::open(path).ctx("open", path)?;
    let mut r = HashingReader::new(f);
    io::copy(&mut r, &mut io::sink()).ctx("read", path)?;
    let (d, n, _) = r.finish();
    if !store.has_blob(&d) {
        let dest = store.blob_path(&d);
        fs::rename(path, &dest).or_else(|_| fs::copy(path, &dest).map(|_| ())).ctx("store", &dest)?;
    }
    Ok((d, n))
}

fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        Ok(dir.join(p))
    } else {
        Err(StoreError::Corrupt {
            what: "archive",
            digest: rel.into(),
            reason: "path escapes the archive".into(),
        })
    }
}

/// Extract the regular files and directories (plain relative names only) of `input` into `dir`, and
/// return its symlinks and hard links as a table; any other entry type is refused.
fn extract_plain(input: impl Read, dir: &Path) -> Result<Links> {
    let archive = Path::new("archive");
    fs::create_dir_all(dir).ctx("create", dir)?;
    let mut links = Links::default();
    let mut ar = tar::Archive::new(input);
    let entries = ar.entries().ctx("read", archive)?;
    for (i, entry) in entries.enumerate() {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) if i == 0 => {
                return Err(StoreError::Corrupt {
                    what: "archive",
                    digest: "input".into(),
                    reason: format!("not a tar archive (nor a gzip, zstd or xz-compressed one): {e}"),
                })
            }
            Err(e) => return Err(e).ctx("read", archive),
        };
        let rel = entry.path().ctx("read", archive)?.into_owned();
        let rel_s = rel.to_string_lossy().into_owned();
        let dest = safe_join(dir, &rel_s)?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                links.remove(&rel);
                fs::create_dir_all(&dest).ctx("create", &dest)?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                links.remove(&rel);
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).ctx("create", parent)?;
                }
                let mut f = File::create(&dest).ctx("create", &dest)?;
                io::copy(&mut entry, &mut f).ctx("write", &dest)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name().ctx("read", archive)?.unwrap_or_default().into_owned();
                links.add(&rel, &target, kind == tar::EntryType::Symlink)?;
            }
            other => {
                return Err(StoreError::Corrupt {
                    what: "archive",
                    digest: rel_s,
                    reason: format!("unexpected entry type {other:?}"),
                })
            }
        }
    }
    Ok(links)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(entries: &[(&str, &str, bool)]) -> Result<Links> {
        let mut l = Links::default();
        for (rel, target, symlink) in entries {
            l.add(Path::new(rel), Path::new(target), *symlink)?;
        }
        Ok(l)
    }

    #[test]
    fn links_resolve_inside_the_archive() {
        let l = links(&[
            ("b/layer.tar", "../a/layer.tar", true), // docker: a repeated layer
            ("c.tar", "b/layer.tar", false),         // a hard link to a symlink
            ("dir", "sub/real", true),               // a symlinked directory on the way
            ("./x/./y", "./z", true),
        ])
        .unwrap();
        let r = |p: &str| l.resolve(Path::new(p)).unwrap();
        assert_eq!(r("b/layer.tar"), Path::new("a/layer.tar"));
        assert_eq!(r("./c.tar"), Path::new("a/layer.tar"));
        assert_eq!(r("dir/f.json"), Path::new("sub/real/f.json"));
        assert_eq!(r("x/y"), Path::new("x/z"));
        assert_eq!(r("plain/file"), Path::new("plain/file"));
    }

    #[test]
    fn links_out_of_the_archive_and_loops_are_refused() {
        for (rel, target, symlink) in
            [("a", "/etc/passwd", true), ("d/a", "../../etc/passwd", true), ("a", "../x", false)]
        {
            let e = links(&[(rel, target, symlink)]).unwrap_err().to_string();
            assert!(e.contains("escapes the archive"), "{rel} -> {target}: {e}");
        }
        let l = links(&[("a", "b", true), ("b", "a", true)]).unwrap();
        let e = l.resolve(Path::new("a/file")).unwrap_err().to_string();
        assert!(e.contains("link loop"), "{e}");
    }
}
