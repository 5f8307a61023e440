//! The monitor (C in [`super::launch`]): mounts the container's rootfs in a private mount namespace, clones
//! the init, puts it in the cgroup, serves the FUSE rootfs, relays or logs the container's output, waits,
//! records the exit and tears everything down.
//!
//! The teardown is written once, in [`Monitor`]'s `Drop`: whatever the way out (a failed start at any
//! step, `rimg run` killed, the container's normal end), the init is killed and reaped if it still runs,
//! the rootfs unmounted, the cgroup left and removed (unless `rimg run` promised to), and an `--rm`
//! container's files deleted, in that order.

use super::cgroups::Cgroup;
use super::command::Failure;
use super::launch::{Attach, Plan};
use super::mounts;
use super::process::{start_time, wait_pid};
use super::protocol::{self, InitPhase, Lifeline, Receiver, Sender, StartReport};
use super::spec::{NetworkMode, RootfsDriver};
use super::state::{now_nanos, ContainerDir, ContainerState, Containers, MonitorLock, Status};
use super::terminal;
use super::RuntimeError;
use crate::sys::process::{Forked, SingleThreaded};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// FUSE server threads per container: enough to overlap two requests on this class of machine, few enough
/// to keep an idle container small.
const FUSE_THREADS: usize = 2;

/// What the monitor holds; dropping it tears the container down (see the module documentation).
struct Monitor {
    containers: Containers,
    state: ContainerState,
    cdir: ContainerDir,
    cgroup: Cgroup,
    /// The container's init while it may still run (cloned, not yet reaped).
    init: Option<i32>,
    /// The FUSE server of the rootfs, once serving.
    served: Option<crate::fs::OverlayMount>,
    /// The monitor itself sits in the container's resource cgroups (it serves the FUSE rootfs there).
    in_cgroup: bool,
    /// `rimg run` removes the cgroup after the monitor exits.
    parent_cleans: bool,
    /// Held for the monitor's lifetime (declared last: released after the teardown).
    _lock: MonitorLock,
}

