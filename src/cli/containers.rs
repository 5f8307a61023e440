//! Container lifecycle commands: ps, stop, kill, rm, logs, exec, wait, commit, container prune.

use super::Globals;
use crate::runtime::{self, attach, lifecycle, logs::LogLine, Containers, ProcessSpec, Status};
use anyhow::{bail, Context};
use std::io::{BufRead, Write};
use std::time::Duration;

fn containers(g: &Globals) -> anyhow::Result<Containers> {
    Ok(Containers::open(&g.root.join("containers"))?)
}

/// At most this many containers are acted on at once (each waits mostly: for a grace period, a monitor).
const PARALLEL: usize = 32;

/// Run `f` on each named container, all at once (`stop -t 10` of 30 containers takes about 10 s, not 300),
/// printing in the order given the name on success and the error otherwise (docker's per-container
/// reporting); exit 125 if any failed (rimg's own error, as podman exits for "no such container").
fn each(keys: &[String], f: impl Fn(&str) -> anyhow::Result<()> + Sync) -> anyhow::Result<i32> {
    let results: Vec<std::sync::Mutex<Option<anyhow::Result<()>>>> =
        keys.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut code = 0;
    std::thread::scope(|s| {
        for _ in 0..keys.len().min(PARALLEL) {
            let done_tx = done_tx.clone();
            let (next, results, f) = (&next, &results, &f);
            s.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(k) = keys.get(i) else { break };
                let r = f(k);
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(r);
                }
                let _ = done_tx.send(());
            });
        }
        drop(done_tx);
        // Report in argument order, each as soon as it and those before it are done.
        let mut shown = 0;
        while shown < keys.len() {
            let ready = results[shown].lock().ok().and_then(|mut slot| slot.take());
            match ready {
                Some(Ok(())) => crate::outln!("{}", keys[shown]),
                Some(Err(e)) => {
                    crate::errln!("Error response from daemon: {}", super::one_line(&e));
                    code = super::EXIT_RIMG_ERROR;
                }
                None => {
                    if done_rx.recv().is_err() {
                        break;
                    }
                    continue;
                }
            }
            shown += 1;
        }
    });
    Ok(code)
}

/// `rimg stop` flags.
#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing (default: the container's --stop-timeout, 10).
    #[arg(short = 't', long = "time", alias = "timeout")]
    time: Option<u64>,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `rimg stop`.
pub fn stop(a: StopArgs, g: &Globals) -> anyhow::Result<i32> {
    let c = containers(g)?;
    each(&a.containers, |k| Ok(lifecycle::stop(&c, k, a.time).map(|_| ())?))
}

/// `rimg kill` flags.
#[derive(clap::Args, Debug)]
pub struct KillArgs {
    /// Signal to send.
    #[arg(short = 's', long = "signal", default_value = "KILL")]
    signal: String,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `rimg kill`.
pub fn kill(a: KillArgs, g: &Globals) -> anyhow::Result<i32> {
    let sig =
        runtime::process::parse_signal(&a.signal).with_context(|| format!("invalid signal: {}", a.signal))?;
    let c = containers(g)?;
    each(&a.containers, |k| Ok(lifecycle::kill(&c, k, sig).map(|_| ())?))
}

/// `rimg rm` flags.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Kill and remove running containers.
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove the anonymous volumes of the containers too.
    #[arg(short = 'v', long = "volumes")]
    volumes: bool,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `rimg rm`.
pub fn rm(a: RmArgs, g: &Globals) -> anyhow::Result<i32> {
    let c = containers(g)?;
    each(&a.containers, |k| {
        let st = lifecycle::remove(&c, k, a.force)?;
        if a.volumes {
            c.remove_anonymous_volumes(&st.id, &st.spec.mounts);
        }
        Ok(())
    })
}

/// `rimg logs` flags.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Follow log output until the container stops.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Show timestamps.
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Container.
    container: String,
}

/// `rimg logs`.
pub fn logs(a: LogsArgs, g: &Globals) -> anyhow::Result<i32> {
    let c = containers(g)?;
    let st = c.resolve(&a.container)?;
    let path = c.dir_of(&st.id).log();
    let file = match std::fs::File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    // Attached containers keep no log: their output went to rimg run's terminal.
    let Some(file) = file else { return Ok(0) };
    let mut reader = std::io::BufReader::new(file);
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let mut pending = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            if a.follow && c.monitor_alive(&st.id) {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if a.follow {
                // The monitor may have flushed a last record just before exiting.
                let mut rest = String::new();
                if reader.read_line(&mut rest)? > 0 {
                    pending.push_str(&rest);
                    continue;
                }
            }
            break;
        }
        pending.push_str(&line);
        if !pending.ends_with('\n') {
            continue;
        }
        let rec: LogLine = match serde_json::from_str(&pending) {
            Ok(r) => r,
            Err(_) => {
                pending.clear();
                continue;
            }
        };
        pending.clear();
        let text = if a.timestamps { format!("{} {}", rec.time, rec.log) } else { rec.log };
        if rec.stream == "stderr" {
            let mut e = stderr.lock();
            e.write_all(text.as_bytes())?;
        } else {
            let mut o = stdout.lock();
            o.write_all(text.as_bytes())?;
            o.flush()?;
        }
    }
    Ok(0)
}

