//! Helpers of the store tests (`tests/store_*.rs`): an HTTP proxy in front of a registry that can hold a
//! request until the test lets it go (no sleeps) and logs what went through it, and a hand-made image
//! pusher speaking the distribution API directly (for images skopeo would not make, such as foreign
//! layers the registry also serves).

use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

// ------------------------------------------------------------------------------------------------ proxy

/// One request that went through the proxy.
#[derive(Debug, Clone)]
pub struct Logged {
    /// `GET`, `PATCH`, …
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    /// Bytes of request body forwarded to the registry.
    pub body_bytes: u64,
    /// The registry's status code (0 if none came back).
    pub status: u16,
    /// Whether the request carried an `Authorization` header.
    pub authorization: bool,
}

#[derive(Default)]
struct State {
    /// Requests currently held.
    held: usize,
    /// Requests ever held.
    arrived: usize,
    released: bool,
}

/// Decides from (method, path) whether the proxy holds a request.
type StallRule = Box<dyn Fn(&str, &str) -> bool + Send>;

struct Shared {
    upstream: String,
    stall: Mutex<Option<StallRule>>,
    state: Mutex<State>,
    changed: Condvar,
    log: Mutex<Vec<Logged>>,
    stop: AtomicBool,
}

/// A loopback HTTP/1.1 proxy to `upstream`, one request per connection (it asks the registry to close
/// after each answer, so every request of a keep-alive client is seen). Stops on Drop.
pub struct Proxy {
    /// `127.0.0.1:PORT`, usable as a registry address in image references.
    pub addr: String,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to the registry at `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            stall: Mutex::new(None),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || handle(&s, conn));
            }
        });
        Proxy { addr, shared, thread: Some(thread) }
    }

    /// Hold every request for which `f(method, path)` is true until [`Proxy::release`].
    pub fn stall_when(&self, f: impl Fn(&str, &str) -> bool + Send + 'static) {
        *self.shared.stall.lock().unwrap() = Some(Box::new(f));
    }

    /// Block until a request is being held (panics after 120 s: a hung test, not a timing assertion).
    pub fn wait_held(&self) {
        let st = self.shared.state.lock().unwrap();
        let (st, timeout) =
            self.shared.changed.wait_timeout_while(st, Duration::from_secs(120), |s| s.held == 0).unwrap();
        assert!(!timeout.timed_out() || st.held > 0, "no request reached the stall point");
    }

    /// Let held requests (and any later matching ones) through.
    pub fn release(&self) {
        self.shared.state.lock().unwrap().released = true;
        self.shared.changed.notify_all();
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Forget the log.
    pub fn clear_log(&self) {
        self.shared.log.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.release();
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wake the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read up to the end of the request head; returns (head, bytes of body already read).
fn read_head(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return Some((head, buf[end + 4..].to_vec()));
        }
        let n = conn.read(&mut chunk).ok()?;
        // Not HTTP (a TLS ClientHello from a client trying https first): close at once, as the registry
        // answers plain HTTP to it, so the client falls back without waiting for a timeout.
        if n == 0 || (buf.is_empty() && !chunk[0].is_ascii_uppercase()) {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn handle(s: &Shared, mut client: TcpStream) {
    let Some((head, early_body)) = read_head(&mut client) else { return };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut content_length = 0u64;
    let mut authorization = false;
    let mut out_head = format!("{request_line}\r\n");
    for l in lines.filter(|l| !l.is_empty()) {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue;
        }
        authorization |= lower.starts_with("authorization:");
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        out_head.push_str(l);
        out_head.push_str("\r\n");
    }
    out_head.push_str("Connection: close\r\n\r\n");
    let stall = s.stall.lock().unwrap().as_ref().is_some_and(|f| f(&method, &path));
    if stall {
        let mut st = s.state.lock().unwrap();
        st.held += 1;
        st.arrived += 1;
        s.changed.notify_all();
        st = s.changed.wait_while(st, |st| !st.released).unwrap();
        st.held -= 1;
    }
    let Ok(mut up) = TcpStream::connect(&s.upstream) else { return };
    let mut sent = early_body.len() as u64;
    if up.write_all(out_head.as_bytes()).is_err() || up.write_all(&early_body).is_err() {
        return;
    }
    if content_length > sent {
        let mut rest = (&mut client).take(content_length - sent);
        sent += std::io::copy(&mut rest, &mut up).unwrap_or(0);
    }
    let mut first = [0u8; 12];
    let mut status = 0;
    let mut response = Vec::new();
    if let Ok(n) = up.read(&mut first) {
        response.extend_from_slice(&first[..n]);
        status = String::from_utf8_lossy(&first[..n])
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
    }
    s.log.lock().unwrap().push(Logged { method, path, body_bytes: sent, status, authorization });
    if client.write_all(&response).is_ok() {
        let _ = std::io::copy(&mut up, &mut client);
    }
    let _ = client.shutdown(Shutdown::Both);
}

// ------------------------------------------------------------------------------------------------ images

/// A layer blob for [`push_image`].
#[derive(Clone)]
pub struct Layer {
    /// Layer media type.
    pub media_type: String,
    /// The blob as stored in the registry.
    pub blob: Vec<u8>,
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    /// Foreign-layer URLs.
    pub urls: Vec<String>,
    /// Whether the registry gets the blob (false: only the manifest names it).
    pub upload: bool,
}

impl Layer {
    /// `sha256:` of the blob.
    pub fn digest(&self) -> String {
        sha256(&self.blob)
    }
}

/// A file in a test layer: path, mode (with setuid bits if wanted), content.
pub type Entry<'a> = (&'a str, u32, &'a [u8]);

/// A gzip layer holding `files` (owned by root), as an OCI layer.
pub fn layer(files: &[Entry<'_>]) -> Layer {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, mode, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, *data).expect("tar entry");
    }
    let plain = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).expect("gzip");
    Layer {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        blob: gz.finish().expect("gzip"),
        diff_id: sha256(&plain),
        urls: Vec::new(),
        upload: true,
    }
}

/// The layers of a fixture image (first manifest of its layout), as pushable layers.
pub fn fixture_layers(name: &str) -> Vec<Layer> {
    let dir = super::fixture_layout(name);
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
            .expect("json")
    };
    let blob = |d: &str| dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index = json(&dir.join("index.json"));
    let manifest = json(&blob(index["manifests"][0]["digest"].as_str().expect("manifest digest")));
    let config = json(&blob(manifest["config"]["digest"].as_str().expect("config digest")));
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().expect("diff_ids"))
        .map(|(l, d)| Layer {
            media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
            blob: std::fs::read(blob(l["digest"].as_str().unwrap_or_default())).expect("layer blob"),
            diff_id: d.as_str().unwrap_or_default().to_string(),
            urls: Vec::new(),
            upload: true,
        })
        .collect()
}

/// The platform rimg pulls by default, as an image config names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn upload(http: &reqwest::blocking::Client, registry: &str, repo: &str, data: &[u8]) {
    let digest = sha256(data);
    let start = http
        .post(format!("http://{registry}/v2/{repo}/blobs/uploads/"))
        .header("Content-Length", "0")
        .send()
        .expect("start upload");
    assert_eq!(start.status().as_u16(), 202, "start upload: {:?}", start.text());
    let loc = start.headers()["location"].to_str().expect("location").to_string();
    let mut url = reqwest::Url::parse(&format!("http://{registry}/")).unwrap().join(&loc).expect("url");
    url.query_pairs_mut().append_pair("digest", &digest);
    let put = http
        .put(url)
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .expect("put blob");
    assert_eq!(put.status().as_u16(), 201, "put blob: {:?}", put.text());
}

/// Push an image made of `layers` to `registry/repo:tag` with the distribution API (blobs by monolithic
/// upload, then the manifest, in `manifest_type`: OCI or Docker schema 2); returns the manifest digest.
pub fn push_image(registry: &str, repo: &str, tag: &str, layers: &[Layer], docker_schema2: bool) -> String {
    let http = reqwest::blocking::Client::new();
    let config = serde_json::json!({
        "architecture": host_arch(), "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).unwrap();
    upload(&http, registry, repo, &config);
    for l in layers.iter().filter(|l| l.upload) {
        upload(&http, registry, repo, &l.blob);
    }
    let (manifest_type, config_type) = if docker_schema2 {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
        )
    } else {
        ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json")
    };
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let mut d =
                serde_json::json!({"mediaType": l.media_type, "size": l.blob.len(), "digest": l.digest()});
            if !l.urls.is_empty() {
                d["urls"] = serde_json::json!(l.urls);
            }
            d
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": manifest_type,
        "config": {"mediaType": config_type, "size": config.len(), "digest": sha256(&config)},
        "layers": layer_descs,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let put = http
        .put(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", manifest_type)
        .body(manifest.clone())
        .send()
        .expect("put manifest");
    assert_eq!(put.status().as_u16(), 201, "put manifest: {:?}", put.text());
    sha256(&manifest)
}
