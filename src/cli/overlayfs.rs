//! `rimg overlayfs` / `rimg-overlayfs`: the FUSE overlay with fuse-overlayfs's calling convention
//! (`[-f] -o lowerdir=L1:L2,upperdir=U,workdir=W[,…] [SOURCE] MOUNTPOINT`), so podman's mount_program
//! and `mount -t fuse.rimg-overlayfs` can use it. Returns once the mount is ready unless `-f`.
//!
//! Options besides the layers (`-o`, comma-separated; see [`MountOptions`]): `ro`/`rw`,
//! `redirect_dir=on|off`, `metacopy=on|off` (both default on), `passthrough=on|off` (FUSE passthrough
//! for regular-file I/O, default on), `writeback=on|off` (the kernel caches writes where passthrough is
//! off or unavailable, default on), `uring=on|off` (FUSE over io_uring where the kernel offers it,
//! default on), `readahead=on|off` (directories read ahead of a tree walk, default on), `threads=N`,
//! `fsname=NAME`, `allow_other`/`noallow_other`, `uidmapping=C:H:N[:…]`, `gidmapping=…`.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::fs::{self, MountOptions, OverlayConfig};
use crate::idmap::IdMap;
use anyhow::{bail, Context};

use super::Globals;

/// Raw arguments: parsed by hand because the convention is fuse-overlayfs's, not clap's.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug, Default)]
struct Parsed {
    foreground: bool,
    cfg: OverlayConfig,
    opts: Option<MountOptions>,
    mountpoint: PathBuf,
}

fn on_off(key: &str, v: &str) -> anyhow::Result<bool> {
    match v {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => bail!("{key}: expected on or off, got {v:?}"),
    }
}

fn split_dirs(v: &str) -> Vec<PathBuf> {
    // ':' separates layers; "\:" is a literal colon, as in kernel overlayfs
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&':') => {
                cur.push(':');
                chars.next();
            }
            ':' => {
                if !cur.is_empty() {
                    out.push(PathBuf::from(std::mem::take(&mut cur)));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(PathBuf::from(cur));
    }
    out
}

fn parse(args: &[String]) -> anyhow::Result<Parsed> {
    let mut p = Parsed::default();
    let mut opts = MountOptions::default();
    let mut positional = Vec::new();
    let mut i = 0;
    let mut optstrings = Vec::new();
    while i < args.len() {
        let a = &args[i];
        match a.as_str() {
            "-f" | "--foreground" => p.foreground = true,
            "-d" | "--debug" => p.foreground = true,
            "-o" => {
                i += 1;
                let Some(o) = args.get(i) else { bail!("-o needs an argument") };
                optstrings.push(o.clone());
            }
            s if s.starts_with("-o") => optstrings.push(s[2..].to_string()),
            "-h" | "--help" => bail!(
                "usage: rimg overlayfs [-f] -o lowerdir=L1:L2[,upperdir=U,workdir=W][,…] [SOURCE] MOUNTPOINT\n\
                 options: ro, redirect_dir=on|off, metacopy=on|off, passthrough=on|off, writeback=on|off,\n\
                 uring=on|off, readahead=on|off, threads=N, fsname=NAME, noallow_other, uidmapping=C:H:N[:…], gidmapping=C:H:N[:…]"
            ),
            s if s.starts_with('-') && s.len() > 1 => crate::errln!("unknown argument ignored: {s}"),
            _ => positional.push(a.clone()),
        }
        i += 1;
    }
    for o in optstrings.iter().flat_map(|s| s.split(',')) {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o, None),
        };
        match (k, v) {
            ("", None) => {}
            ("lowerdir", Some(v)) => p.cfg.lowers = split_dirs(v),
            ("upperdir", Some(v)) => p.cfg.upper = Some(PathBuf::from(v)),
            ("workdir", Some(v)) => p.cfg.work = Some(PathBuf::from(v)),
            ("ro", None) => opts.read_only = true,
            ("rw", None) => opts.read_only = false,
            ("redirect_dir", Some(v)) => opts.redirect_dir = v != "off" && v != "nofollow",
            ("metacopy", Some(v)) => opts.metacopy = on_off(k, v)?,
            ("passthrough", Some(v)) => opts.passthrough = on_off(k, v)?,
            ("writeback", Some(v)) => opts.writeback = on_off(k, v)?,
            ("uring", Some(v)) => opts.uring = on_off(k, v)?,
            ("readahead", Some(v)) => opts.readahead = on_off(k, v)?,
            ("threads", Some(v)) => opts.threads = v.parse().context("threads")?,
            ("fsname", Some(v)) => opts.fsname = v.to_string(),
            ("allow_other", None) => opts.allow_other = true,
            ("allow_root", None) => opts.allow_other = true,
            ("noallow_other", None) => opts.allow_other = false,
            ("uidmapping", Some(v)) => opts.uid_map = IdMap::parse(v).context("uidmapping")?,
            ("gidmapping", Some(v)) => opts.gid_map = IdMap::parse(v).context("gidmapping")?,
            _ => crate::errln!("unknown argument ignored: {o}"),
        }
    }
    match positional.len() {
        1 => p.mountpoint = PathBuf::from(&positional[0]),
        2 => {
            if opts.fsname == MountOptions::default().fsname {
                opts.fsname = positional[0].clone();
            }
            p.mountpoint = PathBuf::from(&positional[1]);
        }
        0 => bail!("no mount point given"),
        _ => bail!("too many arguments: {}", positional.join(" ")),
    }
    if p.cfg.lowers.is_empty() {
        bail!("no lowerdir given");
    }
    p.opts = Some(opts);
    Ok(p)
}

