//! Executing a Dockerfile: stages, steps, the build cache, and the containers RUN steps run in.
//!
//! Each RUN runs as a real container (the same namespaces, cgroups and rootfs as `rimg run`, network none
//! by default) on the layers built so far; its upper directory becomes the step's layer. COPY and ADD
//! write their layer directly as a tar, without a container. Config-only instructions change the config
//! and add an empty history entry.
//!
//! Cache: each step has a key chained from its parent's key, the expanded instruction and, for COPY/ADD,
//! the content hash of its sources. A hit reuses the stored layer and the step's recorded timestamp, so a
//! fully cached rebuild writes a byte-identical config and therefore the same image digest.

use super::context::{self, CopyTar, Ignore, Owner, Source};
use super::dockerfile::{Command, Dockerfile, Heredoc, Instruction, Step};
use super::image::{
    layer_from_tar, layer_from_upper, now_rfc3339, source_date_epoch, ImageError, LayerRef, NewImage,
};
use super::rootfs::MergedView;
use super::words::expand;
use crate::layer::walk::Dir;
use crate::runtime::{self, ContainerSpec, Containers, NetworkMode, ProcessSpec};
use crate::store::{ImageRecord, Store};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What `rimg build` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// `--build-arg K=V`.
    pub build_args: HashMap<String, String>,
    /// `--target STAGE`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--network` for RUN steps (default none).
    pub network: NetworkMode,
    /// Names to tag the result with (full references).
    pub tags: Vec<String>,
    /// Print only the image ID at the end.
    pub quiet: bool,
}

/// Why a build failed; the message names the step.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error(transparent)]
    Parse(#[from] super::dockerfile::ParseError),
    /// A step failed.
    #[error("step {step} ({text}): {msg}")]
    Step {
        /// 1-based step number.
        step: usize,
        /// The instruction.
        text: String,
        /// What went wrong.
        msg: String,
    },
    /// A RUN command exited non-zero.
    #[error("The command '{cmd}' returned a non-zero code: {code}")]
    RunFailed {
        /// The command as run.
        cmd: String,
        /// Its exit code.
        code: i32,
    },
    /// Assembling the image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The cache failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Resolves `FROM image` when the image is not a stage: pulls it if needed, as docker does.
pub type BaseResolver<'a> = dyn Fn(&str, Option<&str>) -> Result<ImageRecord, String> + 'a;

/// One stage being built.
struct Stage {
    name: Option<String>,
    image: NewImage,
    /// ARG values visible in this stage (declared ones only).
    args: HashMap<String, String>,
    /// Cache key of the last step.
    key: String,
    shell: Vec<String>,
}

/// A finished build.
#[derive(Debug)]
pub struct Built {
    /// The resulting image.
    pub record: ImageRecord,
    /// Steps answered from the cache.
    pub cache_hits: usize,
    /// Steps executed.
    pub executed: usize,
}

/// Build the Dockerfile in `opts` into `store`.
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    resolve_base: &BaseResolver<'_>,
) -> Result<Built, BuildError> {
    let df = Dockerfile::parse(&opts.dockerfile)?;
    let ignore = Dir::open(&opts.context).map_err(std::io::Error::from).and_then(|root| Ignore::load(&root));
    let ignore =
        ignore.map_err(|e| BuildError::Step { step: 0, text: ".dockerignore".into(), msg: e.to_string() })?;
    // Global ARGs (before the first FROM): usable in FROM lines.
    let mut global: HashMap<String, String> = HashMap::new();
    for (k, v) in &df.global_args {
        if let Some(v) = opts.build_args.get(k).cloned().or_else(|| v.clone()) {
            let v = expand(&v, &global, df.escape).unwrap_or(v);
            global.insert(k.clone(), v);
        }
    }
    // A build killed mid-step leaves its step container's record behind (its monitor tore the container
    // down); clear those exited ones so they neither clutter `ps -a` nor pile up.
    if let Ok(containers) = Containers::open(&store.containers_dir()) {
        for old in containers.list() {
            if old.spec.name.starts_with("rimg-build-") && old.status == runtime::Status::Exited {
                let _ = containers.remove_files(&old.id);
            }
        }
    }
    // Base images, cached and new layers are held in a lease until the image is written, so a concurrent
    // `image prune` or `rmi` cannot delete them mid-build (see store::lease).
    let lease = store.lease("build")?;
    let store = &store.with_lease(&lease);
    let resolve_held = |name: &str, platform: Option<&str>| -> Result<ImageRecord, String> {
        let rec = resolve_base(name, platform)?;
        store.hold_image(&rec).map_err(|e| format!("image {name}: {e}"))?;
        Ok(rec)
    };
    let resolve_base: &BaseResolver<'_> = &resolve_held;
    let mut b =
        Builder { store, opts, ignore, escape: df.escape, global, stages: Vec::new(), hits: 0, executed: 0 };
    let total = df.steps.len();
    for (i, step) in df.steps.iter().enumerate() {
        let n = i + 1;
        if !opts.quiet {
            crate::outln!("Step {n}/{total} : {}", step.text);
        }
        if let Instruction::From { .. } = &step.instruction {
            // A new stage starts; stop after the target stage is complete.
            if let (Some(t), Some(last)) = (&opts.target, b.stages.last()) {
                if last.name.as_deref() == Some(t.as_str()) {
                    break;
                }
            }
        }
        b.step(n, step, resolve_base).map_err(|e| match e {
            StepError::Build(e) => e,
            StepError::Msg(msg) => BuildError::Step { step: n, text: step.text.clone(), msg },
        })?;
    }
    let stage = match &opts.target {
        Some(t) => b.stages.iter().find(|s| s.name.as_deref() == Some(t.as_str())).ok_or_else(|| {
            BuildError::Step { step: 0, text: format!("--target {t}"), msg: format!("no stage named {t:?}") }
        })?,
        None => b.stages.last().ok_or_else(|| BuildError::Step {
            step: 0,
            text: String::new(),
            msg: "no stage".into(),
        })?,
    };
    let (hits, executed) = (b.hits, b.executed);
    let mut record = stage.image.write(store, opts.tags.first().map(String::as_str))?;
    for extra in opts.tags.iter().skip(1) {
        record = stage.image.write(store, Some(extra))?;
    }
    Ok(Built { record, cache_hits: hits, executed })
}

