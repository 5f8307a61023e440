//! Work that must grow linearly with a directory's size, measured by the server's own counters
//! (`OverlayMount::stats`) rather than a clock: deleting every file of a lower-layer directory of N
//! and of 2N files, the way `rm -rf` does it.
//!
//! Two `rm` shapes exist: busybox's (and musl's readdir) reads a chunk of names, removes them, reads
//! the next chunk; GNU rm reads the whole directory first. After every removal the kernel forgets its
//! cached listing and asks the server again from the reader's offset, so a server that rebuilds the
//! merged listing after each change rereads the whole directory once per chunk: N²/chunk entries.

mod common;

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use common::fs::*;
use rimg::fs::{FsStats, MountOptions};

/// How the directory is emptied.
#[derive(Clone, Copy, Debug)]
enum Rm {
    /// Remove each name as soon as readdir returns it (busybox `rm -rf`, `find -delete`).
    WhileReading,
    /// Read every name first, then remove them (GNU `rm -rf`).
    AfterReading,
}

/// The options `rimg run` serves a container's rootfs with (see runtime/launch.rs).
fn container_options() -> MountOptions {
    MountOptions { threads: 2, uring: false, readahead: false, ..MountOptions::default() }
}

/// A lower layer whose directory `d` holds `n` empty files with longish names (as an image's would).
fn lower_with_files(s: &Scratch, n: usize) -> PathBuf {
    let l = s.path("l");
    let d = l.join("d");
    std::fs::create_dir_all(&d).expect("mkdir d");
    for i in 0..n {
        std::fs::File::create(d.join(format!("lower-file-number-{i:06}"))).expect("create");
    }
    l
}

/// Empty `dir` through the mount the `rm` way, then remove it; returns how many names were removed.
fn rm_rf(dir: &Path, how: Rm) -> usize {
    let c = cpath(dir);
    let mut removed = 0;
    // SAFETY: a directory stream on a valid path, used and closed here; unlinkat on its descriptor
    // with NUL-terminated names.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null(), "opendir {}", dir.display());
        let fd = libc::dirfd(d);
        let mut later: Vec<CString> = Vec::new();
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = CStr::from_ptr((*e).d_name.as_ptr());
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            match how {
                Rm::WhileReading => {
                    assert_eq!(libc::unlinkat(fd, name.as_ptr(), 0), 0, "unlink {name:?}");
                    removed += 1;
                }
                Rm::AfterReading => later.push(name.to_owned()),
            }
        }
        for name in &later {
            assert_eq!(libc::unlinkat(fd, name.as_ptr(), 0), 0, "unlink {name:?}");
            removed += 1;
        }
        libc::closedir(d);
    }
    std::fs::remove_dir(dir).expect("rmdir");
    removed
}

/// Mount a fresh overlay over a lower `d` of `n` files, empty it the `how` way and return the work
/// the server did for that (its counters after the mount minus before).
fn delete_lower_dir(n: usize, how: Rm) -> FsStats {
    let s = Scratch::new();
    let l = lower_with_files(&s, n);
    let (u, w, m) = (s.path("u"), s.path("w"), s.path("m"));
    let mnt = rimg_mount(&[l], Some((&u, &w)), &m, &container_options());
    let before = mnt.stats();
    assert_eq!(rm_rf(&m.join("d"), how), n, "every file removed, each once");
    let after = mnt.stats();
    assert!(!m.join("d").exists(), "d gone from the merged view");
    drop(mnt);
    // what is left on disk is one whiteout for d (its whiteouts went with its upper copy)
    assert_eq!(names(&u), vec!["d".to_string()]);
    FsStats {
        listings_built: after.listings_built - before.listings_built,
        entries_scanned: after.entries_scanned - before.entries_scanned,
    }
}

fn assert_linear(how: Rm) {
    let n = 3000;
    let small = delete_lower_dir(n, how);
    let large = delete_lower_dir(2 * n, how);
    let ratio = large.entries_scanned as f64 / small.entries_scanned.max(1) as f64;
    eprintln!("{how:?}: {n} files {small:?}, {} files {large:?}, ratio {ratio:.2}", 2 * n);
    // linear work doubles; rebuilding the listing after every chunk of removals quadruples it
    assert!(
        ratio <= 2.5,
        "{how:?}: entries scanned for {n} files {small:?}, for {} files {large:?}: ratio {ratio:.2} (linear: 2)",
        2 * n
    );
    assert!(
        large.listings_built <= small.listings_built + 1,
        "{how:?}: listings built {} for {n} files, {} for {}: the reader's listing is rebuilt as it goes",
        small.listings_built,
        large.listings_built,
        2 * n
    );
}

#[test]
fn deleting_lower_files_while_reading_their_directory_is_linear_work() {
    assert_linear(Rm::WhileReading);
}

#[test]
fn deleting_lower_files_after_reading_their_directory_is_linear_work() {
    assert_linear(Rm::AfterReading);
}
