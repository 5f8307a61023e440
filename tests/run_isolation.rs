//! Many containers from one image, and what a killed `rimg run` leaves behind (nothing).

mod common;

use common::eventually;
use common::run::{cgroup_left, code, stderr, stdout, Root};
use std::time::Duration;

fn layer_dirs(root: &Root) -> usize {
    std::fs::read_dir(root.path().join("layers/sha256")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn ten_containers_each_see_only_their_own_writes() {
    let root = Root::new();
    let layers_before = layer_dirs(&root);
    // A barrier in a shared directory: each container has written before any reads back, so all ten
    // run at once (bounded: a container that waits 40 s exits 9 and fails the test).
    let sync = tempfile::tempdir().expect("sync dir");
    let vol = format!("{}:/sync", sync.path().display());
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let path = root.path().to_path_buf();
            let vol = vol.clone();
            std::thread::spawn(move || {
                let script = format!(
                    "echo {i} > /etc/shared; touch /only-{i} /sync/{i}; n=0; \
                     until [ $(ls /sync | wc -l) -eq 10 ]; do \
                     [ $n -lt 800 ] || exit 9; n=$((n+1)); sleep 0.05; done; \
                     cat /etc/shared; ls / | grep -c '^only-'"
                );
                let out = common::run::run_with_deadline(
                    common::rimg_cmd(&path)
                        .args(["run", "--name", &format!("c{i}"), "-v", &vol])
                        .args(["alpine", "sh", "-c", &script]),
                    Duration::from_secs(60),
                );
                (i, out)
            })
        })
        .collect();
    for h in handles {
        let (i, out) = h.join().unwrap();
        assert_eq!(code(&out), 0, "c{i}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("{i}\n1\n"), "c{i} saw only its own writes");
    }
    for i in 0..10 {
        let id = root.id_of(&format!("c{i}"));
        let upper = root.path().join("containers").join(&id).join("upper");
        assert_eq!(
            std::fs::read_to_string(upper.join("etc/shared")).unwrap(),
            format!("{i}\n"),
            "writes land in c{i}'s upper"
        );
    }
    // The image is unchanged and its layers exist once.
    let fresh = root.ok(&[
        "run",
        "--rm",
        "alpine",
        "sh",
        "-c",
        "ls / | grep -c '^only-'; test -e /etc/shared || echo clean",
    ]);
    assert_eq!(fresh, "0\nclean\n");
    assert_eq!(layer_dirs(&root), layers_before, "no layer was copied per container");
    for i in 0..10 {
        root.ok(&["rm", &format!("c{i}")]);
    }
}

fn mounts_mentioning(s: &str) -> usize {
    // Every process's mount namespace, not just ours: a leaked namespace would show up here.
    let mut n = 0;
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(info) = std::fs::read_to_string(p.path().join("mountinfo")) {
            n += info.lines().filter(|l| l.contains(s)).count();
        }
    }
    n
}

fn locks_on(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(path) else { return false };
    let needle = format!(":{:02x}:{}", 0, md.ino());
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| l.split_whitespace().nth(5).is_some_and(|f| f.ends_with(&format!(":{}", md.ino()))))
        || locks.contains(&needle)
}

#[test]
fn sigkill_of_rimg_run_leaves_nothing_behind() {
    sigkill_of_rimg_run(&[], "1001");
}

#[test]
fn sigkill_of_rimg_run_in_a_user_namespace_leaves_nothing_behind() {
    sigkill_of_rimg_run(&["--uidmap", "0:200000:65536"], "1011");
}

fn sigkill_of_rimg_run(flags: &[&str], secs: &str) {
    let root = Root::new();
    let mut args = vec!["run", "--name", "victim"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["alpine", "sleep", secs]);
    let mut child = common::rimg_cmd(root.path()).args(&args).spawn().expect("spawn");
    assert!(eventually(Duration::from_secs(20), || {
        root.container_ids()
            .first()
            .is_some_and(|id| root.try_state(id).is_some_and(|s| s["status"] == "running"))
    }));
    let id = root.id_of("victim");
    let st = root.state(&id);
    let (init, monitor) = (st["pid"].as_i64().unwrap() as i32, st["monitor_pid"].as_i64().unwrap() as i32);
    let cdir = root.path().join("containers").join(&id);
    assert!(
        !cgroup_left(&id).is_empty() && mounts_mentioning(&id) > 0 && locks_on(&cdir.join("monitor.lock"))
    );

    // SAFETY: SIGKILL our own child, the rimg run process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(
        eventually(Duration::from_secs(20), || {
            !std::path::Path::new(&format!("/proc/{monitor}")).exists()
                && !std::path::Path::new(&format!("/proc/{init}")).exists()
        }),
        "monitor and container exit"
    );
    assert!(cgroup_left(&id).is_empty(), "cgroups removed: {:?}", cgroup_left(&id));
    assert_eq!(mounts_mentioning(&id), 0, "no mount left in any namespace");
    assert!(common::run::processes_with(&format!("sleep {secs}")).is_empty(), "no process left");
    assert!(!locks_on(&cdir.join("monitor.lock")), "no lock left");
    let ps = root.ok(&["ps", "-a"]);
    assert!(ps.contains("victim") && ps.contains("Exited (137)"), "{ps}");
    root.ok(&["rm", "victim"]);
    assert!(!cdir.exists());
}

