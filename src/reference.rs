//! Docker-compatible image references.
//!
//! Users type `centos`, `alpine:3.20`, `localhost:5000/team/app@sha256:…`; registries, the store and
//! `RepoTags` need the one normalized form docker would use (`docker.io/library/centos:latest`). Parsing
//! follows docker's `reference.ParseNormalizedNamed` grammar, so the same strings are accepted and refused
//! with the same rules (lowercase repositories, 128-character tags, 255-character names, no bare image IDs).

use crate::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// The registry docker assumes when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag docker assumes when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// docker's limit on the length of `registry/repository`.
const MAX_NAME_LEN: usize = 255;
/// docker's limit on the length of a tag.
const MAX_TAG_LEN: usize = 128;

/// A normalized image reference: where the image lives and which version of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port, as docker normalizes it (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// Repository path within the registry (`library/centos`).
    pub repository: String,
    /// Tag; `Some("latest")` when the user gave neither tag nor digest, as docker does.
    pub tag: Option<String>,
    /// Digest pinning the exact manifest, if given.
    pub digest: Option<Digest>,
}

/// Why a string is not a valid image reference; each message names the offending input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Nothing to parse.
    #[error("invalid reference format: empty reference")]
    Empty,
    /// docker refuses uppercase repository names rather than lowercasing them silently.
    #[error("invalid reference format: repository name must be lowercase: {0:?}")]
    Uppercase(String),
    /// The string does not follow the reference grammar.
    #[error("invalid reference format: {0:?}")]
    Format(String),
    /// `registry/repository` longer than docker allows.
    #[error(
        "invalid reference format: repository name must not be more than {MAX_NAME_LEN} characters: {0:?}"
    )]
    NameTooLong(String),
    /// Tag with characters outside `[A-Za-z0-9_.-]`, a leading `.`/`-`, or too long.
    #[error("invalid reference format: invalid tag {0:?} (at most {MAX_TAG_LEN} of [A-Za-z0-9_.-], not starting with . or -)")]
    Tag(String),
    /// Digest part is not `sha256:` + 64 lowercase hex digits.
    #[error("invalid reference format: invalid digest {0:?} (expected sha256: followed by 64 lowercase hex digits)")]
    Digest(String),
    /// A bare 64-hex string is an image ID, not a repository name (docker refuses it too).
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexId(String),
}

impl Reference {
    /// Parse and normalize like docker: fill in `docker.io`, `library/` and `latest` where docker would.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::HexId(s.to_string()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = d.parse::<Digest>().map_err(|_| ReferenceError::Digest(d.to_string()))?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        // The tag is after the last ':' that follows the last '/' (a ':' before that is a port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(ReferenceError::Tag(tag.to_string()));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::Format(s.to_string()));
        }
        let (registry, repository) = split_registry(name);
        if registry.is_empty() || !valid_domain(registry) {
            return Err(ReferenceError::Format(s.to_string()));
        }
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(s.to_string()));
        }
        if repository.is_empty() || !repository.split('/').all(valid_path_component) {
            return Err(ReferenceError::Format(s.to_string()));
        }
        let registry = if registry == "index.docker.io" { DEFAULT_REGISTRY } else { registry };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong(s.to_string()));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (t, _) => t,
        };
        Ok(Reference { registry: registry.to_string(), repository, tag, digest })
    }

    /// `registry/repository`, the full name without tag or digest (`docker.io/library/centos`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// docker's short name: `centos`, `user/app`, `localhost:5000/foo`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            let short = match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short,
                _ => &self.repository,
            };
            // `docker.io/a.b/c` stays qualified: the short `a.b/c` would name the registry `a.b` (found by
            // the `reference` fuzz target).
            // Likewise `docker.io/docker.io/x`: only a short form that parses back to itself is used.
            if split_registry(short) == (DEFAULT_REGISTRY, short) {
                return short.to_string();
            }
        }
        self.name()
    }

    /// docker's short form with tag and digest: `centos:latest`, `localhost:5000/foo:1`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        push_tag_digest(&mut s, self.tag.as_deref(), self.digest.as_ref());
        s
    }

    /// The tag, or `latest` when the reference has none (pinned by digest only).
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }

    /// What to ask the registry for: the digest when pinned (immutable), else the tag.
    pub fn manifest_ref(&self) -> String {
        match &self.digest {
            Some(d) => d.to_string(),
            None => self.tag_or_latest().to_string(),
        }
    }

    /// The same repository with `tag` and no digest (e.g. to record a pulled image under its tag).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::Tag(tag.to_string()));
        }
        Ok(Reference { tag: Some(tag.to_string()), digest: None, ..self.clone() })
    }

    /// The same repository pinned to `digest`, keeping no tag (what `RepoDigests` lists).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { tag: None, digest: Some(digest), ..self.clone() }
    }

    /// The same repository with neither tag nor digest, for scope strings and repository-wide lookups.
    pub fn repo_only(&self) -> Reference {
        Reference { tag: None, digest: None, ..self.clone() }
    }
}

fn push_tag_digest(s: &mut String, tag: Option<&str>, digest: Option<&Digest>) {
    if let Some(t) = tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = digest {
        s.push('@');
        s.push_str(&d.to_string());
    }
}

