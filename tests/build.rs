//! `rimg build` on the Dockerfile.examples, run with `rimg run`, pushed with `rimg push` and checked by
//! skopeo and umoci: every example prints what its README says, a rebuild is all cache hits with the same
//! digest, SOURCE_DATE_EPOCH makes a no-cache rebuild bit-identical, and a Basic-auth registry takes a push
//! only with credentials.

mod common;

use common::registry::TestRegistry;
use common::{assert_ok, repo_root, run_tool, TempRoot};
use serde_json::Value;

/// (example, extra build args, run args, expected stdout)
const EXAMPLES: &[(&str, &[&str], &[&str], &str)] = &[
    (
        "multistage",
        &[],
        &[],
        "report.txt: OK\nbuilt on Alpine Linux v3.20\napplets: 82\nls: /src: No such file or directory\n",
    ),
    (
        "users",
        &[],
        &[],
        "uid=1000 gid=1000\napp:app 640 secret.txt\napp:app 644 made-by-app\n1000\nPermission denied\n",
    ),
    ("whiteouts", &[], &[], "0\nNo such file or directory\n99rimg\n"),
    ("entrypoint", &[], &[], "hello world\n"),
    ("entrypoint", &[], &["there"], "hello there\n"),
    ("args", &[], &[], "version=1.0 flavor=plain extra= arg-during-build=1.0\nruntime-arg=unset\n"),
    (
        "args",
        &["--build-arg", "VERSION=2.5", "--build-arg", "FLAVOR=spicy"],
        &[],
        "version=2.5 flavor=spicy extra=flavoured arg-during-build=2.5\nruntime-arg=unset\n",
    ),
    ("debian", &[], &[], "user=svc home=/srv/app cwd=/srv/app\npid1=status\nlinks=lo \n"),
    (
        "heredoc-add",
        &[],
        &[],
        "greetings from a heredoc\nfrom the tarball\nDockerfile README bundle.tar.gz kept.txt \n",
    ),
];

fn registry_with_bases() -> TestRegistry {
    let reg = TestRegistry::start();
    reg.push_fixture("busybox", "library/busybox:latest");
    reg.push_fixture("alpine", "library/alpine:3.20.3");
    reg.push_fixture("debian", "library/debian:bookworm");
    reg
}

fn build(root: &TempRoot, mirror: &str, tag: &str, example: &str, extra: &[&str]) -> std::process::Output {
    let dir = repo_root().join("Dockerfile.examples").join(example);
    let mut args = vec!["--registry-mirror", mirror, "build", "-t", tag];
    args.extend_from_slice(extra);
    let d = dir.display().to_string();
    args.push(&d);
    root.rimg(&args)
}

fn image_id(root: &TempRoot, tag: &str) -> String {
    assert_ok(&root.rimg(&["inspect", "--format", "{{.Id}}", tag]), "inspect").trim().to_string()
}

#[test]
fn examples_build_run_and_rebuild_from_cache() {
    let reg = registry_with_bases();
    let mirror = reg.url();
    let root = TempRoot::new();
    for (i, (example, extra, run_args, expected)) in EXAMPLES.iter().enumerate() {
        let tag = format!("example/{example}:{i}");
        let out = build(&root, &mirror, &tag, example, extra);
        let text = assert_ok(&out, &format!("build {example}"));
        assert!(text.contains("Successfully built"), "{text}");
        let first = image_id(&root, &tag);
        let mut args = vec!["run", "--rm", tag.as_str()];
        args.extend_from_slice(run_args);
        let got = assert_ok(&root.rimg(&args), &format!("run {example}"));
        assert_eq!(&got, expected, "{example} printed something else");

        // A second build is all cache hits (no RUN executes) and yields the same image.
        let again = assert_ok(&build(&root, &mirror, &tag, example, extra), "rebuild");
        assert!(!again.contains("Running in"), "{example}: rebuild executed a step:\n{again}");
        assert_eq!(image_id(&root, &tag), first, "{example}: cached rebuild changed the digest");
    }
}

