//! `COPY`/`ADD` cannot read host files through symlinks (issue 19, finding 1).
//!
//! A build context, or a stage's rootfs, is the build's `/`: a symlink in it is resolved inside it, as
//! docker/BuildKit and buildah do, so an absolute or `..` link can never name a host file. Each attack
//! below copied a host file into the image before the fix (the oracle: no file of the store carries the
//! host file's random content afterwards); the last test shows that links that stay inside still work
//! the docker way (followed when named as the source, kept as links inside a copied tree).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use support::{assert_ok, TempRoot, TestRegistry};

/// A host directory holding `secret` and `sub/secret` with random content nobody else has.
struct HostSecret {
    dir: tempfile::TempDir,
    marker: String,
}

impl HostSecret {
    fn new() -> HostSecret {
        let dir = tempfile::Builder::new().prefix("rimg-host-secret-").tempdir().expect("host dir");
        let marker = format!("host-secret-{:016x}{:016x}", rand_u64(), rand_u64());
        std::fs::write(dir.path().join("secret"), &marker).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/secret"), &marker).unwrap();
        HostSecret { dir, marker }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b).unwrap();
    u64::from_ne_bytes(b)
}

/// Files below `dir` (symlinks not followed) whose content contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(m) = p.symlink_metadata() else { continue };
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file()
                && std::fs::read(&p).is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
            {
                hits.push(p);
            }
        }
    }
    hits
}

/// A registry with busybox, as the builds' base.
fn registry() -> TestRegistry {
    let reg = TestRegistry::start();
    reg.push_fixture("busybox", "library/busybox:latest");
    reg
}

fn build(root: &TempRoot, reg: &TestRegistry, ctx: &Path, tag: &str) -> Output {
    root.rimg(&["--registry-mirror", &reg.url(), "build", "--no-cache", "-t", tag, ctx.to_str().unwrap()])
}

/// A fresh context holding `dockerfile` and the symlinks `links` (name, target).
fn context(dockerfile: &str, links: &[(&str, String)]) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    for (name, target) in links {
        let p = ctx.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }
    ctx
}

/// The build must fail with a one-line "not found" error, and nothing in the store may hold the secret.
fn assert_refused(root: &TempRoot, host: &HostSecret, out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let leaked = files_containing(root.path(), host.marker.as_bytes());
    assert!(leaked.is_empty(), "{what}: the host file was copied into the store: {leaked:?}");
    assert_ne!(out.status.code(), Some(0), "{what}: the build succeeded:\n{stderr}");
    assert!(stderr.contains("not found"), "{what}: unclear error: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{what}: not one line: {stderr}");
}

#[test]
fn copy_cannot_follow_a_context_symlink_to_the_host() {
    let reg = registry();
    let root = TempRoot::new();
    let host = HostSecret::new();
    let hp = host.path().display().to_string();
    let climb = format!("{}{hp}", "../".repeat(12));
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        // An absolute link to a host directory, used as an intermediate component.
        ("FROM busybox\nCOPY evil/secret /x\n", vec![("evil", hp.clone())]),
        ("FROM busybox\nADD evil/sub/secret /x\n", vec![("evil", hp.clone())]),
        // A link to a host file named as the source itself.
        ("FROM busybox\nCOPY evil /x\n", vec![("evil", format!("{hp}/secret"))]),
        // A relative link climbing out of the context.
        ("FROM busybox\nCOPY up/secret /x\n", vec![("up", climb.clone())]),
        // A link in a subdirectory, matched by a wildcard.
        ("FROM busybox\nCOPY d/* /x/\n", vec![("d/evil", format!("{hp}/secret"))]),
        // The parent of a wildcard is a link out.
        ("FROM busybox\nCOPY evil/sec* /x/\n", vec![("evil", hp.clone())]),
    ];
    for (i, (dockerfile, links)) in cases.iter().enumerate() {
        let ctx = context(dockerfile, links);
        let out = build(&root, &reg, ctx.path(), &format!("escape:{i}"));
        assert_refused(&root, &host, &out, dockerfile);
    }
}

