//! The container's filesystem view, built inside its private mount namespace: the overlay rootfs, /proc,
//! /sys, a minimal /dev, the /etc files, user mounts, docker's masked and read-only paths, then `pivot_root`.
//!
//! Every path inside the rootfs is resolved with `openat2(RESOLVE_IN_ROOT)` and mounted through
//! `/proc/self/fd/N`, so a symlink planted in an image (`/data -> /etc`) cannot redirect a mount to the host.

use super::spec::{ContainerSpec, MountSpec, NetworkMode};
use super::RuntimeError;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

fn setup_err(what: impl std::fmt::Display, e: impl Into<std::io::Error>) -> RuntimeError {
    RuntimeError::os(what.to_string(), e)
}

/// Make every mount in the calling process's (new) mount namespace private, so nothing propagates back.
pub fn make_private() -> Result<(), RuntimeError> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| setup_err("make / private", e))
}

/// Bind `path` onto itself (recursively), so that a mount inherited from a more privileged mount namespace
/// gets a copy owned by this one (for `pivot_root` in a user namespace).
pub fn rebind_own(path: &Path) -> Result<(), RuntimeError> {
    mount(Some(path), path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| setup_err(format!("bind {} onto itself", path.display()), e))
}

/// Kernel overlayfs's limit on the lower layers of one mount (`OVL_MAX_STACK`).
pub const OVERLAY_MAX_LOWERS: usize = 500;

/// The most mount(2) takes as its data argument: one page, including the terminating NUL.
const MOUNT_DATA_MAX: usize = 4095;

/// Why a kernel overlayfs mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// More lower layers than the kernel stacks in one overlay.
    #[error("too many layers for kernel overlayfs ({0} > {OVERLAY_MAX_LOWERS}); use the fuse driver")]
    TooManyLayers(usize),
    /// The kernel predates `lowerdir+` and the layers do not fit in one mount(2) option string.
    #[error(
        "the layers' overlay options are {0} bytes, more than mount(2) takes (one page), and this kernel \
         lacks overlayfs' per-layer `lowerdir+` (Linux 6.8+)"
    )]
    OptionsTooLong(usize),
    /// The kernel refused a step of the mount.
    #[error("mount overlay at {}: {what}: {source}", target.display())]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The step that failed (`fsconfig lowerdir+ /path`, `mount(2)`, ...).
        what: String,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
}

/// One kernel overlayfs mount: its layers and options.
#[derive(Debug, Clone, Copy)]
pub struct Overlay<'a> {
    /// Lower layers, top first.
    pub lowers: &'a [PathBuf],
    /// `(upperdir, workdir)`; without them the overlay is read-only.
    pub upper: Option<(&'a Path, &'a Path)>,
    /// Further options (`metacopy=on`, ...).
    pub options: &'a [(&'a str, &'a str)],
}

/// Mount kernel overlayfs at `target` as the container's rootfs. Layers are added one by one (`lowerdir+`,
/// Linux 6.8+), so deep images are not limited by the one-page mount data; older kernels fall back to a
/// single `lowerdir=` string.
pub fn mount_kernel_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), RuntimeError> {
    let ovl = Overlay { lowers, upper: Some((upper, work)), options: &[] };
    mount_overlay(&ovl, target).map_err(RuntimeError::from)
}

/// Mount `ovl` at `target`: through the new mount API with one `lowerdir+` per layer, or, where the kernel
/// has no `lowerdir+`, through mount(2) with every layer in one option string. The fallback is taken only
/// when the new API is missing, never after the kernel refused the layers themselves (a fallback would
/// then only hide the real error behind another one).
pub fn mount_overlay(ovl: &Overlay<'_>, target: &Path) -> Result<(), OverlayError> {
    let lowers = distinct_lowers(ovl.lowers);
    let ovl = &Overlay { lowers: &lowers, ..*ovl };
    if ovl.lowers.len() > OVERLAY_MAX_LOWERS {
        return Err(OverlayError::TooManyLayers(ovl.lowers.len()));
    }
    match overlay_fsconfig(ovl, target) {
        Ok(()) => Ok(()),
        Err(Fsconfig::Unsupported(e)) => {
            log::debug!("overlay through fsopen/lowerdir+ unavailable ({e}); using mount(2)");
            overlay_mount_data(ovl, target)
        }
        Err(Fsconfig::Failed(what, source)) => {
            Err(OverlayError::Mount { target: target.to_path_buf(), what, source })
        }
    }
}