enum StepError {
    Build(BuildError),
    Msg(String),
}

impl From<BuildError> for StepError {
    fn from(e: BuildError) -> Self {
        StepError::Build(e)
    }
}

impl From<ImageError> for StepError {
    fn from(e: ImageError) -> Self {
        StepError::Build(e.into())
    }
}

impl From<String> for StepError {
    fn from(e: String) -> Self {
        StepError::Msg(e)
    }
}

struct Builder<'a> {
    store: &'a Store,
    opts: &'a BuildOptions,
    ignore: Ignore,
    escape: char,
    global: HashMap<String, String>,
    stages: Vec<Stage>,
    hits: usize,
    executed: usize,
}

/// What the cache remembers of a step.
#[derive(serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    layer: Option<LayerRef>,
    created: String,
}

fn key_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

impl Builder<'_> {
    fn cache_path(&self, key: &str) -> PathBuf {
        self.store.root().join("build-cache").join(format!("{key}.json"))
    }

    fn cache_get(&self, key: &str) -> Option<CacheEntry> {
        if self.opts.no_cache {
            return None;
        }
        let e: CacheEntry = serde_json::from_slice(&std::fs::read(self.cache_path(key)).ok()?).ok()?;
        if let Some(l) = &e.layer {
            // Held before the check, so a prune cannot take the cached layer between check and use.
            self.store.hold_blobs(std::slice::from_ref(&l.digest)).ok()?;
            self.store.hold_layers(std::slice::from_ref(&l.diff_id)).ok()?;
        }
        match &e.layer {
            Some(l) if !(self.store.has_blob(&l.digest) && self.store.has_layer(&l.diff_id)) => None,
            _ => Some(e),
        }
    }

    fn cache_put(&self, key: &str, e: &CacheEntry) {
        let path = self.cache_path(key);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(data) = serde_json::to_vec(e) {
            if let Err(err) = crate::store::write_atomic(&path, &data) {
                log::warn!("build cache not saved: {err}");
            }
        }
    }

    /// Variables for substitution: declared ARGs, overridden by ENV (as docker's precedence).
    fn vars(&self) -> HashMap<String, String> {
        let Some(stage) = self.stages.last() else { return self.global.clone() };
        let mut v = stage.args.clone();
        for e in env_list(stage.image.runtime_config()) {
            if let Some((k, val)) = e.split_once('=') {
                v.insert(k.to_string(), val.to_string());
            }
        }
        v
    }

    fn x(&self, word: &str) -> Result<String, String> {
        expand(word, &self.vars(), self.escape).map_err(|e| e.to_string())
    }

    fn stage(&mut self) -> &mut Stage {
        let n = self.stages.len();
        &mut self.stages[n - 1]
    }

    fn step(&mut self, n: usize, step: &Step, resolve_base: &BaseResolver<'_>) -> Result<(), StepError> {
        match &step.instruction {
            Instruction::From { image, alias, platform } => {
                let name = expand(image, &self.global, self.escape).map_err(|e| e.to_string())?;
                let (img, key) = if name == "scratch" {
                    (NewImage::scratch(), key_of(&["scratch"]))
                } else if let Some(s) = self.stages.iter().find(|s| s.name.as_deref() == Some(name.as_str()))
                {
                    (s.image.clone(), s.key.clone())
                } else {
                    let mut vars = self.global.clone();
                    for k in ["BUILDPLATFORM", "TARGETPLATFORM"] {
                        vars.entry(k.to_string()).or_insert_with(|| predefined_arg(k).unwrap_or_default());
                    }
                    let platform = match platform {
                        Some(p) => Some(expand(p, &vars, self.escape).map_err(|e| e.to_string())?),
                        None => None,
                    };
                    let rec = resolve_base(&name, platform.as_deref())?;
                    (
                        NewImage::from_image(self.store, &rec)?,
                        key_of(&["image", &rec.manifest_digest.to_string()]),
                    )
                };
                let shell = img
                    .runtime_config()
                    .get("Shell")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                    .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()]);
                self.stages.push(Stage { name: alias.clone(), image: img, args: HashMap::new(), key, shell });
                Ok(())
            }
            Instruction::Arg(list) => {
                for (k, default) in list {
                    let v = match self.opts.build_args.get(k) {
                        Some(v) => Some(v.clone()),
                        None => match default {
                            Some(d) => Some(self.x(d)?),
                            None => self.global.get(k).cloned(),
                        },
                    };
                    let v = v.or_else(|| predefined_arg(k));
                    if let Some(v) = v {
                        self.stage().args.insert(k.clone(), v);
                    }
                }
                let text =
                    format!("ARG {}", list.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(" "));
                self.config_step(n, &text, |_| Ok(()))
            }
            Instruction::Env(pairs) => {
                let expanded: Vec<(String, String)> =
                    pairs.iter().map(|(k, v)| Ok((k.clone(), self.x(v)?))).collect::<Result<_, String>>()?;
                let text = format!(
                    "ENV {}",
                    expanded.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
                );
                self.config_step(n, &text, |img| {
                    let mut env = env_list(img.runtime_config());
                    for (k, v) in &expanded {
                        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
                        env.push(format!("{k}={v}"));
                    }
                    img.runtime_config_mut().insert("Env".into(), json!(env));
                    Ok(())
                })
            }
            Instruction::Label(pairs) => {
                let expanded: Vec<(String, String)> =
                    pairs.iter().map(|(k, v)| Ok((self.x(k)?, self.x(v)?))).collect::<Result<_, String>>()?;
                let text = format!(
                    "LABEL {}",
                    expanded.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
                );
                self.config_step(n, &text, |img| {
                    let c = img.runtime_config_mut();
                    let labels = c.entry("Labels").or_insert_with(|| json!({}));
                    if !labels.is_object() {
                        *labels = json!({});
                    }
                    for (k, v) in &expanded {
                        labels[k] = json!(v);
                    }
                    Ok(())
                })
            }
            Instruction::Workdir(w) => {
                let w = self.x(w)?;
                let cur = self.workdir();
                let dir =
                    if w.starts_with('/') { w.clone() } else { format!("{}/{w}", cur.trim_end_matches('/')) };
                self.set_field(n, &format!("WORKDIR {dir}"), "WorkingDir", json!(dir))
            }
            Instruction::User(u) => {
                let u = self.x(u)?;
                self.set_field(n, &format!("USER {u}"), "User", json!(u))
            }
            Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
                let is_cmd = matches!(step.instruction, Instruction::Cmd(_));
                let shell = self.stage().shell.clone();
                let argv = argv_of(c, &shell);
                let field = if is_cmd { "Cmd" } else { "Entrypoint" };
                let text = format!("{} {}", field.to_uppercase(), json!(argv));
                self.config_step(n, &text, |img| {
                    img.runtime_config_mut().insert(field.into(), json!(argv));
                    // Setting ENTRYPOINT resets an inherited CMD, as docker does.
                    if !is_cmd && img.runtime_config().contains_key("Cmd") {
                        img.runtime_config_mut().insert("Cmd".into(), Value::Null);
                    }
                    Ok(())
                })
            }
            Instruction::Expose(ports) => {
                let ports: Vec<String> = ports
                    .iter()
                    .map(|p| self.x(p).map(|p| if p.contains('/') { p } else { format!("{p}/tcp") }))
                    .collect::<Result<_, _>>()?;
                self.add_keys(n, &format!("EXPOSE {}", ports.join(" ")), "ExposedPorts", &ports)
            }
            Instruction::Volume(vols) => {
                let vols: Vec<String> = vols.iter().map(|v| self.x(v)).collect::<Result<_, _>>()?;
                self.add_keys(n, &format!("VOLUME {}", json!(vols)), "Volumes", &vols)
            }
            Instruction::Shell(sh) => {
                self.stage().shell = sh.clone();
                self.set_field(n, &format!("SHELL {}", json!(sh)), "Shell", json!(sh))
            }
            Instruction::StopSignal(s) => {
                let s = self.x(s)?;
                self.set_field(n, &format!("STOPSIGNAL {s}"), "StopSignal", json!(s))
            }
            Instruction::Maintainer(m) => {
                let m = m.clone();
                self.config_step(n, &format!("MAINTAINER {m}"), |img| {
                    img.set_top("author", json!(m));
                    Ok(())
                })
            }
            Instruction::Healthcheck(hc) => {
                let mut v = json!({});
                match &hc.test {
                    None => v["Test"] = json!(["NONE"]),
                    Some(Command::Exec(a)) => {
                        v["Test"] = json!(std::iter::once("CMD".to_string())
                            .chain(a.iter().cloned())
                            .collect::<Vec<_>>())
                    }
                    Some(Command::Shell(s)) => v["Test"] = json!(["CMD-SHELL", s]),
                }
                for (k, val) in &hc.flags {
                    let key = match k.as_str() {
                        "interval" => "Interval",
                        "timeout" => "Timeout",
                        "start-period" => "StartPeriod",
                        "start-interval" => "StartInterval",
                        _ => "Retries",
                    };
                    v[key] = if key == "Retries" {
                        json!(val.parse::<u64>().map_err(|_| format!("--retries {val:?} is not a number"))?)
                    } else {
                        json!(parse_duration_ns(val)
                            .ok_or_else(|| format!("--{k} {val:?} is not a duration"))?)
                    };
                }
                self.config_step(n, &format!("HEALTHCHECK {v}"), |img| {
                    img.runtime_config_mut().insert("Healthcheck".into(), v.clone());
                    Ok(())
                })
            }
            Instruction::Run { cmd, heredocs, network } => {
                self.run_step(n, step, cmd, heredocs, network.as_deref())
            }
            Instruction::Copy { add, srcs, dest, from, chown, chmod, heredocs } => self.copy_step(
                n,
                *add,
                srcs,
                dest,
                from.as_deref(),
                chown.as_deref(),
                chmod.as_deref(),
                heredocs,
                resolve_base,
            ),
        }
    }

    /// The current stage's working directory (`/` when unset).
    fn workdir(&self) -> String {
        self.stages
            .last()
            .and_then(|s| {
                s.image.runtime_config().get("WorkingDir").and_then(Value::as_str).map(str::to_string)
            })
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    /// A config step that sets one runtime-config field.
    fn set_field(&mut self, n: usize, text: &str, field: &str, value: Value) -> Result<(), StepError> {
        self.config_step(n, text, |img| {
            img.runtime_config_mut().insert(field.into(), value);
            Ok(())
        })
    }

    /// A config step that adds keys to a set-valued field (`ExposedPorts`, `Volumes`: `{"key": {}}`).
    fn add_keys(&mut self, n: usize, text: &str, field: &str, keys: &[String]) -> Result<(), StepError> {
        self.config_step(n, text, |img| {
            let set = img.runtime_config_mut().entry(field).or_insert_with(|| json!({}));
            if !set.is_object() {
                *set = json!({});
            }
            for k in keys {
                set[k] = json!({});
            }
            Ok(())
        })
    }

    /// A step that only changes the config: cached only for its timestamp (so rebuilds are identical).
    fn config_step(
        &mut self,
        _n: usize,
        text: &str,
        apply: impl FnOnce(&mut NewImage) -> Result<(), String>,
    ) -> Result<(), StepError> {
        let key = key_of(&[&self.stage().key, text]);
        let created = match self.cache_get(&key) {
            Some(e) => e.created,
            None => {
                let created = now_rfc3339();
                self.cache_put(&key, &CacheEntry { layer: None, created: created.clone() });
                created
            }
        };
        let stage = self.stage();
        apply(&mut stage.image)?;
        stage.image.push_empty(&format!("/bin/sh -c #(nop) {text}"), &created);
        stage.key = key;
        Ok(())
    }

    fn run_step(
        &mut self,
        _n: usize,
        step: &Step,
        cmd: &Command,
        heredocs: &[Heredoc],
        network: Option<&str>,
    ) -> Result<(), StepError> {
        let shell = self.stage().shell.clone();
        let argv = match (cmd, heredocs.first()) {
            // `RUN <<EOF` alone: the heredoc is the script.
            (Command::Shell(s), Some(h))
                if s.trim().trim_start_matches("<<").trim_start_matches('-').trim_matches(['"', '\''])
                    == h.name =>
            {
                let mut a = shell.clone();
                a.push(h.body.clone());
                a
            }
            // Heredocs feeding a command: hand the whole thing to the shell, which knows heredocs.
            (Command::Shell(s), Some(_)) => {
                let mut text = s.clone();
                for h in heredocs {
                    text.push('\n');
                    text.push_str(&h.body);
                    text.push_str(&h.name);
                }
                let mut a = shell.clone();
                a.push(text);
                a
            }
            (c, _) => argv_of(c, &shell),
        };
        let stage = self.stages.last().ok_or_else(|| "RUN before FROM".to_string())?;
        let mut env = env_list(stage.image.runtime_config());
        let mut arg_env: Vec<String> = stage
            .args
            .iter()
            .filter(|(k, _)| !env.iter().any(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k.as_str())))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        arg_env.sort();
        env.extend(arg_env.iter().cloned());
        let user = stage.image.runtime_config().get("User").and_then(Value::as_str).unwrap_or("").to_string();
        let cwd = self.workdir();
        let net = match network.unwrap_or("") {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            "" | "default" => self.opts.network,
            other => {
                return Err(format!("RUN --network={other} is not supported (none, host, default)").into())
            }
        };
        let created_by = format!("RUN {}", json!(argv));
        let key = key_of(&[&stage.key, &created_by, &arg_env.join("\n"), &user, &cwd, &format!("{net:?}")]);
        if let Some(hit) = self.cache_get(&key) {
            if !self.opts.quiet {
                crate::outln!(" ---> Using cache");
            }
            self.hits += 1;
            return self.finish_layer_step(key, hit, &created_by);
        }
        self.executed += 1;
        let lowers = stage.image.layer_dirs(self.store);
        let below: Vec<crate::digest::Digest> =
            stage.image.layers().iter().map(|l| l.diff_id.clone()).collect();
        let containers = Containers::open(&self.store.containers_dir()).map_err(|e| e.to_string())?;
        let spec = ContainerSpec {
            name: format!("rimg-build-{}-{}", &key[..12], std::process::id()),
            image: format!("build step {}", step.line),
            image_id: None,
            lowers: lowers.clone(),
            driver: runtime::RootfsDriver::Fuse,
            process: ProcessSpec {
                args: argv.clone(),
                env,
                cwd,
                user,
                tty: false,
                stdin: false,
                preserve_fds: 0,
            },
            hostname: String::new(),
            network: net,
            stop_signal: libc::SIGTERM,
            stop_timeout: 10,
            ..ContainerSpec::default()
        };
        let (state, lock) = containers.create(spec).map_err(|e| e.to_string())?;
        let id = state.id.clone();
        let _cleanup = RemoveContainer { containers: &containers, id: id.clone() };
        if !self.opts.quiet {
            crate::outln!(" ---> Running in {}", &id[..12]);
        }
        let code = runtime::run_foreground(&containers, state, lock).map_err(|f| f.message)?;
        if code != 0 {
            return Err(BuildError::RunFailed { cmd: argv.join(" "), code }.into());
        }
        let upper = containers.dir_of(&id).upper();
        drop_mount_stubs(&upper, &lowers);
        let layer = layer_from_upper(self.store, &upper, &lowers, &below, source_date_epoch())?;
        let entry = CacheEntry { layer: Some(layer), created: now_rfc3339() };
        self.cache_put(&key, &entry);
        self.finish_layer_step(key, entry, &created_by)
    }

    fn finish_layer_step(
        &mut self,
        key: String,
        entry: CacheEntry,
        created_by: &str,
    ) -> Result<(), StepError> {
        let stage = self.stage();
        match entry.layer {
            Some(l) => stage.image.push_layer(l, created_by, &entry.created, None),
            None => stage.image.push_empty(created_by, &entry.created),
        }
        stage.key = key;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_step(
        &mut self,
        _n: usize,
        add: bool,
        srcs: &[String],
        dest: &str,
        from: Option<&str>,
        chown: Option<&str>,
        chmod: Option<&str>,
        heredocs: &[Heredoc],
        resolve_base: &BaseResolver<'_>,
    ) -> Result<(), StepError> {
        let kw = if add { "ADD" } else { "COPY" };
        let dest = self.x(dest)?;
        let srcs: Vec<String> = srcs.iter().map(|s| self.x(s)).collect::<Result<_, _>>()?;
        let chown = chown.map(|c| self.x(c)).transpose()?;
        let mode = match chmod {
            Some(m) => {
                Some(u32::from_str_radix(m, 8).map_err(|_| format!("--chmod={m} is not an octal mode"))?)
            }
            None => None,
        };
        let (abs_dest, dest_rel, dest_is_dir) = self.copy_dest(&dest, &srcs);
        // Where the sources come from: the context, or the rootfs of a stage/image (mounted read-only).
        let (src_root, from_id, from_view) = self.copy_root(from, resolve_base)?;
        let owner_ids = match &chown {
            None => None,
            Some(spec) => Some(self.resolve_chown(spec)?),
        };
        let owner = Owner { ids: owner_ids, mode, keep_ids: from.is_some() };
        let ignore_rules = if from.is_none() { self.ignore.clone() } else { Ignore::default() };
        let ignore = &ignore_rules;
        let sources = copy_sources(add, &srcs, &src_root, ignore)?;
        let content = context::hash_sources(&sources, ignore).map_err(|e| e.to_string())?;
        let heredoc_text: String = heredocs.iter().map(|h| format!("{}\n{}", h.name, h.body)).collect();
        let created_by = format!("{kw} {} {abs_dest}", srcs.join(" "));
        let stage_key = self.stage().key.clone();
        let key = key_of(&[
            &stage_key,
            &created_by,
            &content,
            &heredoc_text,
            &format!("{owner_ids:?}{mode:?}{dest_is_dir}"),
            &from_id,
        ]);
        if let Some(hit) = self.cache_get(&key) {
            if !self.opts.quiet {
                crate::outln!(" ---> Using cache");
            }
            self.hits += 1;
            return self.finish_layer_step(key, hit, &created_by);
        }
        self.executed += 1;
        let below: Vec<crate::digest::Digest> =
            self.stage().image.layers().iter().map(|l| l.diff_id.clone()).collect();
        let plan = CopyPlan {
            add,
            owner,
            clamp: source_date_epoch(),
            ignore: from.is_none().then_some(ignore),
            heredocs,
            sources: &sources,
            dest_rel: &dest_rel,
            dest_is_dir,
        };
        let layer = layer_from_tar(self.store, &below, &mut |out| plan.write(out))?;
        drop(sources);
        drop(src_root);
        drop(from_view);
        let entry = CacheEntry { layer: Some(layer), created: now_rfc3339() };
        self.cache_put(&key, &entry);
        self.finish_layer_step(key, entry, &created_by)
    }

    /// Where a COPY writes: the absolute destination, it relative to the image root, and whether it is a
    /// directory. docker's rule: it is one when written as one (`dir/`, `.`), when several sources go
    /// there, or when it already is a directory in the image.
    fn copy_dest(&mut self, dest: &str, srcs: &[String]) -> (String, PathBuf, bool) {
        let cwd = self.workdir();
        let abs_dest = if dest.starts_with('/') {
            dest.to_string()
        } else {
            format!("{}/{dest}", cwd.trim_end_matches('/'))
        };
        let dest_rel = normalize_rel(&abs_dest);
        let store = self.store;
        let lowers_now = self.stage().image.layer_dirs(store);
        let exists_as_dir = crate::layer::lower::lookup(&lowers_now, dest_rel.as_os_str().as_encoded_bytes())
            .ok()
            .flatten()
            .is_some_and(|(_, m)| m.is_dir());
        let dest_is_dir = dest.ends_with('/')
            || dest.ends_with("/.")
            || dest == "."
            || srcs.len() > 1
            || srcs.iter().any(|s| s.contains(['*', '?']))
            || exists_as_dir;
        (abs_dest, dest_rel, dest_is_dir)
    }

    /// The root COPY's sources are resolved in, opened as the root of a walk: the context, or (`--from`)
    /// a read-only view of a stage's or an image's layers, which the caller keeps until the copy is done.
    /// Also the cache identity of that root (empty for the context: its content is hashed instead).
    fn copy_root(
        &self,
        from: Option<&str>,
        resolve_base: &BaseResolver<'_>,
    ) -> Result<(Dir, String, Option<MergedView>), StepError> {
        let Some(f) = from else {
            let root = Dir::open(&self.opts.context).map_err(|e| format!("build context: {e}"))?;
            return Ok((root, String::new(), None));
        };
        let f = self.x(f)?;
        let (dirs, id) = if let Some(s) = self.stages.iter().find(|s| s.name.as_deref() == Some(f.as_str())) {
            (s.image.layer_dirs(self.store), s.key.clone())
        } else if let Ok(i) = f.parse::<usize>().map_err(|_| ()).and_then(|i| self.stages.get(i).ok_or(())) {
            (i.image.layer_dirs(self.store), i.key.clone())
        } else {
            let rec = resolve_base(&f, None)?;
            (rec.layer_dirs(self.store), rec.manifest_digest.to_string())
        };
        let view = MergedView::mount(&dirs, self.store)?;
        let root = Dir::open(&view.path).map_err(|e| format!("--from={f}: {e}"))?;
        Ok((root, id, Some(view)))
    }

    /// `--chown=user:group` to numeric ids, names looked up in the stage's own /etc/passwd and /etc/group.
    fn resolve_chown(&self, spec: &str) -> Result<(u32, u32), String> {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if let (Ok(uid), Some(Ok(gid))) = (u.parse::<u32>(), g.map(str::parse::<u32>)) {
            return Ok((uid, gid));
        }
        let dirs = self.stages.last().map(|s| s.image.layer_dirs(self.store)).unwrap_or_default();
        let view = MergedView::mount(&dirs, self.store)?;
        // The stage's /etc/passwd and /etc/group, read inside its rootfs: a symlink there must not make
        // rimg read the host's.
        let read = |f: &str| read_in_root(&view.path, f).map_err(|e| format!("--chown={spec}: {e}"));
        let id = runtime::user::resolve_with(&read("etc/passwd")?, &read("etc/group")?, spec)
            .map_err(|e| format!("--chown={spec}: {e}"))?;
        // A group given by number or name overrides the user's primary group inside resolve already.
        Ok((id.uid, id.gid))
    }
}