/// The container's standard streams as the monitor plans them.
#[derive(Default)]
struct Stdio {
    /// stdin, stdout, stderr to install in the init (None: keep the monitor's).
    init: [Option<OwnedFd>; 3],
    /// Attached without a terminal: (container's end, the monitor's own stream it goes to).
    relays: Vec<(OwnedFd, BorrowedFd<'static>)>,
    /// The pipe the monitor's stdin is fed into (`-i` without `-t`).
    stdin_feed: Option<OwnedFd>,
    /// Detached: (container's end, stream name) for the log.
    logged: Vec<(OwnedFd, &'static str)>,
}

/// The monitor's life. Returns its exit code: the container's, or the start failure's.
pub(super) fn run(
    plan: Plan,
    report: Sender<StartReport>,
    lifeline: Receiver<Lifeline>,
    lock: MonitorLock,
    proof: SingleThreaded,
) -> i32 {
    let Plan { containers, state, cdir, cgroup, attach, console } = plan;
    let _ = nix::sys::prctl::set_name(c"rimg-monitor");
    let _ = nix::unistd::setsid();
    // The monitor must outlive its terminal and its parent.
    crate::sys::process::ignore_signals(&[
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPIPE,
    ]);
    let mut m = Monitor {
        containers,
        state,
        cdir,
        cgroup,
        init: None,
        served: None,
        in_cgroup: false,
        parent_cleans: false,
        _lock: lock,
    };
    let mut report = report;
    let mut lifeline = Some(lifeline);
    match m.start(attach, console, &mut lifeline, proof) {
        Ok(pumps) => {
            let _ = report.send(&StartReport::Started { init_pid: m.init.unwrap_or(0) });
            drop(report);
            m.supervise(attach, pumps, lifeline)
        }
        Err(f) => {
            m.finish(f.code, Some(f.message.clone()), false);
            let _ = report.send(&StartReport::Failed(f.clone()));
            f.code
        }
    }
}

impl Monitor {
    /// Everything up to the container's command running; returns the output pumps.
    fn start(
        &mut self,
        attach: Attach,
        console: Option<(OwnedFd, OwnedFd)>,
        lifeline: &mut Option<Receiver<Lifeline>>,
        proof: SingleThreaded,
    ) -> Result<Vec<JoinHandle<()>>, Failure> {
        // The size of rimg's terminal, applied before the command can ask for it.
        let size = if attach == Attach::Foreground { terminal::own_size() } else { None };
        // The monitor takes only a private mount namespace (for the rootfs); the init is cloned into all
        // the container's namespaces at once (with --userns into its user namespace, which owns them all).
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| RuntimeError::os("unshare the mount namespace", e))?;
        let prepared = self.mount_rootfs()?;
        let (console_ours, console_theirs) = console.map_or((None, None), |(o, t)| (Some(o), Some(t)));
        let mut stdio = Stdio::plan(attach, console_theirs.is_some(), self.state.spec.process.stdin)?;
        let (mut release, release_r) = protocol::channel::<InitPhase>("init release")?;
        let (err_w, mut err_r) = protocol::channel::<Failure>("init errors")?;
        let flags =
            clone_flags(self.state.spec.userns.is_some(), self.state.spec.network == NetworkMode::None);
        // Taken by value: threads may exist from here on (the FUSE server's).
        let cloned = crate::sys::process::clone_with(&{ proof }, flags);
        match cloned.map_err(|e| RuntimeError::os("clone the container's init", e))? {
            Forked::Child(_) => {
                drop((release, err_r, lifeline.take(), console_ours));
                let io = super::container_init::InitIo {
                    release: release_r,
                    err: err_w,
                    stdio: std::mem::take(&mut stdio.init),
                    console: console_theirs,
                    size,
                };
                // The lock stays the monitor's alone; everything else the init closes itself.
                super::container_init::run(&self.state, &self.cdir, &self.cgroup, io)
            }
            Forked::Parent(pid) => self.init = Some(pid),
        }
        let init = self.init.unwrap_or(0);
        drop((release_r, err_w, console_theirs, std::mem::take(&mut stdio.init)));
        // The descriptors passed on are the init's now; the monitor must not hold them for the container's
        // lifetime.
        crate::sys::process::close_fds(3..3 + self.state.spec.process.preserve_fds as i32);
        if let Some(ns) = &self.state.spec.userns {
            // The init waits for its release, which comes only after its maps exist.
            super::userns::write_maps(init, ns)?;
        }
        self.serve_rootfs(prepared)?;
        // Phase 1: the init builds its mounts while we put it into the cgroup (a cgroup migration waits
        // for an RCU grace period; overlapping it with the mount work hides that latency). It cannot run
        // user code before phase 2.
        release.send(&InitPhase::BuildRootfs)?;
        self.cgroup.add_process(init)?;
        release.send(&InitPhase::Go)?;
        drop(release);
        if let Some(f) = started_or_failed(&mut err_r, attach == Attach::Foreground, lifeline)? {
            return Err(f);
        }
        let (started, pid_start) = (now_nanos(), start_time(init));
        let monitor_pid = std::process::id() as i32;
        let _ = self.containers.update(&self.state.id, |s| {
            s.status = Status::Running;
            s.pid = Some(init);
            s.pid_start_time = pid_start;
            s.monitor_pid = Some(monitor_pid);
            s.started = Some(started);
        });
        Ok(stdio.pump(attach, console_ours, &self.cdir))
    }

    /// Mount the rootfs in the monitor's private mount namespace: kernel overlayfs, or the FUSE overlay
    /// (prepared now, served once the init is cloned: no thread may exist before that clone).
    fn mount_rootfs(&self) -> Result<Option<crate::fs::Prepared>, RuntimeError> {
        mounts::make_private()?;
        let lowers = if self.state.spec.lowers.is_empty() {
            // An image without layers still needs one (empty) lower.
            let empty = self.cdir.path().join("empty");
            std::fs::create_dir_all(&empty)
                .map_err(|e| RuntimeError::os(format!("create {}", empty.display()), e))?;
            vec![empty]
        } else {
            self.state.spec.lowers.clone()
        };
        let (upper, work, rootfs) = (self.cdir.upper(), self.cdir.work(), self.cdir.rootfs());
        match self.state.spec.driver {
            RootfsDriver::Kernel => {
                mounts::mount_kernel_overlay(&lowers, &upper, &work, &rootfs)?;
                Ok(None)
            }
            RootfsDriver::Fuse => {
                let cfg = crate::fs::OverlayConfig { lowers, upper: Some(upper), work: Some(work) };
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
                if let Some(ns) = &self.state.spec.userns {
                    // The overlay shows the image's (container) ids as the host ids the container runs as.
                    opts.uid_map = ns.uid_map.clone();
                    opts.gid_map = ns.gid_map.clone();
                }
                crate::fs::prepare(cfg, &rootfs, &opts)
                    .map(Some)
                    .map_err(|e| RuntimeError::Rootfs { source: e })
            }
        }
    }

    /// Start the FUSE server (threads are allowed again) inside the container's resource cgroups, so the
    /// I/O and memory it spends on the container's behalf count against the container's limits.
    fn serve_rootfs(&mut self, prepared: Option<crate::fs::Prepared>) -> Result<(), RuntimeError> {
        let Some(p) = prepared else { return Ok(()) };
        // Make the monitor the OOM killer's last choice within the container's memory cgroup: when the
        // container's memory runs out, its own processes must go, not the server of its rootfs (whose
        // death would lose the exit status and the OOMKilled verdict). Lowering oom_score_adj needs
        // CAP_SYS_RESOURCE; where root lacks it, the monitor stays out of the container's memory cgroup
        // on v1 (its own few MiB are then not charged to the container) rather than be the next victim
        // once the init is killed (seen: `head` still allocating after `sh` was killed).
        let oom_protected = std::fs::write("/proc/self/oom_score_adj", "-999").is_ok();
        // Two server threads do not need a malloc arena each (~150 KiB apiece per idle container).
        crate::sys::process::limit_malloc_arenas(1);
        self.served = Some(p.serve().map_err(|e| RuntimeError::Rootfs { source: e })?);
        // The server's background thread opens every /dev/fuse clone before it starts any worker, so one
        // answered request proves they are open, before the cgroup's device filter (v2 eBPF) would refuse
        // /dev/fuse to this process.
        round_trip(&self.cdir.rootfs())?;
        self.in_cgroup = true;
        self.cgroup.add_process_for_resources(std::process::id() as i32, !oom_protected)
    }

    /// The container runs: wait for its end (or `rimg run`'s death), record it; returns its exit code.
    fn supervise(
        &mut self,
        attach: Attach,
        pumps: Vec<JoinHandle<()>>,
        lifeline: Option<Receiver<Lifeline>>,
    ) -> i32 {
        // The monitor idles for the container's lifetime: hand back heap pages left over from rimg run's
        // argument parsing and image lookup.
        crate::sys::process::release_free_memory();
        let init = self.init.unwrap_or(0);
        let attached = if attach == Attach::Foreground { lifeline } else { None };
        let (code, said) = wait_init(init, attached);
        self.init = None;
        let oom = self.cgroup.oom_killed();
        for p in pumps {
            let _ = p.join();
        }
        self.finish(code, None, oom);
        // rimg run removes the cgroup once we are gone: no migration back out on the way.
        self.parent_cleans = attach == Attach::Foreground && !said.orphaned && said.parent_cleans;
        code
    }

    /// Record the exit.
    fn finish(&self, code: i32, err: Option<String>, oom: bool) {
        let _ = self.containers.update(&self.state.id, |s| {
            s.status = Status::Exited;
            s.exit_code = Some(code);
            s.oom_killed = oom;
            s.finished = Some(now_nanos());
            if err.is_some() {
                s.error = err.clone();
            }
        });
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(pid) = self.init.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            let _ = wait_pid(pid);
        }
        if let Some(m) = self.served.take() {
            if let Err(e) = m.unmount() {
                log::warn!("unmount rootfs: {e}");
            }
        }
        let _ = nix::mount::umount2(&self.cdir.rootfs(), nix::mount::MntFlags::MNT_DETACH);
        if !self.parent_cleans {
            if self.in_cgroup {
                leave_cgroup(&self.cgroup, &self.state);
            }
            self.cgroup.remove();
        }
        if self.state.spec.auto_remove {
            let _ = self.containers.remove_auto(&self.state);
        }
    }
}

