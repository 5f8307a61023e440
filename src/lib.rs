//! rimg: a daemonless container image tool.
//!
//! The crate is split by concern so the architecture reads from the file tree:
//! - [`reference`]: docker-compatible image references (`centos` → `docker.io/library/centos:latest`).
//! - [`registry`]: the OCI distribution client (auth, mirrors, manifests, blobs).
//! - [`store`]: the offline, content-addressed image cache (an OCI image layout plus unpacked layers).
//! - [`layer`]: applying layer tarballs into overlayfs-format directories, and diffing them back out.
//! - [`fs`]: the FUSE overlay filesystem that stacks layers plus a writable upper into one rootfs.
//! - [`runtime`]: containers: namespaces, cgroups, the rootfs inside a private mount namespace.
//! - [`build`]: Dockerfile parsing and building.
//! - [`cli`]: the thin command-line edge.

pub mod build;
pub mod cli;
pub mod digest;
pub mod fs;
pub mod idmap;
pub mod layer;
pub mod output;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod store;
pub mod sys;
pub mod template;
