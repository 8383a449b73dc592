//! What a span or log record says about an agent session, whichever convention produced it: OTel GenAI,
//! OpenInference, Claude Code's native telemetry, or aotel's own importers.

use super::attrs::Lookup;
use super::view::{kv_refs, SpanRef};
use super::{ids, status, KeyValue, LogRecord, Span};

pub const OP_AGENT: &str = "invoke_agent";
pub const OP_TOOL: &str = "execute_tool";
pub const OP_CHAT: &str = "chat";
/// Claude Code's beta traces put a tool's outcome on this child of `claude_code.tool`.
pub const CLAUDE_CODE_TOOL_EXECUTION: &str = "claude_code.tool.execution";

/// The attributes that name a span's session, in order of precedence.
pub const SESSION_KEYS: &[&str] = &["gen_ai.conversation.id", "session.id"];
const TOOL_KEYS: &[&str] = &["gen_ai.tool.name", "tool.name", "tool_name"];
const AGENT_KEYS: &[&str] = &["gen_ai.agent.name", "agent.name"];
const MODEL_KEYS: &[&str] = &[
    "gen_ai.request.model",
    "gen_ai.response.model",
    "llm.model_name",
    "model",
];
const TITLE_KEYS: &[&str] = &["ao.session.title", "ao.session.name", "session.name"];
const INPUT_KEYS: &[&str] = &[
    "gen_ai.usage.input_tokens",
    "llm.token_count.prompt",
    "input_tokens",
];
const OUTPUT_KEYS: &[&str] = &[
    "gen_ai.usage.output_tokens",
    "llm.token_count.completion",
    "output_tokens",
];
const CACHE_READ_KEYS: &[&str] = &[
    "gen_ai.usage.cache_read.input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "cache_read_tokens",
];
const CACHE_CREATION_KEYS: &[&str] = &[
    "gen_ai.usage.cache_creation.input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "cache_creation_tokens",
];
const COST_KEYS: &[&str] = &[
    "ao.cost.usd",
    "gen_ai.usage.cost",
    "llm.cost.total",
    "cost_usd",
];

/// Token usage and cost as reported by one span or log record.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub cost_usd: f64,
}

impl Usage {
    fn read(attrs: Lookup) -> Usage {
        Usage {
            input_tokens: attrs.first_i64(INPUT_KEYS).unwrap_or(0),
            output_tokens: attrs.first_i64(OUTPUT_KEYS).unwrap_or(0),
            cache_read_tokens: attrs.first_i64(CACHE_READ_KEYS).unwrap_or(0),
            cache_creation_tokens: attrs.first_i64(CACHE_CREATION_KEYS).unwrap_or(0),
            cost_usd: attrs.first_f64(COST_KEYS).unwrap_or(0.0),
        }
    }

    pub fn tokens(&self) -> i64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_creation_tokens
    }

    pub fn add(&mut self, other: &Usage, sign: i64) {
        self.input_tokens += sign * other.input_tokens;
        self.output_tokens += sign * other.output_tokens;
        self.cache_read_tokens += sign * other.cache_read_tokens;
        self.cache_creation_tokens += sign * other.cache_creation_tokens;
        self.cost_usd += sign as f64 * other.cost_usd;
    }
}

/// Where usage was reported. Model calls, log events and agent totals often describe the same tokens,
/// so a session keeps one sum per source and shows the most detailed one that has anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    Model = 0,
    Log = 1,
    Agent = 2,
}

/// The facts of one span that the store indexes and the session counters are made of.
#[derive(Debug, Clone, Default)]
pub struct SpanFacts {
    pub session: String,
    pub service: String,
    pub operation: Option<&'static str>,
    pub tool: Option<String>,
    pub agent: Option<String>,
    pub model: Option<String>,
    pub title: Option<String>,
    pub usage: Usage,
    pub is_error: bool,
    pub is_root: bool,
    /// Our own producers send a run span before it ends (`ao.in_progress=true`) and replace it later.
    pub in_progress: bool,
    /// A failed `claude_code.tool.execution`: Claude Code's beta traces put a tool's outcome on this
    /// child of the `claude_code.tool` span, so it marks an error of a call counted elsewhere.
    pub tool_execution_error: bool,
}

impl SpanFacts {
    pub fn usage_source(&self) -> Option<UsageSource> {
        match self.operation {
            Some(OP_CHAT) => Some(UsageSource::Model),
            Some(OP_AGENT) => Some(UsageSource::Agent),
            _ if self.usage != Usage::default() => Some(UsageSource::Model),
            _ => None,
        }
    }
}

