//! The binary answers to `rimg-overlayfs` (the name mount.fuse3 and podman's mount_program call) exactly as
//! `rimg overlayfs`.

mod common;

use std::process::Command;

#[test]
fn invoked_as_rimg_overlayfs_it_mounts_like_rimg_overlayfs() {
    let dir = tempfile::tempdir().unwrap();
    let alias = dir.path().join("rimg-overlayfs");
    std::os::unix::fs::symlink(common::rimg_bin(), &alias).unwrap();
    let (lower, upper, work, mnt) =
        (dir.path().join("lower"), dir.path().join("upper"), dir.path().join("work"), dir.path().join("mnt"));
    for d in [&lower, &upper, &work, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(lower.join("hello"), "from the lower\n").unwrap();
    let opts =
        format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    let out = Command::new(&alias).args(["-o", &opts, mnt.to_str().unwrap()]).output().unwrap();
    common::assert_ok(&out, "rimg-overlayfs mount");
    let seen = std::fs::read_to_string(mnt.join("hello"));
    std::fs::write(mnt.join("new"), "x").unwrap();
    let umount = Command::new(common::rimg_bin()).args(["umount", mnt.to_str().unwrap()]).output().unwrap();
    common::assert_ok(&umount, "rimg umount");
    assert_eq!(seen.unwrap(), "from the lower\n");
    assert!(upper.join("new").exists(), "the write went to the upper dir");
    assert!(common::mounts_below(dir.path()).is_empty());
}
