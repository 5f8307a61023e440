//! Id translation for a mount served to a user namespace (fuse-overlayfs's `uidmapping=`/`gidmapping=`):
//! the layers keep the ids the container sees (0 = the container's root), the kernel is shown the host ids
//! those container ids have, and ids the kernel sends are turned back into container ids before they reach
//! the disk. So what a container writes under `--userns` is a layer with ordinary ids, ready for
//! `rimg commit`, and `default_permissions` checks run against the host ids the container's processes
//! really have.
//!
//! Besides owners, two xattrs carry ids and are translated too: `security.capability` v3 (its `rootid`)
//! and the POSIX ACL xattrs (`system.posix_acl_access`/`_default`, their named user and group entries).

use fuser::FileAttr;

use super::sys::SysResult;
use crate::idmap::{IdMap, OVERFLOW_ID};

/// The two maps of one mount; both identity when no user namespace is involved.
#[derive(Clone, Debug, Default)]
pub struct IdMaps {
    /// Container uid → host uid.
    pub uid: IdMap,
    /// Container gid → host gid.
    pub gid: IdMap,
}

/// Name of the file capability xattr.
pub const XATTR_CAPS: &[u8] = b"security.capability";
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

const CAP_REVISION_MASK: u32 = 0xff00_0000;
const CAP_REVISION_2: u32 = 0x0200_0000;
const CAP_REVISION_3: u32 = 0x0300_0000;
const CAP_SIZE_2: usize = 20;
const CAP_SIZE_3: usize = 24;

const ACL_VERSION: u32 = 2;
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

impl IdMaps {
    /// Nothing to translate (the common case, kept free of any per-request work).
    pub fn is_identity(&self) -> bool {
        self.uid.is_identity() && self.gid.is_identity()
    }

    /// Show on-disk (container) owners as host ids; unmapped ones as the overflow id, as the kernel does.
    pub fn present(&self, a: &mut FileAttr) {
        if self.is_identity() {
            return;
        }
        a.uid = self.uid.to_host(a.uid);
        a.gid = self.gid.to_host(a.gid);
    }

    /// The container ids a new file of a caller with host ids (uid, gid) gets. A caller the container
    /// cannot name (host root touching the mount from outside) creates files owned by the overflow id,
    /// as fuse-overlayfs does: visible as `nobody` inside, and never a host id leaking into a layer.
    pub fn creator(&self, uid: u32, gid: u32) -> (u32, u32) {
        if self.is_identity() {
            return (uid, gid);
        }
        (self.uid.to_inside(uid).unwrap_or(OVERFLOW_ID), self.gid.to_inside(gid).unwrap_or(OVERFLOW_ID))
    }

    /// The container uid of a chown target; EINVAL when it has none (the kernel refuses such a chown
    /// inside the namespace the same way).
    pub fn chown_uid(&self, host: u32) -> SysResult<u32> {
        self.uid.to_inside(host).ok_or(libc::EINVAL)
    }

    /// The container gid of a chown target; EINVAL when it has none.
    pub fn chown_gid(&self, host: u32) -> SysResult<u32> {
        self.gid.to_inside(host).ok_or(libc::EINVAL)
    }

    /// Does this xattr carry ids (so it needs [`IdMaps::xattr_to_disk`]/[`IdMaps::xattr_from_disk`])?
    pub fn translates(&self, name: &[u8]) -> bool {
        !self.is_identity() && (name == XATTR_CAPS || name == ACL_ACCESS || name == ACL_DEFAULT)
    }

    /// An xattr value the kernel sends (host ids) as it is stored (container ids). A v3 capability whose
    /// root is the container's root becomes v2, the form image layers carry. Ids without a container id
    /// are EINVAL.
    pub fn xattr_to_disk(&self, name: &[u8], value: &[u8]) -> SysResult<Vec<u8>> {
        if name == XATTR_CAPS {
            return self.caps(value, true);
        }
        self.acl(value, true)
    }

    /// A stored xattr value (container ids) as the kernel is shown it (host ids).
    pub fn xattr_from_disk(&self, name: &[u8], value: &[u8]) -> SysResult<Vec<u8>> {
        if name == XATTR_CAPS {
            return self.caps(value, false);
        }
        self.acl(value, false)
    }

