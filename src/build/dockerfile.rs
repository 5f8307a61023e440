//! Dockerfile parsing: directives, comments, continuations, heredocs, exec and shell forms, flags.
//!
//! The parser keeps words unexpanded: substitution depends on ARG/ENV values known only while building, so
//! [`super::words::expand`] runs in the builder, step by step, as BuildKit does.

use super::words::{split_words, WordError};

/// A parse error, always with the 1-based line it refers to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Dockerfile line {line}: {msg}")]
pub struct ParseError {
    /// Line of the instruction.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

/// A command in exec form (`["a", "b"]`, run without a shell) or shell form (run with SHELL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// JSON array form.
    Exec(Vec<String>),
    /// Plain text for the shell.
    Shell(String),
}

/// A here-document attached to RUN or COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// Its name (`EOF`).
    pub name: String,
    /// The body, with a trailing newline per line.
    pub body: String,
    /// `<<-`: leading tabs were stripped.
    pub strip_tabs: bool,
    /// Quoted delimiter (`<<"EOF"`): no variable expansion inside.
    pub quoted: bool,
}

/// HEALTHCHECK settings, stored in the image config as docker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `NONE` disables an inherited check.
    pub test: Option<Command>,
    /// Flags such as `--interval=30s`, kept as text (durations are parsed when writing the config).
    pub flags: Vec<(String, String)>,
}

/// One instruction; word-valued fields are unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM [--platform=P] IMAGE [AS NAME]`.
    From {
        /// Image reference, stage name or `scratch`.
        image: String,
        /// Stage name.
        alias: Option<String>,
        /// `--platform`.
        platform: Option<String>,
    },
    /// `RUN [--network=…] CMD`.
    Run {
        /// What to run.
        cmd: Command,
        /// Here-documents that follow.
        heredocs: Vec<Heredoc>,
        /// `--network=none|host|default`.
        network: Option<String>,
    },
    /// `COPY`/`ADD` (`add` true for ADD).
    Copy {
        /// ADD rather than COPY.
        add: bool,
        /// Sources (context paths, or stage paths with `from`).
        srcs: Vec<String>,
        /// Destination in the image.
        dest: String,
        /// `--from=stage|image`.
        from: Option<String>,
        /// `--chown=user:group`.
        chown: Option<String>,
        /// `--chmod=0755`.
        chmod: Option<String>,
        /// Inline files (`COPY <<EOF /dest`).
        heredocs: Vec<Heredoc>,
    },
    /// `ENV K=V …` (or legacy `ENV K V`).
    Env(Vec<(String, String)>),
    /// `ARG NAME[=default] …`.
    Arg(Vec<(String, Option<String>)>),
    /// `WORKDIR`.
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `LABEL K=V …`.
    Label(Vec<(String, String)>),
    /// `EXPOSE 80/tcp …`.
    Expose(Vec<String>),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `SHELL ["sh","-c"]`.
    Shell(Vec<String>),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `MAINTAINER` (deprecated; becomes the author).
    Maintainer(String),
}

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line where it starts.
    pub line: usize,
    /// The instruction as written (for history entries and cache keys).
    pub text: String,
    /// Parsed form.
    pub instruction: Instruction,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// ARGs before the first FROM (usable in FROM lines).
    pub global_args: Vec<(String, Option<String>)>,
    /// Steps in order, FROMs included.
    pub steps: Vec<Step>,
}

impl Dockerfile {
    /// Parse a whole Dockerfile.
    pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
        let lines: Vec<&str> = text.lines().collect();
        let (escape, mut i) = parse_directives(&lines)?;
        let mut steps = Vec::new();
        let mut global_args = Vec::new();
        let mut seen_from = false;
        while i < lines.len() {
            let start = i;
            let l = lines[i].trim_start();
            if l.is_empty() || l.starts_with('#') {
                i += 1;
                continue;
            }
            let logical = join_continuations(&lines, &mut i, escape);
            let err = |msg: String| ParseError { line: start + 1, msg };
            let (word, rest) = match logical.split_once(char::is_whitespace) {
                Some((w, r)) => (w.to_string(), r.trim().to_string()),
                None => (logical.clone(), String::new()),
            };
            let keyword = word.to_ascii_uppercase();
            let heredocs = match keyword.as_str() {
                "RUN" | "COPY" | "ADD" => read_heredocs(&lines, &mut i, &rest).map_err(err)?,
                _ => Vec::new(),
            };
            let instruction = parse_instruction(&keyword, &rest, escape, heredocs).map_err(err)?;
            if let Instruction::Arg(a) = &instruction {
                if !seen_from {
                    global_args.extend(a.clone());
                    continue;
                }
            }
            if matches!(instruction, Instruction::From { .. }) {
                seen_from = true;
            } else if !seen_from {
                return Err(err(format!("{keyword} before the first FROM")));
            }
            steps.push(Step {
                line: start + 1,
                text: format!("{keyword} {rest}").trim().to_string(),
                instruction,
            });
        }
        if !seen_from {
            return Err(ParseError { line: lines.len().max(1), msg: "no FROM instruction".into() });
        }
        Ok(Dockerfile { escape, global_args, steps })
    }
}

