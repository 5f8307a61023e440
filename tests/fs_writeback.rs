//! The FUSE writeback cache (passthrough off, `writeback` on): the kernel caches writes, owns the size and
//! times of regular files while it has dirty pages, reads through handles opened write-only and computes
//! O_APPEND offsets itself. Each scenario runs on kernel overlayfs and on rimg over identical lowers; both
//! must see the same, end with the same upper directory, and see the concrete values asserted here.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use common::fs::*;
use rimg::fs::MountOptions;

/// A scenario runs on a mounted overlay (mount point, upper directory) and reports what it saw.
type Scenario = fn(&Path, &Path) -> Vec<String>;

/// Bytes of the multi-page lower file `big`: 10000 bytes, position-dependent.
fn big_pattern() -> Vec<u8> {
    (0..10000u32).map(|i| b'a' + (i % 23) as u8).collect()
}

fn build_lower(l: &Path) {
    std::fs::write(l.join("big"), big_pattern()).expect("big");
    // long ago, so that any write moves it
    set_mtime(&l.join("big"), 500_000_000, 0);
    write(&l.join("log"), "start\n");
    // a file its owner may write but not read: the kernel still reads its pages to fill partly
    // written ones, through the handle the caller opened write-only
    let wo = l.join("wo");
    std::fs::write(&wo, big_pattern()).expect("wo");
    chown(&wo, USER.0, USER.1);
    chmod(&wo, 0o222);
    for (name, mode) in [("suid", 0o4777), ("sgid_x", 0o2777), ("suid_cached", 0o4777), ("by_root", 0o4777)] {
        let p = l.join(name);
        write(&p, "#!/bin/sh\n");
        chown(&p, USER.0, USER.1);
        chmod(&p, mode);
    }
}

/// rimg as the writeback cache serves it.
fn writeback_options() -> MountOptions {
    let o = MountOptions { passthrough: false, ..kernel_like_options() };
    assert!(o.writeback, "writeback is on by default");
    o
}

/// Run `scenario` on kernel overlayfs and on rimg with `opts`; both must report the same and leave
/// upper directories with the same names, modes, sizes and contents.
fn on_both_with(scenario: Scenario, opts: &MountOptions) -> Vec<String> {
    let s = Scratch::new();
    let mut results = Vec::new();
    for which in ["kernel", "rimg"] {
        let l = s.path(&format!("{which}-l"));
        build_lower(&l);
        let (u, w, m) =
            (s.path(&format!("{which}-u")), s.path(&format!("{which}-w")), s.path(&format!("{which}-m")));
        let lowers = vec![l];
        let seen = if which == "kernel" {
            let _k = kernel_mount(&lowers, Some((&u, &w)), &m, "").expect("kernel overlayfs");
            scenario(&m, &u)
        } else {
            let _r = rimg_mount(&lowers, Some((&u, &w)), &m, opts);
            scenario(&m, &u)
        };
        let mut upper: Vec<String> = std::fs::read_dir(&u)
            .expect("upper")
            .map(|e| {
                let e = e.expect("entry");
                let md = e.metadata().expect("stat");
                let data = std::fs::read(e.path()).unwrap_or_default();
                format!(
                    "{} {:o} {} {:x}",
                    e.file_name().to_string_lossy(),
                    md.mode() & 0o7777,
                    md.len(),
                    data.iter().fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(*b as u64))
                )
            })
            .collect();
        upper.sort();
        results.push((seen, upper));
    }
    assert_eq!(results[0], results[1], "kernel overlayfs (left) and rimg (right) differ");
    results.remove(0).0
}

fn on_both(scenario: Scenario) -> Vec<String> {
    on_both_with(scenario, &writeback_options())
}

fn read_from(f: &mut std::fs::File) -> Vec<u8> {
    let mut v = Vec::new();
    f.seek(SeekFrom::Start(0)).expect("seek");
    f.read_to_end(&mut v).expect("read");
    v
}

fn mode_of(p: &Path) -> String {
    format!("{:o}", std::fs::metadata(p).expect("stat").mode() & 0o7777)
}

/// Small writes at unaligned offsets (inside pages, across a page boundary, past the end).
const PATCHES: &[(u64, &[u8])] = &[(3, b"XY"), (4095, b"ab"), (4097, b"Q"), (9998, b"END!"), (12001, b"far")];

