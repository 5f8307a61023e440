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
use super::process::same_process;
use super::protocol::{self, ExecReport, Receiver, Sender};
use super::spec::ProcessSpec;
use super::state::{ContainerState, Status};
use super::terminal;
use super::RuntimeError;
use crate::sys::process::{Forked, SingleThreaded};
use nix::sched::CloneFlags;
use nix::sys::signal::SigSet;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

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
    size: Option<terminal::Size>,
    /// The process's end of the terminal channel (`-t`).
    console: Option<OwnedFd>,
    /// Where the joiner reports the process's pid.
    report: Sender<ExecReport>,
    /// Setup and exec failures of the joiner and the process.
    err: Sender<Failure>,
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
    let console = if process.tty { Some(terminal::channel()?) } else { None };
    let (report, mut report_r) =
        protocol::channel::<ExecReport>("exec report").map_err(RuntimeError::from)?;
    let (err, mut err_r) = protocol::channel::<Failure>("exec errors").map_err(RuntimeError::from)?;
    let old_mask = terminal::block_relayed();
    let (ours, theirs) = console.map_or((None, None), |(o, t)| (Some(o), Some(t)));
    let size = terminal::own_size();
    match SingleThreaded::check().and_then(|proof| crate::sys::process::fork(&proof)) {
        Ok(Forked::Child(proof)) => {
            drop((report_r, err_r, ours));
            let plan = Plan { st, process, keep_caps, size, console: theirs, report, err };
            join_and_clone(plan, namespaces, proof)
        }
        Ok(Forked::Parent(joiner)) => {
            drop((report, err, theirs, namespaces));
            collect(joiner, &mut report_r, &mut err_r, ours, old_mask)
        }
        Err(e) => {
            terminal::restore_mask(&old_mask);
            Err(RuntimeError::os("fork", e).into())
        }
    }
}

/// `rimg exec`'s side after the fork: the process's pid from the joiner, then its failure or the end of
/// the error channel (its exec).
fn collect(
    joiner: i32,
    report: &mut Receiver<ExecReport>,
    err: &mut Receiver<Failure>,
    console: Option<OwnedFd>,
    old_mask: SigSet,
) -> Result<Spawned, Failure> {
    let reported = report.recv();
    let _ = super::process::wait_pid(joiner);
    let child = match reported {
        Ok(Some(ExecReport::Started { pid })) => Some(pid),
        _ => None,
    };
    let failure = match err.recv() {
        Ok(Some(f)) => Some(f),
        Ok(None) => None,
        Err(e) => Some(RuntimeError::from(e).into()),
    };
    let failure =
        failure.or_else(|| child.is_none().then(|| rimg_fail("exec: the process did not start".into())));
    if let Some(f) = failure {
        if let Some(c) = child {
            let _ = super::process::wait_pid(c);
        }
        terminal::restore_mask(&old_mask);
        return Err(f);
    }
    let pty_master = console.and_then(terminal::receive_master);
    if let Some(m) = &pty_master {
        terminal::copy_own_size(m);
    }
    Ok(Spawned { pid: child.unwrap_or(0), pty_master, old_mask })
}

/// The joiner: everything that must happen before the process becomes visible in the container. Never
/// returns.
fn join_and_clone(plan: Plan<'_>, namespaces: Namespaces, proof: SingleThreaded) -> ! {
    let Plan { st, process, keep_caps, size, console, mut report, mut err } = plan;
    // Nothing in the container may inspect us or our child (/proc/PID/{root,cwd,fd,mem}) until the exec,
    // which makes the new program dumpable again.
    let _ = nix::sys::prctl::set_dumpable(false);
    crate::sys::process::reset_signal_dispositions();
    let preserved = 3..3 + process.preserve_fds as RawFd;
    let prepared = match join(st, process, keep_caps, &report, &err, console.as_ref(), namespaces) {
        Ok(p) => p,
        Err(f) => command::fail(&mut err, f),
    };
    match crate::sys::process::clone_with(&proof, libc::CLONE_PARENT as libc::c_ulong) {
        Ok(Forked::Child(_)) => {
            drop(report);
            super::process::clear_cloexec(preserved);
            let _ = nix::unistd::setsid();
            if let Some(sock) = &console {
                if let Err(e) = File::open("/dev/pts/ptmx")
                    .map_err(|e| RuntimeError::os("open /dev/pts/ptmx", e))
                    .and_then(|ptmx| terminal::open_in_container(&ptmx, sock, size))
                {
                    command::fail(&mut err, e.into());
                }
            }
            drop(console);
            let f = command::exec(&prepared);
            command::fail(&mut err, f)
        }
        Ok(Forked::Parent(child)) => {
            let _ = report.send(&ExecReport::Started { pid: child });
            crate::sys::process::exit_now(0)
        }
        Err(e) => command::fail(&mut err, RuntimeError::os("clone", e).into()),
    }
}

/// The joiner's work: stdin, descriptors, cgroup, namespaces, then identity and capabilities.
fn join(
    st: &ContainerState,
    process: &ProcessSpec,
    keep_caps: Option<Vec<u32>>,
    report: &Sender<ExecReport>,
    err: &Sender<Failure>,
    console: Option<&OwnedFd>,
    namespaces: Namespaces,
) -> Result<command::Prepared, Failure> {
    if !process.stdin && !process.tty {
        if let Ok(null) = File::open("/dev/null") {
            let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        }
    }
    // The caller's descriptors stop here, but for the ones it asked to pass on.
    let mut keep: Vec<RawFd> = (3..3 + process.preserve_fds as RawFd).collect();
    keep.extend([err.as_fd().as_raw_fd(), report.as_fd().as_raw_fd()]);
    keep.extend(console.map(|c| c.as_raw_fd()));
    keep.extend(namespaces.joins.iter().map(|(f, _)| f.as_raw_fd()));
    keep.push(namespaces.pid.as_raw_fd());
    crate::sys::process::close_fds_except(&keep);
    for dir in &st.cgroups {
        // "0" is the writer itself, resolved in the writer's pid namespace (v1 and v2 alike).
        std::fs::write(dir.join("cgroup.procs"), "0")
            .map_err(|e| rimg_fail(format!("join cgroup {}: {e}", dir.display())))?;
    }
    // The pid namespace applies to our children only; joining it first keeps it within host root's reach.
    nix::sched::setns(&namespaces.pid, CloneFlags::CLONE_NEWPID)
        .map_err(|e| rimg_fail(format!("join pid namespace: {e}")))?;
    for (fd, flag) in &namespaces.joins {
        nix::sched::setns(fd, *flag).map_err(|e| rimg_fail(format!("join {flag:?} namespace: {e}")))?;
    }
    drop(namespaces);
    // Identity, working directory, capabilities and the executable, resolved inside the container's root.
    command::prepare(
        process,
        keep_caps.as_deref(),
        !st.spec.allow_new_privileges,
        st.spec.seccomp_policy(),
        None,
    )
}
