//! Privileges kept off disk on an id-mapped mount (issue 19, finding 4).
//!
//! Under `--userns` the upper directory stores CONTAINER ids (0 = the container's root), which is what
//! `rimg commit` needs, but on the host those numbers are host ids: a setuid file the container's root
//! made would be a setuid-root file in `ROOT/containers/<id>/upper`, and a `security.capability` would
//! give host root's capabilities to whoever runs it. So on a mount with id maps no regular file the
//! server writes carries S_ISUID, S_ISGID or `security.capability` on disk. They are kept in xattrs of
//! the file instead, which only host root can read or write (`trusted.*`):
//!
//! - [`XATTR_MODE`], `trusted.rimg.mode`: the file's real permission bits, in octal ("4755"). Present only
//!   while the file is setuid or setgid; only those two bits are taken from it, the rest is on disk.
//! - [`XATTR_CAPS`], `trusted.rimg.capability`: the file capability, in the form `security.capability`
//!   would have on disk (v2 for the container's root, the form image layers carry).
//!
//! The server shows them (getattr, lookup, get/list xattr), emulates what the kernel does to them (a
//! chown, write or truncation clears them as it would clear the real ones), never lets the container
//! see or set `trusted.rimg.*`, and `layer::diff` puts the real mode and capability back into the layer
//! ([`restore`]), so a committed image is setuid where the container made it so. This is fuse-overlayfs'
//! `user.containers.override_stat` idea, kept to the bits that carry privilege.
//!
//! Cost: none without id maps. With them, what each FUSE inode holds is cached here, read once per
//! lookup of an upper regular file (one `listxattr`), so a getattr costs no extra system call.
//! Directories keep a setgid bit on disk: it only passes a group on to new entries, never privilege.

use std::borrow::Cow;
use std::ffi::{CStr, OsStr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

use fuser::FileAttr;
use rustc_hash::FxHashMap;

use super::ops::suid_kill_bits;
use super::overlay::{copy_xattrs_except, lock, Overlay};
use super::sys::{self, SysResult};
use super::tree::{DirLayers, Found, Tables};

/// Where the real permission bits of a setuid/setgid file are kept (octal text).
pub const XATTR_MODE: &CStr = c"trusted.rimg.mode";
/// Where the file capability of a file is kept (its on-disk `security.capability` value).
pub const XATTR_CAPS: &CStr = c"trusted.rimg.capability";
/// Prefix of rimg's own xattrs: never shown to the container, never set or copied for it, never
/// written into a layer.
pub const PREFIX: &[u8] = b"trusted.rimg.";
const CAPS: &[u8] = b"security.capability";
/// The mode bits that make an executable run with its owner's or its group's ids.
const SETID: u32 = libc::S_ISUID | libc::S_ISGID;

/// What is kept off disk for one file.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Held {
    /// S_ISUID/S_ISGID of the real mode (absent from the disk mode).
    setid: u32,
    /// A file capability is kept in [`XATTR_CAPS`].
    caps: bool,
}

/// The state of one mount: whether anything is kept (only with id maps) and what each FUSE inode holds.
#[derive(Default)]
pub struct Kept {
    on: bool,
    held: Mutex<FxHashMap<u64, Held>>,
}

impl Kept {
    /// Keep privileges off disk when `on` (a mount with id maps).
    pub fn new(on: bool) -> Kept {
        Kept { on, held: Mutex::default() }
    }
}

fn is_reg(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFREG
}

fn parse_mode(v: &[u8]) -> Option<u32> {
    u32::from_str_radix(std::str::from_utf8(v).ok()?.trim(), 8).ok()
}

fn ignore_missing(r: SysResult<()>) -> SysResult<()> {
    match r {
        Err(libc::ENODATA) => Ok(()),
        r => r,
    }
}

/// What the xattrs of `dir/name` say is kept for it.
fn read_held(dir: RawFd, name: &OsStr) -> Held {
    let Ok(list) = sys::list_xattr(dir, name) else { return Held::default() };
    let mut h = Held::default();
    for a in list.split(|b| *b == 0) {
        if a == XATTR_CAPS.to_bytes() {
            h.caps = true;
        } else if a == XATTR_MODE.to_bytes() {
            let v = sys::get_xattr(dir, name, XATTR_MODE).ok();
            h.setid = v.and_then(|v| parse_mode(&v)).unwrap_or(0) & SETID;
        }
    }
    h
}

