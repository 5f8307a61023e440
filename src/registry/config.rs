//! How registries are reached: Docker Hub mirrors, registries allowed over plain HTTP, timeouts and retry
//! limits. Sources are merged like dockerd's `daemon.json` plus flags: command-line flags first, then the
//! environment (`RIMG_REGISTRY_MIRRORS`, `RIMG_INSECURE_REGISTRIES`, comma lists), then the config file
//! (`$RIMG_CONFIG` or `/etc/rimg/config.json`: `{"registry-mirrors": [...], "insecure-registries": [...],
//! "max-download-attempts": N}`, the same keys as dockerd's `daemon.json`, plus rimg's own
//! `"allow-foreign-urls": true`). `RIMG_REGISTRY_TIMEOUT` (seconds
//! a response or a body read may stall) and `RIMG_REGISTRY_RETRIES` tune the transport.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default location of rimg's config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rimg/config.json";

/// Registry connection settings shared by every request of a [`super::Client`].
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Mirrors of `docker.io`, in the order they are tried before the origin.
    pub mirrors: Vec<url::Url>,
    /// Registries (`host`, `host:port`, or an IP network in CIDR form) that may be reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Directory holding docker's `config.json` (credentials); `None` means `$DOCKER_CONFIG` or `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// Limit for establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Limit for waiting on response headers or on any single read of a body: a stalled transfer fails
    /// after this long instead of hanging.
    pub read_timeout: Duration,
    /// How many times a failed request (connection error, 5xx, 429) or a dropped blob body is retried.
    pub max_retries: u32,
    /// First backoff delay; doubled after every retry.
    pub retry_base_delay: Duration,
    /// Cap on any single backoff, and on how long a 429 `Retry-After` is honoured.
    pub max_retry_delay: Duration,
    /// Fetch foreign (non-distributable) layers the registry does not serve from the `urls` their
    /// descriptors name (config key `allow-foreign-urls`; `rimg pull --allow-foreign-urls`). Off by default:
    /// it means fetching from hosts the user never named.
    pub allow_foreign_urls: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            mirrors: Vec::new(),
            insecure: Vec::new(),
            docker_config_dir: None,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            max_retries: 4,
            retry_base_delay: Duration::from_millis(250),
            max_retry_delay: Duration::from_secs(30),
            allow_foreign_urls: false,
        }
    }
}

/// Why the registry configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file exists (or was named explicitly) but cannot be read.
    #[error("cannot read registry config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The config file is not the expected JSON.
    #[error("invalid registry config {path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    /// A mirror that is not an absolute http(s) URL.
    #[error("invalid registry mirror {0:?}: must be an http:// or https:// URL without query")]
    Mirror(String),
    /// A numeric environment setting that is not a non-negative number.
    #[error("invalid {name}={value:?}: expected a non-negative number")]
    Env { name: String, value: String },
    /// An insecure-registry entry that is neither `host[:port]` nor a CIDR.
    #[error("invalid insecure registry {0:?}: expected HOST[:PORT] or an IP network like 10.0.0.0/8")]
    Insecure(String),
}

#[derive(serde::Deserialize, Default)]
struct FileConfig {
    #[serde(rename = "registry-mirrors", default)]
    registry_mirrors: Vec<String>,
    #[serde(rename = "insecure-registries", default)]
    insecure_registries: Vec<String>,
    /// dockerd's name for how many times a download is attempted.
    #[serde(rename = "max-download-attempts", default)]
    max_download_attempts: Option<u32>,
    /// Follow foreign layers' `urls` when the registry does not serve the blob.
    #[serde(rename = "allow-foreign-urls", default)]
    allow_foreign_urls: bool,
}

