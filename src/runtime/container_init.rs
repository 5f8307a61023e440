//! The container's init (G in [`super::launch`]): cloned by the monitor into the container's namespaces,
//! it builds the container's view of the world and becomes its PID 1 by exec'ing the command (or
//! rimg-init with `--init`). Nothing here runs user code before the exec.

use super::cgroups::Cgroup;
use super::command::{self, Failure, EXIT_RIMG};
use super::mounts;
use super::protocol::{InitPhase, Receiver, Sender};
use super::spec::NetworkMode;
use super::state::{ContainerDir, ContainerState};
use super::terminal;
use super::RuntimeError;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// What the init gets from the monitor besides the container's description.
pub(super) struct InitIo {
    /// The monitor's go-aheads ([`InitPhase`]).
    pub release: Receiver<InitPhase>,
    /// Setup and exec failures (close-on-exec: the exec closes it).
    pub err: Sender<Failure>,
    /// stdin, stdout, stderr to install (None: keep the inherited one).
    pub stdio: [Option<OwnedFd>; 3],
    /// Channel for the terminal master when the container has a tty.
    pub console: Option<OwnedFd>,
    /// Initial terminal size.
    pub size: Option<terminal::Size>,
}

/// Why the init stops before exec.
enum Stop {
    /// A failure to report.
    Failed(Failure),
    /// The monitor is gone (it kills us anyway).
    Abandoned,
}

impl From<RuntimeError> for Stop {
    fn from(e: RuntimeError) -> Stop {
        Stop::Failed(e.into())
    }
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Stop {
        Stop::Failed(f)
    }
}

/// Become the container's PID 1. Never returns.
pub(super) fn run(state: &ContainerState, cdir: &ContainerDir, cgroup: &Cgroup, io: InitIo) -> ! {
    let InitIo { release, mut err, stdio, console, size } = io;
    match build(state, cdir, cgroup, release, &err, stdio, console, size) {
        Ok(prepared) => {
            if state.spec.init {
                let _ = nix::sys::prctl::set_name(c"rimg-init");
                super::init::run(prepared, err);
            }
            command::fail(&mut err, command::exec(&prepared))
        }
        Err(Stop::Failed(f)) => command::fail(&mut err, f),
        Err(Stop::Abandoned) => crate::sys::process::exit_now(EXIT_RIMG),
    }
}

/// Everything between the clone and the exec; returns the prepared command.
#[allow(clippy::too_many_arguments)]
fn build(
    state: &ContainerState,
    cdir: &ContainerDir,
    cgroup: &Cgroup,
    mut release: Receiver<InitPhase>,
    err: &Sender<Failure>,
    stdio: [Option<OwnedFd>; 3],
    console: Option<OwnedFd>,
    size: Option<terminal::Size>,
) -> Result<command::Prepared, Stop> {
    // The container directory, opened now, while our host uid is still root's: a user-namespaced init
    // soon becomes an unprivileged host uid that may not search the private store above it. Paths below
    // go through this descriptor (the magic link skips the directories above); it is close-on-exec and
    // closed once the rootfs is our root.
    let cdir_fd = File::open(cdir.path())
        .map_err(|e| RuntimeError::os(format!("open {}", cdir.path().display()), e))?;
    let cdir = ContainerDir::new(std::path::PathBuf::from(format!("/proc/self/fd/{}", cdir_fd.as_raw_fd())));
    // The volumes' directories too, for the same reason.
    let volumes = super::volumes::VolumeSources::open(&state.spec)?;
    die_with_the_monitor();
    if !release.expect(InitPhase::BuildRootfs, "BuildRootfs").map_err(RuntimeError::from)? {
        return Err(Stop::Abandoned);
    }
    // Keep only what the init needs: no /dev/fuse, lock or pipe of the monitor may leak into the container.
    let preserved = 3..3 + state.spec.process.preserve_fds as i32;
    let mut keep: Vec<i32> = preserved.clone().collect();
    keep.extend([err.as_fd().as_raw_fd(), release.as_fd().as_raw_fd(), cdir_fd.as_raw_fd()]);
    keep.extend(volumes.raw_fds());
    keep.extend(console.as_ref().map(|c| c.as_raw_fd()));
    keep.extend(stdio.iter().flatten().map(|f| f.as_raw_fd()));
    crate::sys::process::close_fds_except(&keep);
    crate::sys::process::reset_signal_dispositions();
    for (i, fd) in stdio.iter().enumerate() {
        if let Some(fd) = fd {
            nix::unistd::dup2(fd.as_raw_fd(), i as i32).map_err(|e| RuntimeError::os("install stdio", e))?;
        }
    }
    drop(stdio);
    if state.spec.userns.is_some() {
        // Cloned into the user namespace; the monitor wrote the maps before the release.
        super::userns::become_root()?;
        // A credential change cleared the parent-death signal.
        die_with_the_monitor();
    }
    // Our uts and net namespaces came with the clone (so did our own mount namespace, in which
    // pivot_root cannot move the monitor's root).
    name_host_and_raise_lo(state)?;
    let _ = nix::unistd::setsid();
    if state.spec.userns.is_some() {
        // The rootfs mount came from the monitor's (more privileged) namespace, so here it is locked and
        // pivot_root refuses it; a bind of it made in this namespace is not.
        mounts::rebind_own(&cdir.rootfs())?;
    }
    let root = mounts::Root::open(&cdir.rootfs())?;
    mounts::setup(&root, &state.spec, cdir.path(), &volumes)?;
    if let Some(sock) = console {
        let ptmx = root.open_path("dev/pts/ptmx")?;
        let n = terminal::open_in_container(&ptmx, &sock, size)?;
        mounts::bind_console(&root, n)?;
    }
    mounts::pivot(&root, state.spec.read_only)?;
    drop((root, cdir_fd, volumes));
    // Phase 2: we are in the container's cgroup; its namespace is rooted there.
    if !release.expect(InitPhase::Go, "Go").map_err(RuntimeError::from)? {
        return Err(Stop::Abandoned);
    }
    drop(release);
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| RuntimeError::os("unshare the cgroup namespace", e))?;
    let keep_caps = super::caps::for_container(&state.spec, cgroup.filters_devices());
    // cgroup v1 cannot be mounted from a user namespace (cgroup2 can): such a container gets no
    // /sys/fs/cgroup, as with rootless runc.
    if cgroup.is_v2() || state.spec.userns.is_none() {
        mounts::mount_cgroupfs(&cgroup.hierarchies(), cgroup.is_v2(), state.spec.privileged)?;
    }
    let prepared = command::prepare(
        &state.spec.process,
        keep_caps.as_deref(),
        !state.spec.allow_new_privileges,
        state.spec.seccomp_policy(),
        Some(&state.spec.hostname),
    )?;
    super::process::clear_cloexec(preserved);
    Ok(prepared)
}

/// SIGKILL when the monitor dies (set again after every credential change, which clears it).
fn die_with_the_monitor() {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
}

/// The container's hostname and, with `--network none`, its loopback interface: done by the init, first
/// thing in its new uts and net namespaces.
fn name_host_and_raise_lo(state: &ContainerState) -> Result<(), RuntimeError> {
    nix::unistd::sethostname(&state.spec.hostname).map_err(|e| RuntimeError::os("sethostname", e))?;
    if state.spec.network == NetworkMode::None {
        crate::sys::net::loopback_up().map_err(|e| RuntimeError::os("bring lo up", e))?;
    }
    Ok(())
}
