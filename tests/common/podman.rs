//! podman as an independent oracle for the docker-parity tests (`tests/parity_*.rs`): a private store
//! (its own `--root`/`--runroot`, vfs, no events), never the host's. Only commands that need no
//! container process are used (podman's runc here needs a containers.conf the tests do not write).

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A podman with its own throw-away storage; `None` from [`Podman::new`] when podman is not installed.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// A private podman, or `None` (the caller skips its comparison) when there is none.
    pub fn new() -> Option<Podman> {
        let found =
            Command::new("podman").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !found.is_ok_and(|s| s.success()) {
            eprintln!("podman is not installed: skipping the comparison with podman");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("rimg-podman-").tempdir().expect("podman temp dir");
        Some(Podman { dir })
    }

    /// `podman --root … ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    /// Like [`Podman::run`], but must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        super::assert_ok(&out, &format!("podman {}", args.join(" ")))
    }

    /// Load an image that rimg saved (`rimg save -o FILE IMAGE`).
    pub fn load(&self, archive: &Path) {
        self.ok(&["load", "-i", &archive.to_string_lossy()]);
    }
}
