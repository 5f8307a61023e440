//! cgroups for containers, v1, v2 and hybrid, detected at run time from /proc/self/mountinfo.
//!
//! Hybrid systems (v1 controllers plus a cgroup2 mount without controllers, like this machine's systemd
//! layout) are driven through v1: a controller lives in exactly one hierarchy and that is where its limit
//! files are. On pure v2, one directory holds everything and controllers are enabled down the chain via
//! `cgroup.subtree_control`. `RIMG_CGROUP_ROOT=/path/to/cgroup2/mount` forces v2 at that mount.
//!
//! Device access follows one allowlist ([`super::device_filter::DEFAULT_RULES`]): written to the v1 `devices`
//! controller, or compiled into an eBPF program attached to the v2 directory.
//!
//! Every container gets `<hierarchy>/<parent>/<id>` (parent defaults to `rimg`); the absolute directories are
//! persisted in the container state so any later `rimg` can remove them even if the monitor died.

use super::device_filter;
use super::spec::Resources;
use super::RuntimeError;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Every cgroup v1 controller the kernel may offer: the options of a `cgroup` mount that name a hierarchy's
/// controllers (the others, `rw`, `xattr`, `clone_children`…, are mount flags).
const V1_ALL_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "io",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];
/// v2 controllers rimg enables for containers when the hierarchy offers them.
const V2_CONTROLLERS: &[&str] = &["memory", "cpu", "pids", "io"];

/// Which cgroup layout the host uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One mount per controller set (also hybrid systems).
    V1 {
        /// `(controllers, mountpoint)` of every v1 hierarchy, named ones (`name=systemd`) included.
        hierarchies: Vec<(Vec<String>, PathBuf)>,
        /// The cgroup2 mount of a hybrid host (no controllers, but a hierarchy all the same).
        unified: Option<PathBuf>,
    },
    /// The unified hierarchy at this mount point.
    V2(PathBuf),
}

