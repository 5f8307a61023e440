//! Interop of the store with registries (issue 20, items 8 and 9): an image pulled by digest is listed
//! under its repository (`repo <none>`, as podman and docker show it) and is not dangling; `push` mounts
//! blobs from every repository of the registry they were pulled from or pushed to (containerd's
//! distribution-source labels), so re-pushing under another name uploads no blob bytes; foreign
//! (non-distributable) layers are fetched from the registry like any blob, and from their `urls` only
//! with `--allow-foreign-urls`.

mod common;

use common::registry::TestRegistry;
use common::store::{fixture_layers, push_image};
use common::{assert_ok, TempRoot};

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
fn uploaded_bytes(log: &[common::store::Logged]) -> u64 {
    log.iter().filter(|l| l.path.contains("/blobs/uploads/")).map(|l| l.body_bytes).sum()
}

#[test]
fn push_mounts_blobs_from_where_they_were_pulled_or_pushed() {
    let reg = TestRegistry::start();
    let base_layers = fixture_layers("busybox");
    push_image(&reg.addr, "lib/busybox", "1", &base_layers, false);
    let proxy = common::store::Proxy::start(&reg.addr);
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

/// distribution refuses manifests with foreign-layer URLs unless its config allows them; this top-level
/// section (inserted verbatim by the harness) allows loopback http URLs.
const ALLOW_URLS: &str =
    "validation:\n  manifests:\n    urls:\n      allow:\n        - ^http://127\\.0\\.0\\.1[:/]\n";

const DOCKER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const OCI_NONDISTRIBUTABLE: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

/// busybox's layer marked foreign (as Windows base layers are) plus an ordinary layer on top.
fn foreign_image(
    media_type: &str,
    urls: Vec<String>,
    upload: bool,
    docker: bool,
) -> Vec<common::store::Layer> {
    let mut base = fixture_layers("busybox").remove(0);
    base.media_type = media_type.to_string();
    base.urls = urls;
    base.upload = upload;
    let mut own = common::store::layer(&[("own.txt", 0o644, b"own layer\n")]);
    if docker {
        own.media_type = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
    }
    vec![base, own]
}

#[test]
fn foreign_layers_served_by_the_registry_are_pulled_from_it() {
    let reg = TestRegistry::builder().auth_yaml(ALLOW_URLS).start();
    // The urls lead nowhere: the registry has the blob, so nothing else may be contacted.
    let nowhere = vec!["http://127.0.0.1:9/never-contacted.tar.gz".to_string()];
    push_image(
        &reg.addr,
        "lib/foreign",
        "docker",
        &foreign_image(DOCKER_FOREIGN, nowhere.clone(), true, true),
        true,
    );
    push_image(
        &reg.addr,
        "lib/foreign",
        "oci",
        &foreign_image(OCI_NONDISTRIBUTABLE, nowhere, true, false),
        false,
    );
    let root = TempRoot::new();
    for tag in ["docker", "oci"] {
        let image = format!("{}/lib/foreign:{tag}", reg.addr);
        assert_ok(&root.rimg(&["pull", "-q", &image]), &format!("pull {tag}"));
        let text = assert_ok(&root.rimg(&["run", "--rm", &image, "cat", "/own.txt"]), "run");
        assert_eq!(text, "own layer\n");
    }
}

#[test]
fn foreign_layer_urls_are_followed_only_when_allowed() {
    // The image's registry requires a login and lacks the foreign blob; another registry (behind a
    // logging proxy) serves it at the URL the manifest names.
    let reg = TestRegistry::start_with_htpasswd("fl", "fl-pass");
    let open = TestRegistry::builder().storage(reg.storage_dir()).auth_yaml(ALLOW_URLS).start();
    let elsewhere = TestRegistry::start();
    let proxy = common::store::Proxy::start(&elsewhere.addr);
    let layers = fixture_layers("busybox");
    push_image(&elsewhere.addr, "blobs/foreign", "1", &layers, false);
    let url = format!("http://{}/v2/blobs/foreign/blobs/{}", proxy.addr, layers[0].digest());
    push_image(&open.addr, "lib/foreign", "1", &foreign_image(DOCKER_FOREIGN, vec![url], false, true), true);
    // A second image whose url serves other bytes: verified like any blob, so refused.
    let other = common::store::layer(&[("x", 0o644, b"not the layer\n")]);
    push_image(&elsewhere.addr, "blobs/other", "1", std::slice::from_ref(&other), false);
    let wrong = format!("http://{}/v2/blobs/other/blobs/{}", proxy.addr, other.digest());
    push_image(
        &open.addr,
        "lib/tampered",
        "1",
        &foreign_image(DOCKER_FOREIGN, vec![wrong], false, true),
        true,
    );

    let root = TempRoot::new();
    let docker_config = tempfile::tempdir().unwrap();
    let rimg = |args: &[&str]| {
        common::rimg_cmd(root.path()).env("DOCKER_CONFIG", docker_config.path()).args(args).output().unwrap()
    };
    assert_ok(&rimg(&["login", "-u", "fl", "-p", "fl-pass", &reg.addr]), "login");
    let image = format!("{}/lib/foreign:1", reg.addr);

    let out = rimg(&["pull", "-q", &image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("--allow-foreign-urls") && err.trim().lines().count() == 1, "one clear line: {err}");
    assert!(proxy.log().is_empty(), "the foreign host was contacted without permission: {:?}", proxy.log());
    assert_eq!(assert_ok(&rimg(&["images", "-q"]), "images"), "", "nothing recorded");

    assert_ok(&rimg(&["pull", "-q", "--allow-foreign-urls", &image]), "pull --allow-foreign-urls");
    let log = proxy.log();
    assert!(log.iter().any(|l| l.method == "GET" && l.status == 200), "fetched from the url: {log:?}");
    assert!(
        log.iter().all(|l| !l.authorization),
        "the registry's credentials went to the foreign host: {log:?}"
    );
    assert_eq!(assert_ok(&rimg(&["run", "--rm", &image, "cat", "/own.txt"]), "run"), "own layer\n");

    // The config key does the same; bytes that do not match the descriptor are refused (in a fresh store:
    // this one has the layer already and would not fetch it).
    let fresh = TempRoot::new();
    let rimg = |args: &[&str]| {
        common::rimg_cmd(fresh.path()).env("DOCKER_CONFIG", docker_config.path()).args(args).output().unwrap()
    };
    let cfg = fresh.path().join("rimg-config.json");
    std::fs::write(&cfg, r#"{"allow-foreign-urls": true}"#).unwrap();
    let tampered = format!("{}/lib/tampered:1", reg.addr);
    let out = rimg(&["--config", cfg.to_str().unwrap(), "pull", "-q", &tampered]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "tampered foreign layer accepted: {err}");
    assert!(!err.contains("--allow-foreign-urls"), "the config key was ignored: {err}");
    assert!(err.contains("does not match") || err.contains("hashes to"), "not a verification error: {err}");
    assert!(rimg(&["inspect", &tampered]).status.code() != Some(0), "tampered image recorded");
}
