//! `rimg commit` of a running container cannot read host files (issue 19, finding 2; CVE-2018-15664's
//! shape, `docker cp`/commit against a container that swaps paths while they are read).
//!
//! The container swaps, as fast as it can, directories holding a decoy `secret` with symlinks to a host
//! directory holding the real one. A walk that checks a path and then uses it again (the old
//! `read_dir`/`symlink_metadata`/`open` walk) reads the host file into the layer within a few commits.
//! Each test makes a bounded number of commits; no committed layer may hold the host file's content —
//! with the container paused (the default) and without (`--pause=false`: the descriptor walk alone must
//! be safe). A commit that fails while the container is paused must leave it running.

mod common;

use common::eventually;
use common::run::{code, stderr, Root};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Two processes, each swapping four (directory, symlink) pairs under /race: `x` is in turn the decoy
/// directory and the symlink `l` to the host directory given as the first argument. Where the filesystem
/// has `renameat2(RENAME_EXCHANGE)` (kernel overlayfs; its syscall number is the second argument) one
/// call swaps the two names, so `x` is never missing and a walk racing it wins within a few commits;
/// elsewhere (rimg's FUSE overlay) four plain renames do it. `ready-N` says which.
const SWAPPER: &str = r#"
my ($host, $nr) = @ARGV;
mkdir "/race";
for my $p (0..1) {
    next if fork();
    my @dirs = map { "/race/$p-$_" } 0..3;
    for my $d (@dirs) {
        mkdir $d; mkdir "$d/x";
        open(my $f, ">", "$d/x/secret") or die "decoy: $!"; print $f "decoy\n"; close $f;
        symlink($host, "$d/l") or die "link: $!";
    }
    my $exchange = $nr && syscall($nr, -100, "$dirs[0]/x", -100, "$dirs[0]/l", 2) == 0;
    open(my $r, ">", "/race/ready-$p") or die; print $r ($exchange ? "exchange" : "rename"); close $r;
    while (1) {
        for my $d (@dirs) {
            if ($exchange) {
                syscall($nr, -100, "$d/x", -100, "$d/l", 2);
            } else {
                rename("$d/x", "$d/d"); rename("$d/l", "$d/x");
                rename("$d/x", "$d/l"); rename("$d/d", "$d/x");
            }
        }
    }
}
sleep;
"#;

/// `renameat2`'s syscall number on this machine (0: unknown here, plain renames only).
fn renameat2_nr() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "316",
        "aarch64" => "276",
        _ => "0",
    }
}

/// Commits per test: the old walk leaked within ~10.
const COMMITS: usize = 30;

/// A running swapper container and the host directory its links point to.
struct Race {
    root: Root,
    id: String,
    host: tempfile::TempDir,
    marker: String,
    layers_before: HashSet<PathBuf>,
}

impl Race {
    /// The swapper in a container with `flags` (the storage driver); `exchange`: it must swap with
    /// RENAME_EXCHANGE.
    fn start(flags: &[&str], exchange: bool) -> Race {
        let root = Root::new();
        let host = tempfile::Builder::new().prefix("rimg-commit-host-").tempdir().expect("host dir");
        let marker = format!("host-secret-{}-{}", std::process::id(), host.path().display());
        std::fs::write(host.path().join("secret"), &marker).unwrap();
        let hp = host.path().to_str().unwrap();
        let mut args = vec!["run", "-d", "--name", "racer"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["centos:latest", "perl", "-e", SWAPPER, hp, renameat2_nr()]);
        root.ok(&args);
        let id = root.id_of("racer");
        let upper = root.path().join("containers").join(&id).join("upper/race");
        let ready = eventually(Duration::from_secs(30), || {
            upper.join("ready-0").exists() && upper.join("ready-1").exists()
        });
        assert!(ready, "the swapper did not start: {}", stderr(&root.rimg(&["logs", "racer"])));
        let how = std::fs::read_to_string(upper.join("ready-0")).unwrap_or_default();
        assert!(!exchange || how == "exchange", "no RENAME_EXCHANGE with {flags:?}: {how}");
        let layers_before = layer_dirs(root.path());
        Race { root, id, host, marker, layers_before }
    }

    /// `rimg commit FLAGS racer race:N`, `n` times; the errors of those that failed.
    fn commit(&self, flags: &[&str], n: usize) -> Vec<String> {
        let mut failed = Vec::new();
        for i in 0..n {
            let tag = format!("race:{i}");
            let mut args = vec!["commit"];
            args.extend_from_slice(flags);
            args.extend_from_slice(&["racer", &tag]);
            let out = self.root.rimg(&args);
            if code(&out) != 0 {
                failed.push(format!("commit {i} {flags:?}: {}", stderr(&out)));
            }
        }
        failed
    }

    /// Files of the layers committed since the start that contain `needle`.
    fn committed_files_with(&self, needle: &[u8]) -> Vec<PathBuf> {
        let new: Vec<PathBuf> =
            layer_dirs(self.root.path()).into_iter().filter(|d| !self.layers_before.contains(d)).collect();
        assert!(!new.is_empty(), "no layer was committed");
        new.iter().flat_map(|d| files_containing(d, needle)).collect()
    }

    /// Assert no committed layer holds the host file, and that the walk did reach the racing pairs.
    fn assert_no_leak(&self) {
        let leaked = self.committed_files_with(self.marker.as_bytes());
        assert!(
            leaked.is_empty(),
            "commits copied the host file, {} times, e.g. {:?}",
            leaked.len(),
            &leaked[..1]
        );
        assert!(!self.committed_files_with(b"decoy").is_empty(), "the commits never saw a racing directory");
        assert!(self.host.path().join("secret").exists());
    }

