//! Container records on disk: `ROOT/containers/<id>/state.json` plus the directories the rootfs is made of.
//!
//! Liveness never trusts a pid alone: the monitor process holds an exclusive `flock` on `monitor.lock` for
//! the container's whole life, so "is the container still managed?" is one non-blocking lock attempt that is
//! immune to pid reuse, and the lock vanishes with the process however it dies (SIGKILL included).
//! State updates are read-modify-write under a second lock (`state.lock`) and land by atomic rename.

use super::spec::ContainerSpec;
use super::RuntimeError;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lifecycle phase, as docker names them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Record exists, process not started (or start failed before exec).
    Created,
    /// The init process is running.
    Running,
    /// The init process has exited (or its monitor died).
    Exited,
}

/// The persisted record of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    /// 64 hex characters.
    pub id: String,
    /// What was asked for.
    pub spec: ContainerSpec,
    /// Current phase.
    pub status: Status,
    /// Creation time, nanoseconds since the epoch.
    pub created: u128,
    /// Start time (exec of the command), nanoseconds since the epoch.
    #[serde(default)]
    pub started: Option<u128>,
    /// Exit time, nanoseconds since the epoch.
    #[serde(default)]
    pub finished: Option<u128>,
    /// The container's PID 1 as seen from the host.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Start time (clock ticks since boot, /proc/PID/stat field 22) of `pid`, to detect pid reuse.
    #[serde(default)]
    pub pid_start_time: Option<u64>,
    /// The monitor process that owns the mounts and waits for `pid`.
    #[serde(default)]
    pub monitor_pid: Option<i32>,
    /// docker-style exit code once exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The kernel OOM killer killed a process of this container.
    #[serde(default)]
    pub oom_killed: bool,
    /// Why the start failed, or why the monitor vanished.
    #[serde(default)]
    pub error: Option<String>,
    /// Absolute cgroup directories created for this container (removed when it exits).
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}

impl ContainerState {
    /// The first 12 hex digits, as docker shows ids.
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// Nanoseconds since the epoch, for timestamps in state and logs.
pub fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// The on-disk layout of one container directory.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    path: PathBuf,
}

impl ContainerDir {
    /// Wrap an existing (or about to be created) container directory.
    pub fn new(path: PathBuf) -> Self {
        ContainerDir { path }
    }
    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Overlay upper (the container's writes).
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }
    /// Overlay work dir.
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }
    /// Mount point of the rootfs (only ever mounted inside the container's private mount namespace).
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }
    /// Output of detached containers, json-lines.
    pub fn log(&self) -> PathBuf {
        self.path.join("log")
    }
    /// Files bind-mounted at /etc/hostname, /etc/hosts, /etc/resolv.conf.
    pub fn etc_file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
    fn state_file(&self) -> PathBuf {
        self.path.join("state.json")
    }
    fn monitor_lock_file(&self) -> PathBuf {
        self.path.join("monitor.lock")
    }
    fn state_lock_file(&self) -> PathBuf {
        self.path.join("state.lock")
    }
}

/// An exclusive flock held by whoever manages a live container (the monitor). Dropping it releases it.
#[derive(Debug)]
pub struct MonitorLock {
    file: File,
}

