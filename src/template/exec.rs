//! Executing a parsed template against JSON data, with Go's rules: `.` moves with `range` and `with`,
//! `$` is the data, variables live until the `{{end}}` of the block that declared them, `and`/`or`
//! stop at the first operand that decides, a pipeline's value is the last argument of its next command.

use super::funcs::{self, Mode};
use super::parse::{Arg, Cmd, Node, Pipeline};
use super::value::{print, NullKind, V};
use super::{Methods, TemplateError};
use serde_json::Value;

/// How a list of nodes ended.
enum Flow {
    Normal,
    Break,
    Continue,
}

pub(super) struct Exec<'a> {
    pub out: String,
    vars: Vec<(String, V)>,
    methods: &'a Methods,
    mode: Mode,
}

fn err(msg: impl Into<String>) -> TemplateError {
    TemplateError::Exec(msg.into())
}

impl<'a> Exec<'a> {
    pub(super) fn new(root: V, methods: &'a Methods, mode: Mode) -> Self {
        Exec { out: String::new(), vars: vec![("$".into(), root)], methods, mode }
    }

    pub(super) fn run(&mut self, nodes: &[Node], dot: &V) -> Result<(), TemplateError> {
        match self.walk(nodes, dot)? {
            Flow::Normal => Ok(()),
            _ => Err(err("{{break}} or {{continue}} outside {{range}}")),
        }
    }

