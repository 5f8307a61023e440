//! `rimg version`, `rimg info`, `rimg system df [-v]`, `rimg system prune [-a] [--volumes]`.

use super::units::{ago, bytes_size, human_size, human_size4};
use super::Globals;
use crate::runtime::{Containers, Status};
use crate::store::Store;
use crate::template::{ListFormat, Methods, Template};
use serde_json::{json, Value};
use std::collections::HashSet;

/// `rimg version`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  rimg version\n  rimg version --format '{{.Client.Version}}'")]
pub struct VersionArgs {
    /// Go template (`{{.Client.Version}}`, `{{json .}}`).
    #[arg(short, long)]
    format: Option<String>,
}

/// `rimg info`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  rimg info\n  rimg info --format '{{.Driver}} {{.CgroupVersion}}'")]
pub struct InfoArgs {
    /// Go template (`{{.Driver}}`, `{{json .}}`).
    #[arg(short, long)]
    format: Option<String>,
}

/// `rimg system …`.
#[derive(clap::Subcommand, Debug)]
pub enum SystemCommand {
    /// Show disk usage of images, containers, volumes and the build cache.
    #[command(after_help = "Examples:\n  rimg system df\n  rimg system df -v\n  \
                            rimg system df --format '{{.Type}}: {{.Size}}'")]
    Df(DfArgs),
    /// Remove stopped containers, dangling images and the build cache (and more with -a, --volumes).
    #[command(after_help = "Examples:\n  rimg system prune -f\n  rimg system prune -a --volumes -f")]
    Prune(PruneArgs),
    /// Same as `rimg info`.
    Info(InfoArgs),
}

/// `rimg system df`.
#[derive(clap::Args, Debug)]
pub struct DfArgs {
    /// Show detailed information on space usage.
    #[arg(short, long)]
    verbose: bool,
    /// Go template per row, `table TEMPLATE`, or `json`.
    #[arg(long)]
    format: Option<String>,
}

/// `rimg system prune`.
#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Prune anonymous volumes no container uses.
    #[arg(long)]
    volumes: bool,
    /// Do not prompt for confirmation (rimg never prompts).
    #[arg(short, long)]
    force: bool,
}

/// The version's JSON: docker's `Client`/`Server` shape (rimg is both; there is no daemon).
fn version_json() -> Value {
    let engine = json!({
        "Platform": {"Name": "rimg"},
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": "1.41",
        "GoVersion": "none (Rust)",
        "GitCommit": option_env!("RIMG_GIT_COMMIT").unwrap_or(""),
        "Os": std::env::consts::OS,
        "Arch": go_arch(),
        "Experimental": false,
    });
    json!({"Client": engine, "Server": {"Platform": {"Name": "rimg (daemonless)"}, "Version": env!("CARGO_PKG_VERSION"),
        "Components": [{"Name": "Engine", "Version": env!("CARGO_PKG_VERSION")}], "Os": std::env::consts::OS, "Arch": go_arch()}})
}

