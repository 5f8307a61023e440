//! `--userns` / `--uidmap`: the container's root is an unprivileged host uid, the image still looks like
//! the image inside, and what the container writes keeps image (container) ownership on disk. Each
//! property is checked against a counter-case without a user namespace, so the test would notice the
//! namespace going missing.

mod common;

use common::run::{code, stderr, stdout, Root};
use std::os::unix::fs::MetadataExt;

const MAP: &str = "0:200000:65536";

/// The host uid and gid of a process, from /proc/PID/status (real ids).
fn host_ids(pid: &str) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |k: &str| -> u32 {
        let line = status.lines().find(|l| l.starts_with(k)).expect("id line");
        line.split_whitespace().nth(1).expect("real id").parse().expect("number")
    };
    (field("Uid:"), field("Gid:"))
}

fn init_pid(root: &Root, id: &str) -> String {
    root.state(id)["pid"].as_i64().expect("running pid").to_string()
}

#[test]
fn container_root_is_an_unprivileged_host_uid_and_sees_the_image_as_root() {
    let root = Root::new();
    let id = root.ok(&["run", "-d", "--uidmap", MAP, "alpine", "sleep", "60"]).trim().to_string();
    assert_eq!(host_ids(&init_pid(&root, &id)), (200000, 200000), "host view of the container's root");
    let inside = root.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "id -u; id -g; cat /proc/self/uid_map; stat -c %u:%g /etc/passwd /bin/busybox; stat -c %U /",
    ]);
    let lines: Vec<&str> = inside.lines().map(str::trim).collect();
    assert_eq!(lines[0], "0", "uid inside");
    assert_eq!(lines[1], "0", "gid inside");
    assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["0", "200000", "65536"], "uid_map");
    assert_eq!(&lines[3..5], ["0:0", "0:0"], "image files keep their owners inside");
    assert_eq!(lines[5], "root", "the rootfs root belongs to the container's root");
    // Counter-check: without a user namespace the same container runs as host root.
    let plain = root.ok(&["run", "-d", "alpine", "sleep", "60"]).trim().to_string();
    assert_eq!(host_ids(&init_pid(&root, &plain)), (0, 0), "no user namespace: host root");
    root.ok(&["rm", "-f", &id, &plain]);
}

