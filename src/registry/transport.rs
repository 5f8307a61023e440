//! The HTTP layer under the client: endpoints (scheme probing, mirrors), authenticated requests with the
//! Bearer/Basic dance, retries with backoff (5xx, dropped connections, 429 `Retry-After`), and redirects
//! followed by hand so credentials never leave the registry's origin.

use super::auth::{pick_challenge, Challenge, Credentials, TokenCache, TokenResponse, IDENTITY_TOKEN_USER};
use super::config::RegistryConfig;
use super::credentials::{default_dir, DockerConfig};
use super::error::{transport_reason, Access, RegistryError};
use reqwest::blocking::{Client as Http, Response};
use reqwest::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use url::Url;

/// Most redirects followed for one request (blob storage uses one or two).
pub(crate) const MAX_REDIRECTS: usize = 10;
/// How long a mirror that failed its ping is skipped.
const MIRROR_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Most bytes of an error response read to find the registry's error message.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// A registry base URL that answered the `/v2/` ping, with what it asked for.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    /// `scheme://host[:port][/prefix]/`.
    pub base: Url,
    /// `host[:port]` for messages.
    pub display: String,
    /// Registry name credentials are looked up under.
    pub cred_key: String,
    /// Whether TLS certificates are not verified (insecure registries tried over https first).
    pub insecure_tls: bool,
    /// The authentication challenge from the ping, if any.
    pub challenge: Option<Challenge>,
}

/// A place a registry may be reached, before the ping decided the scheme.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    /// Base URLs to try in order (https first, plain http for insecure/loopback registries).
    pub urls: Vec<Url>,
    pub display: String,
    pub cred_key: String,
    pub insecure_tls: bool,
    pub mirror: bool,
}

/// One request, rebuildable for retries.
#[derive(Clone)]
pub(crate) struct Req {
    pub method: Method,
    /// Path (and query) relative to the endpoint base, e.g. `v2/library/centos/manifests/latest`, or an
    /// absolute URL (upload locations).
    pub path: String,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    /// Bearer scopes this request needs.
    pub scopes: Vec<String>,
    pub access: Access,
    /// Full repository name for error messages (`docker.io/library/centos`).
    pub name: String,
    /// Registry as the user wrote it, for the `rimg login` hint.
    pub registry: String,
}

pub(crate) struct Transport {
    pub cfg: RegistryConfig,
    http: Http,
    http_insecure: Http,
    tokens: TokenCache,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    /// Mirrors whose ping failed, and when: skipped for [`MIRROR_RETRY_AFTER`] instead of being re-pinged
    /// (with backoff) before every blob.
    dead_mirrors: Mutex<HashMap<String, (Instant, String)>>,
    creds: Mutex<HashMap<String, Option<Credentials>>>,
}

impl Transport {
    pub fn new(cfg: RegistryConfig) -> Result<Transport, RegistryError> {
        let build = |insecure: bool| {
            Http::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(cfg.connect_timeout)
                .timeout(cfg.read_timeout)
                .user_agent(concat!("rimg/", env!("CARGO_PKG_VERSION")))
                .danger_accept_invalid_certs(insecure)
                .build()
                .map_err(|e| RegistryError::Client(transport_reason(&e)))
        };
        Ok(Transport {
            http: build(false)?,
            http_insecure: build(true)?,
            cfg,
            tokens: TokenCache::default(),
            endpoints: Mutex::new(HashMap::new()),
            dead_mirrors: Mutex::new(HashMap::new()),
            creds: Mutex::new(HashMap::new()),
        })
    }

    /// The HTTP client with certificate checks on and no credentials of its own: for hosts that are not
    /// a registry endpoint (foreign-layer URLs).
    pub fn plain_http(&self) -> &Http {
        &self.http
    }

    /// The HTTP client for an endpoint (certificate checks off only for insecure registries).
    pub fn http_for(&self, ep: &Endpoint) -> &Http {
        if ep.insecure_tls {
            &self.http_insecure
        } else {
            &self.http
        }
    }

