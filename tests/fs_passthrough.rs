//! Where FUSE passthrough differs from a plain file and the overlay must make up for it, checked against
//! kernel overlayfs doing the same on identical lowers: an inode has one backing file (so a lower file
//! open for reading must not stop an open that copies it up), and passthrough writes reach the backing
//! file with the server's credentials (so setuid/setgid bits must still be cleared for unprivileged
//! writers).

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::fs::*;

/// A scenario runs on a mounted overlay and reports what it saw.
type Scenario = fn(&Path) -> Vec<String>;

fn build_lower(l: &Path) {
    write(&l.join("data"), "lower data\n");
    for (name, mode) in [
        ("suid", 0o4777),
        ("sgid_x", 0o2777),
        ("sgid_nox", 0o2767),
        ("trunc", 0o6777),
        ("otrunc", 0o4777),
        ("by_root", 0o4777),
    ] {
        let p = l.join(name);
        write(&p, "#!/bin/sh\n");
        chown(&p, USER.0, USER.1);
        chmod(&p, mode);
    }
}

/// Run `scenario` on kernel overlayfs and on rimg (passthrough on, otherwise the kernel's defaults: a
/// chmod copies data up, as without metacopy) over identical lowers; both must see the same, and the
/// upper directories must end up with the same modes.
fn on_both(scenario: Scenario) -> Vec<String> {
    let opts = kernel_like_options();
    assert!(opts.passthrough);
    on_both_with(scenario, &opts)
}

/// [`on_both`] with these rimg options.
fn on_both_with(scenario: Scenario, opts: &rimg::fs::MountOptions) -> Vec<String> {
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
            scenario(&m)
        } else {
            let _r = rimg_mount(&lowers, Some((&u, &w)), &m, opts);
            scenario(&m)
        };
        let mut upper: Vec<String> = std::fs::read_dir(&u)
            .expect("upper")
            .map(|e| {
                let e = e.expect("entry");
                let md = e.metadata().expect("stat");
                format!("{} {:o}", e.file_name().to_string_lossy(), md.mode() & 0o7777)
            })
            .collect();
        upper.sort();
        results.push((seen, upper));
    }
    assert_eq!(results[0], results[1], "kernel overlayfs (left) and rimg (right) differ");
    results.remove(0).0
}

fn read_all(f: &mut std::fs::File) -> String {
    let mut s = String::new();
    f.seek(SeekFrom::Start(0)).expect("seek");
    f.read_to_string(&mut s).expect("read");
    s
}

fn mode_of(p: &Path) -> String {
    format!("{:o}", std::fs::metadata(p).expect("stat").mode() & 0o7777)
}

/// Read-open a lower file and hold it; then open it for writing (a copy-up) and read through new fds.
fn write_while_lower_open(m: &Path) -> Vec<String> {
    let p = m.join("data");
    let mut reader = std::fs::File::open(&p).expect("open for reading");
    let mut out = vec![read_all(&mut reader)];
    let mut w = std::fs::OpenOptions::new().read(true).write(true).open(&p).expect("open for writing");
    w.write_all(b"UPPER").expect("write");
    out.push(read_all(&mut w));
    // a third open while both are held: it sees the upper copy
    let mut again = std::fs::File::open(&p).expect("reopen");
    out.push(read_all(&mut again));
    w.write_all(b"+more").expect("write more");
    out.push(read_all(&mut again));
    drop(w);
    out.push(std::fs::read_to_string(&p).expect("read back"));
    out.push(std::fs::metadata(&p).expect("stat").len().to_string());
    // (not compared: what the first reader reads now. Kernel overlayfs reopens it on the upper copy;
    // through rimg it stays on the lower copy its passthrough backing file is, as in fuse-overlayfs)
    drop(reader);
    out
}

