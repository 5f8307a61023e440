//! `rimg ps` / `container ls`: docker's columns, `--format` templates (with `{{.Label "key"}}`),
//! `--filter`, `-n`/`-l`, `-s`.

use super::units::{ago, created_at, human_duration, human_size4};
use super::Globals;
use crate::runtime::{ContainerState, Containers, MountSpec, NetworkMode, Status};
use crate::template::{ListFormat, Methods};
use anyhow::{bail, Context};
use serde_json::{json, Value};

/// `rimg ps` flags.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  rimg ps -a\n  rimg ps --filter status=exited --filter label=app=web -q\n  \
                        rimg ps --format 'table {{.Names}}\\t{{.Status}}'"
)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only display container IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Filter: name=, id=, status=, ancestor=, label=KEY[=VALUE], exited=CODE, before=, since=, volume=.
    #[arg(short = 'f', long = "filter", value_name = "FILTER")]
    filter: Vec<String>,
    /// Go template per container, `table TEMPLATE`, or `json`.
    #[arg(long)]
    format: Option<String>,
    /// Show the N last created containers (all states).
    #[arg(short = 'n', long = "last", value_name = "N", allow_hyphen_values = true)]
    last: Option<i64>,
    /// Show the latest created container (all states).
    #[arg(short = 'l', long)]
    latest: bool,
    /// Display total file sizes (the container's writes, and its image's size as "virtual").
    #[arg(short = 's', long)]
    size: bool,
}

/// docker's container states (`status=` filter values).
const STATES: &[&str] = &["created", "restarting", "running", "removing", "paused", "exited", "dead"];

/// What `--filter` asks for; every key must match (values of one key: any).
#[derive(Default)]
struct Filters {
    name: Vec<String>,
    id: Vec<String>,
    status: Vec<String>,
    ancestor: Vec<(String, Option<String>, Vec<std::path::PathBuf>)>,
    label: Vec<(String, Option<String>)>,
    exited: Vec<i32>,
    before: Option<u128>,
    since: Option<u128>,
    volume: Vec<String>,
}

impl Filters {
    fn parse(specs: &[String], all: &[ContainerState], g: &Globals) -> anyhow::Result<Filters> {
        let mut f = Filters::default();
        let find = |key: &str| -> anyhow::Result<u128> {
            let c = all
                .iter()
                .find(|c| c.id.starts_with(key) || c.spec.name == key)
                .with_context(|| format!("No such container: {key}"))?;
            Ok(c.created)
        };
        for s in specs {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("bad format of filter (expected name=value): {s}"))?;
            match k {
                "name" => f.name.push(v.to_string()),
                "id" => f.id.push(v.to_string()),
                "status" if STATES.contains(&v) => f.status.push(v.to_string()),
                "status" => bail!("invalid filter 'status={v}'"),
                "ancestor" => f.ancestor.push(ancestor(v, g)),
                "label" => f.label.push(match v.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (v.to_string(), None),
                }),
                "exited" => f.exited.push(v.parse().with_context(|| format!("invalid filter 'exited={v}'"))?),
                "before" => f.before = Some(find(v)?),
                "since" => f.since = Some(find(v)?),
                "volume" => f.volume.push(v.to_string()),
                other => bail!("invalid filter '{other}'"),
            }
        }
        Ok(f)
    }

    fn keep(&self, c: &ContainerState) -> bool {
        let any = |v: &[String], f: &dyn Fn(&str) -> bool| v.is_empty() || v.iter().any(|x| f(x));
        any(&self.name, &|n| name_matches(n, &c.spec.name))
            && any(&self.id, &|i| c.id.starts_with(i))
            && any(&self.status, &|s| s == state_name(c))
            && (self.ancestor.is_empty()
                || self.ancestor.iter().any(|(name, id, dirs)| {
                    c.spec.image == *name
                        || (id.is_some() && c.spec.image_id == *id)
                        || (!dirs.is_empty() && c.spec.lowers.ends_with(dirs))
                }))
            && self
                .label
                .iter()
                .all(|(k, v)| c.spec.labels.get(k).is_some_and(|x| v.as_ref().is_none_or(|v| v == x)))
            && (self.exited.is_empty()
                || (c.status == Status::Exited
                    && c.started.is_some()
                    && self.exited.contains(&c.exit_code.unwrap_or(0))))
            && self.before.is_none_or(|b| c.created < b)
            && self.since.is_none_or(|s| c.created > s)
            && any(&self.volume, &|v| c.spec.mounts.iter().any(|m| mount_matches(m, v)))
    }
}

