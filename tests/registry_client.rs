//! The registry client against the real CNCF distribution registry (anonymous, htpasswd Basic auth, Docker
//! Hub mirror), plus tiny in-process HTTP servers only for edges a real registry does not produce: 429 with
//! Retry-After, wrong bytes, cross-host redirects, endless redirects, truncated and stalled bodies.

use rimg::digest::Digest;
use rimg::reference::Reference;
use rimg::registry::{Client, Credentials, Platform, RegistryConfig, RegistryError};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------------------
// Helpers: a real registry process, pushing images with umoci/skopeo, client config.

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `docker-registry serve` process on a free loopback port with its own storage; killed on drop.
struct Registry {
    child: Child,
    ip: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        Registry::start_with(|dir| match htpasswd {
            None => String::new(),
            Some((user, pass)) => {
                let out = Command::new("htpasswd").args(["-Bbn", user, pass]).output().unwrap();
                assert!(out.status.success(), "htpasswd failed");
                let path = dir.join("htpasswd");
                std::fs::write(&path, out.stdout).unwrap();
                format!("auth:\n  htpasswd:\n    realm: rimg-test\n    path: {}\n", path.display())
            }
        })
    }

    /// Start with distribution's token auth: JWTs from `realm`, signed by the key of `cert`.
    fn start_token(realm: &str, cert: &Path) -> Registry {
        Registry::start_with(|_| {
            format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                cert.display()
            )
        })
    }

    /// Start with the `auth:` section `auth_yaml(dir)` returns (empty for none).
    fn start_with(auth_yaml: impl FnOnce(&Path) -> String) -> Registry {
        Registry::start_at("127.0.0.1", "", auth_yaml)
    }

    /// Start listening on `ip`, with `http_extra` (e.g. a `tls:` block, indented) in the `http:` section.
    fn start_at(ip: &str, http_extra: &str, auth_yaml: impl FnOnce(&Path) -> String) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n  secret: rimg-test\n{http_extra}",
            dir.path().join("data").display()
        );
        cfg.push_str(&auth_yaml(dir.path()));
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (run setup.sh)");
        let reg = Registry { child, ip: ip.to_string(), port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((ip, port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start: {}", reg.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Push an OCI layout's tag with skopeo (`--all` keeps an index whole).
    fn push_layout(&self, layout: &Path, tag: &str, dest: &str, creds: Option<&str>) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--all", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{dest}", self.host()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Build a one-file image with umoci and push it as `dest`.
    fn push_tiny(&self, dest: &str, creds: Option<&str>) {
        let tmp = tempfile::tempdir().unwrap();
        let layout = tmp.path().join("layout");
        let file = tmp.path().join("hello");
        std::fs::write(&file, "hello from rimg\n").unwrap();
        let umoci = |args: &[&str]| {
            let out = Command::new("umoci").args(args).output().unwrap();
            assert!(out.status.success(), "umoci {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let img = format!("{}:t", layout.display());
        umoci(&["init", "--layout", layout.to_str().unwrap()]);
        umoci(&["new", "--image", &img]);
        umoci(&["insert", "--image", &img, file.to_str().unwrap(), "/hello"]);
        self.push_layout(&layout, "t", dest, creds);
    }

    /// What skopeo says the digest of `dest` is (the reference for our resolution).
    fn skopeo_digest(&self, dest: &str, creds: Option<&str>) -> String {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--creds", c]);
        }
        let out = cmd.arg(format!("docker://{}/{dest}", self.host())).output().unwrap();
        assert!(out.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&out.stderr));
        Digest::of_bytes(&out.stdout).to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Client settings for tests: no ambient docker credentials, short retry delays.
fn test_config(creds_dir: &Path) -> RegistryConfig {
    RegistryConfig {
        docker_config_dir: Some(creds_dir.to_path_buf()),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        max_retries: 3,
        retry_base_delay: Duration::from_millis(20),
        max_retry_delay: Duration::from_secs(3),
        ..RegistryConfig::default()
    }
}

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// Hand-made OCI layouts (a multi-platform index with an attestation entry).

struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir: dir.to_path_buf() }
    }

    fn blob(&self, bytes: &[u8]) -> serde_json::Value {
        let d = Digest::of_bytes(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        serde_json::json!({ "digest": d.to_string(), "size": bytes.len() })
    }

    /// A gzipped tar holding one file.
    fn layer(&self, name: &str, content: &[u8]) -> serde_json::Value {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, content).unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let mut d = self.blob(&gz);
        d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
        d["diff_id"] = Digest::of_bytes(&tar).to_string().into();
        d
    }

    /// An image manifest for one platform; returns its descriptor (with platform).
    fn image(&self, os: &str, arch: &str, variant: Option<&str>) -> serde_json::Value {
        let layer = self.layer("platform", format!("{os}/{arch}/{variant:?}").as_bytes());
        let mut config = serde_json::json!({
            "architecture": arch, "os": os,
            "rootfs": { "type": "layers", "diff_ids": [layer["diff_id"].clone()] },
            "config": {}
        });
        let mut platform = serde_json::json!({ "os": os, "architecture": arch });
        if let Some(v) = variant {
            config["variant"] = v.into();
            platform["variant"] = v.into();
        }
        let mut cfg_desc = self.blob(config.to_string().as_bytes());
        cfg_desc["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
        let mut layer_desc = layer.clone();
        layer_desc.as_object_mut().unwrap().remove("diff_id");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cfg_desc,
            "layers": [layer_desc],
        });
        let mut desc = self.blob(manifest.to_string().as_bytes());
        desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
        desc["platform"] = platform;
        desc
    }

    /// Write an index of `entries` and tag it `tag` in index.json; returns the index digest.
    fn index(&self, tag: &str, entries: Vec<serde_json::Value>) -> String {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        });
        let mut desc = self.blob(index.to_string().as_bytes());
        desc["mediaType"] = "application/vnd.oci.image.index.v1+json".into();
        desc["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": tag });
        let top = serde_json::json!({ "schemaVersion": 2, "manifests": [desc.clone()] });
        std::fs::write(self.dir.join("index.json"), top.to_string()).unwrap();
        desc["digest"].as_str().unwrap().to_string()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Real registry tests.

