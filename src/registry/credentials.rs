//! Credentials in docker's `config.json` (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), so a
//! `docker login` is honoured by rimg and a `rimg login` by docker: `auths` entries (base64 `user:pass`),
//! per-registry `credHelpers` and the default `credsStore`, both run as `docker-credential-<name>` with the
//! server URL on stdin. Writes keep every other key of the file intact and replace it atomically.

use super::auth::Credentials;
use base64::Engine as _;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The key docker uses for Docker Hub in `auths` and credential helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Why credentials could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The config file exists but cannot be read or written.
    #[error("docker config {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The config file is not valid JSON (rimg will not overwrite it).
    #[error("docker config {path} is not valid JSON: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    /// An `auth` field that is not base64 of `user:password`.
    #[error("docker config {path}: invalid auth entry for {server}")]
    BadAuth { path: PathBuf, server: String },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} {action} for {server}: {reason}")]
    Helper { helper: String, action: String, server: String, reason: String },
    /// No home directory to find `~/.docker` in.
    #[error("cannot locate the docker config directory: set $DOCKER_CONFIG or $HOME")]
    NoHome,
}

/// docker's `config.json`, kept as raw JSON so unknown keys survive a rewrite.
pub struct DockerConfig {
    path: PathBuf,
    json: serde_json::Map<String, serde_json::Value>,
    /// `PATH` for finding credential helpers; `None` inherits the process's (tests point it elsewhere
    /// without mutating the process environment).
    helper_path: Option<std::ffi::OsString>,
}

/// Directory docker reads its config from: `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn default_dir() -> Result<PathBuf, CredentialsError> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).ok_or(CredentialsError::NoHome)?;
    Ok(PathBuf::from(home).join(".docker"))
}

/// The key under which credentials for `registry` (a reference's registry, `docker.io` for the Hub) are
/// stored: docker's legacy URL for the Hub, the bare `host[:port]` for everything else.
pub fn server_key(registry: &str) -> String {
    let host = normalize_server(registry);
    if is_docker_hub(&host) {
        DOCKER_HUB_KEY.to_string()
    } else {
        host
    }
}

/// `https://host:port/v1/` → `host:port`; docker's Hub aliases stay as they are.
pub fn normalize_server(server: &str) -> String {
    let s = server.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    s.to_ascii_lowercase()
}

/// Hostnames that all mean Docker Hub.
pub fn is_docker_hub(host: &str) -> bool {
    matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com")
}

impl DockerConfig {
    /// Load `dir/config.json`; a missing file is an empty config.
    pub fn load(dir: &Path) -> Result<DockerConfig, CredentialsError> {
        let path = dir.join("config.json");
        let json = match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => serde_json::Map::new(),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| CredentialsError::Parse { path: path.clone(), source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
            Err(source) => return Err(CredentialsError::Io { path, source }),
        };
        Ok(DockerConfig { path, json, helper_path: None })
    }

