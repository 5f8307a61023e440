//! `rimg load` of the archives other tools write (issue 20, item 7; issue 15): podman's docker-archive (layer
//! tars reached through symlinks) and oci-archive, skopeo's docker-archive, the classic `docker save`
//! layout (`<id>/layer.tar`, `<id>/json`, `<id>/VERSION`, `repositories`, no `index.json`; a repeated
//! layer as a symlink to the first), and all of them piped through gzip, zstd or xz. Each loaded image
//! must unpack to the tree `umoci unpack` makes of the original: for the classic layout the `edge`
//! fixture (every entry type, whiteouts, opaque directories, a hard link into a lower layer), for podman
//! and skopeo a 20-layer image of `image-fixtures/deep-image.py` (whiteouts, opaque directories, a
//! directory replaced by a file, a hard link; podman 4.3 refuses the edge fixture's repeated paths).

mod common;

use common::{assert_ok, fixture_layout, repo_root, run_tool, TempRoot};
use rimg::layer::tree::{diff_trees, snapshot, CompareOptions};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `umoci unpack` of `layout:tag` into `dir`/umoci: the reference rootfs.
fn umoci_rootfs(dir: &Path, layout: &Path, tag: &str) -> PathBuf {
    let bundle = dir.join("umoci");
    let image = format!("{}:{tag}", layout.display());
    run_tool("umoci", &["unpack", "--image", &image, bundle.to_str().unwrap()]);
    bundle.join("rootfs")
}

/// Load `archive` into a fresh cache, check what `load` printed, and compare `rimg unpack IMAGE` with
/// `reference`. `image` is the name the archive carries. Returns the cache.
fn load_and_compare(archive: &Path, image: &str, reference: &Path, what: &str) -> TempRoot {
    let root = TempRoot::new();
    let text = assert_ok(&root.rimg(&["load", "-i", archive.to_str().unwrap()]), &format!("load {what}"));
    let shown = image.strip_prefix("docker.io/library/").unwrap_or(image);
    assert!(text.contains(&format!("Loaded image: {shown}")), "{what}: {text}");
    let work = tempfile::tempdir().unwrap();
    let ours = work.path().join("rootfs");
    assert_ok(&root.rimg(&["unpack", image, ours.to_str().unwrap()]), &format!("unpack {what}"));
    let diffs =
        diff_trees(&snapshot(&ours).unwrap(), &snapshot(reference).unwrap(), &CompareOptions::default());
    assert!(diffs.is_empty(), "{what}: rimg unpack differs from umoci unpack:\n{}", diffs.join("\n"));
    root
}

/// podman with storage of its own (vfs: no mounts to leave behind), so the host's is untouched.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman { dir: tempfile::Builder::new().prefix("rimg-test-podman-").tempdir().unwrap() }
    }

    fn run(&self, args: &[&str]) -> String {
        let d = self.dir.path();
        let mut all: Vec<String> = ["--root", "root", "--runroot", "run", "--tmpdir", "tmp"]
            .chunks(2)
            .flat_map(|kv| [kv[0].to_string(), d.join(kv[1]).display().to_string()])
            .collect();
        all.extend(["--storage-driver", "vfs", "--events-backend", "none"].map(String::from));
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run_tool("podman", &all)
    }
}

