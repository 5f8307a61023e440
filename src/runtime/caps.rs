//! Linux capabilities: the container gets docker's default 14 (adjusted by `--cap-add`/`--cap-drop`, all of
//! them with `--privileged`) in its bounding set. A root process keeps them permitted and effective across
//! exec; a non-root user's process ends with empty permitted/effective sets after exec (the kernel's rule
//! for a non-zero uid without file capabilities), and nothing is inheritable or ambient — as docker since
//! CVE-2022-24769.

use super::spec::ContainerSpec;
use super::RuntimeError;

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

/// Capability names by number (without the `CAP_` prefix), as `--cap-add` and `--cap-drop` spell them.
const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A capability named by a user: one capability, or `ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapName {
    /// Every capability the kernel knows.
    All,
    /// One capability by number.
    One(u32),
}

/// Parse a docker capability name (`NET_ADMIN`, `CAP_NET_ADMIN`, `net_admin`, `ALL`) so the CLI rejects a
/// typo instead of silently granting nothing.
pub fn parse_name(s: &str) -> Result<CapName, RuntimeError> {
    let up = s.trim().to_ascii_uppercase();
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    if bare == "ALL" {
        return Ok(CapName::All);
    }
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| CapName::One(i as u32))
        .ok_or_else(|| RuntimeError::Setup(format!("unknown capability: {s:?}")))
}

/// The canonical `CAP_…` name of a capability number, as stored in the container's spec.
pub fn name_of(cap: u32) -> String {
    NAMES.get(cap as usize).map(|n| format!("CAP_{n}")).unwrap_or_else(|| format!("CAP_{cap}"))
}

/// CAP_MKNOD.
const CAP_MKNOD: u32 = 27;

/// The capabilities a container gets: all with `--privileged`; otherwise docker's rule: with `--cap-add
/// ALL` everything minus `--cap-drop`, with `--cap-drop ALL` only `--cap-add`, else the default set plus
/// `--cap-add` minus `--cap-drop`. CAP_MKNOD is withheld unless `filters_devices` (from
/// [`super::cgroups::Cgroup::filters_devices`]: the v1 devices controller, or the eBPF device filter on v2,
/// limits the container to the allowlist): without a filter, a node the container makes would open the
/// host's device. Names that no longer parse (a hand-edited state.json) are ignored.
pub fn for_container(spec: &ContainerSpec, filters_devices: bool) -> Option<Vec<u32>> {
    if spec.privileged {
        return None;
    }
    let parse = |v: &[String]| v.iter().filter_map(|n| parse_name(n).ok()).collect::<Vec<_>>();
    let (add, drop) = (parse(&spec.cap_add), parse(&spec.cap_drop));
    let (add_all, drop_all) = (add.contains(&CapName::All), drop.contains(&CapName::All));
    let mut caps: Vec<u32> = if add_all {
        (0..=last_cap()).collect()
    } else if drop_all {
        Vec::new()
    } else {
        DEFAULT_CAPS.to_vec()
    };
    if !add_all {
        for n in &add {
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

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

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
    for c in 0..=last_cap() {
        if !keeps(c) {
            // SAFETY: prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                return Err(RuntimeError::Setup(format!(
                    "drop capability {}: {}",
                    name_of(c),
                    std::io::Error::last_os_error()
                )));
            }
        }
    }
    // SAFETY: prctl with integer arguments; failure only means no ambient support.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
    // SAFETY: prctl with integer arguments; the flag is cleared again by execve.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(RuntimeError::Setup(format!("keep capabilities: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// Second step, after the switch to the container's user: permitted and effective become `keep` (what we
/// still hold of it), inheritable empty. execve then gives root the bounding set and a non-root user
/// nothing.
pub fn finish(keep: Option<&[u32]>) -> Result<(), RuntimeError> {
    let keeps = |c: u32| keep.map(|k| k.contains(&c)).unwrap_or(true);
    // Never ask for more than we hold (rimg itself may run with a reduced set).
    let mut have = [CapData::default(); 2];
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // SAFETY: capget with a v3 header and room for two data structs.
    unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, have.as_mut_ptr()) };
    let held = |c: u32| have[(c / 32) as usize].permitted & (1 << (c % 32)) != 0;
    let mut data = [CapData::default(); 2];
    for c in 0..=last_cap() {
        if keeps(c) && held(c) {
            let (i, bit) = ((c / 32) as usize, 1u32 << (c % 32));
            data[i].effective |= bit;
            data[i].permitted |= bit;
        }
    }
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // SAFETY: capset with a v3 header and two data structs, as the ABI requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(RuntimeError::Setup(format!("capset: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(add: &[&str], drop: &[&str]) -> ContainerSpec {
        ContainerSpec {
            cap_add: add.iter().map(|s| s.to_string()).collect(),
            cap_drop: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("net_admin").unwrap(), CapName::One(12));
        assert_eq!(parse_name("CAP_SYS_ADMIN").unwrap(), CapName::One(21));
        assert_eq!(parse_name("all").unwrap(), CapName::All);
        assert!(parse_name("CAP_FLY").is_err());
        assert_eq!(name_of(21), "CAP_SYS_ADMIN");
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
