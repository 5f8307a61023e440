//! `rimg exec`: run another process in a running container.
//!
//! The process must never be seen by the container while it still holds anything of the host: its root,
//! working directory, descriptors or full capabilities (a container process with CAP_SYS_PTRACE could
//! otherwise read `/proc/PID/root` and reach the host, CVE-2016-9962's shape). So, as runc's nsexec does,
//! the work is split over two processes:
//!
//! - the **joiner**, forked by rimg in the host's pid namespace (invisible to the container): it makes
//!   itself non-dumpable, closes every descriptor the caller passed that was not asked for
//!   (`--preserve-fds`), joins the container's cgroup and every namespace (mount last but for the user
//!   namespace), and switches to the container's identity, working directory and capabilities;
//! - the **process** itself, cloned by the joiner with `CLONE_PARENT` (so it is rimg's child) into the
//!   container's pid namespace: it only takes a session and terminal, confines itself (no_new_privs,
//!   seccomp) and execs. The joiner reports its pid and exits.

use super::command::{self, Failure};
use super::launch::FORWARDED;
use super::process::{close_fds_except, same_process};
use super::spec::ProcessSpec;
use super::state::{ContainerState, Status};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// A process started inside a container, ready for [`super::attach::wait`].
pub struct Spawned {
    /// Its pid (as seen from rimg).
    pub pid: i32,
    /// Master side of its terminal with `-t`.
    pub pty_master: Option<OwnedFd>,
    /// Signal mask to restore.
    pub old_mask: SigSet,
}

fn rimg_fail(message: String) -> Failure {
    Failure { code: command::EXIT_RIMG, message }
}

/// The container's namespaces to join, in joining order (mount last but for user), and its pid namespace.
struct Namespaces {
    joins: Vec<(File, CloneFlags)>,
    pid: File,
}

fn open_namespaces(st: &ContainerState, pid: i32) -> Result<Namespaces, Failure> {
    let ns = |name: &str| {
        File::open(format!("/proc/{pid}/ns/{name}"))
            .map_err(|e| rimg_fail(format!("open {name} namespace of {pid}: {e}")))
    };
    let mut joins = vec![
        (ns("ipc")?, CloneFlags::CLONE_NEWIPC),
        (ns("uts")?, CloneFlags::CLONE_NEWUTS),
        (ns("net")?, CloneFlags::CLONE_NEWNET),
        (ns("cgroup")?, CloneFlags::CLONE_NEWCGROUP),
        (ns("mnt")?, CloneFlags::CLONE_NEWNS),
    ];
    if st.spec.userns.is_some() {
        // Last: as host root we may enter every namespace (also a host network one); once inside the
        // user namespace we could not.
        joins.push((ns("user")?, CloneFlags::CLONE_NEWUSER));
    }
    Ok(Namespaces { joins, pid: ns("pid")? })
}

/// What the joiner and the process need besides the spec.
struct Plan<'a> {
    st: &'a ContainerState,
    process: &'a ProcessSpec,
    keep_caps: Option<Vec<u32>>,
    winsize: Option<libc::winsize>,
    /// The process's end of the terminal channel (`-t`).
    console: Option<OwnedFd>,
    err_w: OwnedFd,
    /// Where the joiner reports the process's pid.
    pid_w: OwnedFd,
}

/// Start `process` inside the running container `st`. stdin is passed through only with `process.stdin`;
/// the caller's descriptors 3..3+`process.preserve_fds` are passed on (they must be open, see
/// [`super::process::check_preserved_fds`], so that none of rimg's own lands among them), every other one
/// is closed.
pub fn spawn(st: &ContainerState, process: &ProcessSpec) -> Result<Spawned, Failure> {
    let pid = match st.pid {
        Some(p) if st.status == Status::Running && same_process(p, st.pid_start_time) => p,
        _ => return Err(rimg_fail(format!("container {} is not running", st.short_id()))),
    };
    let namespaces = open_namespaces(st, pid)?;
    // Decided here, on the host side: inside the container /sys/fs/cgroup is its own view.
    let filters_devices = super::cgroups::Cgroup::from_dirs(&st.cgroups).filters_devices();
    let keep_caps = super::caps::for_container(&st.spec, filters_devices);
    let winsize = super::attach::terminal_size();
    let console = if process.tty { Some(super::pty::channel().map_err(Failure::from)?) } else { None };
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| rimg_fail(format!("pipe: {e}")));
    let (err_r, err_w) = pipe()?;
    let (pid_r, pid_w) = pipe()?;
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    let mut old_mask = SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old_mask));
    let (ours, theirs) = console.map_or((None, None), |(o, t)| (Some(o), Some(t)));
    // SAFETY: fork while single-threaded; the child runs `joiner`, which never returns.
    let joiner = unsafe { libc::fork() };
    if joiner == 0 {
        drop((err_r, pid_r, ours));
        let plan = Plan { st, process, keep_caps, winsize, console: theirs, err_w, pid_w };
        join_and_clone(plan, namespaces);
    }
    drop((err_w, pid_w, theirs, namespaces));
    let restore = || {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    };
    if joiner < 0 {
        restore();
        return Err(rimg_fail(format!("fork: {}", std::io::Error::last_os_error())));
    }
    let mut reported = Vec::new();
    let _ = File::from(pid_r).read_to_end(&mut reported);
    let _ = super::process::wait_pid(joiner);
    let child = std::str::from_utf8(&reported).ok().and_then(|s| s.trim().parse::<i32>().ok());
    let mut data = Vec::new();
    let _ = File::from(err_r).read_to_end(&mut data);
    if let Some(f) = command::parse_failure(&data) {
        if let Some(c) = child {
            let _ = super::process::wait_pid(c);
        }
        restore();
        return Err(f);
    }
    let Some(child) = child else {
        restore();
        return Err(rimg_fail("exec: the process did not start".into()));
    };
    let pty_master = ours.and_then(|c| super::pty::recv_fd(&c, false).ok());
    if let Some(m) = &pty_master {
        super::pty::copy_size(m);
    }
    Ok(Spawned { pid: child, pty_master, old_mask })
}

