//! Hostile layers: every escape attempt is refused with an error naming the entry, and nothing outside
//! the layer directory is created, changed or removed — checked with sentinels around it.

mod common;

use common::layer::*;
use rimg::layer::tree::{diff_trees, snapshot, CompareOptions};
use rimg::layer::{apply, ApplyOptions};
use std::fs::File;
use std::path::Path;

/// (tar, a substring the error must contain)
const REFUSED: &[(&str, &str)] = &[
    ("refuse-dotdot", "\"../pwned-dotdot\" escapes the layer root"),
    ("refuse-deep-dotdot", "\"a/b/../../../pwned-deep\" escapes the layer root"),
    ("refuse-abs-dotdot", "\"/../pwned-abs\" escapes the layer root"),
    ("refuse-abs-dotdot2", "\"/etc/../../pwned-abs2\" escapes the layer root"),
    ("refuse-symlink-abs", "\"evil/pwned\": parent \"evil\" is a symlink"),
    ("refuse-symlink-rel", "\"evil/pwned\": parent \"evil\" is a symlink"),
    ("refuse-symlink-dotdot", "\"d/up/x/pwned\": parent \"d/up\" is a symlink"),
    ("refuse-symlink-chain", "\"c1/pwned\": parent \"c1\" is a symlink"),
    ("refuse-symlink-inside", "\"alias/file\": parent \"alias\" is a symlink"),
    ("refuse-symlink-dir-entry", "\"evil/sub\": parent \"evil\" is a symlink"),
    ("refuse-symlink-whiteout", "\"evil/.wh.victim\": parent \"evil\" is a symlink"),
    ("refuse-symlink-opaque", "\"evil/.wh..wh..opq\": parent \"evil\" is a symlink"),
    ("refuse-hardlink-dotdot", "\"shadow\": hard link target \"../../etc/shadow\" escapes the layer root"),
    ("refuse-hardlink-abs", "\"shadow\": hard link target \"etc/shadow\" is neither in this layer"),
    ("refuse-hardlink-via-symlink", "\"shadow\": hard link target \"evil/shadow\" is not inside"),
    ("refuse-fifo-parent", "\"p/x\": parent \"p\" is not a directory"),
    ("refuse-device-parent", "\"c/x\": parent \"c\" is not a directory"),
    ("refuse-whiteout-dotdot", "whiteout without a name"),
    ("refuse-whiteout-escape", "\"../.wh.victim\" escapes the layer root"),
];

const ALLOWED: &[&str] =
    &["allow-symlink-then-dir", "allow-file-over-symlink", "allow-dangling", "allow-overlay-xattrs"];

/// A sandbox: `outside/` with sentinels (what the hostile symlinks point at), and the layer dir
/// `sandbox/a/b/layer` deep enough that `../..` lands inside the sandbox.
fn sandbox(root: &Path) -> std::path::PathBuf {
    let outside = root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"sentinel").unwrap();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("a/sentinel"), b"sentinel").unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/shadow"), b"secret").unwrap();
    root.join("a/b/layer")
}