/// Parser directives (`# escape=`…): only at the very top, before any comment that is not a directive.
/// Returns the escape character and the index of the first line after them.
fn parse_directives(lines: &[&str]) -> Result<(char, usize), ParseError> {
    let mut escape = '\\';
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        let Some(rest) = l.strip_prefix('#') else { break };
        let Some((k, v)) = rest.split_once('=') else { break };
        let k = k.trim().to_ascii_lowercase();
        if k.contains(' ') {
            break;
        }
        if k == "escape" {
            escape = match v.trim() {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(ParseError {
                        line: i + 1,
                        msg: format!("invalid escape directive {other:?}"),
                    })
                }
            };
        }
        i += 1;
    }
    Ok((escape, i))
}

/// The logical line starting at `lines[*i]`: lines ending in the escape character are joined with the
/// next; comment and empty lines inside a continuation are dropped. `*i` moves past it.
fn join_continuations(lines: &[&str], i: &mut usize, escape: char) -> String {
    let mut logical = String::new();
    let mut cur = lines[*i].trim_start().to_string();
    loop {
        let trimmed = cur.trim_end();
        let Some(body) = trimmed.strip_suffix(escape) else {
            logical.push_str(trimmed);
            *i += 1;
            return logical;
        };
        logical.push_str(body);
        *i += 1;
        loop {
            match lines.get(*i) {
                None => return logical,
                Some(n) if n.trim().is_empty() || n.trim_start().starts_with('#') => *i += 1,
                Some(n) => {
                    cur = n.to_string();
                    break;
                }
            }
        }
    }
}

/// The bodies of the heredocs `rest` opens (`<<EOF` …), read from the lines at `*i` on; `*i` moves
/// past their terminators.
fn read_heredocs(lines: &[&str], i: &mut usize, rest: &str) -> Result<Vec<Heredoc>, String> {
    let mut heredocs = Vec::new();
    for (name, strip_tabs, quoted) in heredoc_markers(rest) {
        let mut body = String::new();
        loop {
            let Some(line) = lines.get(*i) else {
                return Err(format!("unterminated heredoc <<{name}"));
            };
            *i += 1;
            let cand = if strip_tabs { line.trim_start_matches('\t') } else { line };
            if cand == name {
                break;
            }
            body.push_str(cand);
            body.push('\n');
        }
        heredocs.push(Heredoc { name, body, strip_tabs, quoted });
    }
    Ok(heredocs)
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'` markers in an instruction's text.
fn heredoc_markers(s: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(p) = rest.find("<<") {
        let mut t = &rest[p + 2..];
        let strip = t.starts_with('-');
        if strip {
            t = &t[1..];
        }
        let quoted = t.starts_with('"') || t.starts_with('\'');
        let t2 = t.trim_start_matches(['"', '\'']);
        let name: String = t2.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            out.push((name.clone(), strip, quoted));
        }
        rest = &t2[name.len()..];
    }
    out
}

