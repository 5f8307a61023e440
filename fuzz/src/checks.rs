//! The checks every fuzz target runs, shared with rimg's `tests/fuzz_regressions.rs` (which includes this
//! file with `#[path]`), so a crash found by the fuzzer is replayed through exactly the same code by a
//! plain `cargo test`.
//!
//! Only std, rimg and rimg's own dependencies (`oci_spec`, `tar`) are used here; the `arbitrary` glue that
//! turns fuzzer bytes into [`Entry`] lists lives in the fuzz target, not here.
//!
//! Every function panics (which libFuzzer reports as a crash) when rimg misbehaves: a panic inside rimg,
//! a broken invariant (a reference that does not survive a print/parse round trip), or a layer that
//! wrote outside its directory.

#![allow(dead_code)]

use rimg::build::dockerfile::Dockerfile;
use rimg::build::words::{expand, split_words};
use rimg::digest::Digest;
use rimg::layer::diff::pax_record;
use rimg::layer::{apply, ApplyOptions};
use rimg::reference::Reference;
use rimg::registry::auth::{parse_www_authenticate, pick_challenge, Challenge};
use rimg::registry::manifest::{
    classify, index_entries, kind_of_media_type, select_platform, ManifestKind, Platform,
};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

// ---------------------------------------------------------------------------------------------------
// 1. image references

