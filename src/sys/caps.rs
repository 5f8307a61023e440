//! The capability sets of the calling thread, by capability number (the kernel may know more than any
//! crate's enum of them: `/proc/sys/kernel/cap_last_cap` says how many).

use std::io;

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

/// A set of capabilities as a bit mask (bit N = capability N).
pub type CapMask = u64;

/// Drop capability `cap` from the bounding set (needs CAP_SETPCAP).
pub fn drop_from_bounding_set(cap: u32) -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The permitted set of the calling thread.
pub fn permitted() -> io::Result<CapMask> {
    let mut data = [CapData::default(); 2];
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // SAFETY: capget(2) with a v3 header and room for the two data structs v3 fills.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32)
}

/// Set the permitted and effective sets to `mask`, the inheritable set empty.
pub fn set_permitted_and_effective(mask: CapMask) -> io::Result<()> {
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData { effective: lo, permitted: lo, inheritable: 0 },
        CapData { effective: hi, permitted: hi, inheritable: 0 },
    ];
    let mut hdr = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // SAFETY: capset(2) with a v3 header and the two data structs the ABI requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