#[test]
fn resolves_and_streams_from_real_registry() {
    let reg = Registry::start(None);
    reg.push_tiny("test/img:t", None);
    let creds = tempfile::tempdir().unwrap();
    let client = Client::new(test_config(creds.path())).unwrap();
    let reference = r(&format!("{}/test/img:t", reg.host()));

    let resolved = client.resolve(&reference, &amd64()).unwrap();
    assert_eq!(resolved.digest.to_string(), reg.skopeo_digest("test/img:t", None));
    assert_eq!(resolved.digest, resolved.manifest_digest, "a single manifest is its own top level");
    assert_eq!(Digest::of_bytes(&resolved.manifest_raw), resolved.manifest_digest);
    assert_eq!(resolved.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert!(resolved.index_raw.is_none());

    // The config is small and verified.
    let cfg_digest: Digest = resolved.manifest.config().digest().to_string().parse().unwrap();
    let config = client.fetch_blob_bytes(&reference, &cfg_digest, 1 << 20).unwrap();
    assert_eq!(Digest::of_bytes(&config), cfg_digest);
    assert!(matches!(
        client.fetch_blob_bytes(&reference, &cfg_digest, 10),
        Err(RegistryError::TooLarge { .. })
    ));

    // The layer streams; a ranged open starts where asked (distribution honours Range).
    let layer = &resolved.manifest.layers()[0];
    let layer_digest: Digest = layer.digest().to_string().parse().unwrap();
    let mut full = Vec::new();
    let stream = client.open_blob(&reference, &layer_digest, 0).unwrap();
    assert_eq!(stream.started_at, 0);
    assert_eq!(stream.total_len, Some(layer.size()));
    { stream.reader }.read_to_end(&mut full).unwrap();
    assert_eq!(Digest::of_bytes(&full), layer_digest);
    let stream = client.open_blob(&reference, &layer_digest, 10).unwrap();
    let mut tail = Vec::new();
    let start = stream.started_at as usize;
    { stream.reader }.read_to_end(&mut tail).unwrap();
    assert_eq!(&full[start..], &tail[..]);

    // Pull by digest gives the same, and a digest that is not there is "manifest unknown".
    let by_digest = reference.with_digest(resolved.digest.clone());
    assert_eq!(client.resolve(&by_digest, &amd64()).unwrap().manifest_digest, resolved.manifest_digest);
    let missing = reference.with_digest(Digest::of_bytes(b"nope"));
    let err = client.resolve(&missing, &amd64()).unwrap_err();
    assert!(matches!(err, RegistryError::ManifestUnknown { .. }), "{err}");
    let err = client.resolve(&reference.with_tag("nope").unwrap(), &amd64()).unwrap_err();
    assert_eq!(err.to_string(), format!("manifest unknown: {}/test/img:nope", reg.host()));
    let err = client.open_blob(&reference, &Digest::of_bytes(b"nope"), 0).err().unwrap();
    assert!(matches!(err, RegistryError::BlobUnknown { .. }), "{err}");
}

#[test]
fn selects_platform_from_real_index() {
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(&tmp.path().join("layout"));
    let amd = layout.image("linux", "amd64", None);
    let armv7 = layout.image("linux", "arm", Some("v7"));
    let armv6 = layout.image("linux", "arm", Some("v6"));
    let arm64 = layout.image("linux", "arm64", Some("v8"));
    // An attestation manifest like buildx's, listed first: must never be chosen.
    let mut attestation = layout.image("unknown", "unknown", None);
    attestation["annotations"] = serde_json::json!({
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": amd["digest"].clone(),
    });
    let index_digest = layout
        .index("multi", vec![attestation.clone(), armv6.clone(), armv7.clone(), amd.clone(), arm64.clone()]);
    reg.push_layout(&layout.dir, "multi", "test/multi:1", None);

    let creds = tempfile::tempdir().unwrap();
    let client = Client::new(test_config(creds.path())).unwrap();
    let reference = r(&format!("{}/test/multi:1", reg.host()));
    let digest_of = |d: &serde_json::Value| d["digest"].as_str().unwrap().to_string();
    let pick =
        |p: &str| client.resolve(&reference, &p.parse().unwrap()).map(|res| res.manifest_digest.to_string());

    let res = client.resolve(&reference, &amd64()).unwrap();
    assert_eq!(res.digest.to_string(), index_digest);
    assert_eq!(res.manifest_digest.to_string(), digest_of(&amd));
    assert_eq!(res.index_media_type.as_deref(), Some("application/vnd.oci.image.index.v1+json"));
    assert_eq!(Digest::of_bytes(res.index_raw.as_ref().unwrap()).to_string(), index_digest);
    assert_eq!(res.manifest.layers().len(), 1);
    assert_eq!(pick("linux/arm/v7").unwrap(), digest_of(&armv7));
    assert_eq!(pick("linux/arm/v6").unwrap(), digest_of(&armv6));
    assert_eq!(pick("linux/arm64").unwrap(), digest_of(&arm64));
    assert_eq!(pick("linux/aarch64/v8").unwrap(), digest_of(&arm64));
    let err = client.resolve(&reference, &"linux/s390x".parse().unwrap()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::NoMatchingPlatform { .. }), "{msg}");
    assert!(msg.contains("linux/s390x") && msg.contains("linux/arm/v7") && !msg.contains("unknown"), "{msg}");
}

