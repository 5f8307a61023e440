//! `rimg run`: docker's flags turned into a [`ContainerSpec`], the image resolved (and pulled when missing),
//! then the runtime starts the container and, in the foreground, relays until it exits.

use super::Globals;
use crate::runtime::capability::CapName;
use crate::runtime::{
    self, Attach, ContainerSpec, Containers, DeviceRate, MountSpec, NetworkMode, ProcessSpec, Resources,
    RootfsDriver,
};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// docker-compatible `run` flags.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Keep STDIN open.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short = 't', long)]
    tty: bool,
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Container name.
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to copy rimg's own).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Bind mount a host path (/host:/container[:ro|rw]), mount a named volume (NAME:/container[:ro|nocopy]),
    /// or a new anonymous volume (/container).
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:OPTS]")]
    volumes: Vec<String>,
    /// Mount: type=bind|volume|tmpfs,source=…,target=…[,readonly][,volume-nocopy][,tmpfs-size=…].
    #[arg(long = "mount", value_name = "SPEC")]
    mounts: Vec<String>,
    /// Mount the volumes (and binds) of another container: CONTAINER[:ro|rw].
    #[arg(long = "volumes-from", value_name = "CONTAINER[:MODE]")]
    volumes_from: Vec<String>,
    /// Mount a tmpfs: /path[:options].
    #[arg(long = "tmpfs", value_name = "PATH[:OPTS]")]
    tmpfs: Vec<String>,
    /// Container hostname.
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Network: none (own namespace with loopback) or host.
    #[arg(long = "network", alias = "net", value_enum, default_value_t = NetworkArg::None)]
    network: NetworkArg,
    /// Mount the root filesystem read-only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Run an init inside the container that forwards signals and reaps zombies.
    #[arg(long)]
    init: bool,
    /// Override the image's ENTRYPOINT ("" clears it).
    #[arg(long)]
    entrypoint: Option<String>,
    /// Signal to stop the container.
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Seconds to wait after the stop signal before killing.
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<u64>,
    /// Pull policy: missing, always, never.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pull: PullPolicy,
    /// Memory limit (e.g. 32m, 1g).
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Number of CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<u64>,
    /// Maximum number of processes (default 2048, as podman; -1 or 0: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true, value_name = "N")]
    pids_limit: Option<i64>,
    /// Block I/O weight (10-1000).
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    /// Limit read rate from a device (/dev/sda:1mb).
    #[arg(long = "device-read-bps", value_name = "DEV:RATE")]
    device_read_bps: Vec<String>,
    /// Limit write rate to a device (/dev/sda:1mb).
    #[arg(long = "device-write-bps", value_name = "DEV:RATE")]
    device_write_bps: Vec<String>,
    /// Give the container all capabilities, unmasked /proc and /sys, all device access.
    #[arg(long)]
    privileged: bool,
    /// Add a Linux capability (docker name, with or without CAP_, or ALL).
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a Linux capability (docker name, with or without CAP_, or ALL).
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Security options: no-new-privileges[=true|false], seccomp=unconfined|PROFILE.json.
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// User namespace: `host` (default: the host's), or `auto` (a new one mapping the container's ids
    /// 0-65535 to the range /etc/subuid gives containers, dockremap or root, else 100000-165535).
    #[arg(long, value_enum, default_value_t = UsernsMode::Host)]
    userns: UsernsMode,
    /// Run in a new user namespace with this uid map, CONTAINER:HOST:SIZE (repeatable; podman's flag).
    #[arg(long = "uidmap", value_name = "CONTAINER:HOST:SIZE")]
    uidmap: Vec<String>,
    /// gid map for the user namespace, CONTAINER:HOST:SIZE (repeatable; default: the uid map).
    #[arg(long = "gidmap", value_name = "CONTAINER:HOST:SIZE")]
    gidmap: Vec<String>,
    /// cgroup parent path (default rimg).
    #[arg(long = "cgroup-parent")]
    cgroup_parent: Option<String>,
    /// Rootfs driver: fuse (rimg's FUSE overlay) or overlay (the kernel's overlayfs).
    #[arg(long = "storage-driver", env = "RIMG_STORAGE_DRIVER", value_enum, default_value_t = StorageDriver::Fuse)]
    storage_driver: StorageDriver,
    /// Pass N more open file descriptors (3 to 3+N-1) to the container; all others are closed.
    #[arg(long = "preserve-fds", value_name = "N", default_value_t = 0)]
    preserve_fds: u32,
    /// Treat IMAGE as a directory to use as the (read-only) root filesystem.
    #[arg(long)]
    rootfs: bool,
    /// Image reference (or directory with --rootfs).
    image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Parse docker's byte sizes: `123`, `64k`, `32m`, `1g`, `2mb`, `512b`.
