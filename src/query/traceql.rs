//! A TraceQL subset: tokenizer, recursive-descent parser and an evaluator over decoded spans.
//!
//! Supported: spansets `{ ... }` (several joined by `||`), `&&` / `||` and parentheses inside them,
//! comparisons `= != =~ !~ > >= < <=` of `resource.` / `span.` / unscoped (`.`) attributes and of the
//! intrinsics `name`, `status`, `statusMessage`, `duration`, `kind` with strings, numbers, durations,
//! `true`/`false` and the status and kind names. Everything else is refused with a message naming it,
//! so a query never silently means less than it says.

use crate::model::{any_value::Value as AnyValue, InstrumentationScope, KeyValue, Resource, Span};
use regex_automata::dfa::{dense, Automaton};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};
use std::fmt;
use std::sync::Arc;

/// Why a query was refused; the message is shown to the user as is.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Span,
    Resource,
    /// `.name`: the span's attribute or its resource's.
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Attr {
        scope: Scope,
        key: String,
    },
    Name,
    Status,
    StatusMessage,
    Duration,
    Kind,
    /// Not reachable from TraceQL text; Jaeger's `otel.scope.name` / `otel.scope.version` tags.
    ScopeName,
    ScopeVersion,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Attr {
                scope: Scope::Span,
                key,
            } => write!(f, "span.{key}"),
            Field::Attr {
                scope: Scope::Resource,
                key,
            } => write!(f, "resource.{key}"),
            Field::Attr {
                scope: Scope::Any,
                key,
            } => write!(f, ".{key}"),
            Field::Name => f.write_str("name"),
            Field::Status => f.write_str("status"),
            Field::StatusMessage => f.write_str("statusMessage"),
            Field::Duration => f.write_str("duration"),
            Field::Kind => f.write_str("kind"),
            Field::ScopeName => f.write_str("otel.scope.name"),
            Field::ScopeVersion => f.write_str("otel.scope.version"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Re,
    NotRe,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Re => "=~",
            Op::NotRe => "!~",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    fn ordering(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Eq => o == Equal,
            Op::Ne => o != Equal,
            Op::Gt => o == Greater,
            Op::Ge => o != Less,
            Op::Lt => o == Less,
            Op::Le => o != Greater,
            Op::Re | Op::NotRe => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    Bool(bool),
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    Status(i32),
    /// OTLP span kind: 0 unspecified .. 5 consumer.
    Kind(i32),
    /// Jaeger tag semantics: equal to the value's text form, whatever its type.
    Text(String),
}

impl Literal {
    /// The text form the attribute index hashes, for literals an equality can be narrowed by.
    pub fn index_text(&self) -> Option<String> {
        match self {
            Literal::Str(s) | Literal::Text(s) => Some(s.clone()),
            Literal::Int(i) => Some(i.to_string()),
            Literal::Float(f) => Some(f.to_string()),
            Literal::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A fully anchored regular expression (RE2 syntax, as Tempo's), run by a size-limited DFA: linear
/// time in the input whatever the pattern, so a query cannot stall the server.
#[derive(Clone)]
pub struct Regex {
    pattern: String,
    dfa: Arc<dense::DFA<Vec<u32>>>,
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Regex({:?})", self.pattern)
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

const REGEX_LIMIT: usize = 4 << 20;

impl Regex {
    pub fn new(pattern: &str) -> Result<Regex, ParseError> {
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .start_kind(regex_automata::dfa::StartKind::Anchored)
                    .dfa_size_limit(Some(REGEX_LIMIT))
                    .determinize_size_limit(Some(REGEX_LIMIT)),
            )
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .thompson(
                thompson::Config::new()
                    .utf8(false)
                    .nfa_size_limit(Some(REGEX_LIMIT)),
            )
            .build(&format!("(?:{pattern})$"))
            .map_err(|e| ParseError(format!("invalid regular expression {pattern:?}: {e}")))?;
        Ok(Regex {
            pattern: pattern.to_string(),
            dfa: Arc::new(dfa),
        })
    }

    pub fn is_match(&self, text: &str) -> bool {
        let input = Input::new(text).anchored(Anchored::Yes);
        matches!(self.dfa.try_search_fwd(&input), Ok(Some(_)))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub field: Field,
    pub op: Op,
    pub value: Literal,
    pub regex: Option<Regex>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `{}`: every span.
    True,
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(Cond),
}

impl Expr {
    pub fn and(a: Expr, b: Expr) -> Expr {
        match (a, b) {
            (Expr::True, x) | (x, Expr::True) => x,
            (a, b) => Expr::And(Box::new(a), Box::new(b)),
        }
    }

    pub fn or(a: Expr, b: Expr) -> Expr {
        match (a, b) {
            (Expr::True, _) | (_, Expr::True) => Expr::True,
            (a, b) => Expr::Or(Box::new(a), Box::new(b)),
        }
    }

    /// The conditions every match must meet (the top-level `&&` terms): what a search narrows by.
    pub fn conjuncts(&self) -> Vec<&Cond> {
        match self {
            Expr::True | Expr::Or(..) => Vec::new(),
            Expr::Cmp(c) => vec![c],
            Expr::And(a, b) => {
                let mut v = a.conjuncts();
                v.extend(b.conjuncts());
                v
            }
        }
    }

    /// Every field the query mentions, in order, once each.
    pub fn fields(&self) -> Vec<&Field> {
        fn walk<'a>(e: &'a Expr, out: &mut Vec<&'a Field>) {
            match e {
                Expr::True => {}
                Expr::Cmp(c) => {
                    if !out.contains(&&c.field) {
                        out.push(&c.field);
                    }
                }
                Expr::And(a, b) | Expr::Or(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    pub fn matches(&self, s: &SpanRef) -> bool {
        match self {
            Expr::True => true,
            Expr::And(a, b) => a.matches(s) && b.matches(s),
            Expr::Or(a, b) => a.matches(s) || b.matches(s),
            Expr::Cmp(c) => c.matches(s),
        }
    }
}

/// A decoded span with what it came with, as conditions see it.
pub struct SpanRef<'a> {
    pub span: &'a Span,
    pub resource: &'a Resource,
    pub scope: &'a InstrumentationScope,
}

impl<'a> SpanRef<'a> {
    /// The value of `key` as `scope` finds it (for `Any`: the span's, else the resource's).
    pub fn attr(&self, scope: &Scope, key: &str) -> Option<&'a AnyValue> {
        let on_span = || crate::model::attrs::get(&self.span.attributes, key);
        let on_resource = || crate::model::attrs::get(&self.resource.attributes, key);
        match scope {
            Scope::Span => on_span(),
            Scope::Resource => on_resource(),
            Scope::Any => on_span().or_else(on_resource),
        }
    }
}

impl Cond {
    pub fn matches(&self, s: &SpanRef) -> bool {
        let span = s.span;
        match &self.field {
            Field::Attr { scope, key } => {
                let on = |attrs: &[KeyValue]| {
                    crate::model::attrs::get(attrs, key).is_some_and(|v| self.test_value(v))
                };
                match scope {
                    Scope::Span => on(&span.attributes),
                    Scope::Resource => on(&s.resource.attributes),
                    Scope::Any => on(&span.attributes) || on(&s.resource.attributes),
                }
            }
            Field::Name => self.test_str(&span.name),
            Field::StatusMessage => self.test_str(
                span.status
                    .as_ref()
                    .map(|st| st.message.as_str())
                    .unwrap_or(""),
            ),
            Field::ScopeName => self.test_str(&s.scope.name),
            Field::ScopeVersion => self.test_str(&s.scope.version),
            Field::Status => {
                let code = span.status.as_ref().map(|st| st.code).unwrap_or(0);
                matches!(self.value, Literal::Status(v) if self.op.ordering(code.cmp(&v)))
            }
            Field::Kind => {
                matches!(self.value, Literal::Kind(v) if self.op.ordering(span.kind.cmp(&v)))
            }
            Field::Duration => {
                let d = span
                    .end_time_unix_nano
                    .saturating_sub(span.start_time_unix_nano);
                let d = d.min(i64::MAX as u64) as i64;
                matches!(self.value, Literal::Duration(v) if self.op.ordering(d.cmp(&v)))
            }
        }
    }

    fn test_str(&self, text: &str) -> bool {
        match (&self.value, self.op) {
            (Literal::Str(_), Op::Re) => self.regex.as_ref().is_some_and(|r| r.is_match(text)),
            (Literal::Str(_), Op::NotRe) => self.regex.as_ref().is_some_and(|r| !r.is_match(text)),
            (Literal::Str(v) | Literal::Text(v), op) => op.ordering(text.cmp(v.as_str())),
            _ => false,
        }
    }

    fn test_value(&self, v: &AnyValue) -> bool {
        match (&self.value, v) {
            (Literal::Text(want), v) => crate::store::index::value_text(v)
                .is_some_and(|t| self.op.ordering(t.as_ref().cmp(want.as_str()))),
            (Literal::Str(_), AnyValue::StringValue(s)) => self.test_str(s),
            (Literal::Int(want), AnyValue::IntValue(i)) => self.op.ordering(i.cmp(want)),
            (Literal::Int(want), AnyValue::DoubleValue(d)) => cmp_f64(self.op, *d, *want as f64),
            (Literal::Float(want), AnyValue::IntValue(i)) => cmp_f64(self.op, *i as f64, *want),
            (Literal::Float(want), AnyValue::DoubleValue(d)) => cmp_f64(self.op, *d, *want),
            (Literal::Bool(want), AnyValue::BoolValue(b)) => self.op.ordering(b.cmp(want)),
            _ => false,
        }
    }
}

fn cmp_f64(op: Op, a: f64, b: f64) -> bool {
    a.partial_cmp(&b).is_some_and(|o| op.ordering(o))
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    And,
    Or,
    Op(Op),
    Str(String),
    Int(i64),
    Float(f64),
    Duration(i64),
    Ident(String),
    /// Anything TraceQL has that this subset does not: kept as text to name it in the error.
    Unsupported(String),
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LBrace => "`{`".into(),
        Tok::RBrace => "`}`".into(),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::And => "`&&`".into(),
        Tok::Or => "`||`".into(),
        Tok::Op(o) => format!("`{}`", o.text()),
        Tok::Str(s) => format!("the string {s:?}"),
        Tok::Int(i) => format!("the number {i}"),
        Tok::Float(f) => format!("the number {f}"),
        Tok::Duration(_) => "a duration".into(),
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Unsupported(s) => format!("`{s}`"),
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | '/')
}

fn tokenize(q: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<(usize, char)> = q.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let peek = |i: usize| chars.get(i).map(|c| c.1);
    while i < chars.len() {
        let (pos, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..].iter().take(2).map(|c| c.1).collect();
        let tok = match two.as_str() {
            "&&" => Some(Tok::And),
            "||" => Some(Tok::Or),
            "!=" => Some(Tok::Op(Op::Ne)),
            "=~" => Some(Tok::Op(Op::Re)),
            "!~" => Some(Tok::Op(Op::NotRe)),
            ">=" => Some(Tok::Op(Op::Ge)),
            "<=" => Some(Tok::Op(Op::Le)),
            ">>" | "<<" | "~>" | "!>" | "!<" | "&>" | "&<" => Some(Tok::Unsupported(two.clone())),
            _ => None,
        };
        if let Some(t) = tok {
            out.push((t, pos));
            i += 2;
            continue;
        }
        let single = match c {
            '{' => Some(Tok::LBrace),
            '}' => Some(Tok::RBrace),
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '=' => Some(Tok::Op(Op::Eq)),
            '>' => Some(Tok::Op(Op::Gt)),
            '<' => Some(Tok::Op(Op::Lt)),
            '|' | '!' | '~' | '&' | '+' | '*' | '/' | '%' | '^' | ',' | '[' | ']' => {
                Some(Tok::Unsupported(c.to_string()))
            }
            _ => None,
        };
        if let Some(t) = single {
            out.push((t, pos));
            i += 1;
            continue;
        }
        if c == '"' || c == '`' {
            let (s, next) = read_string(&chars, i)?;
            out.push((Tok::Str(s), pos));
            i = next;
            continue;
        }
        if c.is_ascii_digit()
            || (c == '-' && peek(i + 1).is_some_and(|d| d.is_ascii_digit() || d == '.'))
        {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].1.is_ascii_alphanumeric() || matches!(chars[i].1, '.' | 'µ'))
            {
                i += 1;
            }
            let text: String = chars[start..i].iter().map(|c| c.1).collect();
            out.push((number(&text, pos)?, pos));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == '.' {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i].1) {
                i += 1;
            }
            let mut text: String = chars[start..i].iter().map(|c| c.1).collect();
            // `span."attribute with spaces"`
            if text.ends_with('.') && peek(i) == Some('"') {
                let (s, next) = read_string(&chars, i)?;
                text.push_str(&s);
                i = next;
            }
            out.push((Tok::Ident(text), pos));
            continue;
        }
        if c == '-' {
            out.push((Tok::Unsupported("-".into()), pos));
            i += 1;
            continue;
        }
        return err(format!("unexpected character {c:?} at position {pos}"));
    }
    Ok(out)
}

fn read_string(chars: &[(usize, char)], start: usize) -> Result<(String, usize), ParseError> {
    let quote = chars[start].1;
    let mut s = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i].1;
        if c == quote {
            return Ok((s, i + 1));
        }
        if c == '\\' && quote == '"' {
            i += 1;
            match chars.get(i).map(|c| c.1) {
                Some('n') => s.push('\n'),
                Some('t') => s.push('\t'),
                Some('r') => s.push('\r'),
                Some(other) => s.push(other),
                None => break,
            }
        } else {
            s.push(c);
        }
        i += 1;
    }
    err(format!(
        "unterminated string starting at position {}",
        chars[start].0
    ))
}

/// `12`, `-3`, `1.5`, or a duration `150ms`, `2s`, `1m30s`, `1.5h`, `10us`, `5ns`.
fn number(text: &str, pos: usize) -> Result<Tok, ParseError> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Tok::Int(i));
    }
    if text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-'))
    {
        if let Ok(f) = text.parse::<f64>() {
            return Ok(Tok::Float(f));
        }
    }
    match parse_duration(text) {
        Some(ns) => Ok(Tok::Duration(ns)),
        None => err(format!(
            "cannot read {text:?} at position {pos}: expected a number or a duration such as 150ms, 2s, 1m30s"
        )),
    }
}

