//! Registry errors: each prints as one line a user can act on (which registry, which image, what went wrong),
//! because they end up verbatim in `rimg pull`'s output.

use crate::digest::Digest;

/// What the client was trying to do when access was refused; docker words the error after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading manifests and blobs.
    Pull,
    /// Uploading blobs and manifests.
    Push,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Pull => "pull",
            Access::Push => "push",
        })
    }
}

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry (or its token server) refused the credentials, or there were none and it wants some.
    #[error("{access} access denied for {name}: {detail} ({hint})")]
    Denied { access: Access, name: String, detail: String, hint: String },
    /// `rimg login` could not authenticate with the given credentials.
    #[error("login to {registry} failed: {detail}")]
    LoginFailed { registry: String, detail: String },
    /// The tag or digest does not exist in the repository.
    #[error("manifest unknown: {reference}")]
    ManifestUnknown { reference: String },
    /// The repository does not exist.
    #[error("repository unknown: {name}")]
    NameUnknown { name: String },
    /// A blob the manifest names is missing from the registry.
    #[error("blob unknown: {name}@{digest}")]
    BlobUnknown { name: String, digest: Digest },
    /// Could not connect, or the connection failed before a response arrived.
    #[error("registry {registry} unreachable: {reason}")]
    Unreachable { registry: String, reason: String },
    /// The connection stalled or dropped while reading a response.
    #[error("registry {registry}: {what}: {reason}")]
    Transfer { registry: String, what: String, reason: String },
    /// Any other unexpected HTTP status.
    #[error("registry {registry}: {method} {url}: {status}{message}")]
    Status { registry: String, method: String, url: String, status: u16, message: String },
    /// Content did not hash to the digest it was requested or announced by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: Digest, actual: Digest },
    /// Manifest or config larger than any sane one; refused before buffering it.
    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge { what: String, limit: u64 },
    /// A manifest whose declared type, served type and structure disagree, or that is not valid JSON.
    #[error("invalid manifest for {reference}: {reason}")]
    InvalidManifest { reference: String, reason: String },
    /// No entry of an image index matches the requested platform.
    #[error("no matching manifest for {platform} in the manifest list entries of {reference} (available: {available})")]
    NoMatchingPlatform { reference: String, platform: String, available: String },
    /// A single-platform image whose config names another platform than the one asked for (docker's
    /// wording). Raised by callers that check the config with [`super::Platform::accepts`].
    #[error("image with reference {reference} was found but does not match the specified platform: wanted {wanted}, actual: {actual}")]
    PlatformMismatch { reference: String, wanted: String, actual: String },
    /// The registry kept redirecting.
    #[error("registry {registry}: too many redirects fetching {url}")]
    TooManyRedirects { registry: String, url: String },
    /// The token server's answer could not be used.
    #[error("authentication with {realm} failed: {reason}")]
    Token { realm: String, reason: String },
    /// A redirect or realm URL that cannot be followed.
    #[error("registry {registry}: invalid URL {url:?}: {reason}")]
    BadUrl { registry: String, url: String, reason: String },
    /// Stored credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] super::credentials::CredentialsError),
    /// Registry configuration is invalid.
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    /// The HTTP client could not be built.
    #[error("cannot initialise the HTTP client: {0}")]
    Client(String),
}

impl RegistryError {
    /// True when another endpoint (the origin after a mirror) or a later attempt may well succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. }
            | RegistryError::Transfer { .. }
            | RegistryError::TooManyRedirects { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Describe a transport failure by its root cause ("connection refused", "timed out"), not reqwest's
/// "error sending request for url (…)" wrapper, which repeats the URL and hides the reason.
pub fn transport_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest: &(dyn std::error::Error + 'static) = e;
    let mut timed_out = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::TimedOut => timed_out = true,
                _ => {}
            }
        }
        if let Some(r) = err.downcast_ref::<reqwest::Error>() {
            if r.is_timeout() {
                timed_out = true;
            }
        }
        let text = err.to_string().to_lowercase();
        if text.contains("timed out") || text.contains("deadline") {
            timed_out = true;
        }
        deepest = err;
        cur = err.source();
    }
    if timed_out {
        return "timed out".into();
    }
    let text = deepest.to_string();
    let text = text.trim();
    if text.is_empty() {
        e.to_string()
    } else {
        text.replace('\n', " ")
    }
}