impl Layout {
    /// Detect the layout from the mount table (or `RIMG_CGROUP_ROOT`).
    pub fn detect() -> Result<Layout, RuntimeError> {
        if let Some(root) = std::env::var_os("RIMG_CGROUP_ROOT") {
            return Ok(Layout::V2(PathBuf::from(root)));
        }
        let info = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| RuntimeError::Cgroup { context: "read /proc/self/mountinfo".into(), source: e })?;
        Layout::from_mountinfo(&info)
    }

    /// The layout described by a mountinfo table: v1 when any v1 hierarchy is mounted (pure v1 or
    /// hybrid), else the first cgroup2 mount.
    pub fn from_mountinfo(info: &str) -> Result<Layout, RuntimeError> {
        let mut v1: Vec<(Vec<String>, PathBuf)> = Vec::new();
        let mut v2 = None;
        for line in info.lines() {
            // id parent maj:min root mountpoint opts [optional...] - fstype source superopts
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let lf: Vec<&str> = left.split(' ').collect();
            let rf: Vec<&str> = right.split(' ').collect();
            if lf.len() < 5 || rf.len() < 3 {
                continue;
            }
            let mountpoint = PathBuf::from(unescape_mountinfo(lf[4]));
            match rf[0] {
                "cgroup2" if v2.is_none() => v2 = Some(mountpoint),
                "cgroup" => {
                    let ctrls: Vec<String> = rf[2]
                        .split(',')
                        .filter(|o| V1_ALL_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    if !ctrls.is_empty() && !v1.iter().any(|(c, _)| c == &ctrls) {
                        v1.push((ctrls, mountpoint));
                    }
                }
                _ => {}
            }
        }
        if !v1.is_empty() {
            return Ok(Layout::V1 { hierarchies: v1, unified: v2 });
        }
        v2.map(Layout::V2)
            .ok_or_else(|| RuntimeError::CgroupUnsupported("no cgroup filesystem mounted".into()))
    }
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// One container's cgroup: a directory per v1 hierarchy, or one v2 directory.
#[derive(Debug, Clone)]
pub struct Cgroup {
    v2: bool,
    /// (controllers in that hierarchy, absolute directory)
    dirs: Vec<(Vec<String>, PathBuf)>,
    /// Device access is filtered: v1 with a devices hierarchy, v2 once the eBPF filter is attached. Kept in
    /// memory because the container's init asks after `pivot_root`, when the directories are out of reach.
    filters_devices: Flag,
}

/// A bool that `apply(&self)` can set and that clones (into the monitor and the init) carry along.
#[derive(Debug, Default)]
struct Flag(AtomicBool);

impl Flag {
    fn new(v: bool) -> Flag {
        Flag(AtomicBool::new(v))
    }
}

impl Clone for Flag {
    fn clone(&self) -> Flag {
        Flag(AtomicBool::new(self.0.load(Ordering::Relaxed)))
    }
}

/// Create `mnt/rel` in a v1 cpuset hierarchy: each new level starts with no CPUs and no memory nodes,
/// which no task may join, so each gets its parent's (as `cgroup.clone_children` would, without changing
/// a flag of the host's own cgroups).
fn create_cpuset_dirs(mnt: &Path, rel: &Path) -> Result<(), RuntimeError> {
    let mut cur = mnt.to_path_buf();
    for comp in rel.components() {
        let parent = cur.clone();
        cur.push(comp);
        if let Err(e) = fs::create_dir(&cur) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(cg_err("create", &cur, e));
            }
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = fs::read_to_string(cur.join(file)).unwrap_or_default();
            if mine.trim().is_empty() {
                let theirs = fs::read_to_string(parent.join(file)).map_err(|e| cg_err("read", &parent, e))?;
                write_file(&cur.join(file), theirs.trim())?;
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, value: &str) -> Result<(), RuntimeError> {
    fs::write(path, value).map_err(|e| RuntimeError::Cgroup {
        context: format!("write {value:?} to {}", path.display()),
        source: e,
    })
}

fn cg_err(what: &str, path: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Cgroup { context: format!("{what} {}", path.display()), source: e }
}

impl Cgroup {
    /// Create the container's cgroup directories under `parent` (relative, e.g. `rimg`).
    pub fn create(layout: &Layout, parent: &str, id: &str) -> Result<Cgroup, RuntimeError> {
        let rel = Path::new(parent.trim_matches('/')).join(id);
        match layout {
            Layout::V1 { hierarchies, unified } => {
                // Every hierarchy, not only those rimg writes limits to: a hierarchy the init stayed at the
                // root of would be the host's own inside its cgroup namespace (with CAP_SYS_ADMIN, a
                // mount of it reaches the host's release_agent: CVE-2022-0492's shape).
                let mut dirs = Vec::new();
                for (ctrls, mnt) in hierarchies {
                    let dir = mnt.join(&rel);
                    if ctrls.iter().any(|c| c == "cpuset") {
                        create_cpuset_dirs(mnt, &rel)?;
                    } else {
                        fs::create_dir_all(&dir).map_err(|e| cg_err("create", &dir, e))?;
                    }
                    dirs.push((ctrls.clone(), dir));
                }
                if let Some(mnt) = unified {
                    // No controllers there: an empty set, which no limit or mount inside looks at.
                    let dir = mnt.join(&rel);
                    fs::create_dir_all(&dir).map_err(|e| cg_err("create", &dir, e))?;
                    dirs.push((Vec::new(), dir));
                }
                let devices = dirs.iter().any(|(c, _)| c.iter().any(|c| c == "devices"));
                Ok(Cgroup { v2: false, dirs, filters_devices: Flag::new(devices) })
            }
            Layout::V2(root) => {
                // Enable what we can at each level above the leaf; the leaf itself holds processes, so it
                // must not have subtree controllers ("no internal processes").
                let mut cur = root.clone();
                let mut enabled: Vec<String> = Vec::new();
                let comps: Vec<_> = rel.components().collect();
                for (i, comp) in comps.iter().enumerate() {
                    let avail = fs::read_to_string(cur.join("cgroup.controllers")).unwrap_or_default();
                    let want: Vec<&str> =
                        avail.split_whitespace().filter(|c| V2_CONTROLLERS.contains(c)).collect();
                    if !want.is_empty() {
                        let line = want.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ");
                        if let Err(e) = fs::write(cur.join("cgroup.subtree_control"), &line) {
                            log::warn!("enable {line} in {}: {e}", cur.display());
                        }
                    }
                    cur = cur.join(comp);
                    if i + 1 < comps.len() || !cur.exists() {
                        fs::create_dir_all(&cur).map_err(|e| cg_err("create", &cur, e))?;
                    }
                    enabled = want.iter().map(|s| s.to_string()).collect();
                }
                Ok(Cgroup { v2: true, dirs: vec![(enabled, cur)], filters_devices: Flag::default() })
            }
        }
    }

    /// Re-open a cgroup from the directories persisted in state (asking the kernel whether a v2 directory
    /// carries a device filter).
    pub fn from_dirs(dirs: &[PathBuf]) -> Cgroup {
        let v2 = dirs.len() == 1 && dirs[0].join("cgroup.controllers").exists();
        let filtered = if v2 {
            device_filter::attached(&dirs[0]).is_ok_and(|n| n > 0)
        } else {
            dirs.iter().any(|d| d.join("devices.list").exists())
        };
        Cgroup {
            v2,
            dirs: dirs.iter().map(|d| (Vec::new(), d.clone())).collect(),
            filters_devices: Flag::new(filtered),
        }
    }

    /// The absolute directories, for persisting.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }

    /// The controller sets of each v1 hierarchy (`name=…` for a named one), for mounting them inside the
    /// container; the unified hierarchy of a hybrid host is not among them.
    pub fn hierarchies(&self) -> Vec<Vec<String>> {
        self.dirs.iter().map(|(c, _)| c.clone()).filter(|c| !c.is_empty()).collect()
    }

    /// Whether this is a cgroup2 (unified) cgroup.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// Does this cgroup restrict device access to the allowlist? True on v1 when a `devices` hierarchy is
    /// mounted, and on v2 once an eBPF device filter is attached to the directory (by [`Cgroup::apply`] in
    /// this process, or found attached by a later `rimg` through [`Cgroup::from_dirs`]). The caller gives
    /// CAP_MKNOD only when this holds: a node made without a filter would open the host's device.
    pub fn filters_devices(&self) -> bool {
        self.filters_devices.0.load(Ordering::Relaxed)
    }

    /// The directory holding `file` (the hierarchy whose controller owns it), if any.
    pub fn file(&self, file: &str) -> Option<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.join(file)).find(|p| p.exists())
    }

    fn must_write(&self, file: &str, value: &str, flag: &str) -> Result<(), RuntimeError> {
        match self.file(file) {
            Some(p) => write_file(&p, value),
            None => Err(RuntimeError::CgroupUnsupported(format!(
                "{flag}: this kernel has no {file} (controller not available)"
            ))),
        }
    }

    /// Apply the limits. A limit the host cannot enforce is an error (docker refuses too), except the
    /// block I/O weight, which depends on the I/O scheduler and only warns.
    pub fn apply(&self, r: &Resources, privileged: bool) -> Result<(), RuntimeError> {
        if let Some(m) = r.memory {
            if self.v2 {
                self.must_write("memory.max", &m.to_string(), "--memory")?;
                if let Some(p) = self.file("memory.swap.max") {
                    write_file(&p, "0")?;
                }
            } else {
                self.must_write("memory.limit_in_bytes", &m.to_string(), "--memory")?;
                if let Some(p) = self.file("memory.memsw.limit_in_bytes") {
                    write_file(&p, &m.to_string())?;
                }
            }
        }
        if let Some(mc) = r.cpu_millis {
            let period = 100_000u64;
            let quota = (mc * period / 1000).max(1000);
            if self.v2 {
                self.must_write("cpu.max", &format!("{quota} {period}"), "--cpus")?;
            } else {
                self.must_write("cpu.cfs_period_us", &period.to_string(), "--cpus")?;
                self.must_write("cpu.cfs_quota_us", &quota.to_string(), "--cpus")?;
            }
        }
        if let Some(s) = r.cpu_shares {
            if self.v2 {
                let w = 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142;
                self.must_write("cpu.weight", &w.to_string(), "--cpu-shares")?;
            } else {
                self.must_write("cpu.shares", &s.to_string(), "--cpu-shares")?;
            }
        }
        match r.pids_limit {
            Some(p) => {
                let v = if p > 0 { p.to_string() } else { "max".to_string() };
                self.must_write("pids.max", &v, "--pids-limit")?;
            }
            // The default limit where the host has a pids controller (a missing one is not the user's
            // doing, so no error).
            None => {
                if let Some(f) = self.file("pids.max") {
                    write_file(&f, &super::spec::DEFAULT_PIDS_LIMIT.to_string())?;
                }
            }
        }
        if let Some(w) = r.blkio_weight {
            let (files, value): (&[&str], String) = if self.v2 {
                (
                    &["io.weight", "io.bfq.weight"],
                    format!("default {}", 1 + (u64::from(w).clamp(10, 1000) - 10) * 9999 / 990),
                )
            } else {
                (&["blkio.weight", "blkio.bfq.weight"], w.to_string())
            };
            match files.iter().find_map(|f| self.file(f)) {
                Some(p) => {
                    if let Err(e) = write_file(&p, &value) {
                        log::warn!("--blkio-weight: {e}");
                    }
                }
                None => crate::errln!("WARNING: Your kernel does not support Block I/O weight or the cgroup is not mounted. Weight discarded."),
            }
        }
        for (rates, v1file, v2key) in [
            (&r.device_read_bps, "blkio.throttle.read_bps_device", "rbps"),
            (&r.device_write_bps, "blkio.throttle.write_bps_device", "wbps"),
        ] {
            for d in rates {
                if self.v2 {
                    self.must_write(
                        "io.max",
                        &format!("{}:{} {v2key}={}", d.major, d.minor, d.rate),
                        "--device-*-bps",
                    )?;
                } else {
                    self.must_write(
                        v1file,
                        &format!("{}:{} {}", d.major, d.minor, d.rate),
                        "--device-*-bps",
                    )?;
                }
            }
        }
        if !privileged {
            self.restrict_devices()?;
        }
        Ok(())
    }

    /// Limit device access to [`device_filter::DEFAULT_RULES`]: v1 through `devices.deny`/`devices.allow`,
    /// v2 through an eBPF program. Where the kernel will not load or attach one (no cgroup BPF, or rimg
    /// itself confined without CAP_BPF/CAP_SYS_ADMIN) the container still runs, with a warning, and
    /// [`Cgroup::filters_devices`] stays false so CAP_MKNOD is withheld instead.
    fn restrict_devices(&self) -> Result<(), RuntimeError> {
        if !self.v2 {
            if let Some(deny) = self.file("devices.deny") {
                write_file(&deny, "a")?;
                let allow = deny.with_file_name("devices.allow");
                for rule in device_filter::DEFAULT_RULES {
                    write_file(&allow, &rule.to_string())?;
                }
            }
            return Ok(());
        }
        let Some((_, dir)) = self.dirs.first() else { return Ok(()) };
        match device_filter::attach(dir, device_filter::DEFAULT_RULES) {
            Ok(()) => self.filters_devices.0.store(true, Ordering::Relaxed),
            Err(e) => log::warn!("{e}; the container runs without a device filter and without CAP_MKNOD"),
        }
        Ok(())
    }

    /// Move a process (all its threads) into every hierarchy of this cgroup.
    pub fn add_process(&self, pid: i32) -> Result<(), RuntimeError> {
        for (_, d) in &self.dirs {
            write_file(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Move a process into the resource hierarchies only (memory, cpu, blkio/io; on v1 not devices,
    /// freezer or pids): used for the monitor, whose FUSE server must keep opening /dev/fuse, must not be
    /// frozen with the container, and whose threads should not eat into `--pids-limit`. On v2 there is one
    /// directory, so the process also comes under the eBPF device filter: every device it opens from then
    /// on must be on the allowlist (/dev/null is, /dev/fuse is not — its descriptors must already be
    /// open). `outside_memory`: on v1, stay out of the memory hierarchy too (see the monitor's
    /// `oom_score_adj` in runtime/launch.rs); v2 has one directory for all controllers and ignores it.
    pub fn add_process_for_resources(&self, pid: i32, outside_memory: bool) -> Result<(), RuntimeError> {
        for (ctrls, d) in &self.dirs {
            let skip = |c: &String| {
                c == "devices" || c == "freezer" || c == "pids" || (outside_memory && c == "memory")
            };
            if !self.v2 && ctrls.iter().all(skip) {
                continue;
            }
            write_file(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Did the OOM killer kill something in this cgroup?
    pub fn oom_killed(&self) -> bool {
        let (file, key) =
            if self.v2 { ("memory.events", "oom_kill") } else { ("memory.oom_control", "oom_kill") };
        let Some(p) = self.file(file) else { return false };
        fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .any(|(k, v)| k == key && v.trim().parse::<u64>().map(|n| n > 0).unwrap_or(false))
    }

    /// Kill whatever is left and remove the directories.
    pub fn remove(&self) {
        for (_, d) in &self.dirs {
            remove_dir_killing(d);
        }
    }

    /// Can the container be frozen (cgroup v2, or v1 with a freezer hierarchy)?
    pub fn can_freeze(&self) -> bool {
        self.file(if self.v2 { "cgroup.freeze" } else { "freezer.state" }).is_some()
    }

    /// Freeze every process of the container (docker's pause): v2 `cgroup.freeze` = 1, v1
    /// `freezer.state` = FROZEN. The kernel stops them asynchronously: [`Cgroup::wait_frozen`] waits for
    /// it. On v1 the monitor is outside the freezer hierarchy ([`Cgroup::add_process_for_resources`]);
    /// on v2 it is inside and the caller must move it out first, or a container process waiting for
    /// its FUSE server would never stop.
    pub fn freeze(&self) -> Result<(), RuntimeError> {
        if self.v2 {
            self.must_write("cgroup.freeze", "1", "pause")
        } else {
            self.must_write("freezer.state", "FROZEN", "pause")
        }
    }

    /// Let the container's processes run again.
    pub fn thaw(&self) -> Result<(), RuntimeError> {
        if self.v2 {
            self.must_write("cgroup.freeze", "0", "unpause")
        } else {
            self.must_write("freezer.state", "THAWED", "unpause")
        }
    }

    /// Has the kernel stopped every process of the container (v2 `cgroup.events` says `frozen 1`; v1
    /// `freezer.state` says FROZEN rather than FREEZING)?
    pub fn is_frozen(&self) -> Result<bool, RuntimeError> {
        let (file, done): (&str, fn(&str) -> bool) = if self.v2 {
            ("cgroup.events", |t| t.lines().any(|l| l.trim() == "frozen 1"))
        } else {
            ("freezer.state", |t| t.trim() == "FROZEN")
        };
        let path = self
            .file(file)
            .ok_or_else(|| RuntimeError::CgroupUnsupported(format!("pause: this kernel has no {file}")))?;
        fs::read_to_string(&path).map(|t| done(&t)).map_err(|e| cg_err("read", &path, e))
    }

    /// Wait until [`Cgroup::is_frozen`], for at most `limit` (runc gives a freeze 10 s too): a process
    /// in an uninterruptible wait stops only once it returns to user space.
    pub fn wait_frozen(&self, limit: Duration) -> Result<(), RuntimeError> {
        let deadline = std::time::Instant::now() + limit;
        let mut pause = Duration::from_millis(1);
        while !self.is_frozen()? {
            if std::time::Instant::now() >= deadline {
                return Err(RuntimeError::CgroupUnsupported(format!(
                    "pause: the container's processes did not stop within {} s",
                    limit.as_secs()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// Remove a cgroup directory, SIGKILLing any process still in it first; retries briefly while the kernel
/// finishes tearing the processes down. Missing directories are fine.
pub fn remove_dir_killing(dir: &Path) {
    // Killed tasks leave the cgroup only once the kernel has torn them down, which on a loaded machine
    // (or with a task blocked on a dying FUSE mount) takes longer than a few milliseconds: keep trying,
    // backing off, for up to 10 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(5);
    loop {
        if !dir.exists() {
            return;
        }
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // A process listed in the container's own cgroup.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if std::time::Instant::now() >= deadline => {
                log::warn!("remove cgroup {}: {e}", dir.display());
                return;
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
31 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
32 25 0:30 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
";

    #[test]
    fn hybrid_uses_v1_controllers() {
        let Layout::V1 { hierarchies: m, unified } = Layout::from_mountinfo(HYBRID).unwrap() else {
            panic!("expected v1")
        };
        assert_eq!(m.len(), 4, "every hierarchy, the named one too: {m:?}");
        assert!(m
            .iter()
            .any(|(c, p)| c == &["cpu", "cpuacct"] && p == Path::new("/sys/fs/cgroup/cpu,cpuacct")));
        assert!(m.iter().any(|(c, _)| c == &["name=systemd"]));
        assert_eq!(unified.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn filters_devices_is_known_without_the_directories() {
        // The init asks after pivot_root, when no cgroup directory is reachable any more.
        let tmp = tempfile::tempdir().unwrap();
        let mount = |c: &str| (vec![c.to_string()], tmp.path().join(c));
        let v1 = |h| Layout::V1 { hierarchies: h, unified: None };
        let with = Cgroup::create(&v1(vec![mount("memory"), mount("devices")]), "rimg", "a").unwrap();
        let without = Cgroup::create(&v1(vec![mount("memory")]), "rimg", "b").unwrap();
        let v2 = Cgroup::create(&Layout::V2(tmp.path().join("unified")), "rimg", "c").unwrap();
        std::fs::remove_dir_all(tmp.path()).unwrap();
        assert!(with.filters_devices());
        assert!(!without.filters_devices());
        assert!(!v2.filters_devices(), "no eBPF filter attached yet");
        assert!(!Cgroup::from_dirs(&[tmp.path().join("gone")]).filters_devices());
    }

    #[test]
    fn pure_v2() {
        let info = "26 25 0:24 / /sys/fs/cgroup rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(Layout::from_mountinfo(info).unwrap(), Layout::V2(PathBuf::from("/sys/fs/cgroup")));
        assert!(Layout::from_mountinfo("").is_err());
    }
}