/// The image an `ancestor=` names: as given, its id and its layers (a container of a derived image
/// stacks them at the bottom of its own).
fn ancestor(v: &str, g: &Globals) -> (String, Option<String>, Vec<std::path::PathBuf>) {
    match super::pull::open_store(g).ok().and_then(|s| s.image(v).ok().map(|r| (r.layer_dirs(&s), r))) {
        Some((dirs, rec)) => (v.to_string(), Some(rec.id.to_string()), dirs),
        None => (v.to_string(), None, Vec::new()),
    }
}

/// docker's name filter is a regular expression on `/NAME`; rimg takes the forms people write: a
/// substring, anchored with `^` and/or `$`.
fn name_matches(pattern: &str, name: &str) -> bool {
    let full = format!("/{name}");
    let (start, p) = match pattern.strip_prefix('^') {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let (end, p) = match p.strip_suffix('$') {
        Some(p) => (true, p),
        None => (false, p),
    };
    [full.as_str(), name].iter().any(|n| match (start, end) {
        (true, true) => *n == p,
        (true, false) => n.starts_with(p),
        (false, true) => n.ends_with(p),
        (false, false) => n.contains(p),
    })
}

fn mount_matches(m: &MountSpec, v: &str) -> bool {
    match m {
        MountSpec::Bind { source, target, .. } => source.to_string_lossy() == v || target == v,
        MountSpec::Tmpfs { target, .. } => target == v,
        MountSpec::Volume { name, target, .. } => name == v || target == v,
    }
}

/// docker's `.State`.
fn state_name(c: &ContainerState) -> &'static str {
    match c.status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Exited => "exited",
    }
}

/// docker's `.Status`: `Up 5 minutes`, `Exited (0) 3 seconds ago`, `Created`.
fn status_text(c: &ContainerState, now: u128) -> String {
    let secs = |from: u128| (now.saturating_sub(from) / 1_000_000_000) as u64;
    match c.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", human_duration(secs(c.started.unwrap_or(c.created)))),
        Status::Exited => {
            let oom = if c.oom_killed { " (OOMKilled)" } else { "" };
            let ago = human_duration(secs(c.finished.unwrap_or(c.created)));
            format!("Exited ({}){oom} {ago} ago", c.exit_code.unwrap_or(0))
        }
    }
}

/// The row a template sees (`{{json .}}` prints these keys, as docker's container context).
fn row_json(
    c: &ContainerState,
    a: &PsArgs,
    now: u128,
    containers: &Containers,
    store: Option<&crate::store::Store>,
) -> Value {
    let created = (c.created / 1_000_000_000) as i64;
    let mut command = c.spec.process.args.join(" ");
    if !a.no_trunc {
        command = super::image_list::ellipsis(&command, 20);
    }
    let mounts: Vec<String> = c
        .spec
        .mounts
        .iter()
        .filter_map(|m| match m {
            MountSpec::Volume { name, .. } => Some(name.clone()),
            MountSpec::Bind { source, .. } => Some(source.to_string_lossy().into_owned()),
            MountSpec::Tmpfs { .. } => None,
        })
        .map(|n| if a.no_trunc { n } else { super::image_list::ellipsis(&n, 15) })
        .collect();
    let volumes = c.spec.mounts.iter().filter(|m| matches!(m, MountSpec::Volume { .. })).count();
    let labels: Vec<String> = c.spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "Command": serde_json::to_string(&command).unwrap_or_default(),
        "CreatedAt": created_at(created),
        "ID": if a.no_trunc { c.id.as_str() } else { c.short_id() },
        "Image": c.spec.image,
        "Labels": labels.join(","),
        "LocalVolumes": volumes.to_string(),
        "Mounts": mounts.join(","),
        "Names": c.spec.name,
        "Networks": match c.spec.network { NetworkMode::None => "none", NetworkMode::Host => "host" },
        "Ports": "",
        "RunningFor": ago(Some(created)),
        "Size": if a.size { size_text(c, containers, store) } else { String::new() },
        "State": state_name(c),
        "Status": status_text(c, now),
    })
}