#[test]
fn source_date_epoch_makes_builds_bit_identical() {
    let reg = registry_with_bases();
    let mirror = reg.url();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let root = TempRoot::new();
        let out = common::rimg_cmd(root.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["--registry-mirror", &mirror, "build", "--no-cache", "-t", "repro:1"])
            .arg(repo_root().join("Dockerfile.examples/whiteouts"))
            .output()
            .unwrap();
        assert_ok(&out, "reproducible build");
        let manifest =
            assert_ok(&root.rimg(&["inspect", "--format", "{{.Descriptor.digest}}", "repro:1"]), "inspect");
        ids.push((image_id(&root, "repro:1"), manifest));
    }
    assert_eq!(ids[0], ids[1], "two no-cache builds with SOURCE_DATE_EPOCH differ");
}

#[test]
fn failing_run_reports_exit_code_and_leaves_nothing() {
    let reg = registry_with_bases();
    let root = TempRoot::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox:latest\nRUN echo visible-output; exit 3\n")
        .unwrap();
    let out =
        root.rimg(&["--registry-mirror", &reg.url(), "build", "-t", "bad:1", ctx.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("visible-output"), "the failing step's output is shown: {stdout}");
    assert!(stderr.contains("returned a non-zero code: 3"), "{stderr}");
    // No container left behind, no mounts.
    let left: Vec<_> = std::fs::read_dir(root.path().join("containers"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "containers left: {left:?}");
    assert!(common::mounts_below(root.path()).is_empty());
    // Unsupported syntax: clear error with the line.
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox:latest\nONBUILD RUN x\n").unwrap();
    let out = root.rimg(&["build", ctx.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pushed_images_pass_skopeo_and_umoci_and_basic_auth_is_enforced() {
    let reg = registry_with_bases();
    let root = TempRoot::new();
    let out = build(&root, &reg.url(), "example/multistage:1", "multistage", &[]);
    assert_ok(&out, "build");
    let dest = format!("{}/example/multistage:1", reg.addr);
    assert_ok(&root.rimg(&["push", "example/multistage:1", &dest]), "push");
    let sk = reg.skopeo_inspect("example/multistage:1", false);
    let raw = reg.skopeo_inspect("example/multistage:1", true);
    assert_eq!(raw["config"]["digest"].as_str(), Some(image_id(&root, "example/multistage:1").as_str()));
    assert_eq!(sk["Layers"].as_array().map(Vec::len), Some(2), "busybox layer + COPY layer: {sk}");
    // Pushing again: every blob already there.
    let again = assert_ok(&root.rimg(&["push", "example/multistage:1", &dest]), "push again");
    assert!(again.contains("already exists"), "{again}");

    // umoci's unpack of what skopeo copies out equals what `rimg mount` shows of the image.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("oci");
    run_tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{dest}"),
            &format!("oci:{}:x", layout.display()),
        ],
    );
    let bundle = work.path().join("bundle");
    run_tool("umoci", &["unpack", "--image", &format!("{}:x", layout.display()), bundle.to_str().unwrap()]);
    let merged = work.path().join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    assert_ok(
        &root.rimg(&["mount", "--read-only", "example/multistage:1", merged.to_str().unwrap()]),
        "rimg mount",
    );
    let a = rimg::layer::tree::snapshot(&merged);
    assert_ok(&root.rimg(&["umount", merged.to_str().unwrap()]), "rimg umount");
    let b = rimg::layer::tree::snapshot(&bundle.join("rootfs")).unwrap();
    // rimg's FUSE overlay shows hard-linked lower files as separate inodes (see benches/fs/RESULTS.md).
    let opts = rimg::layer::tree::CompareOptions { hardlinks: false, ..Default::default() };
    let diffs = rimg::layer::tree::diff_trees(&a.unwrap(), &b, &opts);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));

    // A registry with Basic auth: refused without credentials, accepted with them.
    let auth = TestRegistry::builder().htpasswd("builder", "s3cret").start();
    let dest = format!("{}/example/multistage:1", auth.addr);
    let home = tempfile::tempdir().unwrap();
    let denied = common::rimg_cmd(root.path())
        .env("DOCKER_CONFIG", home.path())
        .args(["push", "example/multistage:1", &dest])
        .output()
        .unwrap();
    assert_ne!(denied.status.code(), Some(0));
    let err = String::from_utf8_lossy(&denied.stderr).to_lowercase();
    assert!(
        err.contains("denied") || err.contains("unauthorized") || err.contains("authentication"),
        "{err}"
    );
    let login = common::rimg_cmd(root.path())
        .env("DOCKER_CONFIG", home.path())
        .args(["login", "-u", "builder", "-p", "s3cret", &auth.addr])
        .output()
        .unwrap();
    assert_ok(&login, "login");
    let ok = common::rimg_cmd(root.path())
        .env("DOCKER_CONFIG", home.path())
        .args(["push", "example/multistage:1", &dest])
        .output()
        .unwrap();
    assert_ok(&ok, "authenticated push");
    let inspected = run_tool(
        "skopeo",
        &["inspect", "--tls-verify=false", "--creds", "builder:s3cret", &format!("docker://{dest}")],
    );
    let v: Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(2));
}

