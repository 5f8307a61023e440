//! Volumes in the container's init: their data directories opened while the init is still host root
//! (a user-namespaced init soon is not, and the store above them is private), and docker's copy-up —
//! what the image has at a volume's mount point is copied into the volume when the volume is empty,
//! owners, modes and times kept, before the volume hides it.
//!
//! The copy reads the container's rootfs with `layer::walk` (every entry pinned, symlinks copied as
//! symlinks, never followed: an image's `/data -> /etc` cannot make the init copy the host's files)
//! and writes only below the volume's directory descriptor, creating each entry itself (`O_EXCL`,
//! `O_NOFOLLOW`), so nothing it writes can land outside the volume.

use super::mounts::Root;
use super::spec::{ContainerSpec, MountSpec};
use super::RuntimeError;
use crate::layer::walk::{self, Dir, Entry, Kind};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The volume directories of a container's mounts, by mount index.
pub struct VolumeSources {
    fds: Vec<Option<OwnedFd>>,
}

impl VolumeSources {
    /// Open (`O_PATH`) the data directory of every volume mount of `spec`.
    pub fn open(spec: &ContainerSpec) -> Result<VolumeSources, RuntimeError> {
        let mut fds = Vec::with_capacity(spec.mounts.len());
        for m in &spec.mounts {
            fds.push(match m {
                MountSpec::Volume { source, name, .. } => Some(
                    rustix::fs::open(
                        source,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| RuntimeError::os(format!("open volume {name} ({})", source.display()), e))?,
                ),
                _ => None,
            });
        }
        Ok(VolumeSources { fds })
    }

    /// No volumes (callers without a container spec).
    pub fn none() -> VolumeSources {
        VolumeSources { fds: Vec::new() }
    }

    /// The descriptors, to keep across the init's descriptor cleanup.
    pub fn raw_fds(&self) -> Vec<i32> {
        self.fds.iter().flatten().map(|f| f.as_raw_fd()).collect()
    }

    /// `/proc/self/fd/N` of mount `i`'s volume directory.
    pub fn path(&self, i: usize) -> Option<String> {
        self.fds.get(i)?.as_ref().map(|f| format!("/proc/self/fd/{}", f.as_raw_fd()))
    }
}

fn os(what: impl Into<String>, e: impl Into<std::io::Error>) -> RuntimeError {
    RuntimeError::os(what, e)
}

/// docker's copy-up: when the volume at `volume` (a `/proc/self/fd/N` path) is empty and the rootfs has a
/// directory at `target`, copy that directory's content, and its owner and mode, into the volume.
pub fn copy_up(root: &Root, target: &str, volume: &str) -> Result<(), RuntimeError> {
    let dest = rustix::fs::open(volume, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| os(format!("open volume for {target}"), e))?;
    let not_empty =
        std::fs::read_dir(volume).map_err(|e| os(format!("read volume for {target}"), e))?.next().is_some();
    if not_empty {
        return Ok(());
    }
    let rootfs = Dir::open(root.path()).map_err(|e| os("open rootfs", std::io::Error::from(e)))?;
    let rel = Path::new(target.trim_start_matches('/'));
    let src = match rootfs.resolve(rel) {
        Ok(Some(r)) if r.entry.meta().is_dir() => r.entry,
        Ok(_) => return Ok(()),
        Err(e) => return Err(os(format!("resolve {target} in the image"), std::io::Error::from(e))),
    };
    let err = |e: walk::WalkError| os(format!("copy {target} into its volume"), std::io::Error::from(e));
    let src_dir = src.open_dir().map_err(err)?;
    let mut copier = Copier { stack: vec![(PathBuf::new(), dest, src.meta().mode(), src.meta().mtime())] };
    rustix::fs::fchown(&copier.stack[0].1, Some(uid(src.meta().uid())), Some(gid(src.meta().gid())))
        .map_err(|e| os(format!("chown the volume at {target}"), e))?;
    walk::walk::<CopyError>(&src_dir, &mut |rel, e| copier.entry(rel, e))
        .map_err(|e| os(format!("copy {target} into its volume"), e.0))?;
    copier.finish_to(0).map_err(|e| os(format!("copy {target} into its volume"), e))
}

