//! Starting a container: the three processes and what each owns.
//!
//! - **P**, the `rimg run` process (this module): creates the cgroup, forks the monitor, then (in the
//!   foreground) relays signals and the terminal and exits with the container's code.
//! - **C**, the monitor ([`super::monitor`]): new session; unshares its mount namespace and mounts the
//!   rootfs there privately; `clone`s the container's init *before any thread exists* straight into new
//!   mount, uts, ipc, pid (and net) namespaces; puts the init in the cgroup while it is still blocked;
//!   releases it; records state; waits; tears down. C watches a lifeline from P: EOF while attached means
//!   P died, so C kills the container and cleans up — a SIGKILLed `rimg run` leaves nothing behind. C
//!   holds the container's monitor lock for its lifetime.
//! - **G**, PID 1 of the new pid namespace ([`super::container_init`]): hostname and loopback, its own
//!   mount namespace (so `pivot_root` cannot move C's root) and cgroup namespace, /proc, /sys, /dev, /etc
//!   files, user mounts, masked paths, pivot_root, identity, capabilities, exec. Exec failures travel back
//!   through a close-on-exec pipe as 126/127.
//! - With a user namespace (`--userns`), the same clone also makes G's user namespace, which then owns
//!   all the others; C writes G's id maps before releasing it, and G becomes root in it first (see
//!   [`super::userns`]).
//!
//! Between them travel only the typed messages of [`super::protocol`].

use super::cgroups::{Cgroup, Layout};
use super::command::{Failure, EXIT_RIMG};
use super::mounts;
use super::process::wait_pid;
use super::protocol::{self, Lifeline, Sender, StartReport};
use super::spec::NetworkMode;
use super::state::{now_nanos, ContainerDir, ContainerState, Containers, MonitorLock, Status};
use super::terminal;
use super::RuntimeError;
use crate::sys::process::{Forked, SingleThreaded};
use nix::sys::signal::SigSet;
use std::os::fd::OwnedFd;

/// How the container's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// Foreground: the monitor relays the container's stdio to rimg's (stdin only with `-i`), or rimg
    /// relays a pty (`-t`).
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
    pub lifeline: Option<Sender<Lifeline>>,
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
    pub fn defer_cgroup_cleanup(&mut self) -> bool {
        let Some(l) = &mut self.lifeline else { return false };
        l.send(&Lifeline::ParentCleansCgroup).is_ok()
    }
}

/// Remove what an attached monitor leaves to `rimg run`: the cgroup directories (after the monitor exited).
pub fn cleanup_after_monitor(cgroups: &[std::path::PathBuf]) {
    for d in cgroups {
        super::cgroups::remove_dir_killing(d);
    }
}

/// Everything the monitor and init need, prepared by P before forking.
pub(super) struct Plan {
    pub containers: Containers,
    pub state: ContainerState,
    pub cdir: ContainerDir,
    pub cgroup: Cgroup,
    pub attach: Attach,
    /// (rimg's end, the init's end) of the channel the terminal master travels through.
    pub console: Option<(OwnedFd, OwnedFd)>,
}

/// Start a container attached to this process and relay until it ends; its exit code (docker's). What
/// `rimg run` without `-d` and every `RUN` step of a build do.
pub fn run_foreground(
    containers: &Containers,
    state: ContainerState,
    lock: MonitorLock,
) -> Result<i32, Failure> {
    let stdin = state.spec.process.stdin;
    let mut launched = start(containers, state, lock, Attach::Foreground)?;
    // rimg run outlives the monitor anyway: it removes the cgroup afterwards, sparing the monitor a
    // migration out of it on the way (an RCU grace period on every container's exit path).
    let deferred = launched.defer_cgroup_cleanup();
    let Launched { monitor_pid, init_pid, pty_master, lifeline, old_mask, cgroups, .. } = launched;
    let code = super::attach::wait(super::attach::Relay {
        child: monitor_pid,
        target: init_pid,
        pty_master,
        stdin,
        old_mask,
    });
    drop(lifeline);
    if deferred {
        cleanup_after_monitor(&cgroups);
    }
    Ok(code)
}

