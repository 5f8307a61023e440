//! Tokens of Go's text/template, as its lexer makes them: text outside actions, and inside `{{ }}`
//! fields (`.A`), variables (`$x`), identifiers, literals, `(`, `)`, `|`, `:=`, `=` and `,`. Trim markers
//! (`{{- ` and ` -}}`) remove the white space next to them in the text, as Go does.

use super::TemplateError;

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// Text between actions.
    Text(String),
    /// `{{`.
    Open,
    /// `}}`.
    Close,
    /// `.Name` (a bare `.` is [`Tok::Dot`]).
    Field(String),
    /// `.Name` right after a field, variable or `)` with no space between: the next step of a chain
    /// (`.A.B`, `$x.A`, `(f).A`); after a space it is a new operand.
    Chain(String),
    /// `.`.
    Dot,
    /// `$name` (`$` alone is `"$"`).
    Var(String),
    /// A word: function name or keyword (`if`, `range`, `true`, `nil`, ...).
    Ident(String),
    /// A quoted, raw or character literal, unquoted.
    Str(String),
    /// A number literal as written.
    Num(String),
    /// `(`.
    LParen,
    /// `)`.
    RParen,
    /// `|`.
    Pipe,
    /// `:=`.
    Declare,
    /// `=`.
    Assign,
    /// `,`.
    Comma,
}

/// The whole template as tokens, trim markers applied and comments dropped.
pub(super) fn lex(src: &str) -> Result<Vec<Tok>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next_text = false;
    while !rest.is_empty() {
        let open = rest.find("{{");
        let text_end = open.unwrap_or(rest.len());
        let mut text = &rest[..text_end];
        if trim_next_text {
            text = text.trim_start_matches(is_space);
        }
        let mut after = &rest[text_end..];
        let Some(_) = open else {
            push_text(&mut out, text);
            break;
        };
        after = &after[2..];
        // `{{- ` trims the text before; the marker needs a space after it (`{{-3}}` is a number).
        if after.starts_with('-') && after[1..].starts_with(is_space) {
            text = text.trim_end_matches(is_space);
            after = &after[1..];
        }
        push_text(&mut out, text);
        let (toks, consumed, trim) = lex_action(after)?;
        trim_next_text = trim;
        if !toks.is_empty() {
            out.push(Tok::Open);
            out.extend(toks);
            out.push(Tok::Close);
        }
        rest = &after[consumed..];
    }
    Ok(out)
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn push_text(out: &mut Vec<Tok>, text: &str) {
    if !text.is_empty() {
        out.push(Tok::Text(text.to_string()));
    }
}

/// The tokens of one action (after its `{{`): the tokens, the bytes consumed through `}}`, and whether
/// the action ended with a trim marker. A comment action yields no token.
fn lex_action(s: &str) -> Result<(Vec<Tok>, usize, bool), TemplateError> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut toks = Vec::new();
    loop {
        while i < b.len() && is_space(b[i] as char) {
            // ` -}}` closes with a trim marker.
            i += 1;
        }
        if s[i..].starts_with("-}}") && i > 0 && is_space(b[i - 1] as char) {
            return Ok((toks, i + 3, true));
        }
        if s[i..].starts_with("}}") {
            return Ok((toks, i + 2, false));
        }
        if i >= b.len() {
            return Err(TemplateError::Parse("unclosed action".into()));
        }
        if s[i..].starts_with("/*") {
            let end = s[i..].find("*/").ok_or_else(|| TemplateError::Parse("unclosed comment".into()))?;
            i += end + 2;
            continue;
        }
        let (tok, len) = lex_token(&s[i..])?;
        let spaced = i == 0 || is_space(b[i - 1] as char);
        let tok = match (tok, toks.last()) {
            (Tok::Field(f), Some(Tok::Field(_) | Tok::Chain(_) | Tok::Var(_) | Tok::RParen)) if !spaced => {
                Tok::Chain(f)
            }
            (t, _) => t,
        };
        toks.push(tok);
        i += len;
    }
}

fn lex_token(s: &str) -> Result<(Tok, usize), TemplateError> {
    let c = s.chars().next().unwrap_or(' ');
    let word_len = |from: usize| {
        from + s[from..].find(|ch: char| !(ch.is_alphanumeric() || ch == '_')).unwrap_or(s.len() - from)
    };
    Ok(match c {
        '(' => (Tok::LParen, 1),
        ')' => (Tok::RParen, 1),
        '|' => (Tok::Pipe, 1),
        ',' => (Tok::Comma, 1),
        '=' => (Tok::Assign, 1),
        ':' if s.starts_with(":=") => (Tok::Declare, 2),
        '"' => lex_quoted(s)?,
        '`' => {
            let end =
                s[1..].find('`').ok_or_else(|| TemplateError::Parse("unterminated raw quote".into()))?;
            (Tok::Str(s[1..1 + end].to_string()), end + 2)
        }
        '\'' => lex_char(s)?,
        '.' if s[1..].starts_with(|ch: char| ch.is_alphabetic() || ch == '_') => {
            let end = word_len(1);
            (Tok::Field(s[1..end].to_string()), end)
        }
        '.' if s[1..].starts_with(|ch: char| ch.is_ascii_digit()) => lex_number(s),
        '.' => (Tok::Dot, 1),
        '$' => {
            let end = word_len(1);
            (Tok::Var(s[..end].to_string()), end)
        }
        '-' | '+' | '0'..='9' => lex_number(s),
        ch if ch.is_alphabetic() || ch == '_' => {
            let end = word_len(0);
            (Tok::Ident(s[..end].to_string()), end)
        }
        other => return Err(TemplateError::Parse(format!("unexpected {other:?} in operand"))),
    })
}

fn lex_number(s: &str) -> (Tok, usize) {
    let end = s
        .char_indices()
        .skip(1)
        .find(|&(_, ch)| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '_' || ch == '+' || ch == '-'))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    (Tok::Num(s[..end].to_string()), end)
}

/// A Go interpreted string literal: `\n`, `\t`, `\\`, `\"`, `\xNN`, `\uNNNN`.
fn lex_quoted(s: &str) -> Result<(Tok, usize), TemplateError> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, ch)) = chars.next() {
        match ch {
            '"' => return Ok((Tok::Str(out), i + 1)),
            '\n' => break,
            '\\' => {
                let (_, e) =
                    chars.next().ok_or_else(|| TemplateError::Parse("unterminated quoted string".into()))?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'v' => out.push('\x0b'),
                    '\\' | '"' | '\'' => out.push(e),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = (0..n).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                        let v = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| TemplateError::Parse(format!("invalid escape \\{e}{hex}")))?;
                        out.push(v);
                    }
                    other => return Err(TemplateError::Parse(format!("unknown escape sequence \\{other}"))),
                }
            }
            c => out.push(c),
        }
    }
    Err(TemplateError::Parse("unterminated quoted string".into()))
}

/// A character constant (`'a'`) is a number in Go: its code point.
fn lex_char(s: &str) -> Result<(Tok, usize), TemplateError> {
    let mut it = s.char_indices().skip(1);
    let (_, c) = it.next().ok_or_else(|| TemplateError::Parse("unterminated character constant".into()))?;
    match it.next() {
        Some((i, '\'')) => Ok((Tok::Num((c as u32).to_string()), i + 1)),
        _ => Err(TemplateError::Parse("unterminated character constant".into())),
    }
}