#[test]
fn htpasswd_basic_auth() {
    let reg = Registry::start(Some(("rimguser", "s3cret")));
    reg.push_tiny("private/img:t", Some("rimguser:s3cret"));
    let reference = r(&format!("{}/private/img:t", reg.host()));
    let expected = reg.skopeo_digest("private/img:t", Some("rimguser:s3cret"));

    // Right credentials, read from docker's config.json like `docker login` writes it.
    let creds = tempfile::tempdir().unwrap();
    let mut docker_cfg = rimg::registry::credentials::DockerConfig::load(creds.path()).unwrap();
    docker_cfg
        .store(&reg.host(), &Credentials { username: "rimguser".into(), password: "s3cret".into() })
        .unwrap();
    let client = Client::new(test_config(creds.path())).unwrap();
    let res = client.resolve(&reference, &amd64()).unwrap();
    assert_eq!(res.digest.to_string(), expected);
    let layer: Digest = res.manifest.layers()[0].digest().to_string().parse().unwrap();
    let mut body = Vec::new();
    { client.open_blob(&reference, &layer, 0).unwrap().reader }.read_to_end(&mut body).unwrap();
    assert_eq!(Digest::of_bytes(&body), layer);

    // Wrong credentials: a clear, one-line error naming the image.
    let empty = tempfile::tempdir().unwrap();
    let wrong = Client::new(test_config(empty.path())).unwrap();
    wrong.set_credentials(
        &reg.host(),
        Some(Credentials { username: "rimguser".into(), password: "bad".into() }),
    );
    let err = wrong.resolve(&reference, &amd64()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::Denied { .. }), "{msg}");
    assert!(msg.starts_with(&format!("pull access denied for {}/private/img", reg.host())), "{msg}");
    assert!(!msg.contains('\n') && !msg.contains("bad"), "{msg}");

    // No credentials at all.
    let anon = Client::new(test_config(empty.path())).unwrap();
    let err = anon.resolve(&reference, &amd64()).unwrap_err();
    assert!(matches!(err, RegistryError::Denied { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("pull access denied for {}/private/img: ", reg.host())), "{msg}");
    assert!(msg.contains("insufficient") || msg.contains("authentication required"), "{msg}");
}

#[test]
fn docker_hub_mirror_with_fallback() {
    let reg = Registry::start(None);
    reg.push_tiny("library/centos:latest", None);
    let creds = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut cfg = test_config(creds.path());
    cfg.max_retries = 0;
    cfg.mirrors = vec![dead.parse().unwrap(), format!("http://{}", reg.host()).parse().unwrap()];
    let client = Client::new(cfg).unwrap();
    let res = client.resolve(&r("centos"), &amd64()).unwrap();
    assert_eq!(res.digest.to_string(), reg.skopeo_digest("library/centos:latest", None));
    // A tag the mirror lacks: the mirror's definite answer beats the unreachable origin's.
    let err = client.resolve(&r("centos:nope"), &amd64()).unwrap_err();
    assert_eq!(err.to_string(), "manifest unknown: docker.io/library/centos:nope");
}

#[test]
fn unreachable_registry_is_one_clear_line() {
    let creds = tempfile::tempdir().unwrap();
    let mut cfg = test_config(creds.path());
    cfg.max_retries = 1;
    let client = Client::new(cfg).unwrap();
    let port = free_port();
    let err = client.resolve(&r(&format!("127.0.0.1:{port}/x:1")), &amd64()).unwrap_err();
    assert_eq!(err.to_string(), format!("registry 127.0.0.1:{port} unreachable: connection refused"));
}

// ---------------------------------------------------------------------------------------------------------
// In-process fake servers for edges.