/// `lowers` (top first) with each directory only at its topmost place. An image may carry the same layer
/// twice (two identical empty layers are common), and overlayfs refuses a directory that is already a
/// layer (ELOOP); the lower copy changes nothing, as everything in it, whiteouts and opaque markers
/// included, is in the upper copy too, which takes precedence.
pub fn distinct_lowers(lowers: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    lowers.iter().filter(|l| seen.insert(l.as_path())).cloned().collect()
}

/// How [`overlay_fsconfig`] failed.
enum Fsconfig {
    /// No new mount API or no `lowerdir+` (Linux < 6.8): mount(2) may still do.
    Unsupported(std::io::Error),
    /// The kernel refused this step.
    Failed(String, std::io::Error),
}

fn overlay_fsconfig(ovl: &Overlay<'_>, target: &Path) -> Result<(), Fsconfig> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags, FsOpenFlags,
        MountAttrFlags, MoveMountFlags,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| Fsconfig::Unsupported(e.into()))?;
    for (i, l) in ovl.lowers.iter().enumerate() {
        match fsconfig_set_string(&fs, "lowerdir+", l.as_path()) {
            Ok(()) => {}
            // An unknown key is EINVAL: on the first layer that means a kernel without `lowerdir+`.
            Err(e) if i == 0 && e == rustix::io::Errno::INVAL => return Err(Fsconfig::Unsupported(e.into())),
            Err(e) => return Err(Fsconfig::Failed(format!("lowerdir+ {}", l.display()), e.into())),
        }
    }
    let set = |key: &str, val: &std::ffi::OsStr| {
        fsconfig_set_string(&fs, key, val)
            .map_err(|e| Fsconfig::Failed(format!("{key}={}", val.to_string_lossy()), e.into()))
    };
    if let Some((upper, work)) = ovl.upper {
        set("upperdir", upper.as_os_str())?;
        set("workdir", work.as_os_str())?;
    }
    for (k, v) in ovl.options {
        set(k, std::ffi::OsStr::new(v))?;
    }
    fsconfig_create(&fs).map_err(|e| Fsconfig::Failed("create".into(), e.into()))?;
    let attrs = if ovl.upper.is_some() { MountAttrFlags::empty() } else { MountAttrFlags::MOUNT_ATTR_RDONLY };
    let m = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| Fsconfig::Failed("fsmount".into(), e.into()))?;
    move_mount(&m, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| Fsconfig::Failed("move_mount".into(), e.into()))
}

/// mount(2) with every layer in one `lowerdir=` string (kernels without `lowerdir+`).
fn overlay_mount_data(ovl: &Overlay<'_>, target: &Path) -> Result<(), OverlayError> {
    let lower =
        ovl.lowers.iter().map(|p| p.to_string_lossy().replace(':', "\\:")).collect::<Vec<_>>().join(":");
    let mut data = format!("lowerdir={lower}");
    if let Some((upper, work)) = ovl.upper {
        data.push_str(&format!(",upperdir={},workdir={}", upper.display(), work.display()));
    }
    for (k, v) in ovl.options {
        data.push_str(&format!(",{k}={v}"));
    }
    if data.len() > MOUNT_DATA_MAX {
        return Err(OverlayError::OptionsTooLong(data.len()));
    }
    let flags = if ovl.upper.is_some() { MsFlags::empty() } else { MsFlags::MS_RDONLY };
    mount(Some("overlay"), target, Some("overlay"), flags, Some(data.as_str())).map_err(|e| {
        OverlayError::Mount { target: target.to_path_buf(), what: "mount(2)".into(), source: e.into() }
    })
}

/// A directory handle on the rootfs through which container paths are resolved safely.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// What to create when a mount target is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

