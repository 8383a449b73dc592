//! The session model's span shapes (DESIGN.md "Agent sessions as traces") and the deterministic ids
//! that let an import, a watch, a hook and a live export of the same session land on the same rows.
//!
//! Ids: trace id = the session UUID's 16 bytes (SHA-256 of the key when it is not a UUID); span id =
//! first 8 bytes of SHA-256 over a stable name: `run:<session>:<n>` (n-th run, from 1),
//! `tool:<tool_use_id>`, `chat:<message id>` (or `chat:<session>:<n>:<k>` for the k-th model turn of
//! run n when the message has no id), `subagent:<tool_use_id of the Task call>`.

use crate::model::attrs::{kv_bool, kv_f64, kv_i64, kv_str};
use crate::model::{
    any_value::Value, ids, AnyValue, Batch, InstrumentationScope, KeyValue, Resource,
    ResourceSpans, ScopeSpans, Span, Status,
};
use crate::model::{span::SpanKind, status::StatusCode};
use serde_json::Value as Json;

pub fn run_key(session: &str, n: usize) -> String {
    format!("run:{session}:{n}")
}

pub fn tool_key(tool_use_id: &str) -> String {
    format!("tool:{tool_use_id}")
}

pub fn chat_key(message_id: &str) -> String {
    format!("chat:{message_id}")
}

/// A model turn without a message id: the k-th (from 1) of run n.
pub fn chat_key_in_run(session: &str, run: usize, k: usize) -> String {
    format!("chat:{session}:{run}:{k}")
}

pub fn subagent_key(task_tool_use_id: &str) -> String {
    format!("subagent:{task_tool_use_id}")
}

/// One span of the session model before it becomes OTLP.
#[derive(Debug, Clone)]
pub struct SpanSpec {
    pub session: String,
    /// The stable name the span id is derived from.
    pub key: String,
    pub parent: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: Vec<KeyValue>,
    /// `Some(message)` marks the span failed.
    pub error: Option<String>,
    pub in_progress: bool,
    pub estimated: bool,
}

impl SpanSpec {
    pub fn new(session: &str, key: String, name: String, start_ns: u64, end_ns: u64) -> SpanSpec {
        SpanSpec {
            session: session.to_string(),
            key,
            parent: None,
            name,
            kind: SpanKind::Internal,
            start_ns,
            end_ns: end_ns.max(start_ns),
            attrs: Vec::new(),
            error: None,
            in_progress: false,
            estimated: false,
        }
    }

    pub fn str(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.attrs.push(kv_str(key, value));
        self
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.attrs.push(kv_str(key, v));
        }
        self
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.attrs.push(kv_i64(key, value));
        self
    }

    pub fn float(&mut self, key: &str, value: f64) -> &mut Self {
        self.attrs.push(kv_f64(key, value));
        self
    }

    pub fn to_span(&self) -> Span {
        let mut attributes = vec![kv_str("gen_ai.conversation.id", &self.session)];
        attributes.extend(self.attrs.iter().cloned());
        if self.in_progress {
            attributes.push(kv_bool("ao.in_progress", true));
        }
        if self.estimated {
            attributes.push(kv_bool("ao.timing.estimated", true));
        }
        let status = match &self.error {
            Some(message) => Status {
                code: StatusCode::Error as i32,
                message: message.clone(),
            },
            None if self.in_progress => Status::default(),
            None => Status {
                code: StatusCode::Ok as i32,
                message: String::new(),
            },
        };
        Span {
            trace_id: ids::trace_id_for_session(&self.session),
            span_id: ids::span_id_for(&self.key),
            parent_span_id: self
                .parent
                .as_deref()
                .map(ids::span_id_for)
                .unwrap_or_default(),
            name: self.name.clone(),
            kind: self.kind as i32,
            start_time_unix_nano: self.start_ns,
            end_time_unix_nano: self.end_ns.max(self.start_ns),
            attributes,
            status: Some(status),
            ..Default::default()
        }
    }
}

/// Attributes every agent run span carries.
pub fn run_attrs(s: &mut SpanSpec, agent: &str) {
    s.str("gen_ai.operation.name", "invoke_agent")
        .str("gen_ai.agent.name", agent)
        .str("gen_ai.provider.name", "anthropic");
}

