//! Starting a container: the three processes and what each owns.
//!
//! - **P**, the `rimg run` process: creates the record and the cgroup, forks the monitor, then (in the
//!   foreground) relays signals and the terminal and exits with the container's code.
//! - **C**, the monitor: new session; unshares its mount namespace and mounts the rootfs there privately;
//!   `clone`s the container's init G *before any thread exists* straight into new mount, uts, ipc, pid
//!   (and net) namespaces; puts G in the cgroup while G is still blocked; releases it; records state;
//!   waits; tears down. C watches a pipe from P: EOF while attached means P died, so C kills the container
//!   and cleans up — a SIGKILLed `rimg run` leaves nothing behind. C holds the container's monitor lock
//!   for its lifetime.
//! - **G**, PID 1 of the new pid namespace: hostname and loopback, its own mount namespace (so
//!   `pivot_root` cannot move C's root) and cgroup namespace, /proc, /sys, /dev, /etc files, user mounts,
//!   masked paths, pivot_root, identity, capabilities, exec. Exec failures travel back through a
//!   close-on-exec pipe as 126/127.
//! - With a user namespace (`--userns`), the same clone also makes G's user namespace, which then owns all
//!   the others; C writes G's id maps before phase 1, and G becomes root in it first (see `super::userns`).

use super::cgroups::{Cgroup, Layout};
use super::command::{self, Failure};
use super::mounts;
use super::process::{close_fds_except, exit_code_of, start_time, wait_pid};
use super::pty;
use super::spec::{NetworkMode, RootfsDriver};
use super::state::{now_nanos, ContainerDir, ContainerState, Containers, MonitorLock, Status};
use super::RuntimeError;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// Signals `rimg run` forwards to the container.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// How the container's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// Foreground: the container uses rimg's own stdio (stdin only with `-i`), or a pty relayed by rimg.
    Foreground,
    /// Detached: output goes to the container's log; rimg returns after the start.
    Detached,
}

/// A started container as seen from `rimg run`.
#[derive(Debug)]
pub struct Launched {
    /// Container id.
    pub id: String,
    /// The monitor process (P's child).
    pub monitor_pid: i32,
    /// The container's PID 1 as seen from the host.
    pub init_pid: i32,
    /// Master side of the container's terminal (foreground `-t`).
    pub pty_master: Option<OwnedFd>,
    /// Held open while P is attached; the monitor treats EOF as P's death.
    pub lifeline: Option<OwnedFd>,
    /// Signals blocked for [`super::attach::wait`]; restored by it.
    pub old_mask: SigSet,
    /// The container's cgroup directories, for [`cleanup_after_monitor`] after
    /// [`Launched::defer_cgroup_cleanup`].
    pub cgroups: Vec<std::path::PathBuf>,
}

impl Launched {
    /// Promise to remove the container's cgroup once the monitor has exited (with
    /// [`cleanup_after_monitor`]), sparing the monitor a cgroup migration on its way out. Returns false
    /// (and the monitor cleans up as usual) when there is no lifeline, i.e. when detached.
    pub fn defer_cgroup_cleanup(&self) -> bool {
        let Some(l) = &self.lifeline else { return false };
        // SAFETY: write(2) of one byte to our end of the lifeline pipe.
        unsafe { libc::write(l.as_raw_fd(), [CLEANUP_DEFERRED].as_ptr().cast(), 1) == 1 }
    }
}

/// Remove what an attached monitor leaves to `rimg run`: the cgroup directories (after the monitor exited).
pub fn cleanup_after_monitor(cgroups: &[std::path::PathBuf]) {
    for d in cgroups {
        super::cgroups::remove_dir_killing(d);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RuntimeError::Setup(format!("pipe: {e}")))
}

/// Everything the monitor and init need, prepared by P before forking.
struct Plan {
    containers: Containers,
    state: ContainerState,
    cdir: ContainerDir,
    cgroup: Cgroup,
    attach: Attach,
    /// (rimg's end, the init's end) of the channel the terminal master travels through.
    console: Option<(OwnedFd, OwnedFd)>,
}

