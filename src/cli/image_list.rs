//! `rimg images` / `image ls` and `rimg history` / `image history`: docker's columns, `--format`
//! templates, `--filter`, sizes as the unpacked size in docker's units.

use super::pull::open_store;
use super::units::{ago, created_at, human_size, parse_rfc3339};
use super::Globals;
use crate::reference::Reference;
use crate::store::{ImageEntry, ImageRecord, Store};
use crate::template::{ListFormat, Methods};
use anyhow::{bail, Context};
use serde_json::{json, Value};

/// `rimg images`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  rimg images\n  rimg images --filter dangling=true -q\n  \
                        rimg images --format '{{.Repository}}:{{.Tag}} {{.Size}}'")]
pub struct ImagesArgs {
    /// Only show images of this repository (`centos`, `localhost:5000/app`).
    repository: Option<String>,
    /// Show all images (rimg keeps no intermediate images, so the same as without).
    #[arg(short, long)]
    all: bool,
    /// Only print image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show full image IDs.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Filter: dangling=true|false, reference=PATTERN, label=KEY[=VALUE], before=IMAGE, since=IMAGE.
    #[arg(short, long = "filter", value_name = "FILTER")]
    filter: Vec<String>,
    /// Go template per image, `table TEMPLATE`, or `json`.
    #[arg(long)]
    format: Option<String>,
}

/// One row of `images`: an image under one of its names.
struct Row {
    repo: String,
    tag: String,
    digest: String,
    rec: ImageRecord,
    created: Option<i64>,
    dangling: bool,
}

/// The filters of `images --filter`.
#[derive(Default)]
struct Filters {
    dangling: Option<bool>,
    reference: Vec<String>,
    label: Vec<(String, Option<String>)>,
    before: Option<i64>,
    since: Option<i64>,
}

impl Filters {
    fn parse(store: &Store, specs: &[String]) -> anyhow::Result<Filters> {
        let mut f = Filters::default();
        for s in specs {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("bad format of filter (expected name=value): {s}"))?;
            match k {
                "dangling" => {
                    f.dangling = Some(match v.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => bail!("invalid filter 'dangling={v}'"),
                    })
                }
                "reference" => f.reference.push(v.to_string()),
                "label" => f.label.push(match v.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (v.to_string(), None),
                }),
                "before" | "since" => {
                    let rec = store.image(v)?;
                    let t = created_secs(&rec).unwrap_or(0);
                    if k == "before" {
                        f.before = Some(t);
                    } else {
                        f.since = Some(t);
                    }
                }
                other => bail!("invalid filter '{other}'"),
            }
        }
        Ok(f)
    }

    fn keep(&self, r: &Row) -> bool {
        if self.dangling.is_some_and(|d| d != r.dangling) {
            return false;
        }
        if !self.reference.is_empty() {
            let named = format!("{}:{}", r.repo, r.tag);
            if r.dangling || !self.reference.iter().any(|p| glob(p, &r.repo) || glob(p, &named)) {
                return false;
            }
        }
        let labels = r.rec.config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
        if !self.label.iter().all(|(k, v)| labels.get(k).is_some_and(|x| v.as_ref().is_none_or(|v| v == x))) {
            return false;
        }
        let t = r.created.unwrap_or(0);
        self.before.is_none_or(|b| t < b) && self.since.is_none_or(|s| t > s)
    }
}

/// Go's `path.Match` (what docker's `reference=` filter uses): `*` and `?` never match `/`, `[...]`
/// classes.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => {
                (0..=n.len()).take_while(|&i| i == 0 || n[i - 1] != '/').any(|i| go(rest, &n[i..]))
            }
            Some(('?', rest)) => n.first().is_some_and(|c| *c != '/') && go(rest, &n[1..]),
            Some(('[', rest)) => {
                let Some(end) = rest.iter().position(|c| *c == ']') else { return false };
                let (class, after) = (&rest[..end], &rest[end + 1..]);
                let (neg, class) = match class.split_first() {
                    Some(('^', c)) => (true, c),
                    _ => (false, class),
                };
                let Some(c) = n.first() else { return false };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= *c && *c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == *c;
                        i += 1;
                    }
                }
                hit != neg && go(after, &n[1..])
            }
            Some(('\\', rest)) if !rest.is_empty() => n.first() == rest.first() && go(&rest[1..], &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(&pattern.chars().collect::<Vec<_>>(), &name.chars().collect::<Vec<_>>())
}