/// One request as the fake server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the fake server does with a request.
enum Reply {
    /// A complete response.
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// Announce `Content-Length` of the whole body but send only `n` bytes, then close.
    Truncated(u16, Vec<(String, String)>, Vec<u8>, usize),
    /// Send headers and `n` bytes, then hold the connection without sending more.
    Stall(u16, Vec<(String, String)>, Vec<u8>, usize),
    /// Close the connection without answering.
    Hangup,
    /// A 200 whose body has no length: it ends when the connection closes.
    Unsized(Vec<u8>),
}

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A one-request-per-connection HTTP/1.1 server on a loopback port; records every request.
struct Fake {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (seen, handler, stop) = (seen2.clone(), handler.clone(), stop2.clone());
                        std::thread::spawn(move || serve_one(conn, &seen, &*handler, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Fake { port, seen, stop }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(conn: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Handler, stop: &AtomicBool) {
    conn.set_nonblocking(false).ok();
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Seen { method, path, headers, body };
    let n = {
        let mut s = seen.lock().unwrap();
        s.push(req.clone());
        s.len() - 1
    };
    let reply = handler(&req, n);
    let mut conn = conn;
    let head = |status: u16, hdrs: &[(String, String)], len: usize| {
        let mut h = format!("HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n");
        for (k, v) in hdrs {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        h
    };
    let is_head = req.method == "HEAD";
    match reply {
        Reply::Hangup => {}
        Reply::Unsized(body) => {
            let _ = conn.write_all(b"HTTP/1.1 200 X\r\nConnection: close\r\n\r\n");
            let _ = conn.write_all(&body);
        }
        Reply::Full(status, hdrs, body) => {
            let _ = conn.write_all(head(status, &hdrs, body.len()).as_bytes());
            if !is_head {
                let _ = conn.write_all(&body);
            }
        }
        Reply::Truncated(status, hdrs, body, n) => {
            let _ = conn.write_all(head(status, &hdrs, body.len()).as_bytes());
            let _ = conn.write_all(&body[..n]);
        }
        Reply::Stall(status, hdrs, body, n) => {
            let _ = conn.write_all(head(status, &hdrs, body.len()).as_bytes());
            let _ = conn.write_all(&body[..n]);
            let _ = conn.flush();
            let until = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let _ = conn.flush();
}

fn ok(body: &[u8]) -> Reply {
    Reply::Full(200, vec![], body.to_vec())
}

fn hdr(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn sample_manifest() -> Vec<u8> {
    let cfg = Digest::of_bytes(b"{}");
    serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 2 },
        "layers": []
    })
    .to_string()
    .into_bytes()
}

/// Serve `/v2/` and one manifest under `test/img` for HEAD and GET (by tag and by digest).
fn manifest_reply(seen: &Seen, body: &[u8], content_type: &str) -> Option<Reply> {
    let digest = Digest::of_bytes(body).to_string();
    if seen.path.starts_with("/v2/test/img/manifests/") {
        return Some(Reply::Full(
            200,
            vec![hdr("Content-Type", content_type), hdr("Docker-Content-Digest", &digest)],
            body.to_vec(),
        ));
    }
    None
}

fn fake_client(read_timeout: Duration, retries: u32) -> (Client, tempfile::TempDir) {
    let creds = tempfile::tempdir().unwrap();
    let mut cfg = test_config(creds.path());
    cfg.read_timeout = read_timeout;
    cfg.max_retries = retries;
    (Client::new(cfg).unwrap(), creds)
}

#[test]
fn honours_429_retry_after() {
    let body = sample_manifest();
    let hits = Arc::new(Mutex::new(0usize));
    let hits2 = hits.clone();
    let fake = Fake::start(move |s, _| {
        if s.path == "/v2/" {
            return ok(b"{}");
        }
        let mut h = hits2.lock().unwrap();
        *h += 1;
        if *h == 1 {
            return Reply::Full(429, vec![hdr("Retry-After", "1")], b"slow down".to_vec());
        }
        manifest_reply(s, &body, OCI_MANIFEST).unwrap_or(Reply::Full(404, vec![], vec![]))
    });
    let (client, _c) = fake_client(Duration::from_secs(5), 2);
    let res = client.resolve(&r(&format!("127.0.0.1:{}/test/img:t", fake.port)), &amd64()).unwrap();
    assert_eq!(res.manifest_digest, Digest::of_bytes(&sample_manifest()));
    assert!(*hits.lock().unwrap() >= 2);

    // A registry that keeps answering 429 eventually yields an error naming the status.
    let fake = Fake::start(|s, _| {
        if s.path == "/v2/" {
            ok(b"{}")
        } else {
            Reply::Full(429, vec![hdr("Retry-After", "0")], vec![])
        }
    });
    let (client, _c) = fake_client(Duration::from_secs(5), 1);
    let err = client.resolve(&r(&format!("127.0.0.1:{}/test/img:t", fake.port)), &amd64()).unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
}

#[test]
fn wrong_digest_is_refused() {
    let body = sample_manifest();
    let claimed = Digest::of_bytes(b"something else");
    let fake = Fake::start(move |s, _| {
        if s.path == "/v2/" {
            return ok(b"{}");
        }
        if s.path.contains("/blobs/") {
            return ok(b"not the blob you asked for");
        }
        // Serves a body under a Docker-Content-Digest it does not hash to.
        Reply::Full(
            200,
            vec![hdr("Content-Type", OCI_MANIFEST), hdr("Docker-Content-Digest", &claimed.to_string())],
            body.clone(),
        )
    });
    let (client, _c) = fake_client(Duration::from_secs(5), 0);
    let base = format!("127.0.0.1:{}/test/img", fake.port);
    let err = client.resolve(&r(&format!("{base}:t")), &amd64()).unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    // Pulled by digest: the body must hash to exactly that digest.
    let want = Digest::of_bytes(b"wanted");
    let err = client.resolve(&r(&format!("{base}@{want}")), &amd64()).unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { ref expected, .. } if *expected == want), "{err}");
    let err = client.fetch_blob_bytes(&r(&format!("{base}:t")), &want, 1024).unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[test]
fn media_type_confusion_is_refused() {
    let body = sample_manifest();
    let fake = Fake::start(move |s, _| {
        if s.path == "/v2/" {
            return ok(b"{}");
        }
        // A manifest body served as an index.
        manifest_reply(s, &body, OCI_INDEX).unwrap_or(Reply::Full(404, vec![], vec![]))
    });
    let (client, _c) = fake_client(Duration::from_secs(5), 0);
    let err = client.resolve(&r(&format!("127.0.0.1:{}/test/img:t", fake.port)), &amd64()).unwrap_err();
    assert!(matches!(err, RegistryError::InvalidManifest { .. }), "{err}");
    assert!(err.to_string().contains("served as"), "{err}");
}

#[test]
fn redirect_to_other_host_drops_credentials() {
    let blob = b"blob stored elsewhere".to_vec();
    let digest = Digest::of_bytes(&blob);
    let storage = Fake::start({
        let blob = blob.clone();
        move |_, _| ok(&blob)
    });
    let storage_port = storage.port;
    let registry = Fake::start(move |s, _| {
        if s.header("authorization") != Some("Basic dTpw") {
            return Reply::Full(401, vec![hdr("WWW-Authenticate", "Basic realm=\"x\"")], vec![]);
        }
        if s.path == "/v2/" {
            return ok(b"{}");
        }
        // Blob storage on another host (localhost vs 127.0.0.1), as S3 pre-signed URLs are.
        Reply::Full(
            307,
            vec![hdr("Location", &format!("http://localhost:{storage_port}/store/b?sig=1"))],
            vec![],
        )
    });
    let (client, _c) = fake_client(Duration::from_secs(5), 0);
    let host = format!("127.0.0.1:{}", registry.port);
    client.set_credentials(&host, Some(Credentials { username: "u".into(), password: "p".into() }));
    let got = client.fetch_blob_bytes(&r(&format!("{host}/test/img:t")), &digest, 1024).unwrap();
    assert_eq!(got, blob);
    let at_storage = storage.seen();
    assert_eq!(at_storage.len(), 1);
    assert_eq!(at_storage[0].path, "/store/b?sig=1");
    assert_eq!(at_storage[0].header("authorization"), None, "credentials leaked to {:?}", at_storage[0]);
    assert!(registry
        .seen()
        .iter()
        .any(|s| s.path.contains("/blobs/") && s.header("authorization").is_some()));
}

#[test]
fn endless_redirects_fail() {
    let fake = Fake::start(|s, n| {
        if s.path == "/v2/" {
            return ok(b"{}");
        }
        Reply::Full(302, vec![hdr("Location", &format!("/loop/{n}"))], vec![])
    });
    let (client, _c) = fake_client(Duration::from_secs(5), 0);
    let base = format!("127.0.0.1:{}/test/img:t", fake.port);
    let err = client.open_blob(&r(&base), &Digest::of_bytes(b"x"), 0).err().unwrap();
    assert!(matches!(err, RegistryError::TooManyRedirects { .. }), "{err}");
    assert!(fake.seen().len() <= 13, "redirects were not capped: {}", fake.seen().len());
}

#[test]
fn truncated_body_resumes_with_range() {
    let blob: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let digest = Digest::of_bytes(&blob);
    let b2 = blob.clone();
    let fake = Fake::start(move |s, _| {
        if s.path == "/v2/" {
            return ok(b"{}");
        }
        match s.header("range").and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-')) {
            None => Reply::Truncated(200, vec![], b2.clone(), 150_000),
            Some(start) => {
                let start: usize = start.parse().unwrap();
                let range = format!("bytes {start}-{}/{}", b2.len() - 1, b2.len());
                // Drop the connection once more mid-way to exercise repeated resumes.
                if start == 150_000 {
                    Reply::Truncated(206, vec![hdr("Content-Range", &range)], b2[start..].to_vec(), 100_000)
                } else {
                    Reply::Full(206, vec![hdr("Content-Range", &range)], b2[start..].to_vec())
                }
            }
        }
    });
    let (client, _c) = fake_client(Duration::from_secs(5), 3);
    let reference = r(&format!("127.0.0.1:{}/test/img:t", fake.port));
    let stream = client.open_blob(&reference, &digest, 0).unwrap();
    assert_eq!(stream.total_len, Some(blob.len() as u64));
    let mut got = Vec::new();
    { stream.reader }.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), blob.len());
    assert_eq!(Digest::of_bytes(&got), digest);
    let ranges: Vec<String> =
        fake.seen().iter().filter_map(|s| s.header("range").map(String::from)).collect();
    assert_eq!(ranges, vec!["bytes=150000-", "bytes=250000-"]);

