//! Leases: `image prune -a` and `rmi` while a pull or a build is half-way never delete what that pull or
//! build holds, the pull or build then succeeds and its image runs, and no broken image is ever listed.
//! The pull and the build are held mid-way by a proxy that keeps one request waiting until the test lets
//! it go (no sleeps); a SIGKILLed holder's lease is reaped by the next collection.

mod common;

use common::registry::TestRegistry;
use common::store::{fixture_layers, layer, push_image, Proxy};
use common::{assert_ok, TempRoot};
use std::process::{Child, Command, Stdio};

/// Kills a still-running child on drop, so a failing test leaves no rimg behind.
struct Running(Option<Child>);

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        Running(Some(
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn"),
        ))
    }
    fn wait(mut self) -> std::process::Output {
        self.0.take().expect("child").wait_with_output().expect("wait")
    }
    fn kill(mut self) {
        let mut c = self.0.take().expect("child");
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn leases(root: &TempRoot) -> Vec<String> {
    std::fs::read_dir(root.path().join("leases"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// `images` lists no broken image (it warns `skipping broken image` on stderr when one is).
fn assert_no_broken_image(root: &TempRoot) -> String {
    let out = root.rimg(&["images"]);
    let listing = assert_ok(&out, "images");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("broken"), "broken image listed: {err}");
    listing
}

/// Registry with `lib/base:1` (busybox) and `lib/app:1` (busybox's layer plus one layer of its own, which
/// the proxy will hold).
fn base_and_app(reg: &TestRegistry) -> common::store::Layer {
    let mut layers = fixture_layers("busybox");
    push_image(&reg.addr, "lib/base", "1", &layers, false);
    let own = layer(&[("added.txt", 0o644, b"added by app\n")]);
    layers.push(own.clone());
    push_image(&reg.addr, "lib/app", "1", &layers, false);
    own
}

#[test]
fn prune_and_rmi_during_a_pull_leave_it_whole() {
    let reg = TestRegistry::start();
    let own = base_and_app(&reg);
    let proxy = Proxy::start(&reg.addr);
    let blob_path = format!("/v2/lib/app/blobs/{}", own.digest());
    proxy.stall_when(move |m, p| m == "GET" && p == blob_path);
    let root = TempRoot::new();
    let base = format!("{}/lib/base:1", reg.addr);
    let app = format!("{}/lib/app:1", proxy.addr);
    assert_ok(&root.rimg(&["pull", "-q", &base]), "pull base");

    // The app pull finds the base layer already there, stores its config, and waits for its own layer.
    let pull = Running::spawn(common::rimg_cmd(root.path()).args(["pull", &app]));
    proxy.wait_held();
    // Without leases these delete the pull's config blob and the base layer it counted on.
    assert_ok(&root.rimg(&["rmi", &base]), "rmi base during the pull");
    assert_ok(&root.rimg(&["image", "prune", "-a"]), "prune -a during the pull");
    proxy.release();
    let out = pull.wait();
    assert_ok(&out, "the held pull");

    let listing = assert_no_broken_image(&root);
    assert!(listing.contains("lib/app"), "{listing}");
    let run = root.rimg(&["run", "--rm", &app, "cat", "/added.txt", "/etc/passwd"]);
    let text = assert_ok(&run, "run the pulled image");
    assert!(text.starts_with("added by app\n") && text.contains("root:"), "{text}");
    assert!(leases(&root).is_empty(), "lease released: {:?}", leases(&root));
}

#[test]
fn lease_of_a_killed_pull_is_reaped() {
    let reg = TestRegistry::start();
    let own = base_and_app(&reg);
    let proxy = Proxy::start(&reg.addr);
    let blob_path = format!("/v2/lib/app/blobs/{}", own.digest());
    proxy.stall_when(move |m, p| m == "GET" && p == blob_path);
    let root = TempRoot::new();
    let pull =
        Running::spawn(common::rimg_cmd(root.path()).args(["pull", &format!("{}/lib/app:1", proxy.addr)]));
    proxy.wait_held();
    assert_eq!(leases(&root).len(), 1, "the pull holds a lease");
    pull.kill();
    // The dead pull's lease holds nothing: the collection removes it with what the pull had stored.
    assert_ok(&root.rimg(&["image", "prune", "-a"]), "prune after the kill");
    assert!(leases(&root).is_empty(), "stale lease left: {:?}", leases(&root));
    let left: Vec<_> = std::fs::read_dir(root.path().join("blobs/sha256")).unwrap().flatten().collect();
    assert!(left.is_empty(), "blobs of the killed pull left: {left:?}");
    proxy.release();
}

#[test]
fn prune_during_a_build_keeps_its_base_and_stages() {
    let reg = TestRegistry::start();
    reg.push_fixture("alpine", "lib/alpine:1");
    reg.push_fixture("busybox", "lib/busybox:1");
    // A RUN step of the second stage waits on this proxy (host network) until the test lets it go.
    let gate = Proxy::start(&reg.addr);
    gate.stall_when(|m, p| m == "GET" && p == "/v2/");
    let root = TempRoot::new();
    let alpine = format!("{}/lib/alpine:1", reg.addr);
    let busybox = format!("{}/lib/busybox:1", reg.addr);
    assert_ok(&root.rimg(&["pull", "-q", &alpine]), "pull alpine");
    assert_ok(&root.rimg(&["pull", "-q", &busybox]), "pull busybox");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {alpine} AS one\nRUN echo one > /one\n\
             FROM {busybox}\nRUN --network=host wget -q -O /gate http://{}/v2/ && echo two > /two\n\
             COPY --from=one /one /one\n",
            gate.addr
        ),
    )
    .unwrap();
    let build = Running::spawn(common::rimg_cmd(root.path()).args([
        "build",
        "-t",
        "built:1",
        ctx.path().to_str().unwrap(),
    ]));
    gate.wait_held();
    // Nothing but the build's lease keeps alpine and the first stage's layer: no container uses them now.
    assert_ok(&root.rimg(&["image", "prune", "-a"]), "prune -a during the build");
    gate.release();
    let out = build.wait();
    assert_ok(&out, "the held build");
    assert_no_broken_image(&root);
    let text =
        assert_ok(&root.rimg(&["run", "--rm", "built:1", "cat", "/one", "/two"]), "run the built image");
    assert_eq!(text, "one\ntwo\n");
    assert!(leases(&root).is_empty(), "lease released: {:?}", leases(&root));
}
