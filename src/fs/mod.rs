//! The FUSE overlay filesystem: image layers (read-only lowers) plus a writable upper directory presented
//! as one copy-on-write tree with kernel overlayfs semantics, served by this process.
//!
//! Layers, upper and work directories use the kernel overlayfs on-disk format (0/0 character-device
//! whiteouts, `trusted.overlay.opaque`, copy-ups built in `workdir/work`), so the kernel can mount what rimg
//! wrote and the other way round. Regular-file I/O goes through FUSE passthrough where the kernel offers
//! it, so reads and writes run at the speed of the underlying filesystem; elsewhere the kernel's page
//! cache serves it, with writes cached and sent back in batches (FUSE writeback cache).
//!
//! Lifecycle: [`prepare`] mounts (mount(2) on /dev/fuse) and completes the FUSE handshake in the calling
//! thread without starting any thread, so a caller may fork after it; [`Prepared::serve`] starts the worker
//! threads; [`mount`] does both. Dropping the [`OverlayMount`] unmounts.

mod attr;
mod dirlist;
mod ids;
mod kept;
mod ops;
mod overlay;
mod readahead;
mod stats;
pub(crate) mod sys;
mod tree;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::idmap::IdMap;
pub use kept::restore as restore_kept;
use overlay::FsOptions;
pub use stats::FsStats;

/// The layers of one overlay, as kernel overlayfs takes them.
#[derive(Clone, Debug, Default)]
pub struct OverlayConfig {
    /// Read-only lower directories, top first (like `lowerdir=`).
    pub lowers: Vec<PathBuf>,
    /// Writable upper directory; `None` makes the mount read-only.
    pub upper: Option<PathBuf>,
    /// Work directory on the same filesystem as `upper` (required with `upper`).
    pub work: Option<PathBuf>,
}

/// How the overlay is mounted and served.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Mount read-only even if an upper directory is given.
    pub read_only: bool,
    /// Let every user use the mount (containers run as other uids); the kernel checks permissions
    /// (`default_permissions`) against the modes the overlay reports.
    pub allow_other: bool,
    /// Worker threads serving requests (each with its own /dev/fuse clone).
    pub threads: usize,
    /// Source name shown in /proc/mounts.
    pub fsname: String,
    /// Rename lower directories via `trusted.overlay.redirect` instead of failing with EXDEV
    /// (kernel `redirect_dir=on`).
    pub redirect_dir: bool,
    /// chmod/chown/utimes/setxattr of lower files copy up metadata only (kernel `metacopy=on`).
    pub metacopy: bool,
    /// Serve regular-file I/O through FUSE passthrough when the kernel supports it.
    pub passthrough: bool,
    /// Where regular-file I/O is not passed through (`passthrough` off, or a kernel without it), let
    /// the kernel cache writes and send them back in large batches (FUSE writeback cache) instead of
    /// making every write(2) a round trip to this server. Off: writes go through to the upper file
    /// before write(2) returns, as they do with passthrough.
    pub writeback: bool,
    /// Take requests through FUSE over io_uring where the kernel offers it (6.14+, with the
    /// `fuse.enable_uring` module parameter set; /dev/fuse otherwise): one queue per CPU, served by a
    /// thread pinned to that CPU, so a request and its reply do not wake another CPU (the main cost of
    /// a round trip on a virtual machine). Not for a mount that lives in a mount namespace only the
    /// serving process holds (a container's rootfs in `rimg run`): if that process is killed, its exit
    /// unmounts, and the kernel waits for ever for queue threads that can no longer run.
    pub uring: bool,
    /// Read directories ahead of a tree walk: when a listing shows subdirectories, a few background
    /// threads read their blocks and their subdirectories' inodes into the host's caches while the walk
    /// is busy with the ones before (see `fs/readahead.rs`). A first `find` on a cold cache then waits
    /// for several reads at once instead of one after the other. Costs reads nobody may need when a
    /// directory is only listed, never entered.
    pub readahead: bool,
    /// User ids of a user namespace the mount is served to (fuse-overlayfs `uidmapping=`): files keep
    /// container uids on disk and are shown to the kernel with the host uids those map to; the uids the
    /// kernel sends (callers creating files, chown) are mapped back. Identity (the default) translates
    /// nothing. A caller without a container uid creates files owned by [`crate::idmap::OVERFLOW_ID`];
    /// a chown to a host uid without a container uid fails with EINVAL. A mount with maps keeps the
    /// setuid/setgid bits and file capabilities of the upper's files off disk (`fs/kept.rs`): on disk
    /// its ids would be host ids.
    pub uid_map: IdMap,
    /// Group ids, as `uid_map` (fuse-overlayfs `gidmapping=`).
    pub gid_map: IdMap,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            allow_other: true,
            threads: 2,
            fsname: "rimg-overlay".into(),
            redirect_dir: true,
            metacopy: true,
            passthrough: true,
            writeback: true,
            uring: true,
            readahead: true,
            uid_map: IdMap::identity(),
            gid_map: IdMap::identity(),
        }
    }
}

