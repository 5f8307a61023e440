//! `layer::diff`: an overlay upper (written by kernel overlayfs) diffed into a tar and applied again
//! must reproduce the merged tree; diffs are byte-identical with SOURCE_DATE_EPOCH; metadata-only
//! copy-ups take their data from the lowers.

mod common;

use common::layer::*;
use rimg::layer::tree::{diff_trees, snapshot, CompareOptions, Snapshot};
use rimg::layer::{apply, diff, diff_to_blob, ApplyOptions, DiffOptions};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Apply the edge layers into `dir/L1..L3`; returns the lowers, top first.
fn edge_lowers(dir: &Path) -> Vec<PathBuf> {
    let tars = dir.join("tars");
    fixtures("edge-layers.py", &tars);
    let mut lowers = Vec::new();
    for i in 1..=3 {
        let dest = dir.join(format!("L{i}"));
        let opts = ApplyOptions { lowers: lowers.clone(), ..Default::default() };
        apply(File::open(tars.join(format!("layer{i}.tar"))).unwrap(), &dest, &opts).unwrap();
        lowers.insert(0, dest);
    }
    lowers
}

/// Changes of every kind, made through a kernel overlay mount so the upper is the kernel's own format.
fn make_changes(m: &Path) {
    std::fs::write(m.join("newfile"), b"new").unwrap();
    std::fs::create_dir_all(m.join("newdir/sub")).unwrap();
    std::fs::write(m.join("newdir/sub/f"), b"f").unwrap();
    std::fs::hard_link(m.join("newdir/sub/f"), m.join("newdir/f-link")).unwrap();
    std::fs::write(m.join("etc/hosts"), b"changed\n").unwrap(); // copy-up with new data
    std::fs::set_permissions(m.join("etc/shadow"), std::fs::Permissions::from_mode(0o600)).unwrap(); // meta copy-up
    std::fs::remove_file(m.join("w/keep")).unwrap(); // whiteout
    std::fs::remove_dir_all(m.join("usr/share")).unwrap(); // whiteout of a dir
    std::fs::remove_dir_all(m.join("o")).unwrap();
    std::fs::create_dir(m.join("o")).unwrap(); // opaque dir
    std::fs::write(m.join("o/only"), b"only").unwrap();
    std::os::unix::fs::symlink("../etc/hosts", m.join("newdir/link")).unwrap();
    run(Command::new("mkfifo").arg(m.join("newdir/fifo")));
    run(Command::new("mknod").arg(m.join("newdir/tty")).args(["c", "5", "0"]));
    run(Command::new("setfattr").args(["-n", "user.k", "-v", "v"]).arg(m.join("newfile")));
    let long = m.join("newdir").join("l".repeat(120)).join("m".repeat(200));
    std::fs::create_dir_all(long.parent().unwrap()).unwrap();
    std::fs::write(&long, b"long").unwrap();
    std::os::unix::fs::chown(m.join("newfile"), Some(3_000_000), Some(4_000_000)).unwrap();
    // needs PAX ids
}

fn merged(lowers: &[PathBuf], at: &Path) -> Snapshot {
    let _m = Mount::overlay_ro(lowers, at);
    snapshot(at).unwrap()
}

#[test]
fn diff_of_kernel_upper_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let lowers = edge_lowers(t.path());
    let upper = t.path().join("upper");
    let expected = {
        let m = Mount::overlay_rw(&lowers, &upper, &t.path().join("work"), &t.path().join("rw"));
        make_changes(&m.0);
        snapshot(&m.0).unwrap()
    };

    let mut tar = Vec::new();
    let stats = diff(&upper, &lowers, &mut tar, &DiffOptions::default()).unwrap();
    assert_eq!(stats.whiteouts, 2, "{stats:?}");
    assert_eq!(stats.opaques, 1, "{stats:?}");
    assert_eq!(stats.hardlinks, 1, "{stats:?}");

    // The tar has the OCI spellings, and GNU tar reads it.
    let listing =
        run(Command::new("tar").arg("-tvf").arg("-").arg("--numeric-owner").env("LC_ALL", "C").stdin({
            let p = t.path().join("diff.tar");
            std::fs::write(&p, &tar).unwrap();
            File::open(p).unwrap()
        }));
    for want in [
        "w/.wh.keep",
        "usr/.wh.share",
        "o/.wh..wh..opq",
        "newdir/sub/f link to newdir/f-link",
        "3000000/4000000",
    ] {
        assert!(listing.contains(want), "tar listing lacks {want:?}:\n{listing}");
    }

    let l4 = t.path().join("L4");
    apply(&tar[..], &l4, &ApplyOptions { lowers: lowers.clone(), ..Default::default() }).unwrap();
    let mut all = lowers.clone();
    all.insert(0, l4);
    let got = merged(&all, &t.path().join("ro"));
    let d = diff_trees(&expected, &got, &CompareOptions::default());
    assert!(d.is_empty(), "merged rw view (first) vs re-applied diff (second):\n{}", d.join("\n"));
}

