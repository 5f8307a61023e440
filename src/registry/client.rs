//! The registry client the puller and pusher use: manifest resolution (tag → index → platform manifest, every
//! step digest-verified), verified small blobs, and streaming blob readers that resume with `Range`.

use super::config::RegistryConfig;
use super::error::{Access, RegistryError};
use super::manifest::{self, ManifestKind, Platform, MANIFEST_ACCEPT, MAX_MANIFEST_SIZE};
use super::transport::{
    error_message, headers, host_port, parse_error_body, read_capped, Endpoint, Req, Transport, MAX_REDIRECTS,
};
use crate::digest::Digest;
use crate::reference::Reference;
use reqwest::blocking::Response;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};
use std::io::Read;
use std::sync::Arc;

/// A registry client. Cheap to clone and safe to share between download threads: clones share the HTTP
/// connection pool, the `/v2/` ping results and the token cache.
#[derive(Clone)]
pub struct Client {
    pub(crate) t: Arc<Transport>,
}

/// The outcome of resolving a reference: the manifest to pull, and what the tag pointed at.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Digest of the top-level manifest or index the tag points to: what `RepoDigests` shows.
    pub digest: Digest,
    /// Digest of the platform image manifest (equal to `digest` when the tag names a single manifest).
    pub manifest_digest: Digest,
    /// The parsed platform image manifest.
    pub manifest: oci_spec::image::ImageManifest,
    /// Its exact bytes (what `manifest_digest` hashes).
    pub manifest_raw: Vec<u8>,
    /// Its media type (OCI or Docker schema 2).
    pub media_type: String,
    /// The index's exact bytes when the tag points to an index / manifest list.
    pub index_raw: Option<Vec<u8>>,
    /// The index's media type when the tag points to one.
    pub index_media_type: Option<String>,
}

/// A blob body being streamed from the registry.
pub struct BlobStream {
    /// The bytes from `started_at` on. Reads resume transparently (with `Range`) after a dropped connection,
    /// a bounded number of times; errors are `io::Error`s wrapping a [`RegistryError`].
    pub reader: Box<dyn Read + Send>,
    /// Total size of the blob, if the registry said.
    pub total_len: Option<u64>,
    /// Offset the stream actually starts at: the requested one, or 0 if the registry ignored `Range`.
    pub started_at: u64,
}

/// A manifest or index as fetched, verified against its digest.
#[derive(Debug, Clone)]
pub struct RawManifest {
    /// Exact bytes.
    pub body: Vec<u8>,
    /// sha256 of `body`.
    pub digest: Digest,
    /// Effective media type.
    pub media_type: String,
    /// Manifest or index.
    pub kind: ManifestKind,
}

