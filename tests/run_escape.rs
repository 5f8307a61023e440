//! Confinement: capability sets and no_new_privs as docker sets them, and escape attempts from inside a
//! container that must fail. Where it means something, the same attempt is shown to succeed with
//! `--privileged` (or the relevant opt-out), so each test would notice the protection going missing.

mod common;

use common::run::{code, host_block_device, stderr, stdout, Root};
use std::process::Output;

/// docker's default 14 capabilities as a mask (CapBnd of a default container on cgroup v1).
const DOCKER_DEFAULT_MASK: u64 = 0xa80425fb;
/// CAP_MKNOD, withheld on cgroup v2 (no device cgroup there).
const MKNOD_BIT: u64 = 1 << 27;

/// `rimg run --rm FLAGS… alpine sh -c SCRIPT`.
fn sh(root: &Root, flags: &[&str], script: &str) -> Output {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["alpine", "sh", "-c", script]);
    root.rimg(&args)
}

/// Like [`sh`] but must exit 0; returns stdout.
fn sh_ok(root: &Root, flags: &[&str], script: &str) -> String {
    let out = sh(root, flags, script);
    assert_eq!(code(&out), 0, "{flags:?} {script:?}: stdout {} stderr {}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// The capability masks of the shell: (Inh, Prm, Eff, Bnd, Amb) from /proc/self/status.
fn cap_sets(root: &Root, flags: &[&str]) -> [u64; 5] {
    let out = sh_ok(root, flags, "grep ^Cap /proc/self/status");
    let mut sets = [u64::MAX; 5];
    for line in out.lines() {
        let (k, v) = line.split_once(':').expect("Cap line");
        let v = u64::from_str_radix(v.trim(), 16).expect("hex mask");
        let i = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"].iter().position(|n| *n == k).expect("key");
        sets[i] = v;
    }
    sets
}

fn device_cgroup() -> bool {
    std::path::Path::new("/sys/fs/cgroup/devices").is_dir()
}

fn default_mask() -> u64 {
    if device_cgroup() {
        DOCKER_DEFAULT_MASK
    } else {
        DOCKER_DEFAULT_MASK & !MKNOD_BIT
    }
}

#[test]
fn root_gets_dockers_default_capabilities_and_nothing_inheritable() {
    let root = Root::new();
    let [inh, prm, eff, bnd, amb] = cap_sets(&root, &[]);
    assert_eq!(bnd, default_mask(), "bounding set");
    assert_eq!(prm, default_mask(), "permitted set");
    assert_eq!(eff, default_mask(), "effective set");
    assert_eq!((inh, amb), (0, 0), "inheritable and ambient sets");
    let [_, prm, _, bnd, _] = cap_sets(&root, &["--privileged"]);
    assert_ne!(bnd & (1 << 21), 0, "--privileged keeps CAP_SYS_ADMIN");
    assert_eq!(prm, bnd);
}

#[test]
fn non_root_user_has_no_effective_capabilities() {
    let root = Root::new();
    let [inh, prm, eff, bnd, amb] = cap_sets(&root, &["-u", "1000:1000"]);
    assert_eq!((inh, prm, eff, amb), (0, 0, 0, 0), "non-root: nothing permitted, effective or ambient");
    assert_eq!(bnd, default_mask(), "bounding set still docker's default");
    // Dropping SETUID/SETGID does not stop rimg switching to the user.
    let out = sh_ok(&root, &["-u", "1000:1000", "--cap-drop", "ALL"], "id -u; id -g");
    assert_eq!(out, "1000\n1000\n");
}

#[test]
fn cap_add_and_cap_drop_follow_dockers_rules() {
    let root = Root::new();
    let [_, prm, eff, bnd, _] = cap_sets(&root, &["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"]);
    assert_eq!((prm, eff, bnd), (1 << 12, 1 << 12, 1 << 12), "only CAP_NET_ADMIN");
    let [_, _, eff, bnd, _] = cap_sets(&root, &["--cap-add", "cap_sys_admin", "--cap-drop", "CAP_CHOWN"]);
    assert_eq!(bnd, (default_mask() | 1 << 21) & !1, "default + SYS_ADMIN - CHOWN");
    assert_eq!(eff, bnd);
    // Dropped CHOWN is really gone: chown of a file to another user fails.
    let out = sh(&root, &["--cap-drop", "chown"], "touch /f && chown 1000 /f");
    assert_ne!(code(&out), 0, "chown without CAP_CHOWN: {}", stdout(&out));
    sh_ok(&root, &[], "touch /f && chown 1000 /f");
    // A typo is an error, not a silent no-op.
    let out = sh(&root, &["--cap-add", "CAP_FLY"], "true");
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("unknown capability"), "{}", stderr(&out));
}

fn no_new_privs(status: &str) -> &str {
    status.lines().find_map(|l| l.strip_prefix("NoNewPrivs:")).map(str::trim).unwrap_or("?")
}

#[test]
fn no_new_privs_is_set_by_default_in_run_and_exec() {
    let root = Root::new();
    let out = sh_ok(&root, &[], "cat /proc/self/status");
    assert_eq!(no_new_privs(&out), "1");
    let out = sh_ok(&root, &["--security-opt", "no-new-privileges=false"], "cat /proc/self/status");
    assert_eq!(no_new_privs(&out), "0");
    let out = sh_ok(&root, &["--init"], "cat /proc/self/status");
    assert_eq!(no_new_privs(&out), "1", "--init's child too");
    let bad = sh(&root, &["--security-opt", "no-new-privileges=maybe"], "true");
    assert_eq!(code(&bad), 125);

    let id = root.ok(&["run", "-d", "--name", "nnp", "alpine", "sleep", "60"]).trim().to_string();
    let status = root.ok(&["exec", &id, "cat", "/proc/self/status"]);
    assert_eq!(no_new_privs(&status), "1", "rimg exec");
    root.ok(&["rm", "-f", &id]);
    let id = root
        .ok(&["run", "-d", "--security-opt", "no-new-privileges=false", "alpine", "sleep", "60"])
        .trim()
        .to_string();
    let status = root.ok(&["exec", &id, "cat", "/proc/self/status"]);
    assert_eq!(no_new_privs(&status), "0", "rimg exec of an opted-out container");
    root.ok(&["rm", "-f", &id]);
}

#[test]
fn mounting_is_denied() {
    let root = Root::new();
    let out = sh(&root, &[], "mount -t tmpfs none /mnt");
    assert_ne!(code(&out), 0, "mount inside a container: {}", stdout(&out));
    sh_ok(&root, &["--privileged"], "mount -t tmpfs none /mnt && umount /mnt");
}

#[test]
fn unshare_is_denied() {
    let root = Root::new();
    let out = sh(&root, &[], "unshare -m true");
    assert_ne!(code(&out), 0, "unshare -m inside a container: {}", stdout(&out));
    sh_ok(&root, &["--privileged"], "unshare -m true");
    // CAP_SYS_ADMIN alone (no --privileged) also enables the seccomp profile's cap-conditional entries.
    sh_ok(&root, &["--cap-add", "SYS_ADMIN"], "unshare -m true && mount -t tmpfs none /mnt");
}

#[test]
fn proc_sys_and_sysrq_are_not_writable() {
    let root = Root::new();
    let out = sh(&root, &[], "echo escaped > /proc/sys/kernel/hostname");
    assert_ne!(code(&out), 0, "write /proc/sys: {}", stdout(&out));
    // The host's sysrq: 'h' only prints help to the kernel log, should the protection ever be missing.
    let out = sh(&root, &[], "echo h > /proc/sysrq-trigger");
    assert_ne!(code(&out), 0, "write /proc/sysrq-trigger");
    // Privileged: /proc/sys is writable (the hostname is the container's own, in its UTS namespace).
    let out = sh_ok(&root, &["--privileged"], "echo inside > /proc/sys/kernel/hostname && hostname");
    assert_eq!(out, "inside\n");
    assert_ne!(std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(), "inside");
}

#[test]
fn kcore_reads_nothing() {
    let root = Root::new();
    let out = sh_ok(&root, &[], "head -c 64 /proc/kcore 2>/dev/null | wc -c");
    assert_eq!(out.trim(), "0", "/proc/kcore must yield no kernel memory");
    // The counter-check needs a kernel with /proc/kcore (CONFIG_PROC_KCORE); this one may not have it.
    if std::fs::File::open("/proc/kcore").is_ok_and(|f| std::io::Read::bytes(f).next().is_some()) {
        let out = sh_ok(&root, &["--privileged"], "head -c 64 /proc/kcore | wc -c");
        assert_eq!(out.trim(), "64", "privileged reads /proc/kcore");
    }
}

#[test]
fn mknod_of_a_block_device_cannot_be_opened() {
    let root = Root::new();
    let dev = host_block_device();
    let script = format!("mknod /dev/sda0 b {dev} && exec 3</dev/sda0 && echo opened");
    let out = sh(&root, &[], &script);
    assert!(!stdout(&out).contains("opened"), "a host block device opened from a container ({dev})");
    if device_cgroup() {
        // mknod itself is allowed (docker's "b *:* m"); opening is what the device cgroup refuses.
        assert!(
            stderr(&out).contains("Operation not permitted") || stdout(&out).contains("not permitted"),
            "{}",
            stderr(&out)
        );
    }
    let out = sh_ok(&root, &["--privileged"], &script);
    assert!(out.contains("opened"), "privileged opens it");
    // /dev/fuse, the FUSE server's channel, is not reachable either.
    let out = sh(&root, &[], "mknod /dev/fuse c 10 229 && exec 3<>/dev/fuse && echo opened");
    assert!(!stdout(&out).contains("opened"), "/dev/fuse opened from a container");
}

#[test]
fn host_processes_are_invisible() {
    let root = Root::new();
    let me = std::process::id();
    let script = format!(
        "ls /proc/{me} >/dev/null 2>&1 && echo visible; kill -0 {me} 2>/dev/null && echo signalled; \
         ls -d /proc/[0-9]* | wc -l; cat /proc/1/cmdline | tr '\\0' ' '"
    );
    let out = sh_ok(&root, &[], &script);
    assert!(
        !out.lines().any(|l| l == "visible" || l == "signalled"),
        "the test's pid {me} is visible: {out}"
    );
    let mut lines = out.lines();
    let count: usize = lines.next().unwrap_or("").trim().parse().expect("count");
    assert!(count <= 4, "only the container's few processes: {out}");
    assert!(lines.next().unwrap_or("").starts_with("sh -c"), "PID 1 is the container's command: {out}");
}

#[test]
fn host_store_and_layer_dirs_are_unreachable() {
    let root = Root::new();
    let layers = root.path().join("layers/sha256");
    let layer = std::fs::read_dir(&layers).expect("layers").flatten().next().expect("a layer").path();
    let store = root.path().display().to_string();
    let layer = layer.display().to_string();
    let probes = format!(
        "for p in {store} {layer} /var/lib/rimg; do \
           for r in / /proc/*/root/; do test -e $r$p && echo reached $r$p; done; \
         done; \
         for r in /proc/[0-9]*/root; do readlink $r; done | sort -u"
    );
    for driver in ["fuse", "overlay"] {
        let out = sh_ok(&root, &["--storage-driver", driver], &probes);
        assert!(!out.contains("reached"), "{driver}: host paths reachable from the container: {out}");
        assert_eq!(out, "/\n", "{driver}: every visible process has the container's root");
    }
    // The probe does find the path when it is there: bind the store in and it is reached.
    let vol = format!("{store}:{store}:ro");
    let out = sh_ok(&root, &["-v", &vol], &probes);
    assert!(out.contains(&format!("reached /{store}")), "probe works: {out}");
}

#[test]
fn default_seccomp_profile_blocks_user_namespaces() {
    let root = Root::new();
    // Creating a user namespace needs no capability, only seccomp stops it (docker's default profile
    // allows unshare/clone namespace flags only with CAP_SYS_ADMIN).
    let out = sh(&root, &[], "unshare -U true");
    assert_ne!(code(&out), 0, "unshare -U under the default profile");
    assert!(stderr(&out).contains("Operation not permitted"), "EPERM: {}", stderr(&out));
    let status = sh_ok(&root, &[], "grep ^Seccomp: /proc/self/status");
    assert_eq!(status.trim(), "Seccomp:\t2", "filter mode");
    // Without no_new_privs the filter is still there (installed while privileged).
    let out = sh(&root, &["--security-opt", "no-new-privileges=false"], "unshare -U true");
    assert_ne!(code(&out), 0, "unshare -U without no_new_privs");
    // The same command works once the profile is off.
    sh_ok(&root, &["--security-opt", "seccomp=unconfined"], "unshare -U true");
    let status = sh_ok(&root, &["--privileged"], "grep ^Seccomp: /proc/self/status");
    assert_eq!(status.trim(), "Seccomp:\t0", "--privileged is unconfined");
    // rimg exec runs under the container's profile too.
    let id = root.ok(&["run", "-d", "alpine", "sleep", "60"]).trim().to_string();
    let out = root.rimg(&["exec", &id, "unshare", "-U", "true"]);
    assert_ne!(code(&out), 0, "unshare -U in rimg exec");
    root.ok(&["rm", "-f", &id]);
}

#[test]
fn init_runs_under_the_container_filter() {
    let root = Root::new();
    // With --init, PID 1 is rimg's init: it must be as confined as the command it starts.
    let status = sh_ok(&root, &["--init"], "grep -E '^(Seccomp|NoNewPrivs):' /proc/1/status");
    assert_eq!(status, "NoNewPrivs:\t1\nSeccomp:\t2\n", "PID 1 under --init");
    // Counter-check: the same probe sees an unfiltered init when the profile is off.
    let status = sh_ok(
        &root,
        &["--init", "--security-opt", "seccomp=unconfined"],
        "grep -E '^Seccomp:' /proc/1/status",
    );
    assert_eq!(status, "Seccomp:\t0\n", "PID 1 with seccomp=unconfined");
}

fn profile(dir: &tempfile::TempDir, name: &str, json: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, json).expect("write profile");
    format!("seccomp={}", p.display())
}