/// `Reference::parse` never panics, and what it accepts prints back to a string that parses to the same
/// value (the store keys images by that printed form).
pub fn reference(s: &str) {
    let Ok(r) = Reference::parse(s) else { return };
    let printed = r.to_string();
    let again = Reference::parse(&printed).unwrap_or_else(|e| {
        panic!("{s:?} parsed to {r:?}, printed as {printed:?}, which does not parse: {e}")
    });
    assert_eq!(r, again, "{s:?} -> {printed:?} does not round-trip");
    // The short form (`rimg images`, `docker`-style output) must also parse back to the same image.
    let familiar = r.familiar();
    let back = Reference::parse(&familiar)
        .unwrap_or_else(|e| panic!("{s:?}: familiar form {familiar:?} does not parse: {e}"));
    assert_eq!(r, back, "{s:?}: familiar form {familiar:?} names another image");
    // The name without tag parses too (scope strings, `rimg images REPO`), to the same repository.
    let name = r.name();
    let back = Reference::parse(&name).unwrap_or_else(|e| panic!("{s:?}: name {name:?} does not parse: {e}"));
    assert_eq!((&back.registry, &back.repository), (&r.registry, &r.repository), "{s:?} -> {name:?}");
    let _ = r.manifest_ref();
    let _ = r.repo_only().to_string();
    if let Some(t) = &r.tag {
        let _ = r.with_tag(t).map(|x| x.to_string());
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. manifests and indexes

/// `Content-Type` values the registry may serve, chosen by the first input byte.
const CONTENT_TYPES: [Option<&str>; 9] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/json; charset=utf-8"),
    Some(""),
    Some(" application/vnd.oci.image.index.v1+json ; x=y"),
];

/// Platforms rimg may be asked for.
fn platforms() -> Vec<Platform> {
    let mut v = vec![Platform::host()];
    for s in ["linux/arm/v7", "linux/arm/v5", "linux/amd64/v3", "linux/arm64", "windows/amd64", "linux/386"] {
        if let Ok(p) = Platform::from_str(s) {
            v.push(p);
        }
    }
    v
}

/// (`to_string()` on oci-spec digests and media types on purpose: it is what rimg's store does.)
///
/// The first byte picks a served `Content-Type`; the rest is the manifest body. Classification, index
/// parsing, platform selection and the OCI manifest/index parsers must not panic, and what they accept
/// must be consistent.
#[allow(clippy::unnecessary_to_owned)]
pub fn manifest(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else { return };
    let ct = CONTENT_TYPES[sel as usize % CONTENT_TYPES.len()];
    let classified = classify(body, ct);
    if let Ok((kind, mt)) = &classified {
        assert!(
            kind_of_media_type(mt) == Some(*kind),
            "classify returned media type {mt:?} that is not a {kind:?}"
        );
        no_confusion(body, ct, *kind);
    }
    if let Ok(entries) = index_entries(body) {
        for want in platforms() {
            if let Ok(e) = select_platform(&entries, &want) {
                // Only image-manifest entries that run on `want` are ever chosen.
                let raw = e.platform.as_ref().expect("selected an entry without a platform");
                let p = Platform::new(&raw.os, &raw.architecture, raw.variant.as_deref());
                assert!(want.accepts(&p), "selected {p} for {want}");
                let _ = e.digest.hex();
            }
        }
    }
    let _ = Platform::from_config(body);
    if let Ok(m) = oci_spec::image::ImageManifest::from_reader(body) {
        // What rimg's store does with a manifest: parse every digest before using it as a path.
        let _ = Digest::from_str(&m.config().digest().to_string());
        for l in m.layers() {
            let _ = Digest::from_str(&l.digest().to_string());
            let _ = rimg::layer::Compression::from_media_type(&l.media_type().to_string());
        }
        let _ = m.to_string();
        if classified.as_ref().is_ok_and(|(k, _)| *k == ManifestKind::Index) {
            // An index that also parses as a manifest must not have been an index structurally.
            assert!(m.layers().is_empty(), "classified as an index but has layers");
        }
    }
    if let Ok(ix) = oci_spec::image::ImageIndex::from_reader(body) {
        for d in ix.manifests() {
            let _ = Digest::from_str(&d.digest().to_string());
        }
        let _ = ix.to_string();
    }
}

/// What classification accepted as `kind` agrees with every signal that says otherwise: the served
/// `Content-Type`, the body's own `mediaType`, and its fields (`manifests` vs `layers`/`config`). Checked on
/// a generic JSON view of the body, independently of rimg's own probe.
fn no_confusion(body: &[u8], ct: Option<&str>, kind: ManifestKind) {
    let base = |m: &str| m.split(';').next().unwrap_or("").trim().to_string();
    if let Some(served) = ct.map(base).as_deref().and_then(kind_of_media_type) {
        assert_eq!(served, kind, "served as {ct:?} but classified as {kind:?}");
    }
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    // serde_json's `Value` keeps the last of duplicate keys, as Go's encoding/json (docker) does.
    let present = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
    if let Some(declared) = obj.get("mediaType").and_then(|v| v.as_str()) {
        assert_eq!(
            kind_of_media_type(&base(declared)),
            Some(kind),
            "body declares mediaType {declared:?} but was classified as {kind:?}"
        );
    }
    match kind {
        ManifestKind::Image => assert!(!present("manifests"), "an image manifest with `manifests`"),
        ManifestKind::Index => {
            assert!(!present("layers") && !present("config"), "an index with `layers`/`config`")
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// 3. image configs

/// Parse an image config as the store does, and the `rootfs.diff_ids` that become layer directory names.
pub fn config(data: &[u8]) {
    let _ = Platform::from_config(data);
    let Ok(cfg) = oci_spec::image::ImageConfiguration::from_reader(data) else { return };
    for d in cfg.rootfs().diff_ids() {
        if let Ok(dg) = Digest::from_str(d) {
            // A digest accepted as a path component is exactly 64 lowercase hex digits.
            assert!(dg.hex().len() == 64 && dg.hex().bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(&dg.to_string(), d);
        }
    }
    // `rimg inspect` prints the config back as JSON.
    let _ = cfg.to_string();
    let _ = cfg.config().as_ref().map(|c| (c.env().clone(), c.cmd().clone(), c.entrypoint().clone()));
}

// ---------------------------------------------------------------------------------------------------
// 4. WWW-Authenticate

/// Each input line is one `WWW-Authenticate` header value.
pub fn www_authenticate(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let values: Vec<&str> = text.split('\n').collect();
    let mut any = false;
    let mut bearer = false;
    for v in &values {
        for c in parse_www_authenticate(v) {
            any = true;
            if let Challenge::Bearer { realm, .. } = &c {
                bearer = true;
                let _ = realm.len();
            }
        }
    }
    // Values rimg quotes itself must come back unchanged: the first three lines as realm, service, scope.
    if let [realm, service, scope, ..] = values.as_slice() {
        let q = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        let header =
            format!("Bearer realm=\"{}\",service=\"{}\",scope=\"{}\"", q(realm), q(service), q(scope));
        let want = Challenge::Bearer {
            realm: realm.to_string(),
            service: Some(service.to_string()),
            scope: Some(scope.to_string()),
            error: None,
        };
        assert_eq!(parse_www_authenticate(&header), vec![want], "{header:?}");
    }
    let picked = pick_challenge(values.iter().copied());
    assert_eq!(picked.is_some(), any, "pick_challenge disagrees with parse_www_authenticate");
    if bearer {
        assert!(matches!(picked, Some(Challenge::Bearer { .. })), "Basic picked over Bearer");
    }
}

// ---------------------------------------------------------------------------------------------------
// 6. Dockerfiles

/// `Dockerfile::parse`, `expand` and `split_words` never panic.
pub fn dockerfile(text: &str) {
    let _ = Dockerfile::parse(text);
    let mut vars = HashMap::new();
    vars.insert("A".to_string(), "x y".to_string());
    vars.insert("EMPTY".to_string(), String::new());
    vars.insert("Q".to_string(), "\"'\\$".to_string());
    for escape in ['\\', '`'] {
        for line in text.lines().take(64) {
            let _ = expand(line, &vars, escape);
            let _ = split_words(line, escape);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// 5. layers

/// The content of every file outside the layer directory; finding it inside means a hard link or copy
/// leaked it in.
pub const SECRET: &[u8] = b"rimg-fuzz-secret-4d1f0c9a";

/// One entry of a structured layer. In `name` and `target`, `{S}` stands for the absolute path of the
/// sentinel directory that surrounds the layer directory, so absolute-path escapes can aim at files whose
/// change the check notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What to create.
    pub kind: Kind,
    /// Entry name as written in the tar (may contain `..`, `/`, `{S}`).
    pub name: String,
    /// Symlink or hard-link target (may contain `{S}`).
    pub target: String,
    /// Regular-file content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Whether to write the name/target through a PAX header (long names, xattrs) instead of the
    /// 100-byte ustar fields.
    pub pax: bool,
    /// SCHILY.xattr.* records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// The tar entry types the structured layer target produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Hard link.
    Hardlink,
    /// Character device 1:3 (`/dev/null`: harmless if something wrongly opened it).
    CharNull,
    /// FIFO.
    Fifo,
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    let b = s.as_bytes();
    let b = &b[b.len().saturating_sub(field.len() - 1)..];
    field[..b.len()].copy_from_slice(b);
    field[b.len()] = 0;
}

fn pad(out: &mut Vec<u8>) {
    let r = out.len() % 512;
    if r != 0 {
        out.resize(out.len() + 512 - r, 0);
    }
}

fn raw_header(name: &[u8], link: &[u8], typeflag: u8, size: u64, mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = typeflag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if typeflag == b'3' {
        octal(&mut h[329..337], 1);
        octal(&mut h[337..345], 3);
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    h
}

/// Write `entries` as a tar, with `{S}` replaced by `sentinel`. Names are written verbatim (no cleaning:
/// the tar crate's builder would refuse `..`, which is exactly what must reach rimg).
pub fn build_tar(entries: &[Entry], sentinel: &Path) -> Vec<u8> {
    let s = sentinel.to_string_lossy();
    let mut out = Vec::new();
    for e in entries {
        let name = e.name.replace("{S}", &s);
        let target = e.target.replace("{S}", &s);
        let (flag, data): (u8, &[u8]) = match e.kind {
            Kind::File => (b'0', &e.data),
            Kind::Dir => (b'5', &[]),
            Kind::Symlink => (b'2', &[]),
            Kind::Hardlink => (b'1', &[]),
            Kind::CharNull => (b'3', &[]),
            Kind::Fifo => (b'6', &[]),
        };
        let long = name.len() > 100 || target.len() > 100;
        if e.pax || long || !e.xattrs.is_empty() {
            let mut rec = Vec::new();
            pax_record(&mut rec, b"path", name.as_bytes());
            if matches!(e.kind, Kind::Symlink | Kind::Hardlink) {
                pax_record(&mut rec, b"linkpath", target.as_bytes());
            }
            for (k, v) in &e.xattrs {
                pax_record(&mut rec, format!("SCHILY.xattr.{k}").as_bytes(), v);
            }
            out.extend_from_slice(&raw_header(b"././@PaxHeader", b"", b'x', rec.len() as u64, 0o644));
            out.extend_from_slice(&rec);
            pad(&mut out);
        }
        out.extend_from_slice(&raw_header(
            name.as_bytes(),
            target.as_bytes(),
            flag,
            data.len() as u64,
            e.mode & 0o7777,
        ));
        out.extend_from_slice(data);
        pad(&mut out);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Where sentinel directories are made: a tmpfs by default (fast, and trusted.* xattrs work as root).
fn scratch_base() -> PathBuf {
    std::env::var_os("RIMG_FUZZ_TMP").map(PathBuf::from).unwrap_or_else(|| {
        if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        }
    })
}

/// A sentinel tree: `S/outside/…` (files and a directory full of [`SECRET`]), `S/d/` (the layers' parent),
/// `S/d/lower` and `S/d/dest`. Removed on drop.
pub struct Sentinel {
    /// `S`.
    pub root: PathBuf,
}

impl Sentinel {
    /// Create a fresh sentinel tree.
    pub fn new() -> Sentinel {
        static N: AtomicU64 = AtomicU64::new(0);
        let root = scratch_base().join(format!(
            "rimg-fuzz-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let mk = |p: &Path| std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {p:?}: {e}"));
        let put = |p: &Path| std::fs::write(p, SECRET).unwrap_or_else(|e| panic!("write {p:?}: {e}"));
        mk(&root.join("outside/dir"));
        // The layer directories exist before the "before" snapshot, so creating them does not count as a
        // change of `S/d`.
        mk(&root.join("d/dest"));
        mk(&root.join("d/lower"));
        put(&root.join("victim"));
        put(&root.join("outside/victim"));
        put(&root.join("outside/dir/victim"));
        put(&root.join("d/victim"));
        // A symlink outside, as a layer might hope to find: `S/outside/link -> S/outside/dir`.
        let _ = std::os::unix::fs::symlink(root.join("outside/dir"), root.join("outside/link"));
        Sentinel { root }
    }

    /// The layer directory the check applies into.
    pub fn dest(&self) -> PathBuf {
        self.root.join("d/dest")
    }

    /// A lower layer directory (for the two-layer check).
    pub fn lower(&self) -> PathBuf {
        self.root.join("d/lower")
    }
}

impl Default for Sentinel {
    fn default() -> Self {
        Sentinel::new()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// What the check remembers of one file: everything a write, chmod, chown, xattr, link or unlink
/// through an escape would change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    mode: u32,
    ino: u64,
    nlink: u64,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    link: Option<PathBuf>,
    content: Option<Vec<u8>>,
}

/// Every path under `root` except the subtrees in `skip`, without following symlinks.
fn snapshot(root: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        if skip.iter().any(|s| s == &p) {
            continue;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        let ft = md.file_type();
        let node = Node {
            mode: md.mode(),
            ino: md.ino(),
            nlink: md.nlink(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            link: if ft.is_symlink() { std::fs::read_link(&p).ok() } else { None },
            content: if ft.is_file() { std::fs::read(&p).ok() } else { None },
        };
        if ft.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    todo.push(e.path());
                }
            }
        }
        out.insert(p, node);
    }
    out
}

/// Assert that `before` and `after` (snapshots of the sentinel tree minus the layer directory) agree.
fn assert_unchanged(what: &str, before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>) {
    if before == after {
        return;
    }
    let mut diffs = Vec::new();
    for (p, n) in before {
        match after.get(p) {
            None => diffs.push(format!("removed {p:?}")),
            Some(m) if m != n => diffs.push(format!("changed {p:?}: {n:?} -> {m:?}")),
            _ => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            diffs.push(format!("created {p:?}"));
        }
    }
    panic!("{what}: applying the layer touched files outside the layer directory:\n{}", diffs.join("\n"));
}

/// Inodes of files outside the layer directory, and their secrets, must not show up inside it.
fn assert_no_leak(dest: &Path, outside: &BTreeMap<PathBuf, Node>, input: &[u8]) {
    let outside_inodes: HashMap<u64, &PathBuf> = outside
        .iter()
        .filter(|(_, n)| n.mode & libc_s_ifmt() != libc_s_ifdir())
        .map(|(p, n)| (n.ino, p))
        .collect();
    let secret_in_input = input.windows(SECRET.len()).any(|w| w == SECRET);
    for (p, n) in snapshot(dest, &[]) {
        if let Some(o) = outside_inodes.get(&n.ino) {
            // Same tmpfs, so an equal inode number is the same file.
            panic!("{p:?} in the layer is a hard link to {o:?} outside it");
        }
        if !secret_in_input {
            if let Some(c) = &n.content {
                assert!(
                    !c.windows(SECRET.len()).any(|w| w == SECRET),
                    "{p:?} in the layer carries the content of a file outside it"
                );
            }
        }
    }
}

fn libc_s_ifmt() -> u32 {
    0o170000
}

fn libc_s_ifdir() -> u32 {
    0o040000
}

/// Run `f` (which writes into `dir`, a directory inside the sentinel tree) and panic if anything outside
/// `dir` changed, or if `dir` ends up holding an outside file's inode or content. `input` is everything
/// the fuzzer supplied (the secret may legitimately appear in `dir` if it came from there).
pub fn watch(sentinel: &Sentinel, dir: &Path, input: &[u8], f: impl FnOnce()) {
    let before = snapshot(&sentinel.root, &[dir.to_path_buf()]);
    f();
    let after = snapshot(&sentinel.root, &[dir.to_path_buf()]);
    assert_unchanged("apply", &before, &after);
    if dir.exists() {
        assert_no_leak(dir, &after, input);
    }
}

/// Apply `tar` into the sentinel's layer directory (with `lowers`, if any, already applied) under
/// [`watch`]. Errors from `apply` are fine; panics and escapes are not.
fn apply_checked(sentinel: &Sentinel, tar: &[u8], lowers: Vec<PathBuf>, input: &[u8]) {
    let dest = sentinel.dest();
    let opts = ApplyOptions { lowers, max_entries: 10_000, ..ApplyOptions::default() };
    watch(sentinel, &dest, input, || {
        let _ = apply(tar, &dest, &opts);
    });
}

/// Largest decompressed stream the raw check feeds to `apply` (a few KB of zstd can declare gigabytes).
const MAX_DECOMPRESSED: u64 = 16 << 20;

/// Raw bytes as a layer blob: decompressed if they start with gzip/zstd magic, as a pull would, then
/// applied into a sentinel-watched directory.
pub fn layer_tar(data: &[u8]) {
    let sentinel = Sentinel::new();
    let mut tar = Vec::new();
    match rimg::layer::decompress_auto(None, data) {
        Ok((rimg::layer::Compression::None, _)) => {
            tar.extend_from_slice(data);
            // Mutated headers almost never have a valid checksum, and the tar reader stops at the first
            // bad one; fix them so the fuzzer's mutations reach `apply` itself.
            fix_checksums(&mut tar);
        }
        Ok((_, r)) => {
            let _ = r.take(MAX_DECOMPRESSED).read_to_end(&mut tar);
        }
        Err(_) => return,
    }
    apply_checked(&sentinel, &tar, Vec::new(), &tar);
}

/// Recompute the checksum of every header block of an uncompressed tar, following the size fields from
/// one header to the next as a tar reader does.
pub fn fix_checksums(tar: &mut [u8]) {
    let mut off = 0usize;
    while tar.len().saturating_sub(off) >= 512 {
        let block = &mut tar[off..off + 512];
        if block.iter().all(|&b| b == 0) {
            off += 512;
            continue;
        }
        let size = tar::Header::from_byte_slice(block).entry_size().unwrap_or(0);
        block[148..156].copy_from_slice(b"        ");
        let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
        octal(&mut block[148..155], sum);
        block[155] = b' ';
        let data = usize::try_from(size.div_ceil(512).saturating_mul(512)).unwrap_or(usize::MAX);
        off = off.saturating_add(512).saturating_add(data);
    }
}

/// A structured layer (and optionally a lower layer under it): built into tars aimed at the sentinel,
/// applied, and checked. Applying `upper` must leave `lower` untouched too.
pub fn layer_entries(lower: &[Entry], upper: &[Entry]) {
    let sentinel = Sentinel::new();
    if lower.is_empty() {
        let tar = build_tar(upper, &sentinel.root);
        apply_checked(&sentinel, &tar, Vec::new(), &tar);
        return;
    }
    // The lower layer is applied into `S/d/lower`, under the same watch.
    let lower_dir = sentinel.lower();
    let lower_tar = build_tar(lower, &sentinel.root);
    watch(&sentinel, &lower_dir, &lower_tar, || {
        let _ = apply(lower_tar.as_slice(), &lower_dir, &ApplyOptions::default());
    });
    let upper_tar = build_tar(upper, &sentinel.root);
    let input = [lower_tar.as_slice(), upper_tar.as_slice()].concat();
    apply_checked(&sentinel, &upper_tar, vec![lower_dir], &input);
}
