//! `rimg build` items of issue 15: `build -` (a Dockerfile or a plain/gzip/xz context tar on stdin),
//! `-q` (only the ID; RUN output hidden), the unused `--build-arg` warning, `--target` checked before
//! any step runs, stages the target does not need skipped (BuildKit), `--label`, `--iidfile`, and
//! `--cache-from` of an image pulled from a registry.

mod common;

use common::registry::TestRegistry;
use common::run::{code, run_with_deadline, stderr, stdout, Root};
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

/// `rimg build ARGS` with `input` on stdin.
fn build(root: &Root, args: &[&str], input: &[u8]) -> std::process::Output {
    let (r, mut w) = std::io::pipe().expect("pipe");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&data);
    });
    let mut cmd = common::rimg_cmd(root.path());
    cmd.arg("build").args(args).stdin(Stdio::from(r));
    let out = run_with_deadline(&mut cmd, Duration::from_secs(180));
    let _ = writer.join();
    out
}

/// A tar of `files` (name, content) made by the system's tar, compressed by `compress` (`cat`, `gzip`, `xz`).
fn context_tar(files: &[(&str, &str)], compress: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let tar = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("tar -C '{}' -cf - . | {compress}", dir.path().display()))
        .output()
        .unwrap();
    assert!(tar.status.success());
    tar.stdout
}

#[test]
fn build_from_stdin_dockerfile_or_context_tar() {
    let root = Root::new();
    let out = build(&root, &["-t", "plain", "-"], b"FROM busybox\nRUN echo from-stdin > /f\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(root.ok(&["run", "--rm", "plain", "cat", "/f"]), "from-stdin\n");
    let have = |tool: &str| {
        std::process::Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
    };
    for compress in ["cat", "gzip", "xz"].into_iter().filter(|c| *c == "cat" || have(c)) {
        let tar = context_tar(
            &[("Dockerfile", "FROM busybox\nCOPY hello /hello\n"), ("hello", compress)],
            compress,
        );
        let out = build(&root, &["-t", "ctx", "-"], &tar);
        assert_eq!(code(&out), 0, "{compress}: {}", stderr(&out));
        assert_eq!(
            root.ok(&["run", "--rm", "ctx", "cat", "/hello"]),
            compress,
            "context from a {compress} tar"
        );
    }
    // -f names a Dockerfile inside the tar.
    let tar = context_tar(&[("Other.df", "FROM busybox\nCOPY x /x\n"), ("x", "y")], "gzip");
    assert_eq!(code(&build(&root, &["-f", "Other.df", "-t", "other", "-"], &tar)), 0);
    // Nothing of a context from stdin stays behind.
    let ingest: Vec<_> = std::fs::read_dir(root.path().join("ingest")).unwrap().flatten().collect();
    assert!(ingest.is_empty(), "unpacked contexts are removed: {ingest:?}");
}

#[test]
fn quiet_prints_only_the_id_and_unused_build_args_are_reported() {
    let root = Root::new();
    let df = b"FROM busybox\nARG USED\nRUN echo RUN-OUTPUT-MARKER $USED\n";
    let out = build(&root, &["-q", "--build-arg", "USED=1", "--build-arg", "EXTRA=2", "-"], df);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("sha256:") && text.lines().count() == 1, "only the ID: {text:?}");
    assert!(!stderr(&out).contains("RUN-OUTPUT-MARKER"), "RUN output hidden: {}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "[Warning] One or more build-args [EXTRA] were not consumed");
    let out = build(&root, &["--build-arg", "USED=1", "--no-cache", "-"], df);
    assert!(stdout(&out).contains("RUN-OUTPUT-MARKER 1"), "without -q the output shows");
    assert!(!stderr(&out).contains("[Warning]"), "every --build-arg used: no warning");
}

#[test]
fn target_is_checked_first_and_unneeded_stages_are_skipped() {
    let root = Root::new();
    let df = b"FROM busybox AS broken\nRUN exit 7\nFROM busybox AS base\nRUN echo base > /b\nFROM base AS final\nRUN cat /b\n";
    let out = build(&root, &["--target", "nosuch", "-"], df);
    assert_eq!(code(&out), 125);
    assert_eq!(stderr(&out).trim(), "rimg: target stage \"nosuch\" could not be found");
    assert!(!stdout(&out).contains("Step"), "nothing ran: {}", stdout(&out));
    assert!(root.container_ids().is_empty());
    // The failing stage is not needed by the last stage: BuildKit skips it, and so does rimg.
    let out = build(&root, &["-t", "skipped", "-"], df);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(!stdout(&out).contains("exit 7"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("Step 1/4 : FROM busybox AS base"),
        "steps counted among those run: {}",
        stdout(&out)
    );
    let out = build(&root, &["--target", "base", "-t", "base", "-"], df);
    assert_eq!(code(&out), 0);
    assert!(!stdout(&out).contains("cat /b"), "stages after the target do not run");
}

#[test]
fn labels_and_iidfile() {
    let root = Root::new();
    let iid = root.path().join("iid");
    let out = build(
        &root,
        &[
            "-t",
            "lab",
            "--label",
            "org.example.team=core",
            "--label",
            "flag",
            "--iidfile",
            &iid.to_string_lossy(),
            "-",
        ],
        b"FROM busybox\nLABEL a=b\n",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let labels = root.ok(&["inspect", "-f", "{{index .Config.Labels \"org.example.team\"}} {{index .Config.Labels \"a\"}} {{index .Config.Labels \"flag\"}}|", "lab"]);
    assert_eq!(labels.trim(), "core b |");
    let id = std::fs::read_to_string(&iid).unwrap();
    assert_eq!(id, root.ok(&["inspect", "-f", "{{.Id}}", "lab"]).trim(), "the ID, without a newline");
}

#[test]
fn cache_from_a_registry_image() {
    let root = Root::new();
    let reg = TestRegistry::start();
    let name = format!("{}/app:cache", reg.url().trim_start_matches("http://"));
    let df = b"FROM busybox\nRUN date +%s%N > /stamp\nENV A=1\nRUN cat /stamp > /copy\n";
    let out = build(&root, &["-q", "-t", &name, "-"], df);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let first = stdout(&out).trim().to_string();
    root.ok(&["push", "-q", &name]);
    // Forget it all: the image and the build cache.
    root.ok(&["rmi", &name]);
    root.ok(&["system", "prune", "-f"]);
    let out = build(&root, &["--cache-from", &name, "-t", "again", "-"], df);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches(" ---> Using cache").count(), 2, "both RUN steps from the pulled image:\n{text}");
    assert!(!text.contains("Running in"), "{text}");
    assert_eq!(root.ok(&["inspect", "-f", "{{.Id}}", "again"]).trim(), first, "the very same image");
    // A changed step breaks the chain from there on.
    let changed = b"FROM busybox\nRUN date +%s%N > /stamp\nENV A=2\nRUN cat /stamp > /copy\n";
    let out = build(&root, &["--cache-from", &name, "-"], changed);
    assert_eq!(stdout(&out).matches(" ---> Using cache").count(), 1, "{}", stdout(&out));
    root.ok(&["system", "prune", "-f"]);
    let out = build(&root, &["--no-cache", "--cache-from", &name, "-"], df);
    assert_eq!(stdout(&out).matches("Running in").count(), 2, "--no-cache ignores --cache-from");
}
