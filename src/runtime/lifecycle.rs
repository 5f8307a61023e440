//! Acting on existing containers: kill, stop (stop signal, grace period, SIGKILL), wait, remove, prune.
//! Signals go to the container's PID 1 after checking it is still the same process (pid + start time).

use super::process::same_process;
use super::state::{ContainerState, Containers, Status};
use super::RuntimeError;
use std::time::{Duration, Instant};

fn live_pid(st: &ContainerState) -> Option<i32> {
    let pid = st.pid?;
    (st.status == Status::Running && same_process(pid, st.pid_start_time)).then_some(pid)
}

/// kill(2) with a signal number as docker takes it (0 probes).
fn signal_pid(pid: i32, signal: i32) -> nix::Result<()> {
    let sig = if signal == 0 { None } else { Some(nix::sys::signal::Signal::try_from(signal)?) };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
}

/// Send `signal` to the container's PID 1.
pub fn kill(containers: &Containers, key: &str, signal: i32) -> Result<ContainerState, RuntimeError> {
    let st = containers.resolve(key)?;
    let pid = live_pid(&st).ok_or_else(|| RuntimeError::NotRunning(st.short_id().to_string()))?;
    signal_pid(pid, signal).map_err(|e| RuntimeError::os(format!("kill {pid}"), e))?;
    Ok(st)
}

/// Stop: the stop signal, then SIGKILL after `timeout` (the container's own when `None`); waits until the
/// monitor has recorded the exit. Stopping a stopped container is not an error (as docker).
pub fn stop(
    containers: &Containers,
    key: &str,
    timeout: Option<u64>,
) -> Result<ContainerState, RuntimeError> {
    let st = containers.resolve(key)?;
    let Some(pid) = live_pid(&st) else { return Ok(st) };
    let timeout = Duration::from_secs(timeout.unwrap_or(st.spec.stop_timeout));
    let _ = signal_pid(pid, st.spec.stop_signal);
    let deadline = Instant::now() + timeout;
    while containers.monitor_alive(&st.id)
        && same_process(pid, st.pid_start_time)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    if same_process(pid, st.pid_start_time) {
        let _ = signal_pid(pid, libc::SIGKILL);
    }
    containers.wait_monitor(&st.id)?;
    let st = containers.load(&st.id)?;
    containers.reconcile(st.clone()).map(|s| s.unwrap_or(st))
}

/// Block until the container has exited; returns its exit code.
pub fn wait(containers: &Containers, key: &str) -> Result<i32, RuntimeError> {
    let st = containers.resolve(key)?;
    containers.wait_monitor(&st.id)?;
    let st = match containers.load(&st.id) {
        Ok(s) => s,
        // Auto-removed after exit: docker reports 0 unless it saw otherwise; we saw nothing.
        Err(RuntimeError::NoSuchContainer(_)) => return Ok(st.exit_code.unwrap_or(0)),
        Err(e) => return Err(e),
    };
    let st = containers.reconcile(st.clone())?.unwrap_or(st);
    Ok(st.exit_code.unwrap_or(0))
}

/// Remove a container; a running one only with `force` (killed first).
pub fn remove(containers: &Containers, key: &str, force: bool) -> Result<ContainerState, RuntimeError> {
    let st = containers.resolve(key)?;
    if st.status == Status::Running && containers.monitor_alive(&st.id) {
        if !force {
            return Err(RuntimeError::Running(st.short_id().to_string()));
        }
        if let Some(pid) = live_pid(&st) {
            let _ = signal_pid(pid, libc::SIGKILL);
        }
        containers.wait_monitor(&st.id)?;
    }
    for cg in &st.cgroups {
        super::cgroups::remove_dir_killing(cg);
    }
    containers.remove_files(&st.id)?;
    Ok(st)
}

/// Remove every exited container; returns the removed ids.
pub fn prune(containers: &Containers) -> Result<Vec<String>, RuntimeError> {
    let mut out = Vec::new();
    for st in containers.list() {
        if st.status != Status::Running {
            containers.remove_files(&st.id)?;
            out.push(st.id);
        }
    }
    Ok(out)
}