pub(crate) fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').filter(|r| r.ends_with(['k', 'm', 'g', 't'])).unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    let n: f64 = num.parse().with_context(|| format!("invalid size: {s:?}"))?;
    if n < 0.0 {
        bail!("invalid size: {s:?}");
    }
    Ok((n * mult as f64) as u64)
}

fn device_rate(s: &str) -> anyhow::Result<DeviceRate> {
    let (dev, rate) =
        s.rsplit_once(':').with_context(|| format!("bad format {s:?}: expected DEVICE:RATE"))?;
    let md = std::fs::metadata(dev).with_context(|| format!("device {dev}"))?;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !md.file_type().is_block_device() {
        bail!("{dev} is not a block device");
    }
    let rdev = md.rdev();
    Ok(DeviceRate {
        major: libc::major(rdev) as u64,
        minor: libc::minor(rdev) as u64,
        rate: parse_bytes(rate)?,
    })
}

/// Capability names, checked once here (a typo is an error, not a silently missing grant).
fn cap_names(names: &[String]) -> anyhow::Result<Vec<CapName>> {
    Ok(names.iter().map(|n| n.parse()).collect::<Result<_, _>>()?)
}

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkArg {
    /// A network namespace of its own with only the loopback interface.
    #[value(alias = "default")]
    None,
    /// The host's network namespace.
    Host,
}

impl From<NetworkArg> for NetworkMode {
    fn from(n: NetworkArg) -> NetworkMode {
        match n {
            NetworkArg::None => NetworkMode::None,
            NetworkArg::Host => NetworkMode::Host,
        }
    }
}

/// `--pull`: when to fetch the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    /// Only when it is not in the cache.
    Missing,
    /// Every time.
    Always,
    /// Never (a missing image is an error).
    Never,
}

/// `--userns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UsernsMode {
    /// The host's user namespace (docker's default).
    Host,
    /// A new user namespace on a subordinate id range.
    #[value(alias = "private", alias = "remap")]
    Auto,
}

/// `--storage-driver`: how the rootfs is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageDriver {
    /// rimg's FUSE overlay.
    #[value(alias = "rimg")]
    Fuse,
    /// The kernel's overlayfs.
    #[value(alias = "overlay2", alias = "kernel")]
    Overlay,
}

/// What `--security-opt` asks for.
#[derive(Debug, Default)]
struct SecurityOpts {
    allow_new_privileges: bool,
    seccomp: runtime::spec::SeccompPolicy,
}

fn security_opts(opts: &[String]) -> anyhow::Result<SecurityOpts> {
    let mut out = SecurityOpts::default();
    for o in opts {
        // docker accepts both `key=value` and the older `key:value`.
        let (k, v) = o.split_once(['=', ':']).map(|(k, v)| (k, Some(v))).unwrap_or((o.as_str(), None));
        match k {
            "no-new-privileges" => {
                out.allow_new_privileges = match v {
                    None | Some("true") => false,
                    Some("false") => true,
                    Some(other) => bail!(
                        "invalid --security-opt {o:?}: no-new-privileges takes true or false, not {other:?}"
                    ),
                }
            }
            "seccomp" => {
                use runtime::spec::SeccompPolicy;
                out.seccomp = match v {
                    Some("unconfined") => SeccompPolicy::Unconfined,
                    Some("builtin") | Some("default") => SeccompPolicy::Default,
                    Some(path) if !path.is_empty() => {
                        let json = std::fs::read_to_string(path)
                            .with_context(|| format!("opening seccomp profile ({path})"))?;
                        // Checked now, so a bad profile is the user's error here, not a failed start.
                        runtime::seccomp::compile(&json, runtime::caps::DEFAULT_CAPS)
                            .with_context(|| format!("seccomp profile {path}"))?;
                        SeccompPolicy::Custom(json)
                    }
                    _ => bail!("invalid --security-opt {o:?}: seccomp takes unconfined or a profile path"),
                }
            }
            _ => bail!("--security-opt {o:?} is not supported (no-new-privileges, seccomp)"),
        }
    }
    Ok(out)
}

