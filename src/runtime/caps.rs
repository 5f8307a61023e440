//! Linux capabilities: the container gets docker's default 14 in its bounding, permitted, effective and
//! inheritable sets (all of them with `--privileged`), and none ambient.

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

/// CAP_MKNOD.
const CAP_MKNOD: u32 = 27;

/// The capabilities a container gets: all with `--privileged`; otherwise docker's default set, minus
/// CAP_MKNOD when no device cgroup guards device access (cgroup v2, where docker attaches an eBPF device
/// filter that rimg does not have): a node made there would open the host's device.
pub fn for_container(privileged: bool, device_cgroup: bool) -> Option<Vec<u32>> {
    if privileged {
        return None;
    }
    Some(DEFAULT_CAPS.iter().copied().filter(|&c| device_cgroup || c != CAP_MKNOD).collect())
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Reduce the calling process to `keep` (all capabilities when `None`): drop the rest from the bounding set,
/// set permitted/effective/inheritable to `keep`, clear the ambient set.
pub fn restrict(keep: Option<&[u32]>) -> Result<(), RuntimeError> {
    let last = last_cap();
    let keeps = |c: u32| keep.map(|k| k.contains(&c)).unwrap_or(true);
    for c in 0..=last {
        if !keeps(c) {
            // SAFETY: prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                return Err(RuntimeError::Setup(format!(
                    "drop capability {c}: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
    }
    // SAFETY: prctl with integer arguments; failure only means no ambient support.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
    // Never ask for more than we hold (rimg itself may run with a reduced set).
    let mut have = [CapData::default(); 2];
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // SAFETY: capget with a v3 header and room for two data structs.
    unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, have.as_mut_ptr()) };
    let held = |c: u32| have[(c / 32) as usize].permitted & (1 << (c % 32)) != 0;
    let mut data = [CapData::default(); 2];
    for c in 0..=last {
        if keeps(c) && held(c) {
            let (i, bit) = ((c / 32) as usize, 1u32 << (c % 32));
            data[i].effective |= bit;
            data[i].permitted |= bit;
            data[i].inheritable |= bit;
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
