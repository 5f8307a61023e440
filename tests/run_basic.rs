//! `rimg run` end to end on pulled images: isolation (pid, uts, net, mount), image config, exit codes,
//! signals, --init, terminals, mounts, capabilities.

mod common;

use common::eventually;
use common::run::{code, stderr, stdout, Root};
use std::time::Duration;

#[test]
fn ps_is_pid_one_and_the_host_is_invisible() {
    let root = Root::new();
    let out = root.ok(&["run", "--rm", "centos:latest", "ps", "-ef"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "only ps itself is visible:\n{out}");
    let f: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!((f[1], f[7]), ("1", "ps"), "ps is PID 1:\n{out}");

    // hostname is the container's (short id by default, -h when given), and only lo exists.
    let out = root.ok(&[
        "run",
        "--rm",
        "-h",
        "box1",
        "centos:latest",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; ip -o link",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], &["box1", "box1"], "{out}");
    assert_eq!(lines.len(), 3, "only one interface:\n{out}");
    assert!(lines[2].contains(": lo:") && lines[2].contains("UP"), "lo is up:\n{out}");

    // The host's root is not reachable: a marker file on the host is invisible, / is the overlay.
    let marker = tempfile::NamedTempFile::new_in("/tmp").expect("marker");
    let m = marker.path().to_string_lossy().into_owned();
    let out = root.rimg(&[
        "run",
        "--rm",
        "alpine",
        "sh",
        "-c",
        &format!("test -e {m} && echo VISIBLE; ls /proc/1/root/ | wc -l; cat /proc/mounts | head -1"),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("VISIBLE"), "host file visible:\n{text}");
    assert!(text.contains("fuse.rimg-overlayfs"), "rootfs is the FUSE overlay:\n{text}");
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&root.path().to_string_lossy().into_owned()),
        "no mount leaks to the host"
    );
}

#[test]
fn exit_codes_follow_docker() {
    let root = Root::new();
    let cases: &[(&[&str], i32)] = &[
        (&["alpine", "true"], 0),
        (&["alpine", "false"], 1),
        (&["alpine", "sh", "-c", "exit 2"], 2),
        (&["alpine", "/etc/passwd"], 126),
        (&["alpine", "no-such-command"], 127),
        (&["--init", "alpine", "sh", "-c", "kill -KILL $$"], 137),
        (&["--init", "alpine", "sh", "-c", "kill -TERM $$"], 143),
        (&["--entrypoint", "", "alpine"], 125),
    ];
    for (args, want) in cases {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        let out = root.rimg(&a);
        assert_eq!(code(&out), *want, "{a:?}: stderr {}", stderr(&out));
    }
    let out = root.rimg(&["run", "--rm", "alpine", "no-such-command"]);
    assert!(stderr(&out).contains("executable file not found in $PATH"), "{}", stderr(&out));
    assert!(root.container_ids().is_empty(), "--rm removed every container");
}

#[test]
fn sigterm_is_forwarded() {
    let root = Root::new();
    for (args, want) in [
        (vec!["run", "--rm", "alpine", "sh", "-c", "trap 'exit 7' TERM; echo ready; sleep 30 & wait"], 7),
        (vec!["run", "--rm", "--init", "alpine", "sh", "-c", "echo ready; exec sleep 30"], 143),
    ] {
        let mut child = common::rimg_cmd(root.path())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut out, &mut buf).expect("ready");
        // SAFETY: signal our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let st = child.wait().expect("wait");
        assert_eq!(st.code(), Some(want), "{args:?}");
    }
}

#[test]
fn init_reaps_orphaned_zombies() {
    let root = Root::new();
    // An orphan is reparented to PID 1; `sleep` as PID 1 never reaps it, rimg's init does.
    let zombies = |init: bool| {
        let name = if init { "with-init" } else { "without-init" };
        let mut a = vec!["run", "-d", "--name", name];
        if init {
            a.push("--init");
        }
        a.extend_from_slice(&["alpine", "sh", "-c", "(sleep 0.2 &); exec sleep 30"]);
        root.ok(&a);
        // The orphan was forked before `sleep 30` started, and has exited once no live `sleep 0.2` is
        // left (a zombie shows as `Z [sleep]`). Wait for that and for the zombie count this case
        // expects, bounded: on a timeout the last count tells what went wrong.
        let want = usize::from(!init);
        let mut ps = String::new();
        eventually(Duration::from_secs(20), || {
            ps = root.ok(&["exec", name, "ps", "-o", "stat,args"]);
            let live = |args: &str| {
                ps.lines().any(|l| !l.trim_start().starts_with('Z') && l.trim_end().ends_with(args))
            };
            live("sleep 30") && !live("sleep 0.2") && zombie_count(&ps) == want
        });
        root.ok(&["rm", "-f", name]);
        zombie_count(&ps)
    };
    assert_eq!(zombies(false), 1, "the test can see a zombie");
    assert_eq!(zombies(true), 0, "--init reaped it");
}

/// How many processes `ps -o stat,...` shows as zombies.
fn zombie_count(ps: &str) -> usize {
    ps.lines().filter(|l| l.trim_start().starts_with('Z')).count()
}

#[test]
fn tty_goes_through_a_container_pty() {
    let root = Root::new();
    let out = root.ok(&["run", "--rm", "-t", "alpine", "sh", "-c", "test -t 1 && echo TTY; tty; echo $TERM"]);
    assert!(out.contains("TTY\r\n"), "output passed a pty (onlcr):\n{out:?}");
    assert!(out.contains("/dev/pts/0"), "the pty is the container's own:\n{out:?}");
    assert!(out.contains("xterm"), "{out:?}");
    let out = root.ok(&["run", "--rm", "alpine", "sh", "-c", "test -t 1 || echo NOTTY"]);
    assert_eq!(out, "NOTTY\n");
}

#[test]
fn detached_logs_exec_stop_rm() {
    let root = Root::new();
    let id = root.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "alpine",
        "sh",
        "-c",
        "echo out; echo err >&2; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "prints the full id: {id}");
    assert!(root.ok(&["ps"]).contains("web"));
    assert!(
        common::eventually(Duration::from_secs(5), || stdout(&root.rimg(&["logs", "web"])).contains("out"))
    );
    let logs = root.rimg(&["logs", "web"]);
    assert_eq!(stdout(&logs), "out\n");
    assert_eq!(stderr(&logs), "err\n");
    let ps = root.ok(&["exec", "web", "ps", "-o", "pid,comm"]);
    assert!(ps.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "sh"]), "{ps}");
    assert_eq!(code(&root.rimg(&["exec", "web", "sh", "-c", "exit 5"])), 5);
    // No signal dispositions leak from rimg (Rust ignores SIGPIPE) into exec'd processes.
    assert_eq!(
        root.ok(&["exec", "web", "grep", "SigIgn", "/proc/self/status"]),
        "SigIgn:\t0000000000000000\n"
    );
    assert_eq!(
        root.ok(&[
            "exec",
            "-u",
            "nobody",
            "-w",
            "/tmp",
            "-e",
            "X=1",
            "web",
            "sh",
            "-c",
            "id -u; pwd; echo $X"
        ]),
        "65534\n/tmp\n1\n"
    );
    let pid = root.state(id)["pid"].as_i64().unwrap();
    root.ok(&["stop", "web"]);
    assert!(root.ok(&["ps", "-a"]).contains("Exited (0)"));
    assert!(!root.ok(&["ps"]).contains("web"));
    assert!(stdout(&root.rimg(&["logs", "web"])).contains("bye"));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "init is gone");
    assert_eq!(root.ok(&["wait", "web"]).trim(), "0");
    root.ok(&["rm", "web"]);
    assert!(root.container_ids().is_empty());
    assert!(common::run::cgroup_left(id).is_empty());
}

