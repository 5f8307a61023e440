//! `rimg volume create|ls|inspect|rm|prune`, and the volumes a new container asks for: `-v NAME:/path`,
//! `-v /path` (anonymous), `--mount type=volume`, `--volumes-from`, the image's `VOLUME`s.

use super::Globals;
use crate::runtime::spec::UserNamespace;
use crate::runtime::{Containers, MountSpec};
use crate::store::volumes::{VolumeInfo, Volumes};
use crate::template::{ListFormat, Methods, Template};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// `rimg volume …`.
#[derive(clap::Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume.
    #[command(
        after_help = "Examples:\n  rimg volume create data\n  rimg volume create --label env=dev cache"
    )]
    Create(CreateArgs),
    /// List volumes.
    #[command(
        alias = "list",
        after_help = "Examples:\n  rimg volume ls\n  rimg volume ls -q --filter dangling=true\n  \
                                            rimg volume ls --format '{{.Name}}: {{.Mountpoint}}'"
    )]
    Ls(LsArgs),
    /// Show volumes' details as JSON.
    #[command(
        after_help = "Examples:\n  rimg volume inspect data\n  rimg volume inspect -f '{{.Mountpoint}}' data"
    )]
    Inspect(InspectArgs),
    /// Remove volumes (not one a container uses).
    #[command(
        alias = "remove",
        after_help = "Examples:\n  rimg volume rm data\n  rimg volume rm -f data cache"
    )]
    Rm(RmArgs),
    /// Remove unused anonymous volumes (all unused volumes with -a).
    #[command(
        after_help = "Examples:\n  rimg volume prune -f\n  rimg volume prune -a -f --filter label=env=dev"
    )]
    Prune(PruneArgs),
}

/// `rimg volume create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Volume name (a random one when omitted).
    name: Option<String>,
    /// Volume driver (only `local`).
    #[arg(short = 'd', long, default_value = "local")]
    driver: String,
    /// Set metadata for a volume (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Driver options (the local driver's mount options are not supported).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    opts: Vec<String>,
}

/// `rimg volume ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Only display volume names.
    #[arg(short, long)]
    quiet: bool,
    /// Filter: dangling=true|false, name=, label=KEY[=VALUE], driver=.
    #[arg(short, long = "filter", value_name = "FILTER")]
    filter: Vec<String>,
    /// Go template per volume, `table TEMPLATE`, or `json`.
    #[arg(long)]
    format: Option<String>,
}

/// `rimg volume inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Volumes.
    #[arg(required = true)]
    names: Vec<String>,
    /// Go template per volume.
    #[arg(short, long)]
    format: Option<String>,
}

/// `rimg volume rm`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Volumes.
    #[arg(required = true)]
    names: Vec<String>,
    /// Do not report volumes that do not exist.
    #[arg(short, long)]
    force: bool,
}

/// `rimg volume prune`.
#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused volumes, not only anonymous ones.
    #[arg(short, long)]
    all: bool,
    /// Filter: label=KEY[=VALUE], label!=KEY[=VALUE].
    #[arg(long = "filter", value_name = "FILTER")]
    filter: Vec<String>,
    /// Do not prompt for confirmation (rimg never prompts).
    #[arg(short, long)]
    force: bool,
}

fn containers(g: &Globals) -> anyhow::Result<Containers> {
    super::pull::open_store(g)?;
    Ok(Containers::open(&g.root.join("containers"))?)
}

/// `rimg volume …`.
pub fn volume(cmd: VolumeCommand, g: &Globals) -> anyhow::Result<i32> {
    let c = containers(g)?;
    match cmd {
        VolumeCommand::Create(a) => create(a, &c),
        VolumeCommand::Ls(a) => ls(a, &c),
        VolumeCommand::Inspect(a) => inspect(a, &c),
        VolumeCommand::Rm(a) => rm(a, &c),
        VolumeCommand::Prune(a) => {
            let (names, bytes) = prune(&c, a.all, &a.filter)?;
            crate::outln!("Deleted Volumes:");
            for n in names {
                crate::outln!("{n}");
            }
            crate::outln!("\nTotal reclaimed space: {}", super::units::human_size4(bytes));
            Ok(0)
        }
    }
}

