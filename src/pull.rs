//! Pull: registry → store. Resolves the reference to a platform manifest, stores manifest and config, then
//! fetches layers in parallel. Each layer is streamed exactly once: the bytes from the network go through
//! the sha256 of the blob, into the ingest file (so an interrupted pull resumes with a Range request), and
//! through the decompressor and the sha256 of the diff_id into `layer::apply`, which writes the unpacked
//! directory. Only when both digests match are the blob and the layer directory renamed into place.

use crate::digest::{Digest, HashingReader};
use crate::layer::{self, ApplyOptions};
use crate::progress::{Progress, Task};
use crate::reference::Reference;
use crate::registry::{BlobStream, Client, Platform, RegistryError};
use crate::store::blobs::Ingest;
use crate::store::images::MAX_METADATA;
use crate::store::layers::LayerStaging;
use crate::store::{ImageEntry, ImageRecord, Store, StoreError};
use oci_spec::image::{Descriptor, ImageConfiguration};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Which platform to pick from a multi-platform index.
    pub platform: Platform,
    /// Layers fetched at once (docker's max-concurrent-downloads, default 3).
    pub jobs: usize,
    /// Fetch a foreign (non-distributable) layer the registry does not serve from the `urls` its
    /// descriptor names. Off by default, as following them means fetching from hosts the user never named;
    /// such layers are always fetched from the registry first, like any blob (as podman does).
    pub allow_foreign_urls: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions { platform: Platform::host(), jobs: 3, allow_foreign_urls: false }
    }
}

/// What a pull did, for docker-style final lines.
#[derive(Debug)]
pub struct PullOutcome {
    /// The image as now stored.
    pub record: ImageRecord,
    /// `repo@digest` of what the registry served.
    pub repo_digest: String,
    /// False when the cache already had exactly this image under this name.
    pub updated: bool,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry could not give us the image.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The cache could not store it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A layer could not be unpacked (hostile or corrupt content).
    #[error("layer {digest}: {source}")]
    Layer {
        /// The blob.
        digest: Digest,
        /// Why.
        #[source]
        source: layer::LayerError,
    },
    /// The downloaded bytes of a layer are not what the manifest promised.
    #[error("layer {digest}: {reason}")]
    Verify {
        /// The blob.
        digest: Digest,
        /// What did not match.
        reason: String,
    },
    /// The manifest or config is not usable.
    #[error("{0}")]
    Invalid(String),
    /// A foreign layer the registry does not serve, whose urls the user did not allow.
    #[error(
        "layer {digest} is a foreign (non-distributable) layer that the registry does not serve; it names \
         {urls:?}: pass --allow-foreign-urls (config key \"allow-foreign-urls\") to fetch it from there"
    )]
    ForeignLayer {
        /// The blob.
        digest: Digest,
        /// Where the descriptor says it can be fetched.
        urls: Vec<String>,
    },
}