    /// Path of the file this config was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Credentials for `registry` (`docker.io`, `host:port`), or `None` to go anonymous.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, CredentialsError> {
        let key = server_key(registry);
        if let Some(helper) = self.helper_for(&key) {
            return helper_get(&helper, &key, self.helper_path.as_deref());
        }
        let Some(auths) = self.json.get("auths").and_then(|a| a.as_object()) else { return Ok(None) };
        let host = normalize_server(registry);
        // Exact key first, then any key that names the same host (docker accepts `https://host/v1/` etc.).
        let entry = auths.get(&key).map(|v| (key.clone(), v)).or_else(|| {
            auths.iter().find_map(|(k, v)| {
                let kh = normalize_server(k);
                let same = kh == host || (is_docker_hub(&kh) && is_docker_hub(&host));
                same.then(|| (k.clone(), v))
            })
        });
        let Some((server, entry)) = entry else { return Ok(None) };
        self.decode_entry(&server, entry)
    }

    fn decode_entry(
        &self,
        server: &str,
        entry: &serde_json::Value,
    ) -> Result<Option<Credentials>, CredentialsError> {
        let bad = || CredentialsError::BadAuth { path: self.path.clone(), server: server.to_string() };
        if let Some(tok) = entry.get("identitytoken").and_then(|t| t.as_str()).filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials {
                username: super::auth::IDENTITY_TOKEN_USER.to_string(),
                password: tok.to_string(),
            }));
        }
        if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()).filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad())?;
            let raw = String::from_utf8(raw).map_err(|_| bad())?;
            let (u, p) = raw.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credentials { username: u.to_string(), password: p.to_string() }));
        }
        let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let (u, p) = (field("username"), field("password"));
        if !u.is_empty() && !p.is_empty() {
            return Ok(Some(Credentials { username: u, password: p }));
        }
        Ok(None)
    }

    /// Whether credentials for `registry` go to a credential helper rather than into the file in plain text.
    pub fn uses_helper(&self, registry: &str) -> bool {
        self.helper_for(&server_key(registry)).is_some()
    }

    /// The helper that holds credentials for `key`: `credHelpers[key]`, else `credsStore`.
    fn helper_for(&self, key: &str) -> Option<String> {
        let per = self.json.get("credHelpers").and_then(|h| h.as_object()).and_then(|h| {
            h.get(key).or_else(|| h.get(&normalize_server(key))).and_then(|v| v.as_str()).map(String::from)
        });
        per.or_else(|| self.json.get("credsStore").and_then(|v| v.as_str()).map(String::from))
            .filter(|h| !h.is_empty())
    }

    /// Store credentials for `registry` (through its helper if one is configured), then save the file.
    pub fn store(&mut self, registry: &str, creds: &Credentials) -> Result<(), CredentialsError> {
        let key = server_key(registry);
        let entry = if let Some(helper) = self.helper_for(&key) {
            helper_store(&helper, &key, creds, self.helper_path.as_deref())?;
            // docker records the server with an empty entry so `docker info` lists it.
            serde_json::json!({})
        } else {
            let raw = format!("{}:{}", creds.username, creds.password);
            serde_json::json!({ "auth": base64::engine::general_purpose::STANDARD.encode(raw) })
        };
        self.auths_mut().insert(key, entry);
        self.save()
    }

    /// Remove credentials for `registry`; returns whether any were stored.
    pub fn erase(&mut self, registry: &str) -> Result<bool, CredentialsError> {
        let key = server_key(registry);
        let mut removed = false;
        if let Some(helper) = self.helper_for(&key) {
            removed |= helper_erase(&helper, &key, self.helper_path.as_deref())?;
        }
        let host = normalize_server(registry);
        let auths = self.auths_mut();
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| {
                let kh = normalize_server(k);
                **k == key || kh == host || (is_docker_hub(&kh) && is_docker_hub(&host))
            })
            .cloned()
            .collect();
        for k in keys {
            auths.remove(&k);
            removed = true;
        }
        if removed {
            self.save()?;
        }
        Ok(removed)
    }

    fn auths_mut(&mut self) -> &mut serde_json::Map<String, serde_json::Value> {
        let entry = self.json.entry("auths").or_insert_with(|| serde_json::json!({}));
        if !entry.is_object() {
            *entry = serde_json::json!({});
        }
        match entry {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("just made it an object"),
        }
    }

    /// Write atomically (temp file + rename), mode 0600 in a 0700 directory, as docker does.
    fn save(&self) -> Result<(), CredentialsError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |source| CredentialsError::Io { path: self.path.clone(), source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        let tmp = dir.join(format!(".config.json.rimg-{}", std::process::id()));
        let body = serde_json::to_vec_pretty(&self.json).map_err(|e| io(std::io::Error::other(e)))?;
        let write = || -> std::io::Result<()> {
            let mut f =
                std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}

fn run_helper(
    helper: &str,
    action: &str,
    server: &str,
    input: &[u8],
    path: Option<&OsStr>,
) -> Result<(bool, String), CredentialsError> {
    let err = |reason: String| CredentialsError::Helper {
        helper: helper.to_string(),
        action: action.to_string(),
        server: server.to_string(),
        reason,
    };
    let mut cmd = Command::new(format!("docker-credential-{helper}"));
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let mut child = cmd
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Ok((out.status.success(), if stdout.is_empty() { stderr } else { stdout }))
}

/// docker-credential-helpers' "not found" answer.
fn is_not_found(msg: &str) -> bool {
    msg.to_ascii_lowercase().contains("credentials not found")
}

fn helper_get(
    helper: &str,
    server: &str,
    path: Option<&OsStr>,
) -> Result<Option<Credentials>, CredentialsError> {
    let (ok, out) = run_helper(helper, "get", server, server.as_bytes(), path)?;
    if !ok {
        if is_not_found(&out) {
            return Ok(None);
        }
        return Err(CredentialsError::Helper {
            helper: helper.into(),
            action: "get".into(),
            server: server.into(),
            reason: out.replace('\n', " "),
        });
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let a: Answer = serde_json::from_str(&out).map_err(|e| CredentialsError::Helper {
        helper: helper.into(),
        action: "get".into(),
        server: server.into(),
        reason: format!("unparsable answer: {e}"),
    })?;
    if a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials { username: a.username, password: a.secret }))
}

fn helper_store(
    helper: &str,
    server: &str,
    creds: &Credentials,
    path: Option<&OsStr>,
) -> Result<(), CredentialsError> {
    let input =
        serde_json::json!({ "ServerURL": server, "Username": creds.username, "Secret": creds.password });
    let (ok, out) = run_helper(helper, "store", server, input.to_string().as_bytes(), path)?;
    if ok {
        Ok(())
    } else {
        Err(CredentialsError::Helper {
            helper: helper.into(),
            action: "store".into(),
            server: server.into(),
            reason: out.replace('\n', " "),
        })
    }
}