/// `KEY=VALUE` pairs (a bare `KEY` has the empty value, as docker's labels).
fn pairs(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

fn create(a: CreateArgs, c: &Containers) -> anyhow::Result<i32> {
    if a.driver != "local" {
        bail!("create {}: plugin \"{}\" not found", a.name.as_deref().unwrap_or(""), a.driver);
    }
    if let Some(o) = a.opts.first() {
        bail!(
            "create: volume option {o:?} is not supported (rimg's local driver keeps volumes in its store)"
        );
    }
    let (v, _) = c.volumes().create(a.name.as_deref(), pairs(&a.labels), BTreeMap::new())?;
    crate::outln!("{}", v.name);
    Ok(0)
}

/// docker's `volume inspect` JSON of one volume.
pub(crate) fn inspect_json(vols: &Volumes, v: &VolumeInfo) -> Value {
    json!({
        "CreatedAt": v.created_at,
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": vols.data_dir(&v.name),
        "Name": v.name,
        "Options": v.options,
        "Scope": "local",
    })
}

fn inspect(a: InspectArgs, c: &Containers) -> anyhow::Result<i32> {
    let template = a.format.as_deref().map(Template::parse).transpose()?;
    let vols = c.volumes();
    let mut all = Vec::new();
    let mut code = 0;
    for n in &a.names {
        match vols.get(n) {
            Ok(v) => all.push(inspect_json(&vols, &v)),
            Err(e) => {
                crate::errln!("Error response from daemon: {e}");
                code = super::EXIT_RIMG_ERROR;
            }
        }
    }
    match template {
        Some(t) => {
            for v in &all {
                crate::outln!("{}", t.execute(v)?);
            }
        }
        None => crate::outln!("{}", super::images::json_indented(&Value::Array(all))?),
    }
    Ok(code)
}

/// The row `volume ls` templates see.
fn row(vols: &Volumes, v: &VolumeInfo) -> Value {
    let labels: Vec<String> = v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "Availability": "N/A", "Driver": v.driver, "Group": "N/A", "Labels": labels.join(","),
        "Links": "N/A", "Mountpoint": vols.data_dir(&v.name), "Name": v.name, "Scope": "local",
        "Size": "N/A", "Status": "N/A",
    })
}

fn label_matches(v: &VolumeInfo, spec: &str) -> bool {
    match spec.split_once('=') {
        Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
        None => v.labels.contains_key(spec),
    }
}

fn ls(a: LsArgs, c: &Containers) -> anyhow::Result<i32> {
    let format = ListFormat::new(a.format.as_deref(), r"{{.Driver}}\t{{.Name}}")?;
    let vols = c.volumes();
    let mut list = vols.list();
    for f in &a.filter {
        let (k, v) =
            f.split_once('=').with_context(|| format!("bad format of filter (expected name=value): {f}"))?;
        list.retain(|vol| match k {
            "dangling" => (v == "true" || v == "1") == c.users_of_volume(&vol.name).is_empty(),
            "name" => vol.name.contains(v),
            "label" => label_matches(vol, v),
            "driver" => vol.driver == v,
            _ => true,
        });
        if !matches!(k, "dangling" | "name" | "label" | "driver") {
            bail!("invalid filter '{k}'");
        }
    }
    if a.quiet {
        for v in &list {
            crate::outln!("{}", v.name);
        }
        return Ok(0);
    }
    let rows: Vec<Value> = list.iter().map(|v| row(&vols, v)).collect();
    let headers = json!({"Availability": "AVAILABILITY", "Driver": "DRIVER", "Group": "GROUP", "Labels": "LABELS",
        "Links": "LINKS", "Mountpoint": "MOUNTPOINT", "Name": "VOLUME NAME", "Scope": "SCOPE", "Size": "SIZE",
        "Status": "STATUS"});
    crate::out!("{}", format.render(&headers, &rows, &Methods::none().typed("*formatter.volumeContext"))?);
    Ok(0)
}

fn rm(a: RmArgs, c: &Containers) -> anyhow::Result<i32> {
    let vols = c.volumes();
    let mut code = 0;
    for n in &a.names {
        let r = vols.get(n).map_err(anyhow::Error::from).and_then(|_| {
            let users = c.users_of_volume(n);
            if !users.is_empty() {
                let short: Vec<&str> = users.iter().map(|u| &u[..12.min(u.len())]).collect();
                bail!("remove {n}: volume is in use - [{}]", short.join(", "));
            }
            Ok(vols.remove(n)?)
        });
        match r {
            Ok(()) => crate::outln!("{n}"),
            Err(e)
                if a.force
                    && e.downcast_ref::<crate::store::StoreError>()
                        .is_some_and(|e| matches!(e, crate::store::StoreError::VolumeNotFound(_))) => {}
            Err(e) => {
                crate::errln!("Error response from daemon: {}", super::one_line(&e));
                code = super::EXIT_RIMG_ERROR;
            }
        }
    }
    Ok(code)
}

