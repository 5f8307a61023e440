//! Id-mapped overlay mounts (`uid_map`/`gid_map`, fuse-overlayfs's `uidmapping=`/`gidmapping=`) for
//! containers in a user namespace: layers keep container ids, the kernel sees host ids. Real FUSE mounts,
//! callers with real host credentials, and one real user namespace.

#[path = "fs_support.rs"]
mod support;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rimg::fs::MountOptions;
use rimg::idmap::IdMap;
use support::*;

const BASE: u32 = 100000;

struct Fixture {
    _s: Scratch,
    lower: PathBuf,
    u: PathBuf,
    w: PathBuf,
    m: PathBuf,
}

/// A lower layer with files of container root, container uid 1000, and a uid the map does not cover.
fn fixture() -> Fixture {
    let s = Scratch::new();
    let lower = s.path("l");
    write(&lower.join("root_file"), "root\n");
    write(&lower.join("user_file"), "user\n");
    chown(&lower.join("user_file"), 1000, 1000);
    write(&lower.join("unmapped_file"), "far\n");
    chown(&lower.join("unmapped_file"), 200000, 200000);
    write(&lower.join("secret"), "secret\n");
    chmod(&lower.join("secret"), 0o600);
    std::fs::create_dir_all(lower.join("dir")).expect("mkdir");
    chmod(&lower.join("dir"), 0o755);
    let (u, w, m) = (s.path("u"), s.path("w"), s.path("m"));
    Fixture { lower, u, w, m, _s: s }
}

fn mapped() -> MountOptions {
    let map = IdMap::parse(&format!("0:{BASE}:65536")).expect("map");
    MountOptions { uid_map: map.clone(), gid_map: map, ..MountOptions::default() }
}

fn mount(f: &Fixture) -> rimg::fs::OverlayMount {
    rimg_mount(std::slice::from_ref(&f.lower), Some((&f.u, &f.w)), &f.m, &mapped())
}

fn owner(p: &Path) -> (u32, u32) {
    let md = std::fs::symlink_metadata(p).expect("stat");
    (md.uid(), md.gid())
}

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn owners_are_shown_as_host_ids() {
    let f = fixture();
    let _m = mount(&f);
    assert_eq!(owner(&f.m), (BASE, BASE), "the root directory belongs to the container's root");
    assert_eq!(owner(&f.m.join("root_file")), (BASE, BASE));
    assert_eq!(owner(&f.m.join("user_file")), (BASE + 1000, BASE + 1000));
    assert_eq!(owner(&f.m.join("unmapped_file")), (65534, 65534), "ids outside the map show as nobody");
    // the same through readdirplus (a listing fills the attributes of its entries)
    let mut seen = Vec::new();
    for e in std::fs::read_dir(&f.m).expect("readdir") {
        let e = e.expect("entry");
        let md = e.metadata().expect("metadata");
        seen.push((e.file_name().to_string_lossy().into_owned(), md.uid()));
    }
    seen.sort();
    assert!(seen.contains(&("user_file".into(), BASE + 1000)), "{seen:?}");
    assert!(seen.contains(&("unmapped_file".into(), 65534)), "{seen:?}");
    // a chmod copies up metadata: the upper copy keeps container ids
    chmod(&f.m.join("user_file"), 0o640);
    assert_eq!(owner(&f.u.join("user_file")), (1000, 1000));
    assert_eq!(owner(&f.m.join("user_file")), (BASE + 1000, BASE + 1000));
}

#[test]
fn files_created_by_container_users_keep_container_ids() {
    let f = fixture();
    let _m = mount(&f);
    let m = f.m.clone();
    as_user(BASE, BASE, || {
        write(&m.join("by_root"), "x");
        std::fs::create_dir(m.join("dir_by_root")).expect("mkdir");
        std::os::unix::fs::symlink("by_root", m.join("link_by_root")).expect("symlink");
    });
    as_user(BASE + 1000, BASE + 1000, || {
        // dir is 0755 of the container root: uid 1000 may not create there, but in /tmp-like dirs it may
        assert_eq!(errno_of(std::fs::write(m.join("dir/nope"), "x")), libc::EACCES);
    });
    chmod(&f.m.join("dir"), 0o1777);
    as_user(BASE + 1000, BASE + 1000, || write(&m.join("dir/by_user"), "x"));
    assert_eq!(owner(&f.u.join("by_root")), (0, 0));
    assert_eq!(owner(&f.u.join("dir_by_root")), (0, 0));
    assert_eq!(owner(&f.u.join("link_by_root")), (0, 0));
    assert_eq!(owner(&f.u.join("dir/by_user")), (1000, 1000));
    assert_eq!(owner(&f.m.join("dir/by_user")), (BASE + 1000, BASE + 1000));
    // host root has no container id: its files belong to the overflow id, never to a host id
    write(&f.m.join("by_host_root"), "x");
    assert_eq!(owner(&f.u.join("by_host_root")), (65534, 65534));
}

#[test]
fn chown_maps_back_and_refuses_ids_the_container_cannot_name() {
    let f = fixture();
    let _m = mount(&f);
    chown(&f.m.join("root_file"), BASE + 1000, BASE + 1000);
    assert_eq!(owner(&f.u.join("root_file")), (1000, 1000));
    assert_eq!(owner(&f.m.join("root_file")), (BASE + 1000, BASE + 1000));
    let r = std::os::unix::fs::lchown(f.m.join("user_file"), Some(5), None);
    assert_eq!(errno_of(r), libc::EINVAL, "host uid 5 has no container uid");
    let r = std::os::unix::fs::lchown(f.m.join("user_file"), None, Some(BASE + 70000));
    assert_eq!(errno_of(r), libc::EINVAL, "host gid past the range has no container gid");
    assert_eq!(owner(&f.m.join("user_file")), (BASE + 1000, BASE + 1000), "a refused chown changes nothing");
}