/// Errors of setting up or tearing down an overlay mount.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An overlay needs at least one lower directory.
    #[error("an overlay needs at least one lower directory")]
    NoLowers,
    /// A writable overlay needs a work directory.
    #[error("upper directory {0} given without a work directory")]
    NoWorkdir(PathBuf),
    /// A layer, upper or work directory could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Upper and work directories live on different filesystems (copy-ups are renamed between them).
    #[error("work directory {work} is not on the same filesystem as upper directory {upper}")]
    CrossDevice {
        /// Upper directory.
        upper: PathBuf,
        /// Work directory.
        work: PathBuf,
    },
    /// mount(2) or the FUSE handshake failed.
    #[error("mounting FUSE overlay at {path}: {source}")]
    Mount {
        /// Mount point.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Starting the server threads failed.
    #[error("starting FUSE server for {path}: {source}")]
    Serve {
        /// Mount point.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// umount(2) failed.
    #[error("unmounting {path}: {source}")]
    Unmount {
        /// Mount point.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn open_layer(path: &Path) -> Result<tree::Layer, FsError> {
    let ferr = |e: i32| FsError::Open { path: path.to_owned(), source: std::io::Error::from_raw_os_error(e) };
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| ferr(libc::EINVAL))?;
    // SAFETY: valid C string; the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(ferr(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)));
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let st = sys::fstat(fd.as_raw_fd()).map_err(ferr)?;
    Ok(tree::Layer { root: Arc::new(fd), dev: st.st_dev })
}

/// Open `workdir/work` (creating it) and empty it of leftovers of an earlier mount, as the kernel does.
fn open_work(work: &Path) -> Result<OwnedFd, FsError> {
    let ferr = |e: std::io::Error| FsError::Open { path: work.to_owned(), source: e };
    let w = work.join("work");
    match std::fs::create_dir(&w) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(ferr(e)),
    }
    for e in std::fs::read_dir(&w).map_err(ferr)? {
        let e = e.map_err(ferr)?;
        let p = e.path();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let r = if is_dir { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        r.map_err(ferr)?;
    }
    let l = open_layer(&w)?;
    Arc::try_unwrap(l.root).map_err(|_| ferr(std::io::Error::from_raw_os_error(libc::EIO)))
}

fn build_overlay(cfg: &OverlayConfig, opts: &MountOptions) -> Result<overlay::Overlay, FsError> {
    if cfg.lowers.is_empty() {
        return Err(FsError::NoLowers);
    }
    let lowers = cfg.lowers.iter().map(|p| open_layer(p)).collect::<Result<Vec<_>, _>>()?;
    let (upper, work) = match (&cfg.upper, &cfg.work) {
        (Some(u), _) if opts.read_only => (Some(open_layer(u)?), None),
        (Some(u), Some(w)) => {
            let ul = open_layer(u)?;
            let wfd = open_work(w)?;
            let wst = sys::fstat(wfd.as_raw_fd()).map_err(|e| FsError::Open {
                path: w.clone(),
                source: std::io::Error::from_raw_os_error(e),
            })?;
            if wst.st_dev != ul.dev {
                return Err(FsError::CrossDevice { upper: u.clone(), work: w.clone() });
            }
            (Some(ul), Some(wfd))
        }
        (Some(u), None) => return Err(FsError::NoWorkdir(u.clone())),
        (None, _) => (None, None),
    };
    let read_only = opts.read_only || upper.is_none();
    let fsopts = FsOptions {
        read_only,
        redirect_dir: opts.redirect_dir,
        metacopy: opts.metacopy,
        passthrough: opts.passthrough,
        writeback: opts.writeback,
        uring: opts.uring,
        readahead: opts.readahead,
        ids: ids::IdMaps { uid: opts.uid_map.clone(), gid: opts.gid_map.clone() },
    };
    let stack = tree::Stack { lowers, upper, counters: Default::default() };
    overlay::Overlay::new(stack, work, fsopts).map_err(|e| FsError::Open {
        path: cfg.lowers[0].clone(),
        source: std::io::Error::from_raw_os_error(e),
    })
}

/// open /dev/fuse and mount(2) it at `mountpoint` as type `fuse.rimg-overlayfs` with kernel permission
/// checks (`default_permissions`), device nodes and setuid allowed (it is a container rootfs).
fn fuse_mount(mountpoint: &Path, opts: &MountOptions, read_only: bool) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse")?;
    let meta = std::fs::metadata(mountpoint)?;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions",
        dev.as_raw_fd(),
        meta.mode() & libc::S_IFMT,
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if opts.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = nix::mount::MsFlags::empty();
    if read_only {
        flags |= nix::mount::MsFlags::MS_RDONLY;
    }
    let fsname = if opts.fsname.is_empty() { "rimg-overlay" } else { opts.fsname.as_str() };
    nix::mount::mount(Some(fsname), mountpoint, Some("fuse.rimg-overlayfs"), flags, Some(data.as_str()))
        .map_err(std::io::Error::from)?;
    Ok(OwnedFd::from(dev))
}

