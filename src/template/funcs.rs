//! The functions a template can call: Go's builtins (`and`, `or`, `not`, `len`, `index`, `slice`,
//! `print`, `printf`, `println`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `html`, `urlquery`) and the ones
//! docker adds (`json`, `split`, `join`, `title`, `lower`, `upper`, `pad`, `truncate`). In a table's
//! header docker swaps its own for ones that return their first argument, so `{{upper .Name}}` heads
//! its column `NAME`, not `NAME` upper-cased twice; [`Mode::Header`] does the same.

use super::value::{json_type_name, print, print_json, V};
use super::TemplateError;
use serde_json::Value;

/// Rendering rows or the header of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Rows,
    Header,
}

fn err(msg: impl Into<String>) -> TemplateError {
    TemplateError::Exec(msg.into())
}

fn want(name: &str, args: &[V], n: usize) -> Result<(), TemplateError> {
    if args.len() != n {
        return Err(err(format!("wrong number of args for {name}: want {n} got {}", args.len())));
    }
    Ok(())
}

fn as_str<'a>(name: &str, v: &'a V) -> Result<&'a str, TemplateError> {
    match v {
        V::J(Value::String(s)) => Ok(s),
        other => {
            Err(err(format!("wrong type for value; expected string; got {} (in {name})", other.type_name())))
        }
    }
}

fn as_int(name: &str, v: &V) -> Result<i64, TemplateError> {
    match v {
        V::J(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| err(format!("{name}: {n} is not an integer"))),
        other => {
            Err(err(format!("wrong type for value; expected int; got {} (in {name})", other.type_name())))
        }
    }
}

fn s(v: impl Into<String>) -> V {
    V::J(Value::String(v.into()))
}

/// Is `name` a function templates can call?
pub(super) fn exists(name: &str) -> bool {
    matches!(
        name,
        "and"
            | "or"
            | "not"
            | "len"
            | "index"
            | "slice"
            | "print"
            | "printf"
            | "println"
            | "eq"
            | "ne"
            | "lt"
            | "le"
            | "gt"
            | "ge"
            | "html"
            | "urlquery"
            | "js"
            | "json"
            | "split"
            | "join"
            | "title"
            | "lower"
            | "upper"
            | "pad"
            | "truncate"
    )
}

/// Call `name` on evaluated arguments (`and`/`or` are evaluated lazily by the executor).
pub(super) fn call(name: &str, args: &[V], mode: Mode) -> Result<V, TemplateError> {
    if mode == Mode::Header
        && matches!(name, "json" | "split" | "join" | "title" | "lower" | "upper" | "truncate")
    {
        return Ok(args.first().cloned().unwrap_or(V::Missing));
    }
    match name {
        "not" => {
            want(name, args, 1)?;
            Ok(V::J(Value::Bool(!args[0].truthy())))
        }
        "len" => {
            want(name, args, 1)?;
            len(&args[0])
        }
        "index" => index(args),
        "slice" => slice(args),
        "print" => Ok(s(sprint(args))),
        "println" => Ok(s(args.iter().map(print).collect::<Vec<_>>().join(" ") + "\n")),
        "printf" => {
            let (f, rest) = args.split_first().ok_or_else(|| err("wrong number of args for printf"))?;
            Ok(s(printf(as_str(name, f)?, rest)))
        }
        "eq" => {
            let (a, rest) = args.split_first().ok_or_else(|| err("missing argument for comparison"))?;
            if rest.is_empty() {
                return Err(err("missing argument for comparison"));
            }
            Ok(V::J(Value::Bool(rest.iter().any(|b| equal(a, b)))))
        }
        "ne" => {
            want(name, args, 2)?;
            Ok(V::J(Value::Bool(!equal(&args[0], &args[1]))))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(name, args, 2)?;
            let o = order(&args[0], &args[1])?;
            use std::cmp::Ordering::*;
            let r = match name {
                "lt" => o == Less,
                "le" => o != Greater,
                "gt" => o == Greater,
                _ => o != Less,
            };
            Ok(V::J(Value::Bool(r)))
        }
        "html" => Ok(s(html(&sprint(args)))),
        "js" => Ok(s(js(&sprint(args)))),
        "urlquery" => Ok(s(urlquery(&sprint(args)))),
        _ => docker(name, args),
    }
}

