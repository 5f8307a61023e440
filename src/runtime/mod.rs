//! Containers: namespaces, cgroups (v1/v2/hybrid), the rootfs inside a private mount namespace, exec,
//! state and lifecycle.
//!
//! The module is split by concern, lowest first:
//! - [`spec`] (what a container is asked to be: plain data) and [`capability`] (names, parsed once);
//! - [`state`] (records, locks, reconciliation), [`cgroups`] and [`device_filter`], [`mounts`] (rootfs
//!   view and pivot_root), [`caps`], [`seccomp`], [`user`], [`userns`], [`process`], [`logs`];
//! - [`protocol`] (the typed messages between rimg's processes) and [`terminal`] (ptys, raw mode, sizes,
//!   the forwarded signals);
//! - [`command`] (the final exec steps), [`container_init`] (the container's init before its exec),
//!   [`init`] (`--init`: rimg-init from a sealed memfd), [`monitor`] (mounts, serves, waits, tears down),
//!   [`launch`] (the process model of `rimg run`), [`attach`] (the foreground relay), [`exec`] (`rimg
//!   exec`), [`lifecycle`] (stop, kill, rm, wait).

#![deny(unsafe_code)]

pub mod attach;
pub mod capability;
pub mod caps;
pub mod cgroups;
pub mod command;
pub mod container_init;
pub mod device_filter;
pub mod exec;
pub mod init;
pub mod launch;
pub mod lifecycle;
pub mod logs;
pub mod monitor;
pub mod mounts;
pub mod process;
pub mod protocol;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod terminal;
pub mod user;
pub mod userns;
pub mod volumes;

pub use command::Failure;
pub use launch::{run_foreground, start, Attach, Launched};
pub use spec::{ContainerSpec, DeviceRate, MountSpec, NetworkMode, ProcessSpec, Resources, RootfsDriver};
pub use state::{ContainerState, Containers, Status};

use std::path::PathBuf;

/// Errors of the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file operation on the container's own state failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// state.json could not be parsed or written.
    #[error("container state {path}: {source}")]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// No container with that name or id.
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// An id prefix matched several containers.
    #[error("multiple containers match {0:?}; use more of the id")]
    Ambiguous(String),
    /// `--name` collides with an existing container.
    #[error("the container name {0:?} is already in use; remove that container or choose another name")]
    NameInUse(String),
    /// A cgroup file or directory could not be read, written or made.
    #[error("cgroup: {context}: {source}")]
    Cgroup {
        /// What rimg was doing, on which file.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The host's cgroups cannot do what was asked (no such controller, a pause that does not finish).
    #[error("cgroup: {0}")]
    CgroupUnsupported(String),
    /// A system call failed; what rimg was doing, and the OS error.
    #[error("{context}: {source}")]
    Os {
        /// What rimg was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel overlayfs rootfs could not be mounted.
    #[error(transparent)]
    Overlay(#[from] mounts::OverlayError),
    /// The FUSE rootfs could not be mounted or served.
    #[error("mount rootfs: {source}")]
    Rootfs {
        /// The filesystem's error.
        #[source]
        source: crate::fs::FsError,
    },
    /// A message between rimg's processes broke the protocol.
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    /// A seccomp profile could not be compiled.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// A request that cannot be carried out as given (a bad name, user, id map or capability).
    #[error("{0}")]
    Invalid(String),
    /// A capability name that is none.
    #[error(transparent)]
    UnknownCapability(#[from] capability::UnknownCapability),
    /// The operation needs a running container.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The operation needs a stopped container.
    #[error("cannot remove container {0}: container is running: stop the container before removing or force remove")]
    Running(String),
}

impl RuntimeError {
    /// A failed system call, with what rimg was doing.
    pub fn os(context: impl Into<String>, source: impl Into<std::io::Error>) -> RuntimeError {
        RuntimeError::Os { context: context.into(), source: source.into() }
    }
}
