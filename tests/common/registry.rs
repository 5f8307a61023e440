//! A real CNCF distribution registry (`docker-registry serve`) for the tests: on a free loopback port, with
//! a throw-away storage dir, open or behind htpasswd Basic auth or Bearer tokens from a
//! [`TokenServer`](super::token::TokenServer), and a fixture pusher that does what
//! `scripts/push-fixtures.sh` does. Killed and removed on Drop.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::token::TokenServer;
use super::{assert_ok, fixture_layout, fixtures_dir, repo_root, run_tool};

/// How to start a [`TestRegistry`]: no auth by default, htpasswd Basic auth, or any `auth:` section (token
/// auth), optionally serving the storage of another registry (push to an open one, serve with auth).
#[derive(Default)]
pub struct RegistryBuilder {
    htpasswd: Option<(String, String)>,
    auth_yaml: Option<String>,
    token_creds: Option<(String, String)>,
    storage: Option<PathBuf>,
}

impl RegistryBuilder {
    /// Require Basic auth with this one user (bcrypt entry written with `htpasswd -B`).
    pub fn htpasswd(mut self, user: &str, pass: &str) -> Self {
        self.htpasswd = Some((user.to_owned(), pass.to_owned()));
        self
    }

    /// A raw top-level `auth:` section for the registry config, e.g. for `auth: token` with a realm served by
    /// a test token server. Indent with two spaces; it is inserted verbatim.
    pub fn auth_yaml(mut self, yaml: &str) -> Self {
        self.auth_yaml = Some(yaml.to_owned());
        self
    }

    /// Require Bearer tokens from `server` (distribution's `auth: token`); fixtures are pushed with the
    /// server's credentials. The server must outlive the registry.
    pub fn token(mut self, server: &TokenServer) -> Self {
        self.auth_yaml = Some(server.registry_auth_yaml());
        self.token_creds = Some(server.creds());
        self
    }

    /// Serve this storage directory (e.g. another registry's [`TestRegistry::storage_dir`]) instead of an
    /// empty one. Not removed on Drop.
    pub fn storage(mut self, dir: &Path) -> Self {
        self.storage = Some(dir.to_owned());
        self
    }

    /// Starts the registry and waits until `/v2/` answers.
    pub fn start(self) -> TestRegistry {
        TestRegistry::launch(self)
    }
}

/// A real CNCF distribution registry (`docker-registry serve`) on `127.0.0.1:<free port>` with a temp
/// storage dir; killed and removed on Drop.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`, as used in image references (`ADDR/library/busybox:latest`).
    pub addr: String,
    /// Credentials when started with htpasswd or token auth; used by [`TestRegistry::push_fixture`].
    pub creds: Option<(String, String)>,
    child: Child,
    dir: tempfile::TempDir,
    storage: PathBuf,
}

impl TestRegistry {
    /// An open registry (no auth) with empty storage.
    pub fn start() -> TestRegistry {
        Self::builder().start()
    }

    /// A registry requiring Bearer tokens issued by `server` (see [`TokenServer`]).
    pub fn start_with_token(server: &TokenServer) -> TestRegistry {
        Self::builder().token(server).start()
    }

    /// A registry requiring Basic auth for `user`/`pass` (htpasswd, bcrypt).
    pub fn start_with_htpasswd(user: &str, pass: &str) -> TestRegistry {
        Self::builder().htpasswd(user, pass).start()
    }

