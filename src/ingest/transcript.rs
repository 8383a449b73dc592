//! Recorded agent sessions → spans. Two formats: ao-* session files (`<name>.jsonl` as `ao-new` /
//! `ao-resume` write them, with `<name>.meta.json` beside) and Claude Code transcripts
//! (`~/.claude/projects/<project>/<session-id>.jsonl`, sub-agent side chains included).
//!
//! A `Transcript` takes lines one at a time, so the watcher can feed it as a file grows, and renders
//! the whole session on request. Rendering is a pure function of the lines seen (and, for runs that
//! have not finished, of when their lines were seen), so ids and bodies are stable across re-reads.

use super::spans::{
    chat_attrs, chat_key, chat_key_in_run, clip, content_text, run_attrs, run_key, subagent_key,
    text_messages, tool_attrs, tool_key, usage_attrs, SpanSpec,
};
use crate::model::time::parse_rfc3339;
use crate::model::Span;
use serde_json::Value as Json;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// A line that was skipped, and why. The caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based; 0 for the file as a whole (e.g. its meta file).
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ao,
    ClaudeCode,
}

impl Format {
    pub fn service(self) -> &'static str {
        match self {
            Format::Ao => "ao",
            Format::ClaudeCode => "claude-code",
        }
    }
}

/// What `<name>.meta.json` says about an ao-* session.
#[derive(Debug, Clone, Default)]
pub struct AoMeta {
    pub session_name: Option<String>,
    pub session_id: Option<String>,
    pub agent: Option<String>,
    pub project_dir: Option<String>,
    pub created_ns: Option<u64>,
}

/// `architect.jsonl` → `architect.meta.json`.
pub fn meta_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.meta.json"))
}

/// `Ok(None)` when there is no meta file; `Err` when there is one that does not parse.
pub fn read_meta(path: &Path) -> Result<Option<AoMeta>, String> {
    let meta = meta_path(path);
    let text = match std::fs::read_to_string(&meta) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("could not read {}: {e}", meta.display())),
    };
    let v: Json =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", meta.display()))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Ok(Some(AoMeta {
        session_name: s("session_name"),
        session_id: s("session_id"),
        agent: s("agent"),
        project_dir: s("project_dir"),
        created_ns: s("created_at").as_deref().and_then(parse_rfc3339),
    }))
}

/// A session rendered as spans.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub session: String,
    pub format: Format,
    pub spans: Vec<Span>,
}

// ---------------------------------------------------------------------------------------------------
// Parsed lines

#[derive(Debug, Clone)]
enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Json,
    },
}

#[derive(Debug, Clone)]
struct ToolResult {
    id: String,
    content: String,
    is_error: bool,
}

#[derive(Debug, Clone)]
struct AoResult {
    subtype: String,
    duration_ms: Option<u64>,
    duration_api_ms: Option<i64>,
    is_error: bool,
    num_turns: Option<i64>,
    session_id: Option<String>,
    cost: Option<f64>,
    usage: Option<Json>,
    result: Option<String>,
}

#[derive(Debug, Clone)]
enum AoKind {
    Init {
        session_id: Option<String>,
        model: Option<String>,
        cwd: Option<String>,
    },
    Assistant {
        blocks: Vec<Block>,
        model: Option<String>,
        message_id: Option<String>,
        parent_tool: Option<String>,
    },
    ToolResults {
        results: Vec<ToolResult>,
    },
    Result(Box<AoResult>),
    /// Known but not part of the model (other system messages, stream events, user text echoes).
    Other,
}

#[derive(Debug, Clone)]
struct AoItem {
    seen_ns: u64,
    kind: AoKind,
}

#[derive(Debug, Clone, Default)]
struct AoRun {
    start_ns: Option<u64>,
    prompt: Option<String>,
    first_seen_ns: u64,
    items: Vec<AoItem>,
}

