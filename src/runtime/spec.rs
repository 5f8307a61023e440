//! What a container is asked to be: the process, its mounts, namespaces and resource limits. The CLI builds
//! one from docker flags plus the image config; the runtime persists it in `state.json` so that `exec`,
//! `stop` and `ps` act on exactly what `run` set up.

use super::capability::CapName;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything the runtime needs to create and start one container.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ContainerSpec {
    /// Human name (docker's `--name`); unique among containers under one root.
    pub name: String,
    /// The image reference the user gave (shown by `ps`), or the rootfs directory for `--rootfs`.
    pub image: String,
    /// Image id (config digest) when the container came from the store.
    #[serde(default)]
    pub image_id: Option<String>,
    /// Layer directories stacked as the read-only part of the rootfs, top first.
    pub lowers: Vec<PathBuf>,
    /// How the rootfs is mounted.
    #[serde(default)]
    pub driver: RootfsDriver,
    /// The command and its environment.
    pub process: ProcessSpec,
    /// Container hostname (also written to /etc/hostname).
    pub hostname: String,
    /// Network mode.
    #[serde(default)]
    pub network: NetworkMode,
    /// Bind mounts and tmpfs mounts from `-v`, `--mount`, `--tmpfs`, applied in order.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// Mount the rootfs read-only (`--read-only`).
    #[serde(default)]
    pub read_only: bool,
    /// Keep all capabilities, devices and unmasked /proc, /sys (`--privileged`).
    #[serde(default)]
    pub privileged: bool,
    /// Capabilities added to docker's default set (`--cap-add`).
    #[serde(default)]
    pub cap_add: Vec<CapName>,
    /// Capabilities removed from docker's default set (`--cap-drop`).
    #[serde(default)]
    pub cap_drop: Vec<CapName>,
    /// Let processes gain privileges through setuid binaries and file capabilities
    /// (`--security-opt no-new-privileges=false`); by default rimg sets no_new_privs before exec.
    #[serde(default)]
    pub allow_new_privileges: bool,
    /// Seccomp profile (`--security-opt seccomp=…`); ignored with `--privileged`, as docker does (see
    /// [`ContainerSpec::seccomp_policy`]).
    #[serde(default)]
    pub seccomp: SeccompPolicy,
    /// Run rimg's tiny init as PID 1 (`--init`): reaps zombies, forwards signals.
    #[serde(default)]
    pub init: bool,
    /// cgroup limits.
    #[serde(default)]
    pub resources: Resources,
    /// cgroup parent path (relative to each hierarchy's root), docker's `--cgroup-parent`; default `rimg`.
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// Signal `stop` sends first (number).
    #[serde(default = "default_stop_signal")]
    pub stop_signal: i32,
    /// Seconds `stop` waits before SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u64,
    /// Remove the container when it exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// The container's labels (`ps --filter label=`, `{{.Label "k"}}`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The container's own user namespace (`--userns=auto`, `--uidmap`, `--gidmap`); `None` shares the
    /// host's, as docker does by default.
    #[serde(default)]
    pub userns: Option<UserNamespace>,
}

/// A user namespace for the container: its root is an unprivileged host uid, and the FUSE rootfs shows
/// the image's files under the mapped host ids so the container sees them as their image owners.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserNamespace {
    /// Container uid -> host uid ranges (written to /proc/PID/uid_map).
    pub uid_map: crate::idmap::IdMap,
    /// Container gid -> host gid ranges (written to /proc/PID/gid_map).
    pub gid_map: crate::idmap::IdMap,
}

impl ContainerSpec {
    /// The seccomp policy the container's processes run under: its own, but none with `--privileged`
    /// (as docker).
    pub fn seccomp_policy(&self) -> &SeccompPolicy {
        const UNCONFINED: &SeccompPolicy = &SeccompPolicy::Unconfined;
        if self.privileged {
            UNCONFINED
        } else {
            &self.seccomp
        }
    }
}

/// Which seccomp profile a container runs under (`--security-opt seccomp=…`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(tag = "kind", content = "profile", rename_all = "lowercase")]
pub enum SeccompPolicy {
    /// rimg's default profile (`super::seccomp::DEFAULT_PROFILE`, docker's).
    #[default]
    Default,
    /// No filter (`seccomp=unconfined`, and always with `--privileged`, as docker).
    Unconfined,
    /// A user's profile, kept as its JSON text so `exec` applies the same one later.
    Custom(String),
}

fn default_stop_signal() -> i32 {
    libc::SIGTERM
}

fn default_stop_timeout() -> u64 {
    10
}