/// Go-style durations (`300ms`, `1.5h`, `2h45m`, `-1s`; units ns, us, µs, ms, s, m, h) in nanoseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let (neg, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return None;
    }
    let ns = total.round() as i64;
    Some(if neg { -ns } else { ns })
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    len: usize,
    conditions: usize,
    depth: usize,
}

/// Bounds that keep evaluation (recursive over the expression) cheap and the stack shallow.
const MAX_CONDITIONS: usize = 128;
const MAX_DEPTH: usize = 32;

/// Parses a query into one span condition: spansets joined by `||` become one `||`.
pub fn parse(query: &str) -> Result<Expr, ParseError> {
    let toks = tokenize(query)?;
    if toks.is_empty() {
        return err("empty query: write a spanset such as { status = error }");
    }
    let mut p = Parser {
        toks,
        at: 0,
        len: query.len(),
        conditions: 0,
        depth: 0,
    };
    let mut expr = p.spanset()?;
    while let Some(t) = p.peek().cloned() {
        match t {
            Tok::Or => {
                p.at += 1;
                expr = Expr::or(expr, p.spanset()?);
            }
            Tok::And => {
                return err(
                    "combining spansets with `&&` (a trace with spans matching each) is not supported; \
                     put the conditions in one spanset { a && b }, or join spansets with `||`",
                )
            }
            Tok::Unsupported(s) if s == "|" => {
                return err("pipelines (`| ...`: select, count, avg, by, ...) are not supported")
            }
            other => return err(format!("{} is not supported between spansets", describe(&other))),
        }
    }
    Ok(expr)
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.0)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map(|t| t.1).unwrap_or(self.len)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).map(|t| t.0.clone());
        self.at += 1;
        t
    }

    fn spanset(&mut self) -> Result<Expr, ParseError> {
        match self.next() {
            Some(Tok::LBrace) => {}
            Some(Tok::LParen) => {
                return err(
                    "parentheses around spansets are not supported; use them inside { ... }",
                )
            }
            Some(t) => {
                return err(format!(
                    "expected a spanset `{{ ... }}`, found {}",
                    describe(&t)
                ))
            }
            None => return err("expected a spanset `{ ... }` at the end of the query"),
        }
        if self.peek() == Some(&Tok::RBrace) {
            self.at += 1;
            return Ok(Expr::True);
        }
        let e = self.or_expr()?;
        match self.next() {
            Some(Tok::RBrace) => Ok(e),
            Some(t) => err(format!(
                "expected `}}` or `&&` / `||`, found {} at position {}",
                describe(&t),
                self.toks[self.at - 1].1
            )),
            None => err("missing `}` at the end of the query"),
        }
    }

    fn or_expr(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and_expr()?;
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            e = Expr::or(e, self.and_expr()?);
        }
        Ok(e)
    }

    fn and_expr(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.unary()?;
        while self.peek() == Some(&Tok::And) {
            self.at += 1;
            e = Expr::and(e, self.unary()?);
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.peek() == Some(&Tok::LParen) {
            self.at += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return err(format!("parentheses nest deeper than {MAX_DEPTH}"));
            }
            let e = self.or_expr()?;
            self.depth -= 1;
            return match self.next() {
                Some(Tok::RParen) => Ok(e),
                Some(t) => err(format!("expected `)`, found {}", describe(&t))),
                None => err("missing `)`"),
            };
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return err(format!(
                "more than {MAX_CONDITIONS} conditions in one query"
            ));
        }
        let pos = self.pos();
        let field = match self.next() {
            Some(Tok::Ident(name)) => field(&name)?,
            Some(Tok::Unsupported(s)) if s == "!" => {
                return err("negation `!` is not supported; use != or !~")
            }
            Some(t) => {
                return err(format!(
                    "expected an attribute or intrinsic at position {pos}, found {}",
                    describe(&t)
                ))
            }
            None => return err("expected a condition before the end of the query"),
        };
        let op = match self.next() {
            Some(Tok::Op(op)) => op,
            Some(Tok::RBrace) | Some(Tok::And) | Some(Tok::Or) | Some(Tok::RParen) | None => {
                return err(format!(
                    "`{field}` alone is not supported (existence checks are not in the subset); compare it, e.g. `{field} = \"...\"`"
                ))
            }
            Some(Tok::Unsupported(s)) => return err(format!("the operator `{s}` is not supported")),
            Some(t) => return err(format!("expected a comparison (= != =~ !~ > >= < <=) after `{field}`, found {}", describe(&t))),
        };
        let value = match self.next() {
            Some(Tok::Str(s)) => Literal::Str(s),
            Some(Tok::Int(i)) => Literal::Int(i),
            Some(Tok::Float(f)) => Literal::Float(f),
            Some(Tok::Duration(d)) => Literal::Duration(d),
            Some(Tok::Ident(word)) => keyword(&word, &field)?,
            Some(t) => {
                return err(format!(
                    "expected a value after `{field} {}`, found {}",
                    op.text(),
                    describe(&t)
                ))
            }
            None => return err(format!("expected a value after `{field} {}`", op.text())),
        };
        if let Some(Tok::Op(_)) | Some(Tok::Unsupported(_)) = self.peek() {
            return err("arithmetic and chained comparisons are not supported");
        }
        check(&field, op, &value)?;
        let regex = match (&value, op) {
            (Literal::Str(p), Op::Re | Op::NotRe) => Some(Regex::new(p)?),
            _ => None,
        };
        Ok(Expr::Cmp(Cond {
            field,
            op,
            value,
            regex,
        }))
    }
}