pub fn service_name(resource_attrs: &[KeyValue]) -> String {
    service_of(Lookup::new(&kv_refs(resource_attrs)))
}

/// `service_name` of a resource's attributes.
pub fn service_of(resource: Lookup) -> String {
    (resource.first_str(&["service.name"]))
        .unwrap_or("unknown_service")
        .to_string()
}

/// The session a span belongs to: `gen_ai.conversation.id`, else `session.id` (span, then resource),
/// else the trace id.
pub fn session_key(attrs: Lookup, resource: Lookup, trace_id: &[u8]) -> String {
    attrs
        .first_str(SESSION_KEYS)
        .or_else(|| resource.first_str(SESSION_KEYS))
        .map(str::to_string)
        .unwrap_or_else(|| ids::to_hex(trace_id))
}

/// The interned name for an operation read back from the store.
pub fn known_operation(op: &str) -> Option<&'static str> {
    [OP_AGENT, OP_TOOL, OP_CHAT].into_iter().find(|o| *o == op)
}

fn operation(span: &SpanRef, attrs: Lookup) -> Option<&'static str> {
    // Matched without regard to case, as producers differ; without a lowercased copy per span.
    let is = |value: Option<&str>, name: &str| value.is_some_and(|v| v.eq_ignore_ascii_case(name));
    let op = attrs.first_str(&["gen_ai.operation.name"]);
    let genai: [(&[&str], _); 3] = [
        (&["invoke_agent", "create_agent"], OP_AGENT),
        (&["execute_tool"], OP_TOOL),
        (&["chat", "text_completion", "generate_content"], OP_CHAT),
    ];
    if let Some((_, found)) = genai
        .iter()
        .find(|(names, _)| names.iter().any(|n| is(op, n)))
    {
        return Some(found);
    }
    let kind = attrs.first_str(&["openinference.span.kind"]);
    let openinference = [("AGENT", OP_AGENT), ("TOOL", OP_TOOL), ("LLM", OP_CHAT)];
    if let Some((_, found)) = openinference.iter().find(|(name, _)| is(kind, name)) {
        return Some(found);
    }
    match span.name {
        "claude_code.interaction" => Some(OP_AGENT),
        "claude_code.tool" => Some(OP_TOOL),
        "claude_code.llm_request" => Some(OP_CHAT),
        _ => None,
    }
}

/// `facts_of` a decoded span.
pub fn span_facts(span: &Span, resource_attrs: &[KeyValue], service: &str) -> SpanFacts {
    let attrs = kv_refs(&span.attributes);
    let resource = kv_refs(resource_attrs);
    facts_of(&SpanRef::of(span, &attrs), Lookup::new(&resource), service)
}

/// The facts of a span; `resource`: its resource's attributes.
pub fn facts_of(span: &SpanRef, resource: Lookup, service: &str) -> SpanFacts {
    let attrs = Lookup::new(span.attributes);
    let operation = operation(span, attrs);
    let tool = attrs.first_str(TOOL_KEYS).map(str::to_string).or_else(|| {
        // `execute_tool {name}` carries the name in the span name when the attribute is missing.
        (operation == Some(OP_TOOL))
            .then(|| span.name.strip_prefix("execute_tool "))
            .flatten()
            .map(str::to_string)
    });
    // Claude Code reports a tool's outcome as `success` (a bool, or "true"/"false" text).
    let failed_by_flag =
        attrs.bool("success") == Some(false) && span.name.starts_with("claude_code.tool");
    let is_error = span.status_code == status::StatusCode::Error as i32 || failed_by_flag;
    SpanFacts {
        session: session_key(attrs, resource, span.trace_id),
        service: service.to_string(),
        operation,
        tool: if operation == Some(OP_TOOL) {
            tool
        } else {
            None
        },
        agent: attrs
            .first_str(AGENT_KEYS)
            .or_else(|| resource.first_str(AGENT_KEYS))
            .map(str::to_string),
        model: attrs.first_str(MODEL_KEYS).map(str::to_string),
        title: attrs.first_str(TITLE_KEYS).map(str::to_string),
        usage: Usage::read(attrs),
        is_error,
        is_root: span.parent_span_id.is_empty(),
        in_progress: attrs.first_str(&["ao.in_progress"]) == Some("true")
            || attrs.bool("ao.in_progress") == Some(true),
        tool_execution_error: is_error && span.name == CLAUDE_CODE_TOOL_EXECUTION,
    }
}

