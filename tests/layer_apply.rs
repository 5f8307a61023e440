//! `layer::apply` against the oracles: kernel overlayfs over the applied layer directories must show
//! exactly the tree `umoci unpack` produces from the same layer tars.

mod common;

use common::layer::*;
use rimg::layer::tree::{diff_trees, snapshot, CompareOptions};
use rimg::layer::{apply, ApplyOptions};
use std::fs::File;
use std::path::PathBuf;

#[test]
fn edge_layers_match_umoci_through_kernel_overlayfs() {
    let t = tempfile::tempdir().unwrap();
    let tars = t.path().join("tars");
    fixtures("edge-layers.py", &tars);

    let mut lowers: Vec<PathBuf> = Vec::new(); // top first
    let mut stats = Vec::new();
    for i in 1..=3 {
        let dest = t.path().join(format!("L{i}"));
        let opts = ApplyOptions { lowers: lowers.clone(), ..Default::default() };
        let f = File::open(tars.join(format!("layer{i}.tar"))).unwrap();
        stats.push(apply(f, &dest, &opts).unwrap_or_else(|e| panic!("layer{i}: {e}")));
        lowers.insert(0, dest);
    }
    assert_eq!(stats[1].whiteouts, 3, "{:?}", stats[1]);
    assert_eq!(stats[1].opaques, 1);
    assert_eq!(stats[2].lower_copies, 1, "{:?}", stats[2]);
    assert_eq!(stats[2].ignored, 1, "{:?}", stats[2]);
    assert!(stats[0].xattrs >= 4, "{:?}", stats[0]);

    let mnt = t.path().join("mnt");
    let _m = Mount::overlay_ro(&lowers, &mnt);
    let rootfs =
        umoci_rootfs(&(1..=3).map(|i| tars.join(format!("layer{i}.tar"))).collect::<Vec<_>>(), t.path());

    let ours = snapshot(&mnt).unwrap();
    let theirs = snapshot(&rootfs).unwrap();
    let diffs = diff_trees(&ours, &theirs, &CompareOptions::default());
    assert!(diffs.is_empty(), "overlay (first) vs umoci (second):\n{}", diffs.join("\n"));
    assert!(ours.len() > 50, "suspiciously small tree: {}", ours.len());
}

/// A tiny tar builder for the cases the fixture script does not cover.
fn tar_of(entries: &[(&str, char, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, arg) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(if *kind == 'd' { 0o755 } else { 0o644 });
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match kind {
            'f' => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(arg.len() as u64);
                b.append_data(&mut h, name, arg.as_bytes()).unwrap();
            }
            'd' => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            'h' => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, name, arg).unwrap();
            }
            _ => unreachable!(),
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn same_layer_whiteout_rules_and_aufs_metadata() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    let data = tar_of(&[
        ("keep", 'f', "x"),
        (".wh.keep", 'f', ""),      // whiteouts hide lower layers only: `keep` stays
        (".wh.gone", 'f', ""),      // a plain whiteout
        (".wh.redo", 'f', ""),      // whiteout, then children without a dir entry:
        ("redo/child", 'f', "c"),   // `redo` becomes an opaque directory
        (".wh..wh.plnk/", 'd', ""), // aufs bookkeeping, ignored with its content
        (".wh..wh.plnk/1.2", 'f', "z"),
        ("dir/", 'd', ""),
        ("dir/.wh..wh..opq", 'f', ""),
        (".wh.again", 'f', ""), // whiteout, then the directory re-created: opaque
        ("again/", 'd', ""),
    ]);
    let s = apply(&data[..], &l, &ApplyOptions::default()).unwrap();
    assert_eq!((s.whiteouts, s.opaques, s.ignored), (3, 3, 2), "{s:?}");
    assert_eq!(std::fs::read(l.join("keep")).unwrap(), b"x");
    assert!(!l.join(".wh..wh.plnk").exists());
    let snap = snapshot(&l).unwrap();
    let kind = |p: &str| snap[std::path::Path::new(p)].kind;
    use rimg::layer::tree::Kind;
    assert_eq!(kind("gone"), Kind::Char);
    assert_eq!(snap[std::path::Path::new("gone")].rdev, Some((0, 0)));
    assert_eq!(kind("redo"), Kind::Dir);
    for d in ["redo", "dir", "again"] {
        assert_eq!(
            snap[std::path::Path::new(d)].xattrs.get("trusted.overlay.opaque").map(|v| &v[..]),
            Some(&b"y"[..]),
            "{d}"
        );
    }
    // Directory mtimes are restored after their entries were written.
    assert_eq!(snap[std::path::Path::new("dir")].mtime.0, 1_600_000_000);
}

#[test]
fn hardlink_into_lower_without_lowers_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let data = tar_of(&[("a", 'h', "lower/file")]);
    let err = apply(&data[..], &t.path().join("l"), &ApplyOptions::default()).unwrap_err().to_string();
    assert!(err.contains("\"a\": hard link target \"lower/file\" is neither in this layer"), "{err}");
}

#[test]
fn reader_is_drained_past_the_end_of_archive() {
    let t = tempfile::tempdir().unwrap();
    let mut data = tar_of(&[("f", 'f', "x")]);
    data.extend(std::iter::repeat_n(0u8, 20 * 1024)); // trailing padding, as tar(1) writes
    let mut r = rimg::digest::HashingReader::new(&data[..]);
    apply(&mut r, &t.path().join("l"), &ApplyOptions::default()).unwrap();
    assert_eq!(r.count(), data.len() as u64);
}

#[test]
fn alpine_minirootfs_matches_umoci() {
    let tgz = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("image-fixtures/alpine/alpine-minirootfs-3.20.3-x86_64.tar.gz");
    let t = tempfile::tempdir().unwrap();
    let (c, r) = rimg::layer::decompress_auto(None, File::open(&tgz).unwrap()).unwrap();
    assert_eq!(c, rimg::layer::Compression::Gzip);
    let l1 = t.path().join("L1");
    let stats = apply(r, &l1, &ApplyOptions::default()).unwrap();
    assert!(stats.files > 50 && stats.symlinks > 50, "{stats:?}");

    let plain = t.path().join("alpine.tar");
    let mut out = File::create(&plain).unwrap();
    let mut dec = rimg::layer::decompress(rimg::layer::Compression::Gzip, File::open(&tgz).unwrap()).unwrap();
    std::io::copy(&mut dec, &mut out).unwrap();

    // The same layer through zstd gives the same directory.
    let zst = zstd::encode_all(File::open(&plain).unwrap(), 3).unwrap();
    let (c, r) =
        rimg::layer::decompress_auto(Some("application/vnd.oci.image.layer.v1.tar+zstd"), &zst[..]).unwrap();
    assert_eq!(c, rimg::layer::Compression::Zstd);
    let lz = t.path().join("Lz");
    apply(r, &lz, &ApplyOptions::default()).unwrap();
    let strict = CompareOptions { root: true, ..Default::default() };
    let d = diff_trees(&snapshot(&l1).unwrap(), &snapshot(&lz).unwrap(), &strict);
    assert!(d.is_empty(), "gzip vs zstd:\n{}", d.join("\n"));

    let mnt = t.path().join("mnt");
    // A read-only overlay needs two lowers: put an empty one below.
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let _m = Mount::overlay_ro(&[l1.clone(), empty], &mnt);
    let rootfs = umoci_rootfs(&[plain], t.path());
    let d = diff_trees(&snapshot(&mnt).unwrap(), &snapshot(&rootfs).unwrap(), &CompareOptions::default());
    assert!(d.is_empty(), "overlay (first) vs umoci (second):\n{}", d.join("\n"));
}