/// A container removed when the step is done, whatever happened.
struct RemoveContainer<'a> {
    containers: &'a Containers,
    id: String,
}

impl Drop for RemoveContainer<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.containers.remove_files(&self.id) {
            log::warn!("could not remove build container {}: {e}", self.id);
        }
    }
}

/// Give the build its own mount namespace (private propagation), so the read-only views it mounts are
/// invisible to the host and disappear with the process, even when it is killed.
pub fn enter_private_mount_namespace() -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare mount namespace: {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))
}

/// The runtime bind-mounts /etc/hosts, /etc/resolv.conf and /etc/hostname over files it creates when the
/// image lacks them; those empty stubs are the runtime's, not the step's, and stay out of the layer (as
/// docker and buildah keep them out). The step may have replaced /etc with a symlink to anywhere: the
/// upper is walked from descriptors, so only a real `etc` directory of the upper is touched.
fn drop_mount_stubs(upper: &Path, lowers: &[PathBuf]) {
    let etc = Dir::open(upper).ok().and_then(|root| root.entry(std::ffi::OsStr::new("etc")).ok().flatten());
    let Some(etc) = etc.filter(|e| e.meta().is_dir()).and_then(|e| e.open_dir().ok()) else { return };
    for f in ["hosts", "resolv.conf", "hostname"] {
        let name = std::ffi::OsStr::new(f);
        let stub = etc.entry(name).ok().flatten().is_some_and(|e| e.meta().is_file() && e.meta().size() == 0);
        let in_image =
            crate::layer::lower::lookup(lowers, format!("etc/{f}").as_bytes()).ok().flatten().is_some();
        if stub && !in_image {
            let _ = etc.remove_file(name);
        }
    }
}

