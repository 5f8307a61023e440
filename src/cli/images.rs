//! Image commands: `images`, `inspect`, `tag`, `rmi`, `image prune`, `save`, `load`.

use super::pull::open_store;
use super::Globals;
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};
use anyhow::Context;
use serde_json::{json, Value};
use std::path::PathBuf;

/// `rimg inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Images to inspect.
    #[arg(required = true)]
    images: Vec<String>,
    /// Print one field per image instead of the JSON: `{{.Id}}`, `{{.Config.Cmd}}`, `{{json .RootFS}}`.
    #[arg(short, long)]
    format: Option<String>,
}

/// `rimg tag`.
#[derive(clap::Args, Debug)]
pub struct TagArgs {
    /// Existing image.
    source: String,
    /// New name.
    target: String,
}

/// `rimg rmi`.
#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    /// Images to remove.
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove even if several names point at the image or a container uses it.
    #[arg(short, long)]
    force: bool,
}

/// `rimg save`.
#[derive(clap::Args, Debug)]
pub struct SaveArgs {
    /// Images to save.
    #[arg(required = true)]
    images: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// `rimg load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Read from this file instead of standard input.
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Print only the loaded names.
    #[arg(short, long)]
    quiet: bool,
}

/// `rimg image …`.
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Remove untagged images (all unused images with -a) and reclaim their space.
    Prune(PruneArgs),
    /// List images (same as `rimg images`).
    Ls(super::image_list::ImagesArgs),
    /// Show an image's history (same as `rimg history`).
    History(super::image_list::HistoryArgs),
    /// Show an image's details (same as `rimg inspect`).
    Inspect(InspectArgs),
    /// Remove images (same as `rimg rmi`).
    Rm(RmiArgs),
}

/// `rimg image prune`.
#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Remove every image no container uses, not only untagged ones.
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation (rimg never asks; accepted for docker compatibility).
    #[arg(short, long)]
    force: bool,
}

/// The docker-shaped JSON of `docker image inspect`.
pub(crate) fn inspect_json(store: &Store, rec: &ImageRecord) -> Value {
    let size = super::image_list::unpacked_size(store, rec);
    let cfg = serde_json::to_value(&rec.config).unwrap_or(Value::Null);
    let c = cfg.get("config").cloned().unwrap_or(json!({}));
    let pick = |k: &str| c.get(k).cloned().unwrap_or(Value::Null);
    let repo_tags: Vec<String> =
        rec.tags.iter().filter_map(|t| Reference::parse(t).ok()).map(|r| r.familiar()).collect();
    let repo_digests: Vec<String> = rec
        .repo_digests
        .iter()
        .filter_map(|rd| {
            let (name, d) = rd.rsplit_once('@')?;
            let r = Reference::parse(name).ok()?;
            Some(format!("{}@{d}", r.familiar_name()))
        })
        .collect();
    json!({
        "Id": rec.id.to_string(),
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": cfg.get("history").and_then(|h| h.as_array()).and_then(|h| h.last()).and_then(|h| h.get("comment")).cloned().unwrap_or(json!("")),
        "Created": cfg.get("created").cloned().unwrap_or(Value::Null),
        "Author": cfg.get("author").cloned().unwrap_or(json!("")),
        "Config": {
            "Hostname": "", "Domainname": "", "User": pick("User"),
            "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
            "ExposedPorts": pick("ExposedPorts"), "Tty": false, "OpenStdin": false, "StdinOnce": false,
            "Env": pick("Env"), "Cmd": pick("Cmd"), "Image": "", "Volumes": pick("Volumes"),
            "WorkingDir": c.get("WorkingDir").cloned().unwrap_or(json!("")), "Entrypoint": pick("Entrypoint"),
            "OnBuild": Value::Null, "Labels": pick("Labels"), "StopSignal": pick("StopSignal"),
        },
        "Architecture": cfg.get("architecture").cloned().unwrap_or(Value::Null),
        "Variant": cfg.get("variant").cloned().unwrap_or(Value::Null),
        "Os": cfg.get("os").cloned().unwrap_or(Value::Null),
        "Size": size,
        "VirtualSize": size,
        "RootFS": {"Type": "layers", "Layers": rec.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "Descriptor": {"mediaType": rec.manifest.media_type().as_ref().map(|m| m.to_string()), "digest": rec.manifest_digest.to_string()},
        "Metadata": {"LastTagTime": Value::Null},
    })
}

/// `rimg inspect`: docker's JSON (an array, 4-space indented) or, with `--format`, the template per
/// object. A name that matches nothing is reported and the others are still shown; the exit is then 125.
pub fn inspect(a: InspectArgs, g: &Globals) -> anyhow::Result<i32> {
    // Parsed first: a bad template fails before any output.
    let template = a.format.as_deref().map(crate::template::Template::parse).transpose()?;
    let store = open_store(g)?;
    let mut all = Vec::new();
    let mut failed = false;
    for name in &a.images {
        match store.image(name) {
            Ok(rec) => all.push(inspect_json(&store, &rec)),
            Err(crate::store::StoreError::ImageNotFound(_)) => {
                crate::errln!("Error: No such object: {name}");
                failed = true;
            }
            Err(e) => {
                crate::errln!("Error: {e}");
                failed = true;
            }
        }
    }
    match &template {
        Some(t) => {
            for v in &all {
                crate::outln!("{}", t.execute(v)?);
            }
        }
        None => crate::outln!("{}", json_indented(&Value::Array(all))?),
    }
    Ok(if failed { super::EXIT_RIMG_ERROR } else { 0 })
}

/// JSON as docker's `inspect` prints it: indented by four spaces.
pub(crate) fn json_indented(v: &Value) -> anyhow::Result<String> {
    use serde::Serialize;
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    v.serialize(&mut ser)?;
    Ok(String::from_utf8(buf)?)
}

pub fn tag(a: TagArgs, g: &Globals) -> anyhow::Result<i32> {
    let store = open_store(g)?;
    let rec = store.image(&a.source)?;
    let target = Reference::parse(&a.target)?;
    if target.digest.is_some() {
        anyhow::bail!("refusing to create a tag with a digest reference: {}", a.target);
    }
    store.add_image(crate::store::ImageEntry {
        name: Some(target.to_string()),
        manifest_digest: rec.manifest_digest.clone(),
        manifest_size: std::fs::metadata(store.blob_path(&rec.manifest_digest)).map(|m| m.len()).unwrap_or(0),
        media_type: rec
            .manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into()),
        repo_digest: None,
        added: None,
    })?;
    Ok(0)
}

