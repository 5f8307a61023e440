//! `rimg build` and `rimg push`.

use super::pull::{client, open_store};
use super::Globals;
use crate::build::builder::{self, BuildOptions};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::runtime::NetworkMode;
use anyhow::Context;
use std::collections::HashMap;
use std::path::PathBuf;

/// Flags of `rimg build`, named as docker's.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Name (and tag) of the result; repeatable.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Dockerfile path (default CONTEXT/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Build-time variable (`K=V`, or `K` to take it from the environment).
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Stop after this stage.
    #[arg(long)]
    target: Option<String>,
    /// Do not use the build cache.
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Network for RUN steps: none (default) or host.
    #[arg(long, value_enum, default_value_t = super::run::NetworkArg::None)]
    network: super::run::NetworkArg,
    /// Print only the image ID.
    #[arg(short, long)]
    quiet: bool,
    /// The build context directory.
    context: PathBuf,
}

/// Flags of `rimg push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Image to push.
    image: String,
    /// Where to push it (default: the image's own name).
    dest: Option<String>,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

pub fn build(a: BuildArgs, g: &Globals) -> anyhow::Result<i32> {
    let store = open_store(g)?;
    let dockerfile = match &a.file {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        }
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        None => {
            let p = a.context.join("Dockerfile");
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?
        }
    };
    if !a.context.is_dir() {
        anyhow::bail!("build context {} is not a directory", a.context.display());
    }
    let mut build_args = HashMap::new();
    for kv in &a.build_args {
        match kv.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => std::env::var(kv).ok().and_then(|v| build_args.insert(kv.clone(), v)),
        };
    }
    let tags =
        a.tags.iter().map(|t| Reference::parse(t).map(|r| r.to_string())).collect::<Result<Vec<_>, _>>()?;
    let network = NetworkMode::from(a.network);
    builder::enter_private_mount_namespace().map_err(anyhow::Error::msg)?;
    let opts = BuildOptions {
        context: a.context.clone(),
        dockerfile,
        build_args,
        target: a.target.clone(),
        no_cache: a.no_cache,
        network,
        tags: tags.clone(),
        quiet: a.quiet,
    };
    let resolve = |name: &str, platform: Option<&str>| -> Result<crate::store::ImageRecord, String> {
        // `FROM --platform=…` always asks the registry (the cache keys images by name, not platform).
        let platform = match platform {
            None => {
                if let Ok(rec) = store.image(name) {
                    return Ok(rec);
                }
                crate::registry::Platform::host()
            }
            Some(p) => p.parse::<crate::registry::Platform>().map_err(|e| e.to_string())?,
        };
        super::pull::pull_with(g, name, a.quiet, platform, 3).map_err(|e| super::one_line(&e))?;
        store.image(name).map_err(|e| e.to_string())
    };
    let built = match builder::build(&store, &opts, &resolve) {
        Ok(b) => b,
        Err(builder::BuildError::RunFailed { cmd, code }) => {
            crate::errln!("rimg: The command '{cmd}' returned a non-zero code: {code}");
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    if a.quiet {
        crate::outln!("{}", built.record.id);
    } else {
        crate::outln!("Successfully built {}", built.record.id.short());
        for t in &tags {
            crate::outln!(
                "Successfully tagged {}",
                Reference::parse(t).map(|r| r.familiar()).unwrap_or_else(|_| t.clone())
            );
        }
    }
    Ok(0)
}

pub fn push(a: PushArgs, g: &Globals) -> anyhow::Result<i32> {
    let store = open_store(g)?;
    let rec = store.image(&a.image)?;
    let dest = Reference::parse(a.dest.as_deref().unwrap_or(&a.image))?;
    let client = client(g)?;
    let progress = Progress::new(a.quiet);
    progress.line(&format!("The push refers to repository [{}]", dest.name()));
    let pushed = crate::push::push(&store, &client, &rec, &dest, 3, &progress)?;
    progress.line(&format!(
        "{}: digest: {} size: {}",
        dest.tag.as_deref().unwrap_or("latest"),
        pushed.digest,
        pushed.size
    ));
    if a.quiet {
        crate::outln!("{}@{}", dest.name(), pushed.digest);
    }
    Ok(0)
}