fn field(name: &str) -> Result<Field, ParseError> {
    let attr = |scope, key: &str| {
        if key.is_empty() {
            err(format!("`{name}` needs an attribute name"))
        } else {
            Ok(Field::Attr {
                scope,
                key: key.to_string(),
            })
        }
    };
    if let Some(k) = name.strip_prefix("span.") {
        return attr(Scope::Span, k);
    }
    if let Some(k) = name.strip_prefix("resource.") {
        return attr(Scope::Resource, k);
    }
    if let Some(k) = name.strip_prefix('.') {
        return attr(Scope::Any, k);
    }
    match name {
        "name" | "span:name" => Ok(Field::Name),
        "status" | "span:status" => Ok(Field::Status),
        "statusMessage" | "span:statusMessage" => Ok(Field::StatusMessage),
        "duration" | "span:duration" => Ok(Field::Duration),
        "kind" | "span:kind" => Ok(Field::Kind),
        "true" | "false" => err(format!("a bare `{name}` is not supported; compare a field")),
        "nil" => err("`nil` is not supported"),
        _ => {
            let prefix = name.split(['.', ':']).next().unwrap_or(name);
            if [
                "event",
                "link",
                "instrumentation",
                "trace",
                "parent",
                "span",
                "resource",
            ]
            .contains(&prefix)
            {
                err(format!("`{name}` is not supported: only resource., span. and unscoped (.) attributes and the intrinsics name, status, statusMessage, duration and kind"))
            } else if [
                "rootName",
                "rootServiceName",
                "traceDuration",
                "nestedSetLeft",
                "nestedSetRight",
                "nestedSetParent",
                "id",
                "traceID",
                "spanID",
            ]
            .contains(&name)
            {
                err(format!("the intrinsic `{name}` is not supported; supported intrinsics: name, status, statusMessage, duration, kind"))
            } else if [
                "select",
                "count",
                "avg",
                "min",
                "max",
                "sum",
                "by",
                "coalesce",
                "rate",
                "quantile_over_time",
            ]
            .contains(&name)
            {
                err(format!(
                    "`{name}` (pipelines and aggregates) is not supported"
                ))
            } else {
                err(format!("unknown field `{name}`: write span.{name}, resource.{name} or .{name} for an attribute"))
            }
        }
    }
}

