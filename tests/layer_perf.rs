//! Throughput check for `layer::apply` against the floor `gzip -dc | tar -x` (run by hand, prints the
//! ratio; no timing asserts):
//! `LAYER_BENCH_TGZ=/path/layer.tar.gz cargo test --release --test layer_perf -- --ignored --nocapture`

#[path = "layer_support.rs"]
mod support;

use rimg::layer::{apply, decompress, ApplyOptions, Compression};
use std::fs::File;
use std::process::Command;
use std::time::Instant;

#[test]
#[ignore]
fn apply_throughput_vs_gzip_tar() {
    let Ok(tgz) = std::env::var("LAYER_BENCH_TGZ") else {
        eprintln!("LAYER_BENCH_TGZ not set; skipping");
        return;
    };
    let t =
        tempfile::tempdir_in(std::env::var("LAYER_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).unwrap();
    let mut floor = f64::MAX;
    let mut ours = f64::MAX;
    let rounds: usize = std::env::var("LAYER_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    for round in 0..rounds {
        // Alternate the order, and start each run with no dirty pages from the previous one.
        for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            support::run(&mut Command::new("sync"));
            if which == 0 {
                let d = t.path().join(format!("tar{round}"));
                std::fs::create_dir(&d).unwrap();
                let s = Instant::now();
                support::run(
                    Command::new("sh")
                        .arg("-c")
                        .arg(format!("gzip -dc '{tgz}' | tar -x -C '{}'", d.display())),
                );
                floor = floor.min(s.elapsed().as_secs_f64());
                std::fs::remove_dir_all(&d).unwrap();
            } else {
                let d = t.path().join(format!("rimg{round}"));
                let s = Instant::now();
                let r = decompress(Compression::Gzip, File::open(&tgz).unwrap()).unwrap();
                let stats = apply(r, &d, &ApplyOptions::default()).unwrap();
                ours = ours.min(s.elapsed().as_secs_f64());
                if round == 0 {
                    eprintln!("{stats:?}");
                }
                std::fs::remove_dir_all(&d).unwrap();
            }
        }
    }
    support::run(&mut Command::new("sync"));
    let s = Instant::now();
    support::run(Command::new("sh").arg("-c").arg(format!("gzip -dc '{tgz}' > /dev/null")));
    let gz_only = s.elapsed().as_secs_f64();
    let s = Instant::now();
    let mut r = decompress(Compression::Gzip, File::open(&tgz).unwrap()).unwrap();
    std::io::copy(&mut r, &mut std::io::sink()).unwrap();
    let ours_only = s.elapsed().as_secs_f64();
    eprintln!("decompression only: gzip -dc {gz_only:.2}s   rimg (zlib-rs) {ours_only:.2}s");
    eprintln!("gzip -dc | tar -x: {floor:.2}s   rimg apply: {ours:.2}s   ratio {:.2}", ours / floor);
}

/// `diff_to_blob` of a large directory vs `tar -c | gzip -6` (set LAYER_BENCH_UPPER to a directory).
#[test]
#[ignore]
fn diff_to_blob_throughput_vs_tar_gzip() {
    let Ok(upper) = std::env::var("LAYER_BENCH_UPPER") else {
        eprintln!("LAYER_BENCH_UPPER not set; skipping");
        return;
    };
    let s = Instant::now();
    support::run(Command::new("sh").arg("-c").arg(format!("tar -C '{upper}' -cf - . | gzip -6 > /dev/null")));
    let floor = s.elapsed().as_secs_f64();
    let s = Instant::now();
    let info = rimg::layer::diff_to_blob(
        std::path::Path::new(&upper),
        &[],
        std::io::sink(),
        &rimg::layer::DiffOptions::default(),
    )
    .unwrap();
    let ours = s.elapsed().as_secs_f64();
    eprintln!(
        "{} -> {} bytes; tar | gzip -6: {floor:.2}s   rimg diff_to_blob: {ours:.2}s   ratio {:.2}",
        info.diff_size,
        info.size,
        ours / floor
    );
}
