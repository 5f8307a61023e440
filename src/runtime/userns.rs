//! User namespaces for containers (`--userns=auto`, `--uidmap`, `--gidmap`): the container's root is an
//! unprivileged host uid, so a process that escapes every other namespace is still nobody on the host.
//!
//! How the pieces fit: the monitor mounts the FUSE rootfs with the same maps (the overlay shows the image's
//! files under the mapped host ids and stores container ids in the upper directory, so `commit` and
//! `build` see ordinary image ownership); the container's init is cloned into a new user namespace
//! together with its other namespaces, so they are owned by it (container root can bind low ports, set
//! the hostname of its own uts namespace, mount /proc of its own pid namespace); the monitor writes the
//! maps before releasing it.

use super::spec::UserNamespace;
use super::RuntimeError;
use crate::idmap::{IdMap, IdRange};
use std::path::Path;

/// Ids a container gets with `--userns=auto` when /etc/subuid has no entry for it: 65536 ids, the size
/// docker's `userns-remap` and podman use, starting at the customary first subordinate id.
const DEFAULT_RANGE: IdRange = IdRange { inside: 0, outside: 100_000, count: 65_536 };

/// The users whose subordinate ranges `--userns=auto` takes, in order: podman's convention, then docker's
/// `userns-remap=default` user, then root's own.
const SUBID_OWNERS: &[&str] = &["containers", "dockremap", "root"];

/// The maps for `--userns=auto`: the first range of at least 65536 ids that /etc/subuid (and /etc/subgid)
/// give to one of [`SUBID_OWNERS`], or 100000:65536. All such containers share the range, as with
/// docker's `userns-remap`: they are isolated from the host, not from each other by uid.
pub fn auto() -> Result<UserNamespace, RuntimeError> {
    let uid = subid_range(Path::new("/etc/subuid"))?.unwrap_or(DEFAULT_RANGE);
    let gid = subid_range(Path::new("/etc/subgid"))?.unwrap_or(DEFAULT_RANGE);
    let map = |r: IdRange| {
        IdMap::from_ranges(vec![r]).map_err(|e| RuntimeError::Invalid(format!("--userns=auto: {e}")))
    };
    Ok(UserNamespace { uid_map: map(uid)?, gid_map: map(gid)? })
}

fn subid_range(path: &Path) -> Result<Option<IdRange>, RuntimeError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RuntimeError::os(format!("read {}", path.display()), e)),
    };
    Ok(pick_subid(&text))
}

/// The first usable `owner:start:count` line of a subuid/subgid file, by [`SUBID_OWNERS`] order.
fn pick_subid(text: &str) -> Option<IdRange> {
    let entries: Vec<(&str, u32, u32)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (owner, start, count) = (f.next()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
            Some((owner, start, count))
        })
        .collect();
    SUBID_OWNERS.iter().find_map(|who| {
        entries
            .iter()
            .find(|(o, start, count)| o == who && *count >= DEFAULT_RANGE.count && *start > 0)
            .map(|(_, start, _)| IdRange { inside: 0, outside: *start, count: DEFAULT_RANGE.count })
    })
}

/// Maps from `--uidmap`/`--gidmap` values (podman's `CONTAINER:HOST:SIZE`, repeatable); a missing gid
/// map copies the uid map, as podman does.
pub fn from_flags(uidmap: &[String], gidmap: &[String]) -> Result<UserNamespace, RuntimeError> {
    let parse = |flag: &str, v: &[String]| {
        IdMap::parse(&v.join(",")).map_err(|e| RuntimeError::Invalid(format!("--{flag}: {e}")))
    };
    let uid_map = if uidmap.is_empty() { parse("gidmap", gidmap)? } else { parse("uidmap", uidmap)? };
    let gid_map = if gidmap.is_empty() { uid_map.clone() } else { parse("gidmap", gidmap)? };
    for (what, m) in [("uid", &uid_map), ("gid", &gid_map)] {
        if !m.ranges().iter().any(|r| r.inside == 0) {
            return Err(RuntimeError::Invalid(format!(
                "--{what}map must map container {what} 0 (the container's root)"
            )));
        }
    }
    Ok(UserNamespace { uid_map, gid_map })
}

/// Write the maps of the process `pid` (freshly cloned into a new user namespace and waiting). As root in
/// the parent namespace, rimg may map any range and keeps `setgroups` allowed.
pub fn write_maps(pid: i32, ns: &UserNamespace) -> Result<(), RuntimeError> {
    for (file, map) in [("uid_map", &ns.uid_map), ("gid_map", &ns.gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, map.proc_text())
            .map_err(|e| RuntimeError::os(format!("write {path} ({:?})", map.proc_text()), e))?;
    }
    Ok(())
}

/// In the cloned init, once the maps are written: become the namespace's root (all capabilities in it),
/// with no supplementary groups from the host.
pub fn become_root() -> Result<(), RuntimeError> {
    let root_g = nix::unistd::Gid::from_raw(0);
    let root_u = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g)
        .map_err(|e| RuntimeError::os("setgid 0 in the user namespace", e))?;
    nix::unistd::setgroups(&[]).map_err(|e| RuntimeError::os("setgroups in the user namespace", e))?;
    nix::unistd::setresuid(root_u, root_u, root_u)
        .map_err(|e| RuntimeError::os("setuid 0 in the user namespace", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_owner_order_and_size() {
        let t = "alice:100000:65536\nroot:300000:65536\ncontainers:500000:1000\ndockremap:700000:65536\n";
        // containers' range is too small; dockremap comes before root.
        assert_eq!(pick_subid(t), Some(IdRange { inside: 0, outside: 700000, count: 65536 }));
        assert_eq!(pick_subid("alice:100000:65536\n"), None);
        assert_eq!(pick_subid("garbage\nroot:x:1\n"), None);
    }

    #[test]
    fn flags_copy_uid_map_to_gids_and_need_root() {
        let ns = from_flags(&["0:200000:1000".into()], &[]).unwrap();
        assert_eq!(ns.gid_map, ns.uid_map);
        assert_eq!(ns.uid_map.to_host(0), 200000);
        assert!(from_flags(&["1:200000:1000".into()], &[]).is_err());
        assert!(from_flags(&["0:1:".into()], &[]).is_err());
    }
}
