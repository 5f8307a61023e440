//! cgroup limits on this machine's v1/hybrid layout, and the v2 code path on a private cgroup2 mount.

mod common;

use common::run::{cgroup_left, code, host_block_device, stderr, stdout, Root};
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

/// Issue 19: a container without `--pids-limit` gets podman's default limit (a fork bomb cannot take the
/// host's pid space); `--pids-limit -1` (or 0) lifts it.
#[test]
fn pids_limit_defaults_to_2048() {
    let root = Root::new();
    for (flags, want) in
        [(&[][..], "2048"), (&["--pids-limit", "-1"][..], "max"), (&["--pids-limit", "0"][..], "max")]
    {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["alpine", "sleep", "1000"]);
        let id = root.ok(&args).trim().to_string();
        let max = std::fs::read_to_string(cgroup_file(&root, &id, "pids.max")).unwrap();
        root.ok(&["rm", "-f", &id]);
        assert_eq!(max.trim(), want, "{flags:?}");
    }
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
    let throttled = common::eventually(Duration::from_secs(10), || {
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

/// The cgroup2 mount of this host (the hybrid `unified` mount here), for cleaning up after v2 tests.
fn host_cgroup2() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4).map(PathBuf::from))?
    })
}

/// Runs `body` (a shell script) in a private mount namespace with its own cgroup2 mount at `$M`, which
/// `RIMG_CGROUP_ROOT` points rimg at, and `$RIMG` running rimg on `root`. Output goes to files, not pipes,
/// so a container left hanging cannot keep the test waiting past its deadline; dropping the guard kills
/// whatever the script's containers left in their cgroups on the (host-wide) cgroup2 hierarchy and
/// removes those cgroups.
struct V2<'a> {
    root: &'a Root,
}

impl V2<'_> {
    fn run(&self, body: &str) -> std::process::Output {
        let mnt = tempfile::tempdir().unwrap();
        let script = format!(
            "set -e; M={m}; mount -t cgroup2 none $M; export RIMG_CGROUP_ROOT=$M; \
             RIMG='{rimg} --root {root}'; {body}",
            m = mnt.path().display(),
            rimg = common::rimg_bin().display(),
            root = self.root.path().display(),
        );
        let (out, err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                self.kill_containers();
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let read = |mut f: std::fs::File| {
            use std::io::{Read, Seek};
            let mut v = Vec::new();
            f.rewind().unwrap();
            f.read_to_end(&mut v).unwrap();
            v
        };
        std::process::Output { status, stdout: read(out), stderr: read(err) }
    }

    /// SIGKILL every process in the cgroup2 cgroups of this root's containers and remove those cgroups.
    fn kill_containers(&self) {
        let Some(cg2) = host_cgroup2() else { return };
        for id in self.root.container_ids() {
            let dir = cg2.join("rimg").join(&id);
            if !dir.exists() {
                continue;
            }
            common::eventually(Duration::from_secs(10), || {
                if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: kill(2) of a process left in a test container's cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                std::fs::remove_dir(&dir).is_ok()
            });
        }
    }
}

impl Drop for V2<'_> {
    fn drop(&mut self) {
        self.kill_containers();
    }
}

#[test]
fn cgroup_v2_on_a_private_hierarchy() {
    // A private mount namespace with its own cgroup2 mount; RIMG_CGROUP_ROOT points rimg at it. On this
    // hybrid host the controllers are bound to v1, so v2 limit files are absent: the test covers
    // creation, process placement, cgroup namespaces and cleanup (limits are exercised on v1 above).
    let root = Root::new();
    let v2 = V2 { root: &root };
    let out = v2.run(
        "id=$($RIMG run -d alpine sleep 30); \
         echo procs=$(cat $M/rimg/$id/cgroup.procs | wc -l); \
         $RIMG exec $id grep ^0:: /proc/self/cgroup; \
         $RIMG exec $id grep CapEff /proc/self/status; \
         $RIMG run --rm alpine grep ^0:: /proc/1/cgroup; \
         $RIMG run --rm alpine grep CapEff /proc/self/status; \
         $RIMG rm -f $id >/dev/null; \
         test -e $M/rimg/$id && echo LEFT || echo removed",
    );
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    // procs: the init and the monitor serving its FUSE rootfs.
    // The eBPF device filter guards device access, so CAP_MKNOD is given as on v1: docker's 14, also to
    // `exec`, which finds the filter attached to the container's cgroup.
    let caps = "CapEff:\t00000000a80425fb\n";
    assert_eq!(stdout(&out), format!("procs=2\n0::/\n{caps}0::/\n{caps}removed\n"), "{}", stderr(&out));
}

