//! `rimg unpack` against `umoci unpack` of the same image, and `rimg export` of a container that changed
//! its filesystem.

mod common;

use common::registry::TestRegistry;
use common::{assert_ok, run_tool, TempRoot};
use rimg::layer::tree::{diff_trees, snapshot, CompareOptions};

#[test]
fn unpack_equals_umoci_and_export_sees_container_changes() {
    let reg = TestRegistry::start();
    reg.push_fixture("debian", "library/debian:bookworm");
    let root = TempRoot::new();
    let image = format!("{}/library/debian:bookworm", reg.addr);
    assert_ok(&root.rimg(&["pull", "-q", &image]), "pull");
    let work = tempfile::tempdir().unwrap();
    let ours = work.path().join("ours");
    assert_ok(&root.rimg(&["unpack", &image, ours.to_str().unwrap()]), "unpack");
    let layout = work.path().join("oci");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{image}"),
            &format!("oci:{}:x", layout.display()),
        ],
    );
    let bundle = work.path().join("bundle");
    run_tool("umoci", &["unpack", "--image", &format!("{}:x", layout.display()), bundle.to_str().unwrap()]);
    let diffs = diff_trees(
        &snapshot(&ours).unwrap(),
        &snapshot(&bundle.join("rootfs")).unwrap(),
        &CompareOptions::default(),
    );
    assert!(diffs.is_empty(), "rimg unpack differs from umoci unpack:\n{}", diffs.join("\n"));
    let out = root.rimg(&["unpack", &image, ours.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "unpack into a non-empty directory must refuse");

    // A container that adds and deletes files: export shows exactly its view.
    assert_ok(
        &root.rimg(&[
            "run",
            "--name",
            "changer",
            &image,
            "sh",
            "-c",
            "echo new > /added && rm /etc/hostname.dpkg-none 2>/dev/null; rm -f /etc/issue",
        ]),
        "run",
    );
    let tar = work.path().join("ctr.tar");
    assert_ok(&root.rimg(&["export", "-o", tar.to_str().unwrap(), "changer"]), "export");
    let list = run_tool("tar", &["tf", tar.to_str().unwrap()]);
    assert!(list.lines().any(|l| l == "added"), "exported tar lacks the new file");
    assert!(!list.lines().any(|l| l == "etc/issue"), "exported tar still has the deleted file");
    assert!(list.lines().any(|l| l == "etc/debian_version"), "exported tar lacks image files");
    assert!(!list.lines().any(|l| l.contains(".wh.")), "no whiteouts in an export");
    assert_ok(&root.rimg(&["rm", "changer"]), "rm");
    assert!(common::mounts_below(root.path()).is_empty());
}