/// Start the container `state` (fresh from [`Containers::create`], whose lock is passed in). On failure
/// the record is marked exited with the error and the failure carries docker's exit code.
pub fn start(
    containers: &Containers,
    state: ContainerState,
    lock: MonitorLock,
    attach: Attach,
) -> Result<Launched, Failure> {
    let cdir = containers.dir_of(&state.id);
    let id = state.id.clone();
    let auto_remove = state.spec.auto_remove;
    let cleanup_fail = |f: Failure, cgroup: Option<&Cgroup>| {
        if let Some(cg) = cgroup {
            cg.remove();
        }
        let _ = containers.update(&id, |s| {
            s.status = Status::Exited;
            s.exit_code = Some(f.code);
            s.error = Some(f.message.clone());
            s.finished = Some(now_nanos());
        });
        if auto_remove {
            let _ = containers.remove_files(&id);
        }
        f
    };
    if let Err(e) = write_etc_files(&cdir, &state) {
        return Err(cleanup_fail(e.into(), None));
    }
    let parent = state.spec.cgroup_parent.clone().unwrap_or_else(|| "rimg".into());
    let cgroup = match Layout::detect().and_then(|l| Cgroup::create(&l, &parent, &id)) {
        Ok(c) => c,
        Err(e) => return Err(cleanup_fail(e.into(), None)),
    };
    let dirs = cgroup.dirs();
    if let Err(e) = containers.update(&id, |s| s.cgroups = dirs).map_err(Failure::from) {
        return Err(cleanup_fail(e, Some(&cgroup)));
    }
    if let Err(e) = cgroup.apply(&state.spec.resources, state.spec.privileged) {
        return Err(cleanup_fail(e.into(), Some(&cgroup)));
    }
    let console = if state.spec.process.tty {
        match pty::channel() {
            Ok(c) => Some(c),
            Err(e) => return Err(cleanup_fail(e.into(), Some(&cgroup))),
        }
    } else {
        None
    };
    let ((report_r, report_w), (life_r, life_w)) = match pipe().and_then(|a| pipe().map(|b| (a, b))) {
        Ok(p) => p,
        Err(e) => return Err(cleanup_fail(e.into(), Some(&cgroup))),
    };
    // Block the forwarded signals now so none is lost between fork and the relay loop; the monitor
    // restores its mask.
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    let mut old_mask = SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old_mask));
    let plan = Plan { containers: containers.clone(), state, cdir, cgroup: cgroup.clone(), attach, console };
    // SAFETY: fork; the child only runs the monitor and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
        return Err(cleanup_fail(
            Failure { code: 125, message: format!("fork: {}", std::io::Error::last_os_error()) },
            Some(&cgroup),
        ));
    }
    if pid == 0 {
        drop(report_r);
        drop(life_w);
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
        let code = monitor(plan, report_w, life_r, lock);
        // SAFETY: leave the forked monitor without running P's destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(report_w);
    drop(life_r);
    drop(lock);
    let Plan { console, .. } = plan;
    let mut line = String::new();
    let _ = BufReader::new(File::from(report_r)).read_line(&mut line);
    let line = line.trim_end();
    if let Some(p) = line.strip_prefix("ok ") {
        let init_pid = p.parse().unwrap_or(0);
        let (pty_master, lifeline) = match attach {
            Attach::Foreground => {
                // The init sent the master before exec'ing, so it is already queued.
                let master = console.and_then(|(ours, _)| pty::recv_fd(&ours, false).ok());
                if let Some(m) = &master {
                    pty::copy_size(m);
                }
                (master, Some(life_w))
            }
            Attach::Detached => (None, None),
        };
        return Ok(Launched {
            id: id.clone(),
            monitor_pid: pid,
            init_pid,
            pty_master,
            lifeline,
            old_mask,
            cgroups: cgroup.dirs(),
        });
    }
    // Start failed: the monitor has recorded and cleaned up; collect it.
    let status = wait_pid(pid).unwrap_or(0);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    if let Some(rest) = line.strip_prefix("err ") {
        if let Some(f) = command::parse_failure(rest.replacen(' ', "\t", 1).as_bytes()) {
            return Err(f);
        }
    }
    Err(Failure { code: 125, message: format!("container monitor failed (exit {})", exit_code_of(status)) })
}

fn write_etc_files(cdir: &ContainerDir, st: &ContainerState) -> Result<(), RuntimeError> {
    let w = |name: &str, data: &str| {
        let p = cdir.etc_file(name);
        std::fs::write(&p, data).map_err(|e| RuntimeError::Io { what: "write".into(), path: p, source: e })
    };
    w("hostname", &format!("{}\n", st.spec.hostname))?;
    w("hosts", &mounts::hosts_file(&st.spec.hostname))?;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = if st.spec.network == NetworkMode::None {
        // No route out: a resolver pointing at the host's loopback would only hang lookups.
        resolv
            .lines()
            .filter(|l| !l.trim_start().starts_with("nameserver 127."))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        resolv
    };
    w("resolv.conf", &resolv)
}