/// The process started in the container (and the defaults `exec` inherits).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ProcessSpec {
    /// argv; argv[0] is looked up in the container's `PATH` when it has no slash.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// Working directory inside the container (created if missing, as docker does).
    pub cwd: String,
    /// docker's `-u`: `name`, `uid`, `name:group`, `uid:gid`; empty = root. Resolved inside the rootfs.
    pub user: String,
    /// Attach a pseudo-terminal (`-t`).
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open (`-i`).
    #[serde(default)]
    pub stdin: bool,
    /// Pass the caller's descriptors 3..3+N on to the process (`--preserve-fds N`, as podman and runc);
    /// every other inherited descriptor is closed. Belongs to one start, so never persisted.
    #[serde(skip)]
    pub preserve_fds: u32,
}

/// How the container's root filesystem is assembled from the layers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RootfsDriver {
    /// The kernel's overlayfs (`--storage-driver overlay`): the reference implementation.
    #[default]
    Kernel,
    /// rimg's own FUSE overlay, served by the container's monitor process.
    Fuse,
}

/// Network namespace choice (`--network`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A new network namespace with only the loopback interface, up.
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

/// One extra mount inside the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountSpec {
    /// Bind a host path (file or directory) at `target`.
    Bind {
        /// Host path (absolute).
        source: PathBuf,
        /// Path inside the container (absolute).
        target: String,
        /// Mounted read-only.
        readonly: bool,
    },
    /// A volume (named, or anonymous: made for this container) bound at `target`. Its data directory
    /// lives in the store (`ROOT/volumes/NAME/_data`), never in the container's upper.
    Volume {
        /// The volume's name.
        name: String,
        /// Its data directory on the host.
        source: PathBuf,
        /// Path inside the container (absolute).
        target: String,
        /// Mounted read-only.
        readonly: bool,
        /// Made for this container (`-v /path`, the image's `VOLUME`): removed with it by `--rm`.
        #[serde(default)]
        anonymous: bool,
        /// Copy what the image has at `target` into the volume when the volume is empty (docker's rule;
        /// off with `nocopy`).
        #[serde(default)]
        copy: bool,
    },
    /// A fresh tmpfs at `target` with mount options (`size=64m,mode=1777`).
    Tmpfs {
        /// Path inside the container (absolute).
        target: String,
        /// tmpfs options as given to `--tmpfs`.
        options: String,
    },
}

/// cgroup limits; `None` leaves the kernel default.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes (`-m`); swap is limited to the same value (no extra swap), as docker.
    pub memory: Option<u64>,
    /// CPU bandwidth in millicpus (`--cpus 0.5` = 500).
    pub cpu_millis: Option<u64>,
    /// Relative CPU weight (`--cpu-shares`, v1 scale 2..262144).
    pub cpu_shares: Option<u64>,
    /// Maximum number of tasks (`--pids-limit`); negative or zero means unlimited; `None` means
    /// [`DEFAULT_PIDS_LIMIT`].
    pub pids_limit: Option<i64>,
    /// Relative block I/O weight (`--blkio-weight`, 10..1000).
    pub blkio_weight: Option<u16>,
    /// Per-device read throttles (`--device-read-bps`).
    #[serde(default)]
    pub device_read_bps: Vec<DeviceRate>,
    /// Per-device write throttles (`--device-write-bps`).
    #[serde(default)]
    pub device_write_bps: Vec<DeviceRate>,
}

/// The pids limit of a container without `--pids-limit`: podman's default, which stops a fork bomb from
/// taking the host's whole pid space while leaving room for any real workload.
pub const DEFAULT_PIDS_LIMIT: i64 = 2048;

/// A bytes-per-second limit on one block device, by device number.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRate {
    /// Block device major number.
    pub major: u64,
    /// Block device minor number.
    pub minor: u64,
    /// Bytes per second.
    pub rate: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// state.json written before the security fields existed still loads, with docker's defaults.
    #[test]
    fn old_state_loads_with_secure_defaults() {
        let old = r#"{"name":"x","image":"alpine","lowers":[],"hostname":"h",
            "process":{"args":["sh"],"env":[],"cwd":"/","user":""}}"#;
        let s: ContainerSpec = serde_json::from_str(old).unwrap();
        assert!(s.cap_add.is_empty() && s.cap_drop.is_empty());
        assert!(!s.allow_new_privileges, "no_new_privs stays on");
        assert_eq!(s.seccomp, SeccompPolicy::Default);
        let custom = ContainerSpec { seccomp: SeccompPolicy::Custom("{}".into()), ..Default::default() };
        let back: ContainerSpec = serde_json::from_str(&serde_json::to_string(&custom).unwrap()).unwrap();
        assert_eq!(back.seccomp, custom.seccomp);
    }
}
