//! OCI distribution client.
//!
//! Split by concern: [`config`] (mirrors, insecure registries, timeouts), [`auth`] (challenges, tokens),
//! [`credentials`] (docker's config.json and credential helpers), [`manifest`] (media types, platform
//! selection), `transport` (retries, redirects, the auth dance), [`client`] (resolution and blob streams) and
//! [`push`] (uploads). Everything a registry sends is untrusted: sizes are capped, digests verified, media
//! types cross-checked, and credentials never follow a redirect to another host.
//!
//! ```no_run
//! use rimg::reference::Reference;
//! use rimg::registry::{Client, Platform, RegistryConfig};
//! use std::io::Read;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new(RegistryConfig::load(None, &[], &[])?)?; // Clone + Send + Sync
//! let r = Reference::parse("centos")?; // docker.io/library/centos:latest
//! let resolved = client.resolve(&r, &Platform::host())?; // index -> this platform's manifest
//! let config_digest = resolved.manifest.config().digest().to_string().parse()?;
//! let _config = client.fetch_blob_bytes(&r, &config_digest, 4 << 20)?; // verified
//! for layer in resolved.manifest.layers() {
//!     let stream = client.open_blob(&r, &layer.digest().to_string().parse()?, 0)?;
//!     let mut bytes = Vec::new(); // the caller hashes what it reads (from `stream.started_at`)
//!     { stream.reader }.read_to_end(&mut bytes)?;
//! }
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod client;
pub mod config;
pub mod credentials;
pub mod error;
pub mod manifest;
pub mod push;
mod transport;

pub use auth::Credentials;
pub use client::{BlobStream, Client, RawManifest, Resolved};
pub use config::RegistryConfig;
pub use error::{Access, RegistryError};
pub use manifest::{Platform, MANIFEST_ACCEPT, MAX_MANIFEST_SIZE};