    /// Endpoints for `registry`, in the order to try them: Docker Hub mirrors first, then the origin.
    pub fn candidates(&self, registry: &str) -> Vec<Candidate> {
        let mut out = Vec::new();
        let hub = registry == crate::reference::DEFAULT_REGISTRY;
        if hub {
            for m in &self.cfg.mirrors {
                let mut base = m.clone();
                if !base.path().ends_with('/') {
                    let p = format!("{}/", base.path());
                    base.set_path(&p);
                }
                let display = host_port(&base);
                out.push(Candidate {
                    insecure_tls: self.cfg.is_insecure(&display),
                    cred_key: display.clone(),
                    display,
                    urls: vec![base],
                    mirror: true,
                });
            }
        }
        let host = if hub { "registry-1.docker.io" } else { registry };
        let mut urls = Vec::new();
        if let Ok(u) = Url::parse(&format!("https://{host}/")) {
            urls.push(u);
        }
        if self.cfg.allows_http(host) {
            if let Ok(u) = Url::parse(&format!("http://{host}/")) {
                urls.push(u);
            }
        }
        out.push(Candidate {
            urls,
            display: host.to_string(),
            cred_key: registry.to_string(),
            // As docker: registries allowed over plain HTTP (loopback included) are also tried over https
            // without certificate verification first.
            insecure_tls: self.cfg.allows_http(host),
            mirror: false,
        });
        out
    }

    /// Override (or clear) the credentials used for `registry`, bypassing docker's config (for `rimg login`
    /// verification and for tests).
    pub fn set_credentials(&self, registry: &str, creds: Option<Credentials>) {
        let mut map = self.creds.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(registry.to_string(), creds);
    }