/// `-s`: what the container wrote, and with its image's layers as "virtual" (`0B (virtual 4.26MB)`).
/// The image part is its layers' unpacked size as `images` shows it.
fn size_text(c: &ContainerState, containers: &Containers, store: Option<&crate::store::Store>) -> String {
    let rw = crate::store::layers::tree_size(&containers.dir_of(&c.id).upper()).unwrap_or(0);
    let layer = |l: &std::path::Path| -> u64 {
        let diff = l.file_name().and_then(|n| format!("sha256:{}", n.to_string_lossy()).parse().ok());
        match (store, diff) {
            (Some(s), Some(d)) if s.layer_dir(&d) == l => s.layer_size(&d, None).unwrap_or(0),
            _ => crate::store::layers::tree_size(l).unwrap_or(0),
        }
    };
    let image: u64 = c.spec.lowers.iter().map(|l| layer(l)).sum();
    format!("{} (virtual {})", human_size4(rw), human_size4(rw + image))
}

fn headers() -> Value {
    json!({
        "Command": "COMMAND", "CreatedAt": "CREATED AT", "ID": "CONTAINER ID", "Image": "IMAGE",
        "Labels": "LABELS", "LocalVolumes": "LOCAL VOLUMES", "Mounts": "MOUNTS", "Names": "NAMES",
        "Networks": "NETWORKS", "Ports": "PORTS", "RunningFor": "CREATED", "Size": "SIZE", "State": "STATE",
        "Status": "STATUS",
    })
}

/// `{{.Label "key"}}`: the value of one label of the row (docker's method).
fn label(row: &Value, args: &[Value]) -> String {
    let want = args.first().and_then(Value::as_str).unwrap_or_default();
    row["Labels"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == want).map(|(_, v)| v.to_string()))
        .unwrap_or_default()
}

/// `rimg ps`.
pub fn ps(a: PsArgs, g: &Globals) -> anyhow::Result<i32> {
    let mut default =
        r"{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
            .to_string();
    if a.size {
        default.push_str(r"\t{{.Size}}");
    }
    let format = ListFormat::new(a.format.as_deref(), &default)?;
    let containers = Containers::open(&g.root.join("containers"))?;
    let all = containers.list();
    let filters = Filters::parse(&a.filter, &all, g)?;
    let limit = if a.latest { Some(1) } else { a.last.filter(|n| *n > 0) };
    // -n, -l, before= and since= look at every container; status= too (docker's rule).
    let everything = a.all
        || limit.is_some()
        || filters.before.is_some()
        || filters.since.is_some()
        || !filters.status.is_empty();
    let mut list: Vec<&ContainerState> = all
        .iter()
        .rev()
        .filter(|c| everything || c.status == Status::Running)
        .filter(|c| filters.keep(c))
        .collect();
    if let Some(n) = limit {
        list.truncate(n as usize);
    }
    if a.quiet {
        for c in &list {
            crate::outln!("{}", if a.no_trunc { c.id.as_str() } else { c.short_id() });
        }
        return Ok(0);
    }
    let now = crate::runtime::state::now_nanos();
    let store = if a.size { super::pull::open_store(g).ok() } else { None };
    let rows: Vec<Value> = list.iter().map(|c| row_json(c, &a, now, &containers, store.as_ref())).collect();
    let methods = Methods::none().with("Label", label).typed("*formatter.ContainerContext");
    crate::out!("{}", format.render(&headers(), &rows, &methods)?);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn name_filter_forms() {
        assert!(name_matches("web", "my-web-1"));
        assert!(name_matches("^web", "web-1") && !name_matches("^web", "my-web"));
        assert!(name_matches("^/web$", "web") && name_matches("^web$", "web"));
        assert!(!name_matches("^web$", "web2"));
    }
}
