//! OCI distribution client.
//!
//! Split by concern: [`config`] (mirrors, insecure registries, timeouts), [`auth`] (challenges, tokens),
//! [`credentials`] (docker's config.json and credential helpers), [`manifest`] (media types, platform
//! selection), `transport` (retries, redirects, the auth dance), [`client`] (resolution and blob streams) and
//! [`push`] (uploads). Everything a registry sends is untrusted: sizes are capped, digests verified, media
//! types cross-checked, and credentials never follow a redirect to another host.

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