    // Also through the verified helper.
    assert_eq!(client.fetch_blob_bytes(&reference, &digest, 1 << 20).unwrap(), blob);
}

#[test]
fn resume_when_range_is_ignored_skips_delivered_bytes() {
    let blob: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_be_bytes()).collect();
    let digest = Digest::of_bytes(&blob);
    let b2 = blob.clone();
    let fake = Fake::start(move |s, n| {
        if s.path == "/v2/" {
            return ok(b"{}");
        }
        // First body request is cut short; later ones ignore Range and send everything.
        if n <= 1 {
            Reply::Truncated(200, vec![], b2.clone(), 70_000)
        } else {
            ok(&b2)
        }
    });
    let (client, _c) = fake_client(Duration::from_secs(5), 2);
    let reference = r(&format!("127.0.0.1:{}/test/img:t", fake.port));
    let stream = client.open_blob(&reference, &digest, 0).unwrap();
    let mut got = Vec::new();
    { stream.reader }.read_to_end(&mut got).unwrap();
    assert_eq!(Digest::of_bytes(&got), digest);
    // An explicit offset the server ignores is reported, not hidden.
    let stream = client.open_blob(&reference, &digest, 1000).unwrap();
    assert_eq!(stream.started_at, 0);
}

#[test]
fn stalled_body_times_out() {
    let blob = vec![7u8; 10_000];
    let digest = Digest::of_bytes(&blob);
    let fake = Fake::start(move |s, _| {
        if s.path == "/v2/" {
            return ok(b"{}");
        }
        Reply::Stall(200, vec![], blob.clone(), 1000)
    });
    let (client, _c) = fake_client(Duration::from_secs(1), 1);
    let reference = r(&format!("127.0.0.1:{}/test/img:t", fake.port));
    // Normally the headers and the first bytes arrive and the body then stalls; on a badly overloaded machine
    // even the headers may miss the deadline. Either way the outcome is a timeout error, never a hang.
    let err = match client.open_blob(&reference, &digest, 0) {
        Ok(stream) => {
            let mut got = Vec::new();
            { stream.reader }.read_to_end(&mut got).unwrap_err().to_string()
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains("timed out"), "{err}");
    let err = client.fetch_blob_bytes(&reference, &digest, 1 << 20).unwrap_err();
    assert!(matches!(err, RegistryError::Transfer { .. } | RegistryError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------
// Push side.

/// Push a config, a small layer (monolithic upload) and a 9 MiB layer (chunked upload) plus the manifest.
fn push_image(client: &Client, dest: &Reference) -> (Vec<u8>, Vec<(Digest, Vec<u8>)>) {
    let big: Vec<u8> = (0..(9u32 << 20) / 4).flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes()).collect();
    let small = b"small layer bytes".to_vec();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let blobs: Vec<(Digest, Vec<u8>)> =
        [config, small, big].into_iter().map(|b| (Digest::of_bytes(&b), b)).collect();
    for (d, b) in &blobs {
        let sent = Mutex::new(0u64);
        client.upload_blob(dest, d, b.len() as u64, &mut &b[..], &|n| *sent.lock().unwrap() = n).unwrap();
        assert_eq!(*sent.lock().unwrap(), b.len() as u64);
    }
    let desc = |(d, b): &(Digest, Vec<u8>), mt: &str| serde_json::json!({ "mediaType": mt, "digest": d.to_string(), "size": b.len() });
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(&blobs[0], "application/vnd.oci.image.config.v1+json"),
        "layers": [desc(&blobs[1], "application/vnd.oci.image.layer.v1.tar"), desc(&blobs[2], "application/vnd.oci.image.layer.v1.tar")],
    })
    .to_string()
    .into_bytes();
    let digest = client.put_manifest(dest, OCI_MANIFEST, &manifest).unwrap();
    assert_eq!(digest, Digest::of_bytes(&manifest));
    (manifest, blobs)
}

#[test]
fn pushes_to_real_registry() {
    let reg = Registry::start(None);
    let creds = tempfile::tempdir().unwrap();
    let client = Client::new(test_config(creds.path())).unwrap();
    let dest = r(&format!("{}/pushed/img:v1", reg.host()));
    let (manifest, blobs) = push_image(&client, &dest);
    assert_eq!(reg.skopeo_digest("pushed/img:v1", None), Digest::of_bytes(&manifest).to_string());
    for (d, b) in &blobs {
        assert_eq!(client.blob_exists(&dest, d).unwrap(), Some(b.len() as u64));
    }
    assert_eq!(client.blob_exists(&dest, &Digest::of_bytes(b"absent")).unwrap(), None);
    // Pull back what was pushed (the big blob went up in chunks).
    let res = client.resolve(&dest, &amd64()).unwrap();
    assert_eq!(res.manifest_raw, manifest);
    let big = client.fetch_blob_bytes(&dest, &blobs[2].0, 16 << 20).unwrap();
    assert_eq!(big, blobs[2].1);
    // Cross-repository mount: no upload needed; an unknown blob is declined.
    let other = r(&format!("{}/other/img:v1", reg.host()));
    assert!(client.mount_blob(&other, &blobs[2].0, "pushed/img").unwrap());
    assert_eq!(client.blob_exists(&other, &blobs[2].0).unwrap(), Some(blobs[2].1.len() as u64));
    assert!(!client.mount_blob(&other, &Digest::of_bytes(b"absent"), "pushed/img").unwrap());
}

#[test]
fn push_needs_credentials_on_basic_auth_registry() {
    let reg = Registry::start(Some(("pusher", "pw")));
    let empty = tempfile::tempdir().unwrap();
    let dest = r(&format!("{}/p/img:1", reg.host()));
    let anon = Client::new(test_config(empty.path())).unwrap();
    let err = anon.blob_exists(&dest, &Digest::of_bytes(b"x")).unwrap_err();
    assert!(err.to_string().starts_with(&format!("push access denied for {}/p/img", reg.host())), "{err}");
    let client = Client::new(test_config(empty.path())).unwrap();
    client
        .check_login(&reg.host(), &Credentials { username: "pusher".into(), password: "pw".into() })
        .unwrap();
    let (manifest, _) = push_image(&client, &dest);
    assert_eq!(reg.skopeo_digest("p/img:1", Some("pusher:pw")), Digest::of_bytes(&manifest).to_string());
    let bad = Client::new(test_config(empty.path())).unwrap();
    let err = bad.check_login(&reg.host(), &Credentials { username: "pusher".into(), password: "no".into() });
    assert!(matches!(err, Err(RegistryError::LoginFailed { .. })), "{err:?}");
}

// ---------------------------------------------------------------------------------------------------------
// Token auth: the real registry verifying RS256 JWTs from a small token server (signed with openssl).

const TOKEN_SERVICE: &str = "rimg-test-registry";
const TOKEN_ISSUER: &str = "rimg-test-issuer";

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token server: checks Basic credentials and issues JWTs granting the requested scopes to the one user
/// (nothing to anonymous callers), signed RS256 by `openssl dgst` with the certificate in `x5c`.
struct TokenServer {
    fake: Fake,
    cert: PathBuf,
    issued: Arc<Mutex<usize>>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    fn start(user: &'static str, pass: &'static str) -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=rimg-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
        let der =
            Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert).output().unwrap();
        assert!(der.status.success());
        let x5c = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&der.stdout)
        };
        let issued = Arc::new(Mutex::new(0usize));
        let issued2 = issued.clone();
        let key2 = key.clone();
        let fake = Fake::start(move |s, _| {
            let url = url::Url::parse(&format!("http://x{}", s.path)).unwrap();
            let (scopes, authed) = if s.method == "POST" {
                // OAuth2 refresh-token grant (identity tokens).
                let form: Vec<(String, String)> = url::form_urlencoded::parse(&s.body)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let get =
                    |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
                if get("grant_type") != "refresh_token" || get("refresh_token") != format!("refresh-{user}") {
                    return Reply::Full(401, vec![], br#"{"details":"invalid refresh token"}"#.to_vec());
                }
                (
                    get("scope").split(' ').filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>(),
                    true,
                )
            } else {
                let scopes: Vec<String> =
                    url.query_pairs().filter(|(k, _)| k == "scope").map(|(_, v)| v.into_owned()).collect();
                use base64::Engine as _;
                let expected = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
                );
                let authed = match s.header("authorization") {
                    None => false,
                    Some(h) if h == expected => true,
                    Some(_) => {
                        return Reply::Full(
                            401,
                            vec![],
                            br#"{"details":"incorrect username or password"}"#.to_vec(),
                        )
                    }
                };
                (scopes, authed)
            };
            let access: Vec<serde_json::Value> = if authed {
                scopes
                    .iter()
                    .filter_map(|sc| {
                        let mut parts = sc.splitn(3, ':');
                        let (typ, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        // The user may use everything except the `forbidden/` namespace.
                        if name.starts_with("forbidden/") {
                            return None;
                        }
                        Some(serde_json::json!({ "type": typ, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [x5c] });
            let claims = serde_json::json!({
                "iss": TOKEN_ISSUER, "sub": if authed { user } else { "" }, "aud": TOKEN_SERVICE,
                "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", s.path.len()),
                "access": access,
            });
            let signing_input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let mut child = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key2)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(signing_input.as_bytes()).unwrap();
            let sig = child.wait_with_output().unwrap();
            assert!(sig.status.success());
            let jwt = format!("{signing_input}.{}", b64url(&sig.stdout));
            *issued2.lock().unwrap() += 1;
            // OAuth2-style field name, to exercise `access_token`.
            ok(serde_json::json!({ "access_token": jwt, "expires_in": 300 }).to_string().as_bytes())
        });
        TokenServer { fake, cert, issued, _dir: dir }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.fake.port)
    }
}

