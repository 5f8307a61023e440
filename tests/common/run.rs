//! Helpers of the container runtime tests (`tests/run_*.rs`, `faults.rs`, `commit_race.rs`).
//!
//! Images take the real path once per test binary: a loopback registry gets the fixture images, `rimg pull`
//! fetches them through `--registry-mirror` into a shared cache, and the registry is stopped. Each test then
//! gets its own `--root`, a hard-link clone of that cache (layers are read-only by convention), and a
//! [`Root`] guard that on drop force-removes the test's containers, checks nothing they owned is left, and
//! deletes the tree. Commands run with a deadline so a hung container fails its test instead of the suite.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static SHARED: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_shared() {
    if let Some(p) = SHARED.get() {
        super::unmount_below(p);
        let _ = std::fs::remove_dir_all(p);
    }
}

/// The cache with the fixture images pulled (alpine, busybox, centos stand-in), built once per binary.
fn shared_cache() -> &'static Path {
    SHARED.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("rimg-run-cache-").tempdir().expect("temp dir").keep();
        // SAFETY: registering a plain extern "C" function to run at exit.
        unsafe { libc::atexit(remove_shared) };
        let reg = super::registry::TestRegistry::start();
        reg.push_fixture("alpine", "library/alpine:latest");
        reg.push_fixture("busybox", "library/busybox:latest");
        reg.push_fixture("centos", "library/centos:latest");
        let mirror = reg.url();
        for img in ["alpine", "busybox", "centos:latest"] {
            let out = super::rimg(&dir, &["--registry-mirror", &mirror, "pull", "-q", img]);
            super::assert_ok(&out, &format!("pull {img}"));
        }
        dir
    })
}

/// A per-test `--root` with the fixture images; cleans up its containers on drop.
pub struct Root {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Root {
    /// A fresh root: a hard-link clone of the shared cache.
    pub fn new() -> Root {
        let cache = shared_cache();
        let dir = tempfile::Builder::new().prefix("rimg-run-root-").tempdir().expect("temp root");
        let path = std::fs::canonicalize(dir.path()).expect("canonical root");
        let st = Command::new("cp")
            .arg("-al")
            .arg(format!("{}/.", cache.display()))
            .arg(&path)
            .status()
            .expect("cp -al");
        assert!(st.success(), "clone image cache");
        Root { dir: Some(dir), path }
    }

    /// A fresh root inside `parent` (any filesystem): a full copy of the shared cache.
    pub fn new_in(parent: &Path) -> Root {
        let cache = shared_cache();
        let dir = tempfile::Builder::new().prefix("rimg-run-root-").tempdir_in(parent).expect("temp root");
        let path = std::fs::canonicalize(dir.path()).expect("canonical root");
        let st = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", cache.display()))
            .arg(&path)
            .status()
            .expect("cp -a");
        assert!(st.success(), "copy image cache");
        Root { dir: Some(dir), path }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rimg --root ROOT ARGS…` with a 60 s deadline.
    pub fn rimg(&self, args: &[&str]) -> Output {
        run_with_deadline(super::rimg_cmd(&self.path).args(args), Duration::from_secs(60))
    }

    /// Like [`Root::rimg`] but must exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.rimg(args);
        super::assert_ok(&out, &args.join(" "))
    }

    /// The ids of all containers under this root.
    pub fn container_ids(&self) -> Vec<String> {
        std::fs::read_dir(self.path.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 64)
            .collect()
    }

    /// A container's state.json, or `None` while it is not (fully) written yet: the container directory
    /// appears before its state file, so polling code must not panic on that window.
    pub fn try_state(&self, id: &str) -> Option<serde_json::Value> {
        let p = self.path.join("containers").join(id).join("state.json");
        serde_json::from_slice(&std::fs::read(p).ok()?).ok()
    }

    /// A container's state.json.
    pub fn state(&self, id: &str) -> serde_json::Value {
        let p = self.path.join("containers").join(id).join("state.json");
        serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
            .expect("parse state")
    }

    /// The full id of the container named `name`.
    pub fn id_of(&self, name: &str) -> String {
        self.container_ids()
            .into_iter()
            .find(|id| self.try_state(id).is_some_and(|s| s["spec"]["name"] == name))
            .unwrap_or_else(|| panic!("no container named {name}"))
    }
}

impl Default for Root {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        for id in self.container_ids() {
            let _ = super::rimg(&self.path, &["rm", "-f", &id]);
        }
        super::unmount_below(&self.path);
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

/// Run a command to completion, SIGKILLing it after `limit` (then the runtime must clean up by itself).
pub fn run_with_deadline(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn rimg");
    let pid = child.id() as i32;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let watchdog = std::thread::spawn(move || {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: kill(2) of our own child, which has not been reaped yet (wait_with_output is pending).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let out = child.wait_with_output().expect("wait rimg");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = watchdog.join();
    out
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code (-1 when killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Is there any cgroup directory for container `id` left in any hierarchy?
pub fn cgroup_left(id: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let p = h.path().join("rimg").join(id);
        if p.exists() {
            left.push(p);
        }
    }
    left
}

/// Processes whose command line mentions `needle` (excluding this test process).
pub fn processes_with(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A block device that exists on the host (a loop device when there is one), as `MAJOR MINOR`.
pub fn host_block_device() -> String {
    let mut devs: Vec<String> = std::fs::read_dir("/sys/dev/block")
        .expect("/sys/dev/block")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    devs.sort_by_key(|d| !d.starts_with("7:"));
    devs.first().expect("a block device").replace(':', " ")
}