/// A mounted overlay whose server threads have not started yet (see [`prepare`]).
pub struct Prepared {
    session: fuser::Session<overlay::Overlay>,
    mountpoint: PathBuf,
    counters: Arc<stats::Counters>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("mountpoint", &self.mountpoint).finish()
    }
}

/// Mount the overlay at `mountpoint` (mount(2) + FUSE handshake) in the calling thread, without starting
/// any thread: the caller may fork now (the /dev/fuse descriptor is close-on-exec). Requests block in
/// the kernel until [`Prepared::serve`] runs, so nothing may touch the mount point before that.
pub fn prepare(cfg: OverlayConfig, mountpoint: &Path, opts: &MountOptions) -> Result<Prepared, FsError> {
    let fs = build_overlay(&cfg, opts)?;
    let merr = |e: std::io::Error| FsError::Mount { path: mountpoint.to_owned(), source: e };
    let fd = fuse_mount(mountpoint, opts, fs.opts.read_only).map_err(merr)?;
    let mut fcfg = fuser::Config::default();
    fcfg.acl = if opts.allow_other { fuser::SessionACL::All } else { fuser::SessionACL::Owner };
    fcfg.n_threads = Some(opts.threads.max(1));
    fcfg.clone_fd = true;
    // fuser's own mount handling would later unmount "whatever is at the path" after the session ends
    // (racing a new mount there), so mount(2) is done here and fuser only gets the descriptor.
    let notifier = Arc::new(std::sync::OnceLock::new());
    let counters = fs.stack.counters.clone();
    let mut fs = fs;
    fs.notifier = notifier.clone();
    let session = match fuser::Session::from_fd(fs, fd, fcfg.acl, fcfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = unmount_path(mountpoint);
            return Err(merr(e));
        }
    };
    let _ = notifier.set(session.notifier());
    Ok(Prepared { session, mountpoint: mountpoint.to_owned(), counters })
}