fn parse_instruction(
    kw: &str,
    rest: &str,
    escape: char,
    heredocs: Vec<Heredoc>,
) -> Result<Instruction, String> {
    let we = |e: WordError| e.to_string();
    Ok(match kw {
        "FROM" => parse_from(rest, escape)?,
        "RUN" => {
            let (flags, args) = take_flags(rest, escape, &["network", "mount", "security"])?;
            if flag(&flags, "mount").is_some() || flag(&flags, "security").is_some() {
                return Err("RUN --mount and --security are not supported by rimg".into());
            }
            if args.is_empty() {
                return Err("RUN needs a command".into());
            }
            Instruction::Run { cmd: command(&args)?, heredocs, network: flag(&flags, "network") }
        }
        "COPY" | "ADD" => parse_copy(kw, rest, escape, heredocs)?,
        "ENV" => Instruction::Env(key_values(rest, escape, true)?),
        "LABEL" => Instruction::Label(key_values(rest, escape, false)?),
        "ARG" => {
            let words = split_words(rest, escape).map_err(we)?;
            if words.is_empty() {
                return Err("ARG needs a name".into());
            }
            Instruction::Arg(
                words
                    .into_iter()
                    .map(|w| match w.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (w, None),
                    })
                    .collect(),
            )
        }
        "WORKDIR" => Instruction::Workdir(one(rest, kw)?),
        "USER" => Instruction::User(one(rest, kw)?),
        "STOPSIGNAL" => Instruction::StopSignal(one(rest, kw)?),
        "MAINTAINER" => Instruction::Maintainer(rest.to_string()),
        "CMD" => Instruction::Cmd(command(rest)?),
        "ENTRYPOINT" => Instruction::Entrypoint(command(rest)?),
        "SHELL" => {
            let v = json_array(rest)
                .map_err(|_| "SHELL needs a JSON array, e.g. [\"/bin/sh\", \"-c\"]".to_string())?;
            if v.is_empty() {
                return Err("SHELL needs at least one word".into());
            }
            Instruction::Shell(v)
        }
        "EXPOSE" => Instruction::Expose(split_words(rest, escape).map_err(we)?),
        "VOLUME" => Instruction::Volume(if rest.trim_start().starts_with('[') {
            json_array(rest)?
        } else {
            split_words(rest, escape).map_err(we)?
        }),
        "HEALTHCHECK" => parse_healthcheck(rest, escape)?,
        "ONBUILD" => return Err("ONBUILD is not supported by rimg".into()),
        other => return Err(format!("unknown instruction {other}")),
    })
}

/// `FROM IMAGE [AS NAME]` with `--platform`.
fn parse_from(rest: &str, escape: char) -> Result<Instruction, String> {
    let we = |e: WordError| e.to_string();
    let (flags, args) = take_flags(rest, escape, &["platform"])?;
    let words = split_words(&args, escape).map_err(we)?;
    let platform = flag(&flags, "platform");
    Ok(match words.as_slice() {
        [img] => Instruction::From { image: img.clone(), alias: None, platform },
        [img, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            Instruction::From { image: img.clone(), alias: Some(name.to_ascii_lowercase()), platform }
        }
        _ => return Err("FROM needs IMAGE [AS NAME]".into()),
    })
}