fn patched(mut base: Vec<u8>) -> Vec<u8> {
    for (off, data) in PATCHES {
        let end = *off as usize + data.len();
        if base.len() < end {
            base.resize(end, 0);
        }
        base[*off as usize..end].copy_from_slice(data);
    }
    base
}

fn write_patches(f: &std::fs::File) {
    use std::os::unix::fs::FileExt;
    for (off, data) in PATCHES {
        f.write_all_at(data, *off).expect("pwrite");
    }
}

fn digest(v: &[u8]) -> String {
    format!("{} {:x}", v.len(), v.iter().fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(*b as u64)))
}

/// O_WRONLY opens of lower files (copy-ups), unaligned writes, read back through new descriptors.
fn wronly_unaligned(m: &Path, _u: &Path) -> Vec<String> {
    let big = m.join("big");
    let f = std::fs::OpenOptions::new().write(true).open(&big).expect("O_WRONLY");
    write_patches(&f);
    let mut r = std::fs::File::open(&big).expect("reader");
    let while_open = read_from(&mut r);
    drop(f);
    let after = std::fs::read(&big).expect("read back");
    // a file uid 1000 may only write: its pages are read through its write-only handle
    let wo = m.join("wo");
    let wo2 = wo.clone();
    as_user(USER.0, USER.1, move || {
        let f = std::fs::OpenOptions::new().write(true).open(&wo2).expect("O_WRONLY by its owner");
        write_patches(&f);
        assert!(std::fs::File::open(&wo2).is_err(), "mode 0222: not readable by its owner");
    });
    let wo_after = std::fs::read(&wo).expect("read back as root");
    vec![digest(&while_open), digest(&after), digest(&wo_after), String::from_utf8_lossy(&after[..8]).into()]
}

#[test]
fn write_only_opens_and_unaligned_writes() {
    let seen = on_both(wronly_unaligned);
    let want = digest(&patched(big_pattern()));
    assert_eq!(seen, vec![want.clone(), want.clone(), want, "abcXYfgh".to_string()]);
}

/// Two O_APPEND descriptors of one lower file, interleaved.
fn append_two_fds(m: &Path, _u: &Path) -> Vec<String> {
    let p = m.join("log");
    let mut a = std::fs::OpenOptions::new().append(true).open(&p).expect("append a");
    let mut b = std::fs::OpenOptions::new().append(true).open(&p).expect("append b");
    let mut out = Vec::new();
    for i in 0..3 {
        a.write_all(format!("a{i}\n").as_bytes()).expect("write a");
        b.write_all(format!("bb{i}\n").as_bytes()).expect("write b");
        out.push(format!("{} {}", a.stream_position().expect("pos a"), b.stream_position().expect("pos b")));
    }
    out.push(std::fs::read_to_string(&p).expect("read while open"));
    drop(a);
    drop(b);
    out.push(std::fs::read_to_string(&p).expect("read back"));
    out.push(std::fs::metadata(&p).expect("stat").len().to_string());
    out
}

#[test]
fn o_append_from_two_descriptors() {
    let seen = on_both(append_two_fds);
    let text = "start\na0\nbb0\na1\nbb1\na2\nbb2\n";
    assert_eq!(seen, vec!["9 13", "16 20", "23 27", text, text, "27"]);
}

/// ftruncate and truncate(2) after buffered writes that the kernel may still hold.
fn truncate_after_writes(m: &Path, _u: &Path) -> Vec<String> {
    use std::os::unix::fs::FileExt;
    let p = m.join("big");
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&p).expect("open");
    f.write_all_at(&[b'W'; 5000], 0).expect("write");
    f.set_len(100).expect("ftruncate down");
    let mut out = vec![std::fs::metadata(&p).expect("stat").len().to_string()];
    f.write_all_at(b"tail", 200).expect("write past the end");
    out.push(std::fs::metadata(&p).expect("stat").len().to_string());
    f.write_all_at(&[b'Z'; 3000], 1000).expect("write more");
    std::fs::OpenOptions::new().write(true).open(&p).expect("open").set_len(50).expect("truncate");
    out.push(std::fs::metadata(&p).expect("stat").len().to_string());
    f.set_len(6000).expect("extend");
    drop(f);
    let data = std::fs::read(&p).expect("read back");
    out.push(data.len().to_string());
    out.push(String::from_utf8_lossy(&data[45..50]).into_owned());
    out.push(data[50..].iter().all(|b| *b == 0).to_string());
    out
}

