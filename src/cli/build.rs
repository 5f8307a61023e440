//! `rimg build` and `rimg push`.

use super::pull::{client, open_store};
use super::Globals;
use crate::build::builder::{self, BuildOptions};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::runtime::NetworkMode;
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::path::PathBuf;

/// Flags of `rimg build`, named as docker's.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  rimg build -t app:1.0 .\n  rimg build -t app - < Dockerfile\n  \
                        tar -czf - . | rimg build -q --iidfile id.txt -")]
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
    /// Print only the image ID (steps and RUN output hidden).
    #[arg(short, long)]
    quiet: bool,
    /// Set metadata on the image (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Images to consider as cache sources (pulled when missing).
    #[arg(long = "cache-from", value_name = "IMAGE")]
    cache_from: Vec<String>,
    /// The build context directory, or `-`: a Dockerfile or a context tar (plain, gzip, zstd or xz) on
    /// standard input.
    context: PathBuf,
}

/// A context that came on standard input, unpacked under the store; removed when dropped.
struct StdinContext(PathBuf);

impl Drop for StdinContext {
    fn drop(&mut self) {
        let _ = crate::store::layers::remove_tree(&self.0);
    }
}

/// What `rimg build -` read: a context directory made from it and, if it was a Dockerfile, its text.
fn stdin_context(store: &crate::store::Store) -> anyhow::Result<(StdinContext, Option<String>)> {
    use std::io::Read;
    let dir = store.root().join("ingest").join(format!("context-{}", hex::encode(rand::random::<[u8; 8]>())));
    std::fs::create_dir_all(dir.parent().unwrap_or(store.root()))?;
    let ctx = StdinContext(dir.clone());
    let mut input = std::io::stdin();
    let mut head = Vec::with_capacity(512);
    (&mut input).take(512).read_to_end(&mut head)?;
    let stream = std::io::Cursor::new(head.clone()).chain(input);
    let xz = head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]);
    let compressed = crate::layer::compression::Compression::sniff(&head).is_some() || xz;
    let is_tar = head.len() >= 262 && &head[257..262] == b"ustar";
    if head.starts_with(b"BZh") {
        bail!("a bzip2-compressed context is not supported: use gzip, zstd or xz");
    }
    if !compressed && !is_tar {
        let mut text = String::new();
        std::io::BufReader::new(stream)
            .read_to_string(&mut text)
            .context("read the Dockerfile from stdin")?;
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        return Ok((ctx, Some(text)));
    }
    let tar: Box<dyn std::io::Read + Send> = if xz {
        Box::new(liblzma::read::XzDecoder::new(stream))
    } else {
        crate::layer::compression::decompress_auto(None, stream)?.1
    };
    crate::layer::apply(tar, &dir, &crate::layer::ApplyOptions::default())
        .map_err(|e| anyhow::anyhow!("unpack the build context from stdin: {e}"))?;
    Ok((ctx, None))
}

/// A file of the context named by `-f`, resolved inside it (a symlink cannot lead out).
fn read_in_context(context: &std::path::Path, name: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let root = crate::layer::walk::Dir::open(context)?;
    let found = root
        .resolve(name)?
        .with_context(|| format!("cannot find {} in the build context", name.display()))?;
    let mut text = String::new();
    found.entry.open_file()?.read_to_string(&mut text)?;
    Ok(text)
}

/// The `--build-arg`s no ARG of the Dockerfile declares (docker warns of them; the proxy variables are
/// always accepted).
fn unused_build_args(dockerfile: &str, given: &HashMap<String, String>) -> Vec<String> {
    const PREDEFINED: &[&str] = &["HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY"];
    let Ok(df) = crate::build::dockerfile::Dockerfile::parse(dockerfile) else { return Vec::new() };
    let mut declared: std::collections::HashSet<&str> =
        df.global_args.iter().map(|(k, _)| k.as_str()).collect();
    for step in &df.steps {
        if let crate::build::dockerfile::Instruction::Arg(list) = &step.instruction {
            declared.extend(list.iter().map(|(k, _)| k.as_str()));
        }
    }
    let mut unused: Vec<String> = given
        .keys()
        .filter(|k| !declared.contains(k.as_str()) && !PREDEFINED.contains(&k.to_ascii_uppercase().as_str()))
        .cloned()
        .collect();
    unused.sort();
    unused
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
    let from_stdin = a.context.as_os_str() == "-";
    if from_stdin && a.file.as_ref().is_some_and(|f| f.as_os_str() == "-") {
        bail!("invalid argument: can't use stdin for both build context and dockerfile");
    }
    let (stdin_ctx, stdin_dockerfile) = if from_stdin {
        let (c, d) = stdin_context(&store)?;
        (Some(c), d)
    } else {
        (None, None)
    };
    let context = stdin_ctx.as_ref().map(|c| c.0.clone()).unwrap_or_else(|| a.context.clone());
    let dockerfile = match (&a.file, stdin_dockerfile) {
        (_, Some(text)) => text,
        (Some(p), None) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        }
        (Some(p), None) if from_stdin && p.is_relative() => read_in_context(&context, p)?,
        (Some(p), None) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        (None, None) if from_stdin => read_in_context(&context, std::path::Path::new("Dockerfile"))?,
        (None, None) => {
            let p = a.context.join("Dockerfile");
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?
        }
    };
    if !context.is_dir() {
        anyhow::bail!("build context {} is not a directory", context.display());
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
    let labels = a
        .labels
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    let unused = unused_build_args(&dockerfile, &build_args);
    let opts = BuildOptions {
        context,
        labels,
        cache_from: a.cache_from.clone(),
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
    if !unused.is_empty() {
        crate::errln!("[Warning] One or more build-args [{}] were not consumed", unused.join(" "));
    }
    if let Some(f) = &a.iidfile {
        std::fs::write(f, built.record.id.to_string()).with_context(|| format!("write {}", f.display()))?;
    }
    drop(stdin_ctx);
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
