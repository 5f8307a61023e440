//! FUSE over io_uring (`fuse.enable_uring=1`, kernel 6.14+): requests really go through the per-CPU
//! rings (the queue threads wake once per request, the /dev/fuse readers not at all), the results
//! match kernel overlayfs, a starved queue thread gets an ordinary CPU share back, and every way a
//! connection can end (umount while busy, abort, a SIGKILLed `rimg overlayfs`, many mount cycles)
//! ends the queue threads and leaves no mount, thread or fd behind.
//!
//! The tests flip the kernel's global switch, so they run one at a time and restore it on drop.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::fs::*;
use rimg::fs::MountOptions;

const RIMG: &str = env!("CARGO_BIN_EXE_rimg");

/// Wait until the mount's queue threads run (the mount is served from a thread started after it returns).
fn wait_for_queues() -> Vec<i32> {
    wait_until("queue threads", || uring_threads().len() == possible_cpus());
    uring_threads()
}

fn uring_opts() -> MountOptions {
    MountOptions { uring: true, ..kernel_like_options() }
}

fn possible_cpus() -> usize {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    s.trim().split(',').map(|p| p.rsplit('-').next().unwrap().parse::<usize>().unwrap()).max().unwrap() + 1
}

/// How many times a thread of this process has been scheduled in (`/proc/.../schedstat`, 3rd field).
fn runs(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(0)
}