impl Client {
    /// A client with the given connection settings; nothing is contacted until the first request.
    pub fn new(cfg: RegistryConfig) -> Result<Client, RegistryError> {
        Ok(Client { t: Arc::new(Transport::new(cfg)?) })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &RegistryConfig {
        &self.t.cfg
    }

    /// Use `creds` for `registry` (a reference's registry, or a mirror's `host:port`) instead of docker's
    /// config file; `None` forces anonymous access.
    pub fn set_credentials(&self, registry: &str, creds: Option<super::auth::Credentials>) {
        self.t.set_credentials(registry, creds)
    }

    /// Run `f` against each endpoint of the reference's registry in turn (Docker Hub mirrors, then the
    /// origin) until one succeeds. The error reported is the most telling one: a definite answer ("manifest
    /// unknown") from a mirror beats "unreachable" from an origin this machine cannot reach.
    pub(crate) fn with_endpoints<T>(
        &self,
        registry: &str,
        mut f: impl FnMut(&Endpoint) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut errors: Vec<RegistryError> = Vec::new();
        for c in self.t.candidates(registry) {
            let result = self.t.endpoint(&c).and_then(|ep| f(&ep));
            match result {
                Ok(v) => return Ok(v),
                Err(e) if c.mirror => {
                    // An unreachable mirror is worth a warning; "not on the mirror" is routine.
                    if e.is_transient() {
                        log::warn!("mirror {} failed, falling back: {e}", c.display);
                    } else {
                        log::info!("mirror {} failed, falling back: {e}", c.display);
                    }
                    errors.push(e);
                }
                Err(e) => {
                    errors.push(e);
                    break;
                }
            }
        }
        let pos = errors.iter().rposition(|e| !e.is_transient()).unwrap_or(errors.len().saturating_sub(1));
        Err(errors.swap_remove(pos))
    }

    fn req(&self, r: &Reference, method: Method, path: String, access: Access) -> Req {
        let actions = match access {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        };
        Req {
            method,
            path,
            headers: Default::default(),
            body: None,
            scopes: vec![format!("repository:{}:{actions}", r.repository)],
            access,
            name: r.name(),
            registry: r.registry.clone(),
        }
    }

    /// Check that the registry answers (`/v2/` ping), settling its scheme and auth challenge.
    pub fn ping(&self, registry: &str) -> Result<(), RegistryError> {
        self.with_endpoints(registry, |_| Ok(()))
    }

    /// Verify `creds` against `registry`'s origin (never a mirror), as `docker login` does: ping `/v2/`, then
    /// either GET `/v2/` with Basic credentials or obtain a token from the Bearer realm with them. Nothing is
    /// stored; on success the credentials are used by this client from then on.
    pub fn check_login(&self, registry: &str, creds: &super::auth::Credentials) -> Result<(), RegistryError> {
        use super::auth::Challenge;
        let Some(origin) = self.t.candidates(registry).pop() else {
            return Err(RegistryError::Unreachable {
                registry: registry.into(),
                reason: "no endpoint".into(),
            });
        };
        let ep = self.t.endpoint(&origin)?;
        let failed = |detail: String| RegistryError::LoginFailed { registry: registry.to_string(), detail };
        let auth = match &ep.challenge {
            // The registry does not want credentials at all: docker reports success.
            None => return Ok(()),
            Some(Challenge::Basic { .. }) => creds.basic_header(),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let (token, _) = self
                    .t
                    .fetch_token(&ep, realm, service.as_deref(), &[], Some(creds), None)
                    .map_err(|e| match e {
                    RegistryError::Token { reason, .. } => failed(reason),
                    other => other,
                })?;
                format!("Bearer {token}")
            }
        };
        let url = ep.base.join("v2/").map_err(|e| RegistryError::BadUrl {
            registry: ep.display.clone(),
            url: "v2/".into(),
            reason: e.to_string(),
        })?;
        let http = self.t.http_for(&ep);
        let resp = self.t.send_retrying(
            &ep.display,
            || http.get(url.clone()).header(reqwest::header::AUTHORIZATION, auth.clone()),
            self.t.cfg.max_retries,
        )?;
        let status = resp.status();
        if status.is_success() {
            self.set_credentials(&ep.cred_key, Some(creds.clone()));
            return Ok(());
        }
        let detail = error_message(resp).unwrap_or_else(|| "unauthorized".into());
        Err(failed(format!("{status}: {detail}")))
    }

    /// Resolve `r` to the image manifest for `platform`: HEAD the tag for its digest, GET the manifest by
    /// digest (or by tag if HEAD gave none), verify it, and if it is an index pick and fetch the platform's
    /// manifest. Every body is checked against its digest; manifests pulled by digest must match it exactly.
    pub fn resolve(&self, r: &Reference, platform: &Platform) -> Result<Resolved, RegistryError> {
        self.with_endpoints(&r.registry, |ep| self.resolve_at(ep, r, platform))
    }

