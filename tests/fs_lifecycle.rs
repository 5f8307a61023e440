//! Mount lifecycle: no mount, thread or fd leak over many mount/unmount cycles; the two-phase
//! prepare/serve API starts no thread before serve (so callers may fork); the `rimg overlayfs` daemon
//! returns once mounted, stops on `rimg umount` and on SIGTERM, and a killed server leaves no mount.

#[path = "fs_support.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rimg::fs::{MountOptions, OverlayConfig};
use support::*;

const RIMG: &str = env!("CARGO_BIN_EXE_rimg");

/// The tests count this process's threads and fds, so they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mounted(p: &Path) -> bool {
    mounts_under(p) > 0
}

fn cfg(s: &Scratch) -> OverlayConfig {
    let (l1, l2) = (s.path("l1"), s.path("l2"));
    if !l1.join("file1").exists() {
        build_lowers(&l1, &l2);
    }
    OverlayConfig { lowers: vec![l1, l2], upper: Some(s.path("u")), work: Some(s.path("w")) }
}

/// Guard that kills a child process on drop (test failure paths included).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = rimg::fs::unmount_path(&self.0);
    }
}

#[test]
fn mount_unmount_cycles_leak_nothing() {
    let _serial = serial();
    let cycles: usize = std::env::var("RIMG_FS_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let s = Scratch::new();
    let c = cfg(&s);
    let m = s.path("m");
    let opts = MountOptions { threads: 2, ..MountOptions::default() };
    let cycle = |i: usize| {
        let mnt = rimg::fs::mount(c.clone(), &m, &opts).expect("mount");
        assert_eq!(std::fs::read_to_string(m.join("dir1/f4")).unwrap(), "lower1 f4\n");
        std::fs::write(m.join(format!("n{}", i % 7)), "x").unwrap();
        let f = std::fs::File::open(m.join("file1")).unwrap();
        drop(f);
        mnt.unmount().expect("unmount");
    };
    cycle(0);
    let fds = open_fds();
    for i in 1..=cycles {
        cycle(i);
    }
    assert_eq!(mounts_under(s.dir.path()), 0, "no mount left");
    assert_eq!(open_fds(), fds, "no fd leaked");
    assert_eq!(fuse_threads(), 0, "no server thread left");
}

#[test]
fn prepare_starts_no_thread_and_the_caller_can_fork() {
    let _serial = serial();
    let s = Scratch::new();
    let m = s.path("m");
    let prepared = rimg::fs::prepare(cfg(&s), &m, &MountOptions::default()).expect("prepare");
    let _guard = Unmount(m.clone());
    assert_eq!(fuse_threads(), 0, "prepare starts no thread");
    assert!(mounted(&m), "mounted after prepare");
    // SAFETY: the child only calls _exit.
    match unsafe { libc::fork() } {
        0 => unsafe { libc::_exit(7) },
        pid => {
            let mut st = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            assert_eq!(libc::WEXITSTATUS(st), 7);
        }
    }
    let mnt = prepared.serve().expect("serve");
    wait_until("server threads", || fuse_threads() > 0);
    assert_eq!(std::fs::read_to_string(m.join("file1")).unwrap(), "l1 file1\n");
    mnt.unmount().expect("unmount");
    assert!(!mounted(&m));
}

fn overlay_args(s: &Scratch) -> Vec<String> {
    let c = cfg(s);
    let lowers: Vec<String> = c.lowers.iter().map(|p| p.display().to_string()).collect();
    vec![
        "overlayfs".into(),
        "-o".into(),
        format!(
            "lowerdir={},upperdir={},workdir={},,lazytime",
            lowers.join(":"),
            c.upper.unwrap().display(),
            c.work.unwrap().display()
        ),
        s.path("m").display().to_string(),
    ]
}

#[test]
fn daemon_returns_mounted_and_rimg_umount_stops_it() {
    let _serial = serial();
    let s = Scratch::new();
    let m = s.path("m");
    let _guard = Unmount(m.clone());
    let out = Command::new(RIMG).args(overlay_args(&s)).stdin(Stdio::null()).output().expect("run rimg");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument ignored: lazytime"));
    assert!(mounted(&m), "mounted when the command returns");
    assert_eq!(std::fs::read_to_string(m.join("file1")).unwrap(), "l1 file1\n");
    let st = Command::new(RIMG).arg("umount").arg(&m).status().expect("rimg umount");
    assert!(st.success());
    assert!(!mounted(&m));
    // the daemon notices and exits: no process keeps the scratch path on its command line
    let needle = s.dir.path().display().to_string();
    wait_until("daemon exit", || {
        std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).all(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| !String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(true)
        })
    });
    // errors reach the caller: a missing lower directory
    let out = Command::new(RIMG)
        .args(["overlayfs", "-o", "lowerdir=/nonexistent/rimg-test", &m.display().to_string()])
        .output()
        .expect("run rimg");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/rimg-test"));
}

#[test]
fn sigterm_unmounts_and_killed_server_leaves_no_mount() {
    let _serial = serial();
    let s = Scratch::new();
    let m = s.path("m");
    let _guard = Unmount(m.clone());
    let mut args = overlay_args(&s);
    args.insert(1, "-f".into());
    let mut child = Child(Command::new(RIMG).args(&args).stderr(Stdio::null()).spawn().expect("spawn"));
    wait_until("mount", || mounted(&m));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = child.0.wait().unwrap();
    assert!(st.success(), "clean exit on SIGTERM: {st:?}");
    assert!(!mounted(&m), "unmounted on SIGTERM");
    // SIGKILL: the watchdog detaches the dead mount
    let mut child = Child(Command::new(RIMG).args(&args).stderr(Stdio::null()).spawn().expect("spawn"));
    wait_until("mount", || mounted(&m));
    assert_eq!(std::fs::read_to_string(m.join("file1")).unwrap(), "l1 file1\n");
    child.0.kill().unwrap();
    let _ = child.0.wait();
    wait_until("dead mount removed", || !mounted(&m));
}