/// An entry's xattrs as (name, value) pairs, as `layer::diff` reads them.
pub type Xattrs = [(Vec<u8>, Vec<u8>)];

/// A layer entry's real mode and xattrs from what the upper directory holds: the kept setuid/setgid
/// bits back in the mode, the kept capability back as `security.capability`, no `trusted.rimg.*`.
/// Used by `layer::diff` for every entry (an upper written without id maps has none of them).
pub fn restore(mode: u32, xattrs: &Xattrs) -> (u32, Cow<'_, Xattrs>) {
    if !xattrs.iter().any(|(n, _)| n.starts_with(PREFIX)) {
        return (mode, Cow::Borrowed(xattrs));
    }
    let mut mode = mode;
    let kept_caps = xattrs.iter().find(|(n, _)| n.as_slice() == XATTR_CAPS.to_bytes());
    let mut out = Vec::with_capacity(xattrs.len());
    for (n, v) in xattrs {
        if n.as_slice() == XATTR_MODE.to_bytes() && is_reg(mode) {
            mode |= parse_mode(v).unwrap_or(0) & SETID;
        } else if n.starts_with(PREFIX) || (kept_caps.is_some() && n.as_slice() == CAPS) {
            continue;
        } else {
            out.push((n.clone(), v.clone()));
        }
    }
    if let Some((_, v)) = kept_caps {
        out.push((CAPS.to_vec(), v.clone()));
    }
    (mode, Cow::Owned(out))
}

/// Copy `size` bytes from `src` into `dst`, the upper file of a metacopy getting its data: the host's
/// kernel drops a file's `security.capability` at any write, the server's too, and a copy-up must keep
/// it (the kernel's does). A kept one (see above) is not touched by writes.
pub fn copy_data_keeping_caps(src: RawFd, dst: RawFd, size: u64) -> SysResult<()> {
    let here = OsStr::new("");
    let caps = sys::get_xattr(dst, here, c"security.capability").ok();
    sys::copy_data(src, dst, size)?;
    match caps {
        Some(c) => sys::set_xattr(dst, here, c"security.capability", &c, 0),
        None => Ok(()),
    }
}

impl Overlay {
    fn held(&self, ino: u64) -> Held {
        if !self.kept.on {
            return Held::default();
        }
        lock(&self.kept.held).get(&ino).copied().unwrap_or_default()
    }

    fn set_held(&self, ino: u64, h: Held) {
        let mut m = lock(&self.kept.held);
        if h == Held::default() {
            m.remove(&ino);
        } else {
            m.insert(ino, h);
        }
    }

    /// The kernel forgot inode `ino` (`t` is the locked table): once its node is gone, so is what this
    /// cache holds of it (the next lookup reads it again), so the cache never outgrows the nodes the
    /// kernel knows, however many such files a container makes and deletes.
    pub fn kept_forgotten(&self, t: &Tables, ino: u64) {
        if self.kept.on && !t.nodes.contains_key(&ino) {
            lock(&self.kept.held).remove(&ino);
        }
    }

    /// Does inode `ino` have a file capability kept off disk?
    pub fn kept_caps(&self, ino: u64) -> bool {
        self.held(ino).caps
    }

    /// The real mode of inode `ino` whose disk copy has the stat `st`.
    pub fn real_mode(&self, ino: u64, st: &libc::stat) -> u32 {
        if !self.kept.on || !is_reg(st.st_mode) {
            return st.st_mode;
        }
        st.st_mode | self.held(ino).setid
    }

    /// Show the kept setuid/setgid bits of `ino` in its attributes.
    pub fn show_kept(&self, ino: u64, st: &libc::stat, a: &mut FileAttr) {
        if self.kept.on && is_reg(st.st_mode) {
            a.perm |= self.held(ino).setid as u16;
        }
    }

    /// A lookup found `name` in the merged directory `dir` as inode `ino`: learn what its upper copy
    /// keeps off disk (files the server has not written this time round: an earlier run's upper).
    pub fn kept_lookup(&self, ino: u64, dir: &DirLayers, name: &OsStr, f: &Found) {
        if !self.kept.on || !f.upper || !is_reg(f.st.st_mode) {
            return;
        }
        if let Some(up) = &dir.upper {
            self.set_held(ino, read_held(up.as_raw_fd(), name));
        }
    }

