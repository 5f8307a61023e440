//! Volumes as docker has them (issue 15): named volumes and their commands, `-v NAME:/path`,
//! `--mount type=volume`, anonymous volumes (`-v /path`, the image's `VOLUME`) removed with `--rm` and
//! `rm -v`, the image's content copied into an empty volume, `--volumes-from`, volumes that outlive
//! `rm` and `rmi`, kept under `--root/volumes` (0700) and never in a container's upper.

mod common;

use common::podman::Podman;
use common::run::{code, stderr, Root};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

fn data(root: &Root, name: &str) -> PathBuf {
    root.path().join("volumes").join(name).join("_data")
}

fn volume_names(root: &Root) -> Vec<String> {
    root.ok(&["volume", "ls", "-q"]).lines().map(str::to_string).collect()
}

#[test]
fn named_volume_commands_like_docker_and_podman() {
    let root = Root::new();
    assert_eq!(root.ok(&["volume", "create", "--label", "env=dev", "data"]).trim(), "data");
    assert_eq!(root.ok(&["volume", "create", "data"]).trim(), "data", "creating an existing name is fine");
    let mode = std::fs::metadata(root.path().join("volumes")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "volumes/ is private like the rest of the store");
    let ls = root.ok(&["volume", "ls"]);
    assert_eq!(ls, "DRIVER    VOLUME NAME\nlocal     data\n");
    let v: serde_json::Value = serde_json::from_str(&root.ok(&["volume", "inspect", "data"])).unwrap();
    assert_eq!(v[0]["Name"], "data");
    assert_eq!(v[0]["Driver"], "local");
    assert_eq!(v[0]["Labels"]["env"], "dev");
    assert_eq!(v[0]["Mountpoint"], data(&root, "data").to_string_lossy().as_ref());
    assert_eq!(
        root.ok(&["volume", "inspect", "-f", "{{.Scope}} {{.Labels.env}}", "data"]).trim(),
        "local dev"
    );
    assert_eq!(root.ok(&["volume", "ls", "-q", "--filter", "label=env=dev"]).trim(), "data");
    assert_eq!(root.ok(&["volume", "ls", "--format", "{{.Name}}:{{.Driver}}"]).trim(), "data:local");
    let bad = root.rimg(&["volume", "create", "no/slash"]);
    assert_eq!(code(&bad), 125, "{}", stderr(&bad));
    if let Some(p) = Podman::new() {
        p.ok(&["volume", "create", "--label", "env=dev", "data"]);
        let theirs: serde_json::Value = serde_json::from_str(&p.ok(&["volume", "inspect", "data"])).unwrap();
        for k in ["Name", "Driver", "Labels", "Scope", "Options"] {
            assert_eq!(v[0][k], theirs[0][k], "inspect field {k} as podman's");
        }
        assert!(
            theirs[0]["Mountpoint"].as_str().unwrap().ends_with("/volumes/data/_data"),
            "podman's layout too"
        );
        let cols = |t: &str| {
            t.lines().next().unwrap_or_default().split_whitespace().map(str::to_string).collect::<Vec<_>>()
        };
        assert_eq!(cols(&ls), cols(&p.ok(&["volume", "ls"])));
    }
    root.ok(&["volume", "rm", "data"]);
    assert!(volume_names(&root).is_empty());
    assert_eq!(root.ok(&["volume", "rm", "-f", "data"]), "", "-f: a missing volume is no error");
}