#[test]
fn truncate_after_buffered_writes() {
    let seen = on_both(truncate_after_writes);
    assert_eq!(seen, vec!["100", "204", "50", "6000", "WWWWW", "true"]);
}

fn mtime(p: &Path) -> (i64, i64) {
    let md = std::fs::metadata(p).expect("stat");
    (md.mtime(), md.mtime_nsec())
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let ts = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: sec, tv_nsec: nsec },
    ];
    // SAFETY: valid path and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, cpath(p).as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

/// utimens while written data is still cached, with the descriptor open, then after close and fsync:
/// the time set is the time kept (later write-back of the data must not move it).
fn mtime_after_write_and_utimens(m: &Path, u: &Path) -> Vec<String> {
    let p = m.join("big");
    let before = mtime(&p);
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&p).expect("open");
    f.write_all(b"new data").expect("write");
    let written = mtime(&p);
    set_mtime(&p, 1_000_000_000, 123_456_789);
    let mut out = vec![(written > before).to_string(), format!("{:?}", mtime(&p))];
    f.sync_all().expect("fsync");
    out.push(format!("{:?}", mtime(&p)));
    drop(f);
    out.push(format!("{:?}", mtime(&p)));
    out.push(format!("{:?}", mtime(&u.join("big"))));
    // a write after utimens moves it again, to the present
    let mut f = std::fs::OpenOptions::new().write(true).open(&p).expect("open");
    f.write_all(b"more").expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    out.push((mtime(&p).0 > 1_000_000_000).to_string());
    out.push((mtime(&u.join("big")) == mtime(&p)).to_string());
    out.push(String::from_utf8_lossy(&std::fs::read(&p).expect("read")[..8]).into_owned());
    out
}

#[test]
fn mtime_after_write_then_utimens() {
    let seen = on_both(mtime_after_write_and_utimens);
    let fixed = "(1000000000, 123456789)".to_string();
    assert_eq!(
        seen,
        vec![
            "true".into(),
            fixed.clone(),
            fixed.clone(),
            fixed.clone(),
            fixed,
            "true".into(),
            "true".into(),
            "moredata".into()
        ]
    );
}

/// Write `data` at the start of `p` from a forked child running as uid/gid 1000 (no capabilities);
/// returns the child's exit status (0: written).
fn write_as_user_in_child(p: &Path, data: &[u8]) -> i32 {
    let c = cpath(p);
    // SAFETY: the child makes only raw system calls (async-signal-safe) and _exits.
    unsafe {
        match libc::fork() {
            0 => {
                let ok = libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) == 0
                    && libc::setresgid(USER.1, USER.1, USER.1) == 0
                    && libc::setresuid(USER.0, USER.0, USER.0) == 0;
                if !ok {
                    libc::_exit(2);
                }
                let fd = libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    libc::_exit(3);
                }
                if libc::write(fd, data.as_ptr().cast(), data.len()) != data.len() as isize {
                    libc::_exit(4);
                }
                libc::_exit(if libc::close(fd) == 0 { 0 } else { 5 });
            }
            pid if pid > 0 => {
                let mut status = 0;
                assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
                if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    -1
                }
            }
            _ => panic!("fork: {}", std::io::Error::last_os_error()),
        }
    }
}

/// Unprivileged writers of their own setuid/setgid files, one of them while root's writes to the file
/// are still cached; root's own write keeps the bits.
fn setuid_clearing(m: &Path, _u: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["suid", "sgid_x"] {
        let p = m.join(name);
        out.push(format!("{name} {} {}", write_as_user_in_child(&p, b"#"), mode_of(&p)));
    }
    let p = m.join("suid_cached");
    let mut f = std::fs::OpenOptions::new().write(true).open(&p).expect("open");
    f.write_all(b"##").expect("root writes");
    out.push(format!("suid_cached after root {}", mode_of(&p)));
    out.push(format!("suid_cached {} {}", write_as_user_in_child(&p, b"@"), mode_of(&p)));
    drop(f);
    out.push(String::from_utf8_lossy(&std::fs::read(&p).expect("read")).into_owned());
    let p = m.join("by_root");
    let mut f = std::fs::OpenOptions::new().write(true).open(&p).expect("open");
    f.write_all(b"#").expect("write");
    drop(f);
    out.push(format!("by_root {}", mode_of(&p)));
    out
}

