//! `COPY`/`ADD` cannot read host files through symlinks (issue 19, finding 1).
//!
//! A build context, or a stage's rootfs, is the build's `/`: a symlink in it is resolved inside it, as
//! docker/BuildKit and buildah do, so an absolute or `..` link can never name a host file. Each attack
//! below copied a host file into the image before the fix (the oracle: no file of the store carries the
//! host file's random content afterwards); the last test shows that links that stay inside still work
//! the docker way (followed when named as the source, kept as links inside a copied tree).

mod common;

use common::registry::TestRegistry;
use common::{assert_ok, TempRoot};
use std::path::{Path, PathBuf};
use std::process::Output;

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

/// A context whose symlinks all stay inside it: absolute, relative, climbing above the root, named as the
/// source; a wildcard with a `.dockerignore`d match; `COPY --from` through a stage's absolute link;
/// `COPY dir /`.
fn inside_context() -> tempfile::TempDir {
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
    ctx
}

/// What [`inside_context`]'s image holds, read from its rootfs at `fs`.
fn inside_summary(fs: &Path) -> String {
    let mut out = String::new();
    for f in ["a", "r", "t", "u", "s", "file"] {
        out += &std::fs::read_to_string(fs.join(f)).unwrap_or_else(|e| format!("/{f}: {e}\n"));
    }
    let mut g: Vec<String> = std::fs::read_dir(fs.join("g"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    g.sort();
    out += &format!("g: {}\n", g.join(" "));
    let t_is_link = fs.join("t").symlink_metadata().map(|m| m.file_type().is_symlink()).unwrap_or(true);
    out + if t_is_link { "t: symlink\n" } else { "t: file\n" }
}

#[test]
fn symlinks_resolve_inside_the_context_as_docker_does() {
    let reg = registry();
    let root = TempRoot::new();
    let ctx = inside_context();
    assert_ok(&build(&root, &reg, ctx.path(), "inside:1"), "build");
    let fs = tempfile::tempdir().unwrap();
    let dest = fs.path().join("rootfs");
    assert_ok(&root.rimg(&["unpack", "inside:1", dest.to_str().unwrap()]), "unpack");
    let got = inside_summary(&dest);
    assert_eq!(got, "inside\ninside\ninside\ninside\nstaged\ninside\ng: keep.txt\nt: file\n");
}

/// buildah, with its own throw-away storage (vfs: no mounts) and the test registry as docker.io's mirror.
struct Buildah {
    dir: tempfile::TempDir,
}

impl Buildah {
    fn new(reg: &TestRegistry) -> Buildah {
        let dir = tempfile::Builder::new().prefix("rimg-test-buildah-").tempdir().unwrap();
        let conf = format!(
            "unqualified-search-registries = [\"docker.io\"]\n[[registry]]\nprefix = \"docker.io\"\n\
             location = \"docker.io\"\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            reg.addr
        );
        std::fs::write(dir.path().join("registries.conf"), conf).unwrap();
        Buildah { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        std::process::Command::new("buildah")
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run buildah: {e} (run setup.sh)"))
    }

    fn bud(&self, ctx: &Path, tag: &str) -> Output {
        self.run(&["bud", "-q", "--isolation", "chroot", "-t", tag, ctx.to_str().unwrap()])
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a"]);
        let _ = self.run(&["rmi", "-a", "-f"]);
    }
}

#[test]
fn buildah_resolves_the_same_way() {
    // The independent oracle for the semantics picked: buildah (its copier runs chrooted into the
    // context) refuses the escapes rimg refuses, and gives the in-context links the same meaning.
    let reg = registry();
    let buildah = Buildah::new(&reg);
    let host = HostSecret::new();
    let hp = host.path().display().to_string();
    let escape = context("FROM busybox\nCOPY evil/secret /x\n", &[("evil", hp.clone())]);
    let out = buildah.bud(escape.path(), "escape:1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "buildah copied through the link");
    assert!(err.contains("no such file or directory"), "buildah failed otherwise: {err}");
    assert!(files_containing(buildah.dir.path(), host.marker.as_bytes()).is_empty());

    let ctx = inside_context();
    assert_ok(&buildah.bud(ctx.path(), "inside:1"), "buildah bud");
    let container = assert_ok(&buildah.run(&["from", "inside:1"]), "buildah from").trim().to_string();
    let mounted = assert_ok(&buildah.run(&["mount", &container]), "buildah mount").trim().to_string();
    let theirs = inside_summary(Path::new(&mounted));
    assert_eq!(theirs, "inside\ninside\ninside\ninside\nstaged\ninside\ng: keep.txt\nt: file\n");
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