/// The config of the image `tag` in `root`, as stored.
fn stored_config(root: &TempRoot, tag: &str) -> Value {
    let id = image_id(root, tag);
    let hex = id.strip_prefix("sha256:").unwrap_or(&id);
    serde_json::from_slice(&std::fs::read(root.path().join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// docker's config fields the OCI spec does not name (Healthcheck, Shell) reach the image and survive a
/// build FROM it, as BuildKit keeps them; the inherited SHELL wraps the new stage's shell-form CMD.
#[test]
fn docker_config_fields_are_written_and_inherited() {
    let root = TempRoot::new();
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile = ctx.path().join("Dockerfile");
    std::fs::write(
        &dockerfile,
        "FROM scratch\nSHELL [\"/bin/ash\", \"-eo\", \"pipefail\", \"-c\"]\n\
         HEALTHCHECK --interval=30s --retries=2 CMD [\"/bin/check\"]\nSTOPSIGNAL SIGINT\nLABEL a=1\n",
    )
    .unwrap();
    assert_ok(&root.rimg(&["build", "-q", "-t", "base:1", ctx.path().to_str().unwrap()]), "build base");
    std::fs::write(&dockerfile, "FROM base:1\nLABEL b=2\nCMD serve --port 80\n").unwrap();
    assert_ok(&root.rimg(&["build", "-q", "-t", "child:1", ctx.path().to_str().unwrap()]), "build child");

    let base = stored_config(&root, "base:1");
    let child = stored_config(&root, "child:1");
    let healthcheck =
        serde_json::json!({"Interval": 30_000_000_000u64, "Retries": 2, "Test": ["CMD", "/bin/check"]});
    assert_eq!(base["config"]["Healthcheck"], healthcheck, "{base}");
    assert_eq!(child["config"]["Healthcheck"], healthcheck, "{child}");
    assert_eq!(child["config"]["Shell"], serde_json::json!(["/bin/ash", "-eo", "pipefail", "-c"]));
    assert_eq!(child["config"]["StopSignal"], "SIGINT");
    assert_eq!(child["config"]["Labels"], serde_json::json!({"a": "1", "b": "2"}));
    assert_eq!(
        child["config"]["Cmd"],
        serde_json::json!(["/bin/ash", "-eo", "pipefail", "-c", "serve --port 80"])
    );
    let history = child["history"].as_array().unwrap();
    assert_eq!(history.len(), 6, "base's 4 entries and child's 2: {child}");
}