    fn walk(&mut self, nodes: &[Node], dot: &V) -> Result<Flow, TemplateError> {
        for n in nodes {
            let flow = match n {
                Node::Text(t) => {
                    self.out.push_str(t);
                    Flow::Normal
                }
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.vars.is_empty() {
                        self.out.push_str(&print(&v));
                    }
                    Flow::Normal
                }
                Node::If { pipe, then, otherwise } => {
                    let mark = self.vars.len();
                    let cond = self.pipeline(pipe, dot)?.truthy();
                    let f = self.walk(if cond { then } else { otherwise }, dot)?;
                    self.vars.truncate(mark);
                    f
                }
                Node::With { pipe, body, otherwise } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    let f = if v.truthy() { self.walk(body, &v)? } else { self.walk(otherwise, dot)? };
                    self.vars.truncate(mark);
                    f
                }
                Node::Range { pipe, body, otherwise } => self.range(pipe, body, otherwise, dot)?,
                Node::Break => Flow::Break,
                Node::Continue => Flow::Continue,
            };
            if !matches!(flow, Flow::Normal) {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn range(
        &mut self,
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
        dot: &V,
    ) -> Result<Flow, TemplateError> {
        let mark = self.vars.len();
        // The range's variables are bound per element, not to the pipeline's value.
        let bare = Pipeline { vars: Vec::new(), assign: false, cmds: pipe.cmds.clone() };
        let v = self.pipeline(&bare, dot)?;
        let items: Vec<(V, V)> = match &v {
            V::J(Value::Array(a)) => {
                a.iter().enumerate().map(|(i, x)| (V::J(i.into()), V::from_json(x.clone()))).collect()
            }
            V::J(Value::Object(m)) => {
                m.iter().map(|(k, x)| (V::J(Value::String(k.clone())), V::from_json(x.clone()))).collect()
            }
            V::J(Value::Number(n)) if n.as_i64().is_some() => {
                (0..n.as_i64().unwrap_or(0)).map(|i| (V::J(i.into()), V::J(i.into()))).collect()
            }
            V::Missing | V::Null(_) => Vec::new(),
            other => return Err(err(format!("range can't iterate over {}", print(other)))),
        };
        if items.is_empty() {
            let f = self.walk(otherwise, dot)?;
            self.vars.truncate(mark);
            return Ok(f);
        }
        for (key, item) in items {
            match pipe.vars.as_slice() {
                [] => {}
                [e] => self.vars.push((e.clone(), item.clone())),
                [k, e, ..] => {
                    self.vars.push((k.clone(), key));
                    self.vars.push((e.clone(), item.clone()));
                }
            }
            let f = self.walk(body, &item)?;
            self.vars.truncate(mark);
            if matches!(f, Flow::Break) {
                break;
            }
        }
        Ok(Flow::Normal)
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &V) -> Result<V, TemplateError> {
        let mut val: Option<V> = None;
        for cmd in &p.cmds {
            val = Some(self.command(cmd, dot, val)?);
        }
        let v = val.unwrap_or(V::Missing);
        for name in &p.vars {
            if p.assign {
                let slot = self.vars.iter_mut().rev().find(|(n, _)| n == name);
                match slot {
                    Some(s) => s.1 = v.clone(),
                    None => return Err(err(format!("undefined variable: {name}"))),
                }
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn command(&mut self, cmd: &Cmd, dot: &V, last: Option<V>) -> Result<V, TemplateError> {
        let (head, rest) = cmd.args.split_first().ok_or_else(|| err("empty command"))?;
        match head {
            Arg::Func(name) => self.call(name, rest, dot, last),
            Arg::Dot(fields) if !fields.is_empty() && (!rest.is_empty() || last.is_some()) => {
                // A method call: `.Label "key"`.
                let (method, path) = fields.split_last().ok_or_else(|| err("empty field"))?;
                let recv = self.fields(dot.clone(), path)?;
                let mut args = self.args(rest, dot)?;
                args.extend(last);
                self.method(&recv, method, &args)
            }
            _ if !rest.is_empty() || last.is_some() => {
                Err(err(format!("can't give argument to non-function {head:?}")))
            }
            _ => self.operand(head, dot),
        }
    }

    fn args(&mut self, args: &[Arg], dot: &V) -> Result<Vec<V>, TemplateError> {
        args.iter().map(|a| self.operand(a, dot)).collect()
    }

    fn call(&mut self, name: &str, rest: &[Arg], dot: &V, last: Option<V>) -> Result<V, TemplateError> {
        if name == "and" || name == "or" {
            // Evaluated left to right, stopping at the first operand that decides (Go 1.18+).
            let mut v = V::Missing;
            for a in rest {
                v = self.operand(a, dot)?;
                if v.truthy() != (name == "and") {
                    return Ok(v);
                }
            }
            if let Some(l) = last {
                v = l;
            }
            return Ok(v);
        }
        if !funcs::exists(name) {
            return Err(err(format!("function \"{name}\" not defined")));
        }
        let mut args = self.args(rest, dot)?;
        args.extend(last);
        funcs::call(name, &args, self.mode).map_err(|e| match e {
            TemplateError::Exec(m) => err(format!("error calling {name}: {m}")),
            other => other,
        })
    }

    fn method(&self, recv: &V, name: &str, args: &[V]) -> Result<V, TemplateError> {
        let json_args: Vec<Value> = args.iter().map(V::to_json).collect();
        if let Some(m) = self.methods.get(name) {
            return Ok(V::J(Value::String(match self.mode {
                Mode::Rows => m(&recv.to_json(), &json_args),
                Mode::Header => header_of_method(&json_args),
            })));
        }
        match (recv, args) {
            // A map-valued field called with a key indexes the map.
            (V::J(Value::Object(o)), [V::J(Value::String(k))]) => match o.get(name) {
                Some(Value::Object(inner)) => Ok(V::of_field(inner.get(k), k)),
                _ => Err(err(format!("can't evaluate field {name} with arguments"))),
            },
            _ => Err(err(format!("can't give argument to non-function .{name}"))),
        }
    }

    fn operand(&mut self, a: &Arg, dot: &V) -> Result<V, TemplateError> {
        match a {
            Arg::Dot(fields) => self.fields(dot.clone(), fields),
            Arg::Var(name, fields) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| err(format!("undefined variable: {name}")))?;
                self.fields(v, fields)
            }
            Arg::Func(name) => self.call(name, &[], dot, None),
            Arg::Str(s) => Ok(V::J(Value::String(s.clone()))),
            Arg::Num(n) => number(n),
            Arg::Bool(b) => Ok(V::J(Value::Bool(*b))),
            Arg::Nil => Ok(V::Null(NullKind::Nil)),
            Arg::Sub(p, fields) => {
                let v = self.pipeline(p, dot)?;
                self.fields(v, fields)
            }
        }
    }

    /// Follow `.A.B` from `v`. Through an absent key or a `null` the result is absent (docker's raw-JSON
    /// fallback prints `<no value>` there); a field of a string, number or list is an error, as in Go.
    fn fields(&self, mut v: V, fields: &[String]) -> Result<V, TemplateError> {
        for f in fields {
            v = match &v {
                V::J(Value::Object(o)) if !o.contains_key(f) && self.strict_row(&v) => {
                    let t = self.methods.row_type.unwrap_or_default();
                    return Err(err(format!("can't evaluate field {f} in type {t}")));
                }
                V::J(Value::Object(o)) => V::of_field(o.get(f), f),
                V::Missing | V::Null(_) => V::Missing,
                V::J(other) => {
                    return Err(err(format!(
                        "can't evaluate field {f} in type {}",
                        super::value::json_type_name(other)
                    )))
                }
            };
        }
        Ok(v)
    }
}

impl Exec<'_> {
    /// Is `v` the row of a typed list context (whose unknown fields are errors)?
    fn strict_row(&self, v: &V) -> bool {
        self.mode == Mode::Rows
            && self.methods.row_type.is_some()
            && self.vars.first().is_some_and(|(_, root)| root == v)
    }
}

/// A method's column header in a table: `{{.Label "com.example.project"}}` heads `PROJECT`, as docker.
fn header_of_method(args: &[Value]) -> String {
    let key = args.first().and_then(Value::as_str).unwrap_or_default();
    key.rsplit('.').next().unwrap_or(key).replace(['-', '_'], " ").to_uppercase()
}

/// A number literal: integers (decimal, `0x`, `0o`, `0b`, `_` separators) or floats.
fn number(text: &str) -> Result<V, TemplateError> {
    let t = text.replace('_', "");
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b.to_string()),
        None => (false, t.trim_start_matches('+').to_string()),
    };
    let radix = |p: &str, r: u32| body.strip_prefix(p).and_then(|d| i64::from_str_radix(d, r).ok());
    let int = radix("0x", 16)
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
        .or_else(|| body.parse::<i64>().ok());
    if let Some(i) = int {
        return Ok(V::J(Value::from(if neg { -i } else { i })));
    }
    match body.parse::<f64>() {
        Ok(f) => Ok(V::J(
            serde_json::Number::from_f64(if neg { -f } else { f }).map(Value::Number).unwrap_or(Value::Null),
        )),
        Err(_) => Err(TemplateError::Parse(format!("bad number syntax: {text:?}"))),
    }
}