    /// Give the regular file `dir/name` the permission bits `perm`: on an id-mapped mount setuid and
    /// setgid go to [`XATTR_MODE`] (written before the chmod, so the disk never has them) and the disk
    /// mode goes without them. `had` says an earlier mode xattr may have to go. Returns the kept bits.
    pub fn set_file_perm(&self, dir: RawFd, name: &OsStr, perm: u32, had: bool) -> SysResult<u32> {
        let setid = if self.kept.on { perm & SETID } else { 0 };
        if setid != 0 {
            sys::set_xattr(dir, name, XATTR_MODE, format!("{perm:o}").as_bytes(), 0)?;
        }
        sys::chmod_at(dir, name, perm & !setid)?;
        if setid == 0 && had {
            ignore_missing(sys::remove_xattr(dir, name, XATTR_MODE))?;
        }
        Ok(setid)
    }

    /// A regular file `ino` was just created with permission bits `perm` by [`Overlay::set_file_perm`].
    pub fn kept_created(&self, ino: u64, perm: u32) {
        if self.kept.on {
            self.set_held(ino, Held { setid: perm & SETID, caps: false });
        }
    }

    /// chmod of `dir/name` (inode `ino`, disk mode `disk_mode`) to `perm`.
    pub fn chmod_kept(&self, ino: u64, dir: RawFd, name: &OsStr, disk_mode: u32, perm: u32) -> SysResult<()> {
        if !self.kept.on || !is_reg(disk_mode) {
            return sys::chmod_at(dir, name, perm);
        }
        let mut h = self.held(ino);
        h.setid = self.set_file_perm(dir, name, perm, h.setid != 0)?;
        self.set_held(ino, h);
        Ok(())
    }

    /// The metadata of a regular file being copied up from `sdir/sname` onto the new upper file `dst`
    /// (already chowned: a chown drops `security.capability`): xattrs and permission bits `perm`, with
    /// setuid/setgid and the capability kept off disk on an id-mapped mount. Returns what is kept.
    pub fn copy_up_file_meta(&self, sdir: RawFd, sname: &OsStr, dst: RawFd, perm: u32) -> SysResult<Held> {
        let here = OsStr::new("");
        if !self.kept.on {
            copy_xattrs_except(sdir, sname, dst, here, &[])?;
            sys::fchmod(dst, perm)?;
            return Ok(Held::default());
        }
        copy_xattrs_except(sdir, sname, dst, here, CAPS)?;
        let caps = match sys::get_xattr(sdir, sname, c"security.capability") {
            Ok(v) => {
                sys::set_xattr(dst, here, XATTR_CAPS, &v, 0)?;
                true
            }
            Err(libc::ENODATA) | Err(libc::ENOTSUP) => false,
            Err(e) => return Err(e),
        };
        let setid = self.set_file_perm(dst, here, perm, false)?;
        Ok(Held { setid, caps })
    }

    /// Inode `ino` was copied up keeping `h` off disk.
    pub fn kept_copied_up(&self, ino: u64, h: Option<Held>) {
        if let Some(h) = h.filter(|_| self.kept.on) {
            self.set_held(ino, h);
        }
    }

    /// What a write, truncation or chown of the regular file `dir/name` (inode `ino`) clears, as the
    /// kernel clears it: S_ISUID, and S_ISGID of a group-executable file, when `setid` (a writer
    /// without CAP_FSETID, or any chown), and a file capability always. Without id maps the host's
    /// kernel already dropped the capability of the upper file when the server wrote, truncated or
    /// chowned it, and with a setuid file written by a caller without CAP_FSETID only the bits are
    /// left to clear (the server has that capability, so its own write kept them).
    pub fn kill_privs(&self, ino: u64, dir: RawFd, name: &OsStr, setid: bool) -> SysResult<()> {
        let h = self.held(ino);
        if !setid && !h.caps {
            return Ok(());
        }
        let st = sys::stat_at(dir, name)?;
        let real = st.st_mode | h.setid;
        let kill = if setid { suid_kill_bits(real) } else { 0 };
        let caps = h.caps && is_reg(st.st_mode);
        if kill == 0 && !caps {
            return Ok(());
        }
        let mut now = h;
        if caps {
            ignore_missing(sys::remove_xattr(dir, name, XATTR_CAPS))?;
            now.caps = false;
        }
        if kill != 0 {
            now.setid = self.set_file_perm(dir, name, real & 0o7777 & !kill, h.setid != 0)?;
        }
        if self.kept.on {
            self.set_held(ino, now);
        }
        self.invalidate_attr(ino);
        Ok(())
    }

