//! Go templates as docker evaluates them in `--format`: fields (`{{.State.Status}}`), `json`, `range`,
//! `index`, `len`, `if`/`else if`/`else`, `with`, variables, pipelines, Go's builtins and docker's own
//! functions (`join`, `split`, `upper`, `lower`, `title`, `pad`, `truncate`), plus docker's list
//! formats (`table …` with a header row aligned as `text/tabwriter` does, `json`).
//!
//! Why not a crate: the one Go-template crate (gtmpl 0.7, unmaintained since 2021) prints lists and maps
//! with Rust's `Debug` and `nil` instead of Go's `[a b]`, `map[k:v]` and `<nil>`, and takes only plain
//! function pointers; the output users script against is exactly those strings. This evaluator is small,
//! works on `serde_json::Value` (what every command already builds), and its tests are docker's
//! documented examples.
//!
//! Fidelity notes. Data is JSON, so `{{json .}}` of an object lists its keys sorted (docker's list
//! contexts do too; its inspect structs keep field order). A `null` prints as the Go type docker's field
//! has: `[]` for a slice field (`Cmd`, `Env`, ...), `map[]` for a map field (`Labels`, `Volumes`, ...),
//! `<nil>` otherwise; a key that is absent prints `<no value>`, as docker's raw-JSON fallback does.
//! `index` of a missing map key gives `""` (docker's maps hold strings). Methods that take arguments,
//! like `ps`'s `{{.Label "key"}}`, are supplied by the caller as [`Methods`]; a map-valued field called
//! with one argument is indexed by it.

mod exec;
mod funcs;
mod lex;
mod parse;
mod table;
mod value;

pub use table::align;

use serde_json::Value;

/// Why a template could not be parsed or executed (docker: "template parsing error: …").
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// The template's text is not a valid template.
    #[error("template parsing error: template: :1: {0}")]
    Parse(String),
    /// Executing it failed (a field of a string, a wrong argument, ...).
    #[error("template parsing error: template: :1: executing \"\": {0}")]
    Exec(String),
}

/// A method a list context offers besides its fields: called with the row (its receiver) and the
/// template's arguments, it returns the text to print (`.Label "com.example.x"`).
pub type Method = fn(&Value, &[Value]) -> String;

/// The methods of one kind of row (empty for most commands), and the Go type docker's rows have: with
/// one, a field the row lacks is an error, as docker's typed list contexts make it (`can't evaluate
/// field Foo in type *formatter.ContainerContext`), not `<no value>`.
#[derive(Debug, Default, Clone)]
pub struct Methods {
    list: Vec<(&'static str, Method)>,
    row_type: Option<&'static str>,
}

impl Methods {
    /// No methods.
    pub fn none() -> Methods {
        Methods::default()
    }

    /// Add `name`.
    pub fn with(mut self, name: &'static str, m: Method) -> Methods {
        self.list.push((name, m));
        self
    }

    /// Rows are docker's typed `name` (`*formatter.ContainerContext`): unknown fields are errors.
    pub fn typed(mut self, name: &'static str) -> Methods {
        self.row_type = Some(name);
        self
    }

    fn get(&self, name: &str) -> Option<Method> {
        self.list.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }
}

/// A parsed template, to execute on many values (one per row).
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<parse::Node>,
}

impl Template {
    /// Parse `src`; an unknown function is an error here, as in Go, even if no row would call it.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let nodes = parse::parse(lex::lex(src)?)?;
        check_functions(&nodes)?;
        Ok(Template { nodes })
    }

    /// Execute on `data`.
    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        self.execute_with(data, &Methods::none())
    }

    /// Execute on `data` with the row's `methods`.
    pub fn execute_with(&self, data: &Value, methods: &Methods) -> Result<String, TemplateError> {
        let root = value::V::from_json(data.clone());
        let mut e = exec::Exec::new(root.clone(), methods, funcs::Mode::Rows);
        e.run(&self.nodes, &root)?;
        Ok(e.out)
    }

    /// The table header: the template executed on `headers` (field name -> column title) with docker's
    /// header functions, which return their argument unchanged.
    pub fn header(&self, headers: &Value, methods: &Methods) -> Result<String, TemplateError> {
        let root = value::V::from_json(headers.clone());
        let mut e = exec::Exec::new(root.clone(), methods, funcs::Mode::Header);
        e.run(&self.nodes, &root)?;
        Ok(e.out)
    }
}

/// Render `template` on `data` (what `inspect --format` prints for one object, without the newline).
pub fn render(template: &str, data: &Value) -> Result<String, TemplateError> {
    Template::parse(template)?.execute(data)
}

/// A list command's `--format`, as docker reads it: nothing or `table` is the command's default table,
/// `table TEMPLATE` a table of that template, `json` one JSON object per line, anything else a template
/// per row without a header. `\t` and `\n` written literally are a tab and a newline.
#[derive(Debug, Clone)]
pub struct ListFormat {
    table: bool,
    template: Template,
}

impl ListFormat {
    /// Read `--format` (`None` when not given); `default_table` is the command's table template without
    /// the `table` keyword (`{{.ID}}\t{{.Image}}…`).
    pub fn new(format: Option<&str>, default_table: &str) -> Result<ListFormat, TemplateError> {
        let f = format.unwrap_or("").trim();
        let (table, text) = match f {
            "" | "table" => (true, default_table.to_string()),
            "json" => (false, "{{json .}}".to_string()),
            t if t.starts_with("table") => (true, t["table".len()..].to_string()),
            t => (false, t.to_string()),
        };
        let text = text.trim_matches(' ').replace("\\t", "\t").replace("\\n", "\n");
        Ok(ListFormat { table, template: Template::parse(&text)? })
    }

    /// Is this a table (with a header)?
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// The whole output: for a table the header (from `headers`, field name -> title) and the rows
    /// aligned; otherwise each row's text on its own line.
    pub fn render(
        &self,
        headers: &Value,
        rows: &[Value],
        methods: &Methods,
    ) -> Result<String, TemplateError> {
        let mut text = String::new();
        if self.table {
            text.push_str(&self.template.header(headers, methods)?);
            text.push('\n');
        }
        for r in rows {
            text.push_str(&self.template.execute_with(r, methods)?);
            text.push('\n');
        }
        Ok(if self.table { align(&text) } else { text })
    }
}

fn check_functions(nodes: &[parse::Node]) -> Result<(), TemplateError> {
    use parse::{Arg, Node, Pipeline};
    fn pipe(p: &Pipeline) -> Result<(), TemplateError> {
        for c in &p.cmds {
            for a in &c.args {
                match a {
                    Arg::Func(f) if !funcs::exists(f) && f != "and" && f != "or" => {
                        return Err(TemplateError::Parse(format!("function \"{f}\" not defined")))
                    }
                    Arg::Sub(p, _) => pipe(p)?,
                    _ => {}
                }
            }
        }
        Ok(())
    }
    for n in nodes {
        match n {
            Node::Action(p) => pipe(p)?,
            Node::If { pipe: p, then: a, otherwise: b }
            | Node::Range { pipe: p, body: a, otherwise: b }
            | Node::With { pipe: p, body: a, otherwise: b } => {
                pipe(p)?;
                check_functions(a)?;
                check_functions(b)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