    /// Credentials for `registry`: an override, else docker's config (looked up once, then cached).
    fn credentials(&self, registry: &str) -> Option<Credentials> {
        if let Some(c) = self.creds.lock().unwrap_or_else(|e| e.into_inner()).get(registry) {
            return c.clone();
        }
        let dir = match &self.cfg.docker_config_dir {
            Some(d) => Some(d.clone()),
            None => default_dir().ok(),
        };
        // Unreadable credentials (a broken config.json, a credential helper that is not installed) must not
        // make public images unpullable: warn and go anonymous; a private image then fails with "denied".
        let found = match dir.map(|d| DockerConfig::load(&d).and_then(|c| c.lookup(registry))) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                log::warn!("{e}; continuing without credentials for {registry}");
                None
            }
            None => None,
        };
        let mut map = self.creds.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(registry.to_string(), found.clone());
        found
    }

    /// Ping `/v2/` to settle the scheme and learn the auth challenge; cached per candidate.
    pub fn endpoint(&self, c: &Candidate) -> Result<Endpoint, RegistryError> {
        let key = c.urls.first().map(|u| u.to_string()).unwrap_or_default();
        if let Some(ep) = self.endpoints.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(ep.clone());
        }
        if c.mirror {
            let dead = self.dead_mirrors.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((when, reason)) =
                dead.get(&key).filter(|(when, _)| when.elapsed() < MIRROR_RETRY_AFTER)
            {
                log::debug!("skipping mirror {key}, failed {:?} ago", when.elapsed());
                return Err(RegistryError::Unreachable {
                    registry: c.display.clone(),
                    reason: reason.clone(),
                });
            }
        }
        let result = self.ping(c, &key);
        if let (true, Err(e)) = (c.mirror, &result) {
            let mut dead = self.dead_mirrors.lock().unwrap_or_else(|e| e.into_inner());
            let reason = match e {
                RegistryError::Unreachable { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            dead.insert(key, (Instant::now(), reason));
        }
        result
    }

    fn ping(&self, c: &Candidate, key: &str) -> Result<Endpoint, RegistryError> {
        let mut last_err = None;
        for (i, base) in c.urls.iter().enumerate() {
            let http = if c.insecure_tls { &self.http_insecure } else { &self.http };
            let Ok(url) = base.join("v2/") else { continue };
            // Probing https on a plain-http registry fails fast; retry only the last scheme. A mirror gets
            // one retry at most: the origin is there to fall back to.
            let retries = match (i + 1 < c.urls.len(), c.mirror) {
                (true, _) => 0,
                (false, true) => self.cfg.max_retries.min(1),
                (false, false) => self.cfg.max_retries,
            };
            match self.send_retrying(&c.display, || http.get(url.clone()), retries) {
                Ok(resp) => {
                    let challenge = if resp.status() == StatusCode::UNAUTHORIZED {
                        challenge_of(&resp).or(Some(Challenge::Basic { realm: None }))
                    } else if resp.status().is_success() {
                        None
                    } else {
                        return Err(self.status_error(resp, "GET", &c.display, None));
                    };
                    let ep = Endpoint {
                        base: base.clone(),
                        display: c.display.clone(),
                        cred_key: c.cred_key.clone(),
                        insecure_tls: c.insecure_tls,
                        challenge,
                    };
                    log::debug!("registry endpoint {} ({:?})", ep.base, ep.challenge);
                    let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
                    map.insert(key.to_string(), ep.clone());
                    return Ok(ep);
                }
                Err(e) => {
                    log::debug!("ping {url}: {e}");
                    last_err = Some(e);
                }
            }
        }
        let err = last_err.unwrap_or_else(|| RegistryError::Unreachable {
            registry: c.display.clone(),
            reason: "no usable URL".into(),
        });
        // TLS failures on an https-only registry usually mean plain HTTP or a private CA: say what to do.
        match err {
            RegistryError::Unreachable { registry, reason } if !c.mirror && c.urls.len() == 1 => {
                let lower = reason.to_lowercase();
                let reason = if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
                    format!("TLS handshake failed ({reason}): if it serves plain HTTP, use --insecure-registry {registry}")
                } else if lower.contains("certificate") {
                    format!(
                        "{reason}: if it uses a self-signed certificate, use --insecure-registry {registry}"
                    )
                } else {
                    reason
                };
                Err(RegistryError::Unreachable { registry, reason })
            }
            other => Err(other),
        }
    }

    /// Send `req` to `ep` with authentication, retries and redirects. Returns the final response whatever
    /// its status, except that 401/403 after authenticating become [`RegistryError::Denied`].
    pub fn send(&self, ep: &Endpoint, req: &Req) -> Result<Response, RegistryError> {
        let mut challenge = ep.challenge.clone();
        let mut scopes = req.scopes.clone();
        let mut force_fresh = false;
        for _round in 0..3 {
            let (auth, fresh) = self.authorization(ep, challenge.as_ref(), &scopes, req, force_fresh)?;
            let resp = self.send_following(ep, req, auth.as_deref())?;
            let status = resp.status();
            if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
                return Ok(resp);
            }
            let new_challenge = challenge_of(&resp);
            let challenge_error = match &new_challenge {
                Some(Challenge::Bearer { error: Some(e), .. }) => e.replace('_', " "),
                _ => "authentication required".into(),
            };
            // HEAD responses carry no body: fall back to what the challenge says.
            let detail = error_message(resp).unwrap_or(challenge_error);
            if status == StatusCode::FORBIDDEN {
                return Err(self.denied(ep, req, detail));
            }
            match new_challenge {
                Some(Challenge::Bearer { realm, service, scope, error }) => {
                    let mut widened = false;
                    // The registry names the scopes it wants (space-separated, e.g. on insufficient_scope): ask
                    // for those too.
                    for s in scope.iter().flat_map(|s| s.split_whitespace()) {
                        if !scopes.iter().any(|have| have == s) {
                            scopes.push(s.to_string());
                            widened = true;
                        }
                    }
                    let same_realm =
                        matches!(&challenge, Some(Challenge::Bearer { realm: r, .. }) if *r == realm);
                    if fresh && same_realm && !widened && error.as_deref() != Some("invalid_token") {
                        // A token just issued for exactly this was refused: the account lacks access.
                        return Err(self.denied(ep, req, detail));
                    }
                    challenge = Some(Challenge::Bearer { realm, service, scope: None, error: None });
                    force_fresh = true;
                }
                Some(Challenge::Basic { realm }) => {
                    if auth.is_some() || self.credentials(&ep.cred_key).is_none() {
                        return Err(self.denied(ep, req, detail));
                    }
                    challenge = Some(Challenge::Basic { realm });
                }
                None => return Err(self.denied(ep, req, detail)),
            }
        }
        Err(self.denied(ep, req, "unauthorized".into()))
    }

    /// Access refused: the hint depends on whether credentials were offered.
    fn denied(&self, ep: &Endpoint, req: &Req, detail: String) -> RegistryError {
        let had_creds = self.credentials(&ep.cred_key).is_some();
        let hint = if had_creds {
            format!("wrong credentials for {}, or no access to this repository?", ep.cred_key)
        } else {
            format!("repository does not exist, or needs `rimg login {}`?", req.registry)
        };
        RegistryError::Denied { access: req.access, name: req.name.clone(), detail, hint }
    }

    /// The `Authorization` header for a request under `challenge`, fetching a token if needed.
    fn authorization(
        &self,
        ep: &Endpoint,
        challenge: Option<&Challenge>,
        scopes: &[String],
        req: &Req,
        force_fresh: bool,
    ) -> Result<(Option<String>, bool), RegistryError> {
        match challenge {
            None => Ok((None, false)),
            Some(Challenge::Basic { .. }) => {
                Ok((self.credentials(&ep.cred_key).map(|c| c.basic_header()), false))
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let cache_key = format!("{}|{}|{}", ep.display, realm, service.as_deref().unwrap_or(""));
                let scope_key = scopes.join(" ");
                if !force_fresh {
                    if let Some(t) = self.tokens.get(&cache_key, &scope_key) {
                        return Ok((Some(format!("Bearer {t}")), false));
                    }
                } else {
                    self.tokens.forget(&cache_key, &scope_key);
                }
                let creds = self.credentials(&ep.cred_key);
                let (token, lifetime) =
                    self.fetch_token(ep, realm, service.as_deref(), scopes, creds.as_ref(), Some(req))?;
                self.tokens.put(&cache_key, &scope_key, token.clone(), lifetime);
                Ok((Some(format!("Bearer {token}")), true))
            }
        }
    }

    /// The token exchange: `GET realm?service=…&scope=…` with Basic credentials if any.
    pub fn fetch_token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        creds: Option<&Credentials>,
        req: Option<&Req>,
    ) -> Result<(String, Duration), RegistryError> {
        let terr = |reason: String| RegistryError::Token { realm: realm.to_string(), reason };
        let mut url = Url::parse(realm).map_err(|e| terr(format!("invalid realm URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(terr("realm is not an http(s) URL".into()));
        }
        // The realm is another host: verify its certificate unless it is itself allowed insecure.
        let realm_host = host_port(&url);
        let http = if self.cfg.allows_http(&realm_host) { &self.http_insecure } else { &self.http };
        let identity_token = creds.filter(|c| c.username == IDENTITY_TOKEN_USER);
        let resp = if let Some(c) = identity_token {
            // An identity token (from `docker login` to Docker Hub, ACR, …) is an OAuth2 refresh token.
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", &c.password)
                .append_pair("client_id", "rimg");
            if let Some(s) = service {
                form.append_pair("service", s);
            }
            if !scopes.is_empty() {
                form.append_pair("scope", &scopes.join(" "));
            }
            let form = form.finish();
            self.send_retrying(
                &realm_host,
                || {
                    http.post(url.clone())
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(form.clone())
                },
                self.cfg.max_retries,
            )?
        } else {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scopes {
                    q.append_pair("scope", s);
                }
                if let Some(c) = creds {
                    q.append_pair("account", &c.username);
                }
            }
            self.send_retrying(
                &realm_host,
                || {
                    let b = http.get(url.clone());
                    match creds {
                        Some(c) => b.header(AUTHORIZATION, c.basic_header()),
                        None => b,
                    }
                },
                self.cfg.max_retries,
            )?
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = error_message(resp).unwrap_or_else(|| "unauthorized".into());
            return Err(match req {
                Some(r) => self.denied(ep, r, detail),
                None => terr(detail),
            });
        }
        if !status.is_success() {
            let msg = error_message(resp).map(|m| format!(": {m}")).unwrap_or_default();
            return Err(terr(format!("token server answered {status}{msg}")));
        }
        let body = read_capped(resp, 1 << 20).map_err(|e| terr(format!("reading token: {e}")))?;
        let tr: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| terr(format!("unparsable token response: {e}")))?;
        tr.into_token().ok_or_else(|| terr("token response has no token".into()))
    }

    /// Follow redirects by hand: credentials go only to the endpoint's own origin, never to blob storage.
    fn send_following(
        &self,
        ep: &Endpoint,
        req: &Req,
        auth: Option<&str>,
    ) -> Result<Response, RegistryError> {
        let http = if ep.insecure_tls { &self.http_insecure } else { &self.http };
        let mut url = if req.path.starts_with("http://") || req.path.starts_with("https://") {
            Url::parse(&req.path)
        } else {
            ep.base.join(&req.path)
        }
        .map_err(|e| RegistryError::BadUrl {
            registry: ep.display.clone(),
            url: req.path.clone(),
            reason: e.to_string(),
        })?;
        let origin = ep.base.origin();
        let mut send_auth = url.origin() == origin;
        let mut method = req.method.clone();
        let mut body = req.body.clone();
        for _ in 0..=MAX_REDIRECTS {
            let display = host_port(&url);
            let resp = self.send_retrying(
                &display,
                || {
                    let mut b = http.request(method.clone(), url.clone()).headers(req.headers.clone());
                    if let (true, Some(a)) = (send_auth, auth) {
                        b = b.header(AUTHORIZATION, a);
                    }
                    if let Some(body) = &body {
                        b = b.body(body.clone());
                    }
                    b
                },
                self.cfg.max_retries,
            )?;
            if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            let Some(loc) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) else {
                return Ok(resp);
            };
            let next = url.join(loc).map_err(|e| RegistryError::BadUrl {
                registry: ep.display.clone(),
                url: loc.to_string(),
                reason: e.to_string(),
            })?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(RegistryError::BadUrl {
                    registry: ep.display.clone(),
                    url: next.to_string(),
                    reason: "redirect to a non-http URL".into(),
                });
            }
            log::debug!("{} {} redirected to {}", method, url, next);
            // Once the request has left the registry's origin, credentials are never sent again.
            send_auth = send_auth && next.origin() == origin;
            if resp.status() == StatusCode::SEE_OTHER && method != Method::HEAD {
                method = Method::GET;
                body = None;
            }
            url = next;
        }
        Err(RegistryError::TooManyRedirects { registry: ep.display.clone(), url: req.path.clone() })
    }

    /// Send with retries: connection failures and 5xx back off exponentially, 429 waits for `Retry-After`.
    /// After the last attempt the final response is returned (whatever its status) or the transport error.
    pub fn send_retrying(
        &self,
        display: &str,
        build: impl Fn() -> reqwest::blocking::RequestBuilder,
        retries: u32,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        loop {
            let result = build().send();
            let wait = match &result {
                Err(e) if e.is_builder() => None,
                Err(e) => {
                    let reason = transport_reason(e);
                    log::debug!("request to {display} failed: {reason}");
                    // A name that does not resolve will not resolve in a second either; a refused connection
                    // gets one more chance (a registry restarting); resets and timeouts get all retries.
                    let dns = reason.contains("lookup address") || reason.contains("dns error");
                    let refused = reason == "connection refused";
                    match (dns, refused) {
                        (true, _) => None,
                        (_, true) if attempt >= 1 => None,
                        _ => Some(self.backoff(attempt)),
                    }
                }
                // 429, and 5xx (a 503 may also carry Retry-After): wait as told (capped), else back off.
                Ok(r)
                    if r.status() == StatusCode::TOO_MANY_REQUESTS
                        || (r.status().is_server_error() && r.status() != StatusCode::NOT_IMPLEMENTED) =>
                {
                    let hinted = r
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    Some(
                        hinted
                            .map(|d| d.min(self.cfg.max_retry_delay))
                            .unwrap_or_else(|| self.backoff(attempt)),
                    )
                }
                Ok(_) => None,
            };
            match (wait, result) {
                (Some(wait), res) if attempt < retries => {
                    drop(res);
                    log::info!("registry {display}: retrying in {:.1}s", wait.as_secs_f64());
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                (_, Ok(r)) => return Ok(r),
                (_, Err(e)) => {
                    return Err(RegistryError::Unreachable {
                        registry: display.to_string(),
                        reason: transport_reason(&e),
                    })
                }
            }
        }
    }

    /// Exponential backoff with jitter, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        use rand::Rng as _;
        let base = self.cfg.retry_base_delay.saturating_mul(1u32 << attempt.min(16));
        let capped = base.min(self.cfg.max_retry_delay);
        let jitter = rand::thread_rng().gen_range(0..=capped.as_millis() as u64 / 4);
        capped + Duration::from_millis(jitter)
    }

    /// Turn an unexpected response into an error carrying the registry's own message.
    pub fn status_error(
        &self,
        resp: Response,
        method: &str,
        display: &str,
        _req: Option<&Req>,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        let url = resp.url().to_string();
        let message = error_message(resp).map(|m| format!(": {m}")).unwrap_or_default();
        RegistryError::Status {
            registry: display.to_string(),
            method: method.to_string(),
            url,
            status,
            message,
        }
    }
}