impl fmt::Display for Reference {
    /// The full normalized form: `docker.io/library/centos:latest`, with `@sha256:…` if pinned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        push_tag_digest(&mut s, self.tag.as_deref(), self.digest.as_ref());
        f.write_str(&s)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// docker's `splitDockerDomain`: the first component is a registry only if it looks like a host
/// (has a `.` or `:`, or is `localhost`, or has uppercase letters, which repositories cannot).
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// Host (DNS labels or bracketed IPv6) with an optional numeric port.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    p => match p.strip_prefix(':') {
                        Some(p) => ("", Some(p)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.is_empty() {
        return d.starts_with('[');
    }
    host.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            ("centos", "docker.io/library/centos:latest", "centos:latest"),
            ("centos:7", "docker.io/library/centos:7", "centos:7"),
            ("library/centos", "docker.io/library/centos:latest", "centos:latest"),
            ("docker.io/centos", "docker.io/library/centos:latest", "centos:latest"),
            ("index.docker.io/library/centos:8", "docker.io/library/centos:8", "centos:8"),
            ("user/app:v1.2_3-x", "docker.io/user/app:v1.2_3-x", "user/app:v1.2_3-x"),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            ("localhost:5000/foo:1", "localhost:5000/foo:1", "localhost:5000/foo:1"),
            ("127.0.0.1:5000/ns/name:tag", "127.0.0.1:5000/ns/name:tag", "127.0.0.1:5000/ns/name:tag"),
            ("quay.io/a/b/c", "quay.io/a/b/c:latest", "quay.io/a/b/c:latest"),
            ("[::1]:5000/img", "[::1]:5000/img:latest", "[::1]:5000/img:latest"),
            ("a__b/c.d/e--f", "docker.io/a__b/c.d/e--f:latest", "a__b/c.d/e--f:latest"),
        ];
        for (input, full, short) in cases {
            let r = p(input);
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.familiar(), short, "{input}");
        }
    }

    #[test]
    fn digests() {
        let r = p(&format!("centos@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().map(|d| d.to_string()).as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/centos@{D}"));
        assert_eq!(r.familiar(), format!("centos@{D}"));
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.tag_or_latest(), "latest");

        let r = p(&format!("localhost:5000/x:1@{D}"));
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.to_string(), format!("localhost:5000/x:1@{D}"));
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.with_tag("2").unwrap().to_string(), "localhost:5000/x:2");
        assert_eq!(r.repo_only().name(), "localhost:5000/x");
    }

    #[test]
    fn refuses_invalid() {
        use ReferenceError::*;
        let long = format!("a/{}", "b".repeat(260));
        type Check = fn(&ReferenceError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            ("".into(), |e| matches!(e, Empty)),
            ("Centos".into(), |e| matches!(e, Uppercase(_))),
            ("docker.io/Library/centos".into(), |e| matches!(e, Uppercase(_))),
            ("centos:".into(), |e| matches!(e, Tag(_))),
            ("centos:-x".into(), |e| matches!(e, Tag(_))),
            (format!("centos:{}", "x".repeat(129)), |e| matches!(e, Tag(_))),
            ("centos:a/b".into(), |e| matches!(e, Format(_) | Tag(_))),
            ("centos@sha256:abc".into(), |e| matches!(e, Digest(_))),
            ("centos@md5:abc".into(), |e| matches!(e, Digest(_))),
            (long, |e| matches!(e, NameTooLong(_))),
            ("a//b".into(), |e| matches!(e, Format(_))),
            ("/a".into(), |e| matches!(e, Format(_))),
            ("a/".into(), |e| matches!(e, Format(_))),
            ("-a".into(), |e| matches!(e, Format(_))),
            ("a..b".into(), |e| matches!(e, Format(_))),
            ("host:99999999/a".into(), |e| matches!(e, Format(_))),
            ("host:/a".into(), |e| matches!(e, Format(_))),
            (":tag".into(), |e| matches!(e, Format(_))),
            ("a b".into(), |e| matches!(e, Format(_))),
            ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(), |e| {
                matches!(e, HexId(_))
            }),
        ];
        for (input, want) in cases {
            match Reference::parse(&input) {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => {
                    assert!(want(&e), "{input:?}: unexpected error {e}");
                    assert!(!e.to_string().contains('\n'));
                }
            }
        }
    }

    proptest::proptest! {
        /// Normalizing is idempotent: the printed form parses back to the same reference, and so does the
        /// familiar form.
        #[test]
        fn display_round_trips(
            host in proptest::option::of("[a-z][a-z0-9]{0,8}(\\.[a-z]{2,5})(:[0-9]{1,5})?"),
            path in "[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?(/[a-z0-9]{1,6}){0,2}",
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        ) {
            let mut s = String::new();
            if let Some(h) = &host {
                s.push_str(h);
                s.push('/');
            }
            s.push_str(&path);
            if let Some(t) = &tag {
                s.push(':');
                s.push_str(t);
            }
            let r = Reference::parse(&s).unwrap();
            proptest::prop_assert_eq!(&Reference::parse(&r.to_string()).unwrap(), &r);
            proptest::prop_assert_eq!(&Reference::parse(&r.familiar()).unwrap(), &r);
        }

        /// Arbitrary input never panics, and what parses prints without newlines.
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            if let Ok(r) = Reference::parse(&s) {
                proptest::prop_assert!(!r.to_string().contains('\n'));
            }
        }
    }

    #[test]
    fn uppercase_registry_host_is_a_registry() {
        // docker treats an uppercase first component as a host, since repositories cannot be uppercase.
        let r = p("Registry.Example/x");
        assert_eq!(r.registry, "Registry.Example");
        assert_eq!(r.repository, "x");
    }
}