/// The functions docker adds (its `templates.basicFunctions`).
fn docker(name: &str, args: &[V]) -> Result<V, TemplateError> {
    match name {
        "json" => {
            want(name, args, 1)?;
            Ok(s(serde_json::to_string(&args[0].to_json()).map_err(|e| err(e.to_string()))?))
        }
        "split" => {
            want(name, args, 2)?;
            let (text, sep) = (as_str(name, &args[0])?, as_str(name, &args[1])?);
            let parts: Vec<Value> = if sep.is_empty() {
                text.chars().map(|c| Value::String(c.to_string())).collect()
            } else {
                text.split(sep).map(|p| Value::String(p.to_string())).collect()
            };
            Ok(V::J(Value::Array(parts)))
        }
        "join" => {
            want(name, args, 2)?;
            let sep = as_str(name, &args[1])?;
            match &args[0] {
                V::J(Value::Array(a)) => Ok(s(a.iter().map(print_json).collect::<Vec<_>>().join(sep))),
                V::Null(_) => Ok(s("")),
                other => {
                    Err(err(format!("wrong type for value; expected []string; got {}", other.type_name())))
                }
            }
        }
        "title" => {
            want(name, args, 1)?;
            Ok(s(title(as_str(name, &args[0])?)))
        }
        "lower" => {
            want(name, args, 1)?;
            Ok(s(as_str(name, &args[0])?.to_lowercase()))
        }
        "upper" => {
            want(name, args, 1)?;
            Ok(s(as_str(name, &args[0])?.to_uppercase()))
        }
        "pad" => {
            want(name, args, 3)?;
            let text = as_str(name, &args[0])?;
            let (pre, post) =
                (as_int(name, &args[1])?.max(0) as usize, as_int(name, &args[2])?.max(0) as usize);
            Ok(s(format!("{}{text}{}", " ".repeat(pre), " ".repeat(post))))
        }
        "truncate" => {
            want(name, args, 2)?;
            let text = as_str(name, &args[0])?;
            let n = as_int(name, &args[1])?.max(0) as usize;
            Ok(s(text.chars().take(n).collect::<String>()))
        }
        other => Err(err(format!("function \"{other}\" not defined"))),
    }
}

fn len(v: &V) -> Result<V, TemplateError> {
    let n = match v {
        V::J(Value::String(s)) => s.len(),
        V::J(Value::Array(a)) => a.len(),
        V::J(Value::Object(o)) => o.len(),
        V::Null(super::value::NullKind::Slice | super::value::NullKind::Map) => 0,
        other => return Err(err(format!("error calling len: len of type {}", other.type_name()))),
    };
    Ok(V::J(Value::from(n)))
}

/// `index X k1 k2 …`: a missing map key gives the empty string (docker's maps hold strings; Go gives
/// their zero value).
fn index(args: &[V]) -> Result<V, TemplateError> {
    let (first, keys) = args.split_first().ok_or_else(|| err("wrong number of args for index"))?;
    let mut cur = first.clone();
    for k in keys {
        cur = match (&cur, k) {
            (V::J(Value::Array(a)), _) => {
                let i = as_int("index", k)?;
                let item = usize::try_from(i).ok().and_then(|i| a.get(i));
                match item {
                    Some(x) => V::from_json(x.clone()),
                    None => return Err(err(format!("error calling index: index out of range: {i}"))),
                }
            }
            (V::J(Value::Object(m)), V::J(Value::String(key))) => match m.get(key) {
                Some(x) => V::from_json(x.clone()),
                None => s(""),
            },
            (V::Null(_) | V::Missing, _) => s(""),
            (other, _) => {
                return Err(err(format!(
                    "error calling index: can't index item of type {}",
                    other.type_name()
                )))
            }
        };
    }
    Ok(cur)
}

fn slice(args: &[V]) -> Result<V, TemplateError> {
    let (first, idx) = args.split_first().ok_or_else(|| err("wrong number of args for slice"))?;
    let bounds: Vec<i64> = idx.iter().map(|i| as_int("slice", i)).collect::<Result<_, _>>()?;
    let range = |len: usize| -> Result<(usize, usize), TemplateError> {
        let lo = bounds.first().copied().unwrap_or(0);
        let hi = bounds.get(1).copied().unwrap_or(len as i64);
        if lo < 0 || hi < lo || hi as usize > len {
            return Err(err(format!("error calling slice: index out of range: {hi}")));
        }
        Ok((lo as usize, hi as usize))
    };
    match first {
        V::J(Value::String(t)) => {
            let (lo, hi) = range(t.len())?;
            Ok(s(t.get(lo..hi).ok_or_else(|| err("error calling slice: not a character boundary"))?))
        }
        V::J(Value::Array(a)) => {
            let (lo, hi) = range(a.len())?;
            Ok(V::J(Value::Array(a[lo..hi].to_vec())))
        }
        other => Err(err(format!("error calling slice: can't slice item of type {}", other.type_name()))),
    }
}

/// `fmt.Sprint`: operands printed with `%v`, a space between two operands when neither is a string.
pub(super) fn sprint(args: &[V]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        let is_str = |v: &V| matches!(v, V::J(Value::String(_)));
        if i > 0 && !is_str(a) && !is_str(&args[i - 1]) {
            out.push(' ');
        }
        out.push_str(&print(a));
    }
    out
}

