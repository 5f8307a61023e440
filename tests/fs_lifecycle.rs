//! Mount lifecycle: no mount, thread or fd leak over many mount/unmount cycles; the two-phase
//! prepare/serve API starts no thread before serve (so callers may fork); the `rimg overlayfs` daemon
//! returns once mounted, stops on `rimg umount` and on SIGTERM, and a killed server leaves no mount;
//! directory read-ahead reads what a listing shows, once, and only when it is on.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::fs::*;
use rimg::fs::MountOptions;

const RIMG: &str = env!("CARGO_BIN_EXE_rimg");

fn mounted(p: &Path) -> bool {
    mounts_under(p) > 0
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = rimg::fs::unmount_path(&self.0);
    }
}

/// Processes whose command line contains `needle`.
fn pids_with_arg(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&c).contains(needle).then_some(pid)
        })
        .collect()
}

#[test]
fn mount_unmount_cycles_leak_nothing() {
    let _serial = serial();
    mount_cycles_leak_nothing(&MountOptions { threads: 2, ..MountOptions::default() });
}

#[test]
fn prepare_starts_no_thread_and_the_caller_can_fork() {
    let _serial = serial();
    let s = Scratch::new();
    let m = s.path("m");
    let prepared = rimg::fs::prepare(layered_config(&s), &m, &MountOptions::default()).expect("prepare");
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
    let c = layered_config(s);
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
    // the server grew its descriptor table before its threads started (it keeps a descriptor per
    // directory, and a multi-threaded process waits for an RCU grace period at every growth)
    let needle = s.dir.path().display().to_string();
    let field = |pid: u32, name: &str| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    // the server, not its single-threaded watchdog
    let servers: Vec<u32> =
        pids_with_arg(&needle).into_iter().filter(|p| field(*p, "Threads:") > 1).collect();
    assert_eq!(servers.len(), 1, "one server: {servers:?}");
    let fd_size = field(servers[0], "FDSize:");
    assert!(fd_size >= 4096, "descriptor table of the server: {fd_size} slots");
    let st = Command::new(RIMG).arg("umount").arg(&m).status().expect("rimg umount");
    assert!(st.success());
    assert!(!mounted(&m));
    // the daemon notices and exits: no process keeps the scratch path on its command line
    wait_until("daemon exit", || pids_with_arg(&needle).is_empty());
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
    let mut child = KillOnDrop(Command::new(RIMG).args(&args).stderr(Stdio::null()).spawn().expect("spawn"));
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
    let mut child = KillOnDrop(Command::new(RIMG).args(&args).stderr(Stdio::null()).spawn().expect("spawn"));
    wait_until("mount", || mounted(&m));
    assert_eq!(std::fs::read_to_string(m.join("file1")).unwrap(), "l1 file1\n");
    child.0.kill().unwrap();
    let _ = child.0.wait();
    wait_until("dead mount removed", || !mounted(&m));
}

/// `top` directories `d0`… under `root`, each with `each` subdirectories `e0`….
fn dir_tree(root: &Path, top: usize, each: usize) {
    for i in 0..top {
        for j in 0..each {
            std::fs::create_dir_all(root.join(format!("d{i}/e{j}"))).unwrap();
        }
    }
}

#[test]
fn readahead_reads_each_subdirectory_a_listing_shows() {
    let _serial = serial();
    let s = Scratch::new();
    let lower = s.path("ra-lower");
    dir_tree(&lower, 12, 2);
    std::fs::write(lower.join("file"), "x").unwrap();
    for (setting, want) in [("on", Some(12)), ("off", None)] {
        let m = s.path(&format!("m-{setting}"));
        let _guard = Unmount(m.clone());
        let child = Command::new(RIMG)
            .env("RIMG_LOG", "rimg=debug")
            .args(["overlayfs", "-f", "-o"])
            .arg(format!("lowerdir={},readahead={setting}", lower.display()))
            .arg(&m)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run rimg");
        let mut child = KillOnDrop(child);
        wait_until("mounted", || mounted(&m));
        // one listing of the root (READDIRPLUS): 12 subdirectories and a file
        assert_eq!(std::fs::read_dir(&m).unwrap().count(), 13);
        rimg::fs::unmount_path(&m).expect("unmount");
        let status = child.0.wait().expect("wait");
        assert!(status.success());
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
        let line = err.lines().find(|l| l.contains("read-ahead:"));
        match want {
            // each subdirectory once (the file and "." / ".." not at all), nothing dropped
            Some(n) => assert_eq!(
                line.map(|l| l.trim_start_matches("[DEBUG] ")),
                Some(format!("read-ahead: {n} directories read, 0 dropped").as_str()),
                "{err}"
            ),
            None => assert_eq!(line, None, "read-ahead off: {err}"),
        }
    }
}

#[test]
fn a_walk_is_not_cut_off_at_the_soft_descriptor_limit() {
    use std::os::unix::process::CommandExt;
    let _serial = serial();
    let s = Scratch::new();
    // more directories than a soft limit of 1024 descriptors allows the server to hold open
    let lower = s.path("many");
    dir_tree(&lower, 30, 50);
    let m = s.path("m");
    let _guard = Unmount(m.clone());
    let mut cmd = Command::new(RIMG);
    cmd.args(["overlayfs", "-o"]).arg(format!("lowerdir={}", lower.display())).arg(&m);
    // SAFETY: only setrlimit (async-signal-safe) between fork and exec; the hard limit is kept.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = 1024.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run rimg");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fn walk(d: &Path) -> std::io::Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                n += 1 + walk(&e.path())?;
            }
        }
        Ok(n)
    }
    assert_eq!(walk(&m).expect("walk the mount"), 30 + 30 * 50);
}
