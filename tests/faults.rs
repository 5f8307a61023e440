//! Faults across the tool: a full disk under `--root`, and `rimg build` killed in the middle of a RUN step.
//! Each ends with a clear error or a clean state, and the next command works.

mod common;

use common::registry::TestRegistry;
use common::run::{cgroup_left, Root};
use common::{assert_ok, eventually};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A small tmpfs as the store root: unmounted on drop.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn new(size: &str) -> SmallFs {
        let d = tempfile::Builder::new().prefix("rimg-small-").tempdir().unwrap();
        common::run_tool(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "rimg-small", d.path().to_str().unwrap()],
        );
        SmallFs(d)
    }
    fn resize(&self, size: &str) {
        common::run_tool("mount", &["-o", &format!("remount,size={size}"), self.0.path().to_str().unwrap()]);
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        common::unmount_below(self.0.path());
    }
}

#[test]
fn full_disk_gives_a_clear_error_and_a_later_pull_succeeds() {
    let reg = TestRegistry::start();
    reg.push_fixture("debian", "library/debian:bookworm");
    let fs = SmallFs::new("24m");
    let root = fs.0.path().join("root");
    let image = format!("{}/library/debian:bookworm", reg.addr);
    let out = common::rimg(&root, &["pull", "-q", &image]);
    assert_ne!(out.status.code(), Some(0), "a 53 MiB image cannot fit in 24 MiB");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    assert!(err.to_lowercase().contains("no space left"), "{err}");
    // Nothing half-committed: no image, no layer directory, no unfinished layer.
    assert!(assert_ok(&common::rimg(&root, &["images", "-q"]), "images").trim().is_empty());
    assert_eq!(std::fs::read_dir(root.join("layers/tmp")).unwrap().count(), 0);
    fs.resize("512m");
    assert_ok(&common::rimg(&root, &["pull", "-q", &image]), "pull after making room");
    assert_ok(&common::rimg(&root, &["inspect", &image]), "inspect");
}

#[test]
fn build_killed_mid_step_leaves_nothing_running_and_builds_again() {
    let root = Root::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM alpine\nRUN echo step-started; sleep 60\n").unwrap();
    let mut child = Command::new(common::rimg_bin())
        .arg("--root")
        .arg(root.path())
        .args(["build", "-t", "killed:1"])
        .arg(ctx.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the RUN container is up (its state file exists and it printed), then SIGKILL the build.
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.lines().any(|l| l.trim() == "step-started") {
        let n = std::io::Read::read(&mut out, &mut buf).unwrap();
        assert!(n > 0, "build ended before its RUN step started: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let ids = root.container_ids();
    assert_eq!(ids.len(), 1, "one build container: {ids:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    let id = ids[0].clone();
    // The container's monitor notices its parent died and tears everything down; the next `rimg ps`
    // reconciles whatever a slow teardown has not finished yet.
    assert!(
        eventually(Duration::from_secs(30), || {
            let _ = root.rimg(&["ps", "-a"]);
            cgroup_left(&id).is_empty() && common::mounts_below(root.path()).is_empty()
        }),
        "left behind: cgroups {:?}, mounts {:?}",
        cgroup_left(&id),
        common::mounts_below(root.path())
    );
    let ps = root.ok(&["ps", "-a"]);
    assert!(!ps.contains("Up"), "nothing running: {ps}");
    // A new build works (and reuses nothing half-made).
    std::fs::write(ctx.path().join("Dockerfile"), "FROM alpine\nRUN echo fine > /f\n").unwrap();
    root.ok(&["build", "-q", "-t", "after:1", ctx.path().to_str().unwrap()]);
    assert_eq!(root.ok(&["run", "--rm", "after:1", "cat", "/f"]), "fine\n");
    let ps = root.ok(&["ps", "-a"]);
    assert!(!ps.contains("rimg-build-"), "the killed build's step container was cleared: {ps}");
}