impl MonitorLock {
    /// The lock's descriptor (close-on-exec), so a forked child can be told not to keep it.
    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    use rustix::fs::FlockOperation as Op;
    let op = match (op & libc::LOCK_EX != 0, op & libc::LOCK_NB != 0) {
        (true, false) => Op::LockExclusive,
        (true, true) => Op::NonBlockingLockExclusive,
        (false, false) if op & libc::LOCK_UN != 0 => Op::Unlock,
        (false, false) => Op::LockShared,
        (false, true) => Op::NonBlockingLockShared,
    };
    loop {
        let e = match rustix::fs::flock(file, op) {
            Ok(()) => return Ok(()),
            Err(e) => std::io::Error::from(e),
        };
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn open_lock(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

fn io_err(what: impl Into<String>, path: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Io { what: what.into(), path: path.to_path_buf(), source: e }
}

/// All containers under one root: creation, lookup, state updates, reconciliation of dead monitors.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
}

impl Containers {
    /// Containers kept under `dir` (normally `ROOT/containers`); created if missing.
    pub fn open(dir: &Path) -> Result<Self, RuntimeError> {
        fs::create_dir_all(dir).map_err(|e| io_err("create containers dir", dir, e))?;
        Ok(Containers { dir: dir.to_path_buf() })
    }

    /// The directory of the container with this full id.
    pub fn dir_of(&self, id: &str) -> ContainerDir {
        ContainerDir::new(self.dir.join(id))
    }

    /// Create a new container record (status `created`) and return it with its monitor lock held, so no
    /// reconciler can mistake it for abandoned before the monitor runs.
    pub fn create(&self, mut spec: ContainerSpec) -> Result<(ContainerState, MonitorLock), RuntimeError> {
        let names_lock_path = self.dir.join(".names.lock");
        let names_lock = open_lock(&names_lock_path).map_err(|e| io_err("open", &names_lock_path, e))?;
        flock(&names_lock, libc::LOCK_EX).map_err(|e| io_err("lock", &names_lock_path, e))?;
        let existing = self.list_raw();
        if spec.name.is_empty() {
            spec.name = loop {
                let n = random_name();
                if !existing.iter().any(|c| c.spec.name == n) {
                    break n;
                }
            };
        } else if !valid_name(&spec.name) {
            return Err(RuntimeError::Invalid(format!(
                "invalid container name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                spec.name
            )));
        } else if existing.iter().any(|c| c.spec.name == spec.name) {
            return Err(RuntimeError::NameInUse(spec.name.clone()));
        }
        let id = random_id();
        if spec.hostname.is_empty() {
            spec.hostname = id[..12].to_string();
        }
        let cdir = self.dir_of(&id);
        for d in [cdir.path().to_path_buf(), cdir.upper(), cdir.work(), cdir.rootfs()] {
            fs::create_dir_all(&d).map_err(|e| io_err("create", &d, e))?;
        }
        // Searchable by anyone who holds a way in (a user-namespaced init gets a descriptor of it), listable
        // by root only; what guards it from host users is the private containers/ directory above.
        fs::set_permissions(cdir.path(), fs::Permissions::from_mode(0o711))
            .map_err(|e| io_err("chmod", cdir.path(), e))?;
        let lock_path = cdir.monitor_lock_file();
        let file = open_lock(&lock_path).map_err(|e| io_err("open", &lock_path, e))?;
        flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(|e| io_err("lock", &lock_path, e))?;
        let state = ContainerState {
            id,
            spec,
            status: Status::Created,
            created: now_nanos(),
            started: None,
            finished: None,
            pid: None,
            pid_start_time: None,
            monitor_pid: None,
            exit_code: None,
            oom_killed: false,
            error: None,
            cgroups: Vec::new(),
        };
        write_state(&cdir, &state)?;
        // The log is made here, private (0600: it holds the container's output); the monitor appends to it.
        let log = cdir.log();
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(crate::store::perms::PRIVATE_FILE_MODE)
            .open(&log)
            .map_err(|e| io_err("create", &log, e))?;
        drop(names_lock);
        Ok((state, MonitorLock { file }))
    }

    /// Read one container's state as stored (no reconciliation).
    pub fn load(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let cdir = self.dir_of(id);
        let p = cdir.state_file();
        let data = fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RuntimeError::NoSuchContainer(id.to_string())
            } else {
                io_err("read", &p, e)
            }
        })?;
        serde_json::from_slice(&data).map_err(|e| RuntimeError::CorruptState { path: p, source: e })
    }

    /// Read-modify-write a container's state under its state lock.
    pub fn update<F: FnOnce(&mut ContainerState)>(
        &self,
        id: &str,
        f: F,
    ) -> Result<ContainerState, RuntimeError> {
        let cdir = self.dir_of(id);
        let lp = cdir.state_lock_file();
        let lock = open_lock(&lp).map_err(|e| io_err("open", &lp, e))?;
        flock(&lock, libc::LOCK_EX).map_err(|e| io_err("lock", &lp, e))?;
        let mut st = self.load(id)?;
        f(&mut st);
        write_state(&cdir, &st)?;
        Ok(st)
    }

    /// Is the container's monitor process alive (holding its lock)?
    pub fn monitor_alive(&self, id: &str) -> bool {
        let p = self.dir_of(id).monitor_lock_file();
        let Ok(f) = OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(&p) else {
            return false;
        };
        flock(&f, libc::LOCK_SH | libc::LOCK_NB).is_err()
    }

    /// Block until the container's monitor has exited.
    pub fn wait_monitor(&self, id: &str) -> Result<(), RuntimeError> {
        let p = self.dir_of(id).monitor_lock_file();
        let f = match OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("open", &p, e)),
        };
        flock(&f, libc::LOCK_SH).map_err(|e| io_err("lock", &p, e))
    }

    fn list_raw(&self) -> Vec<ContainerState> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(&self.dir) else { return out };
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            if let Ok(st) = self.load(&name) {
                out.push(st);
            }
        }
        out
    }

    /// All containers, oldest first, after reconciling records whose monitor has died (marked exited, their
    /// leftover cgroups removed, auto-remove honoured).
    pub fn list(&self) -> Vec<ContainerState> {
        let mut out = Vec::new();
        for st in self.list_raw() {
            match self.reconcile(st) {
                Ok(Some(st)) => out.push(st),
                Ok(None) => {}
                Err(e) => log::warn!("reconcile: {e}"),
            }
        }
        out.sort_by_key(|s| s.created);
        out
    }

    /// If `st` claims to be live but its monitor is gone, make the record true again. Returns `None` when
    /// the container was auto-removed.
    pub fn reconcile(&self, st: ContainerState) -> Result<Option<ContainerState>, RuntimeError> {
        if self.monitor_alive(&st.id) {
            return Ok(Some(st));
        }
        if st.status == Status::Exited {
            // An attached monitor leaves its cgroup to rimg run; if that died too, finish the job.
            for cg in st.cgroups.iter().filter(|c| c.exists()) {
                super::cgroups::remove_dir_killing(cg);
            }
            return Ok(Some(st));
        }
        log::info!("container {} lost its monitor; cleaning up", st.short_id());
        if let Some(pid) = st.pid {
            if super::process::same_process(pid, st.pid_start_time) {
                // The container's init, verified by start time.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for cg in &st.cgroups {
            super::cgroups::remove_dir_killing(cg);
        }
        let st = self.update(&st.id, |s| {
            s.status = Status::Exited;
            if s.exit_code.is_none() {
                s.exit_code = Some(137);
            }
            if s.finished.is_none() {
                s.finished = Some(now_nanos());
            }
            if s.error.is_none() {
                s.error = Some("monitor process died".into());
            }
        })?;
        if st.spec.auto_remove {
            self.remove_auto(&st)?;
            return Ok(None);
        }
        Ok(Some(st))
    }

    /// Find a container by full id, unique id prefix, or name.
    pub fn resolve(&self, key: &str) -> Result<ContainerState, RuntimeError> {
        let all = self.list();
        if let Some(c) = all
            .iter()
            .find(|c| c.id == key || c.spec.name == key || c.spec.name == key.trim_start_matches('/'))
        {
            return Ok(c.clone());
        }
        let matches: Vec<_> = all.iter().filter(|c| c.id.starts_with(key)).collect();
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(RuntimeError::NoSuchContainer(key.to_string())),
            _ => Err(RuntimeError::Ambiguous(key.to_string())),
        }
    }

    /// The volumes of the store these containers belong to (`ROOT/volumes`, beside `ROOT/containers`).
    pub fn volumes(&self) -> crate::store::volumes::Volumes {
        crate::store::volumes::Volumes::new(self.dir.parent().unwrap_or(&self.dir))
    }

    /// The ids of the containers that mount the volume `name`.
    pub fn users_of_volume(&self, name: &str) -> Vec<String> {
        self.list_raw()
            .into_iter()
            .filter(|c| {
                c.spec
                    .mounts
                    .iter()
                    .any(|m| matches!(m, super::MountSpec::Volume { name: n, .. } if n == name))
            })
            .map(|c| c.id)
            .collect()
    }

    /// Remove the anonymous volumes in `mounts` (those of container `id`) that no other container
    /// mounts (`--rm`, `rm -v`, a failed `run`).
    pub fn remove_anonymous_volumes(&self, id: &str, mounts: &[super::MountSpec]) {
        let volumes = self.volumes();
        for m in mounts {
            if let super::MountSpec::Volume { name, anonymous: true, .. } = m {
                if self.users_of_volume(name).iter().all(|other| other == id) {
                    if let Err(e) = volumes.remove(name) {
                        log::warn!("remove volume {name}: {e}");
                    }
                }
            }
        }
    }

    /// Remove an `--rm` container that has ended: its files and its anonymous volumes (docker's `--rm`).
    pub fn remove_auto(&self, st: &ContainerState) -> Result<(), RuntimeError> {
        self.remove_files(&st.id)?;
        self.remove_anonymous_volumes(&st.id, &st.spec.mounts);
        Ok(())
    }

    /// Delete a container's directory (upper, log, state). The caller makes sure nothing runs.
    pub fn remove_files(&self, id: &str) -> Result<(), RuntimeError> {
        let cdir = self.dir_of(id);
        // The rootfs mount point is only ever mounted in private namespaces; a stale mount would mean a
        // leaked namespace, so detach defensively before deleting.
        let _ = nix::mount::umount2(&cdir.rootfs(), nix::mount::MntFlags::MNT_DETACH);
        match fs::remove_dir_all(cdir.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", cdir.path(), e)),
        }
    }
}