/// The device probe run inside containers: the allowed nodes work, mknod works, and each made node
/// reports whether it opens (`NAME opened`) or the error (`NAME: …`).
fn device_probe(block: &str) -> String {
    format!(
        "o() {{ if (exec 3<>$1) 2>/tmp/err; then echo $2 opened; else echo $2: $(cat /tmp/err); fi; }}; \
         echo x >/dev/null && echo null ok; \
         echo zero $(head -c 3 /dev/zero | wc -c); \
         echo urandom $(head -c 5 /dev/urandom | wc -c); \
         mknod /dev/blk b {block} && echo mknod blk ok; \
         mknod /dev/kmsg1 c 1 11 && echo mknod kmsg ok; \
         if (exec 3</dev/blk) 2>/tmp/err; then echo blk opened; else echo blk: $(cat /tmp/err); fi; \
         if (exec 3>/dev/kmsg1) 2>/tmp/err; then echo kmsg opened; else echo kmsg: $(cat /tmp/err); fi; \
         o /dev/full full"
    )
}

#[test]
fn cgroup_v2_device_filter_allows_the_standard_devices_only() {
    // On v2 the allowlist is an eBPF program on the container's cgroup. The hybrid kernel here runs the
    // program of a task's cgroup2 cgroup for every device open, so the private hierarchy exercises it
    // for real (the test's own v1 devices cgroup allows everything: see the privileged run).
    let root = Root::new();
    let v2 = V2 { root: &root };
    let block = host_block_device();
    let probe = device_probe(&block);
    let out = v2.run(&format!(
        "echo == default; $RIMG run --rm alpine sh -c '{probe}'; \
         echo == pty; $RIMG run --rm -t alpine sh -c 'test -t 0 && exec 4<>/dev/tty && echo pty ok'; \
         echo == privileged; $RIMG run --rm --privileged alpine sh -c '{probe}'"
    ));
    let text = stdout(&out).replace('\r', "");
    assert_eq!(code(&out), 0, "{text}\n{}", stderr(&out));
    let section = |name: &str| -> Vec<String> {
        let start = text.find(&format!("== {name}\n")).unwrap_or_else(|| panic!("no {name} in {text}"));
        text[start..].lines().skip(1).take_while(|l| !l.starts_with("== ")).map(str::to_string).collect()
    };
    let (default, privileged) = (section("default"), section("privileged"));
    assert!(default.len() == 8 && privileged.len() == 8, "{text}");
    let eperm = "Operation not permitted";
    // (a) the nodes rimg makes work; (b) mknod of anything works but a host block device does not open;
    // (c) nor does a character device off the list (/dev/kmsg, which root may open write-only).
    assert_eq!(&default[..5], ["null ok", "zero 3", "urandom 5", "mknod blk ok", "mknod kmsg ok"], "{text}");
    assert!(default[5].starts_with("blk:") && default[5].contains(eperm), "{text}");
    assert!(default[6].starts_with("kmsg:") && default[6].contains(eperm), "{text}");
    assert_eq!(default[7], "full opened", "{text}");
    assert_eq!(section("pty"), ["pty ok"], "{text}");
    // The counter-check: without the filter (privileged) the same nodes open, so the denials above are
    // the filter's doing and not the kernel's or a nodev mount's.
    assert_eq!(privileged[5..7], ["blk opened", "kmsg opened"], "{text}");
}

/// The monitor serving a container's rootfs is never the OOM killer's choice inside the container's
/// memory cgroup: either it lowered its oom_score_adj (root with CAP_SYS_RESOURCE), or, where it could
/// not (this machine), it stays out of that cgroup. Otherwise a hog whose init is killed can take the
/// monitor down next, losing the exit status and the OOMKilled verdict.
#[test]
fn the_monitor_is_no_candidate_of_the_containers_oom_killer() {
    let root = Root::new();
    let id = root.ok(&["run", "-d", "-m", "32m", "alpine", "sleep", "1000"]);
    let id = id.trim().to_string();
    let st = root.state(&id);
    let monitor = st["monitor_pid"].as_i64().unwrap();
    let adj = std::fs::read_to_string(format!("/proc/{monitor}/oom_score_adj")).unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{monitor}/cgroup")).unwrap();
    root.ok(&["rm", "-f", &id]);
    // the memory controller's line (v1) or the unified one (v2, which has no separate memory line)
    let memory_line = cgroups
        .lines()
        .find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == "memory")))
        .or_else(|| cgroups.lines().find(|l| l.starts_with("0::")))
        .unwrap_or("")
        .to_string();
    assert!(
        adj.trim() == "-999" || !memory_line.contains(&id),
        "monitor oom_score_adj {} and in the container's memory cgroup: {memory_line}",
        adj.trim()
    );
    assert!(cgroup_left(&id).is_empty());
}
