//! Id-mapped overlay mounts (`uid_map`/`gid_map`, fuse-overlayfs's `uidmapping=`/`gidmapping=`) for
//! containers in a user namespace: layers keep container ids, the kernel sees host ids. Real FUSE mounts,
//! callers with real host credentials, and one real user namespace.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::fs::*;
use rimg::fs::MountOptions;
use rimg::idmap::IdMap;

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
    // (kept off disk, see setuid_setgid_and_capabilities_stay_off_disk)
    set_xattr(&f.m.join("user_file"), "security.capability", &cap(BASE + 1000));
    let disk = get_xattr(&f.u.join("user_file"), "trusted.rimg.capability").expect("cap stored");
    assert_eq!(disk, cap(1000));
    set_xattr(&f.m.join("root_file"), "security.capability", &cap(BASE));
    let disk = get_xattr(&f.u.join("root_file"), "trusted.rimg.capability").expect("cap stored");
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

// Issue 19, finding 4: under a user namespace the upper directory stores container ids, so a setuid
// file of the container's root would be a setuid file of HOST root on disk. No regular file the server
// writes on an id-mapped mount carries S_ISUID, S_ISGID or security.capability on disk: they are kept in
// trusted.rimg.* xattrs, shown to the kernel as if they were there, and put back by `layer::diff`.