#[test]
fn image_content_is_copied_into_an_empty_volume_and_writes_stay_out_of_the_upper() {
    let root = Root::new();
    // alpine's /etc/apk becomes the volume's content at first mount; the container adds a file.
    root.ok(&[
        "run",
        "--name",
        "w",
        "-v",
        "apk:/etc/apk",
        "alpine",
        "sh",
        "-c",
        "ls /etc/apk > /dev/null; echo new > /etc/apk/added",
    ]);
    let d = data(&root, "apk");
    assert!(d.join("arch").is_file() && d.join("keys").is_dir(), "copied from the image");
    assert_eq!(std::fs::read_to_string(d.join("added")).unwrap(), "new\n");
    let upper = root.path().join("containers").join(root.id_of("w")).join("upper");
    assert!(!upper.join("etc/apk/added").exists(), "a volume is not in the container's upper");
    // A volume that has content is not copied into again (here: /etc/ssl would add cert.pem).
    root.ok(&["run", "--rm", "-v", "apk:/etc/ssl", "alpine", "true"]);
    assert!(!d.join("cert.pem").exists(), "no copy into a non-empty volume");
    // nocopy: an empty volume stays empty.
    root.ok(&["run", "--rm", "-v", "empty:/etc/apk:nocopy", "alpine", "true"]);
    assert_eq!(std::fs::read_dir(data(&root, "empty")).unwrap().count(), 0);
    // --mount type=volume, read-only.
    let out = root.rimg(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=apk,target=/v,readonly",
        "alpine",
        "touch",
        "/v/x",
    ]);
    assert_ne!(code(&out), 0, "read-only volume");
    assert!(root
        .ok(&["run", "--rm", "--mount", "type=volume,src=apk,dst=/v", "alpine", "cat", "/v/added"])
        .contains("new"));
}

