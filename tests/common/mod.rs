//! Helpers shared by rimg's integration tests. Every `.rs` file directly in `tests/` is a test binary;
//! this directory is not one: a test file includes it with `mod common;` and uses what it needs.
//!
//! - here: the checkout and the fixture images, running the `rimg` binary ([`rimg`], [`rimg_cmd`],
//!   [`assert_ok`], [`run_tool`]) and throw-away `--root` directories ([`TempRoot`]) that detach any mount
//!   left below them;
//! - [`registry`]: a real CNCF distribution registry on a free loopback port ([`registry::TestRegistry`]),
//!   open, with htpasswd or with Bearer tokens from [`token::TokenServer`], and fixture pushes;
//! - [`fs`]: the FUSE overlay tests (`tests/fs_*.rs`): kernel overlayfs and rimg mounts, layer fixtures,
//!   tree snapshots, per-thread credentials;
//! - [`layer`]: the layer tests (`tests/layer_*.rs`): fixture tars, kernel overlayfs mounts, umoci;
//! - [`run`]: the container tests (`tests/run_*.rs`, `faults.rs`, `commit_race.rs`): a per-test
//!   [`run::Root`] cloned from a cache pulled once per binary, commands with a deadline;
//! - [`podman`]: a private podman, the oracle of the docker-parity tests (`tests/parity_*.rs`);
//! - [`store`]: the store tests (`tests/store_*.rs`): a proxy that holds requests, a hand-made image pusher.
//!
//! Waiting: a test never sleeps for "long enough"; it polls the condition it waits for, bounded, with
//! [`wait_until`] (fails the test after 30 s) or [`eventually`] (returns whether it came true in time).
//!
//! Everything cleans up on Drop, also when a test panics: registries are killed, temp dirs removed, and
//! mounts left under a temp root are detached first. Each binary uses a different subset, hence
//! `allow(dead_code)`.
#![allow(dead_code)]

pub mod fs;
pub mod layer;
pub mod podman;
pub mod registry;
pub mod run;
pub mod store;
pub mod token;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The checkout this test binary was built from; scripts and fixtures are found relative to it so tests
/// work from any clone.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where `image-fixtures/build.sh` writes the fixture OCI layouts (`RIMG_FIXTURES_DIR` overrides), one
/// directory per image name: busybox, alpine, debian, centos, edge, hostile.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("RIMG_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".work/fixtures"))
}

/// The OCI layout of one fixture image, panicking with the fix when it has not been built, so a missing
/// build step reads as such instead of as a rimg bug.
pub fn fixture_layout(name: &str) -> PathBuf {
    let dir = fixtures_dir().join(name);
    if !dir.join("index.json").is_file() {
        panic!(
            "fixture image '{name}' is missing at {}: run `bash image-fixtures/build.sh` first \
             (edge/hostile also need image-fixtures/{{edge,hostile}}-layers.py)",
            dir.display()
        );
    }
    dir
}

/// The tags (`org.opencontainers.image.ref.name`) of a fixture layout, in index order: e.g. every case of
/// the `hostile` fixture (`refuse-dotdot`, `allow-dangling`, ...), to push and pull each one.
pub fn fixture_tags(name: &str) -> Vec<String> {
    let index = fixture_layout(name).join("index.json");
    let text = std::fs::read_to_string(&index).unwrap_or_else(|e| panic!("read {}: {e}", index.display()));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", index.display()));
    v["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_owned)
        .collect()
}

/// The rimg binary cargo built for this test run.
pub fn rimg_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rimg"))
}

/// A `rimg --root ROOT` command, for tests that need to set env, stdin or other flags themselves.
pub fn rimg_cmd(root: &Path) -> Command {
    let mut cmd = Command::new(rimg_bin());
    cmd.arg("--root").arg(root).stdin(Stdio::null());
    cmd
}

/// Runs `rimg --root ROOT ARGS...` to completion and returns its output (never panics on failure: the test
/// decides what a failure means). Use [`assert_ok`] for the common "must succeed" case.
pub fn rimg(root: &Path, args: &[&str]) -> Output {
    rimg_cmd(root).args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", rimg_bin().display()))
}

/// Panics with both output streams unless the command exited 0; returns stdout as a string.
pub fn assert_ok(out: &Output, what: &str) -> String {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs an external program (skopeo, umoci, ...) and returns stdout, panicking with its stderr on failure.
pub fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (run setup.sh)"));
    assert_ok(&out, &format!("{program} {}", args.join(" ")))
}

// ------------------------------------------------------------------------------------------------ temp root

/// A throw-away `--root` directory. On Drop, anything still mounted at or below it (container rootfs,
/// FUSE mounts of a crashed test) is lazily unmounted, deepest first, before the tree is removed — so a
/// failed test never leaves a mount behind or makes `remove_dir_all` walk into a live filesystem.
pub struct TempRoot {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TempRoot {
    /// A new empty root under the system temp dir.
    pub fn new() -> TempRoot {
        let dir = tempfile::Builder::new().prefix("rimg-test-root-").tempdir().expect("create temp root");
        let path = std::fs::canonicalize(dir.path()).expect("canonicalize temp root");
        TempRoot { dir: Some(dir), path }
    }

    /// The root directory (canonical path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `rimg --root THIS ARGS...`.
    pub fn rimg(&self, args: &[&str]) -> Output {
        rimg(&self.path, args)
    }
}

impl Default for TempRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        unmount_below(&self.path);
        if let Some(dir) = self.dir.take() {
            if dir.close().is_err() {
                // a mount that came back or a busy file: one more lazy pass, then give up quietly
                unmount_below(&self.path);
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }
}

/// Mount points at or below `dir` in this process's mount namespace, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Lazily detaches every mount at or below `dir` (MNT_DETACH), repeating while the kernel shows any.
pub fn unmount_below(dir: &Path) {
    for _ in 0..8 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: c is a valid NUL-terminated path; umount2 does not retain it.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ------------------------------------------------------------------------------------------------ waiting

/// Polls `f` every 20 ms until it holds; fails the test after 30 s, naming `what` it waited for.
pub fn wait_until(what: &str, f: impl FnMut() -> bool) {
    assert!(
        eventually_every(Duration::from_secs(30), Duration::from_millis(20), f),
        "timed out waiting for {what}"
    );
}

/// Polls `f` every 50 ms until it is true or `limit` passes; returns whether it came true (the test
/// decides what a timeout means).
pub fn eventually(limit: Duration, f: impl FnMut() -> bool) -> bool {
    eventually_every(limit, Duration::from_millis(50), f)
}

fn eventually_every(limit: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(every);
    }
}