#[test]
fn diffs_are_deterministic_with_source_date_epoch() {
    let t = tempfile::tempdir().unwrap();
    let lowers = edge_lowers(t.path());
    let upper = t.path().join("upper");
    {
        let m = Mount::overlay_rw(&lowers, &upper, &t.path().join("work"), &t.path().join("rw"));
        make_changes(&m.0);
    }
    let opts = DiffOptions { source_date_epoch: Some(1_000_000_000) };
    let mut a = Vec::new();
    let mut b = Vec::new();
    diff(&upper, &lowers, &mut a, &opts).unwrap();
    // Touch everything: only mtimes change, which the epoch clamps away.
    run(Command::new("find").arg(&upper).args(["-exec", "touch", "-h", "{}", "+"]));
    diff(&upper, &lowers, &mut b, &opts).unwrap();
    assert!(a == b, "two diffs of the same upper differ");
    let mut ar = tar::Archive::new(&a[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        assert!(e.header().mtime().unwrap() <= 1_000_000_000);
        assert!(e.header().username_bytes().unwrap_or_default().is_empty());
    }
    let x = diff_to_blob(&upper, &lowers, Vec::new(), &opts).unwrap();
    let mut out = Vec::new();
    let y = diff_to_blob(&upper, &lowers, &mut out, &opts).unwrap();
    assert_eq!((x.digest.clone(), x.diff_id.clone()), (y.digest.clone(), y.diff_id.clone()));
    assert_eq!(y.diff_id, rimg::digest::Digest::of_bytes(&a));
    assert_eq!(y.digest, rimg::digest::Digest::of_bytes(&out));
    assert_eq!(y.size, out.len() as u64);
    // GNU gzip reads the blob back to exactly the tar.
    let blob = t.path().join("blob.gz");
    std::fs::write(&blob, &out).unwrap();
    let plain = Command::new("gzip").arg("-dc").arg(&blob).output().unwrap();
    assert!(plain.status.success());
    assert!(plain.stdout == a, "gzip -dc of the blob is not the tar");
}

#[test]
fn metacopy_uppers_read_data_from_lowers() {
    let t = tempfile::tempdir().unwrap();
    let lowers = edge_lowers(t.path());
    let upper = t.path().join("upper");
    let work = t.path().join("work");
    let rw = t.path().join("rw");
    for d in [&upper, &work, &rw] {
        std::fs::create_dir_all(d).unwrap();
    }
    let lower = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let opts =
        format!("lowerdir={lower},upperdir={},workdir={},metacopy=on", upper.display(), work.display());
    run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&rw));
    let expected = {
        let m = Mount(rw.clone());
        std::fs::set_permissions(m.0.join("usr/bin/busybox"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::os::unix::fs::chown(m.0.join("etc/hosts"), Some(12), Some(34)).unwrap();
        snapshot(&m.0).unwrap()
    };
    let meta = std::process::Command::new("getfattr")
        .args(["-h", "-d", "-m", "trusted.overlay.metacopy"])
        .arg(upper.join("usr/bin/busybox"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&meta.stdout).contains("metacopy"),
        "kernel did not make a metacopy upper"
    );
    assert_eq!(std::fs::metadata(upper.join("usr/bin/busybox")).unwrap().blocks(), 0);

    let mut tar = Vec::new();
    let stats = diff(&upper, &lowers, &mut tar, &DiffOptions::default()).unwrap();
    assert_eq!(stats.metacopies, 2, "{stats:?}");
    let l4 = t.path().join("L4");
    apply(&tar[..], &l4, &ApplyOptions { lowers: lowers.clone(), ..Default::default() }).unwrap();
    let mut all = lowers.clone();
    all.insert(0, l4);
    let got = merged(&all, &t.path().join("ro"));
    let d = diff_trees(&expected, &got, &CompareOptions::default());
    assert!(d.is_empty(), "metacopy view (first) vs re-applied diff (second):\n{}", d.join("\n"));
}

use std::os::unix::fs::MetadataExt;

#[test]
fn renamed_lower_directories_are_exported_whole() {
    let t = tempfile::tempdir().unwrap();
    let lowers = edge_lowers(t.path());
    let upper = t.path().join("upper");
    let work = t.path().join("work");
    let rw = t.path().join("rw");
    for d in [&upper, &work, &rw] {
        std::fs::create_dir_all(d).unwrap();
    }
    let lower = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={},redirect_dir=on,metacopy=on",
        upper.display(),
        work.display()
    );
    run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&rw));
    let expected = {
        let m = Mount(rw.clone());
        // Across directories (absolute redirect) and within one (relative redirect).
        std::fs::rename(m.0.join("usr/bin"), m.0.join("moved-bin")).unwrap();
        std::fs::rename(m.0.join("home/user"), m.0.join("home/renamed")).unwrap();
        std::fs::write(m.0.join("moved-bin/added"), b"added").unwrap();
        std::fs::remove_file(m.0.join("moved-bin/su")).unwrap();
        std::fs::set_permissions(m.0.join("moved-bin/busybox"), std::fs::Permissions::from_mode(0o711))
            .unwrap();
        snapshot(&m.0).unwrap()
    };
    let redirect = Command::new("getfattr")
        .args(["-h", "--only-values", "-n", "trusted.overlay.redirect"])
        .arg(upper.join("moved-bin"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&redirect.stdout).contains("usr/bin"), "kernel wrote no redirect");

    let mut tar = Vec::new();
    let stats = diff(&upper, &lowers, &mut tar, &DiffOptions::default()).unwrap();
    assert!(stats.opaques >= 2, "{stats:?}");
    let l4 = t.path().join("L4");
    apply(&tar[..], &l4, &ApplyOptions { lowers: lowers.clone(), ..Default::default() }).unwrap();
    let mut all = lowers.clone();
    all.insert(0, l4);
    let got = merged(&all, &t.path().join("ro"));
    let d = diff_trees(&expected, &got, &CompareOptions::default());
    assert!(d.is_empty(), "redirect view (first) vs re-applied diff (second):\n{}", d.join("\n"));
}