/// `security.capability` v2 with cap_net_raw permitted and effective: root of the file's namespace.
fn cap_v2() -> Vec<u8> {
    let mut v = 0x0200_0001u32.to_le_bytes().to_vec();
    v.extend_from_slice(&[0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    v
}

/// The same capability as v3, for the user namespace whose root is host uid `rootid`.
fn cap_v3(rootid: u32) -> Vec<u8> {
    let mut v = cap_v2();
    v[..4].copy_from_slice(&0x0300_0001u32.to_le_bytes());
    v.extend_from_slice(&rootid.to_le_bytes());
    v
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).mode() & 0o7777
}

fn xattr_errno(p: &Path, name: &str, set: bool) -> i32 {
    let n = std::ffi::CString::new(name).expect("name");
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        if set {
            libc::lsetxattr(cpath(p).as_ptr(), n.as_ptr(), b"7".as_ptr().cast(), 1, 0) as isize
        } else {
            libc::lgetxattr(cpath(p).as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        }
    };
    if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

/// Create `p` with `mode` as the calling thread (open with O_CREAT, so the kernel passes the mode on).
fn create_with_mode(p: &Path, mode: u32, data: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(p).expect("create");
    f.write_all(data).expect("write");
}

/// No regular file below `upper` has setuid/setgid bits or a file capability on disk.
fn assert_nothing_privileged_on_disk(upper: &Path) {
    for e in walk(upper) {
        let md = std::fs::symlink_metadata(&e).expect("stat");
        if md.file_type().is_file() {
            assert_eq!(md.mode() & 0o6000, 0, "{} is {:o} on disk", e.display(), md.mode());
            assert_eq!(
                get_xattr(&e, "security.capability"),
                None,
                "{} has a capability on disk",
                e.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("readdir") {
        let p = e.expect("entry").path();
        if std::fs::symlink_metadata(&p).expect("stat").is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// What a container's root makes setuid/setgid or gives a capability is so inside, and is neither on
/// disk; the attack it stops: a host user running the upper file as host root.
#[test]
fn setuid_setgid_and_capabilities_stay_off_disk() {
    let f = fixture();
    let id = std::fs::read("/usr/bin/id").expect("/usr/bin/id");
    {
        let _m = mount(&f);
        let m = f.m.clone();
        as_user(BASE, BASE, || {
            create_with_mode(&m.join("x"), 0o4755, &id);
            chmod(&m.join("x"), 0o6755);
            // mknod of a regular file and an O_TMPFILE given a name take the same path in
            let c = cpath(&m.join("n"));
            // SAFETY: valid path.
            assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFREG | 0o4711, 0) }, 0, "mknod");
            let d = cpath(&m);
            // SAFETY: valid path; the fd is closed below.
            let fd = unsafe { libc::open(d.as_ptr(), libc::O_TMPFILE | libc::O_WRONLY, 0o2755) };
            assert!(fd >= 0, "O_TMPFILE: {}", std::io::Error::last_os_error());
            let name = cpath(&m.join("t"));
            let proc = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("path");
            // SAFETY: valid paths (the O_TMPFILE file through its /proc link, as unprivileged callers can).
            let r = unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    proc.as_ptr(),
                    libc::AT_FDCWD,
                    name.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            };
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
            assert_eq!(r, 0, "linkat: {}", std::io::Error::last_os_error());
        });
        // a capability for the container's root, as the kernel passes on a setcap from inside
        set_xattr(&m.join("x"), "security.capability", &cap_v3(BASE));
        assert_eq!(
            (mode_of(&m.join("x")), mode_of(&m.join("n")), mode_of(&m.join("t"))),
            (0o6755, 0o4711, 0o2755)
        );
        assert_eq!(get_xattr(&m.join("x"), "security.capability"), Some(cap_v2()), "v2: the namespace root");
        assert!(list_xattrs(&m.join("x")).contains(&"security.capability".to_string()));
        assert!(!list_xattrs(&m.join("x")).iter().any(|n| n.starts_with("trusted.rimg.")), "hidden");
        assert_eq!(xattr_errno(&m.join("x"), "trusted.rimg.mode", false), libc::ENODATA, "hidden");
        assert_eq!(xattr_errno(&m.join("x"), "trusted.rimg.mode", true), libc::EPERM, "not settable");
        // hard links and renames keep them
        std::fs::hard_link(m.join("x"), m.join("x2")).expect("link");
        std::fs::rename(m.join("x2"), m.join("dir/x3")).expect("rename");
        assert_eq!(mode_of(&m.join("dir/x3")), 0o6755);
    }
    assert_nothing_privileged_on_disk(&f.u);
    assert_eq!((mode_of(&f.u.join("x")), mode_of(&f.u.join("n"))), (0o755, 0o711));
    assert_eq!(owner(&f.u.join("x")), (0, 0), "container root's file: host root's ids on disk");
    assert_eq!(get_xattr(&f.u.join("x"), "trusted.rimg.mode").as_deref(), Some(&b"6755"[..]));
    assert_eq!(get_xattr(&f.u.join("x"), "trusted.rimg.capability"), Some(cap_v2()));
    // The attack: a host user who reaches the upper file runs it. Were it setuid on disk, it would run
    // as host root (the file is host uid 0's).
    let out = Command::new("setpriv")
        .args(["--reuid", "12345", "--regid", "12345", "--clear-groups"])
        .arg(f.u.join("x"))
        .arg("-u")
        .output()
        .expect("setpriv");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12345", "{out:?}");
    // A new server (the next `rimg start`) reads what is kept from the upper directory.
    let _m = mount(&f);
    assert_eq!(mode_of(&f.m.join("x")), 0o6755);
    assert_eq!(mode_of(&f.m.join("dir/x3")), 0o6755);
    assert_eq!(get_xattr(&f.m.join("x"), "security.capability"), Some(cap_v2()));
    // chmod and removexattr drop what is kept
    chmod(&f.m.join("n"), 0o755);
    assert_eq!((mode_of(&f.m.join("n")), get_xattr(&f.u.join("n"), "trusted.rimg.mode")), (0o755, None));
    let c = std::ffi::CString::new("security.capability").expect("name");
    // SAFETY: valid C strings.
    assert_eq!(unsafe { libc::lremovexattr(cpath(&f.m.join("x")).as_ptr(), c.as_ptr()) }, 0);
    assert_eq!(get_xattr(&f.m.join("x"), "security.capability"), None);
    assert_eq!(get_xattr(&f.u.join("x"), "trusted.rimg.capability"), None);
    assert_eq!(mode_of(&f.m.join("x")), 0o6755);
}

/// A lower setuid file with a capability, copied up by a metadata change (touch), keeps both inside
/// and has neither on disk; the committed layer has both, and no trusted.rimg.* xattr.
#[test]
fn copy_up_keeps_privileges_off_disk_and_the_layer_gets_them_back() {
    let f = fixture();
    std::fs::copy("/usr/bin/id", f.lower.join("suid")).expect("copy");
    chmod(&f.lower.join("suid"), 0o4755);
    set_xattr(&f.lower.join("suid"), "security.capability", &cap_v2());
    {
        let _m = mount(&f);
        let t = std::fs::FileTimes::new().set_modified(std::time::SystemTime::UNIX_EPOCH);
        std::fs::File::open(f.m.join("suid")).expect("open").set_times(t).expect("touch");
        assert!(f.u.join("suid").exists(), "copied up");
        assert_eq!(mode_of(&f.m.join("suid")), 0o4755);
        assert_eq!(get_xattr(&f.m.join("suid"), "security.capability"), Some(cap_v2()));
        // the data copy-up of an open for writing keeps them (a write would clear them)
        drop(std::fs::OpenOptions::new().write(true).open(f.m.join("suid")).expect("open for writing"));
        assert_eq!(mode_of(&f.m.join("suid")), 0o4755);
        assert_eq!(get_xattr(&f.m.join("suid"), "security.capability"), Some(cap_v2()));
        // (no data: a write by a caller without CAP_FSETID would clear the bit, as the kernel does)
        as_user(BASE, BASE, || create_with_mode(&f.m.join("new"), 0o4755, b""));
        assert_eq!(mode_of(&f.m.join("new")), 0o4755);
    }
    assert_nothing_privileged_on_disk(&f.u);
    let mut tar = Vec::new();
    rimg::layer::diff(&f.u, std::slice::from_ref(&f.lower), &mut tar, &Default::default()).expect("diff");
    let mut seen = std::collections::BTreeMap::new();
    for e in tar::Archive::new(&tar[..]).entries().expect("tar") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let mut xattrs = Vec::new();
        if let Some(pax) = e.pax_extensions().expect("pax") {
            for x in pax {
                let x = x.expect("pax record");
                xattrs.push((x.key().expect("key").to_string(), x.value_bytes().to_vec()));
            }
        }
        seen.insert(path, (e.header().mode().expect("mode"), xattrs));
    }
    let (mode, xattrs) = &seen["suid"];
    assert_eq!(*mode, 0o4755, "the layer has the real mode");
    assert_eq!(xattrs, &vec![("SCHILY.xattr.security.capability".to_string(), cap_v2())]);
    assert_eq!(seen["new"].0, 0o4755);
    assert!(seen.values().all(|(_, x)| x.iter().all(|(k, _)| !k.contains("trusted.rimg"))), "{seen:?}");
}

/// Chown, writes and truncations clear what is kept as the kernel clears the real bits and capability
/// (a plain file on the host's filesystem is the oracle).
#[test]
fn chown_write_and_truncate_clear_kept_privileges_as_the_kernel_does() {
    type Op = fn(&Path);
    // (what, how, (mode, capability) after it by the kernel's rules)
    let ops: [(&str, Op, (u32, bool)); 6] = [
        ("chown by root", |p| chown(p, BASE, BASE), (0o755, false)),
        (
            "write by the owner",
            |p| {
                as_user(BASE, BASE, || {
                    std::fs::OpenOptions::new().write(true).open(p).expect("open").write_all(b"!")
                })
                .expect("write")
            },
            (0o755, false),
        ),
        (
            "truncate by the owner",
            |p| {
                as_user(BASE, BASE, || {
                    std::fs::OpenOptions::new().write(true).open(p).and_then(|f| f.set_len(1))
                })
                .expect("truncate")
            },
            (0o755, false),
        ),
        (
            "O_TRUNC by the owner",
            |p| as_user(BASE, BASE, || std::fs::write(p, "x")).expect("O_TRUNC"),
            (0o755, false),
        ),
        (
            "write by root",
            |p| {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(p)
                    .expect("open")
                    .write_all(b"!")
                    .expect("write")
            },
            (0o6755, false),
        ),
        (
            "read and touch",
            |p| {
                std::fs::read(p).expect("read");
                let t = std::fs::FileTimes::new().set_modified(std::time::SystemTime::UNIX_EPOCH);
                std::fs::File::open(p).expect("open").set_times(t).expect("touch");
            },
            (0o6755, true),
        ),
    ];
    /// Make `p` a file of BASE:BASE, mode 6755, with a capability; run `op`; (mode, has capability).
    fn after(p: &Path, op: Op) -> (u32, bool) {
        write(p, "data");
        chown(p, BASE, BASE);
        chmod(p, 0o6755);
        set_xattr(p, "security.capability", &cap_v2());
        op(p);
        (mode_of(p), get_xattr(p, "security.capability").is_some())
    }
    let f = fixture();
    let oracle = f._s.path("oracle");
    let _m = mount(&f);
    for (i, (what, op, rule)) in ops.iter().enumerate() {
        let want = after(&oracle.join(format!("f{i}")), *op);
        assert_eq!(want, *rule, "{what}: the kernel on a plain file");
        let got = after(&f.m.join(format!("f{i}")), *op);
        assert_eq!(got, want, "{what}: (mode, capability) through the mount vs the kernel on a plain file");
    }
    assert_nothing_privileged_on_disk(&f.u);
}

/// Without id maps nothing changes: the bits and the capability are on disk, no trusted.rimg.* xattr
/// is written; and a copy-up keeps the capability (the kernel's copy-up does).
#[test]
fn without_id_maps_privileges_stay_on_disk() {
    let f = fixture();
    std::fs::copy("/usr/bin/id", f.lower.join("capped")).expect("copy");
    set_xattr(&f.lower.join("capped"), "security.capability", &cap_v2());
    let _m = rimg_mount(std::slice::from_ref(&f.lower), Some((&f.u, &f.w)), &f.m, &MountOptions::default());
    create_with_mode(&f.m.join("x"), 0o4755, b"x");
    chmod(&f.m.join("x"), 0o6755);
    set_xattr(&f.m.join("x"), "security.capability", &cap_v2());
    chmod(&f.m.join("capped"), 0o4711);
    // a metadata-only copy-up, then its data copied up by an open for writing (nothing written)
    std::fs::copy("/usr/bin/id", f.lower.join("capped2")).expect("copy");
    set_xattr(&f.lower.join("capped2"), "security.capability", &cap_v2());
    let t = std::fs::FileTimes::new().set_modified(std::time::SystemTime::UNIX_EPOCH);
    std::fs::File::open(f.m.join("capped2")).expect("open").set_times(t).expect("touch");
    drop(std::fs::OpenOptions::new().write(true).open(f.m.join("capped2")).expect("open for writing"));
    assert_eq!(
        get_xattr(&f.m.join("capped2"), "security.capability"),
        Some(cap_v2()),
        "data copy-up keeps it"
    );
    assert_eq!(mode_of(&f.u.join("x")), 0o6755);
    assert_eq!(get_xattr(&f.u.join("x"), "security.capability"), Some(cap_v2()));
    assert_eq!(mode_of(&f.u.join("capped")), 0o4711);
    assert_eq!(get_xattr(&f.u.join("capped"), "security.capability"), Some(cap_v2()), "copy-up keeps it");
    assert_eq!(get_xattr(&f.m.join("capped"), "security.capability"), Some(cap_v2()));
    for p in walk(&f.u) {
        assert!(!list_xattrs(&p).iter().any(|n| n.starts_with("trusted.rimg.")), "{}", p.display());
    }
}
