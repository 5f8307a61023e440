//! The device allowlist of a container: one rule table, enforced by the v1 `devices` controller or, on
//! cgroup v2 (which has no devices controller), by a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the
//! container's cgroup directory, as runc does.
//!
//! The kernel runs the program on every `mknod(2)` and every open of a device node by a task of the cgroup
//! (`devcgroup_check_permission`, before the driver sees the open); it returns 1 to allow and 0 to deny,
//! which the caller sees as `EPERM`. On hybrid hosts the program of the task's cgroup2 cgroup and the v1
//! controller both apply.
//!
//! The program is generated here by a hand-written encoder rather than with a BPF crate: aya and
//! libbpf-rs load ELF objects compiled by clang (not installed here, and a build-time C toolchain for a
//! dozen instructions), or pull in a large library for loading alone. The program needs six opcodes —
//! 32-bit loads from the context, `and`/`rsh`/`mov`, `jne` and `exit` — a handful of instructions per
//! rule, and two bpf(2) calls to load and attach, all of which fit in this file and are checked below by
//! an interpreter test and by the kernel's verifier in a real load.
//!
//! Program layout: a prologue splits `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! into r2 = device type (`access_type & 0xffff`), r3 = requested access (`access_type >> 16`), r4 = major,
//! r5 = minor. Each rule is a block of checks, each a `jne` to the next block on mismatch, ending in
//! `r0 = 1; exit`. After the last block: `r0 = 0; exit` (default deny).

use super::RuntimeError;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Device types a rule matches (the `c`/`b`/`a` of the v1 syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    /// Block devices (`b`).
    Block,
    /// Character devices (`c`).
    Char,
    /// Both (`a`).
    All,
}

/// mknod(2) of the device (`m`); the bit value is the kernel's `BPF_DEVCG_ACC_MKNOD`.
pub const ACC_MKNOD: u8 = 1;
/// Open for reading (`r`), `BPF_DEVCG_ACC_READ`.
pub const ACC_READ: u8 = 2;
/// Open for writing (`w`), `BPF_DEVCG_ACC_WRITE`.
pub const ACC_WRITE: u8 = 4;
const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

const DEV_BLOCK: i32 = 1; // BPF_DEVCG_DEV_BLOCK
const DEV_CHAR: i32 = 2; // BPF_DEVCG_DEV_CHAR

/// One allow rule: a request matches when its type, major and minor match (`None` = any) and the access
/// it asks for is a subset of `access` — the semantics of a v1 `devices.allow` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Device type.
    pub kind: DevType,
    /// Major number, `None` for `*`.
    pub major: Option<u32>,
    /// Minor number, `None` for `*`.
    pub minor: Option<u32>,
    /// `ACC_*` bits granted.
    pub access: u8,
}

impl DeviceRule {
    const fn new(kind: DevType, major: Option<u32>, minor: Option<u32>, access: u8) -> DeviceRule {
        DeviceRule { kind, major, minor, access }
    }

    /// Does this rule allow `access` to the device `kind major:minor` (`kind` is Block or Char)?
    pub fn allows(&self, kind: DevType, major: u32, minor: u32, access: u8) -> bool {
        (self.kind == DevType::All || self.kind == kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && access & !self.access == 0
    }
}

/// The v1 `devices.allow` syntax: `c 1:3 rwm`, `b *:* m`.
impl std::fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            DevType::Block => 'b',
            DevType::Char => 'c',
            DevType::All => 'a',
        };
        let num = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_else(|| "*".into());
        let mut acc = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        write!(f, "{kind} {}:{} {acc}", num(self.major), num(self.minor))
    }
}

const RWM: u8 = ACC_ALL;

/// Device access a non-privileged container gets, on v1 and v2 alike: the nodes rimg creates in /dev
/// (null, zero, full, random, urandom, tty), the console and ptys, /dev/net/tun, and mknod (but not use) of
/// any device — docker's default list plus runc's /dev/console. Everything else is denied.
pub const DEFAULT_RULES: &[DeviceRule] = &[
    DeviceRule::new(DevType::Char, None, None, ACC_MKNOD),
    DeviceRule::new(DevType::Block, None, None, ACC_MKNOD),
    DeviceRule::new(DevType::Char, Some(1), Some(3), RWM), // null
    DeviceRule::new(DevType::Char, Some(1), Some(5), RWM), // zero
    DeviceRule::new(DevType::Char, Some(1), Some(7), RWM), // full
    DeviceRule::new(DevType::Char, Some(1), Some(8), RWM), // random
    DeviceRule::new(DevType::Char, Some(1), Some(9), RWM), // urandom
    DeviceRule::new(DevType::Char, Some(5), Some(0), RWM), // tty
    DeviceRule::new(DevType::Char, Some(5), Some(1), RWM), // console
    DeviceRule::new(DevType::Char, Some(5), Some(2), RWM), // ptmx
    DeviceRule::new(DevType::Char, Some(136), None, RWM),  // pts/*
    DeviceRule::new(DevType::Char, Some(10), Some(200), RWM), // net/tun
];

