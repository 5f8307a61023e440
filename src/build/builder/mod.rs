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
//!
//! This file runs the steps and keeps the stages; one module per instruction family does the work:
//! `stage` (FROM, ARG), `instructions` (the config-only ones, a pure function of the instruction and
//! the config), `run` (RUN), `copy` (COPY, ADD), and `cache` (keys and entries).

mod cache;
mod cache_from;
mod copy;
mod instructions;
mod plan;
mod run;
mod stage;

use self::cache::{BuildCache, CacheEntry};
use self::copy::CopyArgs;
use self::instructions::Words;
use super::context::Ignore;
use super::dockerfile::{Dockerfile, Instruction, Step};
use super::image::{now_rfc3339, ImageError, NewImage};
use crate::layer::walk::Dir;
use crate::runtime::{self, Containers, NetworkMode};
use crate::store::{ImageRecord, Store};
use std::collections::HashMap;
use std::path::PathBuf;

/// Kept here for the callers of `rimg unpack` and `export`; it lives with the views it protects.
pub use super::rootfs::enter_private_mount_namespace;

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
    /// Print only the image ID at the end; steps and RUN output are not shown.
    pub quiet: bool,
    /// `--label K=V`: labels set on the result (no history entry, as BuildKit).
    pub labels: Vec<(String, String)>,
    /// `--cache-from IMAGE`: images whose steps may answer this build's (see `cache_from`).
    pub cache_from: Vec<String>,
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
    /// `--target` names no stage (checked before any step runs).
    #[error("{0}")]
    Target(String),
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
    /// Where the `--cache-from` images stand for this stage.
    cache: cache_from::Cursor,
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
    // Decided before any step: a --target naming no stage fails here, and stages nothing needs are skipped.
    let needed = plan::needed_stages(&df, &stage::global_args(&df, &opts.build_args), opts.target.as_deref())
        .map_err(BuildError::Target)?;
    let ignore = Dir::open(&opts.context).map_err(std::io::Error::from).and_then(|root| Ignore::load(&root));
    let ignore =
        ignore.map_err(|e| BuildError::Step { step: 0, text: ".dockerignore".into(), msg: e.to_string() })?;
    remove_stale_step_containers(store);
    // Base images, cached and new layers are held in a lease until the image is written, so a concurrent
    // `image prune` or `rmi` cannot delete them mid-build (see store::lease).
    let lease = store.lease("build")?;
    let store = &store.with_lease(&lease);
    let resolve_held = |name: &str, platform: Option<&str>| -> Result<ImageRecord, String> {
        let rec = resolve_base(name, platform)?;
        store.hold_image(&rec).map_err(|e| format!("image {name}: {e}"))?;
        Ok(rec)
    };
    let mut b = Builder {
        store,
        opts,
        ignore,
        escape: df.escape,
        global: stage::global_args(&df, &opts.build_args),
        stages: Vec::new(),
        hits: 0,
        executed: 0,
        cache: BuildCache::new(store, !opts.no_cache),
        sources: Vec::new(),
        source_hit: false,
    };
    if !opts.no_cache {
        b.sources = cache_sources(store, &opts.cache_from, &resolve_held);
    }
    b.run_steps(&df, &needed, &resolve_held)?;
    let mut image = b.result_stage()?.image.clone();
    if !opts.labels.is_empty() {
        image.apply(&super::config::ConfigEdit::Labels(opts.labels.clone()));
    }
    let image = &image;
    let mut record = image.write(store, opts.tags.first().map(String::as_str))?;
    for extra in opts.tags.iter().skip(1) {
        record = image.write(store, Some(extra))?;
    }
    Ok(Built { record, cache_hits: b.hits, executed: b.executed })
}

/// The `--cache-from` images, pulled when missing; one that cannot be had is a warning, as BuildKit's
/// failed cache import is.
fn cache_sources(
    store: &Store,
    names: &[String],
    resolve: &BaseResolver<'_>,
) -> Vec<cache_from::CacheSource> {
    let mut out = Vec::new();
    for n in names {
        match resolve(n, None).and_then(|rec| NewImage::from_image(store, &rec).map_err(|e| e.to_string())) {
            Ok(img) => out.push(cache_from::CacheSource::of(&img)),
            Err(e) => crate::errln!("WARNING: --cache-from {n}: {e}"),
        }
    }
    out
}

