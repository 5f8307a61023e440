//! `rimg login` / `rimg logout` end to end: the binary against a real htpasswd-protected registry, writing
//! docker's config.json in a private `$DOCKER_CONFIG`.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `docker-registry serve` with htpasswd auth on a free loopback port; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(user: &str, pass: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let out = Command::new("htpasswd").args(["-Bbn", user, pass]).output().unwrap();
        assert!(out.status.success());
        std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: x\nauth:\n  htpasswd:\n    realm: r\n    path: {d}/htpasswd\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reg = Registry { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rimg(docker_config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rimg"))
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env("RIMG_CONFIG", docker_config.join("no-rimg-config.json"))
        .env_remove("RIMG_REGISTRY_MIRRORS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // a command that does not read its stdin (or fails first) may exit before this write
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing the password: {e}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn login_verifies_then_stores_and_logout_removes() {
    let reg = Registry::start("alice", "wonderland");
    let host = format!("127.0.0.1:{}", reg.port);
    let dc = tempfile::tempdir().unwrap();
    std::fs::write(dc.path().join("no-rimg-config.json"), "{}").unwrap();
    // An existing config with unrelated settings must survive.
    std::fs::write(
        dc.path().join("config.json"),
        r#"{"detachKeys":"ctrl-x","auths":{"other:1":{"auth":"YTpi"}}}"#,
    )
    .unwrap();
    let config = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dc.path().join("config.json")).unwrap()).unwrap()
    };

    let out = rimg(dc.path(), &["login", "-u", "alice", "--password-stdin", &host], "nope\n");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("login to {host} failed")), "{err}");
    assert!(config()["auths"].get(&host).is_none(), "failed login must store nothing");

    let out = rimg(dc.path(), &["login", "-u", "alice", "--password-stdin", &host], "wonderland\n");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Login Succeeded");
    let cfg = config();
    assert_eq!(cfg["auths"][&host]["auth"], "YWxpY2U6d29uZGVybGFuZA=="); // base64("alice:wonderland")
    assert_eq!(cfg["detachKeys"], "ctrl-x");
    assert_eq!(cfg["auths"]["other:1"]["auth"], "YTpi");

    // Stored credentials are reused without prompting.
    let out = rimg(dc.path(), &["login", &host], "");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    // --password-stdin needs a username; interactive login needs a terminal.
    let out = rimg(dc.path(), &["login", "--password-stdin", &host], "x\n");
    assert_eq!(out.status.code(), Some(1));

    let out = rimg(dc.path(), &["logout", &host], "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("Removing login credentials for {host}"));
    assert!(config()["auths"].get(&host).is_none());
    assert_eq!(config()["auths"]["other:1"]["auth"], "YTpi");
    let out = rimg(dc.path(), &["logout", &host], "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("Not logged in to {host}"));
    let out = rimg(dc.path(), &["login", &host], "");
    assert_eq!(out.status.code(), Some(1), "no terminal, no stored credentials: must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("non TTY"));
}
