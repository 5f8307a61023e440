//! Manifest media types, classification of a fetched manifest body (refusing type confusion), platforms,
//! and picking the platform's image manifest out of an index the way docker/containerd do.

use crate::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Legacy Docker schema 1 manifests (unsigned and signed); refused, as current docker does.
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` header for manifest requests: every type rimg understands, preferred first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and configs larger than this are refused unread (real ones are a few KiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// The annotation docker's buildx puts on attestation (SBOM/provenance) entries of an index.
const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";

/// Whether a fetched manifest is a single-platform manifest or an index of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest (config + layers).
    Image,
    /// An index / manifest list (one manifest per platform).
    Index,
}

/// What a media type string means, if rimg knows it.
pub fn kind_of_media_type(mt: &str) -> Option<ManifestKind> {
    match base_media_type(mt) {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

/// The media type without parameters (`; charset=utf-8`) and surrounding spaces.
fn base_media_type(mt: &str) -> &str {
    mt.split(';').next().unwrap_or("").trim()
}

#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

/// Decide what a manifest body is from its served `Content-Type`, its own `mediaType` field and its
/// structure, refusing any disagreement: a registry (or a man in the middle of a mirror) must not be able to
/// pass an index off as a manifest or the reverse. Returns the kind and the effective media type.
pub fn classify(body: &[u8], content_type: Option<&str>) -> Result<(ManifestKind, String), String> {
    let probe: Probe = serde_json::from_slice(body).map_err(|e| format!("not valid JSON: {e}"))?;
    let ct = content_type.map(base_media_type).filter(|c| !c.is_empty());
    if let Some(c) = ct {
        if DOCKER_SCHEMA1.contains(&c) {
            return Err(format!("{c} (Docker schema 1) is not supported"));
        }
    }
    if probe.schema_version != Some(2) {
        return Err(format!(
            "schemaVersion {} is not supported (expected 2)",
            probe.schema_version.map(|v| v.to_string()).unwrap_or_else(|| "missing".into())
        ));
    }
    let structural = match (probe.manifests.is_some(), probe.layers.is_some() || probe.config.is_some()) {
        (true, false) => Some(ManifestKind::Index),
        (false, true) => Some(ManifestKind::Image),
        (true, true) => return Err("has both `manifests` and `layers`/`config`".into()),
        (false, false) => None,
    };
    let declared = probe.media_type.as_deref().map(base_media_type);
    let declared_kind = match declared {
        Some(d) => Some(kind_of_media_type(d).ok_or_else(|| format!("unsupported mediaType {d}"))?),
        None => None,
    };
    let served_kind = ct.and_then(kind_of_media_type);
    if let (Some(d), Some(s)) = (declared_kind, served_kind) {
        if d != s {
            return Err(format!(
                "body declares mediaType {} but was served as {}",
                declared.unwrap_or_default(),
                ct.unwrap_or_default()
            ));
        }
    }
    let kind = declared_kind.or(served_kind).or(structural).ok_or("cannot tell manifest from index")?;
    if let Some(st) = structural {
        if st != kind {
            return Err(format!("declared a{} but its fields are those of a{}", article(kind), article(st)));
        }
    }
    let media_type = match (declared, ct.filter(|c| kind_of_media_type(c).is_some())) {
        (Some(d), _) => d.to_string(),
        (None, Some(c)) => c.to_string(),
        (None, None) => match kind {
            ManifestKind::Image => OCI_MANIFEST.to_string(),
            ManifestKind::Index => OCI_INDEX.to_string(),
        },
    };
    Ok((kind, media_type))
}

fn article(k: ManifestKind) -> &'static str {
    match k {
        ManifestKind::Image => " manifest",
        ManifestKind::Index => "n index",
    }
}

/// An image platform (`linux/arm/v7`), normalized to GOOS/GOARCH names as registries use them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture in GOARCH spelling (`amd64`, `arm64`, `arm`).
    pub architecture: String,
    /// CPU variant (`v7`, `v8`), if any.
    pub variant: Option<String>,
}

/// Why a `--platform` value is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm/v7")]
pub struct InvalidPlatform(pub String);

impl Platform {
    /// The platform this process runs on: what `docker pull` selects by default.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "loongarch64" => ("loong64", None),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
            other => (other, None),
        };
        Platform::new("linux", arch, variant)
    }

    /// Build a normalized platform (`x86_64` → `amd64`, `aarch64` → `arm64`, `armhf` → `arm/v7`, and the
    /// default variants `arm64/v8` and `amd64/v1` dropped), so equal platforms compare equal.
    pub fn new(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let arch = arch.to_ascii_lowercase();
        let variant = variant.map(|v| v.to_ascii_lowercase()).filter(|v| !v.is_empty());
        let (arch, variant) = match (arch.as_str(), variant) {
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64".to_string(), v.filter(|v| v != "v1")),
            ("aarch64" | "arm64", v) => ("arm64".to_string(), v.filter(|v| v != "v8" && v != "8")),
            ("armhf", _) => ("arm".to_string(), Some("v7".to_string())),
            ("armel", _) => ("arm".to_string(), Some("v6".to_string())),
            ("arm", v) => {
                ("arm".to_string(), Some(v.map(|v| normalize_arm(&v)).unwrap_or_else(|| "v7".into())))
            }
            ("i386" | "i486" | "i586" | "i686" | "x86", v) => ("386".to_string(), v),
            (a, v) => (a.to_string(), v),
        };
        Platform { os, architecture: arch, variant }
    }

    /// The platform an image config (`{"os": …, "architecture": …, "variant": …}`) declares, if it does.
    pub fn from_config(config_json: &[u8]) -> Option<Platform> {
        #[derive(serde::Deserialize)]
        struct Cfg {
            #[serde(default)]
            os: String,
            #[serde(default)]
            architecture: String,
            #[serde(default)]
            variant: Option<String>,
        }
        let c: Cfg = serde_json::from_slice(config_json).ok()?;
        if c.os.is_empty() || c.architecture.is_empty() {
            return None;
        }
        Some(Platform::new(&c.os, &c.architecture, c.variant.as_deref()))
    }

    /// Whether an image built for `image` runs on this platform (same OS and architecture, and a variant this
    /// CPU can execute). Lets a caller check a single-platform image's config against `--platform`, as
    /// docker does.
    pub fn accepts(&self, image: &Platform) -> bool {
        self.score(image).is_some()
    }

    /// How well an index entry's platform serves this (requested) platform: `None` if it cannot run here,
    /// higher is better (exact variant > older compatible variant > no variant stated).
    fn score(&self, entry: &Platform) -> Option<u32> {
        if entry.os != self.os || entry.architecture != self.architecture {
            return None;
        }
        match (&self.variant, &entry.variant) {
            (a, b) if a == b => Some(1000),
            (_, None) => Some(1),
            (Some(want), Some(have)) => {
                // Variants are ordered (v5 < v6 < v7 for arm, v1 < v2 < v3 < v4 for amd64): an older one runs.
                let (w, h) = (variant_level(want)?, variant_level(have)?);
                (h < w).then(|| 100 + h)
            }
            // Plain amd64 (= v1, normalized away) or arm64 (= v8) cannot run images needing a newer variant.
            (None, Some(_)) => None,
        }
    }
}

fn normalize_arm(v: &str) -> String {
    match v {
        "5" | "6" | "7" | "8" => format!("v{v}"),
        other => other.to_string(),
    }
}

fn variant_level(v: &str) -> Option<u32> {
    v.strip_prefix('v')?.parse().ok()
}

impl FromStr for Platform {
    type Err = InvalidPlatform;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok =
            |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform::new(os, arch, Some(v))),
            _ => Err(InvalidPlatform(s.to_string())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One entry of an index, as needed for platform selection.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct IndexEntry {
    /// Media type of the referenced manifest.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Digest of the referenced manifest (validated: it becomes a store path).
    pub digest: Digest,
    /// Size in bytes of the referenced manifest.
    pub size: u64,
    /// Platform the manifest is for.
    #[serde(default)]
    pub platform: Option<RawPlatform>,
    /// Annotations (attestations are marked here).
    #[serde(default)]
    pub annotations: Option<std::collections::HashMap<String, String>>,
}

/// A platform as written in an index.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RawPlatform {
    /// `os` field.
    #[serde(default)]
    pub os: String,
    /// `architecture` field.
    #[serde(default)]
    pub architecture: String,
    /// `variant` field.
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(serde::Deserialize)]
struct IndexBody {
    manifests: Vec<IndexEntry>,
}

/// Parse an index body's entries.
pub fn index_entries(body: &[u8]) -> Result<Vec<IndexEntry>, String> {
    serde_json::from_slice::<IndexBody>(body).map(|b| b.manifests).map_err(|e| format!("invalid index: {e}"))
}

/// Choose the best entry of an index for `want`, skipping attestations and non-manifest entries. On failure
/// returns the platforms that were available, for the error message.
pub fn select_platform(entries: &[IndexEntry], want: &Platform) -> Result<IndexEntry, String> {
    let mut best: Option<(u32, &IndexEntry)> = None;
    let mut available = Vec::new();
    for e in entries {
        let is_attestation = e
            .annotations
            .as_ref()
            .and_then(|a| a.get(REFERENCE_TYPE_ANNOTATION))
            .is_some_and(|t| t == "attestation-manifest");
        let Some(raw) = &e.platform else { continue };
        if is_attestation || raw.os == "unknown" || raw.architecture == "unknown" {
            continue;
        }
        if !e.media_type.is_empty() && kind_of_media_type(&e.media_type) != Some(ManifestKind::Image) {
            continue;
        }
        let p = Platform::new(&raw.os, &raw.architecture, raw.variant.as_deref());
        available.push(p.to_string());
        if let Some(score) = want.score(&p) {
            // First entry wins ties, as in containerd.
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, e));
            }
        }
    }
    best.map(|(_, e)| e.clone()).ok_or_else(|| {
        if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn entry(n: u8, os: &str, arch: &str, variant: Option<&str>) -> serde_json::Value {
        let mut p = serde_json::json!({ "os": os, "architecture": arch });
        if let Some(v) = variant {
            p["variant"] = v.into();
        }
        serde_json::json!({ "mediaType": OCI_MANIFEST, "digest": d(n), "size": 100, "platform": p })
    }

    fn index(entries: Vec<serde_json::Value>) -> Vec<IndexEntry> {
        let body = serde_json::json!({ "schemaVersion": 2, "manifests": entries });
        index_entries(body.to_string().as_bytes()).unwrap()
    }

    fn pick(entries: &[IndexEntry], want: &str) -> Result<String, String> {
        select_platform(entries, &want.parse().unwrap()).map(|e| e.digest.to_string())
    }

    #[test]
    fn platform_parsing() {
        assert_eq!("linux/arm64/v8".parse::<Platform>().unwrap().to_string(), "linux/arm64");
        assert_eq!("linux/x86_64".parse::<Platform>().unwrap().to_string(), "linux/amd64");
        assert_eq!("linux/arm".parse::<Platform>().unwrap().to_string(), "linux/arm/v7");
        assert_eq!("Linux/ARM/v6".parse::<Platform>().unwrap().to_string(), "linux/arm/v6");
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
        let cfg = br#"{"architecture":"arm","os":"linux","variant":"v6","rootfs":{}}"#;
        assert_eq!(Platform::from_config(cfg).unwrap().to_string(), "linux/arm/v6");
        assert_eq!(Platform::from_config(b"{}"), None);
        let arm7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(arm7.accepts(&Platform::new("linux", "arm", Some("v6"))));
        assert!(!arm7.accepts(&Platform::new("linux", "arm64", None)));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(Platform::host().to_string(), "linux/amd64");
        }
    }

    #[test]
    fn selects_platform_variant_aware() {
        let mut attest = entry(9, "unknown", "unknown", None);
        attest["annotations"] = serde_json::json!({ "vnd.docker.reference.type": "attestation-manifest" });
        let mut attest2 = entry(10, "linux", "amd64", None);
        attest2["annotations"] = serde_json::json!({ "vnd.docker.reference.type": "attestation-manifest" });
        let idx = index(vec![
            attest2,
            attest,
            entry(1, "linux", "amd64", None),
            entry(2, "linux", "arm", Some("v6")),
            entry(3, "linux", "arm", Some("v7")),
            entry(4, "linux", "arm64", Some("v8")),
            entry(5, "windows", "amd64", None),
        ]);
        assert_eq!(pick(&idx, "linux/amd64").unwrap(), d(1));
        assert_eq!(pick(&idx, "linux/arm/v7").unwrap(), d(3));
        assert_eq!(pick(&idx, "linux/arm/v6").unwrap(), d(2));
        assert_eq!(pick(&idx, "linux/arm/v8").unwrap(), d(3), "v8 CPUs run v7 code");
        assert_eq!(pick(&idx, "linux/arm64").unwrap(), d(4));
        assert_eq!(pick(&idx, "windows/amd64").unwrap(), d(5));
        let err = pick(&idx, "linux/s390x").unwrap_err();
        assert!(err.contains("linux/arm/v7") && !err.contains("unknown"), "{err}");
        let idx = index(vec![entry(6, "linux", "arm", Some("v7"))]);
        assert!(pick(&idx, "linux/arm/v6").is_err(), "a v7 image does not run on v6");
        // An entry without variant serves any variant, but an exact one is preferred.
        let idx = index(vec![entry(7, "linux", "arm64", None), entry(8, "linux", "amd64", Some("v3"))]);
        assert_eq!(pick(&idx, "linux/arm64/v8").unwrap(), d(7));
        assert!(pick(&idx, "linux/amd64").is_err(), "a v3 image does not run on every amd64");
        assert_eq!(pick(&idx, "linux/amd64/v3").unwrap(), d(8));
    }

    #[test]
    fn classification_refuses_confusion() {
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
        let index =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(classify(manifest, Some(OCI_MANIFEST)).unwrap().0, ManifestKind::Image);
        assert_eq!(classify(manifest, Some("application/json")).unwrap().0, ManifestKind::Image);
        assert_eq!(classify(index, Some(OCI_INDEX)).unwrap().0, ManifestKind::Index);
        assert!(classify(manifest, Some(OCI_INDEX)).is_err());
        assert!(classify(index, Some(DOCKER_MANIFEST)).is_err());
        // No mediaType field (allowed by OCI): served type and structure must agree.
        let bare = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            classify(bare, Some(DOCKER_MANIFEST_LIST)).unwrap(),
            (ManifestKind::Index, DOCKER_MANIFEST_LIST.into())
        );
        assert!(classify(bare, Some(OCI_MANIFEST)).is_err());
        let lying =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#;
        assert!(classify(lying, None).is_err());
        assert!(classify(br#"{"schemaVersion":1}"#, None).is_err());
        assert!(classify(b"not json", None).is_err());
        assert!(
            classify(manifest, Some("application/vnd.docker.distribution.manifest.v1+prettyjws")).is_err()
        );
    }
}