#[test]
fn hostile_layers_are_refused_and_write_nothing_outside() {
    let t = tempfile::tempdir().unwrap();
    let tars = t.path().join("tars");
    // The sandbox lives in its own directory so `..`s from the layer land in it, not in the temp dir.
    let sb = t.path().join("sb");
    let outside = sb.join("outside");
    run(std::process::Command::new("python3")
        .arg(repo().join("image-fixtures/hostile-layers.py"))
        .arg(&tars)
        .arg(&outside));
    let layer = sandbox(&sb);
    // Directory mtimes are not compared: creating and removing the layer directory touches its parent.
    // New, removed or changed entries anywhere are still caught.
    let cmp = CompareOptions { root: true, ..Default::default() };
    let ignore_layer = CompareOptions { ignore_paths: vec!["a/b/layer".into()], ..cmp.clone() };
    // Snapshot with the layer dir existing (apply creates it), so the comparison ignores only its inside.
    std::fs::create_dir(&layer).unwrap();
    let before = snapshot(&sb).unwrap();
    std::fs::remove_dir(&layer).unwrap();

    for (name, want) in REFUSED {
        let f = File::open(tars.join(format!("{name}.tar"))).unwrap();
        let err = apply(f, &layer, &ApplyOptions::default()).expect_err(name).to_string();
        assert!(err.contains(want), "{name}: error {err:?} does not contain {want:?}");
        let after = snapshot(&sb).unwrap();
        let d = diff_trees(&before, &after, &ignore_layer);
        assert!(d.is_empty(), "{name} changed things outside the layer:\n{}", d.join("\n"));
        std::fs::remove_dir_all(&layer).unwrap();
    }
    for name in ALLOWED {
        let f = File::open(tars.join(format!("{name}.tar"))).unwrap();
        let stats = apply(f, &layer, &ApplyOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let after = snapshot(&sb).unwrap();
        let d = diff_trees(&before, &after, &ignore_layer);
        assert!(d.is_empty(), "{name} changed things outside the layer:\n{}", d.join("\n"));
        if *name == "allow-overlay-xattrs" {
            assert_eq!(stats.xattrs_dropped, 3, "{stats:?}");
            let s = snapshot(&layer).unwrap();
            let x = &s[Path::new("f")].xattrs;
            assert_eq!(x.keys().collect::<Vec<_>>(), ["user.ok"], "{x:?}");
        }
        if *name == "allow-symlink-then-dir" {
            assert!(layer.join("evil/inside").is_file());
            assert!(layer.join("evil").symlink_metadata().unwrap().is_dir());
        }
        std::fs::remove_dir_all(&layer).unwrap();
    }
}

#[test]
fn limits_are_enforced() {
    let t = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..20 {
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("f{i}"), &[][..]).unwrap();
    }
    let data = b.into_inner().unwrap();
    let opts = ApplyOptions { max_entries: 10, ..Default::default() };
    let err = apply(&data[..], &t.path().join("l"), &opts).unwrap_err().to_string();
    assert!(err.contains("limit on entries"), "{err}");

    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    b.append_data(&mut h, "d/".repeat(100) + "f", &[][..]).unwrap();
    let data = b.into_inner().unwrap();
    let opts = ApplyOptions { max_path_len: 100, ..Default::default() };
    let err = apply(&data[..], &t.path().join("l2"), &opts).unwrap_err().to_string();
    assert!(err.contains("limit on path length"), "{err}");
}

#[test]
fn truncated_and_corrupt_tars_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(10_000);
    h.set_mode(0o644);
    b.append_data(&mut h, "big", &vec![7u8; 10_000][..]).unwrap();
    let data = b.into_inner().unwrap();
    let err = apply(&data[..3000], &t.path().join("l"), &ApplyOptions::default()).unwrap_err().to_string();
    assert!(err.contains("truncated") || err.contains("reading layer tar"), "{err}");
    let mut bad = data.clone();
    bad[100] ^= 0xff; // breaks the header checksum
    let err = apply(&bad[..], &t.path().join("l2"), &ApplyOptions::default()).unwrap_err().to_string();
    assert!(err.contains("reading layer tar"), "{err}");
}

/// A gzip bomb in a GNU long-name entry: a few hundred KiB of compressed zeros announcing a 1 GiB name.
/// The tar reader would buffer it whole; the apply refuses it before reading the body.
#[test]
fn long_name_bomb_is_refused_without_buffering_it() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    let size: u64 = 1 << 30;
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(h.as_bytes()).unwrap();
    let zeros = vec![b'a'; 1 << 20];
    for _ in 0..(size >> 20) {
        gz.write_all(&zeros).unwrap();
    }
    let blob = gz.finish().unwrap();
    assert!(blob.len() < 16 << 20, "bomb is {} bytes", blob.len());
    let r = rimg::layer::decompress(rimg::layer::Compression::Gzip, &blob[..]).unwrap();
    let opts = ApplyOptions { max_header_size: 1 << 20, ..Default::default() };
    let err = apply(r, &t.path().join("l"), &opts).unwrap_err().to_string();
    assert!(err.contains("extension header ('L') of 1073741824 bytes exceeds the limit"), "{err}");
}