fn report(w: &mut File, msg: &str) {
    let _ = w.write_all(format!("{msg}\n").as_bytes());
}

/// The monitor (C). Returns its exit code: the container's, or 125 when the start failed.
fn monitor(plan: Plan, report_w: OwnedFd, life_r: OwnedFd, lock: MonitorLock) -> i32 {
    let Plan { containers, state, cdir, cgroup, attach, console } = plan;
    // The size of rimg's terminal, applied before the command can ask for it.
    let winsize = if attach == Attach::Foreground { super::attach::terminal_size() } else { None };
    let id = state.id.clone();
    let mut report_w = File::from(report_w);
    set_comm(c"rimg-monitor");
    let _ = nix::unistd::setsid();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPIPE,
    ] {
        // SAFETY: ignoring signals in the monitor; it must outlive its terminal and its parent.
        let _ = unsafe { nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigIgn) };
    }
    let finish = |code: i32, err: Option<String>, oom: bool| {
        let _ = containers.update(&id, |s| {
            s.status = Status::Exited;
            s.exit_code = Some(code);
            s.oom_killed = oom;
            s.finished = Some(now_nanos());
            if err.is_some() {
                s.error = err.clone();
            }
        });
    };
    let teardown = |cgroup: Option<&Cgroup>| {
        let _ = nix::mount::umount2(&cdir.rootfs(), nix::mount::MntFlags::MNT_DETACH);
        if let Some(cg) = cgroup {
            cg.remove();
        }
        if state.spec.auto_remove {
            let _ = containers.remove_files(&id);
        }
    };
    let fail_early = |report_w: &mut File, f: Failure| -> i32 {
        finish(f.code, Some(f.message.clone()), false);
        teardown(Some(&cgroup));
        report(report_w, &format!("err {} {}", f.code, f.message));
        f.code
    };

    // Namespaces and the rootfs. The monitor takes only a private mount namespace (for the rootfs); the
    // init is cloned into all the container's namespaces at once (and, with --userns, into its user
    // namespace, which then owns them all).
    let userns = state.spec.userns.as_ref();
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWNS) {
        return fail_early(&mut report_w, Failure { code: 125, message: format!("unshare namespaces: {e}") });
    }
    let setup = || -> Result<Option<crate::fs::Prepared>, RuntimeError> {
        mounts::make_private()?;
        let empty;
        let lowers = if state.spec.lowers.is_empty() {
            // An image without layers still needs one (empty) lower.
            empty = cdir.path().join("empty");
            std::fs::create_dir_all(&empty)
                .map_err(|e| RuntimeError::Setup(format!("create {}: {e}", empty.display())))?;
            vec![empty]
        } else {
            state.spec.lowers.clone()
        };
        let prepared = match state.spec.driver {
            RootfsDriver::Kernel => {
                mounts::mount_kernel_overlay(&lowers, &cdir.upper(), &cdir.work(), &cdir.rootfs())?;
                None
            }
            RootfsDriver::Fuse => {
                let cfg =
                    crate::fs::OverlayConfig { lowers, upper: Some(cdir.upper()), work: Some(cdir.work()) };
                // no io_uring: this mount lives in the monitor's private mount namespace, and a killed
                // monitor's exit would unmount it while its queue threads can no longer answer. No
                // read-ahead threads: the monitor serves from inside the container's cgroup, where every
                // thread counts against the container's pids limit.
                let mut opts = crate::fs::MountOptions {
                    threads: FUSE_THREADS,
                    uring: false,
                    readahead: false,
                    ..Default::default()
                };
                if let Some(ns) = userns {
                    // The overlay shows the image's (container) ids as the host ids the container runs as.
                    opts.uid_map = ns.uid_map.clone();
                    opts.gid_map = ns.gid_map.clone();
                }
                let p = crate::fs::prepare(cfg, &cdir.rootfs(), &opts)
                    .map_err(|e| RuntimeError::Setup(format!("mount rootfs: {e}")))?;
                Some(p)
            }
        };
        Ok(prepared)
    };
    let prepared = match setup() {
        Ok(p) => p,
        Err(e) => return fail_early(&mut report_w, e.into()),
    };

    // Standard streams of the container.
    let mut log_sources: Vec<(OwnedFd, &'static str)> = Vec::new();
    // Attached without a terminal: (container's end, the monitor's own descriptor it goes to), and the pipe
    // the monitor's stdin is fed into (`-i`).
    let mut relays: Vec<(OwnedFd, i32)> = Vec::new();
    let mut stdin_feed: Option<OwnedFd> = None;
    let (stdin_fd, stdout_fd, stderr_fd): (Option<OwnedFd>, Option<OwnedFd>, Option<OwnedFd>);
    let devnull = || File::open("/dev/null").ok().map(OwnedFd::from);
    match (&console, attach) {
        (Some(_), _) => {
            // The init opens its terminal itself, from the container's devpts.
            stdin_fd = None;
            stdout_fd = None;
            stderr_fd = None;
        }
        (None, Attach::Detached) => {
            let (or, ow) = match pipe() {
                Ok(p) => p,
                Err(e) => return fail_early(&mut report_w, e.into()),
            };
            let (er, ew) = match pipe() {
                Ok(p) => p,
                Err(e) => return fail_early(&mut report_w, e.into()),
            };
            log_sources.push((or, "stdout"));
            log_sources.push((er, "stderr"));
            stdin_fd = devnull();
            stdout_fd = Some(ow);
            stderr_fd = Some(ew);
        }
        (None, Attach::Foreground) => {
            // Pipes that the monitor relays, never rimg's own descriptors: the container must not get the
            // caller's terminal (it could change its modes or take it with TIOCEXCL), as with docker and
            // podman, whose daemon or conmon relays too.
            let mut pipes = || match pipe() {
                Ok(p) => Ok(p),
                Err(e) => Err(fail_early(&mut report_w, e.into())),
            };
            let (or, ow) = match pipes() {
                Ok(p) => p,
                Err(code) => return code,
            };
            let (er, ew) = match pipes() {
                Ok(p) => p,
                Err(code) => return code,
            };
            relays.push((or, 1));
            relays.push((er, 2));
            stdin_fd = if state.spec.process.stdin {
                let (ir, iw) = match pipes() {
                    Ok(p) => p,
                    Err(code) => return code,
                };
                stdin_feed = Some(iw);
                Some(ir)
            } else {
                devnull()
            };
            stdout_fd = Some(ow);
            stderr_fd = Some(ew);
        }
    }
    let (release_r, release_w) = match pipe() {
        Ok(p) => p,
        Err(e) => return fail_early(&mut report_w, e.into()),
    };
    let (err_r, err_w) = match pipe() {
        Ok(p) => p,
        Err(e) => return fail_early(&mut report_w, e.into()),
    };

    let init = clone_into_namespaces(userns.is_some(), state.spec.network == NetworkMode::None);
    if init < 0 {
        return fail_early(
            &mut report_w,
            Failure { code: 125, message: format!("fork: {}", std::io::Error::last_os_error()) },
        );
    }
    if init == 0 {
        drop(release_w);
        drop(err_r);
        drop(report_w);
        drop(life_r);
        // SAFETY: closing the inherited lock descriptor so only the monitor holds the lock.
        unsafe { libc::close(lock.raw_fd()) };
        std::mem::forget(lock);
        let init_console = console.map(|(_, theirs)| theirs);
        container_init(
            &state,
            &cdir,
            &cgroup,
            InitIo {
                release_r,
                err_w,
                stdio: [stdin_fd, stdout_fd, stderr_fd],
                console: init_console,
                winsize,
            },
        );
    }
    drop(release_r);
    drop(err_w);
    // The descriptors passed on are the init's now; the monitor must not hold them for the container's
    // lifetime.
    close_fds_range(3..3 + state.spec.process.preserve_fds as i32);
    if let Some(ns) = userns {
        // The init waits for phase 1, which comes only after its maps exist.
        if let Err(e) = super::userns::write_maps(init, ns) {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(init, libc::SIGKILL) };
            let _ = wait_pid(init);
            return fail_early(&mut report_w, e.into());
        }
    }
    drop(stdin_fd);
    drop(stdout_fd);
    drop(stderr_fd);
    // Detached: the monitor logs the terminal; attached: rimg run relays it.
    let console = match (console, attach) {
        (Some((ours, _theirs)), Attach::Detached) => Some(ours),
        _ => None,
    };
    // Make the monitor the OOM killer's last choice within the container's memory cgroup: when the
    // container's memory runs out, its own processes must go, not the server of its rootfs (whose
    // death would lose the exit status and the OOMKilled verdict). Lowering oom_score_adj needs
    // CAP_SYS_RESOURCE; where root lacks it, the monitor stays out of the container's memory cgroup on
    // v1 (its own few MiB are then not charged to the container) rather than be the next victim once
    // the init is killed (seen: `head` still allocating after `sh` was killed, the monitor went next).
    let oom_protected = std::fs::write("/proc/self/oom_score_adj", "-999").is_ok();

    let kill_init = || {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(init, libc::SIGKILL) };
    };
    // The FUSE server starts now (threads are allowed again) and works inside the container's cgroup, so
    // the I/O and memory it spends on the container's behalf count against the container's limits.
    let mut served = None;
    if let Some(p) = prepared {
        // Two server threads do not need a malloc arena each (~150 KiB apiece per idle container).
        // SAFETY: mallopt with a constant option, before any other thread exists.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        let joined = p
            .serve()
            .map_err(|e| RuntimeError::Setup(format!("serve rootfs: {e}")))
            // The server's background thread opens every /dev/fuse clone before it starts any worker, so
            // one answered request proves they are open, before the cgroup's device filter (v2 eBPF)
            // would refuse /dev/fuse to this process.
            .and_then(|m| round_trip(&cdir.rootfs()).map(|_| m))
            .and_then(|m| {
                cgroup.add_process_for_resources(std::process::id() as i32, !oom_protected).map(|_| m)
            });
        match joined {
            Ok(m) => served = Some(m),
            Err(e) => {
                kill_init();
                let _ = wait_pid(init);
                leave_cgroup(&cgroup, &state);
                return fail_early(&mut report_w, e.into());
            }
        }
    }
    let in_cgroup = served.is_some();
    // Phase 1: the init builds its mounts while we put it into the cgroup (a cgroup migration waits for an
    // RCU grace period; overlapping it with the mount work hides that latency). It cannot run user code
    // before phase 2.
    let mut release_w = File::from(release_w);
    let _ = release_w.write_all(b"1");
    if let Err(e) = cgroup.add_process(init) {
        kill_init();
        let _ = wait_pid(init);
        if in_cgroup {
            leave_cgroup(&cgroup, &state);
        }
        return fail_early(&mut report_w, e.into());
    }
    // Release the init; it reports setup/exec failures or closes the pipe by exec'ing.
    let _ = release_w.write_all(b"2");
    drop(release_w);
    let err_data = match read_unless_orphaned(err_r, attach == Attach::Foreground, &life_r) {
        Some(d) => d,
        None => {
            // rimg run died while the container was starting.
            kill_init();
            let _ = wait_pid(init);
            if let Some(m) = served.take() {
                let _ = m.unmount();
            }
            if in_cgroup {
                leave_cgroup(&cgroup, &state);
            }
            return fail_early(
                &mut report_w,
                Failure { code: 137, message: "rimg run was killed during start".into() },
            );
        }
    };
    if let Some(f) = command::parse_failure(&err_data) {
        let _ = wait_pid(init);
        if let Some(m) = served.take() {
            let _ = m.unmount();
        }
        if in_cgroup {
            leave_cgroup(&cgroup, &state);
        }
        return fail_early(&mut report_w, f);
    }
    let started = now_nanos();
    let pid_start = start_time(init);
    let _ = containers.update(&id, |s| {
        s.status = Status::Running;
        s.pid = Some(init);
        s.pid_start_time = pid_start;
        s.monitor_pid = Some(std::process::id() as i32);
        s.started = Some(started);
    });

    // Detached output goes to the log.
    let mut pumps = Vec::new();
    if attach == Attach::Detached {
        // Nobody is attached: the monitor's own stdio must not keep rimg run's terminal or pipes open.
        if let Some(null) = devnull() {
            for fd in 0..3 {
                // SAFETY: dup2 onto the standard descriptors.
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(cdir.log());
        if let Ok(log) = log {
            let sink = Arc::new(Mutex::new(log));
            if let Some(m) = console.as_ref().and_then(|c| pty::recv_fd(c, false).ok()) {
                log_sources.push((m, "stdout"));
            }
            for (fd, stream) in log_sources {
                let sink = sink.clone();
                pumps.push(std::thread::spawn(move || {
                    super::logs::pump(PtyReader(File::from(fd)), stream, sink)
                }));
            }
        }
    }

    for (fd, to) in relays {
        pumps.push(std::thread::spawn(move || super::logs::relay(File::from(fd), to)));
    }
    if let Some(feed) = stdin_feed {
        // Detached: it blocks in read(stdin) and ends with the monitor; EOF closes the container's stdin.
        std::thread::spawn(move || super::logs::relay(std::io::stdin().lock(), feed.as_raw_fd()));
    }

    report(&mut report_w, &format!("ok {init}"));
    drop(report_w);
    // The monitor idles for the container's lifetime: hand back heap pages left over from rimg run's
    // argument parsing and image lookup.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };

    // Wait for the init, or for P's death while attached.
    let (status, said) = wait_init(init, if attach == Attach::Foreground { Some(life_r) } else { None });
    let code = exit_code_of(status);
    let oom = cgroup.oom_killed();
    for p in pumps {
        let _ = p.join();
    }
    finish(code, None, oom);
    if let Some(m) = served.take() {
        if let Err(e) = m.unmount() {
            log::warn!("unmount rootfs: {e}");
        }
    }
    if attach == Attach::Foreground && !said.orphaned && said.parent_cleans {
        // rimg run removes the cgroup once we are gone: no migration back out on the way.
        teardown(None);
    } else {
        if in_cgroup {
            leave_cgroup(&cgroup, &state);
        }
        teardown(Some(&cgroup));
    }
    drop(lock);
    code
}

/// Read the init's error pipe to EOF; `None` if, while attached, rimg run dies first.
fn read_unless_orphaned(err_r: OwnedFd, attached: bool, life_r: &OwnedFd) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = vec![libc::pollfd { fd: err_r.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        if attached {
            fds.push(libc::pollfd { fd: life_r.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: poll over a valid array.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            // SAFETY: read into a local buffer from our pipe.
            let n = unsafe { libc::read(err_r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return Some(data);
            }
            data.extend_from_slice(&buf[..n as usize]);
        } else if fds.len() > 1 && fds[1].revents != 0 {
            return None;
        }
    }
}

/// One request answered by the FUSE server at `mountpoint`: a GETATTR of its root, forced past the
/// kernel's attribute cache (the server's getattr code is what the container's first exec needs anyway,
/// so an idle monitor maps no extra code for it).
fn round_trip(mountpoint: &std::path::Path) -> Result<(), RuntimeError> {
    let c = mounts::cstr(mountpoint)?;
    // SAFETY: statx into a zeroed buffer with a NUL-terminated path.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(libc::AT_FDCWD, c.as_ptr(), libc::AT_STATX_FORCE_SYNC, libc::STATX_BASIC_STATS, &mut buf)
    };
    if r != 0 {
        return Err(RuntimeError::Setup(format!("serve rootfs: stat: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// FUSE server threads per container: enough to overlap two requests on this class of machine, few enough
/// to keep an idle container small.
const FUSE_THREADS: usize = 2;

/// Move the monitor back to the root of each hierarchy so the container's cgroup can be removed (the root
/// is exempt from cgroup2's no-internal-process rule).
fn leave_cgroup(cgroup: &Cgroup, state: &ContainerState) {
    let parent = state.spec.cgroup_parent.clone().unwrap_or_else(|| "rimg".into());
    let depth = std::path::Path::new(parent.trim_matches('/')).components().count() + 1;
    for dir in cgroup.dirs() {
        if let Some(root) = dir.ancestors().nth(depth) {
            if let Err(e) = std::fs::write(root.join("cgroup.procs"), std::process::id().to_string()) {
                log::warn!("leave cgroup {}: {e}", dir.display());
            }
        }
    }
}

/// Reads a pty master, treating EIO (all slave ends closed) as end of file.
struct PtyReader(File);

impl Read for PtyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf) {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            r => r,
        }
    }
}

/// What arrived on the lifeline from rimg run.
#[derive(Default, Clone, Copy)]
struct Lifeline {
    /// rimg run is gone (EOF).
    orphaned: bool,
    /// rimg run promised to remove the cgroup after we exit ([`Launched::defer_cgroup_cleanup`]).
    parent_cleans: bool,
}

/// Read what is pending on the lifeline: data is a message, EOF is rimg run's death.
fn read_lifeline(fd: &OwnedFd, state: &mut Lifeline) {
    let mut buf = [0u8; 16];
    // SAFETY: read into a local buffer from our pipe.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n == 0 {
        state.orphaned = true;
    } else if n > 0 && buf[..n as usize].contains(&CLEANUP_DEFERRED) {
        state.parent_cleans = true;
    }
}

/// The byte rimg run sends when it will remove the cgroup itself.
const CLEANUP_DEFERRED: u8 = b'c';

/// Wait for the init; also reports what rimg run said or whether it died (then the init was killed).
fn wait_init(init: i32, lifeline: Option<OwnedFd>) -> (libc::c_int, Lifeline) {
    let mut said = Lifeline::default();
    // SAFETY: pidfd_open(2) of our own child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, init, 0) } as i32;
    if pidfd >= 0 {
        // SAFETY: fresh descriptor we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let mut life = lifeline;
        loop {
            let mut fds = vec![libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            if let Some(l) = &life {
                fds.push(libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            }
            // SAFETY: poll over a valid array.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                continue;
            }
            if fds[0].revents != 0 {
                break;
            }
            if fds.len() > 1 && fds[1].revents != 0 {
                if let Some(l) = &life {
                    read_lifeline(l, &mut said);
                }
                if said.orphaned {
                    // `rimg run` is gone: nobody will ever collect this container; end it.
                    // SAFETY: kill(2) of our own child.
                    unsafe { libc::kill(init, libc::SIGKILL) };
                    life = None;
                }
            }
        }
    }
    (wait_pid(init).unwrap_or(0), said)
}

/// The container's hostname and, with `--network none`, its loopback interface: done by the init, first
/// thing in its new uts and net namespaces.
fn name_host_and_raise_lo(state: &ContainerState) -> Result<(), RuntimeError> {
    nix::unistd::sethostname(&state.spec.hostname)
        .map_err(|e| RuntimeError::Setup(format!("sethostname: {e}")))?;
    if state.spec.network == NetworkMode::None {
        super::net::loopback_up()?;
    }
    Ok(())
}

/// fork(2) into new mount, uts, ipc, pid (the child is PID 1) and, with `net`, network namespaces; with
/// `user` also into a new user namespace, which then owns all the others. Returns like fork: 0 in the
/// child. One clone instead of unsharing in the monitor first: a start is ~10 ms faster here
/// (benches/run), and the monitor itself stays in the host's namespaces except its mount namespace.
fn clone_into_namespaces(user: bool, net: bool) -> i32 {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID | libc::SIGCHLD;
    if user {
        flags |= libc::CLONE_NEWUSER;
    }
    if net {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: clone(2) without a new stack behaves as fork(2) (the child runs on a copy of our stack); we
    // are single-threaded here, as for fork.
    unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) as i32 }
}

/// Name the process in `ps`/`top` (its command line stays rimg's).
fn set_comm(name: &std::ffi::CStr) {
    // SAFETY: PR_SET_NAME with a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// Close the descriptors of `range` (those `--preserve-fds` passed on to the init).
fn close_fds_range(range: std::ops::Range<i32>) {
    for fd in range {
        // SAFETY: close(2) of descriptors rimg inherited for the container and no longer needs.
        unsafe { libc::close(fd) };
    }
}

/// Allocate the container's terminal from its devpts, hand the master to rimg, make the slave our stdio,
/// controlling terminal and /dev/console.
fn open_terminal(
    root: &mounts::Root,
    sock: &OwnedFd,
    winsize: Option<libc::winsize>,
) -> Result<(), RuntimeError> {
    let ptmx = root.open_path("dev/pts/ptmx")?;
    let (master, slave, n) = pty::open_pair(ptmx.as_raw_fd(), winsize)?;
    pty::send_fd(sock, &master)?;
    drop(master);
    for fd in 0..3 {
        // SAFETY: dup2 of the slave onto the standard descriptors.
        unsafe { libc::dup2(slave.as_raw_fd(), fd) };
    }
    drop(slave);
    // SAFETY: make the slave on stdin our controlling terminal (we are a session leader).
    unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    mounts::bind_console(root, n)
}

/// What the init gets from the monitor besides the container's description.
struct InitIo {
    /// Phase bytes from the monitor ("1": build the rootfs, "2": you are in the cgroup, go).
    release_r: OwnedFd,
    /// Close-on-exec pipe for setup/exec failures.
    err_w: OwnedFd,
    /// stdin, stdout, stderr to install (None: keep the inherited one).
    stdio: [Option<OwnedFd>; 3],
    /// Channel for the terminal master when the container has a tty.
    console: Option<OwnedFd>,
    /// Initial terminal size.
    winsize: Option<libc::winsize>,
}

/// G: becomes the container's PID 1. Never returns.
fn container_init(state: &ContainerState, cdir: &ContainerDir, cgroup: &Cgroup, io: InitIo) -> ! {
    let InitIo { release_r, err_w, stdio, console, winsize } = io;
    // The container directory, opened now, while our host uid is still root's: a user-namespaced init
    // soon becomes an unprivileged host uid that may not search the private store above it. Paths below
    // go through this descriptor (the magic link skips the directories above); it is close-on-exec and
    // closed once the rootfs is our root.
    let cdir_fd = match File::open(cdir.path()) {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            command::fail(&err_w, RuntimeError::Setup(format!("open {}: {e}", cdir.path().display())).into())
        }
    };
    let cdir = ContainerDir::new(std::path::PathBuf::from(format!("/proc/self/fd/{}", cdir_fd.as_raw_fd())));
    // SAFETY: prctl with integer arguments: die with the monitor.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let mut r = File::from(release_r);
    let mut phase = [0u8; 1];
    if r.read_exact(&mut phase).is_err() {
        // SAFETY: the monitor died before releasing us.
        unsafe { libc::_exit(125) };
    }
    // Keep only what the init needs: no /dev/fuse, lock or pipe of the monitor may leak into the container.
    let preserved = 3..3 + state.spec.process.preserve_fds as i32;
    let mut keep: Vec<i32> = preserved.clone().collect();
    keep.extend([err_w.as_raw_fd(), r.as_raw_fd(), cdir_fd.as_raw_fd()]);
    keep.extend(console.as_ref().map(|c| c.as_raw_fd()));
    keep.extend(stdio.iter().flatten().map(|f| f.as_raw_fd()));
    close_fds_except(&keep);
    command::reset_signals();
    let fail = |f: Failure| -> ! { command::fail(&err_w, f) };
    for (i, fd) in stdio.iter().enumerate() {
        if let Some(fd) = fd {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(fd.as_raw_fd(), i as i32) };
        }
    }
    drop(stdio);
    if state.spec.userns.is_some() {
        // Cloned into the user namespace; the monitor wrote the maps before phase 1.
        if let Err(e) = super::userns::become_root() {
            fail(e.into());
        }
        // A credential change cleared the parent-death signal.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    }
    // Our uts and net namespaces came with the clone (so did our own mount namespace, in which
    // pivot_root cannot move the monitor's root).
    if let Err(e) = name_host_and_raise_lo(state) {
        fail(e.into());
    }
    let _ = nix::unistd::setsid();
    if state.spec.userns.is_some() {
        // The rootfs mount came from the monitor's (more privileged) namespace, so here it is locked and
        // pivot_root refuses it; a bind of it made in this namespace is not.
        if let Err(e) = mounts::rebind_own(&cdir.rootfs()) {
            fail(e.into());
        }
    }
    let root = match mounts::Root::open(&cdir.rootfs()) {
        Ok(r) => r,
        Err(e) => fail(e.into()),
    };
    if let Err(e) = mounts::setup(&root, &state.spec, cdir.path()) {
        fail(e.into());
    }
    if let Some(sock) = console {
        if let Err(e) = open_terminal(&root, &sock, winsize) {
            fail(e.into());
        }
    }
    if let Err(e) = mounts::pivot(&root, state.spec.read_only) {
        fail(e.into());
    }
    drop(root);
    drop(cdir_fd);
    // Phase 2: we are in the container's cgroup; its namespace is rooted there.
    if r.read_exact(&mut phase).is_err() {
        // SAFETY: the monitor gave up on us (it kills us too).
        unsafe { libc::_exit(125) };
    }
    drop(r);
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP) {
        fail(Failure { code: 125, message: format!("unshare cgroup namespace: {e}") });
    }
    let keep_caps = super::caps::for_container(&state.spec, cgroup.filters_devices());
    // cgroup v1 cannot be mounted from a user namespace (cgroup2 can): such a container gets no
    // /sys/fs/cgroup, as with rootless runc.
    let cgroupfs_mountable = cgroup.is_v2() || state.spec.userns.is_none();
    if cgroupfs_mountable {
        if let Err(e) = mounts::mount_cgroupfs(&cgroup.hierarchies(), cgroup.is_v2(), state.spec.privileged) {
            fail(e.into());
        }
    }
    let nnp = !state.spec.allow_new_privileges;
    let prepared = match command::prepare(
        &state.spec.process,
        keep_caps.as_deref(),
        nnp,
        super::seccomp::policy_of(&state.spec),
        Some(&state.spec.hostname),
    ) {
        Ok(p) => p,
        Err(f) => fail(f),
    };
    super::process::clear_cloexec(preserved);
    if state.spec.init {
        set_comm(c"rimg-init");
        super::init::run(prepared, err_w);
    }
    let f = command::exec(&prepared);
    fail(f)
}
