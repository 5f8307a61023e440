//! The parse tree of a template: text, actions (pipelines), `if`/`else if`/`else`, `range` (with
//! `$i, $e :=`), `with`, `break`/`continue`, `end`.

use super::lex::Tok;
use super::TemplateError;

/// A node of the tree.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    Action(Pipeline),
    If { pipe: Pipeline, then: Vec<Node>, otherwise: Vec<Node> },
    Range { pipe: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
    With { pipe: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
    Break,
    Continue,
}

/// `$a, $b := cmd | cmd arg`.
#[derive(Debug, Clone)]
pub(super) struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`).
    pub vars: Vec<String>,
    /// `=` rather than `:=`.
    pub assign: bool,
    /// The commands; each one's result is the last argument of the next.
    pub cmds: Vec<Cmd>,
}

/// One command: an operand, or a function (or method) and its arguments.
#[derive(Debug, Clone)]
pub(super) struct Cmd {
    pub args: Vec<Arg>,
}

/// An operand.
#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// `.` followed by fields (`.A.B`: `["A", "B"]`; `.`: `[]`).
    Dot(Vec<String>),
    /// `$x.A.B`.
    Var(String, Vec<String>),
    /// A function name.
    Func(String),
    Str(String),
    Num(String),
    Bool(bool),
    Nil,
    /// `(pipeline).A.B`.
    Sub(Box<Pipeline>, Vec<String>),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

/// Parse tokens into the template's nodes.
pub(super) fn parse(toks: Vec<Tok>) -> Result<Vec<Node>, TemplateError> {
    let mut p = Parser { toks, pos: 0 };
    let (nodes, end) = p.list()?;
    match end {
        End::Eof => Ok(nodes),
        End::Closed => Err(TemplateError::Parse("unexpected {{end}}".into())),
        End::Else(_) => Err(TemplateError::Parse("unexpected {{else}}".into())),
    }
}

/// What ended a list of nodes.
enum End {
    Eof,
    Closed,
    /// `{{else}}`, or `{{else if …}}` with its pipeline.
    Else(Option<Pipeline>),
}

fn err(msg: impl Into<String>) -> TemplateError {
    TemplateError::Parse(msg.into())
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect_close(&mut self) -> Result<(), TemplateError> {
        match self.next() {
            Some(Tok::Close) => Ok(()),
            other => Err(err(format!("unexpected {other:?} in action"))),
        }
    }

    fn list(&mut self) -> Result<(Vec<Node>, End), TemplateError> {
        let mut nodes = Vec::new();
        loop {
            match self.next() {
                None => return Ok((nodes, End::Eof)),
                Some(Tok::Text(t)) => nodes.push(Node::Text(t)),
                Some(Tok::Open) => {
                    if let Some(end) = self.action(&mut nodes)? {
                        return Ok((nodes, end));
                    }
                }
                Some(other) => return Err(err(format!("unexpected {other:?}"))),
            }
        }
    }

    /// One action after its `{{`; pushes its node, or returns what ended the enclosing list.
    fn action(&mut self, nodes: &mut Vec<Node>) -> Result<Option<End>, TemplateError> {
        let keyword = match self.peek() {
            Some(Tok::Ident(w)) => w.clone(),
            _ => String::new(),
        };
        match keyword.as_str() {
            "end" => {
                self.pos += 1;
                self.expect_close()?;
                Ok(Some(End::Closed))
            }
            "else" => {
                self.pos += 1;
                if matches!(self.peek(), Some(Tok::Ident(w)) if w == "if") {
                    self.pos += 1;
                    let pipe = self.pipeline()?;
                    return Ok(Some(End::Else(Some(pipe))));
                }
                self.expect_close()?;
                Ok(Some(End::Else(None)))
            }
            "if" | "range" | "with" => {
                self.pos += 1;
                let pipe = self.pipeline()?;
                nodes.push(self.control(&keyword, pipe)?);
                Ok(None)
            }
            "break" | "continue" => {
                self.pos += 1;
                self.expect_close()?;
                nodes.push(if keyword == "break" { Node::Break } else { Node::Continue });
                Ok(None)
            }
            "define" | "template" | "block" => Err(err(format!("{{{{{keyword}}}}} is not supported"))),
            _ => {
                let pipe = self.pipeline()?;
                nodes.push(Node::Action(pipe));
                Ok(None)
            }
        }
    }

    /// The body of `if`/`range`/`with` through its `{{end}}`; `{{else if}}` nests an `if`.
    fn control(&mut self, keyword: &str, pipe: Pipeline) -> Result<Node, TemplateError> {
        let (body, end) = self.list()?;
        let otherwise = match end {
            End::Eof => return Err(err(format!("unexpected EOF: {{{{{keyword}}}}} without {{{{end}}}}"))),
            End::Closed => Vec::new(),
            End::Else(None) => {
                let (rest, end) = self.list()?;
                if !matches!(end, End::Closed) {
                    return Err(err(format!("expected {{{{end}}}} after {{{{else}}}} of {{{{{keyword}}}}}")));
                }
                rest
            }
            End::Else(Some(cond)) => vec![self.control("if", cond)?],
        };
        Ok(match keyword {
            "if" => Node::If { pipe, then: body, otherwise },
            "range" => Node::Range { pipe, body, otherwise },
            _ => Node::With { pipe, body, otherwise },
        })
    }

    /// A pipeline through the action's closing `}}`.
    fn pipeline(&mut self) -> Result<Pipeline, TemplateError> {
        let p = self.pipeline_until(|t| matches!(t, Tok::Close))?;
        self.expect_close()?;
        Ok(p)
    }

    fn pipeline_until(&mut self, stop: fn(&Tok) -> bool) -> Result<Pipeline, TemplateError> {
        let (vars, assign) = self.declarations();
        let mut cmds = Vec::new();
        loop {
            let mut args = Vec::new();
            while let Some(t) = self.peek() {
                if stop(t) || matches!(t, Tok::Pipe) {
                    break;
                }
                args.push(self.operand()?);
            }
            if args.is_empty() {
                return Err(err("missing command in pipeline"));
            }
            cmds.push(Cmd { args });
            if matches!(self.peek(), Some(Tok::Pipe)) {
                self.pos += 1;
                continue;
            }
            break;
        }
        Ok(Pipeline { vars, assign, cmds })
    }

    /// `$x :=`, `$i, $e :=`, `$x =` at the start of a pipeline (consumed only when present).
    fn declarations(&mut self) -> (Vec<String>, bool) {
        let start = self.pos;
        let mut vars = Vec::new();
        while let Some(Tok::Var(v)) = self.peek().cloned() {
            self.pos += 1;
            vars.push(v);
            match self.peek() {
                Some(Tok::Comma) => self.pos += 1,
                Some(Tok::Declare) => {
                    self.pos += 1;
                    return (vars, false);
                }
                Some(Tok::Assign) => {
                    self.pos += 1;
                    return (vars, true);
                }
                _ => break,
            }
        }
        self.pos = start;
        (Vec::new(), false)
    }

    fn fields(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Tok::Chain(f)) = self.peek().cloned() {
            self.pos += 1;
            out.push(f);
        }
        out
    }

    fn operand(&mut self) -> Result<Arg, TemplateError> {
        Ok(match self.next() {
            Some(Tok::Dot) => Arg::Dot(Vec::new()),
            Some(Tok::Field(f)) => {
                let mut all = vec![f];
                all.extend(self.fields());
                Arg::Dot(all)
            }
            Some(Tok::Var(v)) => {
                let f = self.fields();
                Arg::Var(v, f)
            }
            Some(Tok::Str(s)) => Arg::Str(s),
            Some(Tok::Num(n)) => Arg::Num(n),
            Some(Tok::Ident(w)) => match w.as_str() {
                "true" => Arg::Bool(true),
                "false" => Arg::Bool(false),
                "nil" => Arg::Nil,
                _ => Arg::Func(w),
            },
            Some(Tok::LParen) => {
                let p = self.pipeline_until(|t| matches!(t, Tok::RParen | Tok::Close))?;
                match self.next() {
                    Some(Tok::RParen) => {}
                    _ => return Err(err("unclosed left paren")),
                }
                let f = self.fields();
                Arg::Sub(Box::new(p), f)
            }
            other => return Err(err(format!("unexpected {other:?} in operand"))),
        })
    }
}