/// GOARCH names (`amd64`, `arm64`).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// `rimg version`.
pub fn version(a: VersionArgs, _g: &Globals) -> anyhow::Result<i32> {
    let v = version_json();
    if let Some(f) = &a.format {
        crate::outln!("{}", Template::parse(f)?.execute(&v)?);
        return Ok(0);
    }
    let c = &v["Client"];
    crate::outln!("Client: rimg");
    for (k, val) in [
        ("Version", c["Version"].as_str()),
        ("API version", c["ApiVersion"].as_str()),
        ("Rust", Some("yes (no Go runtime)")),
        ("Git commit", c["GitCommit"].as_str().filter(|s| !s.is_empty())),
        ("OS/Arch", Some(&format!("{}/{}", c["Os"].as_str().unwrap_or(""), go_arch()))),
        ("Daemon", Some("none (every command runs in the calling process)")),
    ] {
        if let Some(val) = val {
            crate::outln!(" {:<19}{val}", format!("{k}:"));
        }
    }
    Ok(0)
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The kernel's `major.minor`.
fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release.split(['.', '-']).filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// What the FUSE rootfs will run on here: the request transport and whether file I/O can bypass the
/// server (passthrough, Linux 6.9+).
fn fuse_status(release: &str) -> Vec<(String, String)> {
    let uring = read_trim("/sys/module/fuse/parameters/enable_uring");
    let transport = if uring == "Y" || uring == "1" { "io_uring (fuse.enable_uring=1)" } else { "/dev/fuse" };
    let passthrough = if kernel_at_least(release, 6, 9) { "available (Linux 6.9+)" } else { "unavailable" };
    vec![
        ("Backing Filesystem".into(), "any (layers are plain directories)".into()),
        ("FUSE Transport".into(), transport.into()),
        ("FUSE Passthrough".into(), passthrough.into()),
        ("Other Drivers".into(), "overlay (kernel overlayfs, --storage-driver overlay)".into()),
    ]
}

fn os_release() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

fn mem_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// docker's `info` JSON (the fields rimg can fill).
fn info_json(g: &Globals) -> anyhow::Result<Value> {
    let store = super::pull::open_store(g)?;
    let containers = Containers::open(&store.containers_dir())?.list();
    let running = containers.iter().filter(|c| c.status == Status::Running).count();
    let images: HashSet<String> = store
        .list_images()?
        .iter()
        .filter_map(|e| store.image(&e.manifest_digest.to_string()).ok())
        .map(|r| r.id.to_string())
        .collect();
    let uname = nix::sys::utsname::uname().map_err(|e| anyhow::anyhow!("uname: {e}"))?;
    let release = uname.release().to_string_lossy().into_owned();
    let (cgroup_version, hybrid) = match crate::runtime::cgroups::Layout::detect() {
        Ok(crate::runtime::cgroups::Layout::V2(_)) => ("2", false),
        Ok(crate::runtime::cgroups::Layout::V1 { unified, .. }) => ("1", unified.is_some()),
        Err(_) => ("", false),
    };
    let cfg = crate::registry::config::RegistryConfig::load(
        g.config.as_deref(),
        &g.registry_mirrors,
        &g.insecure_registries,
    )?;
    let mut insecure = vec!["127.0.0.0/8".to_string(), "::1/128".to_string()];
    insecure.extend(cfg.insecure.iter().cloned());
    Ok(json!({
        "Containers": containers.len(), "ContainersRunning": running, "ContainersPaused": 0,
        "ContainersStopped": containers.len() - running, "Images": images.len(),
        "Driver": "fuse-overlay",
        "DriverStatus": fuse_status(&release).into_iter().map(|(k, v)| vec![k, v]).collect::<Vec<_>>(),
        "CgroupDriver": "cgroupfs", "CgroupVersion": cgroup_version, "CgroupHybrid": hybrid,
        "Runtimes": {"rimg": {"path": std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default()}},
        "DefaultRuntime": "rimg", "InitBinary": "rimg-init (built in, --init)",
        "SecurityOptions": ["name=seccomp,profile=builtin", "name=no-new-privileges", "name=cgroupns", "name=userns (--userns=auto)"],
        "KernelVersion": release, "OperatingSystem": os_release(), "OSType": std::env::consts::OS,
        "Architecture": uname.machine().to_string_lossy(), "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": mem_total(), "Name": uname.nodename().to_string_lossy(),
        "ServerVersion": env!("CARGO_PKG_VERSION"), "DockerRootDir": g.root,
        "RegistryConfig": {"Mirrors": cfg.mirrors.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
                           "InsecureRegistryCIDRs": insecure},
    }))
}

/// `rimg info`.
pub fn info(a: InfoArgs, g: &Globals) -> anyhow::Result<i32> {
    let template = a.format.as_deref().map(Template::parse).transpose()?;
    let v = info_json(g)?;
    if let Some(t) = template {
        crate::outln!("{}", t.execute(&v)?);
        return Ok(0);
    }
    let s = |k: &str| v[k].as_str().map(str::to_string).unwrap_or_else(|| v[k].to_string());
    let mut out = vec![
        "Client: rimg".to_string(),
        format!(" Version:    {}", env!("CARGO_PKG_VERSION")),
        String::new(),
        "Server:".to_string(),
        format!(" Containers: {}", s("Containers")),
        format!("  Running: {}", s("ContainersRunning")),
        format!("  Paused: {}", s("ContainersPaused")),
        format!("  Stopped: {}", s("ContainersStopped")),
        format!(" Images: {}", s("Images")),
        format!(" Server Version: {} (daemonless)", s("ServerVersion")),
        format!(" Storage Driver: {}", s("Driver")),
    ];
    for pair in v["DriverStatus"].as_array().into_iter().flatten() {
        out.push(format!("  {}: {}", pair[0].as_str().unwrap_or(""), pair[1].as_str().unwrap_or("")));
    }
    let cg = if v["CgroupHybrid"] == json!(true) {
        format!("{} (hybrid)", s("CgroupVersion"))
    } else {
        s("CgroupVersion")
    };
    out.extend([
        format!(" Cgroup Driver: {}", s("CgroupDriver")),
        format!(" Cgroup Version: {cg}"),
        " Runtimes: rimg".to_string(),
        format!(" Default Runtime: {}", s("DefaultRuntime")),
        format!(" Init Binary: {}", s("InitBinary")),
        " Security Options:".to_string(),
    ]);
    for o in v["SecurityOptions"].as_array().into_iter().flatten() {
        out.push(format!("  {}", o.as_str().unwrap_or("").trim_start_matches("name=")));
    }
    out.extend([
        format!(" Kernel Version: {}", s("KernelVersion")),
        format!(" Operating System: {}", s("OperatingSystem")),
        format!(" OSType: {}", s("OSType")),
        format!(" Architecture: {}", s("Architecture")),
        format!(" CPUs: {}", s("NCPU")),
        format!(" Total Memory: {}", bytes_size(v["MemTotal"].as_u64().unwrap_or(0))),
        format!(" Name: {}", s("Name")),
        format!(" Root Dir: {}", s("DockerRootDir")),
    ]);
    let list = |k: &str| v["RegistryConfig"][k].as_array().cloned().unwrap_or_default();
    for (title, key) in [("Registry Mirrors", "Mirrors"), ("Insecure Registries", "InsecureRegistryCIDRs")] {
        let items = list(key);
        if !items.is_empty() {
            out.push(format!(" {title}:"));
            out.extend(items.iter().map(|i| format!("  {}", i.as_str().unwrap_or(""))));
        }
    }
    for l in out {
        crate::outln!("{l}");
    }
    Ok(0)
}

/// `rimg system …`.
pub fn system(cmd: SystemCommand, g: &Globals) -> anyhow::Result<i32> {
    match cmd {
        SystemCommand::Df(a) => df(a, g),
        SystemCommand::Prune(a) => prune(a, g),
        SystemCommand::Info(a) => info(a, g),
    }
}

/// What `system df` counts, per kind.
struct Usage {
    rows: Vec<Value>,
    images: Vec<Value>,
    containers: Vec<Value>,
    volumes: Vec<Value>,
}

fn reclaimable(part: u64, total: u64) -> String {
    match (part * 100).checked_div(total) {
        Some(pct) => format!("{} ({pct}%)", human_size4(part)),
        None => human_size4(part),
    }
}

fn row(kind: &str, total: usize, active: usize, size: u64, free: u64) -> Value {
    json!({"Type": kind, "TotalCount": total.to_string(), "Active": active.to_string(),
           "Size": human_size4(size), "Reclaimable": reclaimable(free, size)})
}

fn usage(store: &Store) -> anyhow::Result<Usage> {
    let c = Containers::open(&store.containers_dir())?;
    let list = c.list();
    let used_images: HashSet<String> = list.iter().filter_map(|c| c.spec.image_id.clone()).collect();
    // Images: layers shared between images are counted once.
    let mut seen = HashSet::new();
    let (mut layers_total, mut layers_used) = (HashSet::new(), HashSet::new());
    let mut images = Vec::new();
    for e in store.list_images()? {
        let Ok(rec) = store.image(&e.manifest_digest.to_string()) else { continue };
        if !seen.insert(rec.id.to_string()) {
            continue;
        }
        let active = used_images.contains(&rec.id.to_string());
        for (d, n) in super::image_list::layer_sizes(store, &rec) {
            layers_total.insert((d.clone(), n));
            if active {
                layers_used.insert((d, n));
            }
        }
        let name = e.name.as_deref().and_then(|n| crate::reference::Reference::parse(n).ok());
        let size = super::image_list::unpacked_size(store, &rec);
        images.push(json!({
            "Repository": name.as_ref().map(|r| r.familiar_name()).unwrap_or_else(|| "<none>".into()),
            "Tag": name.as_ref().and_then(|r| r.tag.clone()).unwrap_or_else(|| "<none>".into()),
            "ID": rec.id.short(), "CreatedSince": ago(rec.config.created().as_deref().and_then(super::units::parse_rfc3339)),
            "Size": human_size(size), "SharedSize": "0B", "UniqueSize": human_size(size),
            "Containers": list.iter().filter(|c| c.spec.image_id.as_deref() == Some(&rec.id.to_string())).count().to_string(),
        }));
    }
    let sum = |s: &HashSet<(crate::digest::Digest, u64)>| s.iter().map(|(_, n)| n).sum::<u64>();
    let (img_total, img_used) = (sum(&layers_total), sum(&layers_used));
    let mut rows = vec![row(
        "Images",
        images.len(),
        used_images.len().min(images.len()),
        img_total,
        img_total - img_used.min(img_total),
    )];
    let (mut ctr_total, mut ctr_free, mut containers) = (0, 0, Vec::new());
    for st in &list {
        let rw = crate::store::layers::tree_size(&c.dir_of(&st.id).upper()).unwrap_or(0);
        ctr_total += rw;
        if st.status != Status::Running {
            ctr_free += rw;
        }
        let vols =
            st.spec.mounts.iter().filter(|m| matches!(m, crate::runtime::MountSpec::Volume { .. })).count();
        containers.push(json!({"ID": st.short_id(), "Image": st.spec.image, "Command": format!("\"{}\"", super::image_list::ellipsis(&st.spec.process.args.join(" "), 20)),
            "LocalVolumes": vols.to_string(), "Size": human_size4(rw), "RunningFor": ago(Some((st.created / 1_000_000_000) as i64)),
            "Status": format!("{:?}", st.status).to_lowercase(), "Names": st.spec.name}));
    }
    let running = list.iter().filter(|s| s.status == Status::Running).count();
    rows.push(row("Containers", list.len(), running, ctr_total, ctr_free));
    let vols = c.volumes();
    let (mut vol_total, mut vol_free, mut active, mut volumes) = (0, 0, 0, Vec::new());
    for v in vols.list() {
        let size = vols.size(&v.name);
        let links = c.users_of_volume(&v.name).len();
        vol_total += size;
        if links == 0 {
            vol_free += size;
        } else {
            active += 1;
        }
        volumes.push(json!({"Name": v.name, "Links": links.to_string(), "Size": human_size4(size)}));
    }
    rows.push(row("Local Volumes", volumes.len(), active, vol_total, vol_free));
    let cache = std::fs::read_dir(store.root().join("build-cache")).map(|d| d.count()).unwrap_or(0);
    rows.push(row("Build Cache", cache, 0, 0, 0));
    Ok(Usage { rows, images, containers, volumes })
}

/// `rimg system df`.
fn df(a: DfArgs, g: &Globals) -> anyhow::Result<i32> {
    let format = ListFormat::new(
        a.format.as_deref(),
        r"{{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
    )?;
    let store = super::pull::open_store(g)?;
    let u = usage(&store)?;
    if !a.verbose {
        let headers = json!({"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE", "Reclaimable": "RECLAIMABLE"});
        crate::out!(
            "{}",
            format.render(&headers, &u.rows, &Methods::none().typed("*formatter.diskUsageContext"))?
        );
        return Ok(0);
    }
    let section = |title: &str, tpl: &str, headers: Value, rows: &[Value]| -> anyhow::Result<()> {
        crate::outln!("{title}\n");
        crate::out!("{}", ListFormat::new(Some(tpl), "")?.render(&headers, rows, &Methods::none())?);
        crate::outln!();
        Ok(())
    };
    section(
        "Images space usage:",
        r"table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}",
        json!({"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "CreatedSince": "CREATED", "Size": "SIZE",
               "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "Containers": "CONTAINERS"}),
        &u.images,
    )?;
    section(
        "Containers space usage:",
        r"table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}",
        json!({"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "LocalVolumes": "LOCAL VOLUMES", "Size": "SIZE",
               "RunningFor": "CREATED", "Status": "STATUS", "Names": "NAMES"}),
        &u.containers,
    )?;
    section(
        "Local Volumes space usage:",
        r"table {{.Name}}\t{{.Links}}\t{{.Size}}",
        json!({"Name": "VOLUME NAME", "Links": "LINKS", "Size": "SIZE"}),
        &u.volumes,
    )?;
    crate::outln!("Build cache usage: 0B");
    Ok(0)
}

/// `rimg system prune`: stopped containers, dangling (with `-a` unused) images, the build cache and,
/// with `--volumes`, anonymous volumes no container uses.
fn prune(a: PruneArgs, g: &Globals) -> anyhow::Result<i32> {
    let store = super::pull::open_store(g)?;
    let c = Containers::open(&store.containers_dir())?;
    let mut total = 0;
    let mut ids = Vec::new();
    for st in c.list().into_iter().filter(|s| s.status != Status::Running) {
        total += crate::store::layers::tree_size(&c.dir_of(&st.id).upper()).unwrap_or(0);
        crate::runtime::lifecycle::remove(&c, &st.id, false)?;
        ids.push(st.id);
    }
    let print = |title: &str, items: &[String]| {
        if !items.is_empty() {
            crate::outln!("{title}");
            for i in items {
                crate::outln!("{i}");
            }
            crate::outln!();
        }
    };
    print("Deleted Containers:", &ids);
    if a.volumes {
        let (names, bytes) = super::volume::prune(&c, false, &[])?;
        total += bytes;
        print("Deleted Volumes:", &names);
    }
    let (lines, bytes) = super::images::prune_images(&store, a.all)?;
    total += bytes;
    print("Deleted Images:", &lines);
    let cache_dir = store.root().join("build-cache");
    let cache: Vec<String> = std::fs::read_dir(&cache_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .map(|e| e.file_name().to_string_lossy().trim_end_matches(".json").to_string())
        .collect();
    print("Deleted build cache objects:", &cache);
    crate::outln!("Total reclaimed space: {}", human_size4(total));
    Ok(0)
}
