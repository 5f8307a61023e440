//! `rimg pull` against the real CNCF registry, with skopeo and umoci as independent oracles: digests must
//! equal what `skopeo inspect` reports, and every unpacked image must equal `umoci unpack` of the same image
//! (the layers stacked by kernel overlayfs on one side, umoci's flattened rootfs on the other).

mod common;

use common::registry::TestRegistry;
use common::{assert_ok, run_tool, TempRoot};
use rimg::layer::tree::{diff_trees, snapshot, CompareOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn out_str(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn inspect(root: &TempRoot, image: &str) -> Value {
    let out = assert_ok(&root.rimg(&["inspect", image]), "rimg inspect");
    let v: Value = serde_json::from_str(&out).expect("inspect prints JSON");
    v[0].clone()
}

/// A read-only kernel overlayfs mount of layer dirs; unmounted on drop.
struct KernelMount(PathBuf);

impl KernelMount {
    fn new(lowers: &[PathBuf], at: &Path) -> KernelMount {
        std::fs::create_dir_all(at).unwrap();
        let lowerdir = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        let spec = if lowers.len() == 1 {
            // overlayfs needs two layers when read-only; bind the single layer instead.
            run_tool("mount", &["--bind", &lowerdir, &at.display().to_string()]);
            return KernelMount(at.to_path_buf());
        } else {
            format!("lowerdir={lowerdir}")
        };
        run_tool("mount", &["-t", "overlay", "overlay", "-o", &spec, &at.display().to_string()]);
        KernelMount(at.to_path_buf())
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The flattened rootfs of `repo_tag` as umoci unpacks it after skopeo copies it out of the registry.
fn umoci_rootfs(reg: &TestRegistry, repo_tag: &str, work: &Path) -> PathBuf {
    std::fs::create_dir_all(work).unwrap();
    let layout = work.join("oci");
    let bundle = work.join("bundle");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/{repo_tag}", reg.addr),
            &format!("oci:{}:img", layout.display()),
        ],
    );
    run_tool(
        "umoci",
        &["unpack", "--image", &format!("{}:img", layout.display()), &bundle.display().to_string()],
    );
    bundle.join("rootfs")
}

#[test]
fn pulls_match_skopeo_and_umoci() {
    let reg = TestRegistry::start();
    reg.push_fixture("busybox", "library/busybox:latest");
    reg.push_fixture("alpine", "library/alpine:3.20.3");
    reg.push_fixture("debian", "library/debian:bookworm");
    let root = TempRoot::new();
    let work = tempfile::tempdir().unwrap();
    for (name, image) in
        [("busybox", "busybox:latest"), ("alpine", "alpine:3.20.3"), ("debian", "debian:bookworm")]
    {
        let full = format!("{}/library/{image}", reg.addr);
        let out = root.rimg(&["pull", &full]);
        let text = assert_ok(&out, "rimg pull");
        assert!(text.contains("Status: Downloaded newer image"), "{text}");

        // Digests as the registry (via skopeo) sees them.
        let sk = reg.skopeo_inspect(&format!("library/{image}"), false);
        let raw = reg.skopeo_inspect(&format!("library/{image}"), true);
        let ours = inspect(&root, &full);
        assert_eq!(ours["Id"], raw["config"]["digest"], "{name}: image ID is the config digest");
        let repo_digest = ours["RepoDigests"][0].as_str().unwrap_or_default();
        assert!(
            repo_digest.ends_with(sk["Digest"].as_str().unwrap()),
            "{name}: {repo_digest} vs {}",
            sk["Digest"]
        );
        assert_eq!(ours["RootFS"]["Layers"].as_array().map(Vec::len), sk["Layers"].as_array().map(Vec::len));

        // The layers, stacked by the kernel, equal umoci's flattened rootfs.
        let store = rimg::store::Store::open(root.path()).unwrap();
        let rec = store.image(&full).unwrap();
        let merged = work.path().join(format!("{name}-merged"));
        let _m = KernelMount::new(&rec.layer_dirs(&store), &merged);
        let theirs = umoci_rootfs(&reg, &format!("library/{image}"), &work.path().join(name));
        let a = snapshot(&merged).unwrap();
        let b = snapshot(&theirs).unwrap();
        let diffs = diff_trees(&a, &b, &CompareOptions::default());
        assert!(diffs.is_empty(), "{name}: rimg layers differ from umoci unpack:\n{}", diffs.join("\n"));
    }
    // The debian fixture really has whiteouts and an opaque dir in its layers, so the check above covered them.
    let store = rimg::store::Store::open(root.path()).unwrap();
    let rec = store.image(&format!("{}/library/debian:bookworm", reg.addr)).unwrap();
    let mut whiteouts = 0;
    let mut opaque = 0;
    for dir in rec.layer_dirs(&store) {
        let snap = snapshot(&dir).unwrap();
        for info in snap.values() {
            if info.kind == rimg::layer::tree::Kind::Char && info.rdev == Some((0, 0)) {
                whiteouts += 1;
            }
            if info.xattrs.keys().any(|k| k == "trusted.overlay.opaque") {
                opaque += 1;
            }
        }
    }
    assert!(whiteouts > 0 && opaque > 0, "whiteouts {whiteouts}, opaque dirs {opaque}");
}

#[test]
fn centos_resolves_through_the_docker_io_mirror_and_cache_is_offline() {
    let reg = TestRegistry::start();
    reg.push_fixture("centos", "library/centos:latest");
    let root = TempRoot::new();
    let mirror = reg.url();
    let out = root.rimg(&["--registry-mirror", &mirror, "pull", "centos:latest"]);
    let text = assert_ok(&out, "pull centos through mirror");
    assert!(text.trim_end().ends_with("docker.io/library/centos:latest"), "{text}");
    let v = inspect(&root, "centos");
    assert_eq!(v["RepoTags"][0], "centos:latest");
    let label = v["Config"]["Labels"]["io.rimg.fixture.stand-in"].as_str().unwrap_or_default();
    assert!(label.contains("NOT CentOS"), "{v}");
    // Same again: up to date, nothing downloaded.
    let text = assert_ok(&root.rimg(&["--registry-mirror", &mirror, "pull", "centos"]), "second pull");
    assert!(text.contains("Image is up to date"), "{text}");
    // With the registry gone, the cache still answers everything local.
    drop(reg);
    assert_ok(&root.rimg(&["inspect", "centos"]), "inspect offline");
    assert_ok(&root.rimg(&["images"]), "images offline");
}

#[test]
fn bad_references_and_missing_images_fail_cleanly() {
    let reg = TestRegistry::start();
    let root = TempRoot::new();
    for bad in ["UPPER/case", "a@sha256:123", "name:bad tag", ""] {
        let out = root.rimg(&["pull", bad]);
        assert_eq!(out.status.code(), Some(125), "{bad}: {}", out_str(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one-line error for {bad:?}: {err}");
    }
    let out = root.rimg(&["pull", &format!("{}/library/nope:latest", reg.addr)]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("not found") || err.contains("unknown"), "{err}");
    assert_eq!(std::fs::read_dir(root.path().join("blobs/sha256")).unwrap().count(), 0);
}

/// Overwrite a layer blob inside the registry's storage, so the real registry serves bytes that do not
/// match their digest. Returns the blob's digest.
fn corrupt_first_layer(reg: &TestRegistry, repo_tag: &str) -> String {
    let raw = reg.skopeo_inspect(repo_tag, true);
    let digest = raw["layers"][0]["digest"].as_str().unwrap().to_string();
    let hex = digest.trim_start_matches("sha256:");
    let data = reg.storage_dir().join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    digest
}

#[test]
fn corrupt_blob_is_refused_and_nothing_is_stored() {
    let reg = TestRegistry::start();
    reg.push_fixture("busybox", "library/busybox:latest");
    let digest = corrupt_first_layer(&reg, "library/busybox:latest");
    let root = TempRoot::new();
    let out = root.rimg(&["pull", &format!("{}/library/busybox:latest", reg.addr)]);
    assert_ne!(out.status.code(), Some(0), "{}", out_str(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(digest.trim_start_matches("sha256:").get(..12).unwrap_or("")), "{err}");
    // Nothing half-made is visible: no layer directory, no blob under that digest, no ingest leftovers,
    // no image.
    let hex = digest.trim_start_matches("sha256:");
    assert!(!root.path().join("blobs/sha256").join(hex).exists());
    assert_eq!(std::fs::read_dir(root.path().join("layers/sha256")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(root.path().join("layers/tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(root.path().join("ingest")).unwrap().count(), 0);
    let images = assert_ok(&root.rimg(&["images", "-q"]), "images");
    assert!(images.trim().is_empty(), "{images}");
}

#[test]
fn killed_pull_resumes_and_leaves_a_consistent_cache() {
    let reg = TestRegistry::start();
    push_big_uncompressed_image(&reg, "library/big", 192 << 20);
    let root = TempRoot::new();
    let image = format!("{}/library/big:latest", reg.addr);
    let mut child = common::rimg_cmd(root.path())
        .args(["pull", &image])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until part of the layer is on disk, then kill -9 mid-download.
    let ingest = root.path().join("ingest");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut partial = 0;
    while std::time::Instant::now() < deadline {
        partial = std::fs::read_dir(&ingest)
            .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).max().unwrap_or(0))
            .unwrap_or(0);
        if partial > 1 << 20 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            panic!("pull ended ({status}) before it could be interrupted, {partial} bytes seen: {err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(partial > 0, "the pull finished before it could be interrupted; the fixture is too small");
    // Killed mid-layer: no image, no committed layer; the partial blob stays for resuming.
    assert!(assert_ok(&root.rimg(&["images", "-q"]), "images").trim().is_empty());
    assert_eq!(std::fs::read_dir(root.path().join("layers/sha256")).unwrap().count(), 0);
    let out = root.rimg(&["pull", &image]);
    let text = assert_ok(&out, "resumed pull");
    assert!(text.contains("Resuming"), "second pull should resume with a Range request:\n{text}");
    assert_eq!(std::fs::read_dir(&ingest).unwrap().count(), 0, "ingest is empty after the pull");
    let v = inspect(&root, &image);
    assert_eq!(v["RootFS"]["Layers"].as_array().map(Vec::len), Some(1));
}

#[test]
fn concurrent_pulls_share_one_copy() {
    let reg = TestRegistry::start();
    reg.push_fixture("debian", "library/debian:bookworm");
    let root = TempRoot::new();
    let image = format!("{}/library/debian:bookworm", reg.addr);
    let children: Vec<_> = (0..8)
        .map(|_| {
            common::rimg_cmd(root.path())
                .args(["pull", "-q", &image])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_ok(&out, "concurrent pull");
    }
    let raw = reg.skopeo_inspect("library/debian:bookworm", true);
    let layers = raw["layers"].as_array().unwrap().len();
    assert_eq!(std::fs::read_dir(root.path().join("layers/sha256")).unwrap().count(), layers);
    // manifest + config + layers
    assert_eq!(std::fs::read_dir(root.path().join("blobs/sha256")).unwrap().count(), layers + 2);
    assert_eq!(std::fs::read_dir(root.path().join("layers/tmp")).unwrap().count(), 0);
    let index: Value =
        serde_json::from_slice(&std::fs::read(root.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1), "{index}");
}

#[test]
fn save_load_round_trip_and_skopeo_reads_the_archive() {
    let reg = TestRegistry::start();
    reg.push_fixture("alpine", "library/alpine:3.20.3");
    let root = TempRoot::new();
    let image = format!("{}/library/alpine:3.20.3", reg.addr);
    assert_ok(&root.rimg(&["pull", "-q", &image]), "pull");
    let before = inspect(&root, &image);
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("alpine.tar");
    assert_ok(&root.rimg(&["save", "-o", tar.to_str().unwrap(), &image]), "save");

    let other = TempRoot::new();
    let text = assert_ok(&other.rimg(&["load", "-i", tar.to_str().unwrap()]), "load");
    assert!(text.contains("Loaded image:"), "{text}");
    let after = inspect(&other, &image);
    assert_eq!(before["Id"], after["Id"]);
    assert_eq!(before["RootFS"], after["RootFS"]);

    // An independent reader: skopeo takes the docker-archive and the OCI layout inside it.
    let sk = run_tool("skopeo", &["inspect", &format!("docker-archive:{}", tar.display())]);
    let sk: Value = serde_json::from_str(&sk).unwrap();
    assert_eq!(sk["Layers"].as_array().map(Vec::len), Some(1));
    // And a plain OCI layout (what `skopeo copy … oci:` writes) loads too, after tarring it up.
    let layout = work.path().join("layout");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{image}"),
            &format!("oci:{}:3.20.3", layout.display()),
        ],
    );
    let oci_tar = work.path().join("layout.tar");
    run_tool("tar", &["-C", layout.to_str().unwrap(), "-cf", oci_tar.to_str().unwrap(), "."]);
    let third = TempRoot::new();
    let text = assert_ok(&third.rimg(&["load", "-i", oci_tar.to_str().unwrap()]), "load oci layout");
    assert!(text.contains("Loaded image"), "{text}");
}

#[test]
fn tag_rmi_and_prune_reclaim_space() {
    let reg = TestRegistry::start();
    reg.push_fixture("busybox", "library/busybox:latest");
    let root = TempRoot::new();
    let image = format!("{}/library/busybox:latest", reg.addr);
    assert_ok(&root.rimg(&["pull", "-q", &image]), "pull");
    assert_ok(&root.rimg(&["tag", &image, "mybox:1"]), "tag");
    let ids = assert_ok(&root.rimg(&["images", "-q"]), "images");
    assert_eq!(ids.lines().count(), 1, "two names, one image: {ids}");
    let text = assert_ok(&root.rimg(&["rmi", "mybox:1"]), "rmi one name");
    assert!(text.contains("Untagged: mybox:1") && !text.contains("Deleted"), "{text}");
    let text = assert_ok(&root.rimg(&["rmi", &image]), "rmi last name");
    assert!(text.contains("Deleted: sha256:"), "{text}");
    assert_eq!(std::fs::read_dir(root.path().join("blobs/sha256")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(root.path().join("layers/sha256")).unwrap().count(), 0);
    let out = root.rimg(&["rmi", "mybox:1"]);
    assert_ne!(out.status.code(), Some(0));
}

/// Push a one-layer image whose layer is an uncompressed tar holding `size` bytes of pseudo-random data,
/// straight through the registry's HTTP API (the blob is too big to be worth gzipping in a test). Big and
/// incompressible so a pull can be interrupted half-way.
fn push_big_uncompressed_image(reg: &TestRegistry, repo: &str, size: usize) {
    use sha2::{Digest as _, Sha256};
    let mut data = vec![0u8; size];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let mut tar = tar::Builder::new(Vec::with_capacity(size + 4096));
    let mut h = tar::Header::new_ustar();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, "big", data.as_slice()).unwrap();
    let layer = tar.into_inner().unwrap();
    let hex = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let layer_digest = hex(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/big"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string()
    .into_bytes();
    let config_digest = hex(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string();
    let http = reqwest::blocking::Client::new();
    let base = format!("http://{}/v2/{repo}", reg.addr);
    for (blob, digest) in [(&layer, &layer_digest), (&config, &config_digest)] {
        let start = http.post(format!("{base}/blobs/uploads/")).send().unwrap();
        assert_eq!(start.status().as_u16(), 202);
        let loc = start.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with("http") { loc } else { format!("http://{}{loc}", reg.addr) };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = http.put(format!("{loc}{sep}digest={digest}")).body(blob.clone()).send().unwrap();
        assert_eq!(put.status().as_u16(), 201, "{:?}", put.text());
    }
    let put = http
        .put(format!("{base}/manifests/latest"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
}

#[test]
fn edge_image_matches_umoci() {
    let reg = TestRegistry::start();
    reg.push_fixture("edge:latest", "rimg/edge:latest");
    let root = TempRoot::new();
    let image = format!("{}/rimg/edge:latest", reg.addr);
    assert_ok(&root.rimg(&["pull", "-q", &image]), "pull edge");
    let store = rimg::store::Store::open(root.path()).unwrap();
    let rec = store.image(&image).unwrap();
    let work = tempfile::tempdir().unwrap();
    let merged = work.path().join("merged");
    let _m = KernelMount::new(&rec.layer_dirs(&store), &merged);
    let theirs = umoci_rootfs(&reg, "rimg/edge:latest", &work.path().join("umoci"));
    let diffs =
        diff_trees(&snapshot(&merged).unwrap(), &snapshot(&theirs).unwrap(), &CompareOptions::default());
    assert!(diffs.is_empty(), "edge image differs from umoci unpack:\n{}", diffs.join("\n"));
}

#[test]
fn hostile_images_are_refused_and_write_nothing_outside() {
    let outside = Path::new("/tmp/rimg-hostile-outside");
    let layout = common::fixture_layout("hostile");
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let cases: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_string))
        .collect();
    assert!(cases.iter().filter(|c| c.starts_with("refuse-")).count() >= 10, "{cases:?}");
    let reg = TestRegistry::start();
    let root = TempRoot::new();
    let _ = std::fs::remove_dir_all(outside);
    for case in &cases {
        reg.push_fixture(&format!("hostile:{case}"), &format!("rimg/hostile:{case}"));
        let out = root.rimg(&["pull", "-q", &format!("{}/rimg/hostile:{case}", reg.addr)]);
        if case.starts_with("refuse-") {
            assert_ne!(out.status.code(), Some(0), "{case} was accepted: {}", out_str(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim().lines().count(), 1, "{case}: one-line error expected: {err}");
        } else {
            assert_ok(&out, case);
        }
        assert!(!outside.exists(), "{case} wrote outside its layer: {}", outside.display());
        assert_eq!(std::fs::read_dir(root.path().join("layers/tmp")).unwrap().count(), 0, "{case}");
    }
}
