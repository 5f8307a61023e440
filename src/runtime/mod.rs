//! Containers: namespaces, cgroups (v1/v2/hybrid), the rootfs inside a private mount namespace, exec,
//! state and lifecycle.
//!
//! The module is split by concern: [`spec`] (what a container is asked to be), [`state`] (records, locks,
//! reconciliation), [`cgroups`], [`mounts`] (rootfs view and pivot_root), [`caps`], [`user`], [`net`],
//! [`command`] (the final exec), [`launch`] (the process model of `rimg run`), [`attach`] (foreground
//! relay), [`init`] (`--init`), [`exec`] (`rimg exec`), [`lifecycle`] (stop, kill, rm, wait), [`logs`].

pub mod attach;
pub mod caps;
pub mod cgroups;
pub mod command;
pub mod device_filter;
pub mod exec;
pub mod init;
pub mod launch;
pub mod lifecycle;
pub mod logs;
pub mod mounts;
pub mod net;
pub mod process;
pub mod pty;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod user;
pub mod userns;

pub use command::Failure;
pub use launch::{start, Attach, Launched};
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
    /// cgroup creation, limit or cleanup failure.
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// Namespace, mount or process setup failure.
    #[error("{0}")]
    Setup(String),
    /// The operation needs a running container.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The operation needs a stopped container.
    #[error("cannot remove container {0}: container is running: stop the container before removing or force remove")]
    Running(String),
}