fn helper_erase(helper: &str, server: &str, path: Option<&OsStr>) -> Result<bool, CredentialsError> {
    let (ok, out) = run_helper(helper, "erase", server, server.as_bytes(), path)?;
    if ok {
        Ok(true)
    } else if is_not_found(&out) {
        Ok(false)
    } else {
        Err(CredentialsError::Helper {
            helper: helper.into(),
            action: "erase".into(),
            server: server.into(),
            reason: out.replace('\n', " "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials { username: u.into(), password: p.into() }
    }

    #[test]
    fn keys() {
        for hub in ["docker.io", "index.docker.io", "https://index.docker.io/v1/", "registry-1.docker.io"] {
            assert_eq!(server_key(hub), DOCKER_HUB_KEY, "{hub}");
        }
        assert_eq!(server_key("localhost:5000"), "localhost:5000");
        assert_eq!(server_key("https://Quay.io/"), "quay.io");
    }

    #[test]
    fn round_trip_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"other.example":{"auth":"eDp5"}},"psFormat":"table {{.ID}}","proxies":{"default":{}}}"#,
        )
        .unwrap();
        let mut cfg = DockerConfig::load(dir.path()).unwrap();
        assert_eq!(cfg.lookup("other.example").unwrap(), Some(creds("x", "y")));
        assert_eq!(cfg.lookup("docker.io").unwrap(), None);
        cfg.store("docker.io", &creds("me", "p:w")).unwrap();
        cfg.store("127.0.0.1:5000", &creds("a", "b")).unwrap();

        let cfg = DockerConfig::load(dir.path()).unwrap();
        assert_eq!(cfg.lookup("docker.io").unwrap(), Some(creds("me", "p:w")));
        assert_eq!(cfg.lookup("index.docker.io").unwrap(), Some(creds("me", "p:w")));
        assert_eq!(cfg.lookup("127.0.0.1:5000").unwrap(), Some(creds("a", "b")));
        let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["psFormat"], "table {{.ID}}");
        assert!(raw["proxies"].is_object());
        assert!(raw["auths"][DOCKER_HUB_KEY]["auth"].is_string());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let mut cfg = DockerConfig::load(dir.path()).unwrap();
        assert!(cfg.erase("docker.io").unwrap());
        assert!(!cfg.erase("docker.io").unwrap());
        let cfg = DockerConfig::load(dir.path()).unwrap();
        assert_eq!(cfg.lookup("docker.io").unwrap(), None);
        assert_eq!(cfg.lookup("other.example").unwrap(), Some(creds("x", "y")));
    }

    #[test]
    fn url_shaped_keys_and_plain_fields() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"https://reg.example:5000/v2/":{"username":"u","password":"p"},"bad.example":{"auth":"!!"}}}"#,
        )
        .unwrap();
        let cfg = DockerConfig::load(dir.path()).unwrap();
        assert_eq!(cfg.lookup("reg.example:5000").unwrap(), Some(creds("u", "p")));
        assert!(cfg.lookup("bad.example").is_err());
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        assert!(DockerConfig::load(dir.path()).is_err());
    }

    #[test]
    fn credential_helper() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // A helper that answers `get` for one server and reports "not found" for others.
        let script = format!(
            "#!/bin/sh\nread server\ncase \"$1:$server\" in\n get:reg.example) echo '{{\"ServerURL\":\"reg.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}}';;\n store:*) echo \"$server\" > {}/stored;;\n *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
            dir.path().display()
        );
        let helper = bin.join("docker-credential-rimgtest");
        std::fs::write(&helper, script).unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"credHelpers":{"reg.example":"rimgtest"}}"#)
            .unwrap();
        // Helpers are found through PATH: point it at our bin dir for the helper only.
        let search = format!("{}:/usr/bin:/bin", bin.display());
        let load = || {
            let mut c = DockerConfig::load(dir.path()).unwrap();
            c.helper_path = Some(search.clone().into());
            c
        };
        let cfg = load();
        assert_eq!(cfg.lookup("reg.example").unwrap(), Some(creds("hu", "hs")));
        assert_eq!(cfg.lookup("other.example").unwrap(), None, "no helper for other hosts");
        let mut cfg = load();
        cfg.store("reg.example", &creds("n", "s")).unwrap();
        let stored = std::fs::read_to_string(dir.path().join("stored")).unwrap();
        assert!(stored.contains("\"Secret\":\"s\""), "{stored}");
        let raw = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(!raw.contains("\"s\""), "secret must not be in the file: {raw}");
        // The default store serves every registry without a per-registry helper.
        std::fs::write(dir.path().join("config.json"), r#"{"credsStore":"rimgtest"}"#).unwrap();
        assert_eq!(load().lookup("reg.example").unwrap(), Some(creds("hu", "hs")));
        assert_eq!(load().lookup("other.example").unwrap(), None);
        // A helper that is not installed is an error the caller can report (the client goes anonymous).
        std::fs::write(dir.path().join("config.json"), r#"{"credsStore":"absent"}"#).unwrap();
        assert!(load().lookup("reg.example").is_err());
    }
}