/// The joiner: everything that must happen before the process becomes visible in the container. Never
/// returns.
fn join_and_clone(plan: Plan<'_>, namespaces: Namespaces) -> ! {
    let Plan { st, process, keep_caps, winsize, console, err_w, pid_w } = plan;
    let preserved = 3..3 + process.preserve_fds as RawFd;
    let fail = |f: Failure| -> ! { command::fail(&err_w, f) };
    // Nothing in the container may inspect us or our child (/proc/PID/{root,cwd,fd,mem}) until the exec,
    // which makes the new program dumpable again.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    command::reset_signals();
    if !process.stdin && !process.tty {
        if let Ok(null) = File::open("/dev/null") {
            // SAFETY: dup2 onto stdin.
            unsafe { libc::dup2(null.as_raw_fd(), 0) };
        }
    }
    // The caller's descriptors stop here, but for the ones it asked to pass on.
    let mut keep: Vec<RawFd> = preserved.clone().collect();
    keep.extend([err_w.as_raw_fd(), pid_w.as_raw_fd()]);
    keep.extend(console.as_ref().map(|c| c.as_raw_fd()));
    keep.extend(namespaces.joins.iter().map(|(f, _)| f.as_raw_fd()));
    keep.push(namespaces.pid.as_raw_fd());
    close_fds_except(&keep);
    for dir in &st.cgroups {
        // "0" is the writer itself, resolved in the writer's pid namespace (v1 and v2 alike).
        if let Err(e) = std::fs::write(dir.join("cgroup.procs"), "0") {
            fail(rimg_fail(format!("join cgroup {}: {e}", dir.display())));
        }
    }
    // The pid namespace applies to our children only; joining it first keeps it within host root's reach.
    if let Err(e) = nix::sched::setns(&namespaces.pid, CloneFlags::CLONE_NEWPID) {
        fail(rimg_fail(format!("join pid namespace: {e}")));
    }
    for (fd, flag) in &namespaces.joins {
        if let Err(e) = nix::sched::setns(fd, *flag) {
            fail(rimg_fail(format!("join {flag:?} namespace: {e}")));
        }
    }
    drop(namespaces);
    // Identity, working directory, capabilities and the executable, resolved inside the container's root.
    let prepared = match command::prepare(
        process,
        keep_caps.as_deref(),
        !st.spec.allow_new_privileges,
        super::seccomp::policy_of(&st.spec),
        None,
    ) {
        Ok(p) => p,
        Err(f) => fail(f),
    };
    let child = clone_as_sibling();
    if child < 0 {
        fail(rimg_fail(format!("clone: {}", std::io::Error::last_os_error())));
    }
    if child == 0 {
        drop(pid_w);
        super::process::clear_cloexec(preserved);
        let _ = nix::unistd::setsid();
        if let Some(sock) = &console {
            if let Err(e) = open_terminal(sock, winsize) {
                command::fail(&err_w, e.into());
            }
        }
        drop(console);
        command::fail(&err_w, command::exec(&prepared))
    }
    let line = format!("{child}\n");
    // SAFETY: write(2) of a local buffer to our pipe; _exit ends the joiner without running destructors
    // of the caller's state.
    unsafe {
        libc::write(pid_w.as_raw_fd(), line.as_ptr().cast(), line.len());
        libc::_exit(0)
    }
}

/// clone(2) with `CLONE_PARENT`: the new process is our parent's child (rimg waits for it and gets its
/// exit status directly) and lands in the pid namespace we joined. Returns like fork: 0 in the child.
fn clone_as_sibling() -> i32 {
    // SAFETY: clone(2) without a new stack behaves as fork(2) (the child runs on a copy of our stack); the
    // joiner is single-threaded.
    unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        ) as i32
    }
}

/// In the container's mount namespace: a pty from its devpts; master to rimg, slave as stdio and
/// controlling terminal.
fn open_terminal(sock: &OwnedFd, winsize: Option<libc::winsize>) -> Result<(), super::RuntimeError> {
    let ptmx = File::open("/dev/pts/ptmx")
        .map_err(|e| super::RuntimeError::Setup(format!("open /dev/pts/ptmx: {e}")))?;
    let (master, slave, _) = super::pty::open_pair(ptmx.as_raw_fd(), winsize)?;
    super::pty::send_fd(sock, &master)?;
    drop(master);
    for fd in 0..3 {
        // SAFETY: dup2 of the slave onto the standard descriptors.
        unsafe { libc::dup2(slave.as_raw_fd(), fd) };
    }
    drop(slave);
    // SAFETY: make the slave our controlling terminal (we are a session leader).
    unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    Ok(())
}