/// What a log record adds to its session: Claude Code's `tool_result` and `api_request` events.
#[derive(Debug, Clone, Default)]
pub struct LogFacts {
    pub session: Option<String>,
    pub event_name: Option<String>,
    pub tool_call: bool,
    pub tool_error: bool,
    /// The tool a `tool_result` event is about.
    pub tool: Option<String>,
    /// Duration a `tool_result` event reports (`duration_ms`), in seconds.
    pub tool_duration_s: Option<f64>,
    pub usage: Usage,
    pub model: Option<String>,
}

/// `facts_of_log` with the resource's attributes.
pub fn log_facts(log: &LogRecord, resource_attrs: &[KeyValue]) -> LogFacts {
    facts_of_log(log, Lookup::new(&kv_refs(resource_attrs)))
}

/// The facts of a log record; `resource`: its resource's attributes.
pub fn facts_of_log(log: &LogRecord, resource: Lookup) -> LogFacts {
    let attrs = kv_refs(&log.attributes);
    let attrs = Lookup::new(&attrs);
    let session = attrs
        .first_str(SESSION_KEYS)
        .or_else(|| resource.first_str(SESSION_KEYS))
        .map(str::to_string)
        .or_else(|| (!log.trace_id.is_empty()).then(|| ids::to_hex(&log.trace_id)));
    // Claude Code names the event in the `event.name` attribute (`tool_result`) and in the body
    // (`claude_code.tool_result`); the OTLP `event_name` field is newer than its exporter.
    let body_name = match log.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(super::any_value::Value::StringValue(s))
            if s.starts_with("claude_code.") && !s.contains(' ') =>
        {
            Some(s.clone())
        }
        _ => None,
    };
    let event_name = (!log.event_name.is_empty())
        .then(|| log.event_name.clone())
        .or_else(|| attrs.first_str(&["event.name"]).map(str::to_string))
        .or(body_name);
    let short = event_name
        .as_deref()
        .map(|n| n.strip_prefix("claude_code.").unwrap_or(n));
    let tool_call = short == Some("tool_result");
    let tool_error = tool_call && attrs.bool("success") == Some(false);
    let usage = if short == Some("api_request") {
        Usage::read(attrs)
    } else {
        Usage::default()
    };
    LogFacts {
        session,
        event_name,
        tool_call,
        tool_error,
        tool: tool_call
            .then(|| attrs.first_str(TOOL_KEYS).map(str::to_string))
            .flatten(),
        tool_duration_s: tool_call
            .then(|| attrs.first_f64(&["duration_ms"]).map(|ms| ms / 1000.0))
            .flatten(),
        usage,
        model: attrs.first_str(MODEL_KEYS).map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attrs::{kv_f64, kv_i64, kv_str};

    #[test]
    fn openinference_tool_span_is_a_tool_call() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "tool".into(),
            attributes: vec![
                kv_str("openinference.span.kind", "TOOL"),
                kv_str("tool.name", "Bash"),
                kv_str("session.id", "s1"),
            ],
            ..Default::default()
        };
        let f = span_facts(&span, &[], "svc");
        assert_eq!(f.operation, Some(OP_TOOL));
        assert_eq!(f.tool.as_deref(), Some("Bash"));
        assert_eq!(f.session, "s1");
        assert!(f.is_root);
    }

    #[test]
    fn session_falls_back_to_trace_id_and_usage_is_read() {
        let span = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            name: "chat claude".into(),
            attributes: vec![
                kv_str("gen_ai.operation.name", "chat"),
                kv_i64("gen_ai.usage.output_tokens", 7),
                kv_f64("ao.cost.usd", 0.5),
            ],
            ..Default::default()
        };
        let f = span_facts(&span, &[], "svc");
        assert_eq!(f.session, "ab".repeat(16));
        assert_eq!(f.usage.output_tokens, 7);
        assert_eq!(f.usage_source(), Some(UsageSource::Model));
        assert!(!f.is_root);
    }

    #[test]
    fn claude_code_tool_result_log() {
        let log = LogRecord {
            attributes: vec![
                kv_str("event.name", "tool_result"),
                kv_str("session.id", "cc"),
                kv_str("success", "false"),
            ],
            ..Default::default()
        };
        let f = log_facts(&log, &[]);
        assert_eq!(f.session.as_deref(), Some("cc"));
        assert!(f.tool_call && f.tool_error);
    }
}
