//! `rimg commit`: a container's upper directory becomes a new layer on top of its image.
//!
//! The image config is kept from the container's image (as buildah does; docker would also copy the
//! container's command into Cmd, which surprises more often than it helps) with a history entry naming the
//! command the container ran.
//!
//! A running container is paused (cgroup freezer) while its upper is read, as `docker commit` does by
//! default: the layer is then one consistent moment of the container, and nothing in it changes under the
//! walk. Safety does not rest on the pause: the upper is read with [`crate::layer::walk`], from directory
//! descriptors, so even unpaused (`--pause=false`) a container swapping a directory for a symlink to a
//! host directory cannot make the commit read host files (CVE-2018-15664's shape).

use super::image::{layer_from_upper, now_rfc3339, source_date_epoch, NewImage};
use crate::runtime::cgroups::Cgroup;
use crate::runtime::process::{same_process, start_time};
use crate::runtime::{ContainerState, Containers, Status};
use crate::store::{ImageRecord, Store};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use std::path::PathBuf;
use std::time::Duration;

/// How long the kernel gets to stop the container's processes (runc waits as long).
const FREEZE_LIMIT: Duration = Duration::from_secs(10);

/// Commit container `key` (name or ID) as a new image, named `name` if given; `pause` freezes a running
/// container while its upper directory is read.
pub fn commit_container(
    store: &Store,
    containers: &Containers,
    key: &str,
    name: Option<&str>,
    message: Option<&str>,
    author: Option<&str>,
    pause: bool,
) -> Result<ImageRecord, String> {
    let st = containers.resolve(key).map_err(|e| e.to_string())?;
    let image_id = st
        .spec
        .image_id
        .clone()
        .ok_or_else(|| format!("container {} was not created from a stored image", st.short_id()))?;
    // The base and the new layer are held until the image is written (see store::lease).
    let lease = store.lease("commit").map_err(|e| e.to_string())?;
    let store = &store.with_lease(&lease);
    let base = store.image(&image_id).map_err(|e| format!("the container's image is gone: {e}"))?;
    store.hold_image(&base).map_err(|e| format!("the container's image is gone: {e}"))?;
    let mut img = NewImage::from_image(store, &base).map_err(|e| e.to_string())?;
    let upper = containers.dir_of(&st.id).upper();
    let below: Vec<_> = base.diff_ids.clone();
    let paused = match st.status == Status::Running && pause {
        true => Paused::freeze(&st)?,
        false => None,
    };
    if st.status == Status::Running && paused.is_none() {
        log::warn!(
            "committing running container {} without pausing it: files being written may be caught half-way",
            st.short_id()
        );
    }
    let layer = layer_from_upper(store, &upper, &st.spec.lowers, &below, source_date_epoch());
    drop(paused);
    let layer = layer.map_err(|e| e.to_string())?;
    if let Some(a) = author {
        img.set_author(a);
    }
    img.push_layer(layer, &st.spec.process.args.join(" "), &now_rfc3339(), message);
    // Names are stored fully qualified (docker.io/library/x:latest), as every lookup expects.
    let name = name
        .map(|n| crate::reference::Reference::parse(n).map(|r| r.to_string()))
        .transpose()
        .map_err(|e| e.to_string())?;
    img.write(store, name.as_deref()).map_err(|e| e.to_string())
}

/// A running container frozen for a commit; thawed when dropped, whether the commit worked or not.
/// SIGINT, SIGTERM, SIGHUP and SIGQUIT are held back meanwhile, so an interrupted commit still thaws the
/// container first (then the signal takes effect). Only a SIGKILL leaves it frozen; the next commit
/// thaws it.
struct Paused {
    cgroup: Cgroup,
    monitor: Option<MonitorAside>,
    _signals: HeldSignals,
}

