//! Interop of the store with registries (issue 20, items 8 and 9): an image pulled by digest is listed
//! under its repository (`repo <none>`, as podman and docker show it) and is not dangling; `push` mounts
//! blobs from every repository of the registry they were pulled from or pushed to (containerd's
//! distribution-source labels), so re-pushing under another name uploads no blob bytes; foreign
//! (non-distributable) layers are fetched from the registry like any blob, and from their `urls` only
//! with `--allow-foreign-urls`.

#[path = "store_support.rs"]
mod store_support;

use store_support::support::{assert_ok, TempRoot, TestRegistry};
use store_support::{fixture_layers, push_image};

/// The `images` rows (after the header) as whitespace-split columns.
fn image_rows(root: &TempRoot, args: &[&str]) -> Vec<Vec<String>> {
    let mut argv = vec!["images"];
    argv.extend_from_slice(args);
    let out = assert_ok(&root.rimg(&argv), "images");
    out.lines().skip(1).map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

#[test]
fn image_pulled_by_digest_lists_its_repository() {
    let reg = TestRegistry::start();
    let digest = push_image(&reg.addr, "lib/bydigest", "1", &fixture_layers("busybox"), false);
    let root = TempRoot::new();
    let repo = format!("{}/lib/bydigest", reg.addr);
    assert_ok(&root.rimg(&["pull", "-q", &format!("{repo}@{digest}")]), "pull by digest");
    let rows = image_rows(&root, &[]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0][0].as_str(), rows[0][1].as_str()), (repo.as_str(), "<none>"), "{rows:?}");
    assert_eq!(image_rows(&root, &[&repo]).len(), 1, "the repository filter finds it");
    // Not dangling: a plain prune keeps it; it runs by its digest reference.
    assert_ok(&root.rimg(&["image", "prune"]), "prune");
    assert_eq!(image_rows(&root, &[]).len(), 1, "prune removed an image pulled by digest");
    let inspect: serde_json::Value =
        serde_json::from_str(&assert_ok(&root.rimg(&["inspect", &format!("{repo}@{digest}")]), "inspect"))
            .unwrap();
    assert_eq!(inspect[0]["RepoTags"], serde_json::json!([]), "a digest is not a tag");
    assert_eq!(inspect[0]["RepoDigests"], serde_json::json!([format!("{repo}@{digest}")]));
    // Once a tag names the same image, the tag is what is listed.
    assert_ok(&root.rimg(&["pull", "-q", &format!("{repo}:1")]), "pull by tag");
    let rows = image_rows(&root, &[]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], "1", "{rows:?}");
    assert_ok(&root.rimg(&["rmi", &format!("{repo}@{digest}")]), "rmi by digest");
    assert!(image_rows(&root, &[]).is_empty(), "rmi by digest removed the image");
}