    /// The container's freezer state: `Some(true)` while frozen.
    fn frozen(&self) -> Option<bool> {
        let st = self.root.state(&self.id);
        let dirs: Vec<PathBuf> =
            st["cgroups"].as_array()?.iter().filter_map(|d| d.as_str().map(PathBuf::from)).collect();
        dirs.iter().find_map(|d| {
            if let Ok(s) = std::fs::read_to_string(d.join("freezer.state")) {
                return Some(s.trim() != "THAWED");
            }
            let events = std::fs::read_to_string(d.join("cgroup.events")).ok()?;
            Some(events.lines().any(|l| l.trim() == "frozen 1"))
        })
    }
}

/// The unpacked layers of a root.
fn layer_dirs(root: &Path) -> HashSet<PathBuf> {
    std::fs::read_dir(root.join("layers/sha256")).into_iter().flatten().flatten().map(|e| e.path()).collect()
}

/// Files below `dir` (symlinks not followed) whose content contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(m) = p.symlink_metadata() else { continue };
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file()
                && std::fs::read(&p).is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
            {
                hits.push(p);
            }
        }
    }
    hits
}

#[test]
fn commit_of_a_swapping_container_never_reads_host_files() {
    let race = Race::start(&["--storage-driver", "overlay"], true);
    let failed = race.commit(&[], COMMITS);
    race.assert_no_leak();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(race.frozen(), Some(false), "the container was left paused");
}

#[test]
fn unpaused_commit_of_a_swapping_container_never_reads_host_files() {
    let race = Race::start(&["--storage-driver", "overlay"], true);
    let mut failed = race.commit(&["--pause=false"], COMMITS / 2);
    failed.extend(race.commit(&["-p=false"], COMMITS - COMMITS / 2));
    race.assert_no_leak();
    // Entries that vanish or turn into something else mid-walk are no reason to fail.
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn a_commit_that_fails_while_paused_leaves_the_container_running() {
    // The default driver: the container's rootfs is served by its monitor while it is paused.
    let race = Race::start(&[], false);
    // A metadata-only copy-up whose data is in no lower layer: the diff fails mid-walk, while paused.
    let upper = race.root.path().join("containers").join(&race.id).join("upper");
    let broken = upper.join("broken");
    std::fs::write(&broken, b"").unwrap();
    let set = std::process::Command::new("setfattr")
        .args(["-n", "trusted.overlay.metacopy", "-v", "y"])
        .arg(&broken)
        .status()
        .expect("setfattr");
    assert!(set.success());
    let out = race.root.rimg(&["commit", "racer", "broken:1"]);
    assert_ne!(code(&out), 0, "the commit of a broken upper succeeded");
    assert!(stderr(&out).contains("metadata-only copy-up"), "{}", stderr(&out));
    assert_eq!(race.frozen(), Some(false), "a failed commit left the container paused");
    // And it still runs: its processes answer.
    let out = race.root.rimg(&["exec", "racer", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// The host's cgroup2 mount (the hybrid `unified` one here).
fn host_cgroup2() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4).map(PathBuf::from))?
    })
}

/// Kills what the containers of `root` left in their cgroup2 cgroups and removes those, on drop.
struct V2Cleanup<'a>(&'a Root);

impl Drop for V2Cleanup<'_> {
    fn drop(&mut self) {
        let Some(cg2) = host_cgroup2() else { return };
        for id in self.0.container_ids() {
            let dir = cg2.join("rimg").join(&id);
            let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
            eventually(Duration::from_secs(10), || {
                for pid in std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        // SAFETY: kill(2) of a process left in a test container's cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                !dir.exists() || std::fs::remove_dir(&dir).is_ok()
            });
        }
    }
}

#[test]
fn commit_pauses_a_busy_container_on_cgroup_v2() {
    // On cgroup v2 the monitor (the FUSE server of the rootfs) shares the container's cgroup: frozen with
    // it, a container process waiting for a FUSE reply never stops and the pause never completes. The
    // container here keeps its rootfs busy; each commit must pause it within the freezer's time limit,
    // thaw it, and put the monitor back. A private cgroup2 mount (RIMG_CGROUP_ROOT) stands in for a
    // cgroup2 host.
    let root = Root::new();
    let _cleanup = V2Cleanup(&root);
    let mnt = tempfile::tempdir().unwrap();
    let script = format!(
        "set -e; M={m}; mount -t cgroup2 none $M; export RIMG_CGROUP_ROOT=$M; R='{rimg} --root {root}'; \
         id=$($R run -d alpine sh -c 'while :; do echo x > /f; rm /f; mkdir /d; rmdir /d; done'); \
         for i in 1 2 3 4 5; do $R commit $id v2:$i >/dev/null; done; \
         grep frozen $M/rimg/$id/cgroup.events; \
         mon=$(sed -n 's/.*\"monitor_pid\": *\\([0-9]*\\).*/\\1/p' {root}/containers/$id/state.json); \
         grep -qx \"$mon\" $M/rimg/$id/cgroup.procs && echo monitor back; \
         $R rm -f $id >/dev/null",
        m = mnt.path().display(),
        rimg = common::rimg_bin().display(),
        root = root.path().display(),
    );
    let out = common::run::run_with_deadline(
        std::process::Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]),
        Duration::from_secs(120),
    );
    assert_eq!(code(&out), 0, "{}\n{}", common::run::stdout(&out), stderr(&out));
    assert_eq!(common::run::stdout(&out), "frozen 0\nmonitor back\n", "{}", stderr(&out));
}