/// Remove the volumes no container uses (only anonymous ones unless `all`) that match `filters`;
/// returns their names and the bytes freed. Shared with `system prune --volumes`.
pub(crate) fn prune(c: &Containers, all: bool, filters: &[String]) -> anyhow::Result<(Vec<String>, u64)> {
    let vols = c.volumes();
    let mut removed = Vec::new();
    let mut bytes = 0;
    for v in vols.list() {
        let keep = filters.iter().any(|f| match f.split_once('=') {
            Some(("label", spec)) => !label_matches(&v, spec),
            Some(("label!", spec)) => label_matches(&v, spec),
            _ => false,
        });
        if keep || (!all && !v.anonymous) || !c.users_of_volume(&v.name).is_empty() {
            continue;
        }
        let size = vols.size(&v.name);
        vols.remove(&v.name)?;
        bytes += size;
        removed.push(v.name);
    }
    Ok((removed, bytes))
}

/// Makes the volumes a new container asks for.
pub(super) struct VolumeMaker {
    volumes: Volumes,
    /// With a user namespace, a volume made now belongs to the container's root.
    owner: Option<(u32, u32)>,
}

impl VolumeMaker {
    /// For containers of the store at `root`.
    pub(super) fn new(root: &std::path::Path, userns: Option<&UserNamespace>) -> VolumeMaker {
        let owner = userns.map(|ns| (ns.uid_map.to_host(0), ns.gid_map.to_host(0)));
        VolumeMaker { volumes: Volumes::new(root), owner }
    }

    /// The named volume `name` (created when missing) at `target`; `None` makes an anonymous one.
    pub(super) fn mount(
        &self,
        name: Option<&str>,
        target: &str,
        readonly: bool,
        copy: bool,
    ) -> anyhow::Result<MountSpec> {
        if !target.starts_with('/') {
            bail!("invalid mount config: the container path {target:?} must be absolute");
        }
        let (v, created) = self.volumes.create(name, BTreeMap::new(), BTreeMap::new())?;
        let source = self.volumes.data_dir(&v.name);
        if let (true, Some((u, g))) = (created, self.owner) {
            std::os::unix::fs::chown(&source, Some(u), Some(g))
                .with_context(|| format!("chown {}", source.display()))?;
        }
        Ok(MountSpec::Volume {
            name: v.name,
            source,
            target: target.to_string(),
            readonly,
            anonymous: v.anonymous,
            copy,
        })
    }

    /// `--volumes-from CONTAINER[:ro|:rw]`: the container's volume and bind mounts.
    pub(super) fn volumes_from(&self, containers: &Containers, spec: &str) -> anyhow::Result<Vec<MountSpec>> {
        let (key, mode) = match spec.rsplit_once(':') {
            Some((k, m @ ("ro" | "rw"))) => (k, Some(m == "ro")),
            Some((_, m)) => bail!("invalid mode for --volumes-from {spec:?}: {m}"),
            None => (spec, None),
        };
        let st = containers.resolve(key)?;
        Ok(st
            .spec
            .mounts
            .into_iter()
            .filter_map(|m| match m {
                MountSpec::Volume { name, source, target, readonly, anonymous, .. } => {
                    Some(MountSpec::Volume {
                        name,
                        source,
                        target,
                        readonly: mode.unwrap_or(readonly),
                        anonymous,
                        copy: false,
                    })
                }
                MountSpec::Bind { source, target, readonly } => {
                    Some(MountSpec::Bind { source, target, readonly: mode.unwrap_or(readonly) })
                }
                MountSpec::Tmpfs { .. } => None,
            })
            .collect())
    }
}

/// The mount point of any mount.
pub(super) fn target_of(m: &MountSpec) -> &str {
    match m {
        MountSpec::Bind { target, .. }
        | MountSpec::Tmpfs { target, .. }
        | MountSpec::Volume { target, .. } => target,
    }
}