/// A build killed mid-step leaves its step container's record behind (its monitor tore the container
/// down); clear those exited ones so they neither clutter `ps -a` nor pile up.
fn remove_stale_step_containers(store: &Store) {
    if let Ok(containers) = Containers::open(&store.containers_dir()) {
        for old in containers.list() {
            if old.spec.name.starts_with("rimg-build-") && old.status == runtime::Status::Exited {
                let _ = containers.remove_files(&old.id);
            }
        }
    }
}

/// Why a step failed: a build error as it is, or a message that [`build`] wraps with the step.
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
    /// The global ARGs (declared before the first FROM).
    global: HashMap<String, String>,
    stages: Vec<Stage>,
    hits: usize,
    executed: usize,
    cache: BuildCache<'a>,
    /// The `--cache-from` images.
    sources: Vec<cache_from::CacheSource>,
    /// The last [`Builder::cached`] answer came from a `--cache-from` image (its cursor moved already).
    source_hit: bool,
}

impl Builder<'_> {
    /// The steps of the stages the build needs, in order, announced as docker does (numbered among
    /// those); a stage nothing needs gets a placeholder (so stage indices hold) and its steps are skipped.
    fn run_steps(
        &mut self,
        df: &Dockerfile,
        needed: &[bool],
        resolve_base: &BaseResolver<'_>,
    ) -> Result<(), BuildError> {
        let mut stage = 0;
        let in_needed: Vec<bool> = df
            .steps
            .iter()
            .map(|s| {
                if matches!(s.instruction, Instruction::From { .. }) {
                    stage += 1;
                }
                needed.get(stage.max(1) - 1).copied().unwrap_or(true)
            })
            .collect();
        let total = in_needed.iter().filter(|n| **n).count();
        let mut n = 0;
        for (step, run) in df.steps.iter().zip(&in_needed) {
            if !run {
                if let Instruction::From { alias, .. } = &step.instruction {
                    self.stages.push(Stage {
                        name: alias.clone(),
                        image: NewImage::scratch(),
                        args: HashMap::new(),
                        key: String::new(),
                        cache: cache_from::Cursor::default(),
                    });
                }
                continue;
            }
            n += 1;
            if !self.opts.quiet {
                crate::outln!("Step {n}/{total} : {}", step.text);
            }
            self.step(step, resolve_base).map_err(|e| match e {
                StepError::Build(e) => e,
                StepError::Msg(msg) => BuildError::Step { step: n, text: step.text.clone(), msg },
            })?;
        }
        Ok(())
    }

    /// The stage that is the build's result: `--target`'s, else the last.
    fn result_stage(&self) -> Result<&Stage, BuildError> {
        match &self.opts.target {
            Some(t) => self.stage_named(t).ok_or_else(|| BuildError::Step {
                step: 0,
                text: format!("--target {t}"),
                msg: format!("no stage named {t:?}"),
            }),
            None => self.stages.last().ok_or_else(|| BuildError::Step {
                step: 0,
                text: String::new(),
                msg: "no stage".into(),
            }),
        }
    }

    /// One step, by instruction family.
    fn step(&mut self, step: &Step, resolve_base: &BaseResolver<'_>) -> Result<(), StepError> {
        match &step.instruction {
            Instruction::From { image, alias, platform } => {
                self.start_stage(image, alias.as_deref(), platform.as_deref(), resolve_base)
            }
            Instruction::Run { cmd, heredocs, network } => {
                self.run_step(step, cmd, heredocs, network.as_deref())
            }
            Instruction::Copy { add, srcs, dest, from, chown, chmod, heredocs } => {
                let args = CopyArgs {
                    add: *add,
                    srcs,
                    dest,
                    from: from.as_deref(),
                    chown: chown.as_deref(),
                    chmod: chmod.as_deref(),
                    heredocs,
                };
                self.copy_step(&args, resolve_base)
            }
            Instruction::Arg(list) => {
                self.declare_args(list)?;
                self.config_step(&step.instruction)
            }
            config => self.config_step(config),
        }
    }

    /// The current stage (the parser guarantees a FROM before any other instruction).
    fn current(&self) -> Result<&Stage, String> {
        self.stages.last().ok_or_else(|| "no FROM before this instruction".to_string())
    }

    fn current_mut(&mut self) -> Result<&mut Stage, String> {
        self.stages.last_mut().ok_or_else(|| "no FROM before this instruction".to_string())
    }

    /// Variables for substitution: declared ARGs, overridden by ENV (as docker's precedence).
    fn vars(&self) -> HashMap<String, String> {
        let Some(stage) = self.stages.last() else { return self.global.clone() };
        let mut v = stage.args.clone();
        for e in stage.image.config().env() {
            if let Some((k, val)) = e.split_once('=') {
                v.insert(k.to_string(), val.to_string());
            }
        }
        v
    }

    /// `word` expanded with the current stage's variables.
    fn x(&self, word: &str) -> Result<String, String> {
        Words { vars: &self.vars(), escape: self.escape }.x(word)
    }

    /// The current stage's working directory (`/` when unset).
    fn workdir(&self) -> String {
        let dir = self.stages.last().map(|s| s.image.config().working_dir()).unwrap_or_default();
        if dir.is_empty() { "/" } else { dir }.to_string()
    }

    /// A step that only changes the config: its history text and change come from
    /// [`instructions::config_edit`]; the cache keeps only its timestamp (so rebuilds are identical).
    fn config_step(&mut self, instruction: &Instruction) -> Result<(), StepError> {
        let vars = self.vars();
        let stage = self.current()?;
        let words = Words { vars: &vars, escape: self.escape };
        let (text, edit) = instructions::config_edit(instruction, &words, stage.image.config())?;
        let key = cache::config_key(&stage.key, &text);
        let created_by = format!("/bin/sh -c #(nop) {text}");
        let created = match self.cached_quietly(&key, &created_by, false) {
            Some(e) => e.created,
            None => {
                let created = now_rfc3339();
                self.cache.put(&key, &CacheEntry { layer: None, created: created.clone() });
                created
            }
        };
        self.advance_sources(&created_by, None);
        let stage = self.current_mut()?;
        stage.image.apply(&edit);
        stage.image.push_empty(&created_by, &created);
        stage.key = key;
        Ok(())
    }

    /// A cache hit for a layer step (counted and announced), or `None`: from the build cache, else
    /// (unless `ask_sources` is false: COPY/ADD) from a `--cache-from` image, then kept in the cache.
    fn cached(&mut self, key: &str, created_by: &str, ask_sources: bool) -> Option<CacheEntry> {
        let hit = if ask_sources {
            self.cached_quietly(key, created_by, true)
        } else {
            self.source_hit = false;
            self.cache.get(key)
        }?;
        if !self.opts.quiet {
            crate::outln!(" ---> Using cache");
        }
        self.hits += 1;
        Some(hit)
    }

    /// The build cache's entry for `key`, else a `--cache-from` image's answer for the step.
    fn cached_quietly(&mut self, key: &str, created_by: &str, layer: bool) -> Option<CacheEntry> {
        self.source_hit = false;
        if let Some(e) = self.cache.get(key) {
            return Some(e);
        }
        let stage = self.stages.last_mut()?;
        let e = cache_from::hit(&self.sources, &mut stage.cache, created_by, layer)?;
        if let Some(l) = &e.layer {
            // Held like a local hit's, and only if the image's layer is really here.
            let held = self.store.hold_layers(std::slice::from_ref(&l.diff_id)).is_ok();
            if !(held && self.store.has_layer(&l.diff_id) && self.store.has_blob(&l.digest)) {
                stage.cache = cache_from::Cursor::default();
                return None;
            }
        }
        self.source_hit = true;
        self.cache.put(key, &e);
        Some(e)
    }

    /// Keep the `--cache-from` cursors in step with a step answered otherwise than by them.
    fn advance_sources(&mut self, created_by: &str, diff_id: Option<&crate::digest::Digest>) {
        if std::mem::take(&mut self.source_hit) {
            return;
        }
        if let Some(stage) = self.stages.last_mut() {
            cache_from::follow(&self.sources, &mut stage.cache, created_by, diff_id);
        }
    }

    /// Record a layer step's result (fresh or cached) in the current stage.
    fn finish_layer_step(
        &mut self,
        key: String,
        entry: CacheEntry,
        created_by: &str,
    ) -> Result<(), StepError> {
        self.advance_sources(created_by, entry.layer.as_ref().map(|l| &l.diff_id));
        let stage = self.current_mut()?;
        match entry.layer {
            Some(l) => stage.image.push_layer(l, created_by, &entry.created, None),
            None => stage.image.push_empty(created_by, &entry.created),
        }
        stage.key = key;
        Ok(())
    }
}
