//! The image config of an image being built, in the typed model pull and the store use
//! (`oci_spec::image`), plus the runtime-config fields docker writes that the OCI image spec does not name.
//!
//! Which fields survive a rebuild is decided here, once. BuildKit reads a base image's config into
//! `ocispec.Image` with its `Healthcheck`, `OnBuild` and `Shell` extension (dockerspec's
//! `DockerOCIImageConfigExt`) and buildah into its `docker.V2Image`; both drop whatever else a base
//! config carries (docker's legacy `container_config`, `Hostname`, vendor keys). rimg does the same:
//! the OCI fields through [`ImageConfiguration`], docker's extension through [`DockerConfig`]
//! (`Healthcheck`, `OnBuild`, `Shell`, and `ArgsEscaped`, which OCI 1.1 names but oci_spec does not model
//! yet). Like BuildKit, and unlike buildah's OCI format, rimg keeps them in the OCI configs it writes:
//! `rimg run` and docker read them there.
//!
//! Written configs are canonical JSON (keys sorted at every level): oci_spec keeps labels, exposed ports
//! and volumes in hash maps whose order changes from process to process, and the same content must
//! always give the same bytes and so the same image ID (cached rebuilds, `SOURCE_DATE_EPOCH`).

use crate::registry::Platform;
use oci_spec::image::{Arch, Config, History, ImageConfiguration, Os, RootFs};
use serde::{Deserialize, Serialize};

/// Docker's `Healthcheck` (moby `container.HealthConfig`): durations in nanoseconds, as Go's
/// `time.Duration` serialises them; zero or absent means docker's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// Time between two checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Time one check may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Time a starting container gets before failures count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    /// Time between checks during the start period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    /// Failures in a row that make the container unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// The runtime-config fields docker images carry beyond the OCI spec's `config` (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerConfig {
    /// `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// `ONBUILD` triggers of the image (rimg does not run them, but keeps a base's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// `SHELL`: the shell of shell-form RUN, CMD and ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Windows images: the command line is already escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
}

/// One change a config-only Dockerfile instruction makes, words already expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigEdit {
    /// `ARG`: a history entry, no config change.
    Nothing,
    /// `ENV`: set variables (a variable set again moves to the end, as docker's list does).
    Env(Vec<(String, String)>),
    /// `LABEL`: add or replace labels.
    Labels(Vec<(String, String)>),
    /// `WORKDIR`, already made absolute.
    WorkingDir(String),
    /// `USER`.
    User(String),
    /// `CMD`, shell form already wrapped in the shell.
    Cmd(Vec<String>),
    /// `ENTRYPOINT`; it also drops the `Cmd` the stage has (docker drops an inherited one).
    Entrypoint(Vec<String>),
    /// `EXPOSE`, each `port/proto`.
    ExposedPorts(Vec<String>),
    /// `VOLUME`.
    Volumes(Vec<String>),
    /// `SHELL`.
    Shell(Vec<String>),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `MAINTAINER`: the image's author.
    Author(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
}

/// An image config: the OCI model with docker's runtime-config extension.
///
/// Invariants: the runtime config (`config`) and the history are always present, so a written config
/// has both (as docker's and the old rimg's do), even for `FROM scratch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    oci: ImageConfiguration,
    docker: DockerConfig,
}

/// The `config` object of a config document, read for docker's fields only.
#[derive(Deserialize)]
struct DockerPart {
    #[serde(default)]
    config: Option<DockerConfig>,
}

impl ImageConfig {
    /// The config of `FROM scratch` on `platform`: no layers, no history, an empty runtime config.
    pub fn scratch(platform: &Platform) -> ImageConfig {
        let mut oci = ImageConfiguration::default();
        oci.set_architecture(Arch::from(platform.architecture.as_str()));
        oci.set_os(Os::from(platform.os.as_str()));
        oci.set_variant(platform.variant.clone());
        oci.set_rootfs(RootFs::default());
        ImageConfig::complete(oci, DockerConfig::default())
    }

    /// Parse a stored config (JSON), keeping the fields the module doc names.
    pub fn from_json(raw: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        let oci: ImageConfiguration = serde_json::from_slice(raw)?;
        let docker = serde_json::from_slice::<DockerPart>(raw)?.config.unwrap_or_default();
        Ok(ImageConfig::complete(oci, docker))
    }

    fn complete(mut oci: ImageConfiguration, docker: DockerConfig) -> ImageConfig {
        if oci.config().is_none() {
            oci.set_config(Some(Config::default()));
        }
        if oci.history().is_none() {
            oci.set_history(Some(Vec::new()));
        }
        ImageConfig { oci, docker }
    }

