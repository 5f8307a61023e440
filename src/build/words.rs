//! Word-level rules of the Dockerfile language: variable substitution (`$VAR`, `${VAR:-default}`, …) and
//! splitting `key=value` lists with quotes and escapes, as BuildKit's shell lexer does.
//!
//! Written by hand because no maintained crate implements Dockerfile's (not POSIX sh's) rules: substitution
//! happens in the builder, before any shell, and only for some instructions.

use std::collections::HashMap;

/// A substitution or quoting error, with the word it happened in.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WordError {
    /// `${` without `}`.
    #[error("missing '}}' in {0:?}")]
    Unterminated(String),
    /// `${VAR:?message}` with VAR unset or empty.
    #[error("{0}")]
    Required(String),
    /// Unsupported modifier like `${VAR/x/y}`.
    #[error("unsupported modifier in {0:?}")]
    Modifier(String),
    /// Unbalanced quotes.
    #[error("unterminated quote in {0:?}")]
    Quote(String),
}

/// Expand variables in `word` with `vars`; quotes are kept, escapes of `$` are honoured (`\$` → `$`).
pub fn expand(word: &str, vars: &HashMap<String, String>, escape: char) -> Result<String, WordError> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::with_capacity(word.len());
    let mut i = 0;
    let mut in_single = false;
    while i < chars.len() {
        let c = chars[i];
        if c == escape && i + 1 < chars.len() && !in_single {
            let n = chars[i + 1];
            if n == '$' {
                out.push('$');
            } else {
                out.push(c);
                out.push(n);
            }
            i += 2;
            continue;
        }
        if c == '\'' {
            in_single = !in_single;
            out.push(c);
            i += 1;
            continue;
        }
        if c != '$' || in_single || i + 1 >= chars.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let n = chars[i + 1];
        if n == '{' {
            let start = i + 2;
            let mut depth = 1;
            let mut j = start;
            while j < chars.len() {
                match chars[j] {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            if j >= chars.len() {
                return Err(WordError::Unterminated(word.to_string()));
            }
            let inner: String = chars[start..j].iter().collect();
            out.push_str(&expand_braced(&inner, vars, escape, word)?);
            i = j + 1;
        } else if n == '_' || n.is_ascii_alphabetic() {
            let mut j = i + 1;
            while j < chars.len() && (chars[j] == '_' || chars[j].is_ascii_alphanumeric()) {
                j += 1;
            }
            let name: String = chars[i + 1..j].iter().collect();
            out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
            i = j;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

fn expand_braced(
    inner: &str,
    vars: &HashMap<String, String>,
    escape: char,
    word: &str,
) -> Result<String, WordError> {
    let name_end = inner.find(|c: char| !(c == '_' || c.is_ascii_alphanumeric())).unwrap_or(inner.len());
    let (name, rest) = inner.split_at(name_end);
    let val = vars.get(name);
    if rest.is_empty() {
        return Ok(val.cloned().unwrap_or_default());
    }
    let set_nonempty = val.is_some_and(|v| !v.is_empty());
    let (op, arg) = if let Some(a) = rest.strip_prefix(":-") {
        (":-", a)
    } else if let Some(a) = rest.strip_prefix(":+") {
        (":+", a)
    } else if let Some(a) = rest.strip_prefix(":?") {
        (":?", a)
    } else if let Some(a) = rest.strip_prefix('-') {
        ("-", a)
    } else if let Some(a) = rest.strip_prefix('+') {
        ("+", a)
    } else if let Some(a) = rest.strip_prefix('?') {
        ("?", a)
    } else {
        return Err(WordError::Modifier(word.to_string()));
    };
    let arg = expand(arg, vars, escape)?;
    Ok(match op {
        ":-" if set_nonempty => val.cloned().unwrap_or_default(),
        ":-" => arg,
        "-" => val.cloned().unwrap_or(arg),
        ":+" if set_nonempty => arg,
        ":+" => String::new(),
        "+" if val.is_some() => arg,
        "+" => String::new(),
        ":?" if set_nonempty => val.cloned().unwrap_or_default(),
        "?" if val.is_some() => val.cloned().unwrap_or_default(),
        _ => {
            return Err(WordError::Required(if arg.is_empty() {
                format!("{name}: parameter not set or null")
            } else {
                format!("{name}: {arg}")
            }))
        }
    })
}

/// Split a line into words on unquoted whitespace, removing quotes and escapes (`a "b c" d\ e` → 3 words).
pub fn split_words(s: &str, escape: char) -> Result<Vec<String>, WordError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if c == escape => match chars.next() {
                Some(n) if n == '"' || n == escape || n == '$' => cur.push(n),
                Some(n) => {
                    cur.push(c);
                    cur.push(n);
                }
                None => cur.push(c),
            },
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                has = true;
            }
            None if c == escape => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                has = true;
            }
            None if c.is_whitespace() => {
                if has {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            None => {
                cur.push(c);
                has = true;
            }
        }
    }
    if quote.is_some() {
        return Err(WordError::Quote(s.to_string()));
    }
    if has {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<String, String> {
        [("A", "1"), ("E", ""), ("P", "/usr/bin")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitution_rules() {
        let v = vars();
        let e = |s: &str| expand(s, &v, '\\').unwrap();
        assert_eq!(e("$A-${A}"), "1-1");
        assert_eq!(e("${E:-d}|${E-d}|${U-d}|${U:-d}"), "d||d|d");
        assert_eq!(e("${A:+x}|${E:+x}|${E+x}|${U+x}"), "x||x|");
        assert_eq!(e("\\$A '$A'"), "$A '$A'");
        assert_eq!(e("${U:-${P}/x}"), "/usr/bin/x");
        assert_eq!(e("$1 $"), "$1 $");
        assert!(matches!(expand("${U:?must set}", &v, '\\'), Err(WordError::Required(_))));
        assert!(expand("${A", &v, '\\').is_err());
    }

    #[test]
    fn word_splitting() {
        assert_eq!(split_words(r#"a "b c" d\ e 'f g'"#, '\\').unwrap(), ["a", "b c", "d e", "f g"]);
        assert_eq!(split_words(r#"K="v \"q\"""#, '\\').unwrap(), [r#"K=v "q""#]);
        assert!(split_words("\"open", '\\').is_err());
    }
}
