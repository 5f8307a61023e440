//! Registry authentication: parsing `WWW-Authenticate` challenges (RFC 7235 syntax, as the distribution
//! spec uses it), the Bearer token exchange, and a per-registry, per-scope token cache so three parallel layer
//! downloads share one token instead of each fetching their own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Token auth: fetch a token from `realm` for `service` and `scope`, then send `Authorization: Bearer`.
    Bearer {
        /// Token server URL.
        realm: String,
        /// Service name the token is for (sent back as `service=`).
        service: Option<String>,
        /// Scope the registry asked for (e.g. when a token had `insufficient_scope`).
        scope: Option<String>,
        /// Error code the registry attached (`invalid_token`, `insufficient_scope`).
        error: Option<String>,
    },
    /// HTTP Basic: send the user's credentials with every request.
    Basic {
        /// Human-readable realm.
        realm: Option<String>,
    },
}

/// Parse every challenge in one header value (several may be comma-separated). Unknown schemes are skipped;
/// a malformed header yields what could be understood (possibly nothing).
pub fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut p = Parser { s: header.as_bytes(), i: 0 };
    loop {
        p.skip(|c| c == b' ' || c == b'\t' || c == b',');
        let scheme = p.token();
        if scheme.is_empty() {
            break;
        }
        let mut params: HashMap<String, String> = HashMap::new();
        loop {
            p.skip(|c| c == b' ' || c == b'\t' || c == b',');
            let save = p.i;
            let key = p.token();
            p.skip(|c| c == b' ' || c == b'\t');
            if key.is_empty() || !p.eat(b'=') {
                // Either the end, or the start of the next challenge's scheme.
                p.i = save;
                break;
            }
            p.skip(|c| c == b' ' || c == b'\t');
            let value = if p.peek() == Some(b'"') { p.quoted() } else { p.token() };
            params.insert(key.to_ascii_lowercase(), value);
        }
        let mut take = |k: &str| params.remove(k);
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                if let Some(realm) = take("realm") {
                    out.push(Challenge::Bearer {
                        realm,
                        service: take("service"),
                        scope: take("scope"),
                        error: take("error"),
                    });
                }
            }
            "basic" => out.push(Challenge::Basic { realm: take("realm") }),
            _ => {}
        }
        if p.i >= p.s.len() {
            break;
        }
    }
    out
}

/// Pick the challenge rimg answers from all `WWW-Authenticate` values: Bearer over Basic, as docker does.
pub fn pick_challenge<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    let all: Vec<Challenge> = values.flat_map(parse_www_authenticate).collect();
    all.iter().find(|c| matches!(c, Challenge::Bearer { .. })).or_else(|| all.first()).cloned()
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    /// RFC 7230 `token` (plus `/` so token68-ish values such as unquoted realms survive).
    fn token(&mut self) -> String {
        let start = self.i;
        self.skip(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c));
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    fn quoted(&mut self) -> String {
        let mut out = Vec::new();
        self.i += 1; // opening quote
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The username docker's credential helpers and config use to mark the secret as an identity token (an
/// OAuth2 refresh token) rather than a password.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// Username and password for one registry; with username [`IDENTITY_TOKEN_USER`] the password is an
/// identity token, exchanged at the token server by OAuth2 `refresh_token` grant.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Account name.
    pub username: String,
    /// Password or personal access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, not even in debug logs.
        write!(f, "Credentials({:?}, ****)", self.username)
    }
}

impl Credentials {
    /// `Authorization` header value for HTTP Basic.
    pub fn basic_header(&self) -> String {
        use base64::Engine as _;
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// The JSON a token server answers with; docker's servers use `token`, OAuth2-style ones `access_token`.
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and how long to trust it (the spec's default lifetime is 60 s).
    pub fn into_token(self) -> Option<(String, Duration)> {
        let tok = self.token.filter(|t| !t.is_empty()).or(self.access_token.filter(|t| !t.is_empty()))?;
        let secs = self.expires_in.unwrap_or(60).max(1);
        Some((tok, Duration::from_secs(secs)))
    }
}

/// Cached bearer tokens keyed by (registry endpoint, scope).
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl TokenCache {
    /// A still-valid token for `endpoint` and `scope`.
    pub fn get(&self, endpoint: &str, scope: &str) -> Option<String> {
        let map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(endpoint.to_string(), scope.to_string()))
            .filter(|(_, exp)| Instant::now() < *exp)
            .map(|(t, _)| t.clone())
    }

    /// Remember a token; it is considered expired a little before the server says, to avoid racing it.
    pub fn put(&self, endpoint: &str, scope: &str, token: String, lifetime: Duration) {
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        let exp = Instant::now() + lifetime.saturating_sub(margin);
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.insert((endpoint.to_string(), scope.to_string()), (token, exp));
    }

    /// Forget a token the registry rejected.
    pub fn forget(&self, endpoint: &str, scope: &str) {
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(endpoint.to_string(), scope.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#;
        assert_eq!(
            parse_www_authenticate(h),
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
                error: None,
            }]
        );
        let h = r#"bearer  realm = "http://127.0.0.1:1/t\"x" , error="insufficient_scope""#;
        assert_eq!(
            parse_www_authenticate(h),
            vec![Challenge::Bearer {
                realm: "http://127.0.0.1:1/t\"x".into(),
                service: None,
                scope: None,
                error: Some("insufficient_scope".into()),
            }]
        );
    }

    #[test]
    fn parses_basic_and_several() {
        assert_eq!(
            parse_www_authenticate(r#"Basic realm="Registry Realm""#),
            vec![Challenge::Basic { realm: Some("Registry Realm".into()) }]
        );
        assert_eq!(parse_www_authenticate("Basic"), vec![Challenge::Basic { realm: None }]);
        let h = r#"Basic realm="r", Negotiate abc, Bearer realm="https://a/t",service="s""#;
        let all = parse_www_authenticate(h);
        assert_eq!(all.len(), 2, "{all:?}");
        let picked = pick_challenge([h].into_iter()).unwrap();
        assert!(matches!(picked, Challenge::Bearer { ref realm, .. } if realm == "https://a/t"));
        // Bearer without a realm is unusable and skipped; garbage yields nothing.
        assert!(parse_www_authenticate("Bearer service=\"x\"").is_empty());
        assert!(parse_www_authenticate("\"\"==,,").is_empty());
        assert!(parse_www_authenticate("").is_empty());
    }

    #[test]
    fn token_response_and_cache() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"a","expires_in":300}"#).unwrap();
        assert_eq!(t.into_token(), Some(("a".into(), Duration::from_secs(300))));
        let t: TokenResponse = serde_json::from_str(r#"{"token":"b","access_token":"a"}"#).unwrap();
        assert_eq!(t.into_token(), Some(("b".into(), Duration::from_secs(60))));
        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert_eq!(t.into_token(), None);
        let c = TokenCache::default();
        c.put("h", "s", "tok".into(), Duration::from_secs(60));
        assert_eq!(c.get("h", "s").as_deref(), Some("tok"));
        assert_eq!(c.get("h", "other"), None);
        c.forget("h", "s");
        assert_eq!(c.get("h", "s"), None);
        assert!(Credentials { username: "u".into(), password: "secret".into() }
            .basic_header()
            .starts_with("Basic "));
        assert!(!format!("{:?}", Credentials { username: "u".into(), password: "secret".into() })
            .contains("secret"));
    }
}
