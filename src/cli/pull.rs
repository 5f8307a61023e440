//! `rimg pull`: docker's output, rimg's cache.

use super::Globals;
use crate::progress::Progress;
use crate::pull::{PullOptions, PullOutcome};
use crate::reference::Reference;
use crate::registry::{Client, Platform, RegistryConfig};
use crate::store::Store;
use anyhow::Context;

/// Flags of `rimg pull`, named as docker's.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Image to pull (`centos`, `centos:7`, `host:5000/ns/app@sha256:…`).
    image: String,
    /// Print only the image name when done.
    #[arg(short, long)]
    quiet: bool,
    /// Platform to pull from a multi-platform image (os/arch[/variant]); default: this machine's.
    #[arg(long)]
    platform: Option<String>,
    /// Layers downloaded at once.
    #[arg(long = "max-concurrent-downloads", default_value_t = 3)]
    jobs: usize,
    /// Fetch foreign (non-distributable) layers the registry does not serve from the URLs their
    /// manifest names (also config key "allow-foreign-urls").
    #[arg(long = "allow-foreign-urls")]
    allow_foreign_urls: bool,
}

pub fn run(a: Args, g: &Globals) -> anyhow::Result<i32> {
    let platform = match &a.platform {
        Some(p) => p.parse::<Platform>().map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Platform::host(),
    };
    let opts = PullOptions { platform, jobs: a.jobs, allow_foreign_urls: a.allow_foreign_urls };
    let outcome = pull_opts(g, &a.image, a.quiet, opts)?;
    crate::outln!("{}", outcome.0);
    Ok(0)
}

/// Open the cache at `--root`.
pub(crate) fn open_store(g: &Globals) -> anyhow::Result<Store> {
    Store::open(&g.root).with_context(|| format!("cannot open the image cache at {}", g.root.display()))
}

/// The registry client configured from flags, environment and config file.
pub(crate) fn client(g: &Globals) -> anyhow::Result<Client> {
    let cfg = RegistryConfig::load(g.config.as_deref(), &g.registry_mirrors, &g.insecure_registries)?;
    Ok(Client::new(cfg)?)
}

/// Pull `image` as `rimg pull` does (progress, final lines); `rimg run --pull` calls this too.
pub(crate) fn pull_image(g: &Globals, image: &str, quiet: bool) -> anyhow::Result<()> {
    pull_opts(g, image, quiet, PullOptions::default()).map(|_| ())
}

/// Pull `image` for `platform` with `jobs` downloads at once (a build's FROM).
pub(crate) fn pull_with(
    g: &Globals,
    image: &str,
    quiet: bool,
    platform: Platform,
    jobs: usize,
) -> anyhow::Result<(Reference, PullOutcome)> {
    pull_opts(g, image, quiet, PullOptions { platform, jobs, ..PullOptions::default() })
}

/// Pull with `opts`; the config file's `allow-foreign-urls` adds to the flag.
fn pull_opts(
    g: &Globals,
    image: &str,
    quiet: bool,
    mut opts: PullOptions,
) -> anyhow::Result<(Reference, PullOutcome)> {
    let reference = Reference::parse(image)?;
    let store = open_store(g)?;
    let client = client(g)?;
    let progress = Progress::new(quiet);
    progress.line(&format!(
        "{}: Pulling from {}",
        reference.tag.as_deref().map(str::to_string).unwrap_or_else(|| reference.manifest_ref()),
        reference.repository
    ));
    opts.allow_foreign_urls |= client.config().allow_foreign_urls;
    let outcome = crate::pull::pull(&store, &client, &reference, &opts, &progress)?;
    let digest = outcome.repo_digest.rsplit('@').next().unwrap_or_default().to_string();
    progress.line(&format!("Digest: {digest}"));
    progress.line(&format!(
        "Status: {} for {}",
        if outcome.updated { "Downloaded newer image" } else { "Image is up to date" },
        reference.familiar()
    ));
    Ok((reference, outcome))
}
