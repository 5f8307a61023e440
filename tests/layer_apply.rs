//! `layer::apply` against the oracles: kernel overlayfs over the applied layer directories must show
//! exactly the tree `umoci unpack` produces from the same layer tars.

#[path = "layer_support.rs"]
mod support;

use rimg::layer::tree::{diff_trees, snapshot, CompareOptions};
use rimg::layer::{apply, ApplyOptions};
use std::fs::File;
use std::path::PathBuf;
use support::*;

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