    fn resolve_at(
        &self,
        ep: &Endpoint,
        r: &Reference,
        platform: &Platform,
    ) -> Result<Resolved, RegistryError> {
        let top = self.manifest_at(ep, r)?;
        let (index_raw, index_media_type, child) = match top.kind {
            ManifestKind::Image => (None, None, top.clone()),
            ManifestKind::Index => {
                let entries = manifest::index_entries(&top.body)
                    .map_err(|reason| RegistryError::InvalidManifest { reference: r.to_string(), reason })?;
                let entry = manifest::select_platform(&entries, platform).map_err(|available| {
                    RegistryError::NoMatchingPlatform {
                        reference: r.to_string(),
                        platform: platform.to_string(),
                        available,
                    }
                })?;
                if entry.size > MAX_MANIFEST_SIZE {
                    return Err(RegistryError::TooLarge {
                        what: format!("manifest {}", entry.digest),
                        limit: MAX_MANIFEST_SIZE,
                    });
                }
                let child = self.fetch_by_digest(ep, r, &entry.digest)?;
                if child.body.len() as u64 != entry.size {
                    return Err(RegistryError::InvalidManifest {
                        reference: r.with_digest(entry.digest.clone()).to_string(),
                        reason: format!("size {} differs from the index's {}", child.body.len(), entry.size),
                    });
                }
                if child.kind != ManifestKind::Image {
                    return Err(RegistryError::InvalidManifest {
                        reference: r.with_digest(entry.digest.clone()).to_string(),
                        reason: "index entry for the platform is itself an index".into(),
                    });
                }
                (Some(top.body.clone()), Some(top.media_type.clone()), child)
            }
        };
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&child.body).map_err(|e| {
            RegistryError::InvalidManifest { reference: r.to_string(), reason: e.to_string() }
        })?;
        // Every digest in the manifest becomes a store path later: refuse anything but valid sha256 now.
        let descriptors = std::iter::once(manifest.config()).chain(manifest.layers().iter());
        for d in descriptors {
            d.digest().to_string().parse::<Digest>().map_err(|e| RegistryError::InvalidManifest {
                reference: r.to_string(),
                reason: e.to_string(),
            })?;
        }
        Ok(Resolved {
            digest: top.digest,
            manifest_digest: child.digest,
            manifest,
            manifest_raw: child.body,
            media_type: child.media_type,
            index_raw,
            index_media_type,
        })
    }

    /// Fetch the manifest or index `r` names (by digest if pinned, else by tag), verified.
    pub fn fetch_manifest(&self, r: &Reference) -> Result<RawManifest, RegistryError> {
        self.with_endpoints(&r.registry, |ep| self.manifest_at(ep, r))
    }

    fn manifest_at(&self, ep: &Endpoint, r: &Reference) -> Result<RawManifest, RegistryError> {
        if let Some(d) = &r.digest {
            return self.fetch_by_digest(ep, r, d);
        }
        let tag = r.tag_or_latest();
        // HEAD first: it yields the digest without counting as a pull on Docker Hub, and lets the body be
        // fetched by digest, i.e. verifiably.
        let mut head =
            self.req(r, Method::HEAD, format!("v2/{}/manifests/{tag}", r.repository), Access::Pull);
        head.headers = headers(&[(ACCEPT, MANIFEST_ACCEPT)]);
        let resp = self.t.send(ep, &head)?;
        match resp.status() {
            s if s.is_success() => {
                if let Some(d) = docker_content_digest(&resp) {
                    return self.fetch_by_digest(ep, r, &d);
                }
            }
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::ManifestUnknown { reference: r.to_string() });
            }
            // Some registries do not implement HEAD: fall through to GET.
            _ => {}
        }
        self.fetch_manifest_raw(ep, r, tag, None)
    }

    fn fetch_by_digest(
        &self,
        ep: &Endpoint,
        r: &Reference,
        d: &Digest,
    ) -> Result<RawManifest, RegistryError> {
        self.fetch_manifest_raw(ep, r, &d.to_string(), Some(d))
    }

    /// GET one manifest; verify size cap, type consistency, `Docker-Content-Digest` and the expected digest.
    fn fetch_manifest_raw(
        &self,
        ep: &Endpoint,
        r: &Reference,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<RawManifest, RegistryError> {
        let shown = match expected {
            Some(d) => r.with_digest(d.clone()).to_string(),
            None => r.to_string(),
        };
        let mut get =
            self.req(r, Method::GET, format!("v2/{}/manifests/{reference}", r.repository), Access::Pull);
        get.headers = headers(&[(ACCEPT, MANIFEST_ACCEPT)]);
        let resp = self.t.send(ep, &get)?;
        if !resp.status().is_success() {
            return Err(self.manifest_status_error(ep, resp, &shown));
        }
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
        let header_digest = docker_content_digest(&resp);
        let body = read_capped(resp, MAX_MANIFEST_SIZE).map_err(|e| {
            if e.kind() == std::io::ErrorKind::FileTooLarge {
                RegistryError::TooLarge { what: format!("manifest {shown}"), limit: MAX_MANIFEST_SIZE }
            } else {
                RegistryError::Transfer {
                    registry: ep.display.clone(),
                    what: format!("reading manifest {shown}"),
                    reason: super::error::transport_reason(&e),
                }
            }
        })?;
        let actual = Digest::of_bytes(&body);
        if let Some(want) = expected {
            if &actual != want {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {shown}"),
                    expected: want.clone(),
                    actual,
                });
            }
        }
        if let Some(h) = header_digest {
            if h != actual {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {shown} (Docker-Content-Digest)"),
                    expected: h,
                    actual,
                });
            }
        }
        let (kind, media_type) = manifest::classify(&body, content_type.as_deref())
            .map_err(|reason| RegistryError::InvalidManifest { reference: shown.clone(), reason })?;
        Ok(RawManifest { body, digest: actual, media_type, kind })
    }

    fn manifest_status_error(&self, ep: &Endpoint, resp: Response, shown: &str) -> RegistryError {
        if resp.status() == StatusCode::NOT_FOUND {
            let url = resp.url().to_string();
            let body = read_capped(resp, 64 << 10).unwrap_or_default();
            return match parse_error_body(&body) {
                Some((Some(code), _)) if code == "NAME_UNKNOWN" => RegistryError::NameUnknown {
                    name: shown.split(['@']).next().unwrap_or(shown).to_string(),
                },
                Some((Some(code), msg)) if code != "MANIFEST_UNKNOWN" => RegistryError::Status {
                    registry: ep.display.clone(),
                    method: "GET".into(),
                    url,
                    status: 404,
                    message: format!(": {msg}"),
                },
                _ => RegistryError::ManifestUnknown { reference: shown.to_string() },
            };
        }
        self.t.status_error(resp, "GET", &ep.display, None)
    }

    /// Download a small blob (config) fully, refusing it beyond `max` bytes or if it does not hash to `d`.
    pub fn fetch_blob_bytes(&self, r: &Reference, d: &Digest, max: u64) -> Result<Vec<u8>, RegistryError> {
        self.with_endpoints(&r.registry, |ep| {
            let stream = self.open_blob_at(ep, r, d, 0)?;
            if stream.total_len.is_some_and(|l| l > max) {
                return Err(RegistryError::TooLarge { what: format!("blob {d}"), limit: max });
            }
            let mut out = Vec::new();
            stream.reader.take(max + 1).read_to_end(&mut out).map_err(|e| io_to_registry(e, ep, d))?;
            if out.len() as u64 > max {
                return Err(RegistryError::TooLarge { what: format!("blob {d}"), limit: max });
            }
            let actual = Digest::of_bytes(&out);
            if &actual != d {
                return Err(RegistryError::DigestMismatch {
                    what: format!("blob {d}"),
                    expected: d.clone(),
                    actual,
                });
            }
            Ok(out)
        })
    }

    /// Open blob `d` of `r`'s repository for streaming from `offset` (use the returned `started_at`: the
    /// registry may ignore `Range` and start at 0). Redirects to blob storage are followed without
    /// credentials. The bytes are not verified here: the caller hashes them as it consumes them.
    pub fn open_blob(&self, r: &Reference, d: &Digest, offset: u64) -> Result<BlobStream, RegistryError> {
        self.with_endpoints(&r.registry, |ep| self.open_blob_at(ep, r, d, offset))
    }

    /// [`Client::open_blob`] for a blob whose size the manifest states: refuses a registry that announces
    /// another size, and turns bytes beyond `size` into an error, so a hostile registry cannot stream
    /// forever into the ingest area.
    pub fn open_blob_sized(
        &self,
        r: &Reference,
        d: &Digest,
        offset: u64,
        size: u64,
    ) -> Result<BlobStream, RegistryError> {
        let stream = self.open_blob(r, d, offset)?;
        if let Some(total) = stream.total_len.filter(|t| *t != size) {
            return Err(RegistryError::Transfer {
                registry: r.registry.clone(),
                what: format!("blob {d}"),
                reason: format!("registry announces {total} bytes, the manifest says {size}"),
            });
        }
        let remaining = size.saturating_sub(stream.started_at);
        let reader = Box::new(SizeLimit { inner: stream.reader, left: remaining, digest: d.clone(), size });
        Ok(BlobStream { reader, total_len: Some(size), started_at: stream.started_at })
    }

    /// Open a foreign (non-distributable) layer at one of the `urls` its descriptor names, from `offset`:
    /// a plain GET without credentials (they belong to the registry, never to hosts a manifest names),
    /// redirects followed only to http(s), the body capped at `size`. The caller verifies the digest as it
    /// reads, exactly as for a registry blob.
    pub fn open_foreign_sized(
        &self,
        url: &str,
        d: &Digest,
        offset: u64,
        size: u64,
    ) -> Result<BlobStream, RegistryError> {
        let bad = |u: &str, reason: String| RegistryError::BadUrl {
            registry: format!("foreign layer {d}"),
            url: u.to_string(),
            reason,
        };
        let mut url = url::Url::parse(url).map_err(|e| bad(url, e.to_string()))?;
        for _ in 0..=MAX_REDIRECTS {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(bad(url.as_str(), "only http and https URLs are followed".into()));
            }
            let display = host_port(&url);
            let resp = self.t.send_retrying(
                &display,
                || {
                    let b = self.t.plain_http().get(url.clone());
                    if offset > 0 {
                        b.header(RANGE, format!("bytes={offset}-"))
                    } else {
                        b
                    }
                },
                self.t.cfg.max_retries,
            )?;
            if resp.status().is_redirection() {
                let loc = resp.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok());
                let Some(loc) = loc else { return Err(self.t.status_error(resp, "GET", &display, None)) };
                url = url.join(loc).map_err(|e| bad(loc, e.to_string()))?;
                continue;
            }
            let started_at = match resp.status() {
                StatusCode::OK => 0,
                StatusCode::PARTIAL_CONTENT => {
                    let range = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_content_range);
                    match range {
                        Some((start, _)) if start == offset => start,
                        _ => {
                            return Err(bad(
                                url.as_str(),
                                format!("partial response does not start at {offset}"),
                            ))
                        }
                    }
                }
                _ => return Err(self.t.status_error(resp, "GET", &display, None)),
            };
            let left = size.saturating_sub(started_at);
            let reader = SizeLimit { inner: Box::new(resp), left, digest: d.clone(), size };
            return Ok(BlobStream { reader: Box::new(reader), total_len: Some(size), started_at });
        }
        Err(RegistryError::TooManyRedirects { registry: format!("foreign layer {d}"), url: url.to_string() })
    }

    fn open_blob_at(
        &self,
        ep: &Endpoint,
        r: &Reference,
        d: &Digest,
        offset: u64,
    ) -> Result<BlobStream, RegistryError> {
        let (resp, total_len, started_at) = self.blob_response(ep, r, d, offset)?;
        let reader = ResumingReader {
            client: self.clone(),
            ep: ep.clone(),
            reference: r.clone(),
            digest: d.clone(),
            resp: Some(resp),
            pos: started_at,
            total: total_len,
            resumes_left: self.t.cfg.max_retries,
            attempt: 0,
        };
        Ok(BlobStream { reader: Box::new(reader), total_len, started_at })
    }

    /// GET a blob from `offset`; returns the response, the blob's total size if known, and where it starts.
    fn blob_response(
        &self,
        ep: &Endpoint,
        r: &Reference,
        d: &Digest,
        offset: u64,
    ) -> Result<(Response, Option<u64>, u64), RegistryError> {
        let mut get = self.req(r, Method::GET, format!("v2/{}/blobs/{d}", r.repository), Access::Pull);
        if offset > 0 {
            get.headers = headers(&[(RANGE, &format!("bytes={offset}-"))]);
        }
        let resp = self.t.send(ep, &get)?;
        match resp.status() {
            StatusCode::OK => {
                let len = resp.content_length().or_else(|| header_u64(&resp, CONTENT_LENGTH));
                Ok((resp, len, 0))
            }
            StatusCode::PARTIAL_CONTENT => {
                let range = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((start, total)) if start == offset => Ok((resp, total, start)),
                    _ => Err(RegistryError::Transfer {
                        registry: ep.display.clone(),
                        what: format!("blob {d}"),
                        reason: format!("partial response does not start at the requested offset {offset}"),
                    }),
                }
            }
            StatusCode::NOT_FOUND => {
                let _ = error_message(resp);
                Err(RegistryError::BlobUnknown { name: r.name(), digest: d.clone() })
            }
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                // `bytes */TOTAL`: asking from the very end of a complete blob yields nothing more to read;
                // any other unsatisfiable offset is the caller's stale partial file: start over from 0.
                let total = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().strip_prefix("bytes */"))
                    .and_then(|t| t.trim().parse::<u64>().ok());
                drop(resp);
                if total == Some(offset) {
                    let mut get =
                        self.req(r, Method::GET, format!("v2/{}/blobs/{d}", r.repository), Access::Pull);
                    get.method = Method::HEAD;
                    let head = self.t.send(ep, &get)?;
                    return Ok((head, total, offset));
                }
                self.blob_response(ep, r, d, 0)
            }
            _ => Err(self.t.status_error(resp, "GET", &ep.display, None)),
        }
    }
}