#[test]
fn podman_and_skopeo_archives_load_as_umoci_unpacks_the_image() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let gen = repo_root().join("image-fixtures/deep-image.py");
    let gen_args =
        [gen.to_str().unwrap(), layout.to_str().unwrap(), "--layers", "20", "--tag", "deep", "--gzip"];
    run_tool("python3", &gen_args);
    let reference = umoci_rootfs(work.path(), &layout, "deep");
    let image = "rimg.test/deep:20";
    let podman = Podman::new();
    let layout_tar = work.path().join("layout.tar");
    run_tool("tar", &["-C", layout.to_str().unwrap(), "-cf", layout_tar.to_str().unwrap(), "."]);
    podman.run(&["load", "-q", "-i", layout_tar.to_str().unwrap()]);
    podman.run(&["tag", "localhost/deep:latest", image]);

    let docker_archive = work.path().join("podman-docker.tar");
    podman.run(&["save", "-q", "--format", "docker-archive", "-o", docker_archive.to_str().unwrap(), image]);
    let listing = run_tool("tar", &["tvf", docker_archive.to_str().unwrap()]);
    assert!(listing.lines().any(|l| l.starts_with('l')), "podman wrote no symlinks:\n{listing}");
    let root = load_and_compare(&docker_archive, image, &reference, "podman docker-archive");
    let out = root.rimg(&["run", "--rm", image, "sh", "-c", "cat /top; ls /layers | wc -l"]);
    let shown: Vec<String> = assert_ok(&out, "run").split_whitespace().map(String::from).collect();
    let count = std::fs::read_dir(reference.join("layers")).unwrap().count().to_string();
    assert_eq!(shown, ["top", &count], "rimg run of the loaded image");

    let oci_archive = work.path().join("podman-oci.tar");
    podman.run(&["save", "-q", "--format", "oci-archive", "-o", oci_archive.to_str().unwrap(), image]);
    load_and_compare(&oci_archive, image, &reference, "podman oci-archive");

    let skopeo_archive = work.path().join("skopeo-docker.tar");
    let dest = format!("docker-archive:{}:{image}", skopeo_archive.display());
    run_tool("skopeo", &["copy", "-q", &format!("oci:{}:deep", layout.display()), &dest]);
    load_and_compare(&skopeo_archive, image, &reference, "skopeo docker-archive");

    // `podman save | gzip`, as users pipe it.
    let gz = compress(&docker_archive, "gzip");
    load_and_compare(&gz, image, &reference, "gzip-compressed podman docker-archive");
}

/// `tool -c FILE > FILE.tool`.
fn compress(file: &Path, tool: &str) -> PathBuf {
    let out = file.with_extension(format!("tar.{tool}"));
    let f = std::fs::File::create(&out).unwrap();
    let st = Command::new(tool).arg("-c").arg(file).stdout(f).stderr(Stdio::inherit()).status().unwrap();
    assert!(st.success(), "{tool} failed");
    out
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The blob `digest` (`sha256:…`) of an OCI layout.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap()
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, name, data).unwrap();
}

fn add_symlink(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_mtime(1_700_000_000);
    b.append_link(&mut h, name, target).unwrap();
}

/// The edge image in the classic `docker save` layout (docker < 25), written the way docker wrote it: one
/// directory per layer with `VERSION`, `json` and an uncompressed `layer.tar`, the config as `<hex>.json`,
/// `manifest.json` and `repositories`. With `repeat`, two empty layers are added on top; the second one's
/// `layer.tar` is a symlink to the first one's, as docker links a layer it already wrote.
fn classic_docker_archive(name: &str, tag: &str, repeat: bool) -> Vec<u8> {
    let layout = fixture_layout("edge");
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&blob(&layout, index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let mut config: Value =
        serde_json::from_slice(&blob(&layout, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let mut layers: Vec<Vec<u8>> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let mut raw = Vec::new();
            let gz = blob(&layout, l["digest"].as_str().unwrap());
            flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
            raw
        })
        .collect();
    let empty = vec![0u8; 1024]; // a tar of no entries: its two end-of-archive blocks
    if repeat {
        layers.extend([empty.clone(), empty]);
    }
    let diff_ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", sha256_hex(l))).collect();
    config["rootfs"]["diff_ids"] = json!(diff_ids);
    if let Some(h) = config["history"].as_array_mut().filter(|_| repeat) {
        h.extend([json!({"created_by": "RUN true"}), json!({"created_by": "RUN true"})]);
    }
    let config_raw = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", sha256_hex(&config_raw));

    let mut b = tar::Builder::new(Vec::new());
    let mut parent = String::new();
    let mut paths = Vec::new();
    let mut written: Vec<(String, String)> = Vec::new(); // (diff_id, path of its layer.tar)
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let id = sha256_hex(format!("{parent} {diff_id}").as_bytes());
        let path = format!("{id}/layer.tar");
        add_file(&mut b, &format!("{id}/VERSION"), b"1.0");
        let v1 = json!({"id": id, "parent": parent, "created": "2024-06-01T00:00:00Z", "os": "linux"});
        add_file(&mut b, &format!("{id}/json"), &serde_json::to_vec(&v1).unwrap());
        match written.iter().find(|(d, _)| d == diff_id) {
            Some((_, first)) => add_symlink(&mut b, &path, &format!("../{first}")),
            None => add_file(&mut b, &path, layer),
        }
        written.push((diff_id.clone(), path.clone()));
        paths.push(path);
        parent = id;
    }
    add_file(&mut b, &config_name, &config_raw);
    let legacy = json!([{"Config": config_name, "RepoTags": [format!("{name}:{tag}")], "Layers": paths}]);
    add_file(&mut b, "manifest.json", &serde_json::to_vec(&legacy).unwrap());
    add_file(&mut b, "repositories", &serde_json::to_vec(&json!({ name: { tag: parent } })).unwrap());
    b.into_inner().unwrap()
}