fn keyword(word: &str, field: &Field) -> Result<Literal, ParseError> {
    Ok(match word {
        "true" => Literal::Bool(true),
        "false" => Literal::Bool(false),
        "unset" => Literal::Status(0),
        "ok" => Literal::Status(1),
        "error" => Literal::Status(2),
        "unspecified" => Literal::Kind(0),
        "internal" => Literal::Kind(1),
        "server" => Literal::Kind(2),
        "client" => Literal::Kind(3),
        "producer" => Literal::Kind(4),
        "consumer" => Literal::Kind(5),
        "nil" => return err("comparing with `nil` is not supported"),
        other => {
            return err(format!(
                "`{other}` is not a value; quote strings: `{field} = \"{other}\"`"
            ))
        }
    })
}

/// Refuses comparisons that could never mean anything (`status > 2s`, `name > true`, ...).
fn check(field: &Field, op: Op, value: &Literal) -> Result<(), ParseError> {
    let eq_only = matches!(op, Op::Eq | Op::Ne);
    let ok = match (field, value) {
        (Field::Status, Literal::Status(_)) => eq_only,
        (Field::Kind, Literal::Kind(_)) => eq_only,
        (Field::Duration, Literal::Duration(_)) => !matches!(op, Op::Re | Op::NotRe),
        (
            Field::Name | Field::StatusMessage | Field::ScopeName | Field::ScopeVersion,
            Literal::Str(_),
        ) => true,
        (Field::Attr { .. }, Literal::Str(_)) => true,
        (Field::Attr { .. }, Literal::Int(_) | Literal::Float(_)) => {
            !matches!(op, Op::Re | Op::NotRe)
        }
        (Field::Attr { .. }, Literal::Bool(_)) => eq_only,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let what = match value {
        Literal::Str(_) | Literal::Text(_) => "a string",
        Literal::Int(_) | Literal::Float(_) => "a number",
        Literal::Duration(_) => "a duration",
        Literal::Bool(_) => "a boolean",
        Literal::Status(_) => "a status (error, ok, unset)",
        Literal::Kind(_) => "a span kind",
    };
    let hint = match field {
        Field::Status => "status compares with = or != to error, ok or unset",
        Field::Kind => "kind compares with = or != to unspecified, internal, server, client, producer or consumer",
        Field::Duration => "duration compares with a duration such as 150ms or 2s",
        Field::Name | Field::StatusMessage => "it compares with a quoted string",
        _ => "regular expressions need a string; booleans, status and kind names compare with = or != only",
    };
    err(format!(
        "`{field} {}` with {what} is not supported: {hint}",
        op.text()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attrs::{kv_bool, kv_f64, kv_i64, kv_str};
    use crate::model::Status;

    fn sample() -> (Span, Resource, InstrumentationScope) {
        let span = Span {
            name: "execute_tool Bash".into(),
            kind: 1,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 3_500_000_000,
            attributes: vec![
                kv_str("gen_ai.tool.name", "Bash"),
                kv_i64("http.status_code", 500),
                kv_f64("ao.cost.usd", 0.25),
                kv_bool("ao.timing.estimated", true),
            ],
            status: Some(Status {
                code: 2,
                message: "exit 1".into(),
            }),
            ..Default::default()
        };
        let resource = Resource {
            attributes: vec![kv_str("service.name", "ao")],
            ..Default::default()
        };
        (span, resource, InstrumentationScope::default())
    }

    fn eval(q: &str) -> bool {
        let (span, resource, scope) = sample();
        let e = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        e.matches(&SpanRef {
            span: &span,
            resource: &resource,
            scope: &scope,
        })
    }

    fn rejected(q: &str, naming: &str) {
        match parse(q) {
            Ok(e) => panic!("{q} parsed as {e:?}"),
            Err(e) => assert!(
                e.0.contains(naming),
                "{q}: message {:?} does not name {naming:?}",
                e.0
            ),
        }
    }

    #[test]
    fn the_issue_examples() {
        assert!(eval(
            r#"{ span.gen_ai.tool.name = "Bash" && status = error }"#
        ));
        assert!(eval(r#"{ resource.service.name = "ao" && duration > 2s }"#));
        assert!(!eval(
            r#"{ resource.service.name = "ao" && duration > 3s }"#
        ));
    }

    #[test]
    fn comparisons_and_types() {
        assert!(eval("{}"));
        assert!(
            eval(r#"{ .service.name = "ao" }"#),
            "unscoped finds resource attributes"
        );
        assert!(eval(r#"{ .gen_ai.tool.name != "Read" }"#));
        assert!(
            !eval(r#"{ span.service.name = "ao" }"#),
            "span scope does not look at the resource"
        );
        assert!(
            !eval(r#"{ span.missing != "x" }"#),
            "a missing attribute matches nothing"
        );
        assert!(eval(
            "{ span.http.status_code >= 500 && span.http.status_code < 501 }"
        ));
        assert!(eval("{ span.http.status_code = 500.0 }"));
        assert!(
            !eval(r#"{ span.http.status_code = "500" }"#),
            "types must agree"
        );
        assert!(eval(
            "{ span.ao.cost.usd > 0.2 && span.ao.cost.usd <= 0.25 }"
        ));
        assert!(eval("{ span.ao.timing.estimated = true }"));
        assert!(eval("{ kind = internal && status != ok }"));
        assert!(eval(r#"{ name = "execute_tool Bash" }"#));
        assert!(eval(r#"{ statusMessage = "exit 1" }"#));
        assert!(eval(
            "{ duration >= 2500ms && duration < 2.6s && duration >= 2500000us }"
        ));
        assert!(eval("{ duration = 2500000000ns }"));
        assert!(eval(
            "{ span:duration > 1m } || { span:name = `execute_tool Bash` }"
        ));
    }

    #[test]
    fn boolean_structure() {
        assert!(eval(
            r#"{ (status = ok || status = error) && kind = internal }"#
        ));
        assert!(!eval(
            r#"{ status = ok || (status = error && kind = server) }"#
        ));
        assert!(eval(r#"{ status = ok } || { status = error }"#));
        let e = parse(
            r#"{ resource.service.name = "ao" && (name = "a" || name = "b") && duration > 1s }"#,
        )
        .unwrap();
        let fields: Vec<String> = e.conjuncts().iter().map(|c| c.field.to_string()).collect();
        assert_eq!(fields, ["resource.service.name", "duration"]);
    }

    #[test]
    fn regexes_are_anchored_and_linear() {
        assert!(eval(r#"{ name =~ "execute_tool .*" }"#));
        assert!(
            !eval(r#"{ name =~ "Bash" }"#),
            "anchored: a partial match is not a match"
        );
        assert!(eval(
            r#"{ name =~ ".*Bash" && span.gen_ai.tool.name !~ "Re.d|Grep" }"#
        ));
        assert!(eval(r#"{ name =~ "(?i)EXECUTE_TOOL bash" }"#));
        assert!(eval(r#"{ .gen_ai.tool.name =~ "[A-Z][a-z]{3}" }"#));
        let r = Regex::new("(a*)*b").unwrap();
        assert!(!r.is_match(&"a".repeat(10_000)));
        assert!(Regex::new("é+").unwrap().is_match("éé"));
    }

    #[test]
    fn unsupported_parts_are_named() {
        rejected("{ status = error } | count() > 2", "pipelines");
        rejected("{ status = error } && { kind = server }", "`&&`");
        rejected("{ status = error } >> { kind = server }", "`>>`");
        rejected("{ event.name = \"x\" }", "event.name");
        rejected("{ link.span_id = \"x\" }", "link.span_id");
        rejected("{ rootServiceName = \"x\" }", "rootServiceName");
        rejected("{ span.foo }", "existence");
        rejected("{ !(status = error) }", "negation");
        rejected("{ span.a + 1 > 2 }", "`+`");
        rejected("{ status > error }", "status compares");
        rejected("{ duration > 5 }", "duration compares");
        rejected("{ name = Bash }", "quote strings");
        rejected("{ span.x =~ \"(\" }", "invalid regular expression");
        rejected("{ span.x = nil }", "nil");
        rejected("{ status = error", "missing `}`");
        rejected("status = error", "spanset");
        rejected("", "empty");
        rejected("{ span.x = \"unterminated }", "unterminated");
        rejected("{ foo = 1 }", "unknown field");
        rejected("{ span.x > true }", "boolean");
        rejected(
            &format!("{{ {}status = error{} }}", "(".repeat(40), ")".repeat(40)),
            "deeper",
        );
        rejected(
            &format!("{{ {} }}", vec!["status = error"; 200].join(" || ")),
            "conditions",
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("10µs"), Some(10_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5d"), None);
        assert_eq!(parse_duration(""), None);
    }
}