impl Root {
    /// Open the rootfs at `path`.
    pub fn open(path: &Path) -> Result<Root, RuntimeError> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| setup_err(format!("open rootfs {}", path.display()), e))?;
        Ok(Root { fd, path: path.to_path_buf() })
    }

    /// The rootfs path on the host side of the mount namespace.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn openat2(&self, rel: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
        let rel = rel.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        Ok(rustix::fs::openat2(&self.fd, rel, flags | OFlags::CLOEXEC, Mode::empty(), resolve)?)
    }

    /// Does `rel` exist inside the root (following symlinks within it)?
    fn lookup(&self, rel: &str) -> Option<(OwnedFd, bool)> {
        let fd = self.openat2(rel, OFlags::PATH).ok()?;
        let is_dir = rustix::fs::fstat(&fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        Some((fd, is_dir))
    }

    /// Resolve `rel` inside the root, creating it (and parents) as `kind` when missing; returns an O_PATH fd.
    fn ensure(&self, rel: &str, kind: Kind) -> Result<OwnedFd, RuntimeError> {
        if let Ok(fd) = self.openat2(rel, OFlags::PATH) {
            return Ok(fd);
        }
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        let mut prefix = String::new();
        for (i, comp) in comps.iter().enumerate() {
            if *comp == ".." {
                return Err(RuntimeError::Invalid(format!("mount target {rel} contains ..")));
            }
            let parent = self
                .openat2(&prefix, OFlags::PATH | OFlags::DIRECTORY)
                .map_err(|e| setup_err(format!("resolve /{prefix}"), e))?;
            let next = if prefix.is_empty() { comp.to_string() } else { format!("{prefix}/{comp}") };
            if self.openat2(&next, OFlags::PATH).is_err() {
                // Single-component names relative to a directory descriptor: nothing to follow.
                let made = if i + 1 == comps.len() && kind == Kind::File {
                    let flags = OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    rustix::fs::openat(&parent, *comp, flags, Mode::from_raw_mode(0o644)).map(drop)
                } else {
                    rustix::fs::mkdirat(&parent, *comp, Mode::from_raw_mode(0o755))
                };
                match made {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(setup_err(format!("create mount point /{next}"), e)),
                }
            }
            prefix = next;
        }
        self.openat2(rel, OFlags::PATH).map_err(|e| setup_err(format!("resolve /{rel}"), e))
    }
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn mount_at(
    root: &Root,
    target: &str,
    kind: Kind,
    src: Option<&str>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), RuntimeError> {
    let fd = root.ensure(target, kind)?;
    mount(src, fd_path(&fd).as_str(), fstype, flags, data)
        .map_err(|e| setup_err(format!("mount {} on {target}", src.unwrap_or("?")), e))
}

fn remount_ro(root: &Root, target: &str) -> Result<(), RuntimeError> {
    let fd = root.openat2(target, OFlags::PATH).map_err(|e| setup_err(format!("resolve {target}"), e))?;
    let p = fd_path(&fd);
    // Keep the flags the mount already has (nosuid etc.): remounting must not loosen them.
    let st = nix::sys::statvfs::statvfs(p.as_str()).map_err(|e| setup_err(format!("statvfs {target}"), e))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    use nix::sys::statvfs::FsFlags;
    for (f, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        // In a user namespace the atime flags of an inherited mount are locked too.
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.flags().contains(f) {
            flags |= m;
        }
    }
    mount(None::<&str>, p.as_str(), None::<&str>, flags, None::<&str>)
        .map_err(|e| setup_err(format!("remount {target} read-only"), e))
}

impl Root {
    /// An O_PATH descriptor for `rel` inside the root (symlinks resolved within it).
    pub fn open_path(&self, rel: &str) -> Result<OwnedFd, RuntimeError> {
        self.openat2(rel, OFlags::PATH)
            .map_err(|e| setup_err(format!("resolve /{}", rel.trim_start_matches('/')), e))
    }
}

/// Make pty `n` of the container's devpts its /dev/console, as runc does.
pub fn bind_console(root: &Root, n: u32) -> Result<(), RuntimeError> {
    let src = root.open_path(&format!("dev/pts/{n}"))?;
    let fd = root.ensure("dev/console", Kind::File)?;
    mount(Some(fd_path(&src).as_str()), fd_path(&fd).as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| setup_err("bind /dev/console", e))
}

/// Paths docker hides from unprivileged containers.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Paths docker makes read-only in unprivileged containers.
const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Device nodes every container gets: (name, major, minor).
const DEVICES: &[(&str, u64, u64)] =
    &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

/// Populate the mounted rootfs (called by the container's init process, inside its own mount namespace,
/// before `pivot_root`). `etc_dir` holds the hostname/hosts/resolv.conf files to bind in.
pub fn setup(
    root: &Root,
    spec: &ContainerSpec,
    etc_dir: &Path,
    volumes: &super::volumes::VolumeSources,
) -> Result<(), RuntimeError> {
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_at(root, "proc", Kind::Dir, Some("proc"), Some("proc"), nse, None)?;
    mount_sys(root, spec)?;
    populate_dev(root)?;
    for name in ["hostname", "hosts", "resolv.conf"] {
        let src = etc_dir.join(name);
        let target = format!("etc/{name}");
        mount_at(root, &target, Kind::File, Some(&src.to_string_lossy()), None, MsFlags::MS_BIND, None)?;
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        user_mount(root, m, volumes.path(i))?;
    }
    if !spec.privileged {
        mask_and_protect(root)?;
    }
    Ok(())
}

/// /sys, read-only unless privileged.
fn mount_sys(root: &Root, spec: &ContainerSpec) -> Result<(), RuntimeError> {
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let sys_flags = if spec.privileged { nse } else { nse | MsFlags::MS_RDONLY };
    match mount_at(root, "sys", Kind::Dir, Some("sysfs"), Some("sysfs"), sys_flags, None) {
        Ok(()) => Ok(()),
        Err(_) if spec.userns.is_some() && spec.network == NetworkMode::Host => {
            // sysfs may be mounted only by the owner of the network namespace; with the host's network a
            // user namespace gets the host's /sys bound instead (as runc does).
            mount_at(root, "sys", Kind::Dir, Some("/sys"), None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
            if spec.privileged {
                Ok(())
            } else {
                remount_ro(root, "sys")
            }
        }
        Err(e) => Err(e),
    }
}

/// A fresh /dev: a tmpfs with the standard nodes and links, a private devpts, /dev/shm and /dev/mqueue.
fn populate_dev(root: &Root) -> Result<(), RuntimeError> {
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let (flags, data) = (MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME, Some("mode=755,size=65536k"));
    mount_at(root, "dev", Kind::Dir, Some("tmpfs"), Some("tmpfs"), flags, data)?;
    let dev = root.openat2("dev", OFlags::PATH | OFlags::DIRECTORY).map_err(|e| setup_err("open /dev", e))?;
    let dev_path = fd_path(&dev);
    for (name, major, minor) in DEVICES {
        make_device(&format!("{dev_path}/{name}"), name, *major, *minor)?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(to, format!("{dev_path}/{link}"))
            .map_err(|e| setup_err(format!("symlink /dev/{link}"), e))?;
    }
    let pts_data = Some("newinstance,ptmxmode=0666,mode=0620,gid=5");
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount_at(root, "dev/pts", Kind::Dir, Some("devpts"), Some("devpts"), pts_flags, pts_data)?;
    mount_at(root, "dev/shm", Kind::Dir, Some("shm"), Some("tmpfs"), nse, Some("mode=1777,size=65536k"))?;
    mount_at(root, "dev/mqueue", Kind::Dir, Some("mqueue"), Some("mqueue"), nse, None)
}

/// The device node `path` (in the container's fresh /dev tmpfs, through its descriptor's magic link), or
/// without CAP_MKNOD (user namespaces) a bind of the host's node.
fn make_device(path: &str, name: &str, major: u64, minor: u64) -> Result<(), RuntimeError> {
    let dev = rustix::fs::makedev(major as u32, minor as u32);
    let node = rustix::fs::FileType::CharacterDevice;
    if rustix::fs::mknodat(rustix::fs::CWD, path, node, Mode::from_raw_mode(0o666), dev).is_ok() {
        // mknod's mode went through the umask.
        let _ = rustix::fs::chmod(path, Mode::from_raw_mode(0o666));
        return Ok(());
    }
    let _ =
        rustix::fs::open(path, OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC, Mode::from_raw_mode(0o666));
    mount(Some(format!("/dev/{name}").as_str()), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| setup_err(format!("bind /dev/{name}"), e))
}

/// One `-v`, `--mount` or `--tmpfs`. A volume's data directory comes as `volume`, the init's descriptor
/// of it (see `super::volumes`).
fn user_mount(root: &Root, m: &MountSpec, volume: Option<String>) -> Result<(), RuntimeError> {
    match m {
        MountSpec::Volume { name, target, readonly, copy, .. } => {
            let src = volume.ok_or_else(|| RuntimeError::Invalid(format!("volume {name} was not opened")))?;
            if *copy {
                super::volumes::copy_up(root, target, &src)?;
            }
            let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount_at(root, target, Kind::Dir, Some(&src), None, flags, None)?;
            if *readonly {
                remount_ro(root, target)?;
            }
            Ok(())
        }
        MountSpec::Bind { source, target, readonly } => {
            let md = std::fs::metadata(source)
                .map_err(|e| setup_err(format!("bind source {}", source.display()), e))?;
            let kind = if md.is_dir() { Kind::Dir } else { Kind::File };
            let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount_at(root, target, kind, Some(&source.to_string_lossy()), None, flags, None)?;
            if *readonly {
                remount_ro(root, target)?;
            }
            Ok(())
        }
        MountSpec::Tmpfs { target, options } => {
            let opts = if options.is_empty() { "mode=1777".to_string() } else { options.clone() };
            let (flags, data) = tmpfs_options(&opts);
            mount_at(root, target, Kind::Dir, Some("tmpfs"), Some("tmpfs"), flags, Some(&data))
        }
    }
}

/// docker's masked paths (an empty read-only tmpfs or /dev/null over them) and read-only paths.
fn mask_and_protect(root: &Root) -> Result<(), RuntimeError> {
    for p in MASKED {
        let rel = p.trim_start_matches('/');
        let Some((fd, is_dir)) = root.lookup(rel) else { continue };
        let target = fd_path(&fd);
        let r = if is_dir {
            mount(Some("tmpfs"), target.as_str(), Some("tmpfs"), MsFlags::MS_RDONLY, Some("size=0"))
        } else {
            mount(Some("/dev/null"), target.as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
        };
        r.map_err(|e| setup_err(format!("mask {p}"), e))?;
    }
    for p in READONLY {
        let rel = p.trim_start_matches('/');
        let Some((fd, _)) = root.lookup(rel) else { continue };
        let path = fd_path(&fd);
        mount(
            Some(path.as_str()),
            path.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| setup_err(format!("bind {p}"), e))?;
        remount_ro(root, rel)?;
    }
    Ok(())
}

/// Split docker `--tmpfs` options into mount flags and tmpfs data.
fn tmpfs_options(opts: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut data = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "nodev" => flags |= MsFlags::MS_NODEV,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Mount the container's view of its cgroups at /sys/fs/cgroup (read-only unless privileged), as docker
/// does: a cgroup2 mount, or on v1 a tmpfs with one mount per hierarchy. Runs after pivot_root inside the
/// new cgroup namespace, so each mount is rooted at the container's own cgroup.
pub fn mount_cgroupfs(hierarchies: &[Vec<String>], v2: bool, privileged: bool) -> Result<(), RuntimeError> {
    let base = Path::new("/sys/fs/cgroup");
    if !base.is_dir() {
        return Ok(());
    }
    let ro = if privileged { MsFlags::empty() } else { MsFlags::MS_RDONLY };
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if v2 {
        return mount(Some("cgroup"), base, Some("cgroup2"), nse | ro, None::<&str>)
            .map_err(|e| setup_err("mount cgroup2 at /sys/fs/cgroup", e));
    }
    mount(Some("cgroup"), base, Some("tmpfs"), nse, Some("mode=755,size=64k"))
        .map_err(|e| setup_err("mount tmpfs at /sys/fs/cgroup", e))?;
    for ctrls in hierarchies {
        let name = ctrls.join(",");
        // A named hierarchy (`name=systemd`) lives at /sys/fs/cgroup/systemd, as on the host.
        let dir = base.join(name.strip_prefix("name=").unwrap_or(&name));
        std::fs::create_dir_all(&dir).map_err(|e| setup_err(format!("create {}", dir.display()), e))?;
        mount(Some("cgroup"), &dir, Some("cgroup"), nse | ro, Some(name.as_str()))
            .map_err(|e| setup_err(format!("mount cgroup {name}"), e))?;
        if ctrls.len() > 1 {
            for c in ctrls {
                let _ = std::os::unix::fs::symlink(&name, base.join(c));
            }
        }
    }
    if !privileged {
        mount(
            None::<&str>,
            base,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nse,
            Some("mode=755,size=64k"),
        )
        .map_err(|e| setup_err("remount /sys/fs/cgroup read-only", e))?;
    }
    Ok(())
}

/// Make the rootfs the process's `/` and drop every trace of the host tree from its namespace.
pub fn pivot(root: &Root, read_only: bool) -> Result<(), RuntimeError> {
    nix::unistd::fchdir(root.fd.as_raw_fd()).map_err(|e| setup_err("chdir rootfs", e))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then removes it.
    nix::unistd::pivot_root(".", ".").map_err(|e| setup_err("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| setup_err("detach old root", e))?;
    nix::unistd::chdir("/").map_err(|e| setup_err("chdir /", e))?;
    if read_only {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| setup_err("remount / read-only", e))?;
    }
    Ok(())
}

/// Contents of /etc/hosts for a container with this hostname.
pub fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    )
}