/// Pull `reference` into `store`. Everything the pull stores or reuses is held in a lease (see
/// [`crate::store::lease`]) until the image is in the index, so a concurrent `image prune` or `rmi` cannot
/// take it away half-way; and the image is recorded only once every part of it is in the store.
pub fn pull(
    store: &Store,
    client: &Client,
    reference: &Reference,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<PullOutcome, PullError> {
    let lease = store.lease(&format!("pull {reference}"))?;
    let store = &store.with_lease(&lease);
    let resolved = client.resolve(reference, &opts.platform)?;
    store.hold_blobs(&[resolved.digest.clone(), resolved.manifest_digest.clone()])?;
    if let Some(raw) = &resolved.index_raw {
        store.put_blob(&resolved.digest, raw)?;
    }
    let manifest = &resolved.manifest;
    let (config_digest, config_raw, diff_ids) = fetch_config(client, reference, &resolved, opts)?;
    store.put_blob(&config_digest, &config_raw)?;

    let layers: Vec<(Descriptor, Digest)> =
        manifest.layers().iter().cloned().zip(diff_ids.iter().cloned()).collect();
    let layer_blobs =
        layers.iter().map(|(d, _)| parse_digest(d.digest().as_ref())).collect::<Result<Vec<_>, _>>()?;
    // Held before `fetch_layer` looks at what is there already: a layer found "Already exists" stays.
    store.hold_blobs(&layer_blobs)?;
    store.hold_layers(&diff_ids)?;
    fetch_layers(store, client, reference, &layers, opts, progress)?;
    // Where these blobs live, so a later push to this registry can mount them instead of uploading.
    let mut sourced = layer_blobs.clone();
    sourced.push(config_digest.clone());
    if let Err(e) = store.add_sources(&sourced, &reference.registry, &reference.repository) {
        log::warn!("could not record where the blobs of {reference} come from: {e}");
    }

    // The manifest goes in last: an image is visible only once everything it names is present.
    store.put_blob(&resolved.manifest_digest, &resolved.manifest_raw)?;
    store.check_parts(&[resolved.manifest_digest.clone(), config_digest], &layer_blobs, &diff_ids)?;
    record(store, reference, &resolved)
}

/// Fetch and check the image config: platform, parse, one diff_id per layer.
fn fetch_config(
    client: &Client,
    reference: &Reference,
    resolved: &crate::registry::Resolved,
    opts: &PullOptions,
) -> Result<(Digest, Vec<u8>, Vec<Digest>), PullError> {
    let manifest = &resolved.manifest;
    let config_digest: Digest = parse_digest(manifest.config().digest().as_ref())?;
    let config_raw = client.fetch_blob_bytes(reference, &config_digest, MAX_METADATA)?;
    // A single-platform image for another platform is refused, as docker does (an index was already
    // narrowed to the wanted platform by the client).
    if let Some(actual) = Platform::from_config(&config_raw) {
        if !opts.platform.accepts(&actual) {
            return Err(RegistryError::PlatformMismatch {
                reference: reference.to_string(),
                wanted: opts.platform.to_string(),
                actual: actual.to_string(),
            }
            .into());
        }
    }
    let config = ImageConfiguration::from_reader(config_raw.as_slice())
        .map_err(|e| PullError::Invalid(format!("image config {config_digest}: {e}")))?;
    let diff_ids =
        config.rootfs().diff_ids().iter().map(|d| parse_digest(d)).collect::<Result<Vec<_>, _>>()?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(PullError::Invalid(format!(
            "image config lists {} layers but the manifest has {}",
            diff_ids.len(),
            manifest.layers().len()
        )));
    }
    Ok((config_digest, config_raw, diff_ids))
}

/// Put the pulled image in the index under its tag, or, pulled by digest, under `repo@digest` (as podman
/// names it: `images` lists it as `repo <none>`, and it is not dangling).
fn record(
    store: &Store,
    reference: &Reference,
    resolved: &crate::registry::Resolved,
) -> Result<PullOutcome, PullError> {
    let repo_digest = format!("{}@{}", reference.name(), resolved.digest);
    let name = match &reference.tag {
        Some(_) => reference.repo_only().with_tag(reference.tag_or_latest()).ok().map(|r| r.to_string()),
        None => Some(repo_digest.clone()),
    };
    let before = name.as_deref().and_then(|n| store.image(n).ok()).map(|r| r.manifest_digest);
    store.add_image(ImageEntry {
        name: name.clone(),
        manifest_digest: resolved.manifest_digest.clone(),
        manifest_size: resolved.manifest_raw.len() as u64,
        media_type: resolved.media_type.clone(),
        repo_digest: Some(repo_digest.clone()),
        added: Some(now_rfc3339()),
    })?;
    let record = store.image(&name.unwrap_or_else(|| resolved.manifest_digest.to_string()))?;
    Ok(PullOutcome { updated: before.as_ref() != Some(&resolved.manifest_digest), record, repo_digest })
}

fn parse_digest(s: &str) -> Result<Digest, PullError> {
    s.parse().map_err(|e: crate::digest::InvalidDigest| PullError::Invalid(e.to_string()))
}

/// Which layers of this pull are finished, so a layer with hard links into the layers below it can wait
/// for them. Workers take layers in index order, so everything a layer waits for is already in progress
/// on another worker (or failed, which wakes the waiters too): waiting cannot deadlock.
struct LayerBoard {
    done: Mutex<Vec<bool>>,
    changed: std::sync::Condvar,
    failed: AtomicBool,
}