impl RegistryConfig {
    /// Merge flags, environment and config file. `file` is an explicitly named config (must exist);
    /// without it `/etc/rimg/config.json` is read if present.
    pub fn load(file: Option<&Path>, mirrors: &[String], insecure: &[String]) -> Result<Self, ConfigError> {
        let env_list = |name: &str| -> Vec<String> {
            std::env::var(name)
                .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default()
        };
        let from_file = match file {
            Some(p) => read_file(p)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => read_file(Path::new(DEFAULT_CONFIG_PATH))?,
            None => FileConfig::default(),
        };
        let mut cfg = RegistryConfig::default();
        if let Some(n) = from_file.max_download_attempts {
            cfg.max_retries = n.saturating_sub(1);
        }
        cfg.allow_foreign_urls = from_file.allow_foreign_urls;
        // Knobs for slow links and for tests that provoke failures without waiting for the defaults.
        let env_num = |name: &str| -> Result<Option<f64>, ConfigError> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .map(Some)
                    .ok_or_else(|| ConfigError::Env { name: name.to_string(), value: v }),
                Err(_) => Ok(None),
            }
        };
        if let Some(secs) = env_num("RIMG_REGISTRY_TIMEOUT")? {
            cfg.read_timeout = Duration::from_secs_f64(secs.max(0.05));
            cfg.connect_timeout = cfg.connect_timeout.min(cfg.read_timeout);
        }
        if let Some(n) = env_num("RIMG_REGISTRY_RETRIES")? {
            cfg.max_retries = n as u32;
        }
        let all_mirrors = mirrors
            .iter()
            .cloned()
            .chain(env_list("RIMG_REGISTRY_MIRRORS"))
            .chain(from_file.registry_mirrors);
        for m in all_mirrors {
            let url = parse_mirror(&m)?;
            if !cfg.mirrors.contains(&url) {
                cfg.mirrors.push(url);
            }
        }
        let all_insecure = insecure
            .iter()
            .cloned()
            .chain(env_list("RIMG_INSECURE_REGISTRIES"))
            .chain(from_file.insecure_registries);
        for i in all_insecure {
            let i = normalize_insecure(&i)?;
            if !cfg.insecure.contains(&i) {
                cfg.insecure.push(i);
            }
        }
        Ok(cfg)
    }

    /// Whether `host` (`host[:port]`, as in a reference) may be reached over plain HTTP: loopback always
    /// (as docker allows), others only when listed.
    pub fn allows_http(&self, host: &str) -> bool {
        is_loopback(host) || self.is_insecure(host)
    }

    /// Whether `host` is listed as insecure (by exact `host:port`, by host, or by CIDR).
    pub fn is_insecure(&self, host: &str) -> bool {
        let bare = strip_port(host);
        self.insecure.iter().any(|entry| {
            if entry == host || entry == bare {
                return true;
            }
            match (entry.split_once('/'), bare.trim_matches(['[', ']']).parse::<IpAddr>()) {
                (Some((net, bits)), Ok(ip)) => cidr_contains(net, bits, ip),
                _ => false,
            }
        })
    }
}

fn read_file(p: &Path) -> Result<FileConfig, ConfigError> {
    let bytes = std::fs::read(p).map_err(|source| ConfigError::Read { path: p.to_path_buf(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse { path: p.to_path_buf(), source })
}

fn parse_mirror(m: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(m).map_err(|_| ConfigError::Mirror(m.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.query().is_some() {
        return Err(ConfigError::Mirror(m.to_string()));
    }
    Ok(url)
}

fn normalize_insecure(s: &str) -> Result<String, ConfigError> {
    let s = s.trim();
    let s = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://")).unwrap_or(s);
    let s = s.trim_end_matches('/');
    if let Some((net, bits)) = s.split_once('/') {
        let ok = net.parse::<IpAddr>().is_ok() && bits.parse::<u8>().is_ok();
        return if ok { Ok(s.to_string()) } else { Err(ConfigError::Insecure(s.to_string())) };
    }
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '@' || c == '?') {
        return Err(ConfigError::Insecure(s.to_string()));
    }
    Ok(s.to_string())
}

/// `host[:port]` → `host` (IPv6 keeps its brackets).
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    if host.matches(':').count() > 1 {
        return host; // a bare IPv6 address has no port
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// `localhost`, 127.0.0.0/8 and ::1, with or without port.
pub fn is_loopback(host: &str) -> bool {
    let bare = strip_port(host);
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    bare.trim_matches(['[', ']']).parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

fn cidr_contains(net: &str, bits: &str, ip: IpAddr) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else { return false };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure() {
        let cfg = RegistryConfig {
            insecure: vec!["reg.lan:5000".into(), "10.1.0.0/16".into(), "plain.example".into()],
            ..Default::default()
        };
        for h in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.3.4.5", "[::1]:5000", "::1"] {
            assert!(is_loopback(h), "{h}");
            assert!(cfg.allows_http(h), "{h}");
        }
        for h in ["reg.lan:5000", "10.1.2.3:443", "plain.example:8080", "plain.example"] {
            assert!(cfg.allows_http(h), "{h}");
        }
        for h in ["reg.lan", "reg.lan:5001", "10.2.0.1", "docker.io", "128.0.0.1"] {
            assert!(!cfg.allows_http(h), "{h}");
        }
    }

    #[test]
    fn loads_file_flags_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"registry-mirrors":["https://mirror.example/"],"insecure-registries":["10.0.0.0/8"],"max-download-attempts":2,"other":1}"#,
        )
        .unwrap();
        let cfg =
            RegistryConfig::load(Some(&path), &["http://127.0.0.1:5000".into()], &["reg:1".into()]).unwrap();
        let mirrors: Vec<String> = cfg.mirrors.iter().map(|u| u.to_string()).collect();
        assert_eq!(mirrors[0], "http://127.0.0.1:5000/");
        assert!(mirrors.contains(&"https://mirror.example/".to_string()));
        assert!(cfg.insecure.contains(&"reg:1".to_string()));
        assert!(cfg.insecure.contains(&"10.0.0.0/8".to_string()));
        assert_eq!(cfg.max_retries, 1);
        assert!(RegistryConfig::load(Some(&dir.path().join("missing")), &[], &[]).is_err());
        assert!(RegistryConfig::load(None, &["mirror.example".into()], &[]).is_err());
        assert!(RegistryConfig::load(None, &[], &["bad net/x".into()]).is_err());
    }
}