    fn caps(&self, value: &[u8], to_disk: bool) -> SysResult<Vec<u8>> {
        let magic = le32(value, 0);
        let Some(magic) = magic else { return Ok(value.to_vec()) };
        if magic & CAP_REVISION_MASK != CAP_REVISION_3 || value.len() != CAP_SIZE_3 {
            // v1/v2 name no namespace root: they mean "root of the namespace the file lives in"
            return Ok(value.to_vec());
        }
        let rootid = le32(value, CAP_SIZE_2).ok_or(libc::EINVAL)?;
        let mut out = value.to_vec();
        if to_disk {
            let inside = self.uid.to_inside(rootid).ok_or(libc::EINVAL)?;
            if inside == 0 {
                out.truncate(CAP_SIZE_2);
                out[..4].copy_from_slice(&((magic & !CAP_REVISION_MASK) | CAP_REVISION_2).to_le_bytes());
            } else {
                out[CAP_SIZE_2..].copy_from_slice(&inside.to_le_bytes());
            }
        } else {
            out[CAP_SIZE_2..].copy_from_slice(&self.uid.to_host(rootid).to_le_bytes());
        }
        Ok(out)
    }

    fn acl(&self, value: &[u8], to_disk: bool) -> SysResult<Vec<u8>> {
        if le32(value, 0) != Some(ACL_VERSION) || !(value.len() - 4).is_multiple_of(8) {
            return Err(libc::EINVAL);
        }
        let mut out = value.to_vec();
        for off in (4..value.len()).step_by(8) {
            let tag = u16::from_le_bytes([value[off], value[off + 1]]);
            let map = match tag {
                ACL_USER => &self.uid,
                ACL_GROUP => &self.gid,
                _ => continue,
            };
            let id = le32(value, off + 4).ok_or(libc::EINVAL)?;
            let new = if to_disk { map.to_inside(id).ok_or(libc::EINVAL)? } else { map.to_host(id) };
            out[off + 4..off + 8].copy_from_slice(&new.to_le_bytes());
        }
        Ok(out)
    }
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps() -> IdMaps {
        IdMaps { uid: IdMap::parse("0:100000:65536").unwrap(), gid: IdMap::parse("0:200000:65536").unwrap() }
    }

    fn cap3(rootid: u32) -> Vec<u8> {
        let mut v = (CAP_REVISION_3 | 1).to_le_bytes().to_vec();
        v.extend_from_slice(&[0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&rootid.to_le_bytes());
        v
    }

    #[test]
    fn creator_and_chown() {
        let m = maps();
        assert_eq!(m.creator(100000, 200000), (0, 0));
        assert_eq!(m.creator(0, 0), (OVERFLOW_ID, OVERFLOW_ID));
        assert_eq!(m.chown_uid(101000), Ok(1000));
        assert_eq!(m.chown_uid(5), Err(libc::EINVAL));
        assert_eq!(IdMaps::default().creator(7, 8), (7, 8));
    }

    #[test]
    fn capability_rootid_round_trip() {
        let m = maps();
        // the container's root: stored as v2
        let disk = m.xattr_to_disk(XATTR_CAPS, &cap3(100000)).unwrap();
        assert_eq!(disk.len(), CAP_SIZE_2);
        assert_eq!(le32(&disk, 0), Some(CAP_REVISION_2 | 1));
        assert_eq!(m.xattr_from_disk(XATTR_CAPS, &disk).unwrap(), disk, "v2 shown as stored");
        // another container uid as root: v3 with the container id
        let disk = m.xattr_to_disk(XATTR_CAPS, &cap3(101000)).unwrap();
        assert_eq!(disk, cap3(1000));
        assert_eq!(m.xattr_from_disk(XATTR_CAPS, &disk).unwrap(), cap3(101000));
        assert_eq!(m.xattr_to_disk(XATTR_CAPS, &cap3(7)), Err(libc::EINVAL));
    }

    #[test]
    fn acl_entries() {
        let m = maps();
        let mut v = ACL_VERSION.to_le_bytes().to_vec();
        for (tag, id) in [(1u16, u32::MAX), (ACL_USER, 101000), (4, u32::MAX), (ACL_GROUP, 200005)] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&7u16.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let disk = m.xattr_to_disk(ACL_ACCESS, &v).unwrap();
        assert_eq!(le32(&disk, 4 + 8 + 4), Some(1000));
        assert_eq!(le32(&disk, 4 + 24 + 4), Some(5));
        assert_eq!(le32(&disk, 4 + 4), Some(u32::MAX), "owner entry untouched");
        assert_eq!(m.xattr_from_disk(ACL_ACCESS, &disk).unwrap(), v);
        assert_eq!(m.xattr_to_disk(ACL_ACCESS, &v[..7]), Err(libc::EINVAL));
        assert!(m.translates(ACL_DEFAULT) && !IdMaps::default().translates(ACL_DEFAULT));
    }
}