/// Resolve the sources of a COPY/ADD inside `root` (heredocs excepted; URLs refused).
fn copy_sources(add: bool, srcs: &[String], root: &Dir, ignore: &Ignore) -> Result<Vec<Source>, String> {
    let mut sources = Vec::new();
    for s in srcs.iter().filter(|s| !s.starts_with("<<")) {
        if add && (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@")) {
            return Err(format!(
                "ADD from a URL ({s}) is not supported: download it in a RUN step or into the context"
            ));
        }
        sources.extend(context::resolve_sources(root, s, ignore)?);
    }
    Ok(sources)
}

/// What a COPY/ADD writes into its layer tar.
struct CopyPlan<'a> {
    add: bool,
    owner: Owner,
    clamp: Option<u64>,
    ignore: Option<&'a Ignore>,
    heredocs: &'a [Heredoc],
    sources: &'a [Source],
    dest_rel: &'a Path,
    dest_is_dir: bool,
}

impl CopyPlan<'_> {
    /// The layer tar: heredocs, then each source (an ADDed local archive unpacked, a directory's
    /// contents into the destination, anything else under its own name when the destination is a
    /// directory).
    fn write(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut t = CopyTar::new(out, self.owner, self.clamp);
        if let Some(ig) = self.ignore {
            t = t.with_ignore(ig);
        }
        let into_dir = |name: &Path| {
            if self.dest_is_dir {
                self.dest_rel.join(name)
            } else {
                self.dest_rel.to_path_buf()
            }
        };
        for h in self.heredocs {
            let target = if self.heredocs.len() > 1 {
                self.dest_rel.join(&h.name)
            } else {
                into_dir(Path::new(&h.name))
            };
            t.add_bytes(&target, h.body.as_bytes())?;
        }
        for s in self.sources {
            let meta = s.entry.meta();
            if self.add && meta.is_file() && looks_like_archive(&mut s.entry.open_file()?) {
                t.add_archive(s.entry.open_file()?, self.dest_rel)?;
            } else if meta.is_dir() {
                t.add(s, self.dest_rel)?;
            } else {
                t.add(s, &into_dir(s.rel.file_name().map(Path::new).unwrap_or(Path::new(""))))?;
            }
        }
        t.finish()
    }
}