fn volume(s: &str, maker: &super::volume::VolumeMaker) -> anyhow::Result<MountSpec> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [dst] if dst.starts_with('/') => return maker.mount(None, dst, false, true),
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => bail!("invalid volume specification: {s:?}"),
    };
    if !dst.starts_with('/') {
        bail!("invalid volume {s:?}: the container path must be absolute");
    }
    let mut readonly = false;
    let mut copy = true;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "nocopy" => copy = false,
            "z" | "Z" | "rprivate" | "private" | "rbind" | "bind" => {}
            other => bail!("invalid volume option {other:?} in {s:?}"),
        }
    }
    if !src.starts_with('/') {
        return maker.mount(Some(src), dst, readonly, copy);
    }
    if !Path::new(src).exists() {
        // docker creates a missing host directory for -v.
        std::fs::create_dir_all(src).with_context(|| format!("create volume source {src}"))?;
    }
    Ok(MountSpec::Bind { source: PathBuf::from(src), target: dst.to_string(), readonly })
}

fn mount_flag(s: &str, maker: &super::volume::VolumeMaker) -> anyhow::Result<MountSpec> {
    let mut kind = "volume";
    let (mut src, mut dst, mut ro, mut size, mut mode) = (None, None, false, None, None);
    let mut copy = true;
    for kv in s.split(',') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
        match k {
            "type" => kind = v,
            "source" | "src" => src = Some(v.to_string()),
            "target" | "destination" | "dst" => dst = Some(v.to_string()),
            "readonly" | "ro" => ro = v != "false" && v != "0",
            "tmpfs-size" => size = Some(v.to_string()),
            "tmpfs-mode" => mode = Some(v.to_string()),
            "volume-nocopy" => copy = v == "false" || v == "0",
            "bind-propagation" | "consistency" => {}
            other => bail!("unexpected key {other:?} in --mount {s:?}"),
        }
    }
    let dst = dst.with_context(|| format!("--mount {s:?}: target is required"))?;
    match kind {
        "bind" => {
            let src = src.with_context(|| format!("--mount {s:?}: source is required"))?;
            if !Path::new(&src).exists() {
                bail!("invalid mount config for type \"bind\": bind source path does not exist: {src}");
            }
            Ok(MountSpec::Bind { source: PathBuf::from(src), target: dst, readonly: ro })
        }
        "tmpfs" => {
            let mut opts = Vec::new();
            if let Some(sz) = size {
                opts.push(format!("size={}", parse_bytes(&sz)?));
            }
            if let Some(m) = mode {
                opts.push(format!("mode={m}"));
            }
            if ro {
                opts.push("ro".into());
            }
            Ok(MountSpec::Tmpfs { target: dst, options: opts.join(",") })
        }
        "volume" => maker.mount(src.as_deref().filter(|s| !s.is_empty()), &dst, ro, copy),
        other => bail!("--mount type {other:?} is not supported (bind, volume, tmpfs)"),
    }
}