#[test]
fn killed_monitor_is_reconciled_by_ps() {
    killed_monitor(&[], "1002");
}

#[test]
fn killed_monitor_of_a_user_namespace_container_is_reconciled_by_ps() {
    // The init changed credentials in its user namespace, which clears a parent-death signal: it must
    // have been set again, or the container would outlive its monitor.
    killed_monitor(&["--uidmap", "0:200000:65536"], "1012");
}

fn killed_monitor(flags: &[&str], secs: &str) {
    let root = Root::new();
    let mut args = vec!["run", "-d", "--name", "orphan"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["alpine", "sleep", secs]);
    let id = root.ok(&args);
    let id = id.trim();
    let st = root.state(id);
    let monitor = st["monitor_pid"].as_i64().unwrap() as i32;
    // SIGKILL the monitor itself: the init dies with it (PDEATHSIG) but nobody records or cleans up.
    // SAFETY: kill(2) of the monitor we just started.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(10), || common::run::processes_with(&format!("sleep {secs}"))
        .is_empty()));
    // The init dies as soon as the monitor's forking thread does; the monitor's descriptors (and its
    // lock) go only when its last thread has exited: a zombie main thread is not enough, the FUSE
    // server threads may still be on their way out. ps reads the lock, so wait for all of them.
    assert!(
        eventually(Duration::from_secs(10), || {
            let zombie = std::fs::read_to_string(format!("/proc/{monitor}/stat"))
                .map(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
                .unwrap_or(true);
            let threads = std::fs::read_dir(format!("/proc/{monitor}/task")).map(|d| d.count()).unwrap_or(0);
            zombie && threads <= 1
        }),
        "the killed monitor's threads did not all exit: {:?}",
        std::fs::read_dir(format!("/proc/{monitor}/task"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect::<Vec<_>>())
    );
    let ps = root.ok(&["ps", "-a"]);
    assert!(ps.contains("orphan") && ps.contains("Exited (137)"), "{ps}");
    assert!(cgroup_left(id).is_empty(), "reconciled cgroups: {:?}", cgroup_left(id));
    assert_eq!(mounts_mentioning(id), 0);
    root.ok(&["rm", "orphan"]);
}

/// Turns the kernel's FUSE-over-io_uring switch on while it lives and restores it on drop.
struct UringOffered(Option<String>);

impl UringOffered {
    const PARAM: &'static str = "/sys/module/fuse/parameters/enable_uring";
    fn enable() -> UringOffered {
        let old = std::fs::read_to_string(Self::PARAM).ok();
        assert!(old.is_some(), "this kernel has no FUSE over io_uring ({})", Self::PARAM);
        std::fs::write(Self::PARAM, "1").expect("enable fuse.enable_uring");
        UringOffered(old)
    }
}

impl Drop for UringOffered {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(Self::PARAM, if old.trim() == "Y" { "1" } else { "0" });
        }
    }
}

#[test]
fn a_container_rootfs_stays_on_dev_fuse_where_io_uring_is_offered() {
    // The monitor serves the rootfs from its own private mount namespace: were it on io_uring, a
    // SIGKILLed monitor's exit would unmount while its queue threads can no longer answer.
    let _uring = UringOffered::enable();
    let root = Root::new();
    let id = root.ok(&["run", "-d", "--name", "ring", "alpine", "sleep", "60"]);
    let id = id.trim();
    let monitor = root.state(id)["monitor_pid"].as_i64().unwrap() as i32;
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{monitor}/task"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|c| c.trim_end().to_string())
        .collect();
    root.ok(&["rm", "-f", "ring"]);
    assert!(names.iter().any(|n| n.starts_with("fuser-")), "the monitor serves the rootfs: {names:?}");
    assert!(!names.iter().any(|n| n.starts_with("fuser-uring")), "no io_uring queue threads: {names:?}");
}