fn created_secs(rec: &ImageRecord) -> Option<i64> {
    rec.config.created().as_deref().and_then(parse_rfc3339)
}

/// The image's unpacked size: the sum of its layers' (see `Store::layer_size`).
pub(crate) fn unpacked_size(store: &Store, rec: &ImageRecord) -> u64 {
    let mut seen = std::collections::HashSet::new();
    layer_sizes(store, rec).into_iter().filter(|(d, _)| seen.insert(d.clone())).map(|(_, n)| n).sum()
}

/// Each layer of the image (bottom first) with its unpacked size.
pub(crate) fn layer_sizes(store: &Store, rec: &ImageRecord) -> Vec<(crate::digest::Digest, u64)> {
    let blobs: Vec<Option<crate::digest::Digest>> =
        rec.manifest.layers().iter().map(|l| l.digest().to_string().parse().ok()).collect();
    rec.diff_ids
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), store.layer_size(d, blobs.get(i).and_then(Option::as_ref)).unwrap_or(0)))
        .collect()
}

/// Every (image, name) pair of the index as rows, newest image first (docker's order).
fn rows(store: &Store, entries: &[ImageEntry], repository: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let only = repository.map(Reference::parse).transpose()?.map(|r| r.name());
    let mut rows = Vec::new();
    for e in entries {
        // A `repo@digest` name shows as `repo <none>` only while no tag names the image (docker's rule).
        let digest_name = e.name.as_deref().is_some_and(crate::store::images::is_digest_name);
        if digest_name
            && entries.iter().any(|o| {
                o.manifest_digest == e.manifest_digest
                    && o.name.as_deref().is_some_and(|n| !crate::store::images::is_digest_name(n))
            })
        {
            continue;
        }
        let rec = match store.image(&e.manifest_digest.to_string()) {
            Ok(r) => r,
            Err(err) => {
                log::warn!("skipping broken image {}: {err}", e.manifest_digest);
                continue;
            }
        };
        let parsed = e.name.as_deref().and_then(|n| Reference::parse(n).ok());
        if only.is_some() && parsed.as_ref().map(|r| r.name()) != only {
            continue;
        }
        let (repo, tag) = match &parsed {
            Some(r) => (r.familiar_name(), r.tag.clone().unwrap_or_else(|| "<none>".into())),
            None => ("<none>".to_string(), "<none>".to_string()),
        };
        let digest =
            e.repo_digest.as_deref().and_then(|r| r.rsplit('@').next()).unwrap_or("<none>").to_string();
        let created = created_secs(&rec);
        rows.push(Row { repo, tag, digest, rec, created, dangling: e.name.is_none() });
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.created.unwrap_or(0)));
    Ok(rows)
}

fn id_text(rec: &ImageRecord, full: bool) -> String {
    if full {
        rec.id.to_string()
    } else {
        rec.id.short().to_string()
    }
}

/// The row as docker's image list context shows it to templates (`{{json .}}` prints these keys).
fn row_json(store: &Store, r: &Row, no_trunc: bool) -> Value {
    let size = human_size(unpacked_size(store, &r.rec));
    json!({
        "Containers": "N/A",
        "CreatedAt": r.created.map(created_at).unwrap_or_default(),
        "CreatedSince": ago(r.created),
        "Digest": r.digest,
        "ID": id_text(&r.rec, no_trunc),
        "Repository": r.repo,
        "SharedSize": "N/A",
        "Size": size,
        "Tag": r.tag,
        "UniqueSize": "N/A",
        "VirtualSize": size,
    })
}

fn headers() -> Value {
    json!({
        "Containers": "CONTAINERS", "CreatedAt": "CREATED AT", "CreatedSince": "CREATED", "Digest": "DIGEST",
        "ID": "IMAGE ID", "Repository": "REPOSITORY", "SharedSize": "SHARED SIZE", "Size": "SIZE",
        "Tag": "TAG", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE",
    })
}