    /// For the less common set-ups (token auth, shared storage).
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    fn launch(b: RegistryBuilder) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("rimg-test-registry-")
            .tempdir()
            .expect("create temp dir for registry");
        let storage = b.storage.clone().unwrap_or_else(|| dir.path().join("data"));
        fs::create_dir_all(&storage).expect("create registry storage dir");
        let mut auth = b.auth_yaml.clone().unwrap_or_default();
        if let Some((user, pass)) = &b.htpasswd {
            let entry = run_tool("htpasswd", &["-Bbn", user, pass]);
            let file = dir.path().join("htpasswd");
            fs::write(&file, entry.trim_end()).expect("write htpasswd");
            auth = format!("auth:\n  htpasswd:\n    realm: rimg-test\n    path: {}\n", file.display());
        }
        // A free port can be taken by someone else between our probe and the registry's bind: retry.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                     delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
                     http:\n  addr: {addr}\n{auth}",
                    storage.display()
                ),
            )
            .expect("write registry config");
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path).expect("create registry log");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log fd"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start docker-registry: {e} (run setup.sh)"));
            let mut guard = KillOnDrop(Some(child));
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(status)) = guard.child().try_wait() {
                    last_log = fs::read_to_string(&log_path).unwrap_or_default();
                    if last_log.contains("address already in use") {
                        break; // port lost to a race: try another one
                    }
                    panic!("docker-registry exited at start ({status}); log:\n{last_log}");
                }
                // Something answers: make sure it is our child, not another test's registry that won the
                // race for this port (ours would then exit with "address already in use").
                if http_status(&addr, "/v2/").is_some() && owns_listener(guard.child().id(), port) {
                    let child = guard.0.take().expect("child present until handed over");
                    return TestRegistry { addr, creds: b.htpasswd.or(b.token_creds), child, dir, storage };
                }
                if Instant::now() > deadline {
                    panic!(
                        "docker-registry on {addr} did not answer /v2/ within 15s; log:\n{}",
                        fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                sleep(Duration::from_millis(50));
            }
        }
        panic!("docker-registry could not bind a free port in 5 tries; last log:\n{last_log}");
    }

    /// `http://127.0.0.1:PORT`, for `--registry-mirror` and plain HTTP requests.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The registry's storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The temp dir holding config, log and (by default) storage; put extra files (certs) here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pushes fixture `name` (`busybox`, `alpine`, `debian`, `centos`, `edge`, `hostile`, `large`, optionally
    /// `NAME:LAYOUT_TAG`, e.g. `busybox:multiarch`) as `REPO:TAG` with skopeo, exactly as
    /// `scripts/push-fixtures.sh` does (same manifest formats: alpine as Docker schema2, multiarch as an
    /// index). Panics with the fix if the fixtures were not built.
    pub fn push_fixture(&self, name: &str, repo_tag: &str) {
        fixture_layout(name.split(':').next().unwrap_or(name));
        let script = repo_root().join("scripts/push-fixtures.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg("--fixtures").arg(fixtures_dir());
        if let Some((u, p)) = &self.creds {
            cmd.arg("--creds").arg(format!("{u}:{p}"));
        }
        cmd.args(["--one", name, repo_tag, &self.addr]);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert_ok(&out, &format!("push fixture {name} as {}/{repo_tag}", self.addr));
    }

    /// `skopeo inspect` of `REPO:TAG` on this registry, parsed.
    pub fn skopeo_inspect(&self, repo_tag: &str, raw: bool) -> serde_json::Value {
        let mut args = vec!["inspect", "--tls-verify=false"];
        if raw {
            args.push("--raw");
        }
        let creds;
        if let Some((u, p)) = &self.creds {
            creds = format!("{u}:{p}");
            args.extend(["--creds", &creds]);
        }
        let target = format!("docker://{}/{repo_tag}", self.addr);
        args.push(&target);
        let out = run_tool("skopeo", &args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("skopeo inspect output is not JSON: {e}\n{out}"))
    }

    /// The registry's log so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills and reaps a child process unless it was taken out: no registry outlives a panicking start.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until handed over")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (matched by socket inode through
/// /proc/net/tcp and /proc/PID/fd).
pub fn owns_listener(pid: u32, port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let want = format!("0100007F:{port:04X}");
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want && f[3] == "0A").then(|| f[9].to_owned())
    });
    let Some(inode) = inode else {
        return false;
    };
    let target = format!("socket:[{inode}]");
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == target.as_str()))
}

/// A port nobody listens on right now (the kernel's pick for an ephemeral bind).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Status code of a plain HTTP/1.0 GET, or None when nothing answers. Dependency-free on purpose: it is
/// how the harness checks a registry is up without going through the code under test.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}