fn read_env_file(p: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("read env file {}", p.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// `KEY=VALUE` stays; a bare `KEY` takes rimg's own value or is dropped, as docker does.
fn expand_env(e: &str) -> Option<String> {
    if e.contains('=') {
        Some(e.to_string())
    } else {
        std::env::var(e).ok().map(|v| format!("{e}={v}"))
    }
}

fn merge_env(base: &mut Vec<String>, add: Vec<String>) {
    for e in add {
        let key = e.split_once('=').map(|(k, _)| k.to_string()).unwrap_or_else(|| e.clone());
        base.retain(|b| b.split_once('=').map(|(k, _)| k) != Some(key.as_str()));
        base.push(e);
    }
}

/// What the image contributes to the spec.
#[derive(Default)]
struct ImageDefaults {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    workdir: String,
    user: String,
    stop_signal: Option<String>,
    /// The image's `VOLUME`s: each gets an anonymous volume unless a mount covers it.
    volumes: Vec<String>,
}

/// The image a container is made from, found (and pulled when the policy says so).
struct ResolvedImage {
    /// The reference as the user gave it (shown by `ps`), or the rootfs directory for `--rootfs`.
    shown: String,
    /// Image id (config digest) when the image is in the store.
    id: Option<String>,
    /// Layer directories, top first.
    lowers: Vec<PathBuf>,
    /// What its config contributes to the spec.
    defaults: ImageDefaults,
    /// Where containers live.
    containers_dir: PathBuf,
}

fn resolve_image(a: &Args, g: &Globals) -> anyhow::Result<ResolvedImage> {
    if a.rootfs {
        let dir = std::fs::canonicalize(&a.image).with_context(|| format!("rootfs {}", a.image))?;
        let containers = g.root.join("containers");
        return Ok(ResolvedImage {
            shown: dir.to_string_lossy().into_owned(),
            id: None,
            lowers: vec![dir],
            defaults: ImageDefaults::default(),
            containers_dir: containers,
        });
    }
    let store = super::pull::open_store(g)?;
    let lookup = |store: &crate::store::Store| store.image(&a.image);
    let record = match a.pull {
        PullPolicy::Always => {
            super::pull::pull_image(g, &a.image, false)?;
            lookup(&store)?
        }
        PullPolicy::Never => lookup(&store)
            .with_context(|| format!("image {} is not in the cache and --pull=never", a.image))?,
        PullPolicy::Missing => match lookup(&store) {
            Ok(r) => r,
            Err(crate::store::StoreError::ImageNotFound(_)) => {
                crate::errln!("Unable to find image '{}' locally", a.image);
                super::pull::pull_image(g, &a.image, false)?;
                lookup(&store)?
            }
            Err(e) => return Err(e.into()),
        },
    };
    let mut d = ImageDefaults::default();
    if let Some(c) = record.config.config() {
        d.entrypoint = c.entrypoint().clone().unwrap_or_default();
        d.cmd = c.cmd().clone().unwrap_or_default();
        d.env = c.env().clone().unwrap_or_default();
        d.workdir = c.working_dir().clone().unwrap_or_default();
        d.user = c.user().clone().unwrap_or_default();
        d.stop_signal = c.stop_signal().clone();
        d.volumes = c.volumes().clone().unwrap_or_default();
    }
    Ok(ResolvedImage {
        shown: a.image.clone(),
        id: Some(record.id.to_string()),
        lowers: record.layer_dirs(&store),
        defaults: d,
        containers_dir: store.containers_dir(),
    })
}

fn build_spec(a: &Args, image: ResolvedImage) -> anyhow::Result<ContainerSpec> {
    let ResolvedImage { shown: image, id: image_id, lowers, defaults: d, containers_dir } = image;
    let (entrypoint, cmd) = match &a.entrypoint {
        Some(ep) => {
            let ep = if ep.is_empty() { Vec::new() } else { vec![ep.clone()] };
            (ep, a.command.clone())
        }
        None => (d.entrypoint, if a.command.is_empty() { d.cmd } else { a.command.clone() }),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        bail!("no command specified");
    }
    let mut env = d.env;
    let mut extra = Vec::new();
    for f in &a.env_file {
        extra.extend(read_env_file(f)?.iter().filter_map(|e| expand_env(e)));
    }
    extra.extend(a.env.iter().filter_map(|e| expand_env(e)));
    merge_env(&mut env, extra);
    let userns = match a.userns {
        _ if !a.uidmap.is_empty() || !a.gidmap.is_empty() => {
            Some(runtime::userns::from_flags(&a.uidmap, &a.gidmap)?)
        }
        UsernsMode::Host => None,
        UsernsMode::Auto => Some(runtime::userns::auto()?),
    };
    let root = containers_dir.parent().unwrap_or(&containers_dir);
    let maker = super::volume::VolumeMaker::new(root, userns.as_ref());
    let mounts = mounts_of(a, &maker, &Containers::open(&containers_dir)?, &d.volumes)?;
    let network = NetworkMode::from(a.network);
    let driver = match a.storage_driver {
        StorageDriver::Overlay => RootfsDriver::Kernel,
        StorageDriver::Fuse => RootfsDriver::Fuse,
    };
    if userns.is_some() && driver == RootfsDriver::Kernel {
        // Kernel overlayfs cannot be id-mapped as a whole; the FUSE overlay shifts ids itself.
        bail!(
            "a user namespace needs the fuse storage driver (kernel overlayfs cannot shift the image's ids)"
        );
    }
    let layers = runtime::mounts::distinct_lowers(&lowers).len();
    if driver == RootfsDriver::Kernel && layers > runtime::mounts::OVERLAY_MAX_LOWERS {
        // Refused before a container is made; the monitor's mount would refuse it the same way.
        bail!("{}", runtime::mounts::OverlayError::TooManyLayers(layers));
    }
    let stop_signal = match a.stop_signal.as_deref().or(d.stop_signal.as_deref()) {
        Some(s) => runtime::process::parse_signal(s).with_context(|| format!("invalid stop signal {s:?}"))?,
        None => libc::SIGTERM,
    };
    let security = security_opts(&a.security_opt)?;
    Ok(ContainerSpec {
        name: a.name.clone().unwrap_or_default(),
        image,
        image_id,
        lowers,
        driver,
        process: ProcessSpec {
            args,
            env,
            cwd: a.workdir.clone().filter(|w| !w.is_empty()).unwrap_or(if d.workdir.is_empty() {
                "/".into()
            } else {
                d.workdir
            }),
            user: a.user.clone().unwrap_or(d.user),
            tty: a.tty,
            stdin: a.interactive,
            preserve_fds: a.preserve_fds,
        },
        hostname: a.hostname.clone().unwrap_or_default(),
        network,
        mounts,
        read_only: a.read_only,
        privileged: a.privileged,
        cap_add: cap_names(&a.cap_add)?,
        cap_drop: cap_names(&a.cap_drop)?,
        allow_new_privileges: security.allow_new_privileges,
        seccomp: security.seccomp,
        init: a.init,
        resources: resources_of(a)?,
        cgroup_parent: a.cgroup_parent.clone(),
        stop_signal,
        stop_timeout: a.stop_timeout.unwrap_or(10),
        auto_remove: a.rm,
        labels: Default::default(),
        userns,
    })
}

/// `-v`, `--mount` and `--tmpfs`, in that order, then what `--volumes-from` and the image's `VOLUME`s
/// add where no mount is yet (docker's precedence).
fn mounts_of(
    a: &Args,
    maker: &super::volume::VolumeMaker,
    containers: &Containers,
    image_volumes: &[String],
) -> anyhow::Result<Vec<MountSpec>> {
    let mut mounts = Vec::new();
    for v in &a.volumes {
        mounts.push(volume(v, maker)?);
    }
    for m in &a.mounts {
        mounts.push(mount_flag(m, maker)?);
    }
    for t in &a.tmpfs {
        let (target, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
        if !target.starts_with('/') {
            bail!("invalid --tmpfs {t:?}: path must be absolute");
        }
        mounts.push(MountSpec::Tmpfs { target: target.to_string(), options: opts.to_string() });
    }
    let covered = |mounts: &[MountSpec], t: &str| {
        mounts.iter().any(|m| super::volume::target_of(m).trim_end_matches('/') == t.trim_end_matches('/'))
    };
    for from in &a.volumes_from {
        for m in maker.volumes_from(containers, from)? {
            if !covered(&mounts, super::volume::target_of(&m)) {
                mounts.push(m);
            }
        }
    }
    for path in image_volumes {
        if !covered(&mounts, path) {
            mounts.push(maker.mount(None, path, false, true)?);
        }
    }
    Ok(mounts)
}

/// The cgroup limits of the flags, checked as docker checks them.
fn resources_of(a: &Args) -> anyhow::Result<Resources> {
    let memory = a.memory.as_deref().map(parse_bytes).transpose()?;
    if memory.is_some_and(|m| m < 6 << 20) {
        bail!("Minimum memory limit allowed is 6MB");
    }
    if let Some(c) = a.cpus {
        if c.is_nan() || c <= 0.0 {
            bail!("invalid --cpus {c}: must be positive");
        }
    }
    let rates = |v: &[String]| v.iter().map(|s| device_rate(s)).collect::<anyhow::Result<Vec<_>>>();
    Ok(Resources {
        memory,
        cpu_millis: a.cpus.map(|c| (c * 1000.0).round() as u64),
        cpu_shares: a.cpu_shares,
        pids_limit: a.pids_limit,
        blkio_weight: a.blkio_weight,
        device_read_bps: rates(&a.device_read_bps)?,
        device_write_bps: rates(&a.device_write_bps)?,
    })
}

/// `rimg run`.
pub fn run(a: Args, g: &Globals) -> anyhow::Result<i32> {
    // First, before rimg opens a descriptor of its own that could land among them.
    crate::runtime::process::check_preserved_fds(a.preserve_fds).map_err(anyhow::Error::msg)?;
    let image = resolve_image(&a, g)?;
    let containers_dir = image.containers_dir.clone();
    let spec = build_spec(&a, image)?;
    let containers = Containers::open(&containers_dir)?;
    let mounts = spec.mounts.clone();
    let (state, lock) = match containers.create(spec) {
        Ok(c) => c,
        Err(e) => {
            // Nothing half-done: the anonymous volumes made for it go with it.
            containers.remove_anonymous_volumes("", &mounts);
            return Err(e.into());
        }
    };
    let result = if a.detach {
        runtime::start(&containers, state, lock, Attach::Detached).map(|l| {
            crate::outln!("{}", l.id);
            0
        })
    } else {
        runtime::run_foreground(&containers, state, lock)
    };
    Ok(result.unwrap_or_else(|f| {
        crate::errln!("rimg: {}", f.message);
        f.code
    }))
}

#[cfg(test)]
mod tests {
    use super::{cap_names, parse_bytes, security_opts};
    use crate::runtime::spec::SeccompPolicy;

    #[test]
    fn security_opt_spellings() {
        let o = |v: &[&str]| security_opts(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(!o(&[]).unwrap().allow_new_privileges);
        assert_eq!(o(&[]).unwrap().seccomp, SeccompPolicy::Default);
        assert!(o(&["no-new-privileges=false"]).unwrap().allow_new_privileges);
        assert!(o(&["no-new-privileges:false"]).unwrap().allow_new_privileges);
        assert!(!o(&["no-new-privileges"]).unwrap().allow_new_privileges);
        assert_eq!(o(&["seccomp=unconfined"]).unwrap().seccomp, SeccompPolicy::Unconfined);
        assert_eq!(o(&["seccomp:unconfined"]).unwrap().seccomp, SeccompPolicy::Unconfined);
        assert!(o(&["seccomp=/nonexistent.json"]).is_err());
        assert!(o(&["apparmor=foo"]).is_err());
    }

    #[test]
    fn capability_names_are_canonical() {
        let n = |v: &[&str]| cap_names(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let names: Vec<String> =
            n(&["net_admin", "CAP_SYS_ADMIN", "all"]).unwrap().iter().map(|c| c.to_string()).collect();
        assert_eq!(names, ["CAP_NET_ADMIN", "CAP_SYS_ADMIN", "ALL"]);
        assert!(n(&["NET_FLY"]).is_err());
    }

    #[test]
    fn docker_sizes() {
        assert_eq!(parse_bytes("32m").unwrap(), 32 << 20);
        assert_eq!(parse_bytes("32mb").unwrap(), 32 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("100b").unwrap(), 100);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        assert!(parse_bytes("lots").is_err());
    }
}