pub use crate::sys::bpf::Insn;

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
const BPF_LDX: u8 = 0x01;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_AND: u8 = 0x50;
const BPF_RSH: u8 = 0x70;
const BPF_MOV: u8 = 0xb0;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

impl Insn {
    /// `dst = *(u32 *)(src + off)`
    fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
    }
    /// `dst = (u32)src`
    fn mov32_reg(dst: u8, src: u8) -> Insn {
        Insn::new(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
    }
    /// `dst = imm` (64-bit)
    fn mov64_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
    }
    /// `dst = (u32)(dst & imm)`
    fn and32_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_AND | BPF_K, dst, 0, 0, imm)
    }
    /// `dst = (u32)(dst >> imm)`
    fn rsh32_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_RSH | BPF_K, dst, 0, 0, imm)
    }
    /// `if dst != imm goto +off`
    fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JNE | BPF_K, dst, 0, off, imm)
    }
    /// `if dst != src goto +off`
    fn jne_reg(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JNE | BPF_X, dst, src, off, 0)
    }
    fn exit() -> Insn {
        Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
    }
}

/// A check of one rule before its jump offset is known.
enum Check {
    Imm(u8, i32),
    Access(i32),
}

fn imm_of(n: u32, what: &str, rule: &DeviceRule) -> Result<i32, RuntimeError> {
    // Registers hold the zero-extended u32 while a jump immediate is sign-extended: only values below
    // 2^31 compare correctly (the kernel's majors and minors are 12 and 20 bits).
    i32::try_from(n)
        .map_err(|_| RuntimeError::CgroupUnsupported(format!("device rule {rule}: {what} {n} out of range")))
}

/// Translate allow rules into a program that returns 1 when any rule allows the request and 0 otherwise.
/// Rules after one that matches everything would be unreachable (which the verifier rejects), so the
/// program ends there.
pub fn encode(rules: &[DeviceRule]) -> Result<Vec<Insn>, RuntimeError> {
    let mut prog = vec![
        Insn::ldx_w(R2, R1, 0), // access_type
        Insn::mov32_reg(R3, R2),
        Insn::and32_imm(R2, 0xffff), // device type
        Insn::rsh32_imm(R3, 16),     // requested access
        Insn::ldx_w(R4, R1, 4),      // major
        Insn::ldx_w(R5, R1, 8),      // minor
    ];
    for rule in rules {
        let mut checks = Vec::new();
        match rule.kind {
            DevType::Block => checks.push(Check::Imm(R2, DEV_BLOCK)),
            DevType::Char => checks.push(Check::Imm(R2, DEV_CHAR)),
            DevType::All => {}
        }
        let access = rule.access & ACC_ALL;
        if access != ACC_ALL {
            checks.push(Check::Access(i32::from(access)));
        }
        if let Some(m) = rule.major {
            checks.push(Check::Imm(R4, imm_of(m, "major", rule)?));
        }
        if let Some(m) = rule.minor {
            checks.push(Check::Imm(R5, imm_of(m, "minor", rule)?));
        }
        let matches_all = checks.is_empty();
        // Length of the block: the checks (an access check is three instructions) plus `r0 = 1; exit`.
        let len: usize =
            checks.iter().map(|c| if matches!(c, Check::Access(_)) { 3 } else { 1 }).sum::<usize>() + 2;
        let mut pos = 0usize;
        for c in checks {
            match c {
                Check::Imm(reg, imm) => {
                    pos += 1;
                    prog.push(Insn::jne_imm(reg, imm, (len - pos) as i16));
                }
                Check::Access(bits) => {
                    // Requested access must be a subset: (req & allowed) == req.
                    prog.push(Insn::mov32_reg(R1, R3));
                    prog.push(Insn::and32_imm(R1, bits));
                    pos += 3;
                    prog.push(Insn::jne_reg(R1, R3, (len - pos) as i16));
                }
            }
        }
        prog.push(Insn::mov64_imm(R0, 1));
        prog.push(Insn::exit());
        if matches_all {
            return Ok(prog);
        }
    }
    prog.push(Insn::mov64_imm(R0, 0));
    prog.push(Insn::exit());
    Ok(prog)
}