    /// A chown of `dir/name` (inode `ino`) happened: clear what it clears of what is kept off disk
    /// (the host's kernel did so for the disk copy).
    pub fn chown_kept(&self, ino: u64, dir: RawFd, name: &OsStr) -> SysResult<()> {
        if self.held(ino) == Held::default() {
            return Ok(());
        }
        self.kill_privs(ino, dir, name, true)
    }

    /// getxattr `attr` of `dir/name` (inode `ino`): a kept capability is read from where it is kept.
    pub fn kept_get_xattr(&self, ino: u64, dir: RawFd, name: &OsStr, attr: &CStr) -> SysResult<Vec<u8>> {
        if attr.to_bytes() == CAPS && self.kept_caps(ino) {
            match sys::get_xattr(dir, name, XATTR_CAPS) {
                Err(libc::ENODATA) => {}
                r => return r,
            }
        }
        sys::get_xattr(dir, name, attr)
    }

    /// setxattr `attr` (value as stored) of `dir/name` (inode `ino`): on an id-mapped mount a file
    /// capability is kept off disk.
    pub fn kept_set_xattr(
        &self,
        ino: u64,
        dir: RawFd,
        name: &OsStr,
        attr: &CStr,
        value: &[u8],
        flags: i32,
    ) -> SysResult<()> {
        if !self.kept.on || attr.to_bytes() != CAPS {
            return sys::set_xattr(dir, name, attr, value, flags);
        }
        sys::set_xattr(dir, name, XATTR_CAPS, value, flags)?;
        // one an earlier version left on disk goes
        ignore_missing(sys::remove_xattr(dir, name, attr))?;
        let mut h = self.held(ino);
        h.caps = true;
        self.set_held(ino, h);
        Ok(())
    }

    /// removexattr `attr` of `dir/name` (inode `ino`).
    pub fn kept_remove_xattr(&self, ino: u64, dir: RawFd, name: &OsStr, attr: &CStr) -> SysResult<()> {
        if attr.to_bytes() == CAPS && self.kept_caps(ino) {
            sys::remove_xattr(dir, name, XATTR_CAPS)?;
            let mut h = self.held(ino);
            h.caps = false;
            self.set_held(ino, h);
            return Ok(());
        }
        sys::remove_xattr(dir, name, attr)
    }

    /// The xattr names of `dir/name` (inode `ino`), with `security.capability` when one is kept (the
    /// caller hides `trusted.rimg.*`).
    pub fn kept_list_xattr(&self, ino: u64, dir: RawFd, name: &OsStr) -> SysResult<Vec<u8>> {
        let mut list = sys::list_xattr(dir, name)?;
        if self.kept_caps(ino) && !list.split(|b| *b == 0).any(|a| a == CAPS) {
            list.extend_from_slice(CAPS);
            list.push(0);
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(n: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (n.to_vec(), v.to_vec())
    }

    #[test]
    fn restore_puts_kept_bits_and_caps_back() {
        let none = [x(b"user.a", b"1")];
        let (m, v) = restore(0o100755, &none);
        assert_eq!(m, 0o100755);
        assert!(matches!(v, Cow::Borrowed(_)), "nothing kept: nothing copied");
        let kept =
            [x(b"user.a", b"1"), x(b"trusted.rimg.mode", b"6755"), x(b"trusted.rimg.capability", b"C")];
        let (m, v) = restore(0o100755, &kept);
        assert_eq!(m, 0o106755);
        assert_eq!(v.as_ref(), [x(b"user.a", b"1"), x(b"security.capability", b"C")]);
        // only the setid bits are taken from the xattr; a directory's mode is its disk mode
        let (m, _) = restore(0o100700, &[x(b"trusted.rimg.mode", b"4777")]);
        assert_eq!(m, 0o104700);
        let dir = [x(b"trusted.rimg.mode", b"4755"), x(b"trusted.rimg.other", b"")];
        let (m, v) = restore(0o040755, &dir);
        assert_eq!((m, v.len()), (0o040755, 0));
        let (m, _) = restore(0o100755, &[x(b"trusted.rimg.mode", b"junk")]);
        assert_eq!(m, 0o100755);
    }
}