#[test]
fn token_auth_with_real_registry() {
    let tokens = TokenServer::start("tokenuser", "tokenpass");
    let reg = Registry::start_token(&tokens.realm(), &tokens.cert);
    reg.push_tiny("secure/img:t", Some("tokenuser:tokenpass"));
    let expected = reg.skopeo_digest("secure/img:t", Some("tokenuser:tokenpass"));
    let reference = r(&format!("{}/secure/img:t", reg.host()));
    let empty = tempfile::tempdir().unwrap();

    let before = *tokens.issued.lock().unwrap();
    let client = Client::new(test_config(empty.path())).unwrap();
    client.set_credentials(
        &reg.host(),
        Some(Credentials { username: "tokenuser".into(), password: "tokenpass".into() }),
    );
    let res = client.resolve(&reference, &amd64()).unwrap();
    assert_eq!(res.digest.to_string(), expected);
    let layer: Digest = res.manifest.layers()[0].digest().to_string().parse().unwrap();
    let cfg: Digest = res.manifest.config().digest().to_string().parse().unwrap();
    client.fetch_blob_bytes(&reference, &cfg, 1 << 20).unwrap();
    let mut body = Vec::new();
    { client.open_blob(&reference, &layer, 0).unwrap().reader }.read_to_end(&mut body).unwrap();
    assert_eq!(Digest::of_bytes(&body), layer);
    // One token served every request of the pull (per-registry, per-scope cache).
    assert_eq!(*tokens.issued.lock().unwrap() - before, 1);
    // The token flow also verifies logins.
    client
        .check_login(&reg.host(), &Credentials { username: "tokenuser".into(), password: "tokenpass".into() })
        .unwrap();

    let wrong = Client::new(test_config(empty.path())).unwrap();
    wrong.set_credentials(
        &reg.host(),
        Some(Credentials { username: "tokenuser".into(), password: "nope".into() }),
    );
    let err = wrong.resolve(&reference, &amd64()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::Denied { .. }), "{msg}");
    assert!(msg.contains("incorrect username or password") && !msg.contains('\n'), "{msg}");
    let err = wrong
        .check_login(&reg.host(), &Credentials { username: "tokenuser".into(), password: "nope".into() });
    assert!(matches!(err, Err(RegistryError::LoginFailed { .. })), "{err:?}");

    let anon = Client::new(test_config(empty.path())).unwrap();
    let err = anon.resolve(&reference, &amd64()).unwrap_err();
    assert!(matches!(err, RegistryError::Denied { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("pull access denied for {}/secure/img: ", reg.host())), "{msg}");

    // Push with a token scoped `pull,push`; a mount from a repository the token server will not grant falls
    // back to uploading.
    let pushed = r(&format!("{}/secure/pushed:1", reg.host()));
    let (manifest, blobs) = push_image(&client, &pushed);
    assert_eq!(
        reg.skopeo_digest("secure/pushed:1", Some("tokenuser:tokenpass")),
        Digest::of_bytes(&manifest).to_string()
    );
    let other = r(&format!("{}/secure/other:1", reg.host()));
    assert!(!client.mount_blob(&other, &blobs[1].0, "forbidden/x").unwrap());
    assert!(client.mount_blob(&other, &blobs[1].0, "secure/pushed").unwrap());

    // An identity token in docker's config.json is exchanged by OAuth2 refresh-token grant.
    let with_identity = tempfile::tempdir().unwrap();
    let write_identity = |tok: &str| {
        let cfg = serde_json::json!({ "auths": { reg.host(): { "auth": "", "identitytoken": tok } } });
        std::fs::write(with_identity.path().join("config.json"), cfg.to_string()).unwrap();
    };
    write_identity("refresh-tokenuser");
    let client = Client::new(test_config(with_identity.path())).unwrap();
    assert_eq!(client.resolve(&reference, &amd64()).unwrap().digest.to_string(), expected);
    write_identity("refresh-stale");
    let client = Client::new(test_config(with_identity.path())).unwrap();
    let err = client.resolve(&reference, &amd64()).unwrap_err();
    assert!(err.to_string().contains("invalid refresh token"), "{err}");
    assert!(msg.contains("insufficient") || msg.contains("authentication required"), "{msg}");
}