impl Prepared {
    /// Start the server threads; the mount is usable when this returns.
    pub fn serve(self) -> Result<OverlayMount, FsError> {
        let (mountpoint, counters) = (self.mountpoint, self.counters);
        reserve_descriptors();
        let bg = self.session.spawn().map_err(|e| FsError::Serve { path: mountpoint.clone(), source: e })?;
        Ok(OverlayMount { mountpoint, bg: Some(bg), counters })
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Serve from worker threads started by the calling thread, which waits until the mount goes away
    /// (umount, or [`unmount_path`] from another thread). Unlike [`Prepared::serve`] no intermediate
    /// thread starts the workers, so the first request is answered one thread start-up sooner.
    pub fn run(self) -> Result<(), FsError> {
        let mountpoint = self.mountpoint;
        reserve_descriptors();
        finished(self.session.run(), &mountpoint)
    }
}

/// Make room for the server's descriptors (one per directory the kernel knows): lift the soft
/// `RLIMIT_NOFILE` to the hard limit, so a walk is not cut off at the soft limit's directory count, and
/// grow the descriptor table while the process is still single-threaded, so that no request waits for
/// an RCU grace period when the table would grow (8–17 ms each here). [`Prepared::serve`] and
/// [`Prepared::run`] do it themselves; a caller that starts threads of its own before those calls does
/// it first. Idempotent: once other threads run, the table part does nothing (the daemon calls it before its
/// signal thread, and [`Prepared::run`] again).
pub fn reserve_descriptors() {
    if let Some(soft) = sys::raise_nofile_limit() {
        sys::reserve_fd_table(sys::FD_TABLE_RESERVE.min(soft));
    }
}

/// Mount the overlay and serve it from background threads of this process (in its mount namespace).
/// Equivalent to `prepare(..)?.serve()`.
pub fn mount(cfg: OverlayConfig, mountpoint: &Path, opts: &MountOptions) -> Result<OverlayMount, FsError> {
    prepare(cfg, mountpoint, opts)?.serve()
}

/// A live overlay mount served by this process; dropping it unmounts.
pub struct OverlayMount {
    mountpoint: PathBuf,
    bg: Option<fuser::BackgroundSession>,
    counters: Arc<stats::Counters>,
}

impl std::fmt::Debug for OverlayMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayMount").field("mountpoint", &self.mountpoint).finish()
    }
}

/// umount(2) `path`, lazily if it is busy; "not mounted" is success.
pub fn unmount_path(path: &Path) -> Result<(), FsError> {
    let c =
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).map_err(|_| {
            FsError::Unmount {
                path: path.to_owned(),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            }
        })?;
    // SAFETY: valid C string.
    let mut r = unsafe { libc::umount2(c.as_ptr(), 0) };
    if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY) {
        // SAFETY: valid C string.
        r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOENT) {
            return Err(FsError::Unmount { path: path.to_owned(), source: e });
        }
    }
    Ok(())
}

impl OverlayMount {
    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What the server has done so far: work counts that tell linear from superlinear behaviour
    /// without a clock.
    pub fn stats(&self) -> FsStats {
        self.counters.snapshot()
    }

    /// Has the server stopped (the mount went away)?
    pub fn is_finished(&self) -> bool {
        self.bg.as_ref().is_none_or(|b| b.guard.is_finished())
    }

    /// Unmount (lazily if busy) and wait for the server threads to finish.
    pub fn unmount(mut self) -> Result<(), FsError> {
        self.shutdown()
    }

    /// Wait until the mount goes away by other means (umount, fusermount3 -u).
    pub fn wait(mut self) -> Result<(), FsError> {
        if let Some(bg) = self.bg.take() {
            finished(bg.join(), &self.mountpoint)?;
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), FsError> {
        let Some(bg) = self.bg.take() else { return Ok(()) };
        unmount_path(&self.mountpoint)?;
        finished(bg.join(), &self.mountpoint)
    }
}

/// How the server threads ended. Once the mount is gone the kernel ends the session either with ENODEV or,
/// for a worker blocked on a cloned /dev/fuse fd while the connection is torn down, with ECONNABORTED:
/// both are a normal end, not a server failure.
fn finished(r: std::io::Result<()>, mountpoint: &Path) -> Result<(), FsError> {
    match r {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED) | Some(libc::ENODEV)) => Ok(()),
        r => r.map_err(|e| FsError::Serve { path: mountpoint.to_path_buf(), source: e }),
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::warn!("{e}");
        }
    }
}
