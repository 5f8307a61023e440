//! Issue 15, "the repo stands alone": a fresh clone with nothing beside it must run the README's commands.
//! A clone in an empty directory is checked two ways: no tracked file (but prose) names a path of this
//! machine or a `shared/` beside the repo, and building fixture images from the clone, traced with
//! strace, touches no file outside the clone and its output directory — neither the checkout it was
//! cloned from nor anything beside the clone.

mod common;

use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// `p` made absolute against `cwd` and cleaned lexically (`..` and `.` resolved without the filesystem).
fn clean(p: &str, cwd: &Path) -> PathBuf {
    let joined = if p.starts_with('/') { PathBuf::from(p) } else { cwd.join(p) };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Every quoted path argument of the traced file system calls in an strace log (also of calls that failed:
/// looking for a file outside is as wrong as finding one).
fn traced_paths(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let start = l.find('"')? + 1;
            let len = l[start..].find('"')?;
            Some(l[start..start + len].to_string())
        })
        .collect()
}

#[test]
fn a_fresh_clone_reads_nothing_outside_itself() {
    let src = common::repo_root();
    let dir = tempfile::Builder::new().prefix("rimg-clone-").tempdir().expect("temp dir");
    let dir = std::fs::canonicalize(dir.path()).expect("canonical");
    let clone = dir.join("clone");
    let status = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(&src)
        .arg(&clone)
        .status()
        .expect("git clone");
    assert!(status.success(), "git clone");

    // No tracked file but prose names an absolute path of this machine or a shared/ beside the repo.
    let grep = Command::new("git")
        .arg("-C")
        .arg(&clone)
        .args([
            "grep",
            "-n",
            "-F",
            "-e",
            "../shared",
            "-e",
            "/work/",
            "--",
            ":!*.md",
            ":!tests/repo_standalone.rs",
        ])
        .output()
        .expect("git grep");
    assert!(grep.stdout.is_empty(), "paths outside the repo:\n{}", String::from_utf8_lossy(&grep.stdout));

    // Build the cheap fixture images from the clone and trace every file it touches.
    let out = dir.join("out");
    let trace = dir.join("trace");
    // an empty home of its own (tools look for their dotfiles there)
    let home = dir.join("home");
    std::fs::create_dir(&home).expect("home");
    let status = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=%file", "-o"])
        .arg(&trace)
        .arg("bash")
        .arg(clone.join("image-fixtures/build.sh"))
        .args(["--only", "alpine,busybox"])
        .arg(&out)
        .current_dir(&clone)
        // as on a fresh machine: none of cargo's variables (LD_LIBRARY_PATH points into this checkout)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", &home)
        .status()
        .expect("strace bash build.sh");
    assert!(status.success(), "fixture build from the clone");
    assert!(out.join("alpine/index.json").is_file() && out.join("busybox/index.json").is_file());
    let log = std::fs::read_to_string(&trace).expect("trace");
    let mut outside: Vec<String> = traced_paths(&log)
        .into_iter()
        .filter(|p| {
            let c = clean(p, &clone);
            let ours = [&clone, &out, &home].iter().any(|d| c.starts_with(d));
            c.starts_with(&src) || (c.starts_with(&dir) && c != dir && !ours)
        })
        .filter(|p| !p.starts_with(trace.to_string_lossy().as_ref()))
        .collect();
    outside.sort();
    outside.dedup();
    outside.truncate(20);
    assert!(outside.is_empty(), "the build touched files outside the clone: {outside:?}");
}
