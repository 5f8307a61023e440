//! Volumes: `ROOT/volumes/<name>/` holds `volume.json` (driver, labels, options, when it was made,
//! whether it is anonymous) and `_data/`, the directory containers bind — as docker's
//! `/var/lib/docker/volumes/<name>/_data`. Volumes outlive the containers and images that use them; they
//! are in `ROOT/volumes/` (0700 with the rest of the store, see [`super::perms`]) and never inside a
//! container's upper directory, so what a container writes there is not part of `commit` or `diff`.
//!
//! A volume appears whole or not at all: it is made in `volumes/.tmp-<rand>/` and renamed to its name
//! (`rename` refuses an existing non-empty directory, so two `create`s of one name cannot both win).

use super::{IoContext, Result, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Label docker puts on anonymous volumes (`-v /path`, an image's `VOLUME`).
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// What `volume.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The volume's name (64 hex digits for an anonymous one).
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// RFC 3339.
    pub created_at: String,
    /// `--label`s (and docker's anonymous marker).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--opt`s.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, image `VOLUME`): removed with it by `--rm` and `rm -v`, and
    /// by `volume prune` without `-a`.
    #[serde(default)]
    pub anonymous: bool,
}

/// The volumes of one store.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
}

/// docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    name.len() >= 2
        && c.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && c.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Volumes {
    /// The volumes under the store root `root` (`ROOT/volumes`, made by `Store::open` with its mode).
    pub fn new(root: &Path) -> Volumes {
        Volumes { dir: root.join("volumes") }
    }

    /// `ROOT/volumes/<name>`.
    pub fn dir_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory containers see: `ROOT/volumes/<name>/_data`.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// Create the volume `name` (a fresh anonymous one when `None`); an existing named volume is
    /// returned as it is (docker's `volume create` of an existing name succeeds). Returns the volume and
    /// whether this call made it.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<(VolumeInfo, bool)> {
        let (name, anonymous) = match name {
            Some(n) if !valid_name(n) => {
                return Err(StoreError::Reference(format!(
                    "create {n}: \"{n}\" includes invalid characters for a local volume name, only \
                     \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, \
                     use absolute path"
                )))
            }
            Some(n) => (n.to_string(), false),
            None => (hex::encode(rand::random::<[u8; 32]>()), true),
        };
        if let Ok(v) = self.get(&name) {
            return Ok((v, false));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(super::perms::PRIVATE_DIR_MODE)
            .create(&self.dir)
            .ctx("create", &self.dir)?;
        let mut labels = labels;
        if anonymous {
            labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
        }
        let info = VolumeInfo {
            name: name.clone(),
            driver: "local".into(),
            created_at: super::images::rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            ),
            labels,
            options,
            anonymous,
        };
        let tmp = self.dir.join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
        let made = self.stage(&tmp, &info);
        let made = made.and_then(|()| match fs::rename(&tmp, self.dir_of(&name)) {
            Ok(()) => Ok(true),
            // Made by another rimg meanwhile: theirs stands.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => Ok(false),
            Err(e) => Err(e).ctx("create volume", &self.dir_of(&name)),
        });
        if !matches!(made, Ok(true)) {
            let _ = fs::remove_dir_all(&tmp);
        }
        let created = made?;
        Ok((self.get(&name)?, created))
    }

    fn stage(&self, tmp: &Path, info: &VolumeInfo) -> Result<()> {
        // Private like the rest of the store: a container's init opens `_data` while still host root.
        fs::DirBuilder::new().mode(super::perms::PRIVATE_DIR_MODE).create(tmp).ctx("create", tmp)?;
        let data = tmp.join("_data");
        // The volume's root as containers see it: docker's 0755 until an image's directory is copied in.
        fs::DirBuilder::new().mode(0o755).create(&data).ctx("create", &data)?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).ctx("chmod", &data)?;
        let json = serde_json::to_vec_pretty(info).map_err(|e| StoreError::Corrupt {
            what: "volume",
            digest: info.name.clone(),
            reason: e.to_string(),
        })?;
        super::write_atomic(&tmp.join("volume.json"), &json)
    }

    /// The volume `name`.
    pub fn get(&self, name: &str) -> Result<VolumeInfo> {
        if !valid_name(name) {
            return Err(StoreError::VolumeNotFound(name.to_string()));
        }
        let p = self.dir_of(name).join("volume.json");
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::VolumeNotFound(name.to_string()))
            }
            Err(e) => return Err(e).ctx("read", &p),
        };
        serde_json::from_slice(&data).map_err(|e| StoreError::Corrupt {
            what: "volume",
            digest: name.to_string(),
            reason: e.to_string(),
        })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Vec<VolumeInfo> {
        let Ok(rd) = fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out: Vec<VolumeInfo> =
            rd.flatten().filter_map(|e| self.get(&e.file_name().to_string_lossy()).ok()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Delete the volume `name` and its data. The caller has checked no container uses it.
    pub fn remove(&self, name: &str) -> Result<()> {
        self.get(name)?;
        let dir = self.dir_of(name);
        // Renamed away first, so a half-deleted volume is never seen under its name.
        let gone = self.dir.join(format!(".rm-{}", hex::encode(rand::random::<[u8; 8]>())));
        fs::rename(&dir, &gone).ctx("remove volume", &dir)?;
        super::layers::remove_tree(&gone)
    }

    /// Bytes in the volume's data (files and symlinks, each inode once).
    pub fn size(&self, name: &str) -> u64 {
        super::layers::tree_size(&self.data_dir(name)).unwrap_or(0)
    }
}