/// `rimg images`.
pub fn images(a: ImagesArgs, g: &Globals) -> anyhow::Result<i32> {
    let store = open_store(g)?;
    let filters = Filters::parse(&store, &a.filter)?;
    let default = if a.digests {
        r"{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        r"{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    // Parsed before any work, so a bad template fails at once.
    let format = ListFormat::new(a.format.as_deref(), default)?;
    let entries = store.list_images()?;
    let rows: Vec<Row> =
        rows(&store, &entries, a.repository.as_deref())?.into_iter().filter(|r| filters.keep(r)).collect();
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            if seen.insert(r.rec.id.clone()) {
                crate::outln!("{}", id_text(&r.rec, a.no_trunc));
            }
        }
        return Ok(0);
    }
    let data: Vec<Value> = rows.iter().map(|r| row_json(&store, r, a.no_trunc)).collect();
    crate::out!("{}", format.render(&headers(), &data, &Methods::none().typed("*formatter.imageContext"))?);
    Ok(0)
}

/// `rimg history`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  rimg history alpine\n  rimg history --no-trunc -q alpine\n  \
                        rimg history --format '{{.CreatedBy}}: {{.Size}}' alpine")]
pub struct HistoryArgs {
    /// Image.
    image: String,
    /// Print sizes and dates in human readable format (`-H=false`: bytes and RFC 3339).
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    human: bool,
    /// Don't truncate output.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Go template per entry, `table TEMPLATE`, or `json`.
    #[arg(long)]
    format: Option<String>,
}

/// `rimg history`: the config's history, newest first; entries with a layer show its unpacked size, the
/// newest one the image's id, the others `<missing>` (docker's view of a pulled image).
pub fn history(a: HistoryArgs, g: &Globals) -> anyhow::Result<i32> {
    let store = open_store(g)?;
    let format = ListFormat::new(
        a.format.as_deref(),
        r"{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
    )?;
    let rec = store.image(&a.image)?;
    let entries = history_entries(&store, &rec);
    let mut rows = Vec::new();
    for (i, (h, size)) in entries.iter().enumerate().rev() {
        let id = if i + 1 == entries.len() { id_text(&rec, a.no_trunc) } else { "<missing>".to_string() };
        if a.quiet {
            crate::outln!("{id}");
            continue;
        }
        let created = h.created().as_deref().and_then(parse_rfc3339);
        let by = h.created_by().clone().unwrap_or_default().replace('\t', " ");
        rows.push(json!({
            "ID": id,
            "CreatedSince": if a.human { ago(created) } else { h.created().clone().unwrap_or_default() },
            "CreatedAt": created.map(created_at).unwrap_or_default(),
            "CreatedBy": if a.no_trunc { by } else { ellipsis(&by, 45) },
            "Size": if a.human { human_size(*size) } else { size.to_string() },
            "Comment": h.comment().clone().unwrap_or_default(),
        }))
    }
    if a.quiet {
        return Ok(0);
    }
    let headers = json!({"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                         "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"});
    crate::out!("{}", format.render(&headers, &rows, &Methods::none().typed("*formatter.historyContext"))?);
    Ok(0)
}

/// The config's history entries with each one's layer size (0 for empty layers), oldest first. An image
/// without history gets one entry per layer.
fn history_entries(store: &Store, rec: &ImageRecord) -> Vec<(oci_spec::image::History, u64)> {
    let hist = rec.config.history().clone().unwrap_or_default();
    let sizes = layer_sizes(store, rec);
    let mut layers = sizes.iter().map(|(_, n)| *n);
    if hist.is_empty() {
        return layers.map(|n| (oci_spec::image::History::default(), n)).collect();
    }
    hist.into_iter()
        .map(|h| {
            let size = if h.empty_layer().unwrap_or(false) { 0 } else { layers.next().unwrap_or(0) };
            (h, size)
        })
        .collect()
}

/// docker's `stringutils.Ellipsis`: at most `n` characters, the last one `…` when cut.
pub(crate) fn ellipsis(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n.saturating_sub(1)).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::{ellipsis, glob};

    #[test]
    fn reference_patterns_match_as_go_path_match() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("busybox:*", "busybox:latest"));
        assert!(!glob("*", "localhost:5000/app"));
        assert!(glob("*/app", "localhost:5000/app"));
        assert!(glob("alp?ne", "alpine"));
        assert!(glob("[ab]*", "busybox") && !glob("[^ab]*", "busybox"));
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(ellipsis("abc", 4), "abc");
    }
}
