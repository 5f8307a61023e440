//! `rimg exec`: run another process in a running container. The new process joins the container's cgroup
//! (before it can run anything), then its ipc, uts, net, cgroup, mount and pid namespaces (taken from the
//! container's PID 1 via /proc/PID/ns), and gets the same identity/capability treatment as the init.

use super::command::{self, Failure};
use super::launch::FORWARDED;
use super::process::same_process;
use super::spec::ProcessSpec;
use super::state::{ContainerState, Status};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

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

/// Start `process` inside the running container `st`. stdin is passed through only with `process.stdin`.
pub fn spawn(st: &ContainerState, process: &ProcessSpec) -> Result<Spawned, Failure> {
    let pid = match st.pid {
        Some(p) if st.status == Status::Running && same_process(p, st.pid_start_time) => p,
        _ => return Err(rimg_fail(format!("container {} is not running", st.short_id()))),
    };
    let ns = |name: &str| {
        File::open(format!("/proc/{pid}/ns/{name}"))
            .map_err(|e| rimg_fail(format!("open {name} namespace of {pid}: {e}")))
    };
    let own_pid = ns("pid").and_then(|_| {
        File::open("/proc/self/ns/pid").map_err(|e| rimg_fail(format!("own pid namespace: {e}")))
    })?;
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
    let pidns = ns("pid")?;
    // Decided here, on the host side: inside the container /sys/fs/cgroup is its own view.
    let filters_devices = super::cgroups::Cgroup::from_dirs(&st.cgroups).filters_devices();
    let keep_caps = super::caps::for_container(&st.spec, filters_devices);
    let winsize = super::attach::terminal_size();
    let console = if process.tty { Some(super::pty::channel().map_err(Failure::from)?) } else { None };
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| rimg_fail(format!("pipe: {e}")))?;
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    let mut old_mask = SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old_mask));
    nix::sched::setns(&pidns, CloneFlags::CLONE_NEWPID)
        .map_err(|e| rimg_fail(format!("join pid namespace: {e}")))?;
    // SAFETY: fork while single-threaded; the child execs or _exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        drop(err_r);
        command::reset_signals();
        let fail = |f: Failure| -> ! { command::fail(&err_w, f) };
        if !process.stdin && !process.tty {
            if let Ok(null) = File::open("/dev/null") {
                // SAFETY: dup2 onto stdin.
                unsafe { libc::dup2(null.as_raw_fd(), 0) };
            }
        }
        let _ = nix::unistd::setsid();
        for dir in &st.cgroups {
            // "0" is the writer itself, resolved in the writer's pid namespace (v1 and v2 alike).
            if let Err(e) = std::fs::write(dir.join("cgroup.procs"), "0") {
                fail(rimg_fail(format!("join cgroup {}: {e}", dir.display())));
            }
        }
        for (fd, flag) in &joins {
            if let Err(e) = nix::sched::setns(fd, *flag) {
                fail(rimg_fail(format!("join {flag:?} namespace: {e}")));
            }
        }
        drop(joins);
        if let Some((_, theirs)) = &console {
            if let Err(e) = open_terminal(theirs, winsize) {
                fail(e.into());
            }
        }
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
        fail(command::exec(&prepared))
    }
    let _ = nix::sched::setns(&own_pid, CloneFlags::CLONE_NEWPID);
    drop(err_w);
    if child < 0 {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
        return Err(rimg_fail(format!("fork: {}", std::io::Error::last_os_error())));
    }
    let console = console.map(|(ours, _)| ours);
    let mut data = Vec::new();
    let _ = File::from(err_r).read_to_end(&mut data);
    if let Some(f) = command::parse_failure(&data) {
        let _ = super::process::wait_pid(child);
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
        return Err(f);
    }
    let pty_master = console.and_then(|c| super::pty::recv_fd(&c, false).ok());
    if let Some(m) = &pty_master {
        super::pty::copy_size(m);
    }
    Ok(Spawned { pid: child, pty_master, old_mask })
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