/// `rimg overlayfs`: mount, then serve in the foreground (`-f`) or in a daemon child.
pub fn run(a: Args, _g: &Globals) -> anyhow::Result<i32> {
    let p = parse(&a.rest)?;
    let opts = p.opts.clone().unwrap_or_default();
    if p.foreground {
        // SIGTERM from the moment the mount exists means "unmount"
        block_signals();
        let prepared = fs::prepare(p.cfg, &p.mountpoint, &opts)?;
        let watchdog = spawn_watchdog(&p.mountpoint);
        return serve_until_done(prepared, watchdog);
    }
    daemon_mount(p.cfg, &p.mountpoint, &opts)
}

/// Mount, hand the mount to a daemon child that serves it, and return: the mount is ready when this
/// returns (requests wait in the kernel until the child's threads read them). Mounting here rather
/// than in the child reports errors directly and keeps the child's start-up off the caller's path.
pub(crate) fn daemon_mount(
    cfg: OverlayConfig,
    mountpoint: &Path,
    opts: &MountOptions,
) -> anyhow::Result<i32> {
    // prepare starts no thread, so this process may fork below (the caller has none either)
    let prepared = fs::prepare(cfg, mountpoint, opts)?;
    // the watchdog exists before the server does, so no moment is left where a dying server would
    // leave a dead mount behind
    let watchdog = spawn_watchdog(mountpoint);
    // the child inherits the mask: SIGTERM from its first moment means "unmount"
    block_signals();
    // SAFETY: no threads exist in this process; the child continues with ordinary Rust code.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            // the child owns the session now; this process only exits
            std::mem::forget(prepared);
            std::mem::forget(watchdog);
            Ok(0)
        }
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::unistd::setsid();
            redirect_stdio();
            let code = serve_until_done(prepared, watchdog).unwrap_or_else(|e| {
                log::error!("{e:#}");
                1
            });
            std::process::exit(code);
        }
        Err(e) => {
            drop(prepared);
            let _ = fs::unmount_path(mountpoint);
            Err(e).context("fork")
        }
    }
}

fn block_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    let _ = set.thread_block();
    set
}

/// Serve until SIGTERM/SIGINT/SIGHUP (then unmount) or until someone unmounts the mount. `watchdog` is
/// the write end of the watchdog's pipe (see [`spawn_watchdog`]), told to stand down on a clean exit.
fn serve_until_done(prepared: fs::Prepared, watchdog: Option<OwnedFd>) -> anyhow::Result<i32> {
    // before the signal thread: later the process is no longer single-threaded
    fs::reserve_descriptors();
    // blocked in every thread (they inherit the mask); one thread takes them and unmounts, which ends
    // the session served below
    let set = block_signals();
    let mountpoint = prepared.mountpoint().to_owned();
    std::thread::Builder::new()
        .name("rimg-signals".into())
        .spawn(move || loop {
            if set.wait().is_ok() {
                if let Err(e) = fs::unmount_path(&mountpoint) {
                    log::error!("{e}");
                }
            }
        })
        .context("starting the signal thread")?;
    let r = prepared.run();
    // a clean exit tells the watchdog not to touch the mount point (whose device number may be reused)
    if let Some(w) = watchdog {
        let _ = std::fs::File::from(w).write_all(b"x");
    }
    r?;
    Ok(0)
}