#[test]
fn copy_from_a_stage_cannot_follow_its_symlinks_to_the_host() {
    let reg = registry();
    let root = TempRoot::new();
    let host = HostSecret::new();
    let hp = host.path().display().to_string();
    let cases = [
        format!("FROM busybox AS a\nRUN ln -s {hp} /x\nFROM busybox\nCOPY --from=a /x/secret /s\n"),
        format!(
            "FROM busybox AS a\nRUN mkdir /d && ln -s {hp} /d/l\nFROM busybox\nCOPY --from=a /d/l/sub /s/\n"
        ),
        format!(
            "FROM busybox AS a\nRUN ln -s ../../../../..{hp}/secret /x\nFROM busybox\nCOPY --from=a /x /s\n"
        ),
    ];
    for (i, dockerfile) in cases.iter().enumerate() {
        let ctx = context(dockerfile, &[]);
        let out = build(&root, &reg, ctx.path(), &format!("stage-escape:{i}"));
        assert_refused(&root, &host, &out, dockerfile);
    }
}

#[test]
fn links_inside_a_copied_tree_stay_links() {
    let reg = registry();
    let root = TempRoot::new();
    let host = HostSecret::new();
    let hp = host.path().display().to_string();
    let dockerfile = format!(
        "FROM busybox AS a\nRUN mkdir /d && ln -s {hp} /d/l\n\
         FROM busybox\nCOPY tree /t\nCOPY --from=a /d /d\n"
    );
    let ctx = context(&dockerfile, &[("tree/l", hp.clone()), ("tree/f", format!("{hp}/secret"))]);
    let out = build(&root, &reg, ctx.path(), "kept:1");
    assert_ok(&out, "build");
    assert!(files_containing(root.path(), host.marker.as_bytes()).is_empty(), "the host file was copied");
    let script = "for l in /t/l /t/f /d/l; do readlink $l; done";
    let got = assert_ok(&root.rimg(&["run", "--rm", "kept:1", "sh", "-c", script]), "run");
    assert_eq!(got, format!("{hp}\n{hp}/secret\n{hp}\n"));
}

#[test]
fn symlinks_resolve_inside_the_context_as_docker_does() {
    let reg = registry();
    let root = TempRoot::new();
    let ctx = context(
        "FROM busybox AS a\nRUN mkdir -p /data && echo staged > /data/f && ln -s /data /abs\n\
         FROM busybox\n\
         COPY abs/file /a\nCOPY rel/file /r\nCOPY top /t\nCOPY dots/sub/file /u\nCOPY *.txt /g/\n\
         COPY --from=a /abs/f /s\nCOPY sub /\n",
        &[
            ("abs", "/sub".into()),
            ("rel", "sub".into()),
            ("top", "/sub/file".into()),
            ("dots", "../../..".into()),
        ],
    );
    let c = ctx.path();
    std::fs::create_dir(c.join("sub")).unwrap();
    std::fs::write(c.join("sub/file"), "inside\n").unwrap();
    std::fs::write(c.join("keep.txt"), "k").unwrap();
    std::fs::write(c.join("skip.txt"), "s").unwrap();
    std::fs::write(c.join(".dockerignore"), "skip.txt\n").unwrap();
    let out = build(&root, &reg, c, "inside:1");
    assert_ok(&out, "build");
    let got = assert_ok(
        &root.rimg(&[
            "run",
            "--rm",
            "inside:1",
            "sh",
            "-c",
            "cat /a /r /t /u /s /file; ls /g; test -L /t || echo file",
        ]),
        "run",
    );
    assert_eq!(got, "inside\ninside\ninside\ninside\nstaged\ninside\nkeep.txt\nfile\n");
}

#[test]
fn a_run_step_replacing_etc_with_a_host_link_deletes_no_host_file() {
    // After a RUN step the builder drops the empty /etc/hosts and /etc/resolv.conf stubs the runtime
    // made for its bind mounts; a step that turned /etc into a symlink to a host directory must not make
    // it delete that directory's (empty) files instead.
    let reg = registry();
    let root = TempRoot::new();
    let host = HostSecret::new();
    let hp = host.path().display().to_string();
    for f in ["hosts", "resolv.conf"] {
        std::fs::write(host.path().join(f), "").unwrap();
    }
    let ctx = context(&format!("FROM busybox\nRUN mv /etc /etc.moved && ln -s {hp} /etc\n"), &[]);
    assert_ok(&build(&root, &reg, ctx.path(), "etc-link:1"), "build");
    for f in ["hosts", "resolv.conf"] {
        assert!(host.path().join(f).exists(), "the build deleted the host's {hp}/{f}");
    }
}
