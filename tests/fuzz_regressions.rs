//! Fuzzer findings and seeds, replayed under plain `cargo test` through the same checks the fuzz targets
//! run (`fuzz/src/checks.rs`, compiled into this test with `#[path]`).
//!
//! - `seeds_*`: every committed seed of `fuzz/corpus/<target>/` goes through its target's check, so the
//!   checks (and the seeds) stay valid while rimg changes, without cargo-fuzz or libFuzzer.
//! - the other tests are crashes the fuzzer found, minimized, each named for the bug.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use checks::{Entry, Kind};
use std::path::PathBuf;

/// The committed seed inputs of one fuzz target.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {dir:?}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {p:?}: {e}"));
            (p, data)
        })
        .collect();
    out.sort();
    out
}

/// Replay every seed of `target` through `check`; a panic names the seed.
fn replay(target: &str, min: usize, check: impl Fn(&[u8])) {
    let all = seeds(target);
    assert!(all.len() >= min, "expected at least {min} seeds for {target}, found {}", all.len());
    for (path, data) in all {
        eprintln!("{target}: {}", path.display());
        check(&data);
    }
}

/// Targets taking `&str` skip non-UTF-8 inputs, as libFuzzer's `fuzz_target!(|s: &str|)` does.
fn as_str(data: &[u8], f: impl Fn(&str)) {
    if let Ok(s) = std::str::from_utf8(data) {
        f(s);
    }
}

#[test]
fn seeds_reference() {
    replay("reference", 3, |d| as_str(d, checks::reference));
}

#[test]
fn seeds_manifest() {
    replay("manifest", 3, checks::manifest);
}

#[test]
fn seeds_config() {
    replay("config", 3, checks::config);
}

#[test]
fn seeds_www_authenticate() {
    replay("www_authenticate", 2, checks::www_authenticate);
}

#[test]
fn seeds_dockerfile() {
    replay("dockerfile", 3, |d| as_str(d, checks::dockerfile));
}

#[test]
fn seeds_layer_apply() {
    replay("layer_apply", 3, checks::layer_tar);
}

fn e(kind: Kind, name: &str, target: &str) -> Entry {
    Entry {
        kind,
        name: name.into(),
        target: target.into(),
        data: b"pwned".to_vec(),
        mode: 0o644,
        pax: false,
        xattrs: Vec::new(),
    }
}

/// The check itself must notice an escape (guards against a watch that silently passes everything): a
/// write to an outside file, a new outside file, and a hard link to an outside file inside the layer.
#[test]
fn watch_notices_escapes() {
    let s = checks::Sentinel::new();
    let dest = s.dest();
    type Attempt<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let attempts: Vec<Attempt> = vec![
        ("write", Box::new(|| std::fs::write(s.root.join("outside/victim"), "x").expect("write"))),
        ("create", Box::new(|| std::fs::write(s.root.join("d/new"), "x").expect("create"))),
        ("hard link", Box::new(|| std::fs::hard_link(s.root.join("victim"), dest.join("h")).expect("link"))),
        ("copy", Box::new(|| std::fs::copy(s.root.join("victim"), dest.join("c")).map(drop).expect("copy"))),
    ];
    for (what, f) in attempts {
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| checks::watch(&s, &dest, b"", f)));
        assert!(res.is_err(), "the watch missed a {what} outside the layer");
    }
}

/// Structured escape attempts of every kind the fuzz target builds: all refused or contained.
#[test]
fn structured_escapes_are_contained() {
    let cases: Vec<Vec<Entry>> = vec![
        vec![e(Kind::File, "../victim", "")],
        vec![e(Kind::File, "{S}/d/victim", "")],
        vec![e(Kind::Symlink, "l", "{S}/outside"), e(Kind::File, "l/victim", "")],
        vec![e(Kind::Symlink, "l", "../../outside"), e(Kind::Dir, "l/x", "")],
        vec![e(Kind::Hardlink, "h", "{S}/outside/victim"), e(Kind::File, "h", "")],
        vec![e(Kind::Hardlink, "h", "../../outside/victim")],
        vec![e(Kind::Symlink, "l", "{S}/outside"), e(Kind::Hardlink, "h", "l/victim")],
        vec![e(Kind::Symlink, "l", "{S}/outside"), e(Kind::File, "l/.wh.victim", "")],
        vec![e(Kind::Symlink, "l", "{S}/outside"), e(Kind::File, "l/.wh..wh..opq", "")],
        vec![e(Kind::File, "a/../../victim", "")],
        vec![e(Kind::CharNull, "n", ""), e(Kind::File, "n", "")],
    ];
    for upper in cases {
        eprintln!("{upper:?}");
        checks::layer_entries(&[], &upper);
    }
    // With a lower layer: a hard link into the lower whose parent is a symlink out of it.
    let lower = vec![e(Kind::Symlink, "dir", "{S}/outside"), e(Kind::File, "f", "")];
    checks::layer_entries(&lower, &[e(Kind::Hardlink, "h", "dir/victim"), e(Kind::Hardlink, "g", "f")]);
}

/// Found by `reference` (fuzz-ci, 20 s): a Docker Hub repository whose first path component looks like a
/// registry host (`docker.io/a.b/c`) has the short form `a.b/c:latest`, which names the image `c` on the
/// registry `a.b`. `rimg images`, `rimg save` (RepoTags) and `rimg load` print/parse that form, so a saved
/// and re-loaded image changes registry. (docker's `FamiliarString` has the same ambiguity; Docker Hub does
/// not allow such namespaces, but a reference typed by a user or read from an archive can have one.)
/// Fixed in `Reference::familiar_name`: it keeps the `docker.io/` prefix when the short form's first component
/// would be read as a registry (contains `.` or `:`, or is `localhost`).
#[test]
fn familiar_form_of_hub_repo_with_dotted_namespace() {
    for s in [
        "docker.io/a.b/c",
        "docker.io/localhost/c:1",
        "docker.io/library.io/library/cen",
        // second finding (fuzz-ci, 10 s): a Hub namespace that is itself `docker.io`
        "docker.io/docker.io/librarlibrary/cker",
    ] {
        checks::reference(s);
    }
}