#[test]
fn kernel_permission_checks_use_the_mapped_owners() {
    let f = fixture();
    let _m = mount(&f);
    let secret = f.m.join("secret");
    let as_user1000 = as_user(BASE + 1000, BASE + 1000, || errno_of(std::fs::read(&secret)));
    assert_eq!(as_user1000, libc::EACCES, "container uid 1000 may not read root's 0600 file");
    let as_root = as_user(BASE, BASE, || std::fs::read_to_string(&secret).map_err(|e| e.to_string()));
    assert_eq!(as_root.as_deref(), Ok("secret\n"), "container root owns it");
    let outsider = as_user(1000, 1000, || errno_of(std::fs::read(&secret)));
    assert_eq!(outsider, libc::EACCES, "host uid 1000 is not the container's uid 1000");
}

#[test]
fn acl_and_capability_xattrs_carry_container_ids() {
    let f = fixture();
    let _m = mount(&f);
    // a POSIX ACL naming host uid 101000 (container uid 1000), as the kernel passes it on
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(1u16, 6u16, u32::MAX), (2, 4, BASE + 1000), (4, 4, u32::MAX), (16, 4, u32::MAX), (32, 0, u32::MAX)]
    {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    set_xattr(&f.m.join("root_file"), "system.posix_acl_access", &acl);
    let disk = get_xattr(&f.u.join("root_file"), "system.posix_acl_access").expect("acl stored");
    assert_eq!(&disk[4 + 8 + 4..4 + 8 + 8], &1000u32.to_le_bytes(), "named user stored as container uid");
    let shown = get_xattr(&f.m.join("root_file"), "system.posix_acl_access").expect("acl shown");
    assert_eq!(&shown[4 + 8 + 4..4 + 8 + 8], &(BASE + 1000).to_le_bytes());
    // a v3 file capability whose namespace root is container uid 1000 keeps that root on disk; one
    // whose root is the container's root is stored as v2 (the form image layers carry)
    let cap = |rootid: u32| {
        let mut v = 0x0300_0001u32.to_le_bytes().to_vec();
        v.extend_from_slice(&[0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&rootid.to_le_bytes());
        v
    };
    set_xattr(&f.m.join("user_file"), "security.capability", &cap(BASE + 1000));
    let disk = get_xattr(&f.u.join("user_file"), "security.capability").expect("cap stored");
    assert_eq!(disk, cap(1000));
    set_xattr(&f.m.join("root_file"), "security.capability", &cap(BASE));
    let disk = get_xattr(&f.u.join("root_file"), "security.capability").expect("cap stored");
    assert_eq!(disk.len(), 20, "v2: {disk:?}");
    assert_eq!(&disk[..4], &0x0200_0001u32.to_le_bytes());
}

/// The overlay through a real user namespace whose root is host uid 100000: inside, files of the image
/// are root's, and what root creates is root's in the upper directory.
#[test]
fn through_a_real_user_namespace() {
    let f = fixture();
    let _m = mount(&f);
    // the process is host uid 100000 before it makes its user namespace, so once the map is written it
    // is the namespace's root (as a runtime's container process is)
    let script = "read go && stat -c %u:%g \"$0/root_file\" \"$0/user_file\" && touch \"$0/made_inside\" && \
                  stat -c %u:%g \"$0/made_inside\" && chown 1000:1000 \"$0/made_inside\" && \
                  stat -c %u:%g \"$0/made_inside\"";
    let child = Command::new("setpriv")
        .args(["--reuid", &BASE.to_string(), "--regid", &BASE.to_string(), "--clear-groups"])
        .args(["unshare", "--user", "--", "sh", "-c", script])
        .arg(&f.m)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    /// Kills and reaps the child if the test fails before waiting for it.
    struct Reap(Option<std::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut child = Reap(Some(child));
    let pid = child.0.as_ref().expect("child").id();
    // wait until the child is in its own user namespace, then give it the map a runtime would
    let own = std::fs::read_link("/proc/self/ns/user").expect("own ns");
    loop {
        match std::fs::read_link(format!("/proc/{pid}/ns/user")) {
            Ok(ns) if ns != own => break,
            Ok(_) => std::thread::yield_now(),
            Err(e) => panic!("child went away: {e}"),
        }
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {BASE} 65536\n")).expect("uid_map");
    std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {BASE} 65536\n")).expect("gid_map");
    let mut c = child.0.take().expect("child");
    let mut stdin = c.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("go");
    drop(stdin);
    let out = c.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "inside failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().collect::<Vec<_>>(), vec!["0:0", "1000:1000", "0:0", "1000:1000"]);
    assert_eq!(owner(&f.u.join("made_inside")), (1000, 1000));
}

/// `rimg overlayfs -o uidmapping=,gidmapping=` (fuse-overlayfs's options) mounts with the maps.
#[test]
fn overlayfs_command_takes_fuse_overlayfs_mapping_options() {
    let f = fixture();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},uidmapping=0:{BASE}:65536,gidmapping=0:{BASE}:1000:1000:{}:64536",
        f.lower.display(),
        f.u.display(),
        f.w.display(),
        BASE + 50000
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rimg"))
        .args(["overlayfs", "-o", &opts])
        .arg(&f.m)
        .output()
        .expect("rimg overlayfs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // the daemon serves until the mount goes away
    let _guard = KernelMount(f.m.clone());
    assert_eq!(owner(&f.m.join("root_file")), (BASE, BASE));
    assert_eq!(owner(&f.m.join("user_file")), (BASE + 1000, BASE + 50000));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("ignored"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