fn load_err(e: std::io::Error, log: &str) -> RuntimeError {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => " (loading BPF programs needs CAP_BPF or CAP_SYS_ADMIN)",
        Some(libc::ENOSYS) => " (kernel without bpf(2))",
        _ => "",
    };
    let log = log.trim();
    let tail: String = if log.len() > 2000 {
        let mut start = log.len() - 2000;
        while !log.is_char_boundary(start) {
            start += 1;
        }
        format!("…{}", &log[start..])
    } else {
        log.to_string()
    };
    if tail.is_empty() {
        RuntimeError::Cgroup { context: format!("load eBPF device filter{hint}"), source: e }
    } else {
        RuntimeError::Cgroup {
            context: format!("load eBPF device filter{hint} (verifier says: {tail})"),
            source: e,
        }
    }
}

/// Load `prog` as a cgroup device program. A first attempt runs without a verifier log (cheap); if the
/// kernel refuses the program, a second attempt collects the log so the error says why.
pub fn load(prog: &[Insn]) -> Result<OwnedFd, RuntimeError> {
    let name = "rimg_devices";
    match crate::sys::bpf::load_device_program(prog, name, None) {
        Ok(fd) => Ok(fd),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EACCES)) => {
            let mut log = vec![0u8; 256 * 1024];
            crate::sys::bpf::load_device_program(prog, name, Some(&mut log)).map_err(|e| {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                load_err(e, &String::from_utf8_lossy(&log[..end]))
            })
        }
        Err(e) => Err(load_err(e, "")),
    }
}

fn open_dir(dir: &Path) -> Result<std::fs::File, RuntimeError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| RuntimeError::Cgroup { context: format!("open {}", dir.display()), source: e })
}

/// Build, load and attach the filter for `rules` to the cgroup2 directory `dir`, with `BPF_F_ALLOW_MULTI`
/// so a filter an outer manager attached to an ancestor still applies (every program must allow). The
/// program descriptor is closed on return: the attachment holds its own reference to the program until
/// the cgroup is removed.
pub fn attach(dir: &Path, rules: &[DeviceRule]) -> Result<(), RuntimeError> {
    let prog = load(&encode(rules)?)?;
    let cg = open_dir(dir)?;
    crate::sys::bpf::attach_device_program(&cg, &prog).map_err(|e| RuntimeError::Cgroup {
        context: format!("attach eBPF device filter to {}", dir.display()),
        source: e,
    })?;
    Ok(())
}

