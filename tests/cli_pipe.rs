//! Output into a pipe whose reader has already gone (`rimg image prune | head -0`): rimg never panics,
//! ends with SIGPIPE as `ls | head` does (status 141 in the shell), and the command's work is done whole:
//! a prune reclaims everything, an rmi removes every image it was given, a pull records its image.

mod common;

use common::registry::TestRegistry;
use common::{assert_ok, TempRoot};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

/// The write end of a pipe whose read end is already closed: every write to it fails with EPIPE.
fn closed_pipe() -> OwnedFd {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    drop(r);
    w
}

/// Runs `rimg --root ROOT ARGS` with stdout (and, if asked, stderr) into a closed pipe; returns the status
/// and whatever it wrote on stderr otherwise.
fn into_closed_pipe(root: &Path, args: &[&str], stderr_too: bool) -> (ExitStatus, String) {
    let mut cmd = common::rimg_cmd(root);
    cmd.args(args).stdout(Stdio::from(closed_pipe()));
    if stderr_too {
        cmd.stderr(Stdio::from(closed_pipe()));
    } else {
        cmd.stderr(Stdio::piped());
    }
    let out = cmd.output().expect("run rimg");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Died of SIGPIPE (what a shell reports as 141) and printed no panic.
fn assert_sigpipe(what: &str, (status, stderr): (ExitStatus, String)) {
    assert!(!stderr.contains("panicked"), "{what}: panic text on stderr: {stderr}");
    assert_eq!(
        status.signal(),
        Some(libc::SIGPIPE),
        "{what}: expected death by SIGPIPE, got {status}; {stderr}"
    );
}

fn dir_entries(p: &Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn closed_stdout_ends_commands_quietly_and_their_work_is_whole() {
    let reg = TestRegistry::start();
    reg.push_fixture("busybox", "library/busybox:latest");
    reg.push_fixture("alpine", "library/alpine:latest");
    let root = TempRoot::new();
    let busybox = format!("{}/library/busybox:latest", reg.addr);
    let alpine = format!("{}/library/alpine:latest", reg.addr);

    // A pull whose progress nobody reads still records a complete image.
    assert_sigpipe("pull", into_closed_pipe(root.path(), &["pull", &busybox], false));
    assert_ok(&root.rimg(&["inspect", &busybox]), "the pulled image is there");
    assert_ok(&root.rimg(&["pull", "-q", &alpine]), "pull alpine");
    for t in ["one:1", "two:1", "three:1"] {
        assert_ok(&root.rimg(&["tag", &alpine, t]), "tag");
    }

    // Commands that only print die at their first write, as before.
    assert_sigpipe("images", into_closed_pipe(root.path(), &["images"], false));
    assert_sigpipe("inspect", into_closed_pipe(root.path(), &["inspect", &busybox], false));
    assert_sigpipe("save", into_closed_pipe(root.path(), &["save", &busybox], false));

    // rmi of three names: all three go, not just the one printed before the pipe broke.
    assert_sigpipe("rmi", into_closed_pipe(root.path(), &["rmi", "one:1", "two:1", "three:1"], false));
    let images = assert_ok(&root.rimg(&["images"]), "images");
    for t in ["one", "two", "three"] {
        assert!(!images.lines().any(|l| l.starts_with(&format!("{t} "))), "{t}:1 still listed:\n{images}");
    }

    // save to a file, then load with closed output: the image is loaded.
    let archive = root.path().join("busybox.tar");
    assert_ok(&root.rimg(&["save", "-o", archive.to_str().unwrap(), &busybox]), "save -o");

    // A prune of everything: every image, blob and layer is gone, none half-way.
    assert_sigpipe("image prune -a", into_closed_pipe(root.path(), &["image", "prune", "-a"], false));
    assert_eq!(assert_ok(&root.rimg(&["images", "-q"]), "images -q"), "", "prune -a left images");
    assert_eq!(dir_entries(&root.path().join("blobs/sha256")), 0, "blobs left after prune -a");
    assert_eq!(dir_entries(&root.path().join("layers/sha256")), 0, "layers left after prune -a");

    assert_sigpipe("load", into_closed_pipe(root.path(), &["load", "-i", archive.to_str().unwrap()], false));
    assert_ok(&root.rimg(&["inspect", &busybox]), "the loaded image is there");

    // With stderr gone too, a failing command keeps its own exit code instead of panicking (101).
    let (status, _) = into_closed_pipe(root.path(), &["rmi", "no-such-image:1"], true);
    assert_eq!(status.code(), Some(125), "rmi of a missing image (rimg's own error, issue 15): {status}");
    let (status, _) = into_closed_pipe(root.path(), &["pull", "-q", "no-such:image:x"], true);
    assert_eq!(status.code(), Some(125), "bad reference: {status}");
}