#[derive(Debug, Clone)]
enum CcKind {
    Prompt(String),
    ToolResults(Vec<ToolResult>),
    Assistant {
        id: Option<String>,
        model: Option<String>,
        blocks: Vec<Block>,
        usage: Option<Json>,
        stop_reason: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct CcEntry {
    uuid: Option<String>,
    parent: Option<String>,
    sidechain: bool,
    agent_id: Option<String>,
    ts: Option<u64>,
    session: Option<String>,
    cwd: Option<String>,
    version: Option<String>,
    git_branch: Option<String>,
    kind: CcKind,
}

/// Claude Code line types that carry nothing the session model needs.
const CC_IGNORED_TYPES: &[&str] = &[
    "system",
    "file-history-snapshot",
    "queue-operation",
    "attachment",
    "progress",
    "last-prompt",
    "tag",
    "agent-name",
];

/// One session file's lines, as far as they have been read.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    stem: String,
    meta: Option<AoMeta>,
    format: Option<Format>,
    ao_runs: Vec<AoRun>,
    cc: Vec<CcEntry>,
    cc_summary: Option<String>,
    cc_custom_title: Option<String>,
    warnings: Vec<Warning>,
    lines: usize,
    ignored: usize,
}

fn str_of(v: &Json, k: &str) -> Option<String> {
    v.get(k)
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn blocks_of(content: &Json) -> Vec<Block> {
    let Some(items) = content.as_array() else {
        return content
            .as_str()
            .map(|s| vec![Block::Text(s.to_string())])
            .unwrap_or_default();
    };
    items
        .iter()
        .filter_map(|b| {
            let ty = b.get("type").and_then(Json::as_str);
            if let (Some(id), Some(name)) = (str_of(b, "id"), str_of(b, "name")) {
                if b.get("input").is_some()
                    && matches!(ty, None | Some("tool_use") | Some("server_tool_use"))
                {
                    return Some(Block::ToolUse {
                        id,
                        name,
                        input: b.get("input").cloned().unwrap_or(Json::Null),
                    });
                }
            }
            match (ty, b.get("text").and_then(Json::as_str)) {
                (None | Some("text"), Some(t)) => Some(Block::Text(t.to_string())),
                _ => None,
            }
        })
        .collect()
}

fn tool_results_of(content: &Json) -> Vec<ToolResult> {
    content
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|b| {
                    Some(ToolResult {
                        id: str_of(b, "tool_use_id")?,
                        content: content_text(b.get("content").unwrap_or(&Json::Null)),
                        is_error: b.get("is_error").and_then(Json::as_bool).unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text_of_blocks(blocks: &[Block]) -> String {
    blocks
        .iter()
        .filter_map(|b| match b {
            Block::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// GenAI output messages for one assistant turn: its text and the tools it asked for.
fn output_messages(blocks: &[Block]) -> String {
    let parts: Vec<Json> = blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => serde_json::json!({"type": "text", "content": t}),
            Block::ToolUse { id, name, input } => {
                serde_json::json!({"type": "tool_call", "id": id, "name": name, "arguments": input})
            }
        })
        .collect();
    serde_json::json!([{ "role": "assistant", "parts": parts }]).to_string()
}

fn first_line(s: &str) -> String {
    clip(
        s.lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim(),
        300,
    )
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().filter(|c| *c == '-').count() == 4
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

impl Transcript {
    /// A transcript for the file at `path`; an ao-* meta file beside it is read now.
    pub fn open(path: &Path) -> Transcript {
        let mut t = Transcript {
            stem: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ..Default::default()
        };
        t.reload_meta(path);
        t
    }

    /// Re-reads the meta file (it may appear after the session file does).
    pub fn reload_meta(&mut self, path: &Path) {
        match read_meta(path) {
            Ok(Some(meta)) => {
                self.meta = Some(meta);
                self.format = Some(Format::Ao);
            }
            Ok(None) => {}
            Err(reason) => self.warnings.push(Warning { line: 0, reason }),
        }
    }

    pub fn format(&self) -> Option<Format> {
        self.format
    }

    pub fn has_meta(&self) -> bool {
        self.meta.is_some()
    }

    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Lines that were understood but carry nothing the session model needs.
    pub fn ignored(&self) -> usize {
        self.ignored
    }

    pub fn take_warnings(&mut self) -> Vec<Warning> {
        std::mem::take(&mut self.warnings)
    }

    fn warn(&mut self, line: usize, reason: impl Into<String>) {
        self.warnings.push(Warning {
            line,
            reason: reason.into(),
        });
    }

    /// Pushes every line of `bytes` (numbered from `lines_before + 1`). `seen_ns` is when they were
    /// read: the only clock for lines of a run that has not reported its duration yet. A last line
    /// without a newline is kept if it parses, else reported as truncated. Returns how many lines there
    /// were.
    pub fn push_bytes(&mut self, bytes: &[u8], lines_before: usize, seen_ns: u64) -> usize {
        let mut line_no = lines_before;
        let mut rest = bytes;
        while !rest.is_empty() {
            line_no += 1;
            let (line, terminated) = match rest.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    let line = &rest[..at];
                    rest = &rest[at + 1..];
                    (line, true)
                }
                None => (std::mem::take(&mut rest), false),
            };
            let text = String::from_utf8_lossy(line);
            self.push_inner(line_no, &text, seen_ns, !terminated);
        }
        line_no - lines_before
    }

    fn push_inner(&mut self, line_no: usize, text: &str, seen_ns: u64, unterminated: bool) {
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            return;
        }
        self.lines += 1;
        let v: Json = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) if unterminated => {
                self.warn(
                    line_no,
                    format!("truncated last line (no newline at the end, not valid JSON: {e})"),
                );
                return;
            }
            Err(e) => {
                self.warn(line_no, format!("not JSON: {e}"));
                return;
            }
        };
        if !v.is_object() {
            self.warn(line_no, "unknown message shape: not a JSON object");
            return;
        }
        let format = match self.format {
            Some(f) => f,
            None => {
                let f = if v.get("sessionId").is_some()
                    || v.get("leafUuid").is_some()
                    || matches!(
                        v.get("type").and_then(Json::as_str),
                        Some("user" | "assistant" | "summary")
                    ) {
                    Format::ClaudeCode
                } else {
                    Format::Ao
                };
                self.format = Some(f);
                f
            }
        };
        match format {
            Format::Ao => self.push_ao(line_no, v, seen_ns),
            Format::ClaudeCode => self.push_cc(line_no, v),
        }
    }

    fn push_ao(&mut self, line_no: usize, v: Json, seen_ns: u64) {
        if v.get("type").and_then(Json::as_str) == Some("user_message") {
            self.ao_runs.push(AoRun {
                start_ns: str_of(&v, "timestamp").as_deref().and_then(parse_rfc3339),
                prompt: Some(content_text(v.get("content").unwrap_or(&Json::Null))),
                first_seen_ns: seen_ns,
                items: Vec::new(),
            });
            return;
        }
        let kind = if let Some(subtype) = str_of(&v, "subtype") {
            if let Some(data) = v.get("data") {
                if subtype == "init" {
                    AoKind::Init {
                        session_id: str_of(data, "session_id"),
                        model: str_of(data, "model"),
                        cwd: str_of(data, "cwd"),
                    }
                } else {
                    AoKind::Other
                }
            } else if v.get("duration_ms").is_some()
                || v.get("num_turns").is_some()
                || v.get("total_cost_usd").is_some()
            {
                AoKind::Result(Box::new(AoResult {
                    subtype,
                    duration_ms: v.get("duration_ms").and_then(Json::as_u64),
                    duration_api_ms: v.get("duration_api_ms").and_then(Json::as_i64),
                    is_error: v.get("is_error").and_then(Json::as_bool).unwrap_or(false),
                    num_turns: v.get("num_turns").and_then(Json::as_i64),
                    session_id: str_of(&v, "session_id"),
                    cost: v.get("total_cost_usd").and_then(Json::as_f64),
                    usage: v.get("usage").filter(|u| u.is_object()).cloned(),
                    result: str_of(&v, "result"),
                }))
            } else {
                AoKind::Other
            }
        } else if let Some(content) = v.get("content") {
            let parent_tool = str_of(&v, "parent_tool_use_id");
            if v.get("model").is_some() {
                AoKind::Assistant {
                    blocks: blocks_of(content),
                    model: str_of(&v, "model"),
                    message_id: str_of(&v, "message_id"),
                    parent_tool,
                }
            } else {
                let results = tool_results_of(content);
                if results.is_empty() {
                    AoKind::Other
                } else {
                    AoKind::ToolResults { results }
                }
            }
        } else if v.get("event").is_some() && v.get("uuid").is_some() {
            AoKind::Other
        } else {
            self.warn(
                line_no,
                "unknown message shape: neither a user_message nor a Claude Agent SDK message",
            );
            return;
        };
        if matches!(kind, AoKind::Other) {
            self.ignored += 1;
        }
        if self.ao_runs.is_empty() {
            // SDK lines before any user_message: a run whose prompt was not recorded.
            self.ao_runs.push(AoRun {
                first_seen_ns: seen_ns,
                ..Default::default()
            });
        }
        if let Some(run) = self.ao_runs.last_mut() {
            run.items.push(AoItem { seen_ns, kind });
        }
    }

    fn push_cc(&mut self, line_no: usize, v: Json) {
        let ty = v.get("type").and_then(Json::as_str).unwrap_or("");
        match ty {
            "summary" => {
                if let Some(s) = str_of(&v, "summary") {
                    self.cc_summary = Some(s);
                }
                return;
            }
            "custom-title" => {
                if let Some(s) = str_of(&v, "customTitle") {
                    self.cc_custom_title = Some(s);
                }
                return;
            }
            "user" | "assistant" => {}
            "" => {
                self.warn(
                    line_no,
                    "unknown message shape: a Claude Code line without a type",
                );
                return;
            }
            other => {
                if !CC_IGNORED_TYPES.contains(&other) {
                    tracing::debug!(
                        line = line_no,
                        r#type = other,
                        "Claude Code line type not modelled; ignored"
                    );
                }
                self.ignored += 1;
                return;
            }
        }
        let Some(message) = v.get("message").filter(|m| m.is_object()) else {
            self.warn(
                line_no,
                format!("unknown message shape: a {ty} line without a message"),
            );
            return;
        };
        let content = message.get("content").unwrap_or(&Json::Null);
        let kind = if ty == "assistant" {
            CcKind::Assistant {
                id: str_of(message, "id"),
                model: str_of(message, "model"),
                blocks: blocks_of(content),
                usage: message.get("usage").filter(|u| u.is_object()).cloned(),
                stop_reason: str_of(message, "stop_reason"),
            }
        } else {
            let results = tool_results_of(content);
            if !results.is_empty() {
                CcKind::ToolResults(results)
            } else if v.get("isMeta").and_then(Json::as_bool) == Some(true) {
                self.ignored += 1;
                return;
            } else {
                CcKind::Prompt(text_of_blocks(&blocks_of(content)))
            }
        };
        self.cc.push(CcEntry {
            uuid: str_of(&v, "uuid"),
            parent: str_of(&v, "parentUuid"),
            sidechain: v
                .get("isSidechain")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            agent_id: str_of(&v, "agentId"),
            ts: str_of(&v, "timestamp").as_deref().and_then(parse_rfc3339),
            session: str_of(&v, "sessionId"),
            cwd: str_of(&v, "cwd"),
            version: str_of(&v, "version"),
            git_branch: str_of(&v, "gitBranch"),
            kind,
        });
    }

    /// The session as spans; `None` while nothing identifies a session yet.
    pub fn render(&self) -> Option<Rendered> {
        match self.format? {
            Format::Ao => self.render_ao(),
            Format::ClaudeCode => self.render_cc(),
        }
    }

    // -----------------------------------------------------------------------------------------------
    // ao-* session files

    fn ao_session(&self) -> Option<String> {
        if let Some(id) = self.meta.as_ref().and_then(|m| m.session_id.clone()) {
            return Some(id);
        }
        for run in &self.ao_runs {
            for item in &run.items {
                match &item.kind {
                    AoKind::Init {
                        session_id: Some(id),
                        ..
                    } => return Some(id.clone()),
                    AoKind::Result(r) if r.session_id.is_some() => return r.session_id.clone(),
                    _ => {}
                }
            }
        }
        // Without meta or init line only a run's prompt is known: the file name is the session.
        (!self.ao_runs.is_empty() && !self.stem.is_empty()).then(|| self.stem.clone())
    }

    fn render_ao(&self) -> Option<Rendered> {
        let session = self.ao_session()?;
        let meta = self.meta.clone().unwrap_or_default();
        let agent = meta.agent.clone().unwrap_or_else(|| "agent".to_string());
        let mut out = Vec::new();
        let runs = self.ao_runs.len();
        for (i, run) in self.ao_runs.iter().enumerate() {
            let n = i + 1;
            let result = run.items.iter().find_map(|it| match &it.kind {
                AoKind::Result(r) => Some(r.as_ref()),
                _ => None,
            });
            let start_known = run.start_ns.or(if n == 1 { meta.created_ns } else { None });
            let start = start_known.unwrap_or(run.first_seen_ns);
            let end_known = result
                .and_then(|r| r.duration_ms)
                .map(|d| start + d * 1_000_000);
            // SDK lines carry no clock: with the run's duration known they are spread evenly over it,
            // otherwise each sits at the moment it was read.
            let count = run.items.len().max(1) as u64;
            let mut times = Vec::with_capacity(run.items.len());
            let mut last = start;
            for (k, item) in run.items.iter().enumerate() {
                let t = match end_known {
                    Some(end) => start + (end - start) * (k as u64 + 1) / count,
                    None => item.seen_ns.max(last),
                };
                last = t.max(last);
                times.push(last);
            }
            let run_end = end_known.unwrap_or(last);
            let in_progress = result.is_none() && n == runs;
            let rkey = run_key(&session, n);

            let mut results: HashMap<&str, (usize, &ToolResult)> = HashMap::new();
            for (k, item) in run.items.iter().enumerate() {
                if let AoKind::ToolResults { results: rs } = &item.kind {
                    for r in rs {
                        results.entry(r.id.as_str()).or_insert((k, r));
                    }
                }
            }
            let mut model = None;
            let mut cwd = None;
            let mut task_agents: HashMap<String, String> = HashMap::new();
            let mut subagents: Vec<(String, u64, u64)> = Vec::new();
            let mut chats: Vec<SpanSpec> = Vec::new();
            let mut chat_index: HashMap<String, usize> = HashMap::new();
            let mut assistant_k = 0;
            for (k, item) in run.items.iter().enumerate() {
                match &item.kind {
                    AoKind::Init {
                        model: m, cwd: c, ..
                    } => {
                        model = model.or(m.clone());
                        cwd = cwd.or(c.clone());
                    }
                    AoKind::Assistant {
                        blocks,
                        model: m,
                        message_id,
                        parent_tool,
                    } => {
                        assistant_k += 1;
                        model = model.or(m.clone());
                        let scope = match parent_tool {
                            Some(task) => {
                                match subagents.iter_mut().find(|s| &s.0 == task) {
                                    Some(s) => s.2 = times[k],
                                    None => subagents.push((task.clone(), times[k], times[k])),
                                }
                                subagent_key(task)
                            }
                            None => rkey.clone(),
                        };
                        let start = if k == 0 { start } else { times[k - 1] };
                        let key = match message_id {
                            Some(id) => chat_key(id),
                            None => chat_key_in_run(&session, n, assistant_k),
                        };
                        if let Some(&at) = chat_index.get(&key) {
                            chats[at].end_ns = times[k];
                        } else {
                            let mut c = SpanSpec::new(
                                &session,
                                key.clone(),
                                format!("chat {}", m.as_deref().unwrap_or("claude")),
                                start,
                                times[k],
                            );
                            chat_attrs(&mut c, m.as_deref());
                            c.opt_str("gen_ai.response.id", message_id.as_deref());
                            c.str("gen_ai.output.messages", output_messages(blocks));
                            c.parent = Some(scope.clone());
                            c.estimated = true;
                            chat_index.insert(key, chats.len());
                            chats.push(c);
                        }
                        for b in blocks {
                            let Block::ToolUse { id, name, input } = b else {
                                continue;
                            };
                            if name == "Task" || name == "Agent" {
                                if let Some(t) = input.get("subagent_type").and_then(Json::as_str) {
                                    task_agents.insert(id.clone(), t.to_string());
                                }
                            }
                            let mut t = SpanSpec::new(
                                &session,
                                tool_key(id),
                                format!("execute_tool {name}"),
                                times[k],
                                times[k],
                            );
                            tool_attrs(&mut t, name, Some(id), Some(input));
                            t.parent = Some(scope.clone());
                            t.estimated = true;
                            match results.get(id.as_str()) {
                                Some((rk, r)) => {
                                    t.end_ns = times[*rk].max(t.start_ns);
                                    t.str("gen_ai.tool.call.result", r.content.clone());
                                    if r.is_error {
                                        t.error = Some(first_line(&r.content));
                                        t.str("error.type", "tool_error");
                                    }
                                }
                                None if in_progress => t.in_progress = true,
                                None => {
                                    t.end_ns = run_end.max(t.start_ns);
                                    t.attrs.push(crate::model::attrs::kv_bool(
                                        "ao.tool.result_missing",
                                        true,
                                    ));
                                }
                            }
                            out.push(t.to_span());
                        }
                    }
                    _ => {}
                }
            }
            for c in &chats {
                out.push(c.to_span());
            }
            for (task, first, last) in subagents {
                let agent_name = task_agents
                    .get(&task)
                    .cloned()
                    .unwrap_or_else(|| "subagent".into());
                let mut s = SpanSpec::new(
                    &session,
                    subagent_key(&task),
                    format!("invoke_agent {agent_name}"),
                    first,
                    last,
                );
                run_attrs(&mut s, &agent_name);
                s.parent = Some(tool_key(&task));
                s.estimated = true;
                s.in_progress = in_progress && !results.contains_key(task.as_str());
                out.push(s.to_span());
            }

            let mut r = SpanSpec::new(
                &session,
                rkey,
                format!("invoke_agent {agent}"),
                start,
                run_end,
            );
            run_attrs(&mut r, &agent);
            r.opt_str("ao.session.name", meta.session_name.as_deref());
            r.opt_str("gen_ai.request.model", model.as_deref());
            r.opt_str("ao.cwd", cwd.as_deref().or(meta.project_dir.as_deref()));
            r.int("ao.run.index", n as i64);
            if let Some(p) = &run.prompt {
                r.str("gen_ai.input.messages", text_messages("user", p));
            }
            match result {
                Some(res) => {
                    if let Some(u) = &res.usage {
                        usage_attrs(&mut r, u);
                    }
                    if let Some(c) = res.cost {
                        r.float("ao.cost.usd", c);
                    }
                    if let Some(t) = res.num_turns {
                        r.int("ao.num_turns", t);
                    }
                    if let Some(d) = res.duration_api_ms {
                        r.int("ao.duration_api_ms", d);
                    }
                    r.str("ao.result.subtype", res.subtype.clone());
                    if let Some(text) = &res.result {
                        r.str("gen_ai.output.messages", text_messages("assistant", text));
                    }
                    if res.is_error || res.subtype != "success" {
                        r.error = Some(
                            res.result
                                .as_deref()
                                .map(first_line)
                                .unwrap_or_else(|| res.subtype.clone()),
                        );
                        r.str("error.type", res.subtype.clone());
                    }
                }
                None if in_progress => r.in_progress = true,
                None => r.error = Some("the run ended without a result".into()),
            }
            r.estimated = start_known.is_none() || end_known.is_none();
            out.push(r.to_span());
        }
        Some(Rendered {
            session,
            format: Format::Ao,
            spans: out,
        })
    }

    // -----------------------------------------------------------------------------------------------
    // Claude Code transcripts

    fn cc_session(&self) -> Option<String> {
        if is_uuid(&self.stem)
            && self
                .cc
                .iter()
                .any(|e| e.session.as_deref() == Some(self.stem.as_str()))
        {
            return Some(self.stem.clone());
        }
        self.cc.iter().find_map(|e| e.session.clone())
    }

    fn render_cc(&self) -> Option<Rendered> {
        let session = self.cc_session()?;
        let entries = &self.cc;
        let ts_of: HashMap<&str, u64> = entries
            .iter()
            .filter_map(|e| Some((e.uuid.as_deref()?, e.ts?)))
            .collect();
        let mut results: HashMap<&str, (u64, &ToolResult)> = HashMap::new();
        for e in entries {
            if let CcKind::ToolResults(rs) = &e.kind {
                for r in rs {
                    results
                        .entry(r.id.as_str())
                        .or_insert((e.ts.unwrap_or(0), r));
                }
            }
        }
        let title = self
            .cc_custom_title
            .clone()
            .or_else(|| self.cc_summary.clone());

        // Scopes: each main-chain prompt opens a run; each side chain is a sub-agent.
        struct Scope {
            key: String,
            parent: Option<String>,
            agent: String,
            prompt: Option<String>,
            entries: Vec<usize>,
            in_progress: bool,
            is_run: bool,
        }
        let mut scopes: Vec<Scope> = Vec::new();
        let mut current_run: Option<usize> = None;
        let mut runs = 0;
        let mut chains: HashMap<String, usize> = HashMap::new();
        let side_parent: HashMap<&str, Option<&str>> = entries
            .iter()
            .filter(|e| e.sidechain)
            .filter_map(|e| Some((e.uuid.as_deref()?, e.parent.as_deref())))
            .collect();
        let root_of = |e: &CcEntry| -> String {
            if let Some(a) = &e.agent_id {
                return format!("agent:{a}");
            }
            let mut at = e.uuid.as_deref();
            let mut steps = 0;
            while let Some(u) = at {
                match side_parent.get(u) {
                    Some(Some(p)) if side_parent.contains_key(p) && steps < entries.len() => {
                        at = Some(p);
                        steps += 1;
                    }
                    _ => return u.to_string(),
                }
            }
            String::from("unknown")
        };
        // Task calls of the main chain, in order, for matching side chains to the call that started them.
        let mut tasks: Vec<(String, Option<String>, Option<String>, u64)> = Vec::new();
        for e in entries.iter().filter(|e| !e.sidechain) {
            if let CcKind::Assistant { blocks, .. } = &e.kind {
                for b in blocks {
                    if let Block::ToolUse { id, name, input } = b {
                        if name == "Task" || name == "Agent" {
                            tasks.push((
                                id.clone(),
                                input
                                    .get("prompt")
                                    .and_then(Json::as_str)
                                    .map(str::to_string),
                                input
                                    .get("subagent_type")
                                    .and_then(Json::as_str)
                                    .map(str::to_string),
                                e.ts.unwrap_or(0),
                            ));
                        }
                    }
                }
            }
        }
        let mut used_tasks: HashSet<String> = HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            if e.sidechain {
                let root = root_of(e);
                let at = match chains.get(&root) {
                    Some(at) => *at,
                    None => {
                        let prompt = match &e.kind {
                            CcKind::Prompt(p) => Some(p.clone()),
                            _ => None,
                        };
                        let ts = e.ts.unwrap_or(0);
                        let task = tasks
                            .iter()
                            .find(|t| {
                                !used_tasks.contains(&t.0) && prompt.is_some() && t.1 == prompt
                            })
                            .or_else(|| {
                                tasks
                                    .iter()
                                    .rev()
                                    .find(|t| !used_tasks.contains(&t.0) && t.3 <= ts)
                            })
                            .cloned();
                        let (key, parent, agent, in_progress) = match task {
                            Some((id, _, ty, _)) => {
                                used_tasks.insert(id.clone());
                                let open = !results.contains_key(id.as_str());
                                (
                                    subagent_key(&id),
                                    Some(tool_key(&id)),
                                    ty.unwrap_or_else(|| "subagent".into()),
                                    open,
                                )
                            }
                            None => (
                                format!("subagent:{session}:{root}"),
                                None,
                                "subagent".to_string(),
                                false,
                            ),
                        };
                        scopes.push(Scope {
                            key,
                            parent,
                            agent,
                            prompt,
                            entries: Vec::new(),
                            in_progress,
                            is_run: false,
                        });
                        chains.insert(root, scopes.len() - 1);
                        scopes.len() - 1
                    }
                };
                scopes[at].entries.push(i);
                continue;
            }
            if let CcKind::Prompt(p) = &e.kind {
                runs += 1;
                scopes.push(Scope {
                    key: run_key(&session, runs),
                    parent: None,
                    agent: "claude-code".into(),
                    prompt: Some(p.clone()),
                    entries: vec![i],
                    in_progress: false,
                    is_run: true,
                });
                current_run = Some(scopes.len() - 1);
                continue;
            }
            let at = match current_run {
                Some(at) => at,
                None => {
                    // Lines before any prompt (a resumed or compacted session): a run without one.
                    runs += 1;
                    scopes.push(Scope {
                        key: run_key(&session, runs),
                        parent: None,
                        agent: "claude-code".into(),
                        prompt: None,
                        entries: Vec::new(),
                        in_progress: false,
                        is_run: true,
                    });
                    current_run = Some(scopes.len() - 1);
                    scopes.len() - 1
                }
            };
            scopes[at].entries.push(i);
        }
        // The last run is still going unless its last line is a final answer with nothing left open.
        if let Some(last) = scopes.iter().rposition(|s| s.is_run) {
            let s = &scopes[last];
            let finished = s.entries.last().map(|&i| &entries[i].kind).is_some_and(
                |k| matches!(k, CcKind::Assistant { stop_reason: Some(r), .. } if r != "tool_use"),
            );
            scopes[last].in_progress = !finished;
        }

        let mut out = Vec::new();
        for s in &scopes {
            let times: Vec<u64> = s.entries.iter().filter_map(|&i| entries[i].ts).collect();
            let start = times.iter().copied().min().unwrap_or(0);
            let end = times.iter().copied().max().unwrap_or(start);
            let mut chats: Vec<(SpanSpec, i64)> = Vec::new();
            let mut chat_index: HashMap<String, usize> = HashMap::new();
            let mut model = None;
            let mut last_text = None;
            let mut meta = (None, None, None);
            for &i in &s.entries {
                let e = &entries[i];
                if meta.0.is_none() {
                    meta = (e.cwd.clone(), e.version.clone(), e.git_branch.clone());
                }
                let CcKind::Assistant {
                    id,
                    model: m,
                    blocks,
                    usage,
                    stop_reason,
                } = &e.kind
                else {
                    continue;
                };
                model = model.or(m.clone());
                let ts = e.ts.unwrap_or(start);
                let text = text_of_blocks(blocks);
                if !text.is_empty() {
                    last_text = Some(text);
                }
                let key = match (id, &e.uuid) {
                    (Some(id), _) => chat_key(id),
                    (None, Some(u)) => chat_key(u),
                    (None, None) => chat_key_in_run(&session, out.len(), i),
                };
                let output = usage
                    .as_ref()
                    .and_then(|u| u.get("output_tokens"))
                    .and_then(Json::as_i64)
                    .unwrap_or(0);
                match chat_index.get(&key) {
                    Some(&at) => {
                        let (c, best) = &mut chats[at];
                        c.end_ns = c.end_ns.max(ts);
                        // Streamed lines of one response repeat its usage; the largest is the final count.
                        if output >= *best {
                            if let Some(u) = usage {
                                c.attrs.retain(|kv| !kv.key.starts_with("gen_ai.usage."));
                                usage_attrs(c, u);
                                *best = output;
                            }
                        }
                        c.attrs
                            .retain(|kv| kv.key != "gen_ai.response.finish_reasons");
                        if let Some(r) = stop_reason {
                            c.str("gen_ai.response.finish_reasons", r.clone());
                        }
                        merge_output(c, blocks);
                    }
                    None => {
                        let begin = e
                            .parent
                            .as_deref()
                            .and_then(|p| ts_of.get(p).copied())
                            .filter(|t| *t <= ts)
                            .unwrap_or(ts);
                        let mut c = SpanSpec::new(
                            &session,
                            key.clone(),
                            format!("chat {}", m.as_deref().unwrap_or("claude")),
                            begin,
                            ts,
                        );
                        chat_attrs(&mut c, m.as_deref());
                        c.opt_str("gen_ai.response.id", id.as_deref());
                        if let Some(u) = usage {
                            usage_attrs(&mut c, u);
                        }
                        if let Some(r) = stop_reason {
                            c.str("gen_ai.response.finish_reasons", r.clone());
                        }
                        c.str("gen_ai.output.messages", output_messages(blocks));
                        c.parent = Some(s.key.clone());
                        c.estimated = true;
                        chat_index.insert(key, chats.len());
                        chats.push((c, output));
                    }
                }
                for b in blocks {
                    let Block::ToolUse { id, name, input } = b else {
                        continue;
                    };
                    let mut t = SpanSpec::new(
                        &session,
                        tool_key(id),
                        format!("execute_tool {name}"),
                        ts,
                        ts,
                    );
                    tool_attrs(&mut t, name, Some(id), Some(input));
                    t.parent = Some(s.key.clone());
                    match results.get(id.as_str()) {
                        Some((rts, r)) => {
                            t.end_ns = (*rts).max(ts);
                            t.str("gen_ai.tool.call.result", r.content.clone());
                            if r.is_error {
                                t.error = Some(first_line(&r.content));
                                t.str("error.type", "tool_error");
                            }
                        }
                        None if s.in_progress => t.in_progress = true,
                        None => {
                            t.end_ns = end.max(ts);
                            t.attrs
                                .push(crate::model::attrs::kv_bool("ao.tool.result_missing", true));
                        }
                    }
                    out.push(t.to_span());
                }
            }
            for (c, _) in &chats {
                out.push(c.to_span());
            }
            let mut r = SpanSpec::new(
                &session,
                s.key.clone(),
                format!("invoke_agent {}", s.agent),
                start,
                end,
            );
            run_attrs(&mut r, &s.agent);
            r.parent = s.parent.clone();
            r.opt_str("gen_ai.request.model", model.as_deref());
            if s.is_run {
                r.opt_str("ao.session.title", title.as_deref());
                r.opt_str("ao.cwd", meta.0.as_deref());
                r.opt_str("ao.claude_code.version", meta.1.as_deref());
                r.opt_str("ao.git.branch", meta.2.as_deref());
                r.int(
                    "ao.run.index",
                    scopes
                        .iter()
                        .take_while(|x| x.key != s.key)
                        .filter(|x| x.is_run)
                        .count() as i64
                        + 1,
                );
            }
            if let Some(p) = &s.prompt {
                r.str("gen_ai.input.messages", text_messages("user", p));
            }
            if let Some(t) = &last_text {
                r.str("gen_ai.output.messages", text_messages("assistant", t));
            }
            r.in_progress = s.in_progress;
            out.push(r.to_span());
        }
        Some(Rendered {
            session,
            format: Format::ClaudeCode,
            spans: out,
        })
    }
}

/// A response streamed over several lines: its output messages gather all their blocks.
fn merge_output(c: &mut SpanSpec, blocks: &[Block]) {
    let Some(kv) = c
        .attrs
        .iter_mut()
        .find(|kv| kv.key == "gen_ai.output.messages")
    else {
        return;
    };
    let Some(crate::model::any_value::Value::StringValue(text)) =
        kv.value.as_mut().and_then(|v| v.value.as_mut())
    else {
        return;
    };
    let Ok(mut msgs) = serde_json::from_str::<Json>(text) else {
        return;
    };
    let extra: Json = serde_json::from_str(&output_messages(blocks)).unwrap_or(Json::Null);
    if let (Some(parts), Some(more)) = (
        msgs.get_mut(0)
            .and_then(|m| m.get_mut("parts"))
            .and_then(Json::as_array_mut),
        extra
            .get(0)
            .and_then(|m| m.get("parts"))
            .and_then(Json::as_array),
    ) {
        parts.extend(more.iter().cloned());
    }
    *text = msgs.to_string();
}

/// Reads a whole file into a transcript, the way `aotel import` does: every complete line, and a last
/// line without newline if it parses. `seen_ns` stands for when lines without a clock happened.
pub fn read_file(path: &Path, seen_ns: u64) -> std::io::Result<Transcript> {
    let bytes = std::fs::read(path)?;
    let mut t = Transcript::open(path);
    t.push_bytes(&bytes, 0, seen_ns);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attrs::{first_f64, first_i64, first_str};
    use crate::model::facts::{span_facts, OP_AGENT, OP_CHAT, OP_TOOL};

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel)
    }