fn header_u64(resp: &Response, name: reqwest::header::HeaderName) -> Option<u64> {
    resp.headers().get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `bytes START-END/TOTAL` → (START, TOTAL if not `*`).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = if total.trim() == "*" { None } else { Some(total.trim().parse().ok()?) };
    Some((start.trim().parse().ok()?, total))
}

fn docker_content_digest(resp: &Response) -> Option<Digest> {
    resp.headers().get("docker-content-digest")?.to_str().ok()?.trim().parse().ok()
}

fn io_to_registry(e: std::io::Error, ep: &Endpoint, d: &Digest) -> RegistryError {
    match e.into_inner() {
        Some(inner) => match inner.downcast::<RegistryError>() {
            Ok(re) => *re,
            Err(other) => RegistryError::Transfer {
                registry: ep.display.clone(),
                what: format!("reading blob {d}"),
                reason: super::error::transport_reason(other.as_ref()),
            },
        },
        None => RegistryError::Transfer {
            registry: ep.display.clone(),
            what: format!("reading blob {d}"),
            reason: "connection dropped".into(),
        },
    }
}

/// Errors out when a body runs past the size it should have.
struct SizeLimit {
    inner: Box<dyn Read + Send>,
    left: u64,
    digest: Digest,
    size: u64,
}

