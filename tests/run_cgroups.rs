//! cgroup limits on this machine's v1/hybrid layout, and the v2 code path on a private cgroup2 mount.

#[path = "run_support.rs"]
mod run_support;

use run_support::{cgroup_left, code, stderr, stdout, Root};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn cgroup_file(root: &Root, id: &str, file: &str) -> PathBuf {
    let st = root.state(id);
    st["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| Path::new(d.as_str().unwrap()).join(file))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no {file} in {:?}", st["cgroups"]))
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    let root = Root::new();
    let out = root.rimg(&[
        "run",
        "--name",
        "hog",
        "-m",
        "32m",
        "alpine",
        "sh",
        "-c",
        "x=$(head -c 200m /dev/zero | tr '\\0' x); echo survived",
    ]);
    assert_eq!(code(&out), 137, "stdout {} stderr {}", stdout(&out), stderr(&out));
    let id = root.id_of("hog");
    assert_eq!(root.state(&id)["oom_killed"], true);
    assert!(root.ok(&["ps", "-a"]).contains("OOMKilled"));
    assert!(cgroup_left(&id).is_empty());
}

#[test]
fn fork_bomb_is_contained_by_pids_limit() {
    let root = Root::new();
    let id = root.ok(&["run", "-d", "--pids-limit", "64", "alpine", "sleep", "1000"]);
    let id = id.trim();
    // The bomb forks until the kernel refuses (then the shell gives up); its children stay behind.
    let out =
        root.rimg(&["exec", id, "sh", "-c", "while :; do sleep 1000 </dev/null >/dev/null 2>&1 & done"]);
    assert_ne!(code(&out), 0, "the bomb hit a wall");
    let current: u64 =
        std::fs::read_to_string(cgroup_file(&root, id, "pids.current")).unwrap().trim().parse().unwrap();
    let events = std::fs::read_to_string(cgroup_file(&root, id, "pids.events")).unwrap();
    // The host is fine: we can still start a container next to it.
    root.ok(&["run", "--rm", "alpine", "true"]);
    root.ok(&["rm", "-f", id]);
    assert!(current <= 64 && current > 32, "{current} tasks under a limit of 64");
    assert!(events.lines().any(|l| l.strip_prefix("max ").is_some_and(|n| n.trim() != "0")), "{events}");
    assert!(cgroup_left(id).is_empty());
}

#[test]
fn cpus_half_is_throttled() {
    let root = Root::new();
    let id = root.ok(&[
        "run",
        "-d",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "alpine",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let id = id.trim();
    let quota = std::fs::read_to_string(cgroup_file(&root, id, "cpu.cfs_quota_us")).unwrap();
    assert_eq!(quota.trim(), "50000");
    assert_eq!(std::fs::read_to_string(cgroup_file(&root, id, "cpu.shares")).unwrap().trim(), "512");
    let stat = cgroup_file(&root, id, "cpu.stat");
    let throttled = run_support::eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&stat).unwrap_or_default().lines().any(|l| {
            l.strip_prefix("nr_throttled ").is_some_and(|n| n.trim().parse::<u64>().unwrap_or(0) > 0)
        })
    });
    root.ok(&["rm", "-f", id]);
    assert!(throttled, "cpu.stat shows throttling");
    assert!(cgroup_left(id).is_empty());
}

/// A loop device with an ext4 filesystem mounted on the host, detached on drop.
struct LoopFs {
    dev: String,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    fn new() -> LoopFs {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(1 << 30).unwrap();
        let out = Command::new("losetup").args(["-f", "--show"]).arg(&img).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let lfs = LoopFs { dev, mnt, _dir: dir };
        assert!(Command::new("mkfs.ext4").args(["-q", &lfs.dev]).status().unwrap().success());
        assert!(Command::new("mount").arg(&lfs.dev).arg(&lfs.mnt).status().unwrap().success());
        lfs
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn device_write_bps_throttles_direct_writes() {
    let root = Root::new();
    let lfs = LoopFs::new();
    let vol = format!("{}:/data", lfs.mnt.display());
    let rate = format!("{}:1mb", lfs.dev);
    let start = Instant::now();
    let out = root.rimg(&[
        "run",
        "--name",
        "io",
        "--device-write-bps",
        &rate,
        "-v",
        &vol,
        "alpine",
        "dd",
        "if=/dev/zero",
        "of=/data/f",
        "bs=64k",
        "count=32",
        "oflag=direct",
    ]);
    let elapsed = start.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let id = root.id_of("io");
    assert_eq!(std::fs::metadata(lfs.mnt.join("f")).unwrap().len(), 2 << 20);
    // 2 MiB at 1 MiB/s takes about 2 s (the first second's budget is granted at once): a generous bound
    // that an unthrottled direct write (milliseconds) cannot meet.
    assert!(elapsed >= Duration::from_millis(900), "2 MiB at 1 MiB/s took only {elapsed:?}");
    root.ok(&["rm", &id]);
}

#[test]
fn device_write_bps_throttles_writes_through_the_fuse_rootfs() {
    // The container's upper lives on the throttled device: the FUSE server (in the container's blkio
    // cgroup) or passthrough (the caller's own I/O) must be throttled like the container itself.
    let lfs = LoopFs::new();
    let root = Root::new_in(&lfs.mnt);
    let rate = format!("{}:1mb", lfs.dev);
    let start = Instant::now();
    let out = root.rimg(&[
        "run",
        "--rm",
        "--device-write-bps",
        &rate,
        "alpine",
        "dd",
        "if=/dev/zero",
        "of=/f",
        "bs=64k",
        "count=32",
        "oflag=direct",
    ]);
    let elapsed = start.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(elapsed >= Duration::from_millis(900), "2 MiB at 1 MiB/s through FUSE took only {elapsed:?}");
    drop(root);
}

#[test]
fn cgroup_v2_on_a_private_hierarchy() {
    // A private mount namespace with its own cgroup2 mount; RIMG_CGROUP_ROOT points rimg at it. On this
    // hybrid host the controllers are bound to v1, so v2 limit files are absent: the test covers
    // creation, process placement, cgroup namespaces and cleanup (limits are exercised on v1 above).
    let root = Root::new();
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().display().to_string();
    let rimg = format!("{} --root {}", run_support::support::rimg_bin().display(), root.path().display());
    let script = format!(
        "set -e; mount -t cgroup2 none {m}; export RIMG_CGROUP_ROOT={m}; \
         id=$({rimg} run -d alpine sleep 30); \
         echo procs=$(cat {m}/rimg/$id/cgroup.procs | wc -l); \
         {rimg} exec $id grep ^0:: /proc/self/cgroup; \
         {rimg} run --rm alpine grep ^0:: /proc/1/cgroup; \
         {rimg} run --rm alpine grep CapEff /proc/self/status; \
         {rimg} rm -f $id >/dev/null; \
         test -e {m}/rimg/$id && echo LEFT || echo removed"
    );
    let out = run_support::run_with_deadline(
        Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]),
        Duration::from_secs(60),
    );
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    // procs: the init and the monitor serving its FUSE rootfs.
    // Without a device cgroup (v2 needs eBPF for it) CAP_MKNOD is withheld: docker's 14 minus bit 27.
    assert_eq!(stdout(&out), "procs=2\n0::/\n0::/\nCapEff:\t00000000a00425fb\nremoved\n", "{}", stderr(&out));
}