pub fn tool_attrs(s: &mut SpanSpec, tool: &str, tool_use_id: Option<&str>, input: Option<&Json>) {
    s.str("gen_ai.operation.name", "execute_tool")
        .str("gen_ai.tool.name", tool);
    s.opt_str("gen_ai.tool.call.id", tool_use_id);
    if let Some(input) = input.filter(|v| !v.is_null()) {
        s.str("gen_ai.tool.call.arguments", input.to_string());
    }
}

pub fn chat_attrs(s: &mut SpanSpec, model: Option<&str>) {
    s.kind = SpanKind::Client;
    s.str("gen_ai.operation.name", "chat")
        .str("gen_ai.provider.name", "anthropic");
    s.opt_str("gen_ai.request.model", model);
}

/// `gen_ai.usage.*` from an Anthropic `usage` object.
pub fn usage_attrs(s: &mut SpanSpec, usage: &Json) {
    for (from, to) in [
        ("input_tokens", "gen_ai.usage.input_tokens"),
        ("output_tokens", "gen_ai.usage.output_tokens"),
        (
            "cache_read_input_tokens",
            "gen_ai.usage.cache_read.input_tokens",
        ),
        (
            "cache_creation_input_tokens",
            "gen_ai.usage.cache_creation.input_tokens",
        ),
    ] {
        if let Some(n) = usage.get(from).and_then(Json::as_i64) {
            s.int(to, n);
        }
    }
}

/// GenAI message JSON: `[{"role": ..., "parts": [{"type": "text", "content": ...}]}]`.
pub fn text_messages(role: &str, text: &str) -> String {
    serde_json::json!([{ "role": role, "parts": [{ "type": "text", "content": text }] }])
        .to_string()
}

/// The text of a tool result's `content`: a string, or a list of blocks whose texts are joined.
pub fn content_text(content: &Json) -> String {
    match content {
        Json::String(s) => s.clone(),
        Json::Array(blocks) => blocks
            .iter()
            .filter_map(|b| match b {
                Json::String(s) => Some(s.clone()),
                _ => b.get("text").and_then(Json::as_str).map(str::to_string),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// JSON as an OTLP value: objects become key-value lists, so nothing is lost on the way back.
pub fn json_to_any(v: &Json) -> AnyValue {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    let value = match v {
        Json::Null => None,
        Json::Bool(b) => Some(Value::BoolValue(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Some(Value::IntValue(i)),
            None => Some(Value::DoubleValue(n.as_f64().unwrap_or(0.0))),
        },
        Json::String(s) => Some(Value::StringValue(s.clone())),
        Json::Array(a) => Some(Value::ArrayValue(ArrayValue {
            values: a.iter().map(json_to_any).collect(),
        })),
        Json::Object(o) => Some(Value::KvlistValue(KeyValueList {
            values: o
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(json_to_any(v)),
                    ..Default::default()
                })
                .collect(),
        })),
    };
    AnyValue { value }
}

pub fn resource(service: &str, ingest: &str) -> Resource {
    Resource {
        attributes: vec![kv_str("service.name", service), kv_str("ao.ingest", ingest)],
        ..Default::default()
    }
}

pub fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

/// One batch of spans under one resource and scope.
pub fn span_batch(resource: Resource, scope: InstrumentationScope, spans: Vec<Span>) -> Batch {
    Batch {
        spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
        logs: Vec::new(),
        wire: None,
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, for names and status messages.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_from_stable_names() {
        let s = SpanSpec::new(
            "d796e8ba-ef3c-453f-97d7-b644930563f5",
            tool_key("toolu_1"),
            "x".into(),
            1,
            2,
        );
        let span = s.to_span();
        assert_eq!(
            ids::to_hex(&span.trace_id),
            "d796e8baef3c453f97d7b644930563f5"
        );
        assert_eq!(span.span_id, ids::span_id_for("tool:toolu_1"));
        assert!(span.parent_span_id.is_empty());
    }

    #[test]
    fn json_round_trips_through_any_value() {
        let v = serde_json::json!({"a": [1, 2.5, "x", null, true], "b": {"c": "d"}});
        let back = crate::model::attrs::to_json(Some(&json_to_any(&v)));
        assert_eq!(back, v);
    }

    #[test]
    fn tool_result_text() {
        assert_eq!(content_text(&serde_json::json!("x")), "x");
        assert_eq!(
            content_text(
                &serde_json::json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
            ),
            "a\nb"
        );
    }
}
