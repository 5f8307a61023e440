//! Deep images (issue 20, item 2): images of more layers than one mount(2) string holds (~45 store paths)
//! and than kernel overlayfs stacks (500) flatten with `unpack`, `export` and a build's `COPY --from`, run
//! on the FUSE driver, and the kernel overlay driver refuses them with a clear error. The images come from
//! `image-fixtures/deep-image.py` at test time (one tiny file per layer, whiteouts, opaque directories, a
//! directory replaced by a file, a hard link); `umoci unpack` of the same layout is the oracle.

mod common;

use common::{assert_ok, repo_root, rimg_cmd, run_tool, TempRoot};
use rimg::layer::tree::{diff_trees, snapshot, CompareOptions};
use std::path::{Path, PathBuf};

/// A deep image's OCI layout (`layers` layers, tag `deep`) in `dir`/layout, and its tar for `rimg load`.
fn deep_layout(dir: &Path, layers: usize) -> (PathBuf, PathBuf) {
    let layout = dir.join("layout");
    let gen = repo_root().join("image-fixtures/deep-image.py");
    let n = layers.to_string();
    run_tool(
        "python3",
        &[gen.to_str().unwrap(), layout.to_str().unwrap(), "--layers", &n, "--tag", "deep", "--gzip"],
    );
    let tar = dir.join("layout.tar");
    run_tool("tar", &["-C", layout.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."]);
    (layout, tar)
}

/// `rimg load` the layout tar and return the image ID it printed.
fn load(root: &TempRoot, tar: &Path) -> String {
    let text = assert_ok(&root.rimg(&["load", "-i", tar.to_str().unwrap()]), "load");
    let id = text.lines().find_map(|l| l.strip_prefix("Loaded image ID: "));
    id.unwrap_or_else(|| panic!("load printed no image ID: {text}")).trim().to_string()
}

/// `umoci unpack` of the layout's `deep` tag: the reference rootfs.
fn umoci_rootfs(dir: &Path, layout: &Path) -> PathBuf {
    let bundle = dir.join("umoci");
    run_tool(
        "umoci",
        &["unpack", "--image", &format!("{}:deep", layout.display()), bundle.to_str().unwrap()],
    );
    bundle.join("rootfs")
}

fn assert_same_tree(ours: &Path, reference: &Path, what: &str) {
    let diffs =
        diff_trees(&snapshot(ours).unwrap(), &snapshot(reference).unwrap(), &CompareOptions::default());
    assert!(diffs.is_empty(), "{what} differs from umoci unpack:\n{}", diffs.join("\n"));
}

/// What a container of the image sees, printed by busybox inside it; `expected` computes the same from a
/// rootfs on the host.
/// Paths relative to the rootfs: the container runs it in `/`, the reference in the unpacked tree.
const PROBE: &str =
    "cat top swap; ls layers | wc -l; ls opq deep/a/b/c | md5sum; test -e gone || echo no-gone";

fn expected_probe(rootfs: &Path) -> String {
    let out =
        std::process::Command::new("sh").arg("-c").arg(PROBE).current_dir(rootfs).output().expect("run sh");
    assert!(out.status.success(), "probe on the reference tree failed");
    String::from_utf8(out.stdout).unwrap().replace(' ', "")
}

fn probe_in_container(root: &TempRoot, id: &str, driver: &str) -> std::process::Output {
    rimg_cmd(root.path())
        .args(["run", "--rm", "--storage-driver", driver, id, "sh", "-c", &format!("cd / && {PROBE}")])
        .output()
        .unwrap()
}

#[test]
fn image_of_600_layers_runs_on_fuse_is_refused_by_kernel_overlay_and_flattens() {
    let work = tempfile::tempdir().unwrap();
    let (layout, tar) = deep_layout(work.path(), 600);
    let root = TempRoot::new();
    let id = load(&root, &tar);
    let reference = umoci_rootfs(work.path(), &layout);

    // The FUSE driver runs it and sees the merged tree.
    let out = probe_in_container(&root, &id, "fuse");
    let text = assert_ok(&out, "run --storage-driver fuse on 600 layers");
    assert_eq!(text.replace(' ', ""), expected_probe(&reference));

    // The kernel driver cannot stack 600 lowers: a clear error, exit 125, no container left behind.
    let out = probe_in_container(&root, &id, "overlay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("too many layers for kernel overlayfs (600 > 500); use the fuse driver"), "{err}");
    assert_eq!(assert_ok(&root.rimg(&["ps", "-a", "-q"]), "ps"), "");

    // unpack: two levels of kernel overlays (500 + 100 layers), the same tree as umoci's.
    let ours = work.path().join("unpacked");
    assert_ok(&root.rimg(&["unpack", &id, ours.to_str().unwrap()]), "unpack 600 layers");
    assert_same_tree(&ours, &reference, "rimg unpack of 600 layers");

    // export: one tar of the same tree.
    let exported = work.path().join("export.tar");
    assert_ok(&root.rimg(&["export", "-o", exported.to_str().unwrap(), &id]), "export 600 layers");
    let untarred = work.path().join("untarred");
    std::fs::create_dir(&untarred).unwrap();
    run_tool(
        "tar",
        &["-C", untarred.to_str().unwrap(), "--numeric-owner", "-xpf", exported.to_str().unwrap()],
    );
    assert_same_tree(&untarred, &reference, "rimg export of 600 layers");

    // A build copying from the deep image.
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM scratch\nCOPY --from={id} /layers/ /layers/\n"))
        .unwrap();
    assert_ok(
        &root.rimg(&["build", "-q", "-t", "copied:1", ctx.to_str().unwrap()]),
        "COPY --from 600 layers",
    );
    let copied = work.path().join("copied");
    assert_ok(&root.rimg(&["unpack", "copied:1", copied.to_str().unwrap()]), "unpack the built image");
    assert_same_tree(&copied.join("layers"), &reference.join("layers"), "COPY --from of 600 layers");

    assert!(common::mounts_below(root.path()).is_empty());
}

#[test]
fn image_of_130_layers_unpacks_and_runs_on_kernel_overlay() {
    let work = tempfile::tempdir().unwrap();
    let (layout, tar) = deep_layout(work.path(), 130);
    let root = TempRoot::new();
    let id = load(&root, &tar);
    let reference = umoci_rootfs(work.path(), &layout);
    let ours = work.path().join("unpacked");
    assert_ok(&root.rimg(&["unpack", &id, ours.to_str().unwrap()]), "unpack 130 layers");
    assert_same_tree(&ours, &reference, "rimg unpack of 130 layers");
    for driver in ["overlay", "fuse"] {
        let out = probe_in_container(&root, &id, driver);
        let text = assert_ok(&out, &format!("run --storage-driver {driver} on 130 layers"));
        assert_eq!(text.replace(' ', ""), expected_probe(&reference), "{driver}");
    }
    assert!(common::mounts_below(root.path()).is_empty());
}
