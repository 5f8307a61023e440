//! Throughput probe of the layer code against the shell tools that do the same job, run by hand (it
//! prints figures and asserts nothing, so it is a bench, not a test):
//!
//! - `LAYER_BENCH_TGZ=/path/layer.tar.gz`: `layer::apply` of a gzip layer against the floor
//!   `gzip -dc | tar -x`, best of `LAYER_BENCH_ROUNDS` (default 2) alternating rounds, unpacked under
//!   `LAYER_BENCH_DIR` (default /var/tmp); then decompression alone, `gzip -dc` against zlib-rs;
//! - `LAYER_BENCH_UPPER=/path/dir`: `layer::diff_to_blob` of a directory against `tar -c | gzip -6`.
//!
//! `LAYER_BENCH_TGZ=... LAYER_BENCH_UPPER=... cargo bench --bench layer_throughput`
//! (`cargo bench` builds with the release profile; an unset variable skips its part).

use anyhow::{bail, Context, Result};
use rimg::layer::{apply, decompress, diff_to_blob, ApplyOptions, Compression, DiffOptions};
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn main() -> Result<()> {
    let tgz = std::env::var("LAYER_BENCH_TGZ").ok();
    let upper = std::env::var("LAYER_BENCH_UPPER").ok();
    if tgz.is_none() && upper.is_none() {
        eprintln!(
            "set LAYER_BENCH_TGZ (a .tar.gz layer) and/or LAYER_BENCH_UPPER (a directory); nothing to do"
        );
    }
    if let Some(tgz) = tgz {
        apply_vs_gzip_tar(&tgz)?;
    }
    if let Some(upper) = upper {
        diff_vs_tar_gzip(&upper)?;
    }
    Ok(())
}

/// Runs `sh -c SCRIPT`, failing with its status unless it exits 0.
fn sh(script: &str) -> Result<()> {
    let status =
        Command::new("sh").arg("-c").arg(script).status().with_context(|| format!("run {script}"))?;
    if !status.success() {
        bail!("{script}: {status}");
    }
    Ok(())
}

/// `layer::apply` against `gzip -dc | tar -x`, then decompression alone.
fn apply_vs_gzip_tar(tgz: &str) -> Result<()> {
    File::open(tgz).with_context(|| format!("LAYER_BENCH_TGZ={tgz}"))?;
    let base = std::env::var("LAYER_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let t = tempfile::tempdir_in(&base).with_context(|| format!("temp dir in {base}"))?;
    let rounds: usize = std::env::var("LAYER_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let (mut floor, mut ours) = (f64::MAX, f64::MAX);
    for round in 0..rounds {
        // Alternate the order, and start each run with no dirty pages from the previous one.
        for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            sh("sync")?;
            if which == 0 {
                let d = t.path().join(format!("tar{round}"));
                std::fs::create_dir(&d)?;
                let s = Instant::now();
                sh(&format!("gzip -dc '{tgz}' | tar -x -C '{}'", d.display()))?;
                floor = floor.min(s.elapsed().as_secs_f64());
                std::fs::remove_dir_all(&d)?;
            } else {
                let d = t.path().join(format!("rimg{round}"));
                let s = Instant::now();
                let r =
                    decompress(Compression::Gzip, File::open(tgz).with_context(|| format!("open {tgz}"))?)?;
                let stats = apply(r, &d, &ApplyOptions::default())?;
                ours = ours.min(s.elapsed().as_secs_f64());
                if round == 0 {
                    eprintln!("{stats:?}");
                }
                std::fs::remove_dir_all(&d)?;
            }
        }
    }
    sh("sync")?;
    let s = Instant::now();
    sh(&format!("gzip -dc '{tgz}' > /dev/null"))?;
    let gz_only = s.elapsed().as_secs_f64();
    let s = Instant::now();
    let mut r = decompress(Compression::Gzip, File::open(tgz)?)?;
    std::io::copy(&mut r, &mut std::io::sink())?;
    let ours_only = s.elapsed().as_secs_f64();
    eprintln!("decompression only: gzip -dc {gz_only:.2}s   rimg (zlib-rs) {ours_only:.2}s");
    eprintln!("gzip -dc | tar -x: {floor:.2}s   rimg apply: {ours:.2}s   ratio {:.2}", ours / floor);
    Ok(())
}

/// `layer::diff_to_blob` of a large directory against `tar -c | gzip -6`.
fn diff_vs_tar_gzip(upper: &str) -> Result<()> {
    let s = Instant::now();
    sh(&format!("tar -C '{upper}' -cf - . | gzip -6 > /dev/null"))?;
    let floor = s.elapsed().as_secs_f64();
    let s = Instant::now();
    let info = diff_to_blob(Path::new(upper), &[], std::io::sink(), &DiffOptions::default())?;
    let ours = s.elapsed().as_secs_f64();
    eprintln!(
        "{} -> {} bytes; tar | gzip -6: {floor:.2}s   rimg diff_to_blob: {ours:.2}s   ratio {:.2}",
        info.diff_size,
        info.size,
        ours / floor
    );
    Ok(())
}
