//! A small OAuth2-style token server for testing the registry Bearer flow against the real registry:
//! distribution's `auth: token` verifies the JWTs it issues (RS256, signed with a throw-away key whose
//! self-signed certificate is the registry's `rootcertbundle`). Signing shells out to the openssl CLI, so
//! the tests need no crypto crate of their own.
//!
//! Serves `GET /token?service=..&scope=..` (Basic auth, as docker and skopeo do) and `POST /token` with an
//! OAuth2 password-grant form. Valid credentials get every requested action; anonymous requests get `pull`
//! only when allowed; wrong credentials get 401. Every request is recorded for assertions.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// The `service` and `issuer` the registry is configured with and the tokens carry.
pub const TOKEN_SERVICE: &str = "rimg-test-registry";
/// Issuer name written into tokens and trusted by the registry config.
pub const TOKEN_ISSUER: &str = "rimg-test-token-issuer";

/// One request the token server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The user from Basic auth or the form, if any.
    pub account: Option<String>,
    /// Requested scopes, e.g. `repository:library/busybox:pull`.
    pub scopes: Vec<String>,
    /// The `service` parameter.
    pub service: Option<String>,
    /// HTTP status answered (200 or 401).
    pub status: u16,
}

struct Shared {
    user: String,
    pass: String,
    allow_anonymous: bool,
    key: PathBuf,
    cert_der_b64: String,
    requests: Mutex<Vec<TokenRequest>>,
    stop: AtomicBool,
}

/// A running token server; stops on Drop. Keep it alive longer than the registry using it (declare it
/// first).
pub struct TokenServer {
    /// `127.0.0.1:PORT` of the token endpoint.
    pub addr: String,
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Starts a token server that accepts `user`/`pass`; anonymous requests are refused unless
    /// `allow_anonymous_pull`, in which case they get pull access.
    pub fn start(user: &str, pass: &str, allow_anonymous_pull: bool) -> TokenServer {
        let dir =
            tempfile::Builder::new().prefix("rimg-test-token-").tempdir().expect("temp dir for token server");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        super::run_tool(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=rimg-test-token-issuer",
                "-keyout",
                key.to_str().expect("utf-8 temp path"),
                "-out",
                cert.to_str().expect("utf-8 temp path"),
            ],
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("run openssl x509");
        assert!(der.status.success(), "openssl x509 -outform DER failed");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let addr = listener.local_addr().expect("token server addr").to_string();
        let shared = Arc::new(Shared {
            user: user.to_owned(),
            pass: pass.to_owned(),
            allow_anonymous: allow_anonymous_pull,
            key,
            cert_der_b64: STANDARD.encode(&der.stdout),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let s = Arc::clone(&s);
                    std::thread::spawn(move || handle(&s, conn));
                }
            }
        });
        TokenServer { addr, shared, dir, thread: Some(thread) }
    }

    /// The realm URL for `WWW-Authenticate` (`http://ADDR/token`).
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate the registry must trust (`rootcertbundle`).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The `auth:` section of a registry config that trusts this server.
    pub fn registry_auth_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    \
             rootcertbundle: {}\n",
            self.realm(),
            self.cert_path().display()
        )
    }

    /// The credentials it accepts, for pushing fixtures through it.
    pub fn creds(&self) -> (String, String) {
        (self.shared.user.clone(), self.shared.pass.clone())
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wake the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(s: &Shared, conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut params = parse_form(query);
    if method == "POST" {
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len.min(1 << 16)];
        if reader.read_exact(&mut body).is_ok() {
            params.extend(parse_form(&String::from_utf8_lossy(&body)));
        }
    }
    let mut conn = conn;
    if path != "/token" {
        respond(&mut conn, 404, "{\"errors\":[{\"code\":\"NOT_FOUND\"}]}");
        return;
    }
    let scopes: Vec<String> = params.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
    let scopes: Vec<String> = scopes.iter().flat_map(|s| s.split(' ').map(str::to_owned)).collect();
    let service = params.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone());
    let basic = headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|up| up.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
    let form = params
        .iter()
        .find(|(k, _)| k == "username")
        .map(|(_, u)| u.clone())
        .zip(params.iter().find(|(k, _)| k == "password").map(|(_, p)| p.clone()));
    let presented = basic.or(form);
    let (status, account, full_access) = match &presented {
        Some((u, p)) if *u == s.user && *p == s.pass => (200, Some(u.clone()), true),
        Some((u, _)) => (401, Some(u.clone()), false),
        None if s.allow_anonymous => (200, None, false),
        None => (401, None, false),
    };
    if let Ok(mut r) = s.requests.lock() {
        r.push(TokenRequest {
            method,
            account: account.clone(),
            scopes: scopes.clone(),
            service: service.clone(),
            status,
        });
    }
    if status != 200 {
        respond(
            &mut conn,
            401,
            "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"invalid username or password\"}]}",
        );
        return;
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|sc| {
            // type:name:actions, where name may itself contain ':' (host:port/...)
            let (ty, rest) = sc.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<&str> = actions.split(',').filter(|a| full_access || *a == "pull").collect();
            Some(serde_json::json!({"type": ty, "name": name, "actions": actions}))
        })
        .collect();
    match sign_token(s, account.as_deref().unwrap_or(""), service.as_deref(), &access) {
        Some(token) => {
            let body = serde_json::json!({
                "token": token, "access_token": token, "expires_in": 300,
                "issued_at": "2024-06-01T00:00:00Z"
            });
            respond(&mut conn, 200, &body.to_string());
        }
        None => respond(&mut conn, 500, "{\"errors\":[{\"code\":\"SIGNING_FAILED\"}]}"),
    }
}

fn sign_token(s: &Shared, sub: &str, service: Option<&str>, access: &[serde_json::Value]) -> Option<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [s.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": sub, "aud": service.unwrap_or(TOKEN_SERVICE),
        "exp": now + 300, "nbf": now.saturating_sub(10), "iat": now,
        "jti": format!("{now}-{}", rand::random::<u64>()), "access": access
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = openssl_sign(&s.key, signing_input.as_bytes())?;
    Some(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// RSASSA-PKCS1-v1_5 with SHA-256: exactly the JWS RS256 signature bytes.
fn openssl_sign(key: &Path, data: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(data).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout)
}

fn respond(conn: &mut TcpStream, status: u16, body: &str) {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
}

fn parse_form(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
