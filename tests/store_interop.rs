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

/// Bytes of blob uploads (POST/PATCH/PUT under `/blobs/uploads/`) the proxy saw.
fn uploaded_bytes(log: &[store_support::Logged]) -> u64 {
    log.iter().filter(|l| l.path.contains("/blobs/uploads/")).map(|l| l.body_bytes).sum()
}

#[test]
fn push_mounts_blobs_from_where_they_were_pulled_or_pushed() {
    let reg = TestRegistry::start();
    let base_layers = fixture_layers("busybox");
    push_image(&reg.addr, "lib/busybox", "1", &base_layers, false);
    let proxy = store_support::Proxy::start(&reg.addr);
    let root = TempRoot::new();
    let busybox = format!("{}/lib/busybox:1", proxy.addr);
    assert_ok(&root.rimg(&["pull", "-q", &busybox]), "pull busybox");
    // A local image on that base: no repository of the registry is named after it.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("hello.txt"), "hello\n").unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {busybox}\nCOPY hello.txt /hello.txt\n"))
        .unwrap();
    assert_ok(&root.rimg(&["build", "-q", "-t", "app:1", ctx.path().to_str().unwrap()]), "build");

    // First push: the base layer is mounted from lib/busybox (where it was pulled from); only the new
    // layer and the config travel.
    proxy.clear_log();
    let a = format!("{}/team-a/app:1", proxy.addr);
    assert_ok(&root.rimg(&["tag", "app:1", &a]), "tag a");
    assert_ok(&root.rimg(&["push", "-q", &a]), "push a");
    let base_size = base_layers[0].blob.len() as u64;
    let sent = uploaded_bytes(&proxy.log());
    assert!(
        sent < base_size,
        "the base layer ({base_size} bytes) was uploaded: {sent} bytes sent; {:?}",
        proxy.log()
    );

    // Second push under another repository: every blob is mounted from team-a, no byte is uploaded.
    proxy.clear_log();
    let b = format!("{}/team-b/app:1", proxy.addr);
    assert_ok(&root.rimg(&["tag", "app:1", &b]), "tag b");
    let out = assert_ok(&root.rimg(&["push", &b]), "push b");
    let log = proxy.log();
    assert_eq!(uploaded_bytes(&log), 0, "blob bytes uploaded on the second push: {log:?}\n{out}");
    let mounted =
        log.iter().filter(|l| l.method == "POST" && l.path.contains("mount=") && l.status == 201).count();
    assert_eq!(mounted, 3, "two layers and the config mounted: {log:?}");
    // The registry holds a complete image under team-b: pull it into a fresh store and run it.
    let fresh = TempRoot::new();
    assert_ok(&fresh.rimg(&["pull", "-q", &b]), "pull team-b");
    let text = assert_ok(&fresh.rimg(&["run", "--rm", &b, "cat", "/hello.txt"]), "run team-b");
    assert_eq!(text, "hello\n");
}
