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

#[cfg(test)]
mod tests {
    use super::*;

    fn amd64() -> Platform {
        Platform::new("linux", "amd64", None)
    }

    fn json(c: &ImageConfig) -> String {
        String::from_utf8(c.to_json().unwrap()).unwrap()
    }

    fn s(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The runtime config of `c` as JSON text.
    fn runtime_json(c: &ImageConfig) -> String {
        let doc: serde_json::Value = serde_json::from_slice(&c.to_json().unwrap()).unwrap();
        doc["config"].to_string()
    }

    #[test]
    fn scratch_is_what_rimg_always_wrote() {
        let c = ImageConfig::scratch(&amd64());
        assert_eq!(
            json(&c),
            r#"{"architecture":"amd64","config":{},"history":[],"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
        let arm = ImageConfig::scratch(&Platform::new("linux", "arm", Some("v7")));
        assert!(json(&arm).contains(r#""variant":"v7""#), "{}", json(&arm));
    }

    /// What BuildKit keeps of a docker base config survives a rebuild; docker's legacy fields go.
    #[test]
    fn docker_fields_survive_and_legacy_ones_go() {
        let base = br##"{
            "architecture": "amd64", "os": "linux", "author": "someone", "created": "2024-01-01T00:00:00Z",
            "docker_version": "20.10.7", "container": "abc",
            "container_config": {"Hostname": "abc", "Cmd": ["/bin/sh", "-c", "#(nop) CMD"]},
            "config": {
                "Hostname": "", "AttachStdin": false, "Image": "sha256:00",
                "User": "app", "Env": ["PATH=/bin"], "Cmd": ["run"], "Entrypoint": null,
                "WorkingDir": "/srv", "StopSignal": "SIGINT", "Labels": {"b": "2", "a": "1"},
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Volumes": {"/data": {}},
                "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 30000000000, "Retries": 3},
                "OnBuild": ["RUN echo child"], "Shell": ["/bin/bash", "-c"], "ArgsEscaped": true
            },
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "x", "empty_layer": true}]
        }"##;
        let c = ImageConfig::from_json(base).unwrap();
        assert_eq!(
            runtime_json(&c),
            r#"{"ArgsEscaped":true,"Cmd":["run"],"Env":["PATH=/bin"],"ExposedPorts":{"53/udp":{},"80/tcp":{}},"Healthcheck":{"Interval":30000000000,"Retries":3,"Test":["CMD-SHELL","true"]},"Labels":{"a":"1","b":"2"},"OnBuild":["RUN echo child"],"Shell":["/bin/bash","-c"],"StopSignal":"SIGINT","User":"app","Volumes":{"/data":{}},"WorkingDir":"/srv"}"#
        );
        let doc: serde_json::Value = serde_json::from_slice(&c.to_json().unwrap()).unwrap();
        for legacy in ["docker_version", "container", "container_config"] {
            assert!(doc.get(legacy).is_none(), "{legacy} kept: {doc}");
        }
        assert_eq!(doc["author"], "someone");
        assert_eq!(doc["history"][0]["empty_layer"], true);
        assert_eq!(c.shell(), ["/bin/bash", "-c"]);
    }

    #[test]
    fn a_config_without_runtime_config_or_history_gets_empty_ones() {
        let c = ImageConfig::from_json(
            br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(
            json(&c),
            r#"{"architecture":"arm64","config":{},"history":[],"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
        assert_eq!(c.shell(), ["/bin/sh", "-c"], "docker's default shell");
        assert_eq!((c.env(), c.user(), c.working_dir()), (&[] as &[String], "", ""));
    }

    #[test]
    fn a_malformed_docker_field_is_an_error() {
        let bad = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Shell":"sh"}}"#;
        assert!(ImageConfig::from_json(bad).is_err());
    }

    /// Hash maps inside oci_spec iterate in a different order in every map; the bytes must not.
    #[test]
    fn the_same_content_always_gives_the_same_bytes() {
        let mut c = ImageConfig::scratch(&amd64());
        let many: Vec<String> = (0..40).map(|i| format!("{i}/tcp")).collect();
        c.apply(&ConfigEdit::ExposedPorts(many.clone()));
        c.apply(&ConfigEdit::Volumes(many.iter().map(|p| format!("/v{p}")).collect()));
        c.apply(&ConfigEdit::Labels(many.iter().map(|p| (p.clone(), p.clone())).collect()));
        let first = c.to_json().unwrap();
        for _ in 0..10 {
            let again = ImageConfig::from_json(&first).unwrap();
            assert_eq!(again.to_json().unwrap(), first);
        }
    }

    #[test]
    fn env_replaces_a_variable_and_moves_it_last() {
        let mut c = ImageConfig::scratch(&amd64());
        c.apply(&ConfigEdit::Env(kv(&[("A", "1"), ("B", "two words"), ("PATH", "/usr/bin")])));
        c.apply(&ConfigEdit::Env(kv(&[("A", "3")])));
        assert_eq!(c.env(), ["B=two words", "PATH=/usr/bin", "A=3"]);
    }

    #[test]
    fn labels_ports_and_volumes_add_to_what_is_there() {
        let mut c = ImageConfig::scratch(&amd64());
        c.apply(&ConfigEdit::Labels(kv(&[("x", "1"), ("y z", "1")])));
        c.apply(&ConfigEdit::Labels(kv(&[("x", "2")])));
        c.apply(&ConfigEdit::ExposedPorts(s(&["80/tcp", "53/udp", "80/tcp"])));
        c.apply(&ConfigEdit::ExposedPorts(s(&["443/tcp"])));
        c.apply(&ConfigEdit::Volumes(s(&["/data"])));
        c.apply(&ConfigEdit::Volumes(s(&["/logs", "/data"])));
        assert_eq!(
            runtime_json(&c),
            r#"{"ExposedPorts":{"443/tcp":{},"53/udp":{},"80/tcp":{}},"Labels":{"x":"2","y z":"1"},"Volumes":{"/data":{},"/logs":{}}}"#
        );
    }

    #[test]
    fn scalar_fields_are_set() {
        let mut c = ImageConfig::scratch(&amd64());
        c.apply(&ConfigEdit::User("app:app".into()));
        c.apply(&ConfigEdit::WorkingDir("/srv".into()));
        c.apply(&ConfigEdit::StopSignal("SIGINT".into()));
        c.apply(&ConfigEdit::Shell(s(&["/bin/bash", "-c"])));
        c.apply(&ConfigEdit::Author("me <me@example.com>".into()));
        c.apply(&ConfigEdit::Nothing);
        assert_eq!((c.user(), c.working_dir()), ("app:app", "/srv"));
        assert_eq!(c.shell(), ["/bin/bash", "-c"]);
        assert_eq!(c.oci().author().as_deref(), Some("me <me@example.com>"));
        assert_eq!(
            runtime_json(&c),
            r#"{"Shell":["/bin/bash","-c"],"StopSignal":"SIGINT","User":"app:app","WorkingDir":"/srv"}"#
        );
    }

    #[test]
    fn entrypoint_drops_the_cmd() {
        let mut c = ImageConfig::scratch(&amd64());
        c.apply(&ConfigEdit::Cmd(s(&["sh"])));
        assert_eq!(runtime_json(&c), r#"{"Cmd":["sh"]}"#);
        c.apply(&ConfigEdit::Entrypoint(s(&["/bin/tool"])));
        assert_eq!(runtime_json(&c), r#"{"Entrypoint":["/bin/tool"]}"#);
        c.apply(&ConfigEdit::Cmd(s(&["x"])));
        assert_eq!(runtime_json(&c), r#"{"Cmd":["x"],"Entrypoint":["/bin/tool"]}"#);
    }

    #[test]
    fn healthcheck_replaces_the_one_before() {
        let mut c = ImageConfig::scratch(&amd64());
        let check = Healthcheck {
            test: Some(s(&["CMD-SHELL", "curl -f http://x/"])),
            interval: Some(30_000_000_000),
            timeout: Some(3_000_000_000),
            start_period: Some(90_000_000_000),
            start_interval: Some(500_000_000),
            retries: Some(3),
        };
        c.apply(&ConfigEdit::Healthcheck(check));
        assert_eq!(
            runtime_json(&c),
            r#"{"Healthcheck":{"Interval":30000000000,"Retries":3,"StartInterval":500000000,"StartPeriod":90000000000,"Test":["CMD-SHELL","curl -f http://x/"],"Timeout":3000000000}}"#
        );
        c.apply(&ConfigEdit::Healthcheck(Healthcheck { test: Some(s(&["NONE"])), ..Healthcheck::default() }));
        assert_eq!(runtime_json(&c), r#"{"Healthcheck":{"Test":["NONE"]}}"#);
    }

    #[test]
    fn history_entries_and_created() {
        let mut c = ImageConfig::scratch(&amd64());
        c.push_history(history_entry("/bin/sh -c #(nop) USER app", "2023-11-14T22:13:20Z", true, None));
        c.push_history(history_entry("RUN x", "2024-01-01T00:00:00Z", false, Some("why")));
        c.set_diff_ids(vec![format!("sha256:{}", "a".repeat(64))]);
        let doc: serde_json::Value = serde_json::from_slice(&c.to_json().unwrap()).unwrap();
        assert_eq!(
            doc["history"].to_string(),
            r#"[{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) USER app","empty_layer":true},{"comment":"why","created":"2024-01-01T00:00:00Z","created_by":"RUN x"}]"#
        );
        assert_eq!(doc["created"], "2024-01-01T00:00:00Z", "the image's time is its last step's");
        assert_eq!(doc["rootfs"]["diff_ids"][0], format!("sha256:{}", "a".repeat(64)));
        assert_eq!(c.history().len(), 2);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
        assert_eq!(parse_duration_ns("1h2us3ns"), Some(3_600_000_002_003));
        assert_eq!(parse_duration_ns("5"), None, "a unit is required");
        assert_eq!(parse_duration_ns("5x"), None);
        assert_eq!(parse_duration_ns("-5s"), None);
        assert_eq!(parse_duration_ns("99999999999h99999999999h"), None, "overflow is refused, not wrapped");
    }
}
