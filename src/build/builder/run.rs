//! `RUN`: the command runs as a real container (the namespaces, cgroups and FUSE rootfs of `rimg run`,
//! network none unless asked) on the stage's layers; its upper directory becomes the step's layer.

use super::cache::{run_key, CacheEntry, RunInputs};
use super::instructions::argv_of;
use super::{BuildError, Builder, StepError};
use crate::build::dockerfile::{Command, Heredoc, Step};
use crate::build::image::{layer_from_upper, now_rfc3339, source_date_epoch, LayerRef};
use crate::layer::walk::Dir;
use crate::runtime::{self, ContainerSpec, Containers, NetworkMode, ProcessSpec};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

impl Builder<'_> {
    /// A RUN step: answered from the cache, or run in a step container whose upper becomes the layer.
    pub(super) fn run_step(
        &mut self,
        step: &Step,
        cmd: &Command,
        heredocs: &[Heredoc],
        network: Option<&str>,
    ) -> Result<(), StepError> {
        let stage = self.current()?;
        let config = stage.image.config();
        let argv = run_argv(cmd, heredocs, &config.shell());
        let (env, arg_env) = run_env(config.env(), &stage.args);
        let user = config.user().to_string();
        let cwd = self.workdir();
        let net = network_mode(network, self.opts.network)?;
        let created_by = format!("RUN {}", json!(argv));
        let inputs =
            RunInputs { created_by: &created_by, arg_env: &arg_env, user: &user, cwd: &cwd, network: net };
        let key = run_key(&stage.key, &inputs);
        if let Some(hit) = self.cached(&key, &created_by, true) {
            return self.finish_layer_step(key, hit, &created_by);
        }
        self.executed += 1;
        let process = ProcessSpec { args: argv, env, cwd, user, tty: false, stdin: false, preserve_fds: 0 };
        let layer = self.run_container(step.line, &key, process, net)?;
        let entry = CacheEntry { layer: Some(layer), created: now_rfc3339() };
        self.cache.put(&key, &entry);
        self.finish_layer_step(key, entry, &created_by)
    }

    /// Run `process` in a container on the current stage's layers (removed afterwards, whatever
    /// happened) and turn what it wrote into a layer.
    fn run_container(
        &self,
        line: usize,
        key: &str,
        process: ProcessSpec,
        network: NetworkMode,
    ) -> Result<LayerRef, StepError> {
        let image = &self.current()?.image;
        let lowers = image.layer_dirs(self.store);
        let below = image.diff_ids();
        let containers = Containers::open(&self.store.containers_dir()).map_err(|e| e.to_string())?;
        let argv = process.args.clone();
        let spec = ContainerSpec {
            name: format!("rimg-build-{}-{}", &key[..12], std::process::id()),
            image: format!("build step {line}"),
            image_id: None,
            lowers: lowers.clone(),
            driver: runtime::RootfsDriver::Fuse,
            process,
            hostname: String::new(),
            network,
            stop_signal: libc::SIGTERM,
            stop_timeout: 10,
            ..ContainerSpec::default()
        };
        let (state, lock) = containers.create(spec).map_err(|e| e.to_string())?;
        let id = state.id.clone();
        let _cleanup = RemoveContainer { containers: &containers, id: id.clone() };
        if !self.opts.quiet {
            crate::outln!(" ---> Running in {}", &id[..12]);
        }
        // `build -q`: the step's output goes nowhere (docker's quiet build shows only the image ID).
        let hushed = if self.opts.quiet {
            Some(Hushed::new().map_err(|e| format!("quiet output: {e}"))?)
        } else {
            None
        };
        let code = runtime::run_foreground(&containers, state, lock).map_err(|f| f.message);
        drop(hushed);
        let code = code?;
        if code != 0 {
            return Err(BuildError::RunFailed { cmd: argv.join(" "), code }.into());
        }
        let upper = containers.dir_of(&id).upper();
        drop_mount_stubs(&upper, &lowers);
        Ok(layer_from_upper(self.store, &upper, &lowers, &below, source_date_epoch())?)
    }
}

/// The argv of a RUN: `RUN <<EOF` alone runs the heredoc as the script; heredocs feeding a command
/// are handed to the shell with the command, as the shell knows heredocs; otherwise as CMD's.
fn run_argv(cmd: &Command, heredocs: &[Heredoc], shell: &[String]) -> Vec<String> {
    match (cmd, heredocs.first()) {
        (Command::Shell(s), Some(h))
            if s.trim().trim_start_matches("<<").trim_start_matches('-').trim_matches(['"', '\''])
                == h.name =>
        {
            let mut a = shell.to_vec();
            a.push(h.body.clone());
            a
        }
        (Command::Shell(s), Some(_)) => {
            let mut text = s.clone();
            for h in heredocs {
                text.push('\n');
                text.push_str(&h.body);
                text.push_str(&h.name);
            }
            let mut a = shell.to_vec();
            a.push(text);
            a
        }
        (c, _) => argv_of(c, shell),
    }
}

/// A RUN's environment: the config's `Env`, then the stage's ARGs that ENV does not override (sorted,
/// as they are part of the cache key, returned second).
fn run_env(config_env: &[String], args: &HashMap<String, String>) -> (Vec<String>, Vec<String>) {
    let mut env = config_env.to_vec();
    let mut arg_env: Vec<String> = args
        .iter()
        .filter(|(k, _)| !env.iter().any(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k.as_str())))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    arg_env.sort();
    env.extend(arg_env.iter().cloned());
    (env, arg_env)
}