#[test]
fn writes_keep_container_ids_on_disk() {
    let root = Root::new();
    root.ok(&[
        "run",
        "--name",
        "w",
        "--uidmap",
        MAP,
        "alpine",
        "sh",
        "-c",
        "echo hi > /new; mkdir /d; touch /d/f; chown 1000:1001 /d/f; adduser -D -u 1234 alice",
    ]);
    let upper = root.path().join("containers").join(root.id_of("w")).join("upper");
    let owner = |rel: &str| {
        let m = std::fs::symlink_metadata(upper.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        (m.uid(), m.gid())
    };
    assert_eq!(owner("new"), (0, 0), "a file made by the container's root is root's in the layer");
    assert_eq!(owner("d"), (0, 0));
    assert_eq!(owner("d/f"), (1000, 1001), "chown inside stores the container's ids");
    assert_eq!(owner("home/alice"), (1234, 1234), "adduser's home");
    // Committed, the layer is an ordinary image layer: a container without a user namespace sees the same
    // owners.
    root.ok(&["commit", "w", "userns-made:1"]);
    let out =
        root.ok(&["run", "--rm", "userns-made:1", "stat", "-c", "%u:%g", "/new", "/d/f", "/home/alice"]);
    assert_eq!(out, "0:0\n1000:1001\n1234:1234\n");
    root.ok(&["rm", "w"]);
}

#[test]
fn container_root_has_no_power_over_host_files() {
    let root = Root::new();
    let host = tempfile::tempdir().expect("temp dir");
    let secret = host.path().join("secret");
    std::fs::write(&secret, "host root only\n").expect("write secret");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let vol = format!("{}:/host", host.path().display());
    let script = "cat /host/secret; touch /host/planted; echo done";
    let out = root.rimg(&["run", "--rm", "--uidmap", MAP, "-v", &vol, "alpine", "sh", "-c", script]);
    assert!(stderr(&out).contains("Permission denied"), "denied: {}", stderr(&out));
    assert!(!stdout(&out).contains("host root only"), "read a host root file: {}", stdout(&out));
    assert!(!host.path().join("planted").exists(), "wrote into a host root directory");
    // Counter-check: the container's root without a user namespace is host root.
    let out = root.rimg(&["run", "--rm", "-v", &vol, "alpine", "sh", "-c", script]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("host root only"));
    assert!(host.path().join("planted").exists());
}

/// Shell for "`nc` (pid `$p`) listens on port 80": polls the container's socket tables (bounded, 20 s)
/// and exits 1 when `nc` died instead (the bind was refused).
const LISTENING_ON_80: &str =
    "i=0; until grep -q ':0050 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; \
    do kill -0 $p && [ $i -lt 400 ] || exit 1; i=$((i+1)); sleep 0.05; done";

#[test]
fn namespaces_belong_to_the_container() {
    let root = Root::new();
    // Owned by the container's user namespace: its root may name its uts namespace and bind a low port in
    // its network namespace (docker's default capabilities), and sees its own pid namespace in /proc.
    let out = root.ok(&[
        "run",
        "--rm",
        "--uidmap",
        MAP,
        "-h",
        "inner",
        "alpine",
        "sh",
        "-c",
        &format!(
            "hostname; (nc -l -p 80 & p=$!; {LISTENING_ON_80}; kill $p) && echo bound; \
             ps -o pid= | head -n 1; ip -o link | cut -d: -f2"
        ),
    ]);
    assert_eq!(out.lines().map(str::trim).collect::<Vec<_>>(), ["inner", "bound", "1", "lo"]);
    // The user namespace does not give what docker withholds: mounting still fails.
    let out = root.rimg(&["run", "--rm", "--uidmap", MAP, "alpine", "mount", "-t", "tmpfs", "t", "/mnt"]);
    assert_ne!(code(&out), 0, "mount in a user namespace without CAP_SYS_ADMIN");
}

#[test]
fn userns_auto_uses_a_subordinate_range() {
    let root = Root::new();
    let out = root.ok(&["run", "--rm", "--userns=auto", "alpine", "cat", "/proc/self/uid_map"]);
    let f: Vec<u32> = out.split_whitespace().map(|x| x.parse().expect("number")).collect();
    assert_eq!(f.len(), 3, "one range: {out}");
    assert_eq!((f[0], f[2]), (0, 65536), "container ids 0-65535");
    assert!(f[1] >= 65536, "mapped above the host's system ids: {out}");
}

#[test]
fn bad_userns_requests_are_refused_clearly() {
    let root = Root::new();
    for (args, needle) in [
        (vec!["--uidmap", "1:200000:10"], "container's root"),
        (vec!["--uidmap", "0:200000"], "invalid id map"),
        (vec!["--userns=keep-id"], "possible values: host, auto"),
        (vec!["--userns=auto", "--storage-driver", "overlay"], "fuse storage driver"),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend(args.iter().copied());
        a.extend(["alpine", "true"]);
        let out = root.rimg(&a);
        assert_eq!(code(&out), 125, "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(needle) && err.lines().count() == 1, "{args:?}: {err}");
    }
}

/// Issue 19, finding 4: user namespaces keep working with a private store (a `--root` of mode 0700, and
/// its containers/ directory 0700): the mapped root cannot search the store, so the init must reach its
/// rootfs without walking the path.
#[test]
fn userns_works_with_a_private_store() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    let containers = root.path().join("containers");
    std::fs::create_dir_all(&containers).expect("containers dir");
    for d in [root.path(), containers.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    }
    let out =
        root.rimg(&["run", "--rm", "--userns", "auto", "alpine", "sh", "-c", "id -u; cat /etc/hostname"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).starts_with("0\n"), "{}", stdout(&out));
}

/// The `security.capability` xattr of `p` (not following a symlink), if it has one.
fn file_caps(p: &std::path::Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a buffer with its length.
    let n = unsafe {
        libc::lgetxattr(c.as_ptr(), c"security.capability".as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    };
    usize::try_from(n).ok().map(|n| buf[..n].to_vec())
}

/// No regular file under `dir` has setuid/setgid bits or a file capability on disk.
fn privileged_files(dir: &std::path::Path) -> Vec<String> {
    let mut bad = Vec::new();
    for e in std::fs::read_dir(dir).expect("readdir") {
        let p = e.expect("entry").path();
        let md = std::fs::symlink_metadata(&p).expect("stat");
        if md.is_dir() {
            bad.extend(privileged_files(&p));
        } else if md.is_file() {
            let caps = file_caps(&p);
            if md.mode() & 0o6000 != 0 || caps.is_some() {
                bad.push(format!("{} {:o} {caps:?}", p.display(), md.mode()));
            }
        }
    }
    bad
}

/// The top layer of image `name` under `root`, decompressed: (path, mode, PAX xattr names) per entry.
fn top_layer_entries(root: &std::path::Path, name: &str) -> Vec<(String, u32, Vec<String>)> {
    let blob = |d: &str| root.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).expect("index")).expect("json");
    let desc = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"].as_str().is_some_and(|r| r.ends_with(name))
        })
        .expect("committed image in index.json");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(desc["digest"].as_str().expect("digest"))).expect("manifest"),
    )
    .expect("json");
    let top = manifest["layers"].as_array().expect("layers").last().expect("a layer")["digest"].clone();
    let gz = std::fs::File::open(blob(top.as_str().expect("digest"))).expect("layer blob");
    let mut out = Vec::new();
    for e in tar::Archive::new(flate2::read::GzDecoder::new(gz)).entries().expect("tar") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let mut xattrs = Vec::new();
        if let Some(pax) = e.pax_extensions().expect("pax") {
            for x in pax {
                xattrs.push(x.expect("record").key().expect("key").to_string());
            }
        }
        out.push((path, e.header().mode().expect("mode"), xattrs));
    }
    out
}