    /// The canonical JSON of this config (keys sorted at every level; see the module doc).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut doc = serde_json::to_value(&self.oci)?;
        if let serde_json::Value::Object(extension) = serde_json::to_value(&self.docker)? {
            if let Some(runtime) = doc.get_mut("config").and_then(serde_json::Value::as_object_mut) {
                runtime.extend(extension);
            }
        }
        doc.sort_all_objects();
        serde_json::to_vec(&doc)
    }

    /// The OCI part (platform, runtime config, rootfs, history).
    pub fn oci(&self) -> &ImageConfiguration {
        &self.oci
    }

    /// Docker's extension of the runtime config.
    pub fn docker(&self) -> &DockerConfig {
        &self.docker
    }

    fn runtime(&self) -> Option<&Config> {
        self.oci.config().as_ref()
    }

    /// Change the runtime config (oci_spec gives no `&mut` to it: it is taken out and put back).
    fn edit_runtime(&mut self, edit: impl FnOnce(&mut Config)) {
        let mut runtime = self.oci.config().clone().unwrap_or_default();
        edit(&mut runtime);
        self.oci.set_config(Some(runtime));
    }

    /// `Env` (`K=V` entries).
    pub fn env(&self) -> &[String] {
        self.runtime().and_then(|c| c.env().as_deref()).unwrap_or_default()
    }

    /// `User` (empty when unset).
    pub fn user(&self) -> &str {
        self.runtime().and_then(|c| c.user().as_deref()).unwrap_or_default()
    }

    /// `WorkingDir` (empty when unset).
    pub fn working_dir(&self) -> &str {
        self.runtime().and_then(|c| c.working_dir().as_deref()).unwrap_or_default()
    }

    /// The shell of shell-form commands: `SHELL`'s, else `/bin/sh -c`.
    pub fn shell(&self) -> Vec<String> {
        match &self.docker.shell {
            Some(shell) => shell.clone(),
            None => vec!["/bin/sh".to_string(), "-c".to_string()],
        }
    }

    /// Apply what a config instruction does.
    pub fn apply(&mut self, edit: &ConfigEdit) {
        // oci_spec's setters return the config again: each closure ends with `;` to drop that.
        match edit {
            ConfigEdit::Nothing => {}
            ConfigEdit::Env(vars) => self.edit_runtime(|c| {
                c.set_env(Some(with_env(c.env(), vars)));
            }),
            ConfigEdit::Labels(labels) => self.edit_runtime(|c| {
                let mut all = c.labels().clone().unwrap_or_default();
                all.extend(labels.iter().cloned());
                c.set_labels(Some(all));
            }),
            ConfigEdit::WorkingDir(dir) => self.edit_runtime(|c| {
                c.set_working_dir(Some(dir.clone()));
            }),
            ConfigEdit::User(user) => self.edit_runtime(|c| {
                c.set_user(Some(user.clone()));
            }),
            ConfigEdit::Cmd(argv) => self.edit_runtime(|c| {
                c.set_cmd(Some(argv.clone()));
            }),
            ConfigEdit::Entrypoint(argv) => self.edit_runtime(|c| {
                c.set_entrypoint(Some(argv.clone()));
                c.set_cmd(None);
            }),
            ConfigEdit::ExposedPorts(ports) => self.edit_runtime(|c| {
                c.set_exposed_ports(Some(with_keys(c.exposed_ports(), ports)));
            }),
            ConfigEdit::Volumes(vols) => self.edit_runtime(|c| {
                c.set_volumes(Some(with_keys(c.volumes(), vols)));
            }),
            ConfigEdit::Shell(shell) => self.docker.shell = Some(shell.clone()),
            ConfigEdit::StopSignal(sig) => self.edit_runtime(|c| {
                c.set_stop_signal(Some(sig.clone()));
            }),
            ConfigEdit::Author(author) => self.set_author(author),
            ConfigEdit::Healthcheck(hc) => self.docker.healthcheck = Some(hc.clone()),
        }
    }

    /// The image's author (`MAINTAINER`, `rimg commit -a`).
    pub fn set_author(&mut self, author: &str) {
        self.oci.set_author(Some(author.to_string()));
    }

    /// Append a history entry; the image's `created` becomes the entry's.
    pub fn push_history(&mut self, entry: History) {
        self.oci.set_created(entry.created().clone());
        self.oci.history_mut().get_or_insert_with(Vec::new).push(entry);
    }

    /// The history, oldest first.
    pub fn history(&self) -> &[History] {
        self.oci.history().as_deref().unwrap_or_default()
    }

    /// Record the layers (uncompressed digests, bottom first) in `rootfs`.
    pub fn set_diff_ids(&mut self, diff_ids: Vec<String>) {
        self.oci.rootfs_mut().set_diff_ids(diff_ids);
    }
}

/// A history entry; `empty_layer` is written only when true, as docker does.
pub fn history_entry(created_by: &str, created: &str, empty_layer: bool, comment: Option<&str>) -> History {
    let mut h = History::default();
    h.set_created(Some(created.to_string()));
    h.set_created_by(Some(created_by.to_string()));
    h.set_comment(comment.map(str::to_string));
    h.set_empty_layer(empty_layer.then_some(true));
    h
}

/// `env` with `vars` set: an existing `K=` entry is removed and the new one appended.
fn with_env(env: &Option<Vec<String>>, vars: &[(String, String)]) -> Vec<String> {
    let mut env = env.clone().unwrap_or_default();
    for (k, v) in vars {
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
        env.push(format!("{k}={v}"));
    }
    env
}

/// A set-valued field (`ExposedPorts`, `Volumes`: a JSON object of empty objects) with `keys` added.
fn with_keys(set: &Option<Vec<String>>, keys: &[String]) -> Vec<String> {
    let mut set = set.clone().unwrap_or_default();
    for k in keys {
        if !set.contains(k) {
            set.push(k.clone());
        }
    }
    set
}

/// Go duration text (`30s`, `1m30s`, `500ms`) in nanoseconds, as docker stores healthcheck times.
pub fn parse_duration_ns(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if let Some(&n) = chars.peek() {
            if n == 's' && matches!(c, 'm' | 'u' | 'n') {
                unit.push(n);
                chars.next();
            }
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        let mult = match unit.as_str() {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        total = total.checked_add((v * mult) as i64)?;
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}