#[test]
fn anonymous_volumes_go_with_rm_minus_v_and_with_run_rm() {
    let root = Root::new();
    root.ok(&["run", "--rm", "-v", "/scratch", "busybox", "touch", "/scratch/f"]);
    assert!(volume_names(&root).is_empty(), "--rm removes the container's anonymous volumes");
    root.ok(&["run", "--name", "keep", "-v", "/scratch", "-v", "named:/n", "busybox", "true"]);
    let anon: Vec<String> = volume_names(&root).into_iter().filter(|n| n.len() == 64).collect();
    assert_eq!(anon.len(), 1);
    let label = root.ok(&["volume", "inspect", "-f", "{{json .Labels}}", &anon[0]]);
    assert_eq!(label.trim(), r#"{"com.docker.volume.anonymous":""}"#, "docker's marker");
    let busy = root.rimg(&["volume", "rm", &anon[0]]);
    assert_eq!(code(&busy), 125);
    assert!(stderr(&busy).contains("volume is in use"), "{}", stderr(&busy));
    root.ok(&["rm", "keep"]);
    assert_eq!(volume_names(&root).len(), 2, "plain rm keeps volumes (docker)");
    assert_eq!(root.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]).lines().count(), 2);
    let pruned = root.ok(&["volume", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Volumes:\n") && pruned.contains(&anon[0]), "{pruned}");
    assert_eq!(volume_names(&root), ["named"], "prune without -a keeps named volumes");
    root.ok(&["run", "--name", "gone", "-v", "/scratch", "busybox", "true"]);
    root.ok(&["rm", "-v", "gone"]);
    assert_eq!(volume_names(&root), ["named"], "rm -v removes the anonymous volume, not the named one");
    root.ok(&["volume", "prune", "-a", "-f"]);
    assert!(volume_names(&root).is_empty());
}

#[test]
fn image_volumes_volumes_from_and_survival_of_rm_and_rmi() {
    let root = Root::new();
    let df = "FROM busybox\nRUN mkdir /data && echo seed > /data/seed\nVOLUME /data\n";
    let out = common::run::run_with_deadline(
        common::rimg_cmd(root.path()).args(["build", "-q", "-t", "withvol", "-"]).stdin(stdin_text(df)),
        std::time::Duration::from_secs(120),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    root.ok(&["run", "--name", "src", "withvol", "sh", "-c", "echo more >> /data/seed"]);
    let anon: Vec<String> = volume_names(&root);
    assert_eq!(anon.len(), 1, "the image's VOLUME gets an anonymous volume");
    assert_eq!(std::fs::read_to_string(data(&root, &anon[0]).join("seed")).unwrap(), "seed\nmore\n");
    let seen = root.ok(&["run", "--rm", "--volumes-from", "src:ro", "busybox", "cat", "/data/seed"]);
    assert_eq!(seen, "seed\nmore\n", "--volumes-from mounts the same volume");
    let out = root.rimg(&["run", "--rm", "--volumes-from", "src:ro", "busybox", "touch", "/data/x"]);
    assert_ne!(code(&out), 0, ":ro makes it read-only");
    root.ok(&["run", "--rm", "-v", "keepme:/k", "withvol", "sh", "-c", "echo 1 > /k/one"]);
    root.ok(&["rm", "src"]);
    root.ok(&["rmi", "withvol"]);
    assert!(volume_names(&root).contains(&"keepme".to_string()), "volumes outlive rm and rmi");
    assert_eq!(std::fs::read_to_string(data(&root, "keepme").join("one")).unwrap(), "1\n");
    let df = root.ok(&["system", "df"]);
    let line = df.lines().find(|l| l.starts_with("Local Volumes")).unwrap_or_default().to_string();
    assert!(line.starts_with("Local Volumes   2         0         "), "system df counts volumes: {df}");
    assert!(root.ok(&["system", "df", "-v"]).contains("keepme"));
}

fn stdin_text(text: &str) -> std::process::Stdio {
    let (r, mut w) = std::io::pipe().expect("pipe");
    std::io::Write::write_all(&mut w, text.as_bytes()).expect("write stdin");
    drop(w);
    std::process::Stdio::from(r)
}

#[test]
fn a_user_namespaced_container_owns_its_new_volume() {
    let root = Root::new();
    let out = root.ok(&[
        "run",
        "--rm",
        "--userns=auto",
        "-v",
        "uv:/etc/apk",
        "alpine",
        "sh",
        "-c",
        "stat -c %u /etc/apk/arch; echo w > /etc/apk/written; cat /proc/self/uid_map",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "the container sees the image's owner: {out}");
    let host_root: u32 =
        lines.next().and_then(|m| m.split_whitespace().nth(1)).and_then(|h| h.parse().ok()).expect("uid_map");
    use std::os::unix::fs::MetadataExt;
    let arch = std::fs::metadata(data(&root, "uv").join("arch")).unwrap();
    assert_eq!(arch.uid(), host_root, "copied content is shifted to the container's ids on disk");
    assert!(data(&root, "uv").join("written").is_file(), "the mapped root can write its volume");
}

/// A hostile image: symlinks under a VOLUME path and a volume mounted on a symlink. The copy-up walks the
/// image with pinned descriptors, so links are copied as links and never followed to the host's files
/// (the class of docker's CVE-2018-15664 and runc's CVE-2021-30465).
#[test]
fn copy_up_never_follows_an_image_symlink_to_the_host() {
    let root = Root::new();
    let df = "FROM busybox\nRUN mkdir /data && ln -s /etc /data/hostetc && ln -s / /data/root && ln -s /etc /link\nVOLUME /data\n";
    let out = common::run::run_with_deadline(
        common::rimg_cmd(root.path()).args(["build", "-q", "-t", "links", "-"]).stdin(stdin_text(df)),
        std::time::Duration::from_secs(120),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    root.ok(&["run", "--name", "l", "-v", "onlink:/link", "links", "true"]);
    let anon = volume_names(&root).into_iter().find(|n| n.len() == 64).expect("the image's volume");
    let d = data(&root, &anon);
    for (name, target) in [("hostetc", "/etc"), ("root", "/")] {
        let md = std::fs::symlink_metadata(d.join(name)).unwrap();
        assert!(md.file_type().is_symlink(), "{name} is copied as a symlink");
        assert_eq!(std::fs::read_link(d.join(name)).unwrap(), PathBuf::from(target));
    }
    // The volume on /link got the image's /etc (where /link leads inside the rootfs), not the host's.
    let on_link = data(&root, "onlink");
    assert!(
        on_link.join("passwd").exists() || std::fs::read_dir(&on_link).unwrap().count() > 0,
        "image /etc copied"
    );
    assert!(
        !on_link.join("debian_version").exists()
            || root.ok(&["run", "--rm", "busybox", "ls", "/etc"]).contains("debian_version"),
        "nothing of the host's /etc"
    );
    assert!(
        !on_link.join("shadow").exists()
            || root.ok(&["run", "--rm", "busybox", "ls", "/etc"]).contains("shadow")
    );
}