#[test]
fn custom_seccomp_profiles_in_dockers_format() {
    let root = Root::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let deny_mkdir = profile(
        &dir,
        "deny-mkdir.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    let out = sh(&root, &["--security-opt", &deny_mkdir], "mkdir /x");
    assert_ne!(code(&out), 0, "mkdir under a profile denying it");
    assert!(stderr(&out).contains("Operation not permitted"), "{}", stderr(&out));
    sh_ok(&root, &["--security-opt", &deny_mkdir], "touch /y && unshare -U true");
    sh_ok(&root, &[], "mkdir /x");

    // errnoRet is honoured.
    let enosys = profile(
        &dir,
        "enosys.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}"#,
    );
    let out = sh(&root, &["--security-opt", &enosys], "mkdir /x");
    assert!(stderr(&out).contains("not implemented"), "ENOSYS: {}", stderr(&out));

    // Argument filters: only AF_INET sockets are refused.
    let no_inet = profile(
        &dir,
        "no-inet.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]}"#,
    );
    let out = sh(&root, &["--security-opt", &no_inet], "nc 127.0.0.1 1 </dev/null");
    assert!(stderr(&out).contains("Operation not permitted"), "socket(AF_INET): {}", stderr(&out));
    let out = sh(&root, &[], "nc 127.0.0.1 1 </dev/null");
    assert!(!stderr(&out).contains("Operation not permitted"), "socket allowed: {}", stderr(&out));
    let out = sh(&root, &["--security-opt", &no_inet], "nc -U /nonexistent </dev/null 2>&1; echo done");
    assert!(!stdout(&out).contains("Operation not permitted"), "AF_UNIX still allowed: {}", stdout(&out));

    // An allowlist profile: a syscall it does not list gets the default errno.
    let allowlist = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runtime/seccomp-default.json"),
    )
    .expect("default profile")
    .replace("\"mkdir\",", "");
    let no_mkdir_allow = profile(&dir, "allowlist.json", &allowlist);
    let out = sh(&root, &["--security-opt", &no_mkdir_allow], "mkdir /x");
    assert!(stderr(&out).contains("Operation not permitted"), "{}", stderr(&out));

    // A broken profile is refused before anything starts.
    let broken = profile(&dir, "broken.json", r#"{"defaultAction": "SCMP_ACT_SOMETIMES"}"#);
    let out = sh(&root, &["--security-opt", &broken], "true");
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("SCMP_ACT_SOMETIMES"), "{}", stderr(&out));
}