    #[test]
    fn ao_fixture_facts() {
        let t = read_file(&fixture("ao-sessions/architect.jsonl"), 0).unwrap();
        assert!(t.clone().take_warnings().is_empty());
        let r = t.render().unwrap();
        assert_eq!(r.session, "d796e8ba-ef3c-453f-97d7-b644930563f5");
        let facts: Vec<_> = r
            .spans
            .iter()
            .map(|s| (s, span_facts(s, &[], "ao")))
            .collect();
        let runs: Vec<_> = facts
            .iter()
            .filter(|(_, f)| f.operation == Some(OP_AGENT))
            .collect();
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|(_, f)| f.is_root
            && !f.in_progress
            && f.agent.as_deref() == Some("local-codebase-researcher")));
        let tools: Vec<_> = facts
            .iter()
            .filter(|(_, f)| f.operation == Some(OP_TOOL))
            .collect();
        let names: Vec<_> = tools.iter().map(|(_, f)| f.tool.clone().unwrap()).collect();
        assert_eq!(names, ["Bash", "Read", "Grep", "Read", "Edit"]);
        assert_eq!(tools.iter().filter(|(_, f)| f.is_error).count(), 1);
        assert!(tools[1].1.is_error);
        let cost: f64 = runs
            .iter()
            .map(|(s, _)| first_f64(&s.attributes, &["ao.cost.usd"]).unwrap())
            .sum();
        assert!((cost - 0.0534445).abs() < 1e-12);
        let out: i64 = runs.iter().map(|(_, f)| f.usage.output_tokens).sum();
        assert_eq!(out, 908);
        assert_eq!(
            facts
                .iter()
                .filter(|(_, f)| f.operation == Some(OP_CHAT))
                .count(),
            6
        );
        assert_eq!(
            first_str(&runs[0].0.attributes, &["ao.session.name"]),
            Some("architect")
        );
        let run1 = runs
            .iter()
            .find(|(s, _)| first_i64(&s.attributes, &["ao.run.index"]) == Some(1))
            .unwrap();
        assert_eq!(
            run1.0.end_time_unix_nano - run1.0.start_time_unix_nano,
            18_234_000_000
        );
    }

    #[test]
    fn claude_code_fixture_facts() {
        let t = read_file(
            &fixture("claude-code/5f0c2a7e-1b9d-4c3e-8f6a-2d4b7e9c1a03.jsonl"),
            0,
        )
        .unwrap();
        assert!(t.clone().take_warnings().is_empty());
        let r = t.render().unwrap();
        let by_id: HashMap<Vec<u8>, &Span> =
            r.spans.iter().map(|s| (s.span_id.clone(), s)).collect();
        let facts: Vec<_> = r
            .spans
            .iter()
            .map(|s| (s, span_facts(s, &[], "cc")))
            .collect();
        let tools: Vec<_> = facts
            .iter()
            .filter(|(_, f)| f.operation == Some(OP_TOOL))
            .collect();
        let mut names: Vec<_> = tools.iter().map(|(_, f)| f.tool.clone().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["Bash", "Bash", "Edit", "Grep", "Task"]);
        let bash = tools
            .iter()
            .find(|(s, _)| s.span_id == crate::model::ids::span_id_for("tool:toolu_01AaBbCc"))
            .unwrap();
        assert!(bash.1.is_error);
        assert_eq!(
            bash.0.end_time_unix_nano - bash.0.start_time_unix_nano,
            6_491_000_000
        );
        assert_eq!(
            facts
                .iter()
                .filter(|(_, f)| f.operation == Some(OP_CHAT))
                .count(),
            7
        );
        // Grep → sub-agent run → Task tool → main run.
        let grep = tools
            .iter()
            .find(|(_, f)| f.tool.as_deref() == Some("Grep"))
            .unwrap()
            .0;
        let sub = by_id[&grep.parent_span_id];
        assert_eq!(sub.name, "invoke_agent Explore");
        let task = by_id[&sub.parent_span_id];
        assert_eq!(task.name, "execute_tool Task");
        let main = by_id[&task.parent_span_id];
        assert!(main.parent_span_id.is_empty());
        assert_eq!(
            first_str(&main.attributes, &["ao.session.title"]),
            Some("Fix parser nested-array depth limit")
        );
        let f = span_facts(main, &[], "cc");
        assert!(!f.in_progress);
        let out: i64 = facts
            .iter()
            .filter(|(_, f)| f.operation == Some(OP_CHAT))
            .map(|(_, f)| f.usage.output_tokens)
            .sum();
        assert_eq!(out, 41 + 60 + 70 + 33 + 28 + 30 + 25);
    }

    #[test]
    fn broken_lines_are_reported() {
        let mut t = Transcript::default();
        let lines = concat!(
            r#"{"type": "user_message", "content": "hi", "timestamp": "2025-11-16T10:30:12Z"}"#,
            "\nnot json\n",
            r#"{"what": 1}"#,
            "\n",
            r#"{"content": [{"te"#,
        );
        assert_eq!(t.push_bytes(lines.as_bytes(), 0, 0), 4);
        let w = t.take_warnings();
        assert_eq!(w.iter().map(|w| w.line).collect::<Vec<_>>(), [2, 3, 4]);
        assert!(w[2].reason.starts_with("truncated last line"));
        assert!(w[1].reason.starts_with("unknown message shape"));
    }
}
