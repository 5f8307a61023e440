//! Linux capabilities: the container gets docker's default 14 (adjusted by `--cap-add`/`--cap-drop`, all of
//! them with `--privileged`) in its bounding set. A root process keeps them permitted and effective across
//! exec; a non-root user's process ends with empty permitted/effective sets after exec (the kernel's rule
//! for a non-zero uid without file capabilities), and nothing is inheritable or ambient — as docker since
//! CVE-2022-24769.

use super::capability::CapName;
use super::spec::ContainerSpec;
use super::RuntimeError;

/// CAP_MKNOD.
const CAP_MKNOD: u32 = 27;

/// docker's default capability set, by number.
pub const DEFAULT_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// The capabilities a container gets: all with `--privileged`; otherwise docker's rule: with `--cap-add
/// ALL` everything minus `--cap-drop`, with `--cap-drop ALL` only `--cap-add`, else the default set plus
/// `--cap-add` minus `--cap-drop`. CAP_MKNOD is withheld unless `filters_devices` (from
/// [`super::cgroups::Cgroup::filters_devices`]: the v1 devices controller, or the eBPF device filter on v2,
/// limits the container to the allowlist): without a filter, a node the container makes would open the
/// host's device.
pub fn for_container(spec: &ContainerSpec, filters_devices: bool) -> Option<Vec<u32>> {
    if spec.privileged {
        return None;
    }
    let (add, drop) = (&spec.cap_add, &spec.cap_drop);
    let (add_all, drop_all) = (add.contains(&CapName::All), drop.contains(&CapName::All));
    let mut caps: Vec<u32> = if add_all {
        (0..=last_cap()).collect()
    } else if drop_all {
        Vec::new()
    } else {
        DEFAULT_CAPS.to_vec()
    };
    if !add_all {
        for n in add {
            if let CapName::One(c) = n {
                if !caps.contains(c) {
                    caps.push(*c);
                }
            }
        }
    }
    if !drop_all {
        caps.retain(|c| !drop.contains(&CapName::One(*c)));
    }
    caps.retain(|&c| filters_devices || c != CAP_MKNOD);
    caps.sort_unstable();
    Some(caps)
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// First step, while still uid 0 with CAP_SETPCAP: drop everything not in `keep` (all kept when `None`)
/// from the bounding set, clear the ambient set, and ask the kernel to keep the permitted set across the
/// coming setuid (so `--cap-drop SETUID` cannot stop rimg from switching to the container's user).
pub fn bound(keep: Option<&[u32]>) -> Result<(), RuntimeError> {
    let keeps = |c: u32| keep.map(|k| k.contains(&c)).unwrap_or(true);
    for c in (0..=last_cap()).filter(|&c| !keeps(c)) {
        crate::sys::caps::drop_from_bounding_set(c)
            .map_err(|e| RuntimeError::os(format!("drop capability {}", super::capability::name_of(c)), e))?;
    }
    // Failure only means a kernel without ambient capabilities.
    let _ = rustix::thread::clear_ambient_capability_set();
    // Cleared again by execve.
    rustix::thread::set_keep_capabilities(true).map_err(|e| RuntimeError::os("keep capabilities", e))
}

/// Second step, after the switch to the container's user: permitted and effective become `keep` (what we
/// still hold of it), inheritable empty. execve then gives root the bounding set and a non-root user
/// nothing.
pub fn finish(keep: Option<&[u32]>) -> Result<(), RuntimeError> {
    let wanted = match keep {
        Some(k) => k.iter().filter(|&&c| c < 64).fold(0u64, |m, &c| m | 1 << c),
        None => u64::MAX,
    };
    // Never ask for more than we hold (rimg itself may run with a reduced set).
    let held = crate::sys::caps::permitted().map_err(|e| RuntimeError::os("capget", e))?;
    crate::sys::caps::set_permitted_and_effective(wanted & held).map_err(|e| RuntimeError::os("capset", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(add: &[&str], drop: &[&str]) -> ContainerSpec {
        ContainerSpec {
            cap_add: add.iter().map(|s| s.parse().unwrap()).collect(),
            cap_drop: drop.iter().map(|s| s.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn docker_rules() {
        let d = for_container(&spec(&[], &[]), true).unwrap();
        assert_eq!(d, DEFAULT_CAPS);
        let c = for_container(&spec(&["NET_ADMIN"], &["CHOWN"]), true).unwrap();
        assert!(c.contains(&12) && !c.contains(&0) && c.len() == DEFAULT_CAPS.len());
        assert_eq!(for_container(&spec(&["KILL"], &["ALL"]), true).unwrap(), vec![5]);
        let all = for_container(&spec(&["ALL"], &["SYS_ADMIN"]), true).unwrap();
        assert!(all.contains(&16) && !all.contains(&21));
        // No device filter: CAP_MKNOD is withheld, even when asked for; privileged gets everything.
        assert!(!for_container(&spec(&[], &[]), false).unwrap().contains(&CAP_MKNOD));
        assert!(!for_container(&spec(&["MKNOD"], &[]), false).unwrap().contains(&CAP_MKNOD));
        assert!(for_container(&spec(&[], &[]), true).unwrap().contains(&CAP_MKNOD));
        let privileged = ContainerSpec { privileged: true, ..Default::default() };
        assert_eq!(for_container(&privileged, false), None);
    }
}