impl Stdio {
    /// Plan the container's standard streams.
    fn plan(attach: Attach, tty: bool, stdin: bool) -> Result<Stdio, RuntimeError> {
        let pipe =
            || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RuntimeError::os("pipe", e));
        let devnull = || File::open("/dev/null").ok().map(OwnedFd::from);
        let mut s = Stdio::default();
        match (tty, attach) {
            // The init opens its terminal itself, from the container's devpts.
            (true, _) => {}
            (false, Attach::Detached) => {
                let ((or, ow), (er, ew)) = (pipe()?, pipe()?);
                s.logged = vec![(or, "stdout"), (er, "stderr")];
                s.init = [devnull(), Some(ow), Some(ew)];
            }
            // Pipes that the monitor relays, never rimg's own descriptors: the container must not get the
            // caller's terminal (it could change its modes or take it with TIOCEXCL), as with docker and
            // podman, whose daemon or conmon relays too.
            (false, Attach::Foreground) => {
                let ((or, ow), (er, ew)) = (pipe()?, pipe()?);
                s.relays = vec![(or, rustix::stdio::stdout()), (er, rustix::stdio::stderr())];
                let input = if stdin {
                    let (ir, iw) = pipe()?;
                    s.stdin_feed = Some(iw);
                    Some(ir)
                } else {
                    devnull()
                };
                s.init = [input, Some(ow), Some(ew)];
            }
        }
        Ok(s)
    }

    /// Start moving the container's output: relayed to the monitor's own stdio (foreground), or into the
    /// log (detached, with the terminal master when there is one). Returns the threads to join at the end.
    fn pump(self, attach: Attach, console: Option<OwnedFd>, cdir: &ContainerDir) -> Vec<JoinHandle<()>> {
        let mut pumps = Vec::new();
        for (fd, to) in self.relays {
            pumps.push(std::thread::spawn(move || super::logs::relay(File::from(fd), to)));
        }
        if let Some(feed) = self.stdin_feed {
            // Detached: it blocks in read(stdin) and ends with the monitor; EOF closes the container's stdin.
            std::thread::spawn(move || super::logs::relay(std::io::stdin().lock(), feed));
        }
        if attach != Attach::Detached {
            return pumps;
        }
        // Nobody is attached: the monitor's own stdio must not keep rimg run's terminal or pipes open.
        if let Ok(null) = File::open("/dev/null") {
            for fd in 0..3 {
                let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
            }
        }
        let Ok(log) = std::fs::OpenOptions::new().create(true).append(true).open(cdir.log()) else {
            return pumps;
        };
        let sink = Arc::new(Mutex::new(log));
        let mut sources = self.logged;
        if let Some(m) = console.and_then(terminal::receive_master) {
            sources.push((m, "stdout"));
        }
        for (fd, stream) in sources {
            let sink = sink.clone();
            pumps
                .push(std::thread::spawn(move || super::logs::pump(PtyReader(File::from(fd)), stream, sink)));
        }
        pumps
    }
}