impl LayerBoard {
    fn mark_done(&self, i: usize) {
        if let Ok(mut d) = self.done.lock() {
            d[i] = true;
        }
        self.changed.notify_all();
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Block until layers `0..i` are done; false if the pull failed meanwhile.
    fn wait_below(&self, i: usize) -> bool {
        let Ok(mut d) = self.done.lock() else { return false };
        loop {
            if self.failed.load(Ordering::SeqCst) {
                return false;
            }
            if d[..i].iter().all(|x| *x) {
                return true;
            }
            d = match self.changed.wait(d) {
                Ok(g) => g,
                Err(_) => return false,
            };
        }
    }
}

/// Fetch every layer with `jobs` workers; the first error stops the others from starting new layers.
fn fetch_layers(
    store: &Store,
    client: &Client,
    reference: &Reference,
    layers: &[(Descriptor, Digest)],
    opts: &PullOptions,
    progress: &Progress,
) -> Result<(), PullError> {
    let jobs = opts.jobs.max(1);
    let next = AtomicUsize::new(0);
    let board = LayerBoard {
        done: Mutex::new(vec![false; layers.len()]),
        changed: std::sync::Condvar::new(),
        failed: AtomicBool::new(false),
    };
    let first_error: Mutex<Option<PullError>> = Mutex::new(None);
    let diff_ids: Vec<Digest> = layers.iter().map(|(_, d)| d.clone()).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.min(layers.len().max(1)) {
            s.spawn(|| loop {
                if board.failed.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((desc, diff_id)) = layers.get(i) else { return };
                let job = LayerJob {
                    store,
                    client,
                    reference,
                    desc,
                    diff_id,
                    index: i,
                    below: &diff_ids[..i],
                    board: &board,
                    foreign_urls: opts.allow_foreign_urls,
                };
                match fetch_layer(&job, progress) {
                    Ok(()) => board.mark_done(i),
                    Err(e) => {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        board.fail();
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How often a layer download is restarted (resuming from the bytes already on disk) after the connection
/// broke. The registry client retries requests itself; this covers failures in the middle of a body.
const LAYER_ATTEMPTS: usize = 4;

/// One layer of a pull and what it needs to know about the others.
struct LayerJob<'a> {
    store: &'a Store,
    client: &'a Client,
    reference: &'a Reference,
    desc: &'a Descriptor,
    diff_id: &'a Digest,
    index: usize,
    below: &'a [Digest],
    board: &'a LayerBoard,
    /// Whether a foreign layer may be fetched from its `urls`.
    foreign_urls: bool,
}

impl LayerJob<'_> {
    /// The directories of the layers below, top first (what `layer::apply` searches for hard link targets).
    fn lowers(&self) -> Vec<PathBuf> {
        lower_dirs(self.store, self.below)
    }
}

/// Layer directories for `below` (bottom first), top first.
fn lower_dirs(store: &Store, below: &[Digest]) -> Vec<PathBuf> {
    below.iter().rev().map(|d| store.layer_dir(d)).collect()
}

fn fetch_layer(job: &LayerJob<'_>, progress: &Progress) -> Result<(), PullError> {
    let (store, desc, diff_id) = (job.store, job.desc, job.diff_id);
    let digest = parse_digest(desc.digest().as_ref())?;
    let media_type = desc.media_type().to_string();
    let media = Some(media_type.as_str());
    let mut task = progress.task(digest.short(), Some(desc.size()));
    if store.has_layer(diff_id) && store.has_blob(&digest) {
        task.finish("Already exists");
        return Ok(());
    }
    let staging = if store.has_layer(diff_id) {
        None
    } else {
        let s = store.stage_layer(diff_id)?;
        if s.already_complete() {
            None
        } else {
            Some(s)
        }
    };
    // From here on we hold the layer's lock (if we unpack) and, below, the blob's lock.
    let ingest = store.ingest(&digest)?;
    if ingest.already_complete() {
        if let Some(staging) = staging {
            task.status("Extracting");
            unpack_staged(store, &digest, diff_id, staging, job)?;
        }
        task.finish("Already exists");
        return Ok(());
    }

    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut compressed, broken) = resume_stream(job, &digest, &ingest, &mut task)?;
        if let Some(staging) = &staging {
            // A retry unpacks from scratch: a half-applied layer cannot be continued.
            if staging.path().symlink_metadata().is_ok() {
                crate::store::layers::remove_tree(staging.path())?;
            }
        }
        let dest = staging.as_ref().map(|s| s.path());
        let mut deferred = false;
        let applied = match unpack_stream(job.store, &mut compressed, media, dest, &[], &digest) {
            // Hard links into lower layers that are still being pulled: finish the download now, unpack
            // from the stored blob once the layers below are in place.
            Err(PullError::Layer { source: layer::LayerError::LinkTargetMissing { .. }, .. })
                if job.index > 0 =>
            {
                deferred = true;
                Ok(None)
            }
            other => other,
        }
        .and_then(|diff| {
            io::copy(&mut compressed, &mut io::sink()).map_err(|e| io_err(&digest, e))?;
            Ok(diff)
        });
        match applied {
            Ok(diff) => {
                let (actual, size, _) = compressed.finish();
                let done = Downloaded { actual, size, diff, deferred };
                return commit_layer(job, &digest, ingest, staging, done, task);
            }
            Err(e) if broken.load(Ordering::SeqCst) && attempt < LAYER_ATTEMPTS => {
                log::info!("layer {digest}: connection broke ({e}); resuming");
                std::thread::sleep(std::time::Duration::from_millis(200 * attempt as u64));
                continue;
            }
            Err(e) => {
                if !broken.load(Ordering::SeqCst) {
                    // Bad content, not a bad connection: what we have must not be resumed.
                    ingest.reset()?;
                }
                return Err(e);
            }
        }
    }
}

/// The compressed bytes of one download attempt, hashed as they are read.
type AttemptStream<'a> = HashingReader<Box<dyn Read + Send + 'a>>;

/// One download attempt's input: the bytes an earlier attempt left in the ingest file, then the network
/// from there on (appended to the file as they arrive), all through the blob's sha256. The flag tells a
/// broken connection (resume) from bad content (start over).
fn resume_stream<'a>(
    job: &LayerJob<'_>,
    digest: &Digest,
    ingest: &Ingest,
    task: &'a mut Task<'_>,
) -> Result<(AttemptStream<'a>, Arc<AtomicBool>), PullError> {
    let size = job.desc.size();
    let mut offset = ingest.partial_len();
    if offset > size {
        ingest.reset()?;
        offset = 0;
    }
    task.status(if offset > 0 { "Resuming" } else { "Downloading" });
    let stream = open_layer(job, digest, offset)?;
    if stream.started_at != offset {
        // The server ignored our Range: start over from byte 0.
        ingest.reset()?;
        offset = 0;
    }
    let task: &'a Task<'_> = task;
    task.set_position(offset);
    let local: Box<dyn Read + Send> =
        if offset > 0 { Box::new(ingest.open_partial()?.take(offset)) } else { Box::new(io::empty()) };
    let broken = Arc::new(AtomicBool::new(false));
    let tee = TeeToFile { inner: stream.reader, file: ingest.open_append()?, broken: broken.clone(), task };
    let chained: Box<dyn Read + Send + 'a> = Box::new(local.chain(tee));
    Ok((HashingReader::new(chained), broken))
}

/// What one complete download hashed to.
struct Downloaded {
    /// sha256 of the compressed bytes.
    actual: Digest,
    /// Their count.
    size: u64,
    /// The diff_id of what was unpacked on the way (none when deferred or not unpacked).
    diff: Option<Digest>,
    /// Unpacking waits for the layers below (hard links into them).
    deferred: bool,
}

/// Verify a finished download against the descriptor, commit the blob, then commit the layer unpacked on
/// the way (or, when deferred, unpack it from the stored blob once the layers below are in place).
fn commit_layer(
    job: &LayerJob<'_>,
    digest: &Digest,
    ingest: Ingest,
    staging: Option<LayerStaging>,
    done: Downloaded,
    mut task: Task<'_>,
) -> Result<(), PullError> {
    let expected = job.desc.size();
    if done.size != expected {
        ingest.reset()?;
        return Err(PullError::Verify {
            digest: digest.clone(),
            reason: format!("size {} does not match the manifest's {expected}", done.size),
        });
    }
    ingest.commit(&done.actual).map_err(|e| match e {
        StoreError::DigestMismatch { actual, .. } => PullError::Verify {
            digest: digest.clone(),
            reason: format!("content hashes to {actual}: refusing corrupt or tampered data"),
        },
        other => PullError::Store(other),
    })?;
    if let Some(staging) = staging {
        task.status("Extracting");
        if done.deferred {
            if !job.board.wait_below(job.index) {
                return Err(PullError::Invalid("pull aborted".into()));
            }
            unpack_staged(job.store, digest, job.diff_id, staging, job)?;
        } else {
            check_diff_id(digest, job.diff_id, &done.diff)?;
            staging.commit()?;
        }
    }
    task.finish("Pull complete");
    Ok(())
}

/// The layer's bytes from `offset`: from the registry like any blob, or, for a foreign layer the registry
/// does not serve, from the `urls` its descriptor names when the user allowed that.
fn open_layer(job: &LayerJob<'_>, digest: &Digest, offset: u64) -> Result<BlobStream, PullError> {
    let size = job.desc.size();
    let unknown = match job.client.open_blob_sized(job.reference, digest, offset, size) {
        Ok(stream) => return Ok(stream),
        Err(e @ RegistryError::BlobUnknown { .. }) => e,
        Err(e) => return Err(e.into()),
    };
    let urls = job.desc.urls().clone().unwrap_or_default();
    if urls.is_empty() {
        return Err(unknown.into());
    }
    if !job.foreign_urls {
        return Err(PullError::ForeignLayer { digest: digest.clone(), urls });
    }
    let mut last = unknown;
    for url in &urls {
        match job.client.open_foreign_sized(url, digest, offset, size) {
            Ok(stream) => {
                log::info!("foreign layer {digest}: fetching from {url}");
                return Ok(stream);
            }
            Err(e) => {
                log::warn!("foreign layer {digest}: {url}: {e}");
                last = e;
            }
        }
    }
    Err(last.into())
}

/// Unpack a stored blob into `staging`, with the lower layers available for hard links.
fn unpack_staged(
    store: &Store,
    digest: &Digest,
    diff_id: &Digest,
    staging: crate::store::layers::LayerStaging,
    job: &LayerJob<'_>,
) -> Result<(), PullError> {
    if staging.path().symlink_metadata().is_ok() {
        crate::store::layers::remove_tree(staging.path())?;
    }
    let lowers = job.lowers();
    let file = File::open(store.blob_path(digest)).map_err(|e| io_err(digest, e))?;
    let mut r = HashingReader::new(file);
    let actual = unpack_stream(
        store,
        &mut r,
        Some(job.desc.media_type().as_ref()),
        Some(staging.path()),
        &lowers,
        digest,
    )?;
    check_diff_id(digest, diff_id, &actual)?;
    staging.commit()?;
    Ok(())
}

fn check_diff_id(digest: &Digest, expected: &Digest, actual: &Option<Digest>) -> Result<(), PullError> {
    match actual {
        Some(a) if a != expected => Err(PullError::Verify {
            digest: digest.clone(),
            reason: format!("uncompressed content hashes to {a}, the image config says {expected}"),
        }),
        _ => Ok(()),
    }
}

fn io_err(digest: &Digest, e: io::Error) -> PullError {
    PullError::Verify { digest: digest.clone(), reason: e.to_string() }
}

/// Decompress, hash and (when `dest` is given) unpack a layer stream. Returns the diff_id when unpacked.
/// The caller drains and hashes whatever of the compressed stream is left (the gzip trailer, padding).
fn unpack_stream<R: Read + Send>(
    store: &Store,
    compressed: &mut HashingReader<R>,
    media_type: Option<&str>,
    dest: Option<&Path>,
    lowers: &[PathBuf],
    digest: &Digest,
) -> Result<Option<Digest>, PullError> {
    let Some(dest) = dest else { return Ok(None) };
    let (_, decoded) = layer::decompress_auto(media_type, compressed).map_err(|e| io_err(digest, e))?;
    let mut plain = HashingReader::new(decoded);
    let opts = ApplyOptions { lowers: lowers.to_vec(), ..ApplyOptions::default() };
    layer::apply(&mut plain, dest, &opts)
        .map_err(|source| PullError::Layer { digest: digest.clone(), source })?;
    // The tar may end before the stream does (padding blocks): hash all of it.
    io::copy(&mut plain, &mut io::sink()).map_err(|e| io_err(digest, e))?;
    let (diff_id, len, _) = plain.finish();
    // The uncompressed size is `images`' SIZE: known now for free, costly to learn later.
    store.note_layer_size(&diff_id, len);
    Ok(Some(diff_id))
}

/// Passes network bytes through while appending them to the ingest file, so a broken download keeps what
/// arrived. Remembers whether the network side failed, to tell a broken connection from bad content.
struct TeeToFile<'a, 'b> {
    inner: Box<dyn Read + Send>,
    file: File,
    broken: Arc<AtomicBool>,
    task: &'a Task<'b>,
}

impl Read for TeeToFile<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.broken.store(true, Ordering::SeqCst);
                return Err(e);
            }
        };
        self.file.write_all(&buf[..n])?;
        self.task.inc(n as u64);
        Ok(n)
    }
}

fn now_rfc3339() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    crate::store::images::rfc3339(secs)
}

/// Unpack a layer whose blob is already in the store (after `load`, or when only the directory was
/// removed), verifying its diff_id. `below` are the diff_ids of the layers under it, bottom first (they
/// must be unpacked already: hard links may point into them).
pub fn unpack_blob(
    store: &Store,
    blob: &Digest,
    diff_id: &Digest,
    below: &[Digest],
) -> Result<(), PullError> {
    let staging = store.stage_layer(diff_id)?;
    if staging.already_complete() {
        return Ok(());
    }
    let file = File::open(store.blob_path(blob)).map_err(|e| io_err(blob, e))?;
    let mut r = HashingReader::new(file);
    let actual = unpack_stream(store, &mut r, None, Some(staging.path()), &lower_dirs(store, below), blob)?;
    check_diff_id(blob, diff_id, &actual)?;
    staging.commit()?;
    Ok(())
}