#[test]
fn unprivileged_writers_clear_setuid() {
    let seen = on_both(setuid_clearing);
    assert_eq!(
        seen,
        vec![
            "suid 0 777",
            "sgid_x 0 777",
            "suid_cached after root 4777",
            "suid_cached 0 777",
            "@#/bin/sh\n",
            "by_root 4777"
        ]
    );
}

/// Stores through a shared writable mapping, read through another descriptor while mapped, after
/// msync, and after unmapping and closing.
fn mmap_shared_write(m: &Path, u: &Path) -> Vec<String> {
    let p = m.join("big");
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&p).expect("open");
    let len = 8192;
    // SAFETY: a fresh shared mapping of an open file, unmapped below; no other reference to it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    // SAFETY: the mapping is `len` bytes long.
    let mem = unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), len) };
    mem[10..14].copy_from_slice(b"MMAP");
    mem[5000..5003].copy_from_slice(b"two");
    let mut other = std::fs::File::open(&p).expect("second descriptor");
    let mut out = vec![digest(&read_from(&mut other))];
    // SAFETY: the mapping above.
    assert_eq!(unsafe { libc::msync(map, len, libc::MS_SYNC) }, 0);
    out.push(digest(&std::fs::read(u.join("big")).expect("upper after msync")));
    // SAFETY: the mapping above, not used after this.
    assert_eq!(unsafe { libc::munmap(map, len) }, 0);
    drop(f);
    out.push(digest(&read_from(&mut other)));
    out.push(String::from_utf8_lossy(&std::fs::read(&p).expect("read")[8..16]).into_owned());
    out
}

#[test]
fn shared_writable_mmap() {
    let seen = on_both(mmap_shared_write);
    let mut want = big_pattern();
    want[10..14].copy_from_slice(b"MMAP");
    want[5000..5003].copy_from_slice(b"two");
    let want = digest(&want);
    assert_eq!(seen, vec![want.clone(), want.clone(), want, "ijMMAPop".to_string()]);
}

/// 1 MiB and a bit written in odd-sized pieces to a new file and over a lower file; after fsync (with
/// the descriptors still open) and after close, the upper files hold exactly that.
fn fsync_reaches_upper(m: &Path, u: &Path) -> Vec<String> {
    let data: Vec<u8> = (0..(1 << 20) + 777u32).map(|i| (i.wrapping_mul(7) % 251) as u8).collect();
    let mut out = Vec::new();
    for name in ["new", "big"] {
        let p = m.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(name == "big")
            .mode(0o644)
            .open(&p)
            .expect("open");
        for chunk in data.chunks(3001) {
            f.write_all(chunk).expect("write");
        }
        f.sync_all().expect("fsync");
        out.push(format!("{name} fsync {}", std::fs::read(u.join(name)).expect("upper") == data));
        f.write_all(b"+close").expect("write");
        drop(f);
        let mut want = data.clone();
        want.extend_from_slice(b"+close");
        out.push(format!("{name} close {}", std::fs::read(u.join(name)).expect("upper") == want));
    }
    out
}

#[test]
fn fsync_and_close_push_data_to_the_upper_file() {
    let seen = on_both(fsync_reaches_upper);
    assert_eq!(seen, vec!["new fsync true", "new close true", "big fsync true", "big close true"]);
}

/// A lower file open for reading before another open copies it up and writes: the reader then reads
/// the upper copy (as kernel overlayfs reopens it there). Its clean pages are dropped in between, so it
/// reads them again; were they read from the lower copy, the writer's next partial-page write would
/// find them current and write the whole stale page back over the upper copy.
fn reader_opened_before_copy_up(m: &Path, _u: &Path) -> Vec<String> {
    use std::os::unix::fs::FileExt;
    let p = m.join("big");
    let mut r = std::fs::File::open(&p).expect("reader");
    let mut out = vec![digest(&read_from(&mut r))];
    let w = std::fs::OpenOptions::new().read(true).write(true).open(&p).expect("writer");
    w.write_all_at(b"UPPER", 0).expect("write");
    w.sync_all().expect("fsync");
    // SAFETY: plain advice on an open descriptor.
    let rc = unsafe { libc::posix_fadvise(r.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
    out.push(String::from_utf8_lossy(&read_from(&mut r)[..8]).into_owned());
    w.write_all_at(b"x", 100).expect("write in the same page");
    drop(w);
    drop(r);
    let data = std::fs::read(&p).expect("read back");
    out.push(format!("{} {}", String::from_utf8_lossy(&data[..8]), data[100] as char));
    out
}

#[test]
fn a_reader_opened_before_a_copy_up_reads_the_upper_copy() {
    let seen = on_both(reader_opened_before_copy_up);
    assert_eq!(seen, vec![digest(&big_pattern()), "UPPERfgh".into(), "UPPERfgh x".into()]);
}

/// A page-aligned buffer for O_DIRECT.
struct Aligned(*mut u8, std::alloc::Layout);

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("layout");
        // SAFETY: non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!p.is_null());
        Aligned(p, layout)
    }
    fn buf(&mut self) -> &mut [u8] {
        // SAFETY: allocated with this length, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.0, self.1.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.0, self.1) }
    }
}