/// `rimg exec` flags.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Keep STDIN open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    tty: bool,
    /// Set environment variables.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Pass N more open file descriptors (3 to 3+N-1) to the process; all others are closed.
    #[arg(long = "preserve-fds", value_name = "N", default_value_t = 0)]
    preserve_fds: u32,
    /// Container.
    container: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// `rimg exec`.
pub fn exec(a: ExecArgs, g: &Globals) -> anyhow::Result<i32> {
    // First, before rimg opens a descriptor of its own that could land among them.
    runtime::process::check_preserved_fds(a.preserve_fds).map_err(anyhow::Error::msg)?;
    let c = containers(g)?;
    let st = c.resolve(&a.container)?;
    if st.status != Status::Running || !c.monitor_alive(&st.id) {
        bail!("container {} is not running", st.short_id());
    }
    let mut env = st.spec.process.env.clone();
    for e in &a.env {
        let e =
            if e.contains('=') { e.clone() } else { format!("{e}={}", std::env::var(e).unwrap_or_default()) };
        let key = e.split('=').next().unwrap_or_default().to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(e);
    }
    let process = ProcessSpec {
        args: a.command.clone(),
        env,
        cwd: a.workdir.clone().unwrap_or_else(|| st.spec.process.cwd.clone()),
        user: a.user.clone().unwrap_or_else(|| st.spec.process.user.clone()),
        tty: a.tty,
        stdin: a.interactive,
        preserve_fds: a.preserve_fds,
    };
    match runtime::exec::spawn(&st, &process) {
        Ok(s) => Ok(attach::wait(attach::Relay {
            child: s.pid,
            target: s.pid,
            pty_master: s.pty_master,
            stdin: a.interactive,
            old_mask: s.old_mask,
        })),
        Err(f) => {
            crate::errln!("rimg: {}", f.message);
            Ok(f.code)
        }
    }
}

/// `rimg wait` flags.
#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `rimg wait`: print each container's exit code once it has stopped.
pub fn wait(a: WaitArgs, g: &Globals) -> anyhow::Result<i32> {
    let c = containers(g)?;
    let mut code = 0;
    for k in &a.containers {
        match lifecycle::wait(&c, k) {
            Ok(n) => crate::outln!("{n}"),
            Err(e) => {
                crate::errln!("Error response from daemon: {e}");
                code = super::EXIT_RIMG_ERROR;
            }
        }
    }
    Ok(code)
}

/// `rimg commit` flags.
#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    /// Commit message (recorded in the image history).
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Author.
    #[arg(short = 'a', long)]
    author: Option<String>,
    /// Pause a running container while its changes are read (docker's default; `--pause=false` reads
    /// them while it runs).
    #[arg(
        short = 'p',
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pause: bool,
    /// Container.
    container: String,
    /// New image reference.
    reference: Option<String>,
}

/// `rimg commit`: the container's upper becomes a new layer on its image (see `build::commit`).
pub fn commit(a: CommitArgs, g: &Globals) -> anyhow::Result<i32> {
    let store = super::pull::open_store(g)?;
    let c = containers(g)?;
    // Stored under the full normalized name (`docker.io/library/x:latest`), as pulls are.
    let name = match &a.reference {
        Some(r) => {
            let mut r = crate::reference::Reference::parse(r)?;
            if r.tag.is_none() && r.digest.is_none() {
                r = r.with_tag("latest")?;
            }
            Some(r.to_string())
        }
        None => None,
    };
    let rec = crate::build::commit::commit_container(
        &store,
        &c,
        &a.container,
        name.as_deref(),
        a.message.as_deref(),
        a.author.as_deref(),
        a.pause,
    )
    .map_err(anyhow::Error::msg)?;
    crate::outln!("{}", rec.id);
    Ok(0)
}

/// Container housekeeping.
#[derive(clap::Subcommand, Debug)]
pub enum ContainerCommand {
    /// Remove all stopped containers.
    Prune {
        /// Do not prompt for confirmation (rimg never prompts).
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// List containers (as `rimg ps`).
    Ls(super::ps::PsArgs),
}

/// `rimg container …`.
pub fn container(a: ContainerCommand, g: &Globals) -> anyhow::Result<i32> {
    match a {
        ContainerCommand::Prune { .. } => {
            let removed = lifecycle::prune(&containers(g)?)?;
            crate::outln!("Deleted Containers:");
            for id in removed {
                crate::outln!("{id}");
            }
            Ok(0)
        }
        ContainerCommand::Ls(p) => super::ps::ps(p, g),
    }
}