/// `rimg --root ROOT ARGS…` started by bash with descriptor 5 open on the host's /etc (no close-on-exec,
/// as a shell's redirection leaves it), so whatever rimg does not close reaches the container.
fn with_fd5_on_etc(root: &Root, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(r#"exec 3</dev/null 4</dev/null 5</etc; exec "$@""#)
        .arg("bash")
        .arg(common::rimg_bin())
        .arg("--root")
        .arg(root.path())
        .args(args)
        .stdin(std::process::Stdio::null());
    common::run::run_with_deadline(&mut cmd, std::time::Duration::from_secs(60))
}

/// Issue 19, finding 5 (CVE-2024-21626's shape): a descriptor the caller holds must not reach the
/// container, neither as an open file nor as a working directory; `--preserve-fds` passes it on when the
/// caller means it (which also shows the probe would see a leak).
#[test]
fn callers_descriptors_do_not_reach_the_container() {
    let root = Root::new();
    let id = root.ok(&["run", "-d", "alpine", "sleep", "60"]).trim().to_string();
    let probe = "ls /proc/self/fd/5/ | grep -qx passwd && echo LEAKED || echo closed";
    let out = with_fd5_on_etc(&root, &["exec", &id, "sh", "-c", probe]);
    assert_eq!(stdout(&out).trim(), "closed", "exec: {}", stderr(&out));
    let out = with_fd5_on_etc(&root, &["exec", "-w", "/proc/self/fd/5", &id, "sh", "-c", "ls passwd"]);
    assert_ne!(code(&out), 0, "exec -w /proc/self/fd/5 started in the host's /etc: {}", stdout(&out));
    let out = with_fd5_on_etc(&root, &["run", "--rm", "alpine", "sh", "-c", probe]);
    assert_eq!(stdout(&out).trim(), "closed", "run: {}", stderr(&out));
    let out = with_fd5_on_etc(&root, &["run", "--rm", "-w", "/proc/self/fd/5", "alpine", "ls", "passwd"]);
    assert_ne!(code(&out), 0, "run -w /proc/self/fd/5 started in the host's /etc: {}", stdout(&out));
    // Asked for: passed on, in exec and run alike.
    let out = with_fd5_on_etc(&root, &["exec", "--preserve-fds", "3", &id, "sh", "-c", probe]);
    assert_eq!(stdout(&out).trim(), "LEAKED", "exec --preserve-fds 3: {}", stderr(&out));
    let out = with_fd5_on_etc(&root, &["run", "--rm", "--preserve-fds", "3", "alpine", "sh", "-c", probe]);
    assert_eq!(stdout(&out).trim(), "LEAKED", "run --preserve-fds 3: {}", stderr(&out));
    // Asking for more than is open is rimg's own error.
    let out = root.rimg(&["exec", "--preserve-fds", "40", &id, "true"]);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    root.ok(&["rm", "-f", &id]);
}

/// Issue 19, finding 3 (CVE-2016-9962's shape): a container process with CAP_SYS_PTRACE watches for new
/// processes and reads a host file through their `/proc/PID/root`. An exec'd process must never be seen
/// while it still has the host's root: by the time it is visible it has joined every namespace.
#[test]
fn exec_is_never_visible_with_the_hosts_root() {
    let root = Root::new();
    let marker = tempfile::NamedTempFile::new().expect("marker");
    std::fs::write(marker.path(), "HOST-SECRET\n").expect("write marker");
    let m = marker.path().display().to_string();
    // Two watchers (the machine has two CPUs) scan every pid as fast as they can.
    let watch = format!(
        "for w in 1 2; do (while :; do for p in /proc/[0-9]*; do \
         cat $p/root{m} 2>/dev/null; done; done >> /found) & done; sleep 300"
    );
    let id =
        root.ok(&["run", "-d", "--cap-add", "SYS_PTRACE", "alpine", "sh", "-c", &watch]).trim().to_string();
    for _ in 0..60 {
        root.ok(&["exec", &id, "true"]);
        let found = root.ok(&["exec", &id, "cat", "/found"]);
        assert!(!found.contains("HOST-SECRET"), "the container read a host file through an exec'd process");
    }
    root.ok(&["rm", "-f", &id]);
}

/// Issue 19, finding 7 (CVE-2022-0492's set-up): the init joins every hierarchy the host mounts — named
/// ones (`name=systemd`), cpuset and a hybrid host's cgroup2 too — before its cgroup namespace is made, so
/// a container with CAP_SYS_ADMIN that mounts a hierarchy gets its own cgroup, never the host's root with
/// its `release_agent`.
#[test]
fn the_init_is_in_the_containers_cgroup_in_every_hierarchy() {
    let root = Root::new();
    let id = root.ok(&["run", "-d", "alpine", "sleep", "60"]).trim().to_string();
    let pid = root.state(&id)["pid"].as_i64().expect("pid");
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup of the init");
    root.ok(&["rm", "-f", &id]);
    for line in table.lines() {
        assert!(line.ends_with(&format!("/{id}")), "hierarchy left at the host's cgroup: {line}\n{table}");
    }
    // From inside: every v1 hierarchy the host has, mounted by the container, has no release_agent.
    let mut hierarchies: Vec<String> = Vec::new();
    for line in std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo").lines() {
        let Some((_, right)) = line.split_once(" - ") else { continue };
        let f: Vec<&str> = right.split(' ').collect();
        if f.first() == Some(&"cgroup") {
            let opts: Vec<&str> = f[2].split(',').filter(|o| !["rw", "ro", "xattr"].contains(o)).collect();
            hierarchies.push(opts.join(","));
        }
    }
    let script: String = hierarchies
        .iter()
        .enumerate()
        .map(|(i, o)| {
            format!("mkdir -p /m{i} && mount -t cgroup -o {o} cgroup /m{i} && echo MOUNTED && ls /m{i}/release_agent 2>/dev/null && echo EXPOSED {o}; ")
        })
        .collect();
    let out = sh_ok(&root, &["--cap-add", "SYS_ADMIN"], &format!("{script} echo done"));
    assert!(!out.contains("EXPOSED"), "{out}");
    assert_eq!(out.matches("MOUNTED").count(), hierarchies.len(), "every hierarchy mounted: {out}");
}