#[test]
fn unsatisfiable_range_at_end_or_beyond() {
    let blob = b"0123456789".to_vec();
    let digest = Digest::of_bytes(&blob);
    let b2 = blob.clone();
    let fake = Fake::start(move |s, _| {
        if s.path == "/v2/" {
            return ok(b"{}");
        }
        let start = s.header("range").and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok());
        match start {
            Some(n) if n >= b2.len() => Reply::Full(416, vec![hdr("Content-Range", "bytes */10")], vec![]),
            Some(n) => {
                Reply::Full(206, vec![hdr("Content-Range", &format!("bytes {n}-9/10"))], b2[n..].to_vec())
            }
            None => ok(&b2),
        }
    });
    let (client, _c) = fake_client(Duration::from_secs(5), 0);
    let reference = r(&format!("127.0.0.1:{}/test/img:t", fake.port));
    // Already complete: nothing left to read.
    let s = client.open_blob(&reference, &digest, 10).unwrap();
    assert_eq!((s.started_at, s.total_len), (10, Some(10)));
    let mut rest = Vec::new();
    { s.reader }.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // A stale offset past the end: start over from 0.
    let s = client.open_blob(&reference, &digest, 25).unwrap();
    assert_eq!(s.started_at, 0);
    let mut all = Vec::new();
    { s.reader }.read_to_end(&mut all).unwrap();
    assert_eq!(all, blob);
    let s = client.open_blob(&reference, &digest, 4).unwrap();
    assert_eq!((s.started_at, s.total_len), (4, Some(10)));
}