impl Read for SizeLimit {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Allow reading one byte past the end to notice an overlong body.
        let want = buf.len().min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(RegistryError::TooLarge {
                what: format!("blob {} (manifest says {} bytes)", self.digest, self.size),
                limit: self.size,
            }));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A blob body that survives dropped connections and stalls: on a read error or a premature end it
/// re-requests the rest with `Range` (skipping already-delivered bytes if the registry ignores `Range`),
/// at most `max_retries` times with backoff.
struct ResumingReader {
    client: Client,
    ep: Endpoint,
    reference: Reference,
    digest: Digest,
    resp: Option<Response>,
    /// Offset of the next byte to deliver.
    pos: u64,
    total: Option<u64>,
    resumes_left: u32,
    attempt: u32,
}

impl ResumingReader {
    fn fail(&self, reason: String) -> std::io::Error {
        std::io::Error::other(RegistryError::Transfer {
            registry: self.ep.display.clone(),
            what: format!("reading blob {} at byte {}", self.digest, self.pos),
            reason,
        })
    }

    fn resume(&mut self, why: String) -> std::io::Result<()> {
        self.resp = None;
        if self.resumes_left == 0 {
            return Err(self.fail(why));
        }
        self.resumes_left -= 1;
        let wait = self.client.t.backoff(self.attempt);
        self.attempt += 1;
        log::info!(
            "blob {}: {why}; resuming at byte {} in {:.1}s",
            self.digest,
            self.pos,
            wait.as_secs_f64()
        );
        std::thread::sleep(wait);
        let (mut resp, total, start) = self
            .client
            .blob_response(&self.ep, &self.reference, &self.digest, self.pos)
            .map_err(std::io::Error::other)?;
        if let (Some(old), Some(new)) = (self.total, total) {
            if old != new {
                return Err(self.fail(format!("blob size changed from {old} to {new} between requests")));
            }
        }
        if start < self.pos {
            // The registry ignored Range: skip what was already delivered.
            let skip = self.pos - start;
            let skipped = std::io::copy(&mut (&mut resp).take(skip), &mut std::io::sink())?;
            if skipped != skip {
                return Err(self.fail("body ended before the resume offset".into()));
            }
        }
        self.total = self.total.or(total);
        self.resp = Some(resp);
        Ok(())
    }
}

impl Read for ResumingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(resp) = self.resp.as_mut() else {
                self.resume("previous attempt failed".into())?;
                continue;
            };
            match resp.read(buf) {
                Ok(0) => match self.total {
                    Some(t) if self.pos < t => {
                        let why = format!("connection closed at byte {} of {t}", self.pos);
                        self.resume(why)?;
                    }
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let why = super::error::transport_reason(&e);
                    self.resume(why)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Client>();
        fn assert_send<T: Send>() {}
        assert_send::<BlobStream>();
    }

    #[test]
    fn docker_schema2_manifest_parses() {
        let body = br#"{
           "schemaVersion": 2,
           "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
           "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469,
                      "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
           "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2,
                       "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]
        }"#;
        let (kind, mt) = manifest::classify(body, Some(manifest::DOCKER_MANIFEST)).unwrap();
        assert_eq!((kind, mt.as_str()), (ManifestKind::Image, manifest::DOCKER_MANIFEST));
        let m: oci_spec::image::ImageManifest = serde_json::from_slice(body).unwrap();
        assert_eq!(
            m.layers()[0].media_type().to_string(),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