/// Issue 19, finding 8: without `-t` the container must not get the caller's terminal itself (it could
/// change its modes or take it with TIOCEXCL); its stdio are pipes that rimg relays, as docker and podman
/// do. rimg runs here on a pty (`script`), so a leak shows as `isatty` true inside.
#[test]
fn without_t_the_container_does_not_get_the_callers_terminal() {
    let root = Root::new();
    let probe = "for fd in 0 1 2; do [ -t $fd ] && echo TTY$fd; done; echo probed";
    for flags in [&[][..], &["-i"][..]] {
        let mut args = vec![common::rimg_bin().display().to_string()];
        args.extend(["--root".into(), root.path().display().to_string(), "run".into(), "--rm".into()]);
        args.extend(flags.iter().map(|f| f.to_string()));
        args.extend(["alpine", "sh", "-c", probe].iter().map(|s| s.to_string()));
        let line = args.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ");
        let out = common::run::run_with_deadline(
            std::process::Command::new("script").args(["-qec", &line, "/dev/null"]),
            std::time::Duration::from_secs(60),
        );
        let text = stdout(&out);
        assert!(text.contains("probed"), "{flags:?}: {text} {}", stderr(&out));
        assert!(!text.contains("TTY"), "{flags:?}: the container got rimg's terminal: {text}");
    }
    // The relay keeps the pipes' meaning: stdin reaches EOF, and a reader that goes away stops the writer.
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(r#"printf 'one\ntwo\n' | "$0" --root "$1" run --rm -i alpine wc -l; "$0" --root "$1" run --rm alpine yes | head -2"#)
        .arg(common::rimg_bin())
        .arg(root.path());
    let out = common::run::run_with_deadline(&mut cmd, std::time::Duration::from_secs(60));
    assert_eq!(stdout(&out), "2\ny\ny\n", "{}", stderr(&out));
}

/// Issue 19, finding 6 (CVE-2019-5736's set-up): with `--init` the container's PID 1 runs for its whole
/// life, and its executable must not be the host's rimg binary (a container that reopens /proc/1/exe for
/// writing once nothing runs it would overwrite the host's binary). rimg-init runs from a sealed memfd.
#[test]
fn init_is_not_the_hosts_binary() {
    use std::os::unix::fs::MetadataExt;
    let root = Root::new();
    let host = std::fs::metadata(common::rimg_bin()).expect("rimg binary");
    let out = sh_ok(
        &root,
        &["--init"],
        "stat -L -c '%d %i' /proc/1/exe; readlink /proc/1/exe; echo x >> /proc/1/exe || echo refused",
    );
    let mut lines = out.lines();
    let ident = lines.next().unwrap_or_default();
    assert_ne!(ident, format!("{} {}", host.dev(), host.ino()), "/proc/1/exe is the host's rimg: {out}");
    assert!(lines.next().unwrap_or_default().starts_with("/memfd:rimg-init"), "{out}");
    assert_eq!(lines.next(), Some("refused"), "{out}");
}