/// `host[:port]` of a URL, for messages and credential keys.
pub(crate) fn host_port(u: &Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// The challenge of a 401 response.
pub(crate) fn challenge_of(resp: &Response) -> Option<Challenge> {
    pick_challenge(resp.headers().get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()))
}

/// Read a body of at most `max` bytes; larger bodies are an error (never buffered past the limit).
pub(crate) fn read_capped(resp: Response, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    if resp.content_length().is_some_and(|l| l > max) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {max} bytes"),
        ));
    }
    let mut out = Vec::new();
    resp.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(out)
}

/// The registry's error text from a distribution-spec error body (`{"errors":[{"code","message"}]}`), a
/// token server's `{"details": …}`, or a short plain-text body.
pub(crate) fn error_message(resp: Response) -> Option<String> {
    let body = read_capped(resp, MAX_ERROR_BODY).ok()?;
    parse_error_body(&body).map(|(code, msg)| match code {
        Some(c) if !msg.to_ascii_lowercase().contains(&c.to_ascii_lowercase().replace('_', " ")) => {
            format!("{}: {msg}", c.to_ascii_lowercase().replace('_', " "))
        }
        _ => msg,
    })
}

/// (error code, message) from a registry error body.
pub(crate) fn parse_error_body(body: &[u8]) -> Option<(Option<String>, String)> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(first) = v.get("errors").and_then(|e| e.as_array()).and_then(|a| a.first()) {
            let code = first.get("code").and_then(|c| c.as_str()).map(String::from);
            let msg = first.get("message").and_then(|m| m.as_str()).unwrap_or("").to_string();
            let msg =
                if msg.is_empty() { code.clone().unwrap_or_default().to_ascii_lowercase() } else { msg };
            return Some((code, msg));
        }
        for k in ["details", "detail", "error_description", "error", "message"] {
            if let Some(m) = v.get(k).and_then(|m| m.as_str()) {
                return Some((None, m.to_string()));
            }
        }
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text.len() > 200 || text.starts_with('<') {
        return None;
    }
    Some((None, text.replace('\n', " ")))
}

/// `Retry-After`: delay in seconds, or an HTTP date.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = parse_http_date(v)?;
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form servers send today.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, time, "GMT"] = parts.as_slice() else { return None };
    let day: i64 = day.parse().ok()?;
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let mon = months.iter().position(|m| m == mon)? as i64 + 1;
    let year: i64 = year.parse().ok()?;
    let t: Vec<i64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [h, m, sec] = t.as_slice() else { return None };
    let secs = crate::store::images::unix_seconds(year, mon, day, *h, *m, *sec);
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Header map from pairs; values are compile-time constants or validated strings.
pub(crate) fn headers(pairs: &[(reqwest::header::HeaderName, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k.clone(), v);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784111777))
        );
        let future = parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT").unwrap();
        assert!(future > Duration::from_secs(3600));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn error_bodies() {
        let b = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(parse_error_body(b), Some((Some("MANIFEST_UNKNOWN".into()), "manifest unknown".into())));
        assert_eq!(
            parse_error_body(br#"{"details":"incorrect username or password"}"#).unwrap().1,
            "incorrect username or password"
        );
        assert_eq!(parse_error_body(b"<html>"), None);
        assert_eq!(parse_error_body(b"plain\ntext").unwrap().1, "plain text");
    }
}