#[test]
fn image_config_and_flags_are_honoured() {
    let root = Root::new();
    // Cmd from the image (alpine: /bin/sh) with stdin given: -i passes it through.
    let out = common::run::run_with_deadline(
        common::rimg_cmd(root.path())
            .args(["run", "--rm", "-i", "alpine"])
            .stdin(std::fs::File::open("/dev/null").unwrap()),
        Duration::from_secs(30),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = root.ok(&[
        "run",
        "--rm",
        "-u",
        "nobody",
        "-w",
        "/work",
        "-e",
        "A=b",
        "alpine",
        "sh",
        "-c",
        "id; pwd; echo $A; echo $HOME; echo $PATH",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("uid=65534(nobody) gid=65534(nobody)"), "{out}");
    assert_eq!(
        &lines[1..],
        &["/work", "b", "/", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "{out}"
    );
    assert_eq!(root.ok(&["run", "--rm", "--entrypoint", "echo", "alpine", "a", "b"]), "a b\n");
    // Capabilities: docker's 14 by default, everything with --privileged.
    let caps = root.ok(&["run", "--rm", "alpine", "grep", "CapEff", "/proc/self/status"]);
    assert!(caps.contains("00000000a80425fb"), "{caps}");
    let caps = root.ok(&["run", "--rm", "--privileged", "alpine", "grep", "CapEff", "/proc/self/status"]);
    assert!(!caps.contains("00000000a80425fb"), "{caps}");
    // Masked and read-only kernel paths.
    let out = root.rimg(&[
        "run",
        "--rm",
        "alpine",
        "sh",
        "-c",
        "cat /proc/keys | wc -c; echo 1 > /proc/sys/kernel/panic || echo RO; touch /sys/x || echo SYSRO",
    ]);
    let t = stdout(&out);
    assert!(t.starts_with("0\n") && t.contains("RO\n") && t.contains("SYSRO"), "{t}");
    // The container's own cgroups, read-only, at /sys/fs/cgroup.
    let out = root.ok(&["run", "--rm", "-m", "64m", "alpine", "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; touch /sys/fs/cgroup/x 2>/dev/null || echo RO"]);
    assert_eq!(out, "67108864\nRO\n");
    // --network host shares the host's interfaces.
    let host_links = std::fs::read_dir("/sys/class/net").unwrap().count();
    let out =
        root.ok(&["run", "--rm", "--network", "host", "alpine", "sh", "-c", "ls /sys/class/net | wc -l"]);
    assert_eq!(out.trim().parse::<usize>().unwrap(), host_links);
    // /dev
    let devs = root.ok(&["run", "--rm", "alpine", "ls", "/dev"]);
    for d in ["null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue"] {
        assert!(devs.lines().any(|l| l == d), "/dev/{d} missing: {devs}");
    }
}

#[test]
fn volumes_tmpfs_and_read_only_rootfs() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "hello").unwrap();
    let v = format!("{}:/data", host.path().display());
    let vro = format!("{}:/ro:ro", host.path().display());
    let out = root.rimg(&["run", "--rm", "-v", &v, "-v", &vro, "--tmpfs", "/scratch", "alpine", "sh", "-c", "cat /data/in; echo x > /data/out; echo y > /ro/no || echo RO; mount | grep -c ' /scratch type tmpfs'"]);
    assert_eq!(stdout(&out), "helloRO\n1\n", "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(host.path().join("out")).unwrap(), "x\n");
    let out = root.rimg(&[
        "run",
        "--rm",
        "--read-only",
        "alpine",
        "sh",
        "-c",
        "touch /x || echo ROFS; touch /dev/shm/ok && echo SHM",
    ]);
    assert_eq!(stdout(&out), "ROFS\nSHM\n", "{}", stderr(&out));
    // Both rootfs drivers behave the same for the basics.
    assert_eq!(
        root.ok(&[
            "run",
            "--rm",
            "--storage-driver",
            "overlay",
            "alpine",
            "sh",
            "-c",
            "echo hi > /f; cat /f; echo $$"
        ]),
        "hi\n1\n"
    );
}

#[test]
fn commit_turns_the_upper_into_an_image() {
    let root = Root::new();
    root.ok(&["run", "--name", "src", "alpine", "sh", "-c", "echo made > /made; rm /etc/motd"]);
    let id = root.ok(&["commit", "-m", "test", "src", "committed:v1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let out =
        root.rimg(&["run", "--rm", "committed:v1", "sh", "-c", "cat /made; test -e /etc/motd || echo gone"]);
    assert_eq!(stdout(&out), "made\ngone\n", "{}", stderr(&out));
    root.ok(&["rm", "src"]);
}

#[test]
fn interactive_tty_relays_input_and_window_size() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let root = Root::new();
    let script = "stty size; read x; echo got:$x; stty size";
    let ws = nix::pty::Winsize { ws_row: 40, ws_col: 100, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut child = common::rimg_cmd(root.path())
        .args(["run", "--rm", "-it", "alpine", "sh", "-c", script])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn");
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let wait_for = |needle: &str, seen: &mut String| {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while !seen.contains(needle) && std::time::Instant::now() < end {
            if let Ok(s) = rx.recv_timeout(Duration::from_millis(100)) {
                seen.push_str(&s);
            }
        }
        assert!(seen.contains(needle), "waiting for {needle:?}, got {seen:?}");
    };
    wait_for("40 100", &mut seen);
    // Resize rimg's terminal and tell it, as a terminal emulator would.
    let ws2 = nix::pty::Winsize { ws_row: 50, ws_col: 120, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ on our pty master with a valid winsize; then signal our own child.
    unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws2);
        libc::kill(child.id() as i32, libc::SIGWINCH);
    }
    // The shell's second `stty size` must see the new size: wait until rimg has passed it on to the
    // container's terminal.
    common::wait_until("the container's terminal to be 50x120", || {
        container_tty_size(script) == Some((50, 120))
    });
    master.write_all(b"hello\r").unwrap();
    wait_for("got:hello", &mut seen);
    wait_for("50 120", &mut seen);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// The window size (rows, columns) of the terminal a container's `sh -c SCRIPT` reads from, seen from
/// the host through its `/proc/PID/fd/0` (opened O_NOCTTY: looking must not make it our terminal).
fn container_tty_size(script: &str) -> Option<(u16, u16)> {
    use std::os::unix::fs::OpenOptionsExt;
    let cmdline = format!("sh\0-c\0{script}\0");
    let proc_dir = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::read(p.join("cmdline")).is_ok_and(|c| c == cmdline.as_bytes()))?;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(proc_dir.join("fd/0"))
        .ok()?;
    let ws = rustix::termios::tcgetwinsize(&tty).ok()?;
    Some((ws.ws_row, ws.ws_col))
}

/// Issue 20, item 4: `stop`, `kill` and `rm -f` act on all the containers they are given at once. Three
/// containers trap TERM (leaving a mark in a bind-mounted directory) and ignore it; while `stop -t 120`
/// waits out the first one's grace period, all three must already have their TERM. One at a time, the
/// second would get it only after two minutes. Output stays in argument order.
#[test]
fn stop_acts_on_all_containers_at_once() {
    let root = Root::new();
    let marks = tempfile::tempdir().expect("marks dir");
    let vol = format!("{}:/marks", marks.path().display());
    let names = ["par-a", "par-b", "par-c"];
    for n in names {
        let script = format!("trap 'touch /marks/{n}' TERM; while :; do sleep 0.1; done");
        root.ok(&["run", "-d", "--name", n, "-v", &vol, "alpine", "sh", "-c", &script]);
    }
    let mut stop = common::rimg_cmd(root.path());
    stop.args(["stop", "-t", "120"]).args(names).stdout(std::process::Stdio::piped());
    // Should an assertion fail, Root's drop removes the containers, which ends this stop too.
    let stopping = stop.spawn().expect("rimg stop");
    let all_termed =
        eventually(Duration::from_secs(60), || names.iter().all(|n| marks.path().join(n).exists()));
    let out = root.ok(&["kill", "par-c", "par-a", "par-b"]);
    assert_eq!(out, "par-c\npar-a\npar-b\n", "kill reports in argument order");
    let out = stopping.wait_with_output().expect("wait rimg stop");
    assert!(all_termed, "TERM reached the containers one after the other");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "par-a\npar-b\npar-c\n");
    let out = root.ok(&["rm", "-f", "par-a", "par-b", "par-c"]);
    assert_eq!(out, "par-a\npar-b\npar-c\n");
}