fn threads_named(prefix: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .map(|c| c.trim_end().starts_with(prefix))
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn policy(tid: i32) -> i32 {
    // SAFETY: plain syscall.
    unsafe { libc::sched_getscheduler(tid) }
}

fn xattr_probe(p: &Path) {
    let c = cpath(p);
    let name = std::ffi::CString::new("user.none").unwrap();
    let mut b = [0u8; 16];
    // SAFETY: valid strings and buffer; the result (ENODATA) does not matter, the round trip does.
    unsafe { libc::getxattr(c.as_ptr(), name.as_ptr(), b.as_mut_ptr().cast(), b.len()) };
}

#[test]
fn requests_go_through_the_rings_one_queue_thread_per_cpu() {
    let _serial = serial();
    let _uring = UringEnabled::enable();
    let s = Scratch::new();
    let m = s.path("m");
    let mnt = rimg::fs::mount(layered_config(&s), &m, &uring_opts()).expect("mount");
    assert_eq!(std::fs::read_to_string(m.join("file1")).unwrap(), "l1 file1\n");
    let queues = wait_for_queues();
    assert_eq!(queues.len(), possible_cpus(), "one queue thread per possible CPU");
    let readers = threads_named("fuser-");
    let readers: Vec<i32> = readers.into_iter().filter(|t| !queues.contains(t)).collect();
    let before_q: u64 = queues.iter().map(|&t| runs(t)).sum();
    let before_r: Vec<u64> = readers.iter().map(|&t| runs(t)).collect();
    let n = 2000u64;
    for _ in 0..n {
        xattr_probe(&m.join("file1"));
    }
    let after_q: u64 = queues.iter().map(|&t| runs(t)).sum();
    let after_r: Vec<u64> = readers.iter().map(|&t| runs(t)).collect();
    assert!(after_q - before_q >= n, "{n} requests woke the queue threads only {} times", after_q - before_q);
    // the /dev/fuse readers carry only FORGET and INTERRUPT: a few wakeups at most
    for ((t, b), a) in readers.iter().zip(&before_r).zip(&after_r) {
        assert!(a - b < 20, "/dev/fuse thread {t} woke {} times", a - b);
    }
    // the queue threads are still there: none gave up on its ring
    assert_eq!(uring_threads().len(), possible_cpus());
    mnt.unmount().expect("unmount");
    assert_eq!(fuse_threads(), 0, "no server thread left");
}

#[test]
fn through_io_uring_the_merged_tree_matches_kernel_overlayfs() {
    let _serial = serial();
    let _uring = UringEnabled::enable();
    // SAFETY: umask is process-wide; both mounts see the same one.
    unsafe { libc::umask(0o022) };
    let s = Scratch::new();
    let (kl1, kl2, ku, kw, km) =
        (s.path("k/l1"), s.path("k/l2"), s.path("k/u"), s.path("k/w"), s.path("k/m"));
    let (rl1, rl2, ru, rw, rm) =
        (s.path("r/l1"), s.path("r/l2"), s.path("r/u"), s.path("r/w"), s.path("r/m"));
    build_lowers(&kl1, &kl2);
    build_lowers(&rl1, &rl2);
    let kmount = kernel_mount(&[kl1, kl2], Some((&ku, &kw)), &km, "").expect("kernel mount");
    let rmount = rimg_mount(&[rl1, rl2], Some((&ru, &rw)), &rm, &uring_opts());
    wait_for_queues();
    for m in [&km, &rm] {
        let data = vec![7u8; 300_000];
        std::fs::write(m.join("big"), &data).unwrap();
        std::fs::write(m.join("dir1/f2"), "changed\n").unwrap();
        std::fs::remove_file(m.join("dir2/g")).unwrap();
        std::fs::remove_dir(m.join("dir2")).unwrap();
        std::fs::create_dir(m.join("dir2")).unwrap();
        std::fs::rename(m.join("file1"), m.join("dir2/moved")).unwrap();
        std::os::unix::fs::symlink("dir2/moved", m.join("link")).unwrap();
        std::fs::hard_link(m.join("big"), m.join("big2")).unwrap();
        chmod(&m.join("ro_file"), 0o640);
        set_xattr(&m.join("dir1"), "user.k", b"v");
        let f = std::fs::OpenOptions::new().write(true).open(m.join("big")).unwrap();
        f.set_len(12345).unwrap();
        drop(f);
        for i in 0..200 {
            std::fs::write(m.join(format!("dir1/n{i}")), format!("{i}\n")).unwrap();
        }
        for i in (0..200).step_by(3) {
            std::fs::remove_file(m.join(format!("dir1/n{i}"))).unwrap();
        }
    }
    let a = snapshot(&km, &|n| kernel_private_xattr(n), true);
    let b = snapshot(&rm, &|n| kernel_private_xattr(n), true);
    if let Some(d) = diff(&a, &b) {
        panic!("merged trees differ (kernel vs rimg over io_uring): {d}");
    }
    drop(rmount);
    drop(kmount);
    let a = snapshot(&ku, &|n| kernel_private_xattr(n), true);
    let b = snapshot(&ru, &|n| kernel_private_xattr(n), true);
    if let Some(d) = diff(&a, &b) {
        panic!("upper directories differ (kernel vs rimg over io_uring): {d}");
    }
}

/// CPU hogs at the highest priority, pinned one or more per CPU; killed on drop.
struct Hogs(Vec<std::process::Child>);

impl Hogs {
    fn start(per_cpu: usize) -> Hogs {
        let mut v = Vec::new();
        for _ in 0..per_cpu {
            for cpu in 0..possible_cpus() {
                v.push(
                    Command::new("nice")
                        .args([
                            "-n",
                            "-20",
                            "taskset",
                            "-c",
                            &cpu.to_string(),
                            "sh",
                            "-c",
                            "while :; do :; done",
                        ])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("start a CPU hog"),
                );
            }
        }
        Hogs(v)
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Probe the mount 300 times beside high-priority CPU hogs on every CPU (beside which a SCHED_IDLE
/// thread gets nothing). Returns whether the probes starved (did not finish within a liveness bound,
/// far above the second or so they take) and whether a queue thread was seen SCHED_OTHER meanwhile.
fn probe_beside_hogs(m: &Path, queues: &[i32]) -> (bool, bool) {
    let hogs = Hogs::start(2);
    let saw_other = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let starved = std::thread::scope(|sc| {
        sc.spawn(|| {
            while !done.load(Ordering::Acquire) {
                if queues.iter().any(|&t| policy(t) == libc::SCHED_OTHER) {
                    saw_other.store(true, Ordering::Release);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let prober = sc.spawn(|| {
            for _ in 0..300 {
                xattr_probe(&m.join("file1"));
            }
            done.store(true, Ordering::Release);
        });
        // without the guard the probes wait for as long as the hogs run; stopping them lets the
        // probes finish
        let start = Instant::now();
        while !prober.is_finished() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let starved = !prober.is_finished();
        drop(hogs);
        starved
    });
    (starved, saw_other.load(Ordering::Acquire))
}

fn busy(m: &Path, queues: &[i32]) {
    // the guard lets busy queue threads go SCHED_IDLE (callers then stay on their CPU) once the
    // SCHED_OTHER hold of an earlier starvation has run out (up to 30 s when it recurred often)
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(600)
        || (start.elapsed() < Duration::from_secs(45)
            && !queues.iter().any(|&t| policy(t) == libc::SCHED_IDLE))
    {
        xattr_probe(&m.join("file1"));
    }
    assert!(
        queues.iter().any(|&t| policy(t) == libc::SCHED_IDLE),
        "a busy queue thread runs SCHED_IDLE (policies {:?})",
        queues.iter().map(|&t| policy(t)).collect::<Vec<_>>()
    );
}

#[test]
fn a_starved_queue_thread_gets_an_ordinary_share_back() {
    let _serial = serial();
    let _uring = UringEnabled::enable();
    let s = Scratch::new();
    let m = s.path("m");
    let mnt = rimg::fs::mount(layered_config(&s), &m, &uring_opts()).expect("mount");
    let queues = wait_for_queues();
    // hogs arrive while the queues are busy
    busy(&m, &queues);
    let (starved, saw_other) = probe_beside_hogs(&m, &queues);
    assert!(!starved, "requests starved beside busy CPUs");
    assert!(saw_other, "the guard gave a starved queue thread SCHED_OTHER");
    // hogs arrive after a quiet spell: the guard has put the threads back to SCHED_OTHER, and each
    // returns itself to SCHED_IDLE at its first request, so the guard must catch the starvation again
    busy(&m, &queues);
    // nothing touches the mount now: the guard puts every quiet queue thread back to SCHED_OTHER (after
    // fuser's idle spell, a timing of its own this test does not restate)
    wait_until("quiet queue threads back to SCHED_OTHER", || {
        queues.iter().all(|&t| policy(t) == libc::SCHED_OTHER)
    });
    let (starved, _) = probe_beside_hogs(&m, &queues);
    assert!(!starved, "requests starved beside busy CPUs after a quiet spell");
    mnt.unmount().expect("unmount");
}

/// Sets the flag when dropped: worker threads of a scope stop even when the scope's body panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[test]
fn unmount_and_abort_while_busy_end_every_queue_thread() {
    let _serial = serial();
    let _uring = UringEnabled::enable();
    let s = Scratch::new();
    let c = layered_config(&s);
    let m = s.path("m");
    for abort in [false, true] {
        let mnt = rimg::fs::mount(c.clone(), &m, &uring_opts()).expect("mount");
        wait_for_queues();
        let stop = AtomicBool::new(false);
        let rounds: [AtomicU64; 3] = Default::default();
        std::thread::scope(|sc| {
            // the callers stop even if an assertion below fails (the scope waits for them)
            let _stop = StopOnDrop(&stop);
            for (t, done) in rounds.iter().enumerate() {
                let (m, stop) = (&m, &stop);
                sc.spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        let p = m.join(format!("busy{t}-{}", i % 50));
                        let _ = std::fs::write(&p, "x");
                        let _ = std::fs::read(&p);
                        let _ = std::fs::metadata(m.join("dir1/sub/f3"));
                        i += 1;
                        done.store(i, Ordering::Release);
                    }
                });
            }
            // busy: every caller has been through its requests a few times and is at it again
            wait_until("every caller busy", || rounds.iter().all(|r| r.load(Ordering::Acquire) >= 20));
            if abort {
                // the kernel's connection number is the mount's device minor
                let st = std::fs::metadata(&m).unwrap();
                let minor = std::os::unix::fs::MetadataExt::dev(&st) & 0xff;
                let dir = fuse_connections();
                std::fs::write(dir.join(format!("{minor}/abort")), "1").expect("abort");
            } else {
                rimg::fs::unmount_path(&m).expect("umount while busy");
            }
            wait_until("queue threads to end", || uring_threads().is_empty());
            stop.store(true, Ordering::Release);
        });
        drop(mnt);
        let _ = rimg::fs::unmount_path(&m);
        wait_until("all server threads to end", || fuse_threads() == 0);
        assert_eq!(mounts_under(s.dir.path()), 0, "no mount left (abort={abort})");
    }
}

#[test]
fn mount_cycles_over_io_uring_leak_nothing() {
    let _serial = serial();
    let _uring = UringEnabled::enable();
    mount_cycles_leak_nothing(&uring_opts());
}

#[test]
fn a_killed_rimg_overlayfs_over_io_uring_leaves_no_mount_and_no_stuck_caller() {
    let _serial = serial();
    let _uring = UringEnabled::enable();
    let s = Scratch::new();
    let c = layered_config(&s);
    let m = s.path("m");
    let lowers: Vec<String> = c.lowers.iter().map(|p| p.display().to_string()).collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        c.upper.as_ref().unwrap().display(),
        c.work.as_ref().unwrap().display()
    );
    let mp = m.display().to_string();
    for round in 0..6 {
        // even rounds: `-f` (the server is our child); odd rounds: the daemon (mounts, forks the
        // server and returns), whose server is found by its command line
        let daemon = round % 2 == 1;
        let mut args = vec!["overlayfs", "-o", &opts, &mp];
        if !daemon {
            args.insert(1, "-f");
        }
        let mut child = KillOnDrop(
            Command::new(RIMG).args(&args).stderr(Stdio::null()).spawn().expect("spawn rimg overlayfs"),
        );
        if daemon {
            assert!(child.0.wait().unwrap().success(), "rimg overlayfs returns once mounted");
        }
        wait_until("mount", || mounts_under(&m) > 0);
        let queues_of = |pid: u32| {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| {
                            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| {
                                c.trim_end()
                                    .strip_prefix("fuser-uring-")
                                    .is_some_and(|n| n.parse::<u32>().is_ok())
                            })
                        })
                        .count()
                })
                .unwrap_or(0)
        };
        let server = || -> Option<u32> {
            std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()).find_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd);
                (cmd.contains(&mp) && cmd.contains("overlayfs") && queues_of(pid) == possible_cpus())
                    .then_some(pid)
            })
        };
        wait_until("queue threads in the server", || server().is_some());
        let pid = server().expect("server");
        if !daemon {
            assert_eq!(pid, child.0.id());
        }
        let stop = AtomicBool::new(false);
        let rounds: [AtomicU64; 2] = Default::default();
        std::thread::scope(|sc| {
            let _stop = StopOnDrop(&stop);
            let callers: Vec<_> = rounds
                .iter()
                .enumerate()
                .map(|(t, done)| {
                    let (m, stop) = (&m, &stop);
                    sc.spawn(move || {
                        let mut i = 0u64;
                        while !stop.load(Ordering::Acquire) {
                            let _ = std::fs::write(m.join(format!("k{t}-{}", i % 20)), "x");
                            let _ = std::fs::metadata(m.join("dir1/f2"));
                            i += 1;
                            done.store(i, Ordering::Release);
                        }
                    })
                })
                .collect();
            wait_until("both callers busy", || rounds.iter().all(|r| r.load(Ordering::Acquire) >= 20));
            // the stimulus: each round kills the server a little later into the callers' traffic
            std::thread::sleep(Duration::from_millis(50 * round));
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
            let _ = child.0.wait();
            // the watchdog detaches the dead mount; callers get errors rather than hanging
            wait_until("dead mount removed", || mounts_under(&m) == 0);
            stop.store(true, Ordering::Release);
            for c in callers {
                c.join().unwrap();
            }
        });
    }
}