/// Start the container `state` (fresh from [`Containers::create`], whose lock is passed in). On failure
/// the record is marked exited with the error and the failure carries docker's exit code.
pub fn start(
    containers: &Containers,
    state: ContainerState,
    lock: MonitorLock,
    attach: Attach,
) -> Result<Launched, Failure> {
    let id = state.id.clone();
    let auto_remove = state.spec.auto_remove.then(|| state.clone());
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
        if let Some(st) = &auto_remove {
            let _ = containers.remove_auto(st);
        }
        f
    };
    let cdir = containers.dir_of(&state.id);
    if let Err(e) = write_etc_files(&cdir, &state) {
        return Err(cleanup_fail(e.into(), None));
    }
    let cgroup = match prepare_cgroup(containers, &state) {
        Ok(c) => c,
        Err((e, cg)) => return Err(cleanup_fail(e.into(), cg.as_ref())),
    };
    let channels = (|| -> Result<_, RuntimeError> {
        let console = if state.spec.process.tty { Some(terminal::channel()?) } else { None };
        Ok((
            console,
            protocol::channel::<StartReport>("start report")?,
            protocol::channel::<Lifeline>("lifeline")?,
        ))
    })();
    let (console, (report_w, mut report_r), (life_w, life_r)) = match channels {
        Ok(c) => c,
        Err(e) => return Err(cleanup_fail(e.into(), Some(&cgroup))),
    };
    // Block the forwarded signals now so none is lost between fork and the relay loop; the monitor
    // restores its mask.
    let old_mask = terminal::block_relayed();
    let plan = Plan { containers: containers.clone(), state, cdir, cgroup: cgroup.clone(), attach, console };
    let forked = SingleThreaded::check().and_then(|proof| crate::sys::process::fork(&proof));
    let pid = match forked {
        Ok(Forked::Child(proof)) => {
            drop((report_r, life_w));
            terminal::restore_mask(&old_mask);
            let code = super::monitor::run(plan, report_w, life_r, lock, proof);
            crate::sys::process::exit_now(code)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => {
            terminal::restore_mask(&old_mask);
            return Err(cleanup_fail(RuntimeError::os("fork the monitor", e).into(), Some(&cgroup)));
        }
    };
    drop((report_w, life_r, lock));
    let Plan { console, .. } = plan;
    match report_r.recv() {
        Ok(Some(StartReport::Started { init_pid })) => {
            let (pty_master, lifeline) = match attach {
                Attach::Foreground => {
                    // The init sent the master before exec'ing, so it is already queued.
                    let master = console.and_then(|(ours, _)| terminal::receive_master(ours));
                    if let Some(m) = &master {
                        terminal::copy_own_size(m);
                    }
                    (master, Some(life_w))
                }
                Attach::Detached => (None, None),
            };
            Ok(Launched {
                id,
                monitor_pid: pid,
                init_pid,
                pty_master,
                lifeline,
                old_mask,
                cgroups: cgroup.dirs(),
            })
        }
        other => {
            // Start failed: the monitor has recorded and cleaned up; collect it.
            let status = wait_pid(pid).unwrap_or(EXIT_RIMG);
            terminal::restore_mask(&old_mask);
            Err(match other {
                Ok(Some(StartReport::Failed(f))) => f,
                Err(e) => RuntimeError::from(e).into(),
                _ => {
                    Failure { code: EXIT_RIMG, message: format!("container monitor failed (exit {status})") }
                }
            })
        }
    }
}

/// The container's cgroup, created and limited, its directories recorded (for any later rimg that must
/// remove them). On failure, the cgroup if it was made.
fn prepare_cgroup(
    containers: &Containers,
    state: &ContainerState,
) -> Result<Cgroup, (RuntimeError, Option<Cgroup>)> {
    let parent = state.spec.cgroup_parent.clone().unwrap_or_else(|| "rimg".into());
    let cgroup =
        Layout::detect().and_then(|l| Cgroup::create(&l, &parent, &state.id)).map_err(|e| (e, None))?;
    let dirs = cgroup.dirs();
    let applied = containers
        .update(&state.id, |s| s.cgroups = dirs)
        .and_then(|_| cgroup.apply(&state.spec.resources, state.spec.privileged));
    match applied {
        Ok(()) => Ok(cgroup),
        Err(e) => Err((e, Some(cgroup))),
    }
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