/// clone(2) flags of the init: new mount, uts, ipc, pid (it is PID 1) and, with `net`, network namespaces;
/// with `user` also a new user namespace, which then owns all the others. One clone instead of unsharing
/// in the monitor first: a start is ~10 ms faster here (benches/run), and the monitor itself stays in the
/// host's namespaces except its mount namespace.
fn clone_flags(user: bool, net: bool) -> libc::c_ulong {
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
    if user {
        flags |= libc::CLONE_NEWUSER;
    }
    if net {
        flags |= libc::CLONE_NEWNET;
    }
    flags as libc::c_ulong
}

/// Wait until the init has exec'd (its error channel closes: `None`) or failed (`Some`); while attached,
/// `rimg run` dying first is a failure too (the container is then ended by the teardown).
fn started_or_failed(
    err: &mut Receiver<Failure>,
    attached: bool,
    lifeline: &mut Option<Receiver<Lifeline>>,
) -> Result<Option<Failure>, RuntimeError> {
    loop {
        let mut fds = vec![PollFd::new(err.as_fd(), PollFlags::POLLIN)];
        if let (true, Some(l)) = (attached, lifeline.as_ref()) {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        if nix::poll::poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
        let (err_ready, life_ready) = (ready(0), ready(1));
        drop(fds);
        if err_ready {
            return Ok(err.recv()?);
        }
        if life_ready {
            if let Some(l) = lifeline.as_mut() {
                if l.recv()?.is_none() {
                    return Ok(Some(Failure {
                        code: 137,
                        message: "rimg run was killed during start".into(),
                    }));
                }
            }
        }
    }
}

/// One request answered by the FUSE server at `mountpoint`: a GETATTR of its root, forced past the
/// kernel's attribute cache (the server's getattr code is what the container's first exec needs anyway,
/// so an idle monitor maps no extra code for it).
fn round_trip(mountpoint: &std::path::Path) -> Result<(), RuntimeError> {
    use rustix::fs::{AtFlags, StatxFlags, CWD};
    rustix::fs::statx(CWD, mountpoint, AtFlags::STATX_FORCE_SYNC, StatxFlags::BASIC_STATS)
        .map(|_| ())
        .map_err(|e| RuntimeError::os("serve rootfs: stat", e))
}

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

impl std::io::Read for PtyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf) {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            r => r,
        }
    }
}

/// What arrived on the lifeline from rimg run.
#[derive(Default, Clone, Copy)]
struct Said {
    /// rimg run is gone (EOF).
    orphaned: bool,
    /// rimg run promised to remove the cgroup after we exit.
    parent_cleans: bool,
}

/// Wait for the init; its exit code, and what rimg run said or whether it died (then the init was killed).
fn wait_init(init: i32, lifeline: Option<Receiver<Lifeline>>) -> (i32, Said) {
    let mut said = Said::default();
    let pid = rustix::process::Pid::from_raw(init);
    let pidfd = pid.and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    if let Some(pidfd) = pidfd {
        let mut life = lifeline;
        loop {
            let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            if let Some(l) = &life {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            if nix::poll::poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
            let (exited, spoke) = (ready(0), ready(1));
            drop(fds);
            if exited {
                break;
            }
            if spoke {
                match life.as_mut().map(Receiver::recv) {
                    Some(Ok(Some(Lifeline::ParentCleansCgroup))) => said.parent_cleans = true,
                    _ => {
                        // `rimg run` is gone (or garbled): nobody will ever collect this container; end it.
                        said.orphaned = true;
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), Signal::SIGKILL);
                        life = None;
                    }
                }
            }
        }
    }
    (wait_pid(init).unwrap_or(0), said)
}