fn equal(a: &V, b: &V) -> bool {
    match (a.to_json(), b.to_json()) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (x, y) => x == y,
    }
}

fn order(a: &V, b: &V) -> Result<std::cmp::Ordering, TemplateError> {
    match (a, b) {
        (V::J(Value::Number(x)), V::J(Value::Number(y))) => x
            .as_f64()
            .zip(y.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y))
            .ok_or_else(|| err("incomparable numbers")),
        (V::J(Value::String(x)), V::J(Value::String(y))) => Ok(x.cmp(y)),
        _ => Err(err(format!(
            "error calling comparison: incompatible types for comparison ({} and {})",
            a.type_name(),
            b.type_name()
        ))),
    }
}

/// Go's `strings.Title`: the first letter of each word upper-cased; words are split by anything that is
/// not a letter, digit or `_`.
fn title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev_sep = true;
    for c in text.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_');
    }
    out
}

fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn js(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn urlquery(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `fmt.Sprintf` for the verbs templates use: `%v %s %d %q %t %x %X %f %e %g %c %%` with flags
/// `-+ 0`, width and precision.
pub(super) fn printf(format: &str, args: &[V]) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next_arg = 0;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.left = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        spec.width = digits(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.prec = Some(digits(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next_arg) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next_arg += 1;
        out.push_str(&spec.pad(format_one(verb, arg, spec.prec, spec.plus)));
    }
    if next_arg < args.len() {
        let extra: Vec<String> =
            args[next_arg..].iter().map(|a| format!("{}={}", go_type(a), print(a))).collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

fn go_type(v: &V) -> &'static str {
    match v {
        V::J(j) => json_type_name(j),
        _ => "<nil>",
    }
}

#[derive(Default)]
struct Spec {
    left: bool,
    plus: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

impl Spec {
    fn pad(&self, text: String) -> String {
        let Some(w) = self.width else { return text };
        let n = text.chars().count();
        if n >= w {
            return text;
        }
        let fill = w - n;
        if self.left {
            format!("{text}{}", " ".repeat(fill))
        } else if self.zero && text.trim_start_matches(['-', '+']).starts_with(|c: char| c.is_ascii_digit()) {
            let (sign, digits) = text.split_at(text.len() - text.trim_start_matches(['-', '+']).len());
            format!("{sign}{}{digits}", "0".repeat(fill))
        } else {
            format!("{}{text}", " ".repeat(fill))
        }
    }
}

fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        n = Some(n.unwrap_or(0) * 10 + d as usize);
        chars.next();
    }
    n
}

fn format_one(verb: char, arg: &V, prec: Option<usize>, plus: bool) -> String {
    let num = match arg {
        V::J(Value::Number(n)) => n.as_f64(),
        _ => None,
    };
    let int = match arg {
        V::J(Value::Number(n)) => n.as_i64(),
        _ => None,
    };
    let sign = |t: String| if plus && !t.starts_with('-') { format!("+{t}") } else { t };
    match (verb, arg) {
        ('v' | 's', _) => {
            let t = print(arg);
            match (verb, prec) {
                ('s', Some(p)) => t.chars().take(p).collect(),
                _ => t,
            }
        }
        ('q', V::J(Value::String(t))) => serde_json::to_string(t).unwrap_or_default(),
        ('t', V::J(Value::Bool(b))) => b.to_string(),
        ('d', _) if int.is_some() => sign(int.unwrap_or(0).to_string()),
        ('c', _) if int.is_some() => u32::try_from(int.unwrap_or(0))
            .ok()
            .and_then(char::from_u32)
            .map(String::from)
            .unwrap_or_default(),
        ('x', V::J(Value::String(t))) => t.bytes().map(|b| format!("{b:02x}")).collect(),
        ('X', V::J(Value::String(t))) => t.bytes().map(|b| format!("{b:02X}")).collect(),
        ('x', _) if int.is_some() => format!("{:x}", int.unwrap_or(0)),
        ('X', _) if int.is_some() => format!("{:X}", int.unwrap_or(0)),
        ('f' | 'F', _) if num.is_some() => sign(format!("{:.*}", prec.unwrap_or(6), num.unwrap_or(0.0))),
        ('e', _) if num.is_some() => sign(go_exp(num.unwrap_or(0.0), prec.unwrap_or(6))),
        ('g', _) if num.is_some() => sign(super::value::go_float(num.unwrap_or(0.0))),
        _ => format!("%!{verb}({}={})", go_type(arg), print(arg)),
    }
}

/// `%e`: `1.500000e+00`.
fn go_exp(f: f64, prec: usize) -> String {
    let t = format!("{f:.prec$e}");
    let (m, e) = t.split_once('e').unwrap_or((&t, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}