/// `RUN --network=…` against the build's `--network`.
fn network_mode(flag: Option<&str>, default: NetworkMode) -> Result<NetworkMode, String> {
    match flag.unwrap_or("") {
        "host" => Ok(NetworkMode::Host),
        "none" => Ok(NetworkMode::None),
        "" | "default" => Ok(default),
        other => Err(format!("RUN --network={other} is not supported (none, host, default)")),
    }
}

/// A container removed when the step is done, whatever happened.
struct RemoveContainer<'a> {
    containers: &'a Containers,
    id: String,
}

impl Drop for RemoveContainer<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.containers.remove_files(&self.id) {
            log::warn!("could not remove build container {}: {e}", self.id);
        }
    }
}

/// The runtime bind-mounts /etc/hosts, /etc/resolv.conf and /etc/hostname over files it creates when the
/// image lacks them; those empty stubs are the runtime's, not the step's, and stay out of the layer (as
/// docker and buildah keep them out). The step may have replaced /etc with a symlink to anywhere: the
/// upper is walked from descriptors, so only a real `etc` directory of the upper is touched.
fn drop_mount_stubs(upper: &Path, lowers: &[PathBuf]) {
    let etc = Dir::open(upper).ok().and_then(|root| root.entry(std::ffi::OsStr::new("etc")).ok().flatten());
    let Some(etc) = etc.filter(|e| e.meta().is_dir()).and_then(|e| e.open_dir().ok()) else { return };
    for f in ["hosts", "resolv.conf", "hostname"] {
        let name = std::ffi::OsStr::new(f);
        let stub = etc.entry(name).ok().flatten().is_some_and(|e| e.meta().is_file() && e.meta().size() == 0);
        let in_image =
            crate::layer::lower::lookup(lowers, format!("etc/{f}").as_bytes()).ok().flatten().is_some();
        if stub && !in_image {
            let _ = etc.remove_file(name);
        }
    }
}

/// rimg's stdout and stderr pointed at /dev/null while it lives (a step container inherits them), put
/// back when dropped.
struct Hushed {
    saved: [std::os::fd::OwnedFd; 2],
}

impl Hushed {
    fn new() -> std::io::Result<Hushed> {
        use std::os::fd::AsFd;
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        let saved = [
            rustix::io::fcntl_dupfd_cloexec(std::io::stdout().as_fd(), 3)?,
            rustix::io::fcntl_dupfd_cloexec(std::io::stderr().as_fd(), 3)?,
        ];
        for target in [1, 2] {
            nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), target)?;
        }
        Ok(Hushed { saved })
    }
}

impl Drop for Hushed {
    fn drop(&mut self) {
        for (fd, target) in self.saved.iter().zip([1, 2]) {
            let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(fd), target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> Vec<String> {
        vec!["/bin/sh".to_string(), "-c".to_string()]
    }

    fn heredoc(name: &str, body: &str) -> Heredoc {
        Heredoc { name: name.into(), body: body.into(), strip_tabs: false, quoted: false }
    }

    #[test]
    fn run_argv_forms() {
        let exec = Command::Exec(vec!["ls".into(), "-l".into()]);
        assert_eq!(run_argv(&exec, &[], &sh()), ["ls", "-l"]);
        assert_eq!(run_argv(&Command::Shell("echo $A".into()), &[], &sh()), ["/bin/sh", "-c", "echo $A"]);
        // `RUN <<EOF`: the heredoc is the script.
        let doc = [heredoc("EOF", "set -e\necho hi\n")];
        assert_eq!(
            run_argv(&Command::Shell("<<EOF".into()), &doc, &sh()),
            ["/bin/sh", "-c", "set -e\necho hi\n"]
        );
        // `RUN python3 <<'PY'`: the shell gets the command with its heredoc.
        let doc = [heredoc("PY", "print(1)\n")];
        assert_eq!(
            run_argv(&Command::Shell("python3 <<'PY'".into()), &doc, &sh()),
            ["/bin/sh", "-c", "python3 <<'PY'\nprint(1)\nPY"]
        );
    }

    #[test]
    fn run_env_puts_args_after_env_and_env_wins() {
        let env = ["PATH=/bin".to_string(), "A=env".to_string()];
        let args = HashMap::from([
            ("A".to_string(), "arg".to_string()),
            ("Z".to_string(), "z".to_string()),
            ("B".to_string(), "b".to_string()),
        ]);
        let (all, arg_env) = run_env(&env, &args);
        assert_eq!(all, ["PATH=/bin", "A=env", "B=b", "Z=z"]);
        assert_eq!(arg_env, ["B=b", "Z=z"]);
    }

    #[test]
    fn run_network_flag() {
        assert_eq!(network_mode(None, NetworkMode::Host), Ok(NetworkMode::Host));
        assert_eq!(network_mode(Some("default"), NetworkMode::None), Ok(NetworkMode::None));
        assert_eq!(network_mode(Some("host"), NetworkMode::None), Ok(NetworkMode::Host));
        assert_eq!(network_mode(Some("none"), NetworkMode::Host), Ok(NetworkMode::None));
        assert!(network_mode(Some("bridge"), NetworkMode::None).unwrap_err().contains("not supported"));
    }
}