impl Paused {
    /// Freeze `st`'s cgroup and wait until the kernel has stopped every process in it. `None`, with a
    /// warning, where the host has no freezer for it.
    fn freeze(st: &ContainerState) -> Result<Option<Paused>, String> {
        let cgroup = Cgroup::from_dirs(&st.cgroups);
        if st.cgroups.is_empty() || !cgroup.can_freeze() {
            eprintln!("WARNING: no cgroup freezer for container {}: committing it unpaused", st.short_id());
            return Ok(None);
        }
        let signals = HeldSignals::hold();
        let monitor = if cgroup.is_v2() { MonitorAside::step_out(st, &cgroup)? } else { None };
        let paused = Paused { cgroup, monitor, _signals: signals };
        let frozen = paused.cgroup.freeze().and_then(|()| paused.cgroup.wait_frozen(FREEZE_LIMIT));
        frozen.map_err(|e| {
            format!(
                "cannot pause container {} ({e}); `rimg commit --pause=false` skips pausing",
                st.short_id()
            )
        })?;
        Ok(Some(paused))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // The monitor goes back while the container is still frozen: its init cannot exit meanwhile, so
        // the monitor is not between leaving and removing the cgroup as it does at the end.
        if let Some(m) = self.monitor.take() {
            m.step_back();
        }
        if let Err(e) = self.cgroup.thaw() {
            eprintln!("WARNING: could not unpause the container: {e}");
        }
    }
}

/// On cgroup v2 the monitor, the FUSE server of the container's rootfs, shares the container's cgroup
/// (so the work it does for the container is charged to it). Frozen with it, a container process
/// waiting for a FUSE reply would wait for ever and the cgroup would never report frozen: for the pause
/// the monitor steps out to the hierarchy's root (where it also goes when the container ends) and steps
/// back before the thaw.
struct MonitorAside {
    pid: i32,
    start: Option<u64>,
    home: PathBuf,
}

impl MonitorAside {
    /// Move `st`'s monitor out of `cgroup`, if it is in it (it is not with the kernel overlay driver).
    fn step_out(st: &ContainerState, cgroup: &Cgroup) -> Result<Option<MonitorAside>, String> {
        let (Some(pid), Some(home)) = (st.monitor_pid, cgroup.dirs().into_iter().next()) else {
            return Ok(None);
        };
        let procs = std::fs::read_to_string(home.join("cgroup.procs")).unwrap_or_default();
        if !procs.lines().any(|l| l.trim().parse::<i32>() == Ok(pid)) {
            return Ok(None);
        }
        let parent = st.spec.cgroup_parent.clone().unwrap_or_else(|| "rimg".into());
        let depth = std::path::Path::new(parent.trim_matches('/')).components().count() + 1;
        let root = home.ancestors().nth(depth).ok_or_else(|| format!("no root above {}", home.display()))?;
        let start = start_time(pid);
        std::fs::write(root.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cannot pause: moving the monitor {pid} out of {}: {e}", home.display()))?;
        Ok(Some(MonitorAside { pid, start, home }))
    }

    /// Move the monitor back into the container's cgroup, if both are still there.
    fn step_back(self) {
        if same_process(self.pid, self.start) && self.home.exists() {
            if let Err(e) = std::fs::write(self.home.join("cgroup.procs"), self.pid.to_string()) {
                log::warn!("moving the monitor {} back into {}: {e}", self.pid, self.home.display());
            }
        }
    }
}

/// The termination signals a terminal or a service manager sends, blocked in this thread (and the
/// threads it starts) until dropped; one that arrived meanwhile is delivered then.
struct HeldSignals(Option<SigSet>);

impl HeldSignals {
    fn hold() -> HeldSignals {
        let mut set = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
            set.add(s);
        }
        let mut old = SigSet::empty();
        match pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)) {
            Ok(()) => HeldSignals(Some(old)),
            Err(_) => HeldSignals(None),
        }
    }
}

impl Drop for HeldSignals {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old), None);
        }
    }
}
