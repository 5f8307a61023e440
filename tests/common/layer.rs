//! Helpers of the layer tests (`tests/layer_*.rs`): fixture tars, kernel overlayfs mounts, umoci.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The repository root (for fixture scripts).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run a fixture script `image-fixtures/NAME` writing its tars into `out`.
pub fn fixtures(name: &str, out: &Path) {
    run(Command::new("python3").arg(repo().join("image-fixtures").join(name)).arg(out));
}

/// A mount that is detached when dropped, even if the test panics.
pub struct Mount(pub PathBuf);

impl Mount {
    /// Read-only kernel overlayfs of `lowers` (top first) at `at`.
    pub fn overlay_ro(lowers: &[PathBuf], at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let lower = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("ro,lowerdir={lower}"))
            .arg(at));
        Mount(at.to_path_buf())
    }

    /// Read-write kernel overlayfs.
    pub fn overlay_rw(lowers: &[PathBuf], upper: &Path, work: &Path, at: &Path) -> Mount {
        for d in [upper, work, at] {
            std::fs::create_dir_all(d).unwrap();
        }
        let lower = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={lower},upperdir={},workdir={}", upper.display(), work.display()))
            .arg(at));
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `umoci unpack` of an image made of `layers` (uncompressed tars, bottom first); returns the rootfs.
pub fn umoci_rootfs(layers: &[PathBuf], work: &Path) -> PathBuf {
    let layout = work.join("oci");
    let image = format!("{}:t", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    for l in layers {
        run(Command::new("umoci").args(["raw", "add-layer", "--image", &image]).arg(l));
    }
    let bundle = work.join("bundle");
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
    bundle.join("rootfs")
}