/// How many device programs are attached directly to the cgroup2 directory `dir` (not inherited), so a
/// later `rimg` (exec) can tell whether a container's cgroup filters devices.
pub fn attached(dir: &Path) -> Result<u32, RuntimeError> {
    let cg = open_dir(dir)?;
    crate::sys::bpf::device_programs_attached(&cg).map_err(|e| RuntimeError::Cgroup {
        context: format!("query device filters of {}", dir.display()),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `prog` the way the kernel would for a request: a minimal interpreter of the opcodes the encoder
    /// emits (anything else fails the test).
    fn run(prog: &[Insn], kind: DevType, major: u32, minor: u32, access: u8) -> u64 {
        let ty = match kind {
            DevType::Block => 1u32,
            DevType::Char => 2,
            DevType::All => panic!("a request has one type"),
        };
        let ctx = [(u32::from(access) << 16) | ty, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = prog[pc];
            let (d, s) = (i.dst() as usize, i.src() as usize);
            pc += 1;
            match i.code {
                0x61 => {
                    assert_eq!(s, 1, "loads only from the context");
                    r[d] = u64::from(ctx[(i.off / 4) as usize]);
                }
                0xbc => r[d] = r[s] & 0xffff_ffff,
                0xb7 => r[d] = i.imm as i64 as u64,
                0x54 => r[d] = (r[d] & (i.imm as u32 as u64)) & 0xffff_ffff,
                0x74 => r[d] = (r[d] & 0xffff_ffff) >> i.imm,
                0x55 => {
                    if r[d] != i.imm as i64 as u64 {
                        pc += i.off as usize
                    }
                }
                0x5d => {
                    if r[d] != r[s] {
                        pc += i.off as usize
                    }
                }
                0x95 => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
        panic!("program did not exit");
    }

    #[test]
    fn default_rules_encode_to_the_expected_blocks() {
        let p = encode(DEFAULT_RULES).unwrap();
        // prologue 6; "c *:* m" and "b *:* m": type + access (3) + 2 = 6 each; nine "c M:m rwm": type,
        // major, minor + 2 = 5 each; "c 136:* rwm": 4; deny 2.
        assert_eq!(p.len(), 6 + 6 + 6 + 9 * 5 + 4 + 2);
        // First block: jne type skips the rest of the block (5 more), then the access check's jne skips 2.
        assert_eq!((p[6].code, p[6].imm, p[6].off), (0x55, 2, 5));
        assert_eq!((p[9].code, p[9].off, p[9].dst(), p[9].src()), (0x5d, 2, 1, 3));
        assert_eq!((p[10].code, p[10].imm, p[11].code), (0xb7, 1, 0x95));
        // "c 1:3 rwm": type, major, minor with offsets 4, 3, 2 → to the next block.
        let offs: Vec<i16> = p[18..21].iter().map(|i| i.off).collect();
        assert_eq!(offs, [4, 3, 2]);
        assert_eq!((p[p.len() - 2].code, p[p.len() - 2].imm, p[p.len() - 1].code), (0xb7, 0, 0x95));
    }

    #[test]
    fn program_decides_like_the_rules() {
        let p = encode(DEFAULT_RULES).unwrap();
        let mut checked = 0;
        for kind in [DevType::Block, DevType::Char] {
            for major in [0, 1, 5, 7, 8, 10, 136, 4095] {
                for minor in [0, 1, 2, 3, 5, 7, 8, 9, 11, 200, 229, 1 << 19] {
                    for access in 1..=7u8 {
                        let want = DEFAULT_RULES.iter().any(|r| r.allows(kind, major, minor, access));
                        assert_eq!(
                            run(&p, kind, major, minor, access) == 1,
                            want,
                            "{kind:?} {major}:{minor} access {access}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000);
        assert_eq!(run(&p, DevType::Char, 1, 3, ACC_READ | ACC_WRITE), 1);
        assert_eq!(run(&p, DevType::Block, 8, 0, ACC_MKNOD), 1);
        assert_eq!(run(&p, DevType::Block, 8, 0, ACC_READ), 0);
        assert_eq!(run(&p, DevType::Char, 1, 11, ACC_WRITE), 0);
        assert_eq!(run(&p, DevType::Char, 136, 7, ACC_READ), 1);
    }

    #[test]
    fn a_match_all_rule_ends_the_program_and_empty_denies() {
        let all = DeviceRule::new(DevType::All, None, None, RWM);
        let p = encode(&[all, DEFAULT_RULES[2]]).unwrap();
        assert_eq!(p.len(), 6 + 2);
        assert_eq!(run(&p, DevType::Block, 8, 0, RWM), 1);
        let p = encode(&[]).unwrap();
        assert_eq!(p.len(), 8);
        assert_eq!(run(&p, DevType::Char, 1, 3, ACC_READ), 0);
        let big = DeviceRule::new(DevType::Char, Some(u32::MAX), None, RWM);
        assert!(encode(&[big]).is_err());
    }

    #[test]
    fn a_refused_program_is_explained_by_the_verifier_log() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to load BPF programs");
            return;
        }
        // exit without setting r0.
        let err = load(&[Insn::exit()]).unwrap_err().to_string();
        assert!(err.contains("verifier says") && err.contains("R0"), "{err}");
    }

    #[test]
    fn rules_print_in_v1_syntax() {
        let lines: Vec<String> = DEFAULT_RULES.iter().map(|r| r.to_string()).collect();
        assert_eq!(lines[0], "c *:* m");
        assert_eq!(lines[1], "b *:* m");
        assert_eq!(lines[2], "c 1:3 rwm");
        assert!(lines.contains(&"c 136:* rwm".to_string()));
    }

    /// A cgroup2 mount point of this host (pure v2 or hybrid), if any.
    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        info.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4).map(Into::into))?
        })
    }

    /// Removes the test cgroup even when an assertion fails.
    struct TempCgroup(std::path::PathBuf);
    impl Drop for TempCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    #[test]
    fn the_kernel_accepts_the_program_and_keeps_it_after_the_fd_is_closed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to load BPF programs");
            return;
        }
        let Some(mnt) = cgroup2_mount() else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        let cg = TempCgroup(mnt.join(format!("rimg-devfilter-test-{}", std::process::id())));
        std::fs::create_dir(&cg.0).unwrap();
        assert_eq!(attached(&cg.0).unwrap(), 0);
        attach(&cg.0, DEFAULT_RULES).unwrap();
        // attach() has closed the program's fd: the attachment alone keeps it.
        assert_eq!(attached(&cg.0).unwrap(), 1);
        attach(&cg.0, DEFAULT_RULES).unwrap();
        assert_eq!(attached(&cg.0).unwrap(), 2, "BPF_F_ALLOW_MULTI stacks programs");
    }
}