pub fn rmi(a: RmiArgs, g: &Globals) -> anyhow::Result<i32> {
    let store = open_store(g)?;
    let in_use = images_in_use(&store);
    let mut code = 0;
    for name in &a.images {
        if let Err(e) = rmi_one(&store, name, a.force, &in_use) {
            crate::errln!("Error response from daemon: {}", super::one_line(&e));
            code = super::EXIT_RIMG_ERROR;
        }
    }
    let stats =
        store.gc(&in_use.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(), &layers_in_use(&store))?;
    log::info!("reclaimed {} blobs, {} layers", stats.blobs, stats.layers);
    Ok(code)
}

fn rmi_one(
    store: &Store,
    name: &str,
    force: bool,
    in_use: &[(crate::digest::Digest, String)],
) -> anyhow::Result<()> {
    let rec = store.image(name)?;
    if let Some((_, ctr)) = in_use.iter().find(|(d, _)| d == &rec.manifest_digest) {
        if !force {
            anyhow::bail!(
                "conflict: unable to remove image {name} (must force) - image is being used by container {}",
                &ctr[..ctr.len().min(12)]
            );
        }
    }
    let by_name = Reference::parse(name).ok().map(|r| r.to_string()).filter(|n| rec.tags.contains(n));
    match by_name {
        Some(full) if rec.tags.len() > 1 || force => {
            store.remove_name(&full)?;
            crate::outln!("Untagged: {}", Reference::parse(&full).map(|r| r.familiar()).unwrap_or(full));
            if rec.tags.len() == 1 {
                crate::outln!("Deleted: {}", rec.id);
            }
        }
        Some(full) => {
            store.remove_name(&full)?;
            store.remove_manifest(&rec.manifest_digest)?;
            crate::outln!("Untagged: {}", Reference::parse(&full).map(|r| r.familiar()).unwrap_or(full));
            crate::outln!("Deleted: {}", rec.id);
        }
        None => {
            if rec.tags.len() > 1 && !force {
                anyhow::bail!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    rec.id.short()
                );
            }
            for t in &rec.tags {
                crate::outln!(
                    "Untagged: {}",
                    Reference::parse(t).map(|r| r.familiar()).unwrap_or_else(|_| t.clone())
                );
            }
            store.remove_manifest(&rec.manifest_digest)?;
            crate::outln!("Deleted: {}", rec.id);
        }
    }
    Ok(())
}

pub fn image(a: ImageCommand, g: &Globals) -> anyhow::Result<i32> {
    match a {
        ImageCommand::Ls(x) => super::image_list::images(x, g),
        ImageCommand::History(x) => super::image_list::history(x, g),
        ImageCommand::Inspect(x) => inspect(x, g),
        ImageCommand::Rm(x) => rmi(x, g),
        ImageCommand::Prune(p) => {
            let store = open_store(g)?;
            let (lines, bytes) = prune_images(&store, p.all)?;
            crate::outln!("Deleted Images:");
            for l in lines {
                crate::outln!("{l}");
            }
            crate::outln!("\nTotal reclaimed space: {}", super::units::human_size4(bytes));
            Ok(0)
        }
    }
}