/// Issue 19, finding 4 (FUSE part): a `--userns=auto` container that makes files setuid, setgid or
/// capable, and copies up an image's setuid file, leaves none of them so on disk (there they would be
/// HOST root's: the upper keeps container ids), sees them so inside, and commits an image in which they
/// are so (tar listing, umoci unpack, and a container without a user namespace).
#[test]
fn userns_container_leaves_no_privileged_file_on_disk_but_commits_one() {
    let root = Root::new();
    let script = "cp /usr/bin/id /x && chmod 4755 /x && chmod g+s /x && cp /usr/bin/id /c && \
                  setcap cap_net_raw+ep /c && touch -c -d @0 /usr/bin/passwd && \
                  stat -c %a /x /usr/bin/passwd && getcap /c";
    let out = root.ok(&["run", "--name", "p", "--userns=auto", "centos:latest", "sh", "-c", script]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["6755", "4755", "/c cap_net_raw=ep"], "inside");
    let upper = root.path().join("containers").join(root.id_of("p")).join("upper");
    assert!(upper.join("usr/bin/passwd").exists(), "the image's setuid passwd was copied up");
    assert_eq!(privileged_files(&upper), Vec::<String>::new(), "privileged files on disk");
    // Committed, the layer carries the real modes and the capability, and nothing of rimg's own.
    root.ok(&["commit", "p", "userns-suid:1"]);
    let entries = top_layer_entries(root.path(), "userns-suid:1");
    let entry = |p: &str| entries.iter().find(|e| e.0 == p).unwrap_or_else(|| panic!("{p} in {entries:?}"));
    assert_eq!(entry("x").1, 0o6755);
    assert_eq!(entry("usr/bin/passwd").1, 0o4755);
    assert_eq!(entry("c").2, ["SCHILY.xattr.security.capability"]);
    assert!(entries.iter().all(|e| e.2.iter().all(|x| !x.contains("trusted.rimg"))), "{entries:?}");
    let out =
        root.ok(&["run", "--rm", "userns-suid:1", "sh", "-c", "stat -c %a:%u /x /usr/bin/passwd; getcap /c"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["6755:0", "4755:0", "/c cap_net_raw=ep"], "without userns");
    // umoci, an independent reader of the committed image: the same modes and capability.
    let work = tempfile::tempdir().expect("temp dir");
    let layout = work.path().join("oci");
    std::fs::create_dir(&layout).expect("layout");
    let st = std::process::Command::new("cp")
        .arg("-al")
        .arg(root.path().join("blobs"))
        .arg(&layout)
        .status()
        .expect("cp -al");
    assert!(st.success());
    std::fs::copy(root.path().join("oci-layout"), layout.join("oci-layout")).expect("oci-layout");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("index.json")).expect("index")).expect("json");
    let mut desc = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|r| r.ends_with("userns-suid:1"))
        })
        .expect("committed image")
        .clone();
    desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "x"});
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [desc]});
    std::fs::write(layout.join("index.json"), idx.to_string()).expect("index.json");
    let bundle = work.path().join("bundle");
    let image = format!("{}:x", layout.display());
    common::run_tool("umoci", &["unpack", "--image", &image, bundle.to_str().expect("path")]);
    let rootfs = bundle.join("rootfs");
    let mode = |p: &str| std::fs::symlink_metadata(rootfs.join(p)).expect("stat").mode() & 0o7777;
    assert_eq!((mode("x"), mode("usr/bin/passwd")), (0o6755, 0o4755), "umoci unpack");
    // v2 (no namespace root: the root of whoever runs the image), cap_net_raw permitted and effective
    let mut v2 = 0x0200_0001u32.to_le_bytes().to_vec();
    v2.extend_from_slice(&[0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(file_caps(&rootfs.join("c")), Some(v2), "umoci unpack");
    root.ok(&["rm", "p"]);
}