fn write_state(cdir: &ContainerDir, st: &ContainerState) -> Result<(), RuntimeError> {
    let p = cdir.state_file();
    let tmp = cdir.path().join(format!(".state.json.{}", std::process::id()));
    let data = serde_json::to_vec_pretty(st)
        .map_err(|e| RuntimeError::CorruptState { path: p.clone(), source: e })?;
    // Private (0600): the state holds the container's environment, `-e` secrets included.
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::store::perms::PRIVATE_FILE_MODE)
        .open(&tmp)
        .map_err(|e| io_err("create", &tmp, e))?;
    f.write_all(&data).map_err(|e| io_err("write", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, &p).map_err(|e| io_err("rename", &p, e))
}

/// docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A fresh 64-hex container id.
pub fn random_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// A docker-style `adjective_name` for containers started without `--name`.
pub fn random_name() -> String {
    const ADJ: &[&str] = &[
        "admiring", "bold", "brave", "clever", "eager", "focused", "gentle", "happy", "jolly", "keen",
        "loving", "nifty", "quirky", "serene", "sharp", "stoic", "tender", "vibrant", "wizardly", "zealous",
    ];
    const NOUN: &[&str] = &[
        "babbage", "curie", "dijkstra", "euler", "gauss", "hopper", "knuth", "lamport", "lovelace",
        "noether", "pike", "ritchie", "shannon", "thompson", "torvalds", "turing", "wirth", "wozniak",
        "hamilton", "liskov",
    ];
    let a = ADJ[rand::random::<usize>() % ADJ.len()];
    let n = NOUN[rand::random::<usize>() % NOUN.len()];
    format!("{a}_{n}_{}", rand::random::<u16>() % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_rules() {
        assert!(valid_name("web") && valid_name("a.b-c_1") && valid_name("9lives"));
        assert!(
            !valid_name("")
                && !valid_name("-x")
                && !valid_name("a/b")
                && !valid_name("../x")
                && !valid_name("a b")
        );
    }

    #[test]
    fn records_lock_and_reconcile() {
        let dir = tempfile::tempdir().unwrap();
        let c = Containers::open(dir.path()).unwrap();
        let spec = ContainerSpec { name: "one".into(), ..Default::default() };
        let (st, lock) = c.create(spec.clone()).unwrap();
        assert_eq!(st.spec.hostname.len(), 12);
        assert!(matches!(c.create(spec), Err(RuntimeError::NameInUse(_))));
        assert!(c.monitor_alive(&st.id), "the creator holds the monitor lock");
        assert_eq!(c.resolve("one").unwrap().id, st.id);
        assert_eq!(c.resolve(&st.id[..6]).unwrap().id, st.id);
        drop(lock);
        // The monitor is gone while the record says created: reconciliation marks it exited.
        let listed = c.list();
        assert_eq!(listed[0].status, Status::Exited);
        assert_eq!(listed[0].error.as_deref(), Some("monitor process died"));
        c.remove_files(&st.id).unwrap();
        assert!(matches!(c.resolve("one"), Err(RuntimeError::NoSuchContainer(_))));
    }
}
