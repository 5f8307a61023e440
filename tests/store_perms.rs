//! Store permissions (issue 19, finding 4): after a pull, a detached run and a login, `ROOT` is 0711,
//! every directory under it 0700, state, log, index and credential files 0600; a local user who is not
//! root can neither read a container's state (its `-e` secrets) or log nor run an image's setuid-root
//! file; and a store left 0755 by an older rimg is tightened the next time rimg opens it.

mod common;

use common::assert_ok;
use common::registry::TestRegistry;
use common::store::{layer, push_image};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A system user made for the test, removed on drop (also when the test fails).
struct TestUser {
    name: String,
}

impl TestUser {
    fn new() -> TestUser {
        let name = format!("rimgperm{}", std::process::id() % 100_000);
        let _ = Command::new("userdel").arg(&name).stderr(Stdio::null()).status();
        common::run_tool("useradd", &["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", &name]);
        TestUser { name }
    }

    /// Run `argv` as this user (no supplementary groups); returns (success, stdout+stderr). Through a
    /// shell: setpriv itself still holds root's capabilities when it looks up the program it execs.
    fn run(&self, argv: &[&str]) -> (bool, String) {
        let out = Command::new("setpriv")
            .args(["--reuid", &self.name, "--regid", &self.name, "--clear-groups", "--"])
            .args(["/bin/sh", "-c", "exec \"$0\" \"$@\""])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// A parent directory everyone may traverse (as `/var/lib` is), holding the store root `root`, which
/// rimg itself creates. Containers left by a failed test are removed on drop.
struct World {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl World {
    fn new() -> World {
        let dir = tempfile::Builder::new().prefix("rimg-perms-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("root");
        World { dir, root }
    }
    fn rimg(&self, args: &[&str]) -> String {
        assert_ok(&common::rimg(&self.root, args), &args.join(" "))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = common::rimg(&self.root, &["rm", "-f", "perm-test"]);
        common::unmount_below(self.dir.path());
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display())).mode() & 0o7777
}

/// Every directory directly under `root` is 0700, every file 0600, `root` itself 0711.
fn assert_store_modes(root: &Path) {
    assert_eq!(mode(root), 0o711, "{}", root.display());
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let want = if e.file_type().unwrap().is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&e.path()), want, "{}", e.path().display());
    }
}

#[test]
fn store_is_private_and_old_stores_are_tightened() {
    let reg = TestRegistry::start_with_htpasswd("perm", "perm-pass");
    // An image with a setuid-root copy of the host's `id`: run by another user, it would report euid 0.
    let id_bin = std::fs::read("/usr/bin/id").expect("read /usr/bin/id");
    let mut layers = common::store::fixture_layers("busybox");
    layers.push(layer(&[("suid-id", 0o4755, &id_bin)]));
    let world = World::new();
    let cfg = world.dir.path().join("docker-config");
    let login = common::rimg_cmd(&world.root)
        .env("DOCKER_CONFIG", &cfg)
        .args(["login", "-u", "perm", "-p", "perm-pass", &reg.addr])
        .output()
        .unwrap();
    assert_ok(&login, "login");
    // The registry needs auth: push with its credentials through skopeo-free plain HTTP is not possible, so
    // push to an open registry serving the same storage.
    let open = TestRegistry::builder().storage(reg.storage_dir()).start();
    push_image(&open.addr, "lib/suid", "1", &layers, false);
    let image = format!("{}/lib/suid:1", reg.addr);
    let pull = common::rimg_cmd(&world.root)
        .env("DOCKER_CONFIG", &cfg)
        .args(["pull", "-q", &image])
        .output()
        .unwrap();
    assert_ok(&pull, "pull");
    let id =
        world.rimg(&["run", "-d", "--name", "perm-test", "-e", "SECRET=hunter2", &image, "echo", "logged"]);
    let id = id.trim().to_string();
    world.rimg(&["wait", &id]);

    assert_store_modes(&world.root);
    let cdir = world.root.join("containers").join(&id);
    let (state, log) = (cdir.join("state.json"), cdir.join("log"));
    assert_eq!(mode(&state), 0o600, "state.json");
    assert_eq!(mode(&log), 0o600, "log");
    assert!(std::fs::read_to_string(&log).unwrap().contains("logged"), "the log is written");
    assert_eq!(mode(&cfg.join("config.json")), 0o600, "credentials");
    assert_eq!(mode(&cfg), 0o700, "credentials dir");

    let inspect: serde_json::Value = serde_json::from_str(&world.rimg(&["inspect", &image])).unwrap();
    let top =
        inspect[0]["RootFS"]["Layers"].as_array().unwrap().last().unwrap().as_str().unwrap().to_string();
    let suid = world.root.join("layers/sha256").join(top.trim_start_matches("sha256:")).join("suid-id");
    assert_eq!(mode(&suid), 0o4755, "the layer keeps the image's setuid bit");

    let user = TestUser::new();
    let (ok, text) = user.run(&["cat", state.to_str().unwrap()]);
    assert!(!ok && !text.contains("hunter2"), "another user read state.json: {text}");
    let (ok, text) = user.run(&["cat", log.to_str().unwrap()]);
    assert!(!ok && !text.contains("logged"), "another user read the log: {text}");
    let (ok, text) = user.run(&[suid.to_str().unwrap(), "-u"]);
    assert!(!ok && text.trim() != "0", "another user ran the layer's setuid-root file: {text}");
    let (ok, text) = user.run(&["ls", world.root.to_str().unwrap()]);
    assert!(!ok, "another user listed the store: {text}");
    let (ok, text) = user.run(&["cat", world.root.join("index.json").to_str().unwrap()]);
    assert!(!ok, "another user read index.json: {text}");

    // A store as an older rimg left it: 0755 directories, 0644 files. The next command tightens it.
    for p in [
        world.root.clone(),
        world.root.join("layers"),
        world.root.join("containers"),
        world.root.join("blobs"),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(world.root.join("index.json"), std::fs::Permissions::from_mode(0o644)).unwrap();
    world.rimg(&["images"]);
    assert_store_modes(&world.root);
    let (ok, text) = user.run(&[suid.to_str().unwrap(), "-u"]);
    assert!(!ok && text.trim() != "0", "the old store was not tightened: {text}");
    world.rimg(&["rm", &id]);
}
