//! Config-only instructions (ARG, ENV, LABEL, WORKDIR, USER, CMD, ENTRYPOINT, EXPOSE, VOLUME, SHELL,
//! STOPSIGNAL, MAINTAINER, HEALTHCHECK) as a pure function of the instruction, the stage's variables
//! and its config: the history text (which is also the step's cache key, see [`super::cache`]) and the
//! typed change. Nothing here touches the store, so every instruction is unit-tested without root.

use crate::build::config::{parse_duration_ns, ConfigEdit, Healthcheck, ImageConfig};
use crate::build::dockerfile::{self, Command, Instruction};
use crate::build::words::expand;
use serde_json::json;
use std::collections::HashMap;

/// Word expansion with a stage's variables (declared ARGs, overridden by ENV).
pub(super) struct Words<'a> {
    /// Variable values.
    pub vars: &'a HashMap<String, String>,
    /// The Dockerfile's escape character.
    pub escape: char,
}

impl Words<'_> {
    /// `word` with `$VAR`, `${VAR:-…}` … substituted.
    pub fn x(&self, word: &str) -> Result<String, String> {
        expand(word, self.vars, self.escape).map_err(|e| e.to_string())
    }

    fn all(&self, words: &[String]) -> Result<Vec<String>, String> {
        words.iter().map(|w| self.x(w)).collect()
    }

    fn pairs(&self, pairs: &[(String, String)], expand_keys: bool) -> Result<Vec<(String, String)>, String> {
        pairs
            .iter()
            .map(|(k, v)| Ok((if expand_keys { self.x(k)? } else { k.clone() }, self.x(v)?)))
            .collect()
    }
}

/// The history text and the config change of a config-only instruction; `config` is the stage's config
/// before it (for a relative WORKDIR and the shell of a shell-form CMD or ENTRYPOINT).
pub(super) fn config_edit(
    instruction: &Instruction,
    words: &Words<'_>,
    config: &ImageConfig,
) -> Result<(String, ConfigEdit), String> {
    Ok(match instruction {
        Instruction::Arg(list) => {
            let names: Vec<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
            (format!("ARG {}", names.join(" ")), ConfigEdit::Nothing)
        }
        Instruction::Env(pairs) => {
            let pairs = words.pairs(pairs, false)?;
            (format!("ENV {}", key_values(&pairs)), ConfigEdit::Env(pairs))
        }
        Instruction::Label(pairs) => {
            let pairs = words.pairs(pairs, true)?;
            (format!("LABEL {}", key_values(&pairs)), ConfigEdit::Labels(pairs))
        }
        Instruction::Workdir(w) => {
            let dir = absolute_workdir(&words.x(w)?, config.working_dir());
            (format!("WORKDIR {dir}"), ConfigEdit::WorkingDir(dir))
        }
        Instruction::User(u) => {
            let u = words.x(u)?;
            (format!("USER {u}"), ConfigEdit::User(u))
        }
        Instruction::Cmd(c) => {
            let argv = argv_of(c, &config.shell());
            (format!("CMD {}", json!(argv)), ConfigEdit::Cmd(argv))
        }
        Instruction::Entrypoint(c) => {
            let argv = argv_of(c, &config.shell());
            (format!("ENTRYPOINT {}", json!(argv)), ConfigEdit::Entrypoint(argv))
        }
        Instruction::Expose(ports) => {
            let ports: Vec<String> = words
                .all(ports)?
                .into_iter()
                .map(|p| if p.contains('/') { p } else { format!("{p}/tcp") })
                .collect();
            (format!("EXPOSE {}", ports.join(" ")), ConfigEdit::ExposedPorts(ports))
        }
        Instruction::Volume(vols) => {
            let vols = words.all(vols)?;
            (format!("VOLUME {}", json!(vols)), ConfigEdit::Volumes(vols))
        }
        Instruction::Shell(sh) => (format!("SHELL {}", json!(sh)), ConfigEdit::Shell(sh.clone())),
        Instruction::StopSignal(s) => {
            let s = words.x(s)?;
            (format!("STOPSIGNAL {s}"), ConfigEdit::StopSignal(s))
        }
        Instruction::Maintainer(m) => (format!("MAINTAINER {m}"), ConfigEdit::Author(m.clone())),
        Instruction::Healthcheck(hc) => {
            let hc = healthcheck(hc)?;
            let text = serde_json::to_value(&hc).map_err(|e| e.to_string())?;
            (format!("HEALTHCHECK {text}"), ConfigEdit::Healthcheck(hc))
        }
        Instruction::From { .. } | Instruction::Run { .. } | Instruction::Copy { .. } => {
            return Err("not a config instruction".into())
        }
    })
}

