//! Proves the test harness and the fixture images: a real registry starts on a free port, every fixture
//! pushes, and what the registry serves is what the fixtures promise (layer counts, whiteouts and opaque
//! dirs present, the centos stand-in label, manifest formats). Runs no rimg code, so a failure here is a
//! harness or fixture problem, not a rimg bug.

mod common;

use common::registry::{http_status, TestRegistry};
use common::{mounts_below, run_tool, TempRoot};
use serde_json::Value;

#[test]
fn fixtures_push_and_inspect() {
    let reg = TestRegistry::start();
    assert_eq!(http_status(&reg.addr, "/v2/"), Some(200));
    assert!(reg.url().starts_with("http://127.0.0.1:"));

    reg.push_fixture("busybox", "library/busybox:latest");
    reg.push_fixture("alpine", "library/alpine:3.20.3");
    reg.push_fixture("debian", "library/debian:bookworm");
    reg.push_fixture("centos", "library/centos:latest");
    reg.push_fixture("busybox:multiarch", "library/busybox:multiarch");

    let debian = reg.skopeo_inspect("library/debian:bookworm", false);
    let layers = debian["Layers"].as_array().map(Vec::len).unwrap_or(0);
    assert!(layers >= 3, "debian has {layers} layers: {debian}");
    assert_eq!(debian["Labels"]["org.opencontainers.image.version"], "bookworm");

    let centos = reg.skopeo_inspect("library/centos:latest", false);
    let stand_in = centos["Labels"]["io.rimg.fixture.stand-in"].as_str().unwrap_or("");
    assert!(stand_in.contains("NOT CentOS"), "centos stand-in label missing: {centos}");
    assert_eq!(centos["Layers"], debian["Layers"], "centos shares debian's layers");

    let busybox = reg.skopeo_inspect("library/busybox:latest", false);
    assert_eq!(busybox["Layers"].as_array().map(Vec::len), Some(1));

    // alpine is served as Docker schema2, the others as OCI: both formats are in the registry.
    let alpine_raw = reg.skopeo_inspect("library/alpine:3.20.3", true);
    assert_eq!(alpine_raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    let debian_raw = reg.skopeo_inspect("library/debian:bookworm", true);
    assert_eq!(debian_raw["mediaType"], "application/vnd.oci.image.manifest.v1+json");

    let index = reg.skopeo_inspect("library/busybox:multiarch", true);
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .map(|m| m.iter().map(|d| platform_of(&d["platform"])).collect())
        .unwrap_or_default();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8", "unknown/unknown"]);
}

fn platform_of(p: &Value) -> String {
    let mut s = format!("{}/{}", p["os"].as_str().unwrap_or("?"), p["architecture"].as_str().unwrap_or("?"));
    if let Some(v) = p["variant"].as_str() {
        s = format!("{s}/{v}");
    }
    s
}

/// The layer tars really carry whiteouts and an opaque marker (checked on the layout, independent of the
/// registry), so tests of whiteout handling exercise real entries.
#[test]
fn debian_fixture_has_whiteouts_and_opaque_dir() {
    let layout = common::fixture_layout("debian");
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.join("blobs/sha256").join(mdigest)).unwrap())
            .unwrap();
    let top = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let blob = layout.join("blobs/sha256").join(top);
    let listing = run_tool("tar", &["-tzf", blob.to_str().unwrap()]);
    assert!(listing.lines().any(|l| l == "opt/app/.wh.old"), "{listing}");
    assert!(listing.lines().any(|l| l == "opt/app/conf/.wh..wh..opq"), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with("usr/share/doc/.wh.")), "{listing}");
}

#[test]
fn htpasswd_registry_requires_credentials() {
    let reg = TestRegistry::start_with_htpasswd("rimg", "s3cret pass");
    assert_eq!(http_status(&reg.addr, "/v2/"), Some(401));
    reg.push_fixture("busybox", "library/busybox:latest");
    let busybox = reg.skopeo_inspect("library/busybox:latest", false);
    assert_eq!(busybox["Layers"].as_array().map(Vec::len), Some(1));
}

#[test]
fn registry_serves_storage_of_another() {
    let open = TestRegistry::start();
    open.push_fixture("busybox", "library/busybox:latest");
    let locked = TestRegistry::builder().storage(open.storage_dir()).htpasswd("u", "p").start();
    assert_ne!(open.addr, locked.addr);
    assert_eq!(http_status(&locked.addr, "/v2/"), Some(401));
    let inspected = locked.skopeo_inspect("library/busybox:latest", true);
    assert_eq!(inspected["schemaVersion"], 2);
}

#[test]
fn temp_root_detaches_mounts_on_drop() {
    let root = TempRoot::new();
    let path = root.path().to_owned();
    let inner = path.join("containers/x/rootfs");
    std::fs::create_dir_all(&inner).unwrap();
    run_tool("mount", &["-t", "tmpfs", "tmpfs", inner.to_str().unwrap()]);
    let nested = inner.join("deeper dir");
    std::fs::create_dir_all(&nested).unwrap();
    run_tool("mount", &["-t", "tmpfs", "tmpfs", nested.to_str().unwrap()]);
    std::fs::write(nested.join("f"), b"x").unwrap();
    assert_eq!(mounts_below(&path).len(), 2);
    drop(root);
    assert!(mounts_below(&path).is_empty());
    assert!(!path.exists());
}

/// The layer engineer's edge and hostile layers are in the registry as real images: edge as one 3-layer
/// image, hostile as one single-layer image per case.
#[test]
fn edge_and_hostile_fixtures_push() {
    let reg = TestRegistry::start();
    reg.push_fixture("edge", "rimg/edge:latest");
    let edge = reg.skopeo_inspect("rimg/edge:latest", true);
    assert_eq!(edge["layers"].as_array().map(Vec::len), Some(3), "{edge}");

    let cases = common::fixture_tags("hostile");
    assert!(cases.iter().any(|c| c.starts_with("refuse-")), "{cases:?}");
    assert!(cases.iter().any(|c| c.starts_with("allow-")), "{cases:?}");
    for case in cases.iter().take(3) {
        reg.push_fixture(&format!("hostile:{case}"), &format!("rimg/hostile:{case}"));
        let m = reg.skopeo_inspect(&format!("rimg/hostile:{case}"), true);
        assert_eq!(m["layers"].as_array().map(Vec::len), Some(1), "{case}: {m}");
    }
}

/// The token server's JWTs are accepted by the real registry: skopeo pushes and inspects through the
/// Bearer flow; anonymous and wrong-password requests are refused by the token server.
#[test]
fn token_auth_registry_accepts_issued_tokens() {
    let tokens = common::token::TokenServer::start("tok-user", "tok-pass", false);
    let reg = TestRegistry::start_with_token(&tokens);
    assert_eq!(http_status(&reg.addr, "/v2/"), Some(401));
    reg.push_fixture("busybox", "library/busybox:latest");
    let m = reg.skopeo_inspect("library/busybox:latest", true);
    assert_eq!(m["schemaVersion"], 2);
    let reqs = tokens.requests();
    assert!(
        reqs.iter()
            .any(|r| r.status == 200 && r.scopes.iter().any(|s| s == "repository:library/busybox:pull,push")),
        "{reqs:?}"
    );
    assert!(reqs.iter().all(|r| r.service.as_deref() == Some(common::token::TOKEN_SERVICE)), "{reqs:?}");

    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--creds", "tok-user:wrong"])
        .arg(format!("docker://{}/library/busybox:latest", reg.addr))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(tokens.requests().iter().any(|r| r.status == 401 && r.account.as_deref() == Some("tok-user")));
}