/// A non-loopback IPv4 address of this machine, to test what loopback gets for free.
fn non_loopback_ip() -> Option<String> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .map(String::from)
}

#[test]
fn insecure_registries_plain_http_and_self_signed_tls() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("no non-loopback IPv4 address: skipping");
        return;
    };
    let creds = tempfile::tempdir().unwrap();
    let client_for = |insecure: Vec<String>| {
        let mut cfg = test_config(creds.path());
        cfg.max_retries = 0;
        cfg.insecure = insecure;
        Client::new(cfg).unwrap()
    };

    // Plain HTTP on a non-loopback address: refused unless listed as insecure (docker's rule).
    let plain = Registry::start_at(&ip, "", |_| String::new());
    plain.push_tiny("test/img:t", None);
    let reference = r(&format!("{}/test/img:t", plain.host()));
    let err = client_for(vec![]).resolve(&reference, &amd64()).unwrap_err();
    eprintln!("plain http, not insecure: {err}");
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    let res = client_for(vec![plain.host()]).resolve(&reference, &amd64()).unwrap();
    assert_eq!(res.digest.to_string(), plain.skopeo_digest("test/img:t", None));
    // Listing the network also works, as dockerd's CIDR entries.
    client_for(vec![format!("{ip}/32")]).resolve(&reference, &amd64()).unwrap();

    // Self-signed TLS: certificate refused unless insecure, then https is used without verification.
    let tls_dir = tempfile::tempdir().unwrap();
    let (cert, key) = (tls_dir.path().join("cert.pem"), tls_dir.path().join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=rimg-test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    let tls = format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display());
    let secure = Registry::start_at(&ip, &tls, |_| String::new());
    secure.push_tiny("test/img:t", None);
    let reference = r(&format!("{}/test/img:t", secure.host()));
    let err = client_for(vec![]).resolve(&reference, &amd64()).unwrap_err();
    eprintln!("self-signed, not insecure: {err}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
    let res = client_for(vec![secure.host()]).resolve(&reference, &amd64()).unwrap();
    assert_eq!(res.digest.to_string(), secure.skopeo_digest("test/img:t", None));
}

#[test]
fn retries_dropped_connections_and_5xx() {
    let blob = b"eventually".to_vec();
    let digest = Digest::of_bytes(&blob);
    let b2 = blob.clone();
    let fake = Fake::start(move |s, n| {
        if s.path == "/v2/" {
            return ok(b"{}");
        }
        match n {
            1 => Reply::Hangup,
            2 => Reply::Full(503, vec![], b"busy".to_vec()),
            _ => ok(&b2),
        }
    });
    let (client, _c) = fake_client(Duration::from_secs(5), 3);
    let reference = r(&format!("127.0.0.1:{}/test/img:t", fake.port));
    assert_eq!(client.fetch_blob_bytes(&reference, &digest, 1024).unwrap(), blob);
    assert_eq!(fake.seen().len(), 4);

    // Retries are bounded: a registry that always fails yields its status.
    let fake =
        Fake::start(|s, _| if s.path == "/v2/" { ok(b"{}") } else { Reply::Full(502, vec![], vec![]) });
    let (client, _c) = fake_client(Duration::from_secs(5), 2);
    let reference = r(&format!("127.0.0.1:{}/test/img:t", fake.port));
    let err = client.fetch_blob_bytes(&reference, &digest, 1024).unwrap_err();
    assert!(matches!(err, RegistryError::Status { status: 502, .. }), "{err}");
    assert_eq!(fake.seen().len(), 1 + 3);
}

#[test]
fn sized_blob_refuses_overlong_bodies() {
    let blob = vec![1u8; 1000];
    let digest = Digest::of_bytes(&blob);
    let b2 = blob.clone();
    let fake = Fake::start(move |s, _| {
        if s.path == "/v2/" {
            return ok(b"{}");
        }
        if s.path.contains("/x/") {
            // No length announced, and far more than the manifest says.
            return Reply::Unsized(vec![2u8; 50_000]);
        }
        ok(&b2)
    });
    let (client, _c) = fake_client(Duration::from_secs(5), 0);
    let good = r(&format!("127.0.0.1:{}/test/img:t", fake.port));
    let mut body = Vec::new();
    { client.open_blob_sized(&good, &digest, 0, 1000).unwrap().reader }.read_to_end(&mut body).unwrap();
    assert_eq!(body, blob);
    // Announced size differs from the manifest's.
    let err = client.open_blob_sized(&good, &digest, 0, 999).err().unwrap();
    assert!(err.to_string().contains("announces 1000 bytes"), "{err}");
    // Unannounced and overlong: an error once the manifest's size is passed, not an endless stream.
    let bad = r(&format!("127.0.0.1:{}/x/img:t", fake.port));
    let stream = client.open_blob_sized(&bad, &digest, 0, 1000).unwrap();
    assert_eq!(stream.total_len, Some(1000));
    let mut sink = Vec::new();
    let err = { stream.reader }.read_to_end(&mut sink).unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    assert!(sink.len() <= 1000);
}