/// The text of the file `rel` of the rootfs at `root`, resolved inside it; empty when it is missing.
fn read_in_root(root: &Path, rel: &str) -> std::io::Result<String> {
    let mut data = Vec::new();
    if let Some(found) = Dir::open(root)?.resolve(Path::new(rel))?.filter(|r| r.entry.meta().is_file()) {
        std::io::Read::read_to_end(&mut found.entry.open_file()?, &mut data)?;
    }
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// `/a/./b/../c` → `a/c`: the destination as a path relative to the image root.
fn normalize_rel(abs: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(abs).components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn env_list(cfg: &serde_json::Map<String, Value>) -> Vec<String> {
    cfg.get("Env")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn argv_of(c: &Command, shell: &[String]) -> Vec<String> {
    match c {
        Command::Exec(a) => a.clone(),
        Command::Shell(s) => {
            let mut a = shell.to_vec();
            a.push(s.clone());
            a
        }
    }
}

fn predefined_arg(k: &str) -> Option<String> {
    let p = crate::registry::Platform::host();
    Some(match k {
        "TARGETOS" | "BUILDOS" => p.os,
        "TARGETARCH" | "BUILDARCH" => p.architecture,
        "TARGETPLATFORM" | "BUILDPLATFORM" => format!("{}/{}", p.os, p.architecture),
        "TARGETVARIANT" | "BUILDVARIANT" => p.variant.unwrap_or_default(),
        _ => return None,
    })
}

fn looks_like_archive(f: &mut std::fs::File) -> bool {
    let mut magic = [0u8; 262];
    let n = std::io::Read::read(f, &mut magic).unwrap_or(0);
    let m = &magic[..n];
    m.starts_with(&[0x1f, 0x8b])
        || m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &m[257..262] == b"ustar")
}

/// Go duration text (`30s`, `1m30s`, `500ms`) in nanoseconds, as docker stores healthcheck times.
fn parse_duration_ns(s: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if let Some(&n) = chars.peek() {
            if n == 's' && matches!(c, 'm' | 'u' | 'n') {
                unit.push(n);
                chars.next();
            }
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        let mult = match unit.as_str() {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        total += (v * mult) as u64;
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(super::parse_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(super::parse_duration_ns("500ms"), Some(500_000_000));
        assert_eq!(super::parse_duration_ns("5"), None);
    }
}