/// `COPY`/`ADD` with their flags, sources (JSON or words, heredoc markers) and destination.
fn parse_copy(kw: &str, rest: &str, escape: char, heredocs: Vec<Heredoc>) -> Result<Instruction, String> {
    let we = |e: WordError| e.to_string();
    let (flags, args) = take_flags(
        rest,
        escape,
        &["from", "chown", "chmod", "link", "checksum", "keep-git-dir", "parents", "exclude"],
    )?;
    for unsupported in ["checksum", "keep-git-dir", "parents", "exclude"] {
        if flag(&flags, unsupported).is_some() {
            return Err(format!("{kw} --{unsupported} is not supported by rimg"));
        }
    }
    if kw == "ADD" && flag(&flags, "from").is_some() {
        return Err("ADD does not take --from; use COPY --from".into());
    }
    let mut words = if args.trim_start().starts_with('[') {
        json_array(&args)?
    } else {
        split_words(&args, escape).map_err(we)?
    };
    // Heredoc markers are sources: replace `<<EOF` by a pseudo-source the builder resolves.
    for w in words.iter_mut() {
        if let Some(m) = w.strip_prefix("<<") {
            *w = format!("<<{}", m.trim_start_matches('-').trim_matches(['"', '\'']));
        }
    }
    if words.len() < 2 {
        return Err(format!("{kw} needs at least one source and a destination"));
    }
    let dest = words.pop().unwrap_or_default();
    Ok(Instruction::Copy {
        add: kw == "ADD",
        srcs: words,
        dest,
        from: flag(&flags, "from"),
        chown: flag(&flags, "chown"),
        chmod: flag(&flags, "chmod"),
        heredocs,
    })
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD …`.
fn parse_healthcheck(rest: &str, escape: char) -> Result<Instruction, String> {
    let (flags, args) =
        take_flags(rest, escape, &["interval", "timeout", "start-period", "start-interval", "retries"])?;
    let args = args.trim();
    if args.eq_ignore_ascii_case("none") {
        Ok(Instruction::Healthcheck(Healthcheck { test: None, flags }))
    } else {
        let Some(c) = args.strip_prefix("CMD").or_else(|| args.strip_prefix("cmd")) else {
            return Err("HEALTHCHECK needs NONE or CMD …".into());
        };
        Ok(Instruction::Healthcheck(Healthcheck { test: Some(command(c.trim())?), flags }))
    }
}

fn one(rest: &str, kw: &str) -> Result<String, String> {
    let r = rest.trim();
    if r.is_empty() {
        return Err(format!("{kw} needs an argument"));
    }
    Ok(r.to_string())
}

fn flag(flags: &[(String, String)], name: &str) -> Option<String> {
    flags.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// Leading `--name=value` flags; unknown ones are an error naming the flag.
fn take_flags(rest: &str, escape: char, allowed: &[&str]) -> Result<(Vec<(String, String)>, String), String> {
    let mut flags = Vec::new();
    let mut r = rest.trim_start();
    while let Some(f) = r.strip_prefix("--") {
        let end = f.find(char::is_whitespace).unwrap_or(f.len());
        let token = &f[..end];
        let (k, v) = match token.split_once('=') {
            Some((k, v)) => (k, v),
            None => (token, "true"),
        };
        if !allowed.contains(&k) {
            return Err(format!("unknown flag --{k}"));
        }
        let v = split_words(v, escape).map_err(|e| e.to_string())?.join(" ");
        flags.push((k.to_string(), v));
        r = f[end..].trim_start();
    }
    Ok((flags, r.to_string()))
}

/// Exec form when the text is a JSON array of strings, shell form otherwise (docker's rule: anything that
/// fails to parse as a JSON string array is shell form).
fn command(s: &str) -> Result<Command, String> {
    let t = s.trim();
    if t.starts_with('[') {
        if let Ok(v) = json_array(t) {
            return Ok(Command::Exec(v));
        }
    }
    Ok(Command::Shell(t.to_string()))
}

fn json_array(s: &str) -> Result<Vec<String>, String> {
    serde_json::from_str::<Vec<String>>(s.trim()).map_err(|e| format!("invalid JSON array {s:?}: {e}"))
}

/// `K=V K2="v 2"` pairs; `legacy` allows ENV's old `K V with spaces` form.
fn key_values(rest: &str, escape: char, legacy: bool) -> Result<Vec<(String, String)>, String> {
    let words = split_words(rest, escape).map_err(|e| e.to_string())?;
    if words.is_empty() {
        return Err("needs at least one key=value".into());
    }
    if !words[0].contains('=') {
        if !legacy && words.len() < 2 {
            return Err(format!("{:?} has no value", words[0]));
        }
        // Legacy form: the key, then everything else verbatim (minus the separating whitespace).
        let t = rest.trim_start();
        let key_len = t.find(char::is_whitespace).unwrap_or(t.len());
        return Ok(vec![(t[..key_len].to_string(), t[key_len..].trim_start().to_string())]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{w:?} is not key=value")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_realistic_file() {
        let df = Dockerfile::parse(
            r#"# syntax=docker/dockerfile:1
# escape=\
ARG BASE=alpine:3.20.3
FROM ${BASE} AS build
# a comment
RUN apk add gcc \
    # comment inside continuation
    musl-dev
COPY --chown=1000:1000 --chmod=0755 a b /dst/
ENV A=1 B="two words" \
    C=3
ENV LEGACY value with spaces
RUN <<EOF
echo hi
EOF
CMD ["sh", "-c", "echo"]
ENTRYPOINT echo hello
FROM scratch
COPY --from=build /x /x
"#,
        )
        .unwrap();
        assert_eq!(df.global_args, vec![("BASE".into(), Some("alpine:3.20.3".into()))]);
        assert_eq!(df.steps.len(), 10);
        assert!(
            matches!(&df.steps[1].instruction, Instruction::Run { cmd: Command::Shell(s), .. } if s == "apk add gcc     musl-dev")
        );
        assert_eq!(
            df.steps[3].instruction,
            Instruction::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "3".into())
            ])
        );
        assert_eq!(
            df.steps[4].instruction,
            Instruction::Env(vec![("LEGACY".into(), "value with spaces".into())])
        );
        match &df.steps[5].instruction {
            Instruction::Run { heredocs, .. } => assert_eq!(heredocs[0].body, "echo hi\n"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            df.steps[6].instruction,
            Instruction::Cmd(Command::Exec(vec!["sh".into(), "-c".into(), "echo".into()]))
        );
        assert!(matches!(&df.steps[9].instruction, Instruction::Copy { from: Some(f), .. } if f == "build"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = Dockerfile::parse("FROM a\nFROBNICATE x\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(Dockerfile::parse("RUN x\n").is_err());
        assert!(Dockerfile::parse("FROM a\nRUN --mount=type=cache x\n")
            .unwrap_err()
            .msg
            .contains("not supported"));
    }

    #[test]
    fn backtick_escape() {
        let df = Dockerfile::parse("# escape=`\nFROM a\nRUN echo a `\n  b\n").unwrap();
        assert!(
            matches!(&df.steps[1].instruction, Instruction::Run { cmd: Command::Shell(s), .. } if s == "echo a   b")
        );
    }
}