/// `K=V K2=V2`, as history texts show ENV and LABEL (values unquoted, as docker's legacy builder did).
fn key_values(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// WORKDIR `w` against the current working directory (`/` when unset); not normalised, as before.
fn absolute_workdir(w: &str, current: &str) -> String {
    if w.starts_with('/') {
        return w.to_string();
    }
    let current = if current.is_empty() { "/" } else { current };
    format!("{}/{w}", current.trim_end_matches('/'))
}

/// The argv of a command: exec form as written, shell form as `shell… text`.
pub(super) fn argv_of(c: &Command, shell: &[String]) -> Vec<String> {
    match c {
        Command::Exec(a) => a.clone(),
        Command::Shell(s) => {
            let mut a = shell.to_vec();
            a.push(s.clone());
            a
        }
    }
}

/// HEALTHCHECK as docker stores it: `Test` from the command (`NONE` disables an inherited check),
/// durations in nanoseconds, `Retries` a number.
fn healthcheck(hc: &dockerfile::Healthcheck) -> Result<Healthcheck, String> {
    let mut out = Healthcheck {
        test: Some(match &hc.test {
            None => vec!["NONE".to_string()],
            Some(Command::Exec(a)) => std::iter::once("CMD".to_string()).chain(a.iter().cloned()).collect(),
            Some(Command::Shell(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
        }),
        ..Healthcheck::default()
    };
    for (k, val) in &hc.flags {
        let duration = || parse_duration_ns(val).ok_or_else(|| format!("--{k} {val:?} is not a duration"));
        match k.as_str() {
            "interval" => out.interval = Some(duration()?),
            "timeout" => out.timeout = Some(duration()?),
            "start-period" => out.start_period = Some(duration()?),
            "start-interval" => out.start_interval = Some(duration()?),
            _ => {
                let n = val.parse::<u64>().ok().and_then(|n| i64::try_from(n).ok());
                out.retries = Some(n.ok_or_else(|| format!("--retries {val:?} is not a number"))?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::config::{history_entry, ImageConfig};
    use crate::build::dockerfile::Dockerfile;
    use crate::registry::Platform;

    const CREATED: &str = "2023-11-14T22:13:20Z";

    /// Run the config-only steps of `dockerfile` (one stage) as the builder does, from scratch on
    /// linux/amd64, every step at `CREATED`.
    fn build(dockerfile: &str) -> ImageConfig {
        let df = Dockerfile::parse(dockerfile).unwrap();
        let mut config = ImageConfig::scratch(&Platform::new("linux", "amd64", None));
        let mut args = HashMap::new();
        for step in df.steps.iter().skip(1) {
            if let Instruction::Arg(list) = &step.instruction {
                args.extend(list.iter().filter_map(|(k, v)| Some((k.clone(), v.clone()?))));
            }
            let mut vars = args.clone();
            vars.extend(
                config.env().iter().filter_map(|e| e.split_once('=')).map(|(k, v)| (k.into(), v.into())),
            );
            let (text, edit) =
                config_edit(&step.instruction, &Words { vars: &vars, escape: '\\' }, &config).unwrap();
            config.apply(&edit);
            config.push_history(history_entry(&format!("/bin/sh -c #(nop) {text}"), CREATED, true, None));
        }
        config
    }

    /// Every config instruction, with the config and history texts rimg 6aa044c wrote for it (its
    /// `SOURCE_DATE_EPOCH=1700000000 rimg build` of this Dockerfile, byte for byte): the history texts are
    /// also the steps' cache keys.
    #[test]
    fn config_instructions_give_what_rimg_always_wrote() {
        let config = build(
            r#"FROM scratch
ARG V=1
ENV A=1 B="two words" PATH=/usr/bin
ENV A=3
ENV LEGACY value with spaces
LABEL x=1 "y z"=$V
LABEL x=2
EXPOSE 80 53/udp 80
VOLUME /data /var/lib
VOLUME ["/logs"]
USER app:app
WORKDIR /srv
WORKDIR sub/../other
SHELL ["/bin/bash", "-c"]
CMD echo hi $A
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=3s --start-period=1m30s --start-interval=500ms --retries=3 CMD curl -f http://x/
MAINTAINER me <me@example.com>
"#,
        );
        let written = String::from_utf8(config.to_json().unwrap()).unwrap();
        let expected = concat!(
            r##"{"architecture":"amd64","author":"me <me@example.com>","config":{"Cmd":["/bin/bash","-c","echo hi $A"##,
            r##""],"Env":["B=two words","PATH=/usr/bin","A=3","LEGACY=value with spaces"],"ExposedPorts":{"53/udp":{"##,
            r##"},"80/tcp":{}},"Healthcheck":{"Interval":30000000000,"Retries":3,"StartInterval":500000000,"StartPer"##,
            r##"iod":90000000000,"Test":["CMD-SHELL","curl -f http://x/"],"Timeout":3000000000},"Labels":{"x":"2","y"##,
            r##" z":"1"},"Shell":["/bin/bash","-c"],"StopSignal":"SIGINT","User":"app:app","Volumes":{"/data":{},"/l"##,
            r##"ogs":{},"/var/lib":{}},"WorkingDir":"/srv/sub/../other"},"created":"2023-11-14T22:13:20Z","history":"##,
            r##"[{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) ARG V","empty_layer":true},{"crea"##,
            r##"ted":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) ENV A=1 B=two words PATH=/usr/bin","empt"##,
            r##"y_layer":true},{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) ENV A=3","empty_lay"##,
            r##"er":true},{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) ENV LEGACY=value with sp"##,
            r##"aces","empty_layer":true},{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) LABEL x="##,
            r##"1 y z=1","empty_layer":true},{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) LABEL"##,
            r##" x=2","empty_layer":true},{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) EXPOSE 8"##,
            r##"0/tcp 53/udp 80/tcp","empty_layer":true},{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c "##,
            r##"#(nop) VOLUME [\"/data\",\"/var/lib\"]","empty_layer":true},{"created":"2023-11-14T22:13:20Z","creat"##,
            r##"ed_by":"/bin/sh -c #(nop) VOLUME [\"/logs\"]","empty_layer":true},{"created":"2023-11-14T22:13:20Z","##,
            r##""created_by":"/bin/sh -c #(nop) USER app:app","empty_layer":true},{"created":"2023-11-14T22:13:20Z","##,
            r##""created_by":"/bin/sh -c #(nop) WORKDIR /srv","empty_layer":true},{"created":"2023-11-14T22:13:20Z","##,
            r##""created_by":"/bin/sh -c #(nop) WORKDIR /srv/sub/../other","empty_layer":true},{"created":"2023-11-1"##,
            r##"4T22:13:20Z","created_by":"/bin/sh -c #(nop) SHELL [\"/bin/bash\",\"-c\"]","empty_layer":true},{"cre"##,
            r##"ated":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) CMD [\"/bin/bash\",\"-c\",\"echo hi $A\"##,
            r##""]","empty_layer":true},{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) STOPSIGNAL"##,
            r##" SIGINT","empty_layer":true},{"created":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) HEALT"##,
            r##"HCHECK {\"Interval\":30000000000,\"Retries\":3,\"StartInterval\":500000000,\"StartPeriod\":900000000"##,
            r##"00,\"Test\":[\"CMD-SHELL\",\"curl -f http://x/\"],\"Timeout\":3000000000}","empty_layer":true},{"cre"##,
            r##"ated":"2023-11-14T22:13:20Z","created_by":"/bin/sh -c #(nop) MAINTAINER me <me@example.com>","empty_"##,
            r##"layer":true}],"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"##,
        );
        assert_eq!(written, expected);
    }

    #[test]
    fn shell_forms_use_the_stage_shell_and_workdir_is_relative_to_the_last() {
        let config = build("FROM scratch\nWORKDIR /a/\nWORKDIR b\nCMD run it\nSHELL [\"/bin/ash\", \"-eo\"]\nENTRYPOINT go\n");
        assert_eq!(config.working_dir(), "/a/b");
        let doc: serde_json::Value = serde_json::from_slice(&config.to_json().unwrap()).unwrap();
        assert_eq!(doc["config"]["Entrypoint"], json!(["/bin/ash", "-eo", "go"]));
        assert!(doc["config"].get("Cmd").is_none(), "ENTRYPOINT drops the CMD before it");
        let texts: Vec<_> = config.history().iter().filter_map(|h| h.created_by().clone()).collect();
        assert_eq!(texts[2], r#"/bin/sh -c #(nop) CMD ["/bin/sh","-c","run it"]"#);
        assert_eq!(texts[4], r#"/bin/sh -c #(nop) ENTRYPOINT ["/bin/ash","-eo","go"]"#);
    }

    #[test]
    fn healthcheck_none_and_exec_form() {
        let config = build("FROM scratch\nHEALTHCHECK CMD [\"/bin/check\", \"a\"]\n");
        let doc: serde_json::Value = serde_json::from_slice(&config.to_json().unwrap()).unwrap();
        assert_eq!(doc["config"]["Healthcheck"], json!({"Test": ["CMD", "/bin/check", "a"]}));
        let config = build("FROM scratch\nHEALTHCHECK NONE\n");
        assert_eq!(
            config.history()[0].created_by().as_deref(),
            Some(r#"/bin/sh -c #(nop) HEALTHCHECK {"Test":["NONE"]}"#)
        );
    }

    #[test]
    fn bad_values_are_errors_naming_the_flag() {
        let config = ImageConfig::scratch(&Platform::new("linux", "amd64", None));
        let vars = HashMap::new();
        let words = Words { vars: &vars, escape: '\\' };
        for (line, error) in [
            ("HEALTHCHECK --interval=5 CMD x", "--interval \"5\" is not a duration"),
            ("HEALTHCHECK --retries=-1 CMD x", "--retries \"-1\" is not a number"),
            ("ENV A=${B:?needed}", "needed"),
        ] {
            let df = Dockerfile::parse(&format!("FROM scratch\n{line}\n")).unwrap();
            let err = config_edit(&df.steps[1].instruction, &words, &config).unwrap_err();
            assert!(err.contains(error), "{line}: {err}");
        }
    }
}