fn redirect_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// The device number of the mount at `mountpoint`, without asking its server (which may not be
/// serving yet): `AT_STATX_DONT_SYNC` takes the attributes the kernel has, and st_dev is the
/// superblock's.
fn mount_dev(cpath: &CString) -> Option<u64> {
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and statx buffer.
    let r = unsafe {
        libc::statx(libc::AT_FDCWD, cpath.as_ptr(), libc::AT_STATX_DONT_SYNC, libc::STATX_TYPE, &mut stx)
    };
    (r == 0).then(|| libc::makedev(stx.stx_dev_major, stx.stx_dev_minor))
}

/// A child process that lazily unmounts the mount point if the server dies without unmounting (so a
/// crashed server never leaves a dead "transport endpoint is not connected" mount behind). It holds the
/// read end of a pipe whose write end only the server keeps (returned here; the caller must not fork
/// other long-lived processes holding it); EOF means the server is gone. Call it while this process has
/// no threads.
fn spawn_watchdog(mountpoint: &Path) -> Option<OwnedFd> {
    let cpath = CString::new(mountpoint.as_os_str().as_bytes()).ok()?;
    let dev = mount_dev(&cpath)?;
    let (r, w) = nix::unistd::pipe().ok()?;
    let rfd = r.as_raw_fd();
    // SAFETY: the child only makes async-signal-safe system calls and then _exit()s.
    match unsafe { libc::fork() } {
        0 => unsafe {
            libc::dup2(rfd, 0);
            libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32);
            let mut b = [0u8; 1];
            loop {
                let n = libc::read(0, b.as_mut_ptr().cast(), 1);
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                if n > 0 {
                    libc::_exit(0); // dismissed: the server exited cleanly
                }
                break;
            }
            let mut st2: libc::stat = std::mem::zeroed();
            let r = libc::stat(cpath.as_ptr(), &mut st2);
            if (r == 0 && st2.st_dev == dev) || (r != 0 && *libc::__errno_location() == libc::ENOTCONN) {
                libc::umount2(cpath.as_ptr(), libc::MNT_DETACH);
            }
            libc::_exit(0);
        },
        pid if pid > 0 => {
            drop(r);
            Some(w)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fuse_overlayfs_convention() {
        let args: Vec<String> =
            ["-o", "lowerdir=/a:/b\\:c,upperdir=/u,workdir=/w,,volatile", "overlay", "/mnt"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let p = parse(&args).unwrap();
        assert_eq!(p.cfg.lowers, vec![PathBuf::from("/a"), PathBuf::from("/b:c")]);
        assert_eq!(p.cfg.upper, Some(PathBuf::from("/u")));
        assert_eq!(p.mountpoint, PathBuf::from("/mnt"));
        assert!(!p.foreground);
        assert!(p.opts.as_ref().unwrap().uid_map.is_identity());
    }

    #[test]
    fn parses_io_switches() {
        let parse_opts = |o: &str| {
            let args: Vec<String> = ["-o", o, "/mnt"].iter().map(|s| s.to_string()).collect();
            parse(&args).map(|p| p.opts.unwrap_or_default())
        };
        let d = parse_opts("lowerdir=/a").unwrap();
        assert!(d.passthrough && d.writeback, "both on by default");
        let o = parse_opts("lowerdir=/a,passthrough=off,writeback=off").unwrap();
        assert!(!o.passthrough && !o.writeback);
        assert!(parse_opts("lowerdir=/a,writeback=maybe").is_err());
    }

    #[test]
    fn parses_id_mappings() {
        // fuse-overlayfs joins ranges with ':' inside one option (',' separates options)
        let args: Vec<String> =
            ["-o", "lowerdir=/a,uidmapping=0:100000:65536,gidmapping=0:1000:1:1:200000:65535", "/mnt"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let p = parse(&args).unwrap();
        let o = p.opts.unwrap();
        assert_eq!(o.uid_map.to_host(0), 100000);
        assert_eq!(o.gid_map.to_host(0), 1000);
        assert_eq!(o.gid_map.to_host(2), 200001);
        let bad: Vec<String> =
            ["-o", "lowerdir=/a,uidmapping=0:1", "/mnt"].iter().map(|s| s.to_string()).collect();
        assert!(parse(&bad).is_err());
    }
}