/// Remove the dangling images (with `all`, every image no container uses) and collect what they held;
/// returns docker's `untagged: …` / `deleted: …` lines and the bytes freed. Shared with `system prune`.
pub(crate) fn prune_images(store: &Store, all: bool) -> anyhow::Result<(Vec<String>, u64)> {
    let in_use = images_in_use(store);
    let used: Vec<crate::digest::Digest> = in_use.iter().map(|(d, _)| d.clone()).collect();
    let mut lines = Vec::new();
    for e in store.list_images()? {
        if used.contains(&e.manifest_digest) || (!all && e.name.is_some()) {
            continue;
        }
        match &e.name {
            Some(n) => {
                store.remove_name(n)?;
                lines.push(format!("untagged: {n}"));
            }
            None => store.remove_manifest(&e.manifest_digest)?,
        }
        lines.push(format!("deleted: {}", e.manifest_digest));
    }
    let stats = store.gc(&used, &layers_in_use(store))?;
    Ok((lines, stats.bytes))
}

pub fn save(a: SaveArgs, g: &Globals) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let store = open_store(g)?;
    let names: Vec<String> = a.images.clone();
    for n in &names {
        store.image(n)?;
    }
    match &a.output {
        Some(path) => {
            let tmp = path.with_extension("rimg-partial");
            let f =
                std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            crate::store::archive::save(&store, &names, std::io::BufWriter::new(f))?;
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                anyhow::bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            crate::store::archive::save(&store, &names, std::io::stdout().lock())?;
        }
    }
    Ok(0)
}

pub fn load(a: LoadArgs, g: &Globals) -> anyhow::Result<i32> {
    let store = open_store(g)?;
    let unpack = |s: &Store,
                  blob: &crate::digest::Digest,
                  diff: &crate::digest::Digest,
                  below: &[crate::digest::Digest]| {
        crate::pull::unpack_blob(s, blob, diff, below).map_err(|e| e.to_string())
    };
    let loaded = match &a.input {
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            crate::store::archive::load(&store, std::io::BufReader::new(f), &unpack)?
        }
        None => crate::store::archive::load(&store, std::io::stdin().lock(), &unpack)?,
    };
    for l in loaded {
        match l.name.as_deref().and_then(|n| Reference::parse(n).ok()) {
            Some(r) => crate::outln!("Loaded image: {}", r.familiar()),
            None => crate::outln!("Loaded image ID: {}", l.id),
        }
    }
    Ok(0)
}

/// Containers' state files, read as JSON: which images and layer directories they still run on.
fn container_states(store: &Store) -> Vec<Value> {
    let Ok(rd) = std::fs::read_dir(store.containers_dir()) else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| std::fs::read(e.path().join("state.json")).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .collect()
}

/// (manifest, container id) for every container whose image is still in the index.
pub(crate) fn images_in_use(store: &Store) -> Vec<(crate::digest::Digest, String)> {
    let mut out = Vec::new();
    for st in container_states(store) {
        let id = st.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let image = st.pointer("/spec/image_id").and_then(Value::as_str).unwrap_or_default();
        if let Ok(rec) = store.image(image) {
            out.push((rec.manifest_digest, id));
        }
    }
    out
}

/// Layer directories containers mount: kept by gc even when their image was removed with -f.
pub(crate) fn layers_in_use(store: &Store) -> Vec<PathBuf> {
    container_states(store)
        .iter()
        .filter_map(|st| st.pointer("/spec/lowers").and_then(Value::as_array).cloned())
        .flatten()
        .filter_map(|v| v.as_str().map(PathBuf::from))
        .collect()
}

/// `rimg unpack`.
#[derive(clap::Args, Debug)]
pub struct UnpackArgs {
    /// Image to flatten.
    image: String,
    /// New (or empty) directory to write the rootfs into.
    dir: PathBuf,
}

/// `rimg export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Container (its current filesystem) or image.
    target: String,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn unpack(a: UnpackArgs, g: &Globals) -> anyhow::Result<i32> {
    let store = open_store(g)?;
    let rec = store.image(&a.image)?;
    crate::build::builder::enter_private_mount_namespace().map_err(anyhow::Error::msg)?;
    crate::build::rootfs::unpack(&store, &rec.layer_dirs(&store), &a.dir).map_err(anyhow::Error::msg)?;
    Ok(0)
}

pub fn export(a: ExportArgs, g: &Globals) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let store = open_store(g)?;
    // A container's filesystem is its upper over its image's layers; an image's is its layers.
    let containers = crate::runtime::Containers::open(&store.containers_dir())?;
    let dirs = match containers.resolve(&a.target) {
        Ok(st) => {
            let mut d = vec![containers.dir_of(&st.id).upper()];
            d.extend(st.spec.lowers.iter().cloned());
            d
        }
        Err(_) => store.image(&a.target)?.layer_dirs(&store),
    };
    crate::build::builder::enter_private_mount_namespace().map_err(anyhow::Error::msg)?;
    match &a.output {
        Some(path) => {
            let tmp = path.with_extension("rimg-partial");
            let f =
                std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            crate::build::rootfs::export(&store, &dirs, std::io::BufWriter::new(f))
                .map_err(anyhow::Error::msg)?;
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                anyhow::bail!("cowardly refusing to export to a terminal. Use the -o flag or redirect");
            }
            crate::build::rootfs::export(&store, &dirs, std::io::stdout().lock())
                .map_err(anyhow::Error::msg)?;
        }
    }
    Ok(0)
}