/// A failed copy step.
struct CopyError(std::io::Error);

impl From<walk::WalkError> for CopyError {
    fn from(e: walk::WalkError) -> Self {
        CopyError(e.into())
    }
}

impl From<rustix::io::Errno> for CopyError {
    fn from(e: rustix::io::Errno) -> Self {
        CopyError(e.into())
    }
}

impl From<std::io::Error> for CopyError {
    fn from(e: std::io::Error) -> Self {
        CopyError(e)
    }
}

fn uid(n: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(n)
}

fn gid(n: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(n)
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec { tv_sec: mtime, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

/// The copy in progress: the destination directories from the volume's root to the current one, each
/// with the mode and mtime it gets once its content is in (a read-only directory must stay writable
/// until then, and writing into it changes its mtime).
struct Copier {
    stack: Vec<(PathBuf, OwnedFd, u32, i64)>,
}

impl Copier {
    /// Close the directories deeper than `depth`, giving each its mode and mtime.
    fn finish_to(&mut self, depth: usize) -> std::io::Result<()> {
        while self.stack.len() > depth {
            let Some((_, fd, mode, mtime)) = self.stack.pop() else { break };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
            rustix::fs::futimens(&fd, &times(mtime))?;
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path, e: &Entry) -> Result<bool, CopyError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        while self.stack.len() > 1 && self.stack.last().is_some_and(|(p, ..)| p != parent) {
            self.finish_to(self.stack.len() - 1)?;
        }
        let name =
            rel.file_name().ok_or_else(|| CopyError(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
        let m = e.meta();
        let dir =
            &self.stack.last().ok_or_else(|| CopyError(std::io::Error::from_raw_os_error(libc::EINVAL)))?.1;
        let (owner, group) = (Some(uid(m.uid())), Some(gid(m.gid())));
        match m.kind() {
            Kind::Dir => {
                rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                rustix::fs::fchown(&fd, owner, group)?;
                self.stack.push((rel.to_path_buf(), fd, m.mode(), m.mtime()));
                return Ok(true);
            }
            Kind::File => {
                let flags =
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let out = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))?;
                let mut out = std::fs::File::from(out);
                std::io::copy(&mut e.open_file()?, &mut out)?;
                rustix::fs::fchown(&out, owner, group)?;
                for (k, v) in e.xattrs()? {
                    if k.starts_with(b"user.") || k == b"security.capability" {
                        if let Ok(k) = std::ffi::CString::new(k) {
                            let _ = rustix::fs::fsetxattr(
                                out.as_fd(),
                                k.as_c_str(),
                                &v,
                                rustix::fs::XattrFlags::empty(),
                            );
                        }
                    }
                }
                // After the chown, which clears set-id bits.
                rustix::fs::fchmod(&out, Mode::from_raw_mode(m.mode()))?;
                rustix::fs::futimens(&out, &times(m.mtime()))?;
            }
            Kind::Symlink => {
                let target = std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&e.read_link()?));
                rustix::fs::symlinkat(target.as_os_str(), dir, name)?;
                rustix::fs::chownat(dir, name, owner, group, AtFlags::SYMLINK_NOFOLLOW)?;
                rustix::fs::utimensat(dir, name, &times(m.mtime()), AtFlags::SYMLINK_NOFOLLOW)?;
            }
            kind => {
                let ft = match kind {
                    Kind::CharDevice => rustix::fs::FileType::CharacterDevice,
                    Kind::BlockDevice => rustix::fs::FileType::BlockDevice,
                    Kind::Fifo => rustix::fs::FileType::Fifo,
                    _ => rustix::fs::FileType::Socket,
                };
                rustix::fs::mknodat(dir, name, ft, Mode::from_raw_mode(m.mode()), m.rdev())?;
                rustix::fs::chownat(dir, name, owner, group, AtFlags::SYMLINK_NOFOLLOW)?;
                rustix::fs::chmodat(dir, name, Mode::from_raw_mode(m.mode()), AtFlags::empty())?;
            }
        }
        Ok(false)
    }
}

use std::os::unix::ffi::OsStrExt;