/// The reverse order: writer first (backing file is the upper copy), readers after it.
fn readers_after_writer(m: &Path) -> Vec<String> {
    let p = m.join("data");
    let mut w = std::fs::OpenOptions::new().append(true).open(&p).expect("open for appending");
    w.write_all(b"appended\n").expect("append");
    let mut r = std::fs::File::open(&p).expect("open for reading");
    let mut out = vec![read_all(&mut r)];
    w.write_all(b"again\n").expect("append again");
    out.push(read_all(&mut r));
    drop(w);
    drop(r);
    out.push(std::fs::read_to_string(&p).expect("read back"));
    out
}

#[test]
fn a_lower_file_open_for_reading_does_not_stop_a_copy_up() {
    let seen = on_both(write_while_lower_open);
    assert_eq!(seen[0], "lower data\n");
    assert_eq!(seen[1], "UPPER data\n", "the writer reads its own writes");
    assert_eq!(seen[2], "UPPER data\n", "a new open sees the upper copy");
    assert_eq!(seen[3], "UPPER data\n+more", "and later writes");
    assert_eq!(seen[4], "UPPER data\n+more");
    assert_eq!(seen[5], "16");
}

#[test]
fn readers_opened_after_a_writer_share_its_copy() {
    let seen = on_both(readers_after_writer);
    assert_eq!(
        seen,
        vec!["lower data\nappended\n", "lower data\nappended\nagain\n", "lower data\nappended\nagain\n"]
    );
}

/// Writes, truncations and O_TRUNC opens by uid 1000 of its own setuid/setgid files; one write by root.
fn unprivileged_writes(m: &Path) -> Vec<String> {
    let m = m.to_owned();
    let mut out = as_user(USER.0, USER.1, || {
        let mut out = Vec::new();
        for name in ["suid", "sgid_x", "sgid_nox"] {
            let p = m.join(name);
            let mut f = std::fs::OpenOptions::new().write(true).open(&p).expect("open");
            f.write_all(b"#").expect("write");
            drop(f);
            out.push(format!("{name} {}", mode_of(&p)));
        }
        let p = m.join("trunc");
        std::fs::OpenOptions::new().write(true).open(&p).expect("open").set_len(3).expect("ftruncate");
        out.push(format!("trunc {}", mode_of(&p)));
        let p = m.join("otrunc");
        drop(std::fs::OpenOptions::new().write(true).truncate(true).open(&p).expect("O_TRUNC"));
        out.push(format!("otrunc {}", mode_of(&p)));
        out
    });
    let p = m.join("by_root");
    let mut f = std::fs::OpenOptions::new().write(true).open(&p).expect("open");
    f.write_all(b"#").expect("write");
    drop(f);
    out.push(format!("by_root {}", mode_of(&p)));
    out
}

#[test]
fn unprivileged_writes_clear_setuid_and_setgid() {
    let seen = on_both(unprivileged_writes);
    assert_eq!(
        seen,
        vec!["suid 777", "sgid_x 777", "sgid_nox 2767", "trunc 777", "otrunc 777", "by_root 4777"],
        "as kernel overlayfs: S_ISUID goes, S_ISGID goes with group-exec, CAP_FSETID keeps both"
    );
    // the same through the page cache: the server honours FUSE_WRITE_KILL_SUIDGID
    let no_pt = rimg::fs::MountOptions { passthrough: false, ..kernel_like_options() };
    assert_eq!(on_both_with(unprivileged_writes, &no_pt), seen);
}

/// A setuid file already copied up and open through passthrough by root: an unprivileged writer joins.
fn unprivileged_writer_beside_passthrough_reader(m: &Path) -> Vec<String> {
    let p: PathBuf = m.join("suid");
    chmod(&p, 0o4777); // copies it up (metadata)
    let mut reader = std::fs::File::open(&p).expect("open for reading");
    let before = read_all(&mut reader);
    let p2 = p.clone();
    as_user(USER.0, USER.1, move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&p2).expect("open");
        f.write_all(b"X").expect("write");
    });
    vec![before, read_all(&mut reader), mode_of(&p)]
}

#[test]
fn unprivileged_writer_beside_a_passthrough_reader() {
    let seen = on_both(unprivileged_writer_beside_passthrough_reader);
    assert_eq!(seen, vec!["#!/bin/sh\n", "X!/bin/sh\n", "777"]);
}
