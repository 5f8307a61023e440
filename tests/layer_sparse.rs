//! Sparse files in layers (issue 20, item 6): layers made by real `tar --sparse` in GNU tar's three PAX
//! sparse formats (0.0, 0.1, 1.0) and its old GNU header format apply to the same tree as `umoci unpack`
//! (PAX formats only: umoci refuses type `S`) and GNU tar's own extraction make of them, with the holes kept (`SEEK_HOLE`, `st_blocks`); and a sparse
//! file in an upper commits (layer diff) to a layer with the right content.

mod common;

use common::layer::{run, umoci_rootfs};
use rimg::layer::tree::{diff_trees, snapshot, CompareOptions};
use rimg::layer::{apply, diff, ApplyOptions, DiffOptions};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;

/// A long directory name, so the sparse file's name does not fit a ustar header.
fn long_dir() -> String {
    format!("long/{}/{}", "d".repeat(60), "e".repeat(70))
}

/// A file of `size` bytes with `data` written at each offset and holes elsewhere.
fn sparse_file(path: &Path, size: u64, data: &[(u64, &[u8])]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = File::create(path).unwrap();
    for (off, bytes) in data {
        f.write_all_at(bytes, *off).unwrap();
    }
    f.set_len(size).unwrap();
}

/// The source tree: sparse files with data at the start, only in the middle, none at all, under a long
/// name, and a dense file.
fn sources(src: &Path) {
    let a = vec![b'A'; 4096];
    let b = vec![b'B'; 5000];
    sparse_file(&src.join("d/big"), 8 * MIB, &[(0, &a), (MIB, &b)]);
    sparse_file(&src.join("lead"), 4 * MIB, &[(3 * MIB, b"in the middle")]);
    sparse_file(&src.join("empty"), 8 * MIB, &[]);
    sparse_file(&src.join(long_dir()).join("f".repeat(120)), 2 * MIB, &[(MIB, &b)]);
    std::fs::write(src.join("plain"), b"dense\n").unwrap();
}

/// `lseek(path, from, whence)`.
fn seek(path: &Path, from: i64, whence: i32) -> i64 {
    let f = File::open(path).unwrap();
    // SAFETY: lseek on a descriptor we own.
    unsafe { libc::lseek(f.as_raw_fd(), from, whence) }
}

fn blocks(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks()
}

#[test]
fn gnu_sparse_layers_apply_with_their_holes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sources(&src);
    let sparse_files =
        ["d/big".to_string(), "lead".into(), "empty".into(), format!("{}/{}", long_dir(), "f".repeat(120))];
    for (format, version) in [("posix", "0.0"), ("posix", "0.1"), ("posix", "1.0"), ("gnu", "")] {
        let what = format!("--format={format} {version}");
        let work = t.path().join(format!("{format}{version}"));
        std::fs::create_dir_all(&work).unwrap();
        let layer = work.join("layer.tar");
        let mut tar = Command::new("tar");
        tar.arg("-C").arg(&src).args(["--sparse", "--numeric-owner", &format!("--format={format}")]);
        if !version.is_empty() {
            tar.arg(format!("--sparse-version={version}"));
        }
        run(tar.arg("-cf").arg(&layer).arg("."));
        let listing = run(Command::new("tar").arg("-tvf").arg(&layer));

        let ours = work.join("ours");
        apply(File::open(&layer).unwrap(), &ours, &ApplyOptions::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let snap = snapshot(&ours).unwrap();
        assert!(
            !snap.keys().any(|p| p.to_string_lossy().contains("GNUSparseFile")),
            "{what}: GNU's stand-in names leaked into the layer: {:?}\n{listing}",
            snap.keys().collect::<Vec<_>>()
        );
        if format == "posix" {
            // umoci refuses the old GNU format's type `S` entries ("unknown typeflag").
            let reference = umoci_rootfs(std::slice::from_ref(&layer), &work);
            let diffs = diff_trees(&snap, &snapshot(&reference).unwrap(), &CompareOptions::default());
            assert!(diffs.is_empty(), "{what}: ours (first) vs umoci unpack:\n{}", diffs.join("\n"));
        }
        let gnu = work.join("gnu");
        std::fs::create_dir(&gnu).unwrap();
        run(Command::new("tar").arg("-C").arg(&gnu).args(["--numeric-owner", "-xpf"]).arg(&layer));
        let diffs = diff_trees(&snap, &snapshot(&gnu).unwrap(), &CompareOptions::default());
        assert!(diffs.is_empty(), "{what}: ours (first) vs GNU tar -x:\n{}", diffs.join("\n"));

        // The holes are holes: no more blocks than GNU tar's extraction, and where the source has them.
        for f in &sparse_files {
            assert!(
                blocks(&ours.join(f)) <= blocks(&gnu.join(f)),
                "{what}: {f} has more blocks than GNU tar's"
            );
        }
        let big = ours.join("d/big");
        assert_eq!(seek(&big, 0, libc::SEEK_HOLE), 4096, "{what}: first hole of d/big");
        assert_eq!(seek(&big, 4096, libc::SEEK_DATA), MIB as i64, "{what}: data after the hole");
        assert_eq!(seek(&ours.join("lead"), 0, libc::SEEK_DATA), 3 * MIB as i64, "{what}: leading hole");
        assert_eq!(blocks(&ours.join("empty")), 0, "{what}: a file of holes only");
    }
}

#[test]
fn a_sparse_file_in_an_upper_commits_with_its_content() {
    let t = tempfile::tempdir().unwrap();
    let upper = t.path().join("upper");
    sources(&upper);
    let mut out = Vec::new();
    diff(&upper, &[], &mut out, &DiffOptions::default()).unwrap();
    let layer = t.path().join("layer.tar");
    std::fs::write(&layer, &out).unwrap();
    let gnu = t.path().join("gnu");
    std::fs::create_dir(&gnu).unwrap();
    run(Command::new("tar").arg("-C").arg(&gnu).args(["--numeric-owner", "-xpf"]).arg(&layer));
    let diffs = diff_trees(&snapshot(&gnu).unwrap(), &snapshot(&upper).unwrap(), &CompareOptions::default());
    assert!(diffs.is_empty(), "committed layer (first) vs the upper:\n{}", diffs.join("\n"));
    let back = t.path().join("back");
    apply(&out[..], &back, &ApplyOptions::default()).unwrap();
    let diffs = diff_trees(&snapshot(&back).unwrap(), &snapshot(&upper).unwrap(), &CompareOptions::default());
    assert!(diffs.is_empty(), "committed layer applied (first) vs the upper:\n{}", diffs.join("\n"));
}