/// O_DIRECT reads and writes beside buffered writes the kernel still holds.
fn direct_beside_buffered(m: &Path, u: &Path) -> Vec<String> {
    use std::os::unix::fs::FileExt;
    let p = m.join("big");
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&p).expect("buffered open");
    f.write_all_at(b"buffered", 0).expect("buffered write");
    let d = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .expect("O_DIRECT open");
    let mut buf = Aligned::new(4096);
    d.read_exact_at(buf.buf(), 0).expect("direct read");
    let mut out = vec![String::from_utf8_lossy(&buf.buf()[..10]).into_owned()];
    buf.buf().fill(b'D');
    d.write_all_at(buf.buf(), 4096).expect("direct write");
    let mut r = std::fs::File::open(&p).expect("reader");
    let data = read_from(&mut r);
    out.push(format!("{} {}", String::from_utf8_lossy(&data[4094..4098]), data.len()));
    drop(d);
    drop(f);
    let up = std::fs::read(u.join("big")).expect("upper");
    out.push(format!("{} {}", String::from_utf8_lossy(&up[..10]), String::from_utf8_lossy(&up[4094..4098])));
    out
}

#[test]
fn o_direct_beside_buffered_writes() {
    let seen = on_both(direct_beside_buffered);
    assert_eq!(seen, vec!["bufferedij", "abDD 10000", "bufferedij abDD"]);
}

/// Is the writeback cache really in use? A small write to a new file, seen in the upper file right
/// after write(2) returns: always without it (every write is a round trip), not with it until the
/// kernel writes the page back (on close, fsync, sync(2) or after dirty_expire_centisecs). A sync(2)
/// by another process can write a page back early, so three tries must not all see it.
fn written_through(m: &Path, u: &Path) -> bool {
    let mut seen = 0;
    for i in 0..3 {
        let name = format!("probe{i}");
        let mut f = std::fs::File::create(m.join(&name)).expect("create");
        f.write_all(b"probe").expect("write");
        if std::fs::read(u.join(&name)).expect("upper") == b"probe" {
            seen += 1;
        }
        drop(f);
        assert_eq!(std::fs::read(u.join(&name)).expect("upper after close"), b"probe");
    }
    seen == 3
}

#[test]
fn writes_are_cached_only_with_writeback() {
    let s = Scratch::new();
    let l = s.path("l");
    build_lower(&l);
    for (opts, want) in
        [(writeback_options(), false), (MountOptions { writeback: false, ..writeback_options() }, true)]
    {
        let (u, w, m) =
            (s.path(&format!("u{want}")), s.path(&format!("w{want}")), s.path(&format!("m{want}")));
        let r = rimg_mount(std::slice::from_ref(&l), Some((&u, &w)), &m, &opts);
        assert_eq!(written_through(&m, &u), want, "writeback={}", opts.writeback);
        r.unmount().expect("unmount");
    }
}

/// The same scenarios with the writeback cache off must give the same results (the page cache without
/// writeback, every write a round trip).
#[test]
fn without_writeback_the_same() {
    let off = MountOptions { writeback: false, ..writeback_options() };
    let scenarios: [Scenario; 5] =
        [wronly_unaligned, append_two_fds, truncate_after_writes, setuid_clearing, direct_beside_buffered];
    for s in scenarios {
        let a = on_both_with(s, &off);
        let b = on_both(s);
        assert_eq!(a, b);
    }
}