#[test]
fn classic_docker_save_layout_loads_plain_and_compressed() {
    let work = tempfile::tempdir().unwrap();
    let reference = umoci_rootfs(work.path(), &fixture_layout("edge"), "latest");
    let image = "rimg.test/classic:1";
    let archive = work.path().join("classic.tar");
    std::fs::write(&archive, classic_docker_archive("rimg.test/classic", "1", false)).unwrap();
    load_and_compare(&archive, image, &reference, "classic docker save");
    // The same layer twice: the second `layer.tar` is a symlink, and the layer is in the stack twice.
    std::fs::write(&archive, classic_docker_archive("rimg.test/classic", "1", true)).unwrap();
    let root = load_and_compare(&archive, image, &reference, "classic docker save with a repeated layer");
    for driver in ["overlay", "fuse"] {
        // The image has no programs: 127 (not found) shows the rootfs with the layer twice was mounted.
        let out = root.rimg(&["run", "--rm", "--storage-driver", driver, image, "/no-such-program"]);
        assert_eq!(out.status.code(), Some(127), "{driver}: {}", String::from_utf8_lossy(&out.stderr));
    }
    for tool in ["gzip", "zstd", "xz"] {
        let packed = compress(&archive, tool);
        load_and_compare(&packed, image, &reference, &format!("{tool}-compressed classic docker save"));
    }
}

#[test]
fn load_refuses_what_is_no_archive_with_one_line() {
    let work = tempfile::tempdir().unwrap();
    let root = TempRoot::new();
    let junk = work.path().join("junk");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let bz = work.path().join("junk.bz2");
    let st = Command::new("bzip2").arg("-c").arg(&junk).stdout(std::fs::File::create(&bz).unwrap()).status();
    assert!(st.unwrap().success());
    // A docker-archive whose config is a symlink out of the archive (CVE-2014-6407's shape).
    let mut b = tar::Builder::new(Vec::new());
    add_symlink(&mut b, "cfg.json", "../../../../etc/hostname");
    add_file(&mut b, "manifest.json", br#"[{"Config":"cfg.json","RepoTags":["x:1"],"Layers":[]}]"#);
    let escape = work.path().join("escape.tar");
    std::fs::write(&escape, b.into_inner().unwrap()).unwrap();
    for (file, says) in [
        (&junk, "not a tar archive"),
        (&bz, "bzip2-compressed archives are not supported"),
        (&escape, "escapes the archive"),
    ] {
        let out = root.rimg(&["load", "-i", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert!(err.contains(says) && err.trim().lines().count() == 1, "{err}");
    }
    assert_eq!(assert_ok(&root.rimg(&["images", "-q"]), "images"), "");
}
