//! The old observability backend's HTTP API on the API port, so unchanged `ao-*` commands keep working:
//! `POST /events` (`session_start`, `message`, `pre_tool`, `post_tool`, `session_stop`) becomes OTLP,
//! and `GET /sessions` / `GET /events/{session_id}` answer in the old shapes.
//!
//! Each event is one batch (the event itself as a log record `ao.legacy.<event_type>` whose body is the
//! posted JSON, plus the spans it starts or finishes), so an event is stored whole or not at all. The
//! store is the only state: a `pre_tool` is stored as an in-progress tool span (`ao.in_progress=true`)
//! and the next `post_tool` of the same tool in that session finds it there and replaces it with the
//! finished copy, so pairing survives a restart in between. Ids derive from the session and the event
//! time, so a client retrying an event changes nothing.

use super::spans::{clip, json_to_any, resource, scope, SpanSpec};
use crate::model::attrs::{first_str, kv_bool, kv_i64, kv_str, to_json};
use crate::model::time::{now_ns, parse_rfc3339};
use crate::model::{
    ids, status::StatusCode, Batch, KeyValue, LogRecord, ResourceLogs, ResourceSpans, ScopeLogs,
    ScopeSpans, Span, Status,
};
use crate::query::ApiError;
use crate::store::{session_spans, SessionFilter, StoreError, StoredSpan};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode as Http};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prost::Message;
use serde_json::{json, Value};
use std::sync::Arc;

const SERVICE: &str = "ao";
const INGEST: &str = "legacy-events";
const EVENT_PREFIX: &str = "ao.legacy.";

#[derive(Clone)]
struct Legacy {
    app: AppState,
    /// Pairing reads the store, then writes: one event at a time keeps two `post_tool`s from claiming
    /// the same `pre_tool`. The old API is low-volume, so this costs nothing.
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// `POST /events`, `GET /sessions`, `GET /events/{session_id}`.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/events", post(post_event))
        .route("/events/{session_id}", get(session_events))
        .route("/sessions", get(sessions))
        .with_state(Legacy {
            app,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        })
}

#[derive(Debug)]
enum Kind {
    SessionStart,
    Message,
    PreTool {
        tool: String,
    },
    PostTool {
        tool: String,
        error: Option<String>,
    },
    SessionStop {
        exit_code: Option<i64>,
        reason: Option<String>,
    },
}

#[derive(Debug)]
struct Event {
    kind: Kind,
    type_name: String,
    session: String,
    name: Option<String>,
    ts: u64,
    raw: Value,
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError {
        status: Http::UNPROCESSABLE_ENTITY,
        message: message.into(),
    }
}

fn opt_string(v: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(unprocessable(format!("{key} must be a string or null"))),
    }
}

/// Checks one `POST /events` body the way the endpoint does, without storing anything: the event type
/// if it would be accepted, the 422 message otherwise. Public for the fuzz harness (tests/fuzz.rs).
#[doc(hidden)]
pub fn check_event(body: &[u8]) -> Result<String, String> {
    parse_event(body)
        .map(|e| e.type_name)
        .map_err(|e| e.message)
}

fn parse_event(body: &[u8]) -> Result<Event, ApiError> {
    let raw: Value = serde_json::from_slice(body)
        .map_err(|e| unprocessable(format!("body is not JSON: {e}")))?;
    if !raw.is_object() {
        return Err(unprocessable("the event must be a JSON object"));
    }
    let type_name =
        opt_string(&raw, "event_type")?.ok_or_else(|| unprocessable("event_type is required"))?;
    let session = opt_string(&raw, "session_id")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| unprocessable("session_id is required"))?;
    if session.len() > 256 {
        return Err(unprocessable("session_id is longer than 256 characters"));
    }
    let ts = match raw.get("timestamp") {
        None | Some(Value::Null) => now_ns(),
        Some(Value::String(s)) => parse_rfc3339(s).ok_or_else(|| {
            unprocessable(format!(
                "timestamp {s:?} is not an ISO 8601 / RFC 3339 time"
            ))
        })?,
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| *f >= 0.0)
            .map(|secs| (secs * 1e9) as u64)
            .ok_or_else(|| unprocessable("timestamp must be non-negative"))?,
        Some(_) => return Err(unprocessable("timestamp must be a string")),
    };
    let tool = || -> Result<String, ApiError> {
        opt_string(&raw, "tool_name")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unprocessable(format!("tool_name is required for {type_name}")))
    };
    let kind = match type_name.as_str() {
        "session_start" => Kind::SessionStart,
        "message" => Kind::Message,
        "pre_tool" => Kind::PreTool { tool: tool()? },
        "post_tool" => Kind::PostTool {
            tool: tool()?,
            error: match raw.get("error") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            },
        },
        "session_stop" => Kind::SessionStop {
            exit_code: match raw.get("exit_code") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_i64().ok_or_else(|| unprocessable("exit_code must be an integer or null"))?),
            },
            reason: opt_string(&raw, "reason")?,
        },
        other => {
            return Err(unprocessable(format!(
                "unknown event_type {other:?}: expected session_start, message, pre_tool, post_tool or session_stop"
            )))
        }
    };
    Ok(Event {
        kind,
        name: opt_string(&raw, "session_name")?,
        type_name,
        session,
        ts,
        raw,
    })
}

fn attr_drop(span: &mut Span, key: &str) {
    span.attributes.retain(|kv| kv.key != key);
}

fn severity(error: bool) -> (i32, &'static str) {
    if error {
        (17, "ERROR")
    } else {
        (9, "INFO")
    }
}

async fn find_span(
    app: &AppState,
    condition: &'static str,
    params: Vec<rusqlite::types::Value>,
) -> Result<Option<StoredSpan>, StoreError> {
    app.reader
        .with(move |c| {
            let mut found =
                crate::store::spans_where(c, condition, rusqlite::params_from_iter(params.iter()))?;
            Ok((!found.is_empty()).then(|| found.remove(0)))
        })
        .await
}

async fn find_spans(
    app: &AppState,
    condition: &'static str,
    params: Vec<rusqlite::types::Value>,
) -> Result<Vec<StoredSpan>, StoreError> {
    app.reader
        .with(move |c| {
            crate::store::spans_where(c, condition, rusqlite::params_from_iter(params.iter()))
        })
        .await
}

/// A run span for an old-API session, started (or, for a stop without a start, ended) at the event.
fn run_spec(sid: &str, stable_name: String, ev: &Event) -> SpanSpec {
    let mut r = SpanSpec::new(sid, stable_name, "invoke_agent".into(), ev.ts, ev.ts);
    r.str("gen_ai.operation.name", "invoke_agent")
        .str("gen_ai.provider.name", "anthropic");
    r.opt_str("ao.session.name", ev.name.as_deref());
    r
}

/// The run an event belongs to: the latest run of the session that started by then.
async fn current_run(
    app: &AppState,
    session: &str,
    ts: u64,
) -> Result<Option<StoredSpan>, StoreError> {
    find_span(
        app,
        concat!(
            session_spans!(),
            " AND operation = 'invoke_agent' AND parent_span_id IS NULL AND start_ns <= ?2
              ORDER BY start_ns DESC, seq DESC LIMIT 1"
        ),
        vec![
            session.to_string().into(),
            (ts.min(i64::MAX as u64) as i64).into(),
        ],
    )
    .await
}

/// Turns one event into the batch that records it.
async fn to_batch(app: &AppState, ev: &Event) -> Result<Batch, StoreError> {
    let sid = ev.session.as_str();
    let ts_i = ev.ts.min(i64::MAX as u64) as i64;
    let mut spans: Vec<Span> = Vec::new();
    let run = current_run(app, sid, ev.ts).await?;
    let mut log_span = run.as_ref().map(|r| r.span.span_id.clone());
    let mut error = false;
    match &ev.kind {
        Kind::SessionStart => {
            let mut r = run_spec(sid, format!("run:{sid}:legacy:{}", ev.ts), ev);
            r.in_progress = true;
            let span = r.to_span();
            log_span = Some(span.span_id.clone());
            spans.push(span);
        }
        Kind::Message => {}
        Kind::PreTool { tool } => {
            let mut t = SpanSpec::new(
                sid,
                format!("tool:{sid}:legacy:{}:{tool}", ev.ts),
                format!("execute_tool {tool}"),
                ev.ts,
                ev.ts,
            );
            legacy_tool_attrs(&mut t, tool, &ev.raw);
            t.parent = None;
            t.in_progress = true;
            let mut span = t.to_span();
            if let Some(r) = &run {
                span.parent_span_id = r.span.span_id.clone();
            }
            spans.push(span);
        }
        Kind::PostTool { tool, error: err } => {
            error = err.is_some();
            let done_already = find_span(
                app,
                concat!(
                    session_spans!(),
                    " AND operation = 'execute_tool' AND tool = ?2 AND end_ns = ?3 AND (flags & 1) = 0
                      LIMIT 1"
                ),
                vec![sid.to_string().into(), tool.clone().into(), ts_i.into()],
            )
            .await?;
            let open = find_span(
                app,
                concat!(
                    session_spans!(),
                    " AND operation = 'execute_tool' AND tool = ?2 AND (flags & 1) = 1 AND start_ns <= ?3
                      ORDER BY start_ns, seq LIMIT 1"
                ),
                vec![sid.to_string().into(), tool.clone().into(), ts_i.into()],
            )
            .await?;
            if done_already.is_none() {
                let mut span = match open {
                    Some(pre) => {
                        let mut span = pre.span;
                        attr_drop(&mut span, "ao.in_progress");
                        span.end_time_unix_nano = ev.ts.max(span.start_time_unix_nano);
                        span
                    }
                    None => {
                        let mut t = SpanSpec::new(
                            sid,
                            format!("tool:{sid}:legacy:{}:{tool}", ev.ts),
                            format!("execute_tool {tool}"),
                            ev.ts,
                            ev.ts,
                        );
                        legacy_tool_attrs(&mut t, tool, &ev.raw);
                        let mut span = t.to_span();
                        if let Some(r) = &run {
                            span.parent_span_id = r.span.span_id.clone();
                        }
                        span
                    }
                };
                match ev.raw.get("tool_output") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => span
                        .attributes
                        .push(kv_str("gen_ai.tool.call.result", s.clone())),
                    Some(other) => span
                        .attributes
                        .push(kv_str("gen_ai.tool.call.result", other.to_string())),
                }
                span.status = Some(match err {
                    Some(e) => {
                        span.attributes.push(kv_str("error.type", "tool_error"));
                        Status {
                            code: StatusCode::Error as i32,
                            message: clip(e, 1000),
                        }
                    }
                    None => Status {
                        code: StatusCode::Ok as i32,
                        message: String::new(),
                    },
                });
                spans.push(span);
            }
        }
        Kind::SessionStop { exit_code, reason } => {
            error = exit_code.is_some_and(|c| c != 0);
            let mut span = match run {
                Some(r) => r.span,
                None => run_spec(sid, format!("run:{sid}:legacy:stop:{}", ev.ts), ev).to_span(),
            };
            attr_drop(&mut span, "ao.in_progress");
            attr_drop(&mut span, "ao.exit_code");
            attr_drop(&mut span, "ao.stop_reason");
            span.end_time_unix_nano = ev.ts.max(span.start_time_unix_nano);
            if let Some(c) = exit_code {
                span.attributes.push(kv_i64("ao.exit_code", *c));
            }
            if let Some(r) = reason {
                span.attributes.push(kv_str("ao.stop_reason", r.clone()));
            }
            span.status = Some(if error {
                Status {
                    code: StatusCode::Error as i32,
                    message: format!(
                        "exit code {}{}",
                        exit_code.unwrap_or_default(),
                        reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                }
            } else {
                Status {
                    code: StatusCode::Ok as i32,
                    message: String::new(),
                }
            });
            log_span = Some(span.span_id.clone());
            // Tools still open when the session stops never got their post_tool: close them at the stop.
            let open = find_spans(
                app,
                concat!(
                    session_spans!(),
                    " AND operation = 'execute_tool' AND (flags & 1) = 1 AND start_ns <= ?2 ORDER BY start_ns"
                ),
                vec![sid.to_string().into(), ts_i.into()],
            )
            .await?;
            for t in open {
                let mut s = t.span;
                attr_drop(&mut s, "ao.in_progress");
                s.attributes.push(kv_bool("ao.tool.result_missing", true));
                s.end_time_unix_nano = ev.ts.max(s.start_time_unix_nano);
                spans.push(s);
            }
            spans.push(span);
        }
    }
    let (severity_number, severity_text) = severity(error);
    let event_name = format!("{EVENT_PREFIX}{}", ev.type_name);
    let log = LogRecord {
        time_unix_nano: ev.ts,
        // The event time, not the arrival time: a retried event must encode identically to be deduplicated.
        observed_time_unix_nano: ev.ts,
        severity_number,
        severity_text: severity_text.into(),
        body: Some(json_to_any(&ev.raw)),
        attributes: vec![
            kv_str("gen_ai.conversation.id", sid),
            kv_str("event.name", event_name.clone()),
        ],
        trace_id: ids::trace_id_for_session(sid),
        span_id: log_span.unwrap_or_default(),
        event_name,
        ..Default::default()
    };
    Ok(Batch {
        spans: if spans.is_empty() {
            Vec::new()
        } else {
            vec![ResourceSpans {
                resource: Some(resource(SERVICE, INGEST)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope("aotel.legacy")),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }]
        },
        logs: vec![ResourceLogs {
            resource: Some(resource(SERVICE, INGEST)),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope("aotel.legacy")),
                log_records: vec![log],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
        wire: None,
    })
}

fn legacy_tool_attrs(t: &mut SpanSpec, tool: &str, raw: &Value) {
    t.str("gen_ai.operation.name", "execute_tool")
        .str("gen_ai.tool.name", tool);
    if let Some(input) = raw.get("tool_input").filter(|v| !v.is_null()) {
        t.str("gen_ai.tool.call.arguments", input.to_string());
    }
}

fn store_failure(e: StoreError) -> Response {
    let busy = matches!(e, StoreError::Busy | StoreError::Closed);
    let mut resp = ApiError {
        status: Http::SERVICE_UNAVAILABLE,
        message: if busy {
            format!("{e}")
        } else {
            tracing::error!(error = %e, "legacy event not stored");
            format!("could not store the event: {e}")
        },
    }
    .into_response();
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(crate::receiver::RETRY_AFTER_SECS),
    );
    resp
}

async fn post_event(State(s): State<Legacy>, body: Bytes) -> Response {
    let ev = match parse_event(&body) {
        Ok(ev) => ev,
        Err(e) => return e.into_response(),
    };
    let _one_at_a_time = s.lock.lock().await;
    let batch = match to_batch(&s.app, &ev).await {
        Ok(b) => b,
        Err(e) => return store_failure(e),
    };
    let bytes = batch.spans.iter().map(Message::encoded_len).sum::<usize>()
        + batch.logs.iter().map(Message::encoded_len).sum::<usize>();
    match s.app.writer.tagged("events").write(batch, bytes).await {
        Ok(_) => Json(json!({
            "status": "ok",
            "event_type": ev.type_name,
            "session_id": ev.session,
        }))
        .into_response(),
        Err(e) => store_failure(e),
    }
}

/// `2025-11-16T12:00:09.100000+00:00`, the way the old backend (Python `isoformat`) wrote times.
pub fn iso_time(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let micros = (ns % 1_000_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}+00:00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct SessionsQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /sessions`: a JSON array, newest first, one object per session (see README for the fields).
async fn sessions(
    State(s): State<Legacy>,
    Query(q): Query<SessionsQuery>,
) -> Result<Json<Value>, ApiError> {
    let (rows, _) = s
        .app
        .reader
        .sessions(SessionFilter {
            limit: Some(q.limit.unwrap_or(100).clamp(1, 1000)),
            offset: q.offset,
            ..Default::default()
        })
        .await?;
    let out: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let first: u64 = r.first_unix_nano.parse().unwrap_or(0);
            let last: u64 = r.last_unix_nano.parse().unwrap_or(0);
            let status = match r.status.as_str() {
                "finished" => "completed",
                other => other,
            };
            json!({
                "session_id": r.key,
                "session_name": r.title.clone().unwrap_or_else(|| r.key.clone()),
                "agent": r.agent,
                "status": status,
                "start_time": iso_time(first),
                "end_time": (r.status != "running").then(|| iso_time(last)),
                "event_count": r.spans + r.logs,
                "tool_count": r.tool_calls,
                "error_count": r.tool_errors,
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// `GET /events/{session_id}`: the session's events in time order, exactly as they were posted; for
/// sessions that arrived another way (OTLP, import), events derived from their spans.
async fn session_events(
    State(s): State<Legacy>,
    Path(session): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let logs = s.app.reader.session_logs(session.clone()).await?;
    let mut events: Vec<(u64, i64, Value)> = logs
        .iter()
        .filter(|l| l.log.event_name.starts_with(EVENT_PREFIX))
        .map(|l| {
            let mut v = to_json(l.log.body.as_ref());
            if let Some(o) = v.as_object_mut() {
                o.entry("id").or_insert(json!(l.seq));
            }
            (l.log.time_unix_nano, l.seq, v)
        })
        .collect();
    if events.is_empty() {
        let spans = s.app.reader.session_spans(session.clone()).await?;
        if spans.is_empty() && logs.is_empty() {
            return Err(ApiError::not_found(format!("no session {session:?}")));
        }
        events = derived_events(&session, &spans);
    }
    events.sort_by_key(|e| (e.0, e.1));
    Ok(Json(Value::Array(
        events.into_iter().map(|e| e.2).collect(),
    )))
}

fn message_text(attrs: &[KeyValue], key: &str) -> Option<Value> {
    let raw = first_str(attrs, &[key])?;
    let parsed: Value = serde_json::from_str(raw).ok()?;
    let parts = parsed.get(0)?.get("parts")?.as_array()?;
    let content: Vec<Value> = parts
        .iter()
        .filter_map(|p| p.get("content").and_then(Value::as_str))
        .map(|t| json!({"type": "text", "text": t}))
        .collect();
    (!content.is_empty()).then_some(Value::Array(content))
}

/// Old-style events for a session that did not come through `POST /events`.
fn derived_events(session: &str, spans: &[StoredSpan]) -> Vec<(u64, i64, Value)> {
    let mut out = Vec::new();
    let name = spans
        .iter()
        .find_map(|s| {
            first_str(&s.span.attributes, &["ao.session.title", "ao.session.name"])
                .map(str::to_string)
        })
        .unwrap_or_else(|| session.to_string());
    for st in spans {
        let span = &st.span;
        let f = crate::model::facts::span_facts(span, &st.resource.0.attributes, &st.service);
        let base = |ty: &str, ns: u64| {
            json!({
                "event_type": ty,
                "session_id": session,
                "session_name": name,
                "timestamp": iso_time(ns),
            })
        };
        let failed = span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32);
        match f.operation {
            Some(crate::model::facts::OP_AGENT) if f.is_root => {
                out.push((
                    span.start_time_unix_nano,
                    st.seq,
                    base("session_start", span.start_time_unix_nano),
                ));
                if let Some(content) = message_text(&span.attributes, "gen_ai.input.messages") {
                    let mut m = base("message", span.start_time_unix_nano);
                    m["role"] = json!("user");
                    m["content"] = content;
                    out.push((span.start_time_unix_nano, st.seq, m));
                }
                if !f.in_progress {
                    if let Some(content) = message_text(&span.attributes, "gen_ai.output.messages")
                    {
                        let mut m = base("message", span.end_time_unix_nano);
                        m["role"] = json!("assistant");
                        m["content"] = content;
                        out.push((span.end_time_unix_nano, st.seq, m));
                    }
                    let mut e = base("session_stop", span.end_time_unix_nano);
                    e["exit_code"] = json!(if failed { 1 } else { 0 });
                    e["reason"] = json!(first_str(&span.attributes, &["ao.stop_reason"])
                        .unwrap_or(if failed { "error" } else { "completed" }));
                    out.push((span.end_time_unix_nano, st.seq, e));
                }
            }
            Some(crate::model::facts::OP_TOOL) => {
                let tool = f.tool.clone().unwrap_or_default();
                let input = first_str(&span.attributes, &["gen_ai.tool.call.arguments"])
                    .and_then(|a| serde_json::from_str::<Value>(a).ok())
                    .unwrap_or(Value::Null);
                let mut pre = base("pre_tool", span.start_time_unix_nano);
                pre["tool_name"] = json!(tool);
                pre["tool_input"] = input.clone();
                out.push((span.start_time_unix_nano, st.seq, pre));
                if !f.in_progress {
                    let mut post = base("post_tool", span.end_time_unix_nano);
                    post["tool_name"] = json!(tool);
                    post["tool_input"] = input;
                    post["tool_output"] =
                        json!(first_str(&span.attributes, &["gen_ai.tool.call.result"]));
                    post["error"] = if failed {
                        json!(span
                            .status
                            .as_ref()
                            .map(|s| s.message.clone())
                            .unwrap_or_default())
                    } else {
                        Value::Null
                    };
                    out.push((span.end_time_unix_nano, st.seq, post));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_like_python_isoformat() {
        assert_eq!(
            iso_time(1_763_294_409_100_000_000),
            "2025-11-16T12:00:09.100000+00:00"
        );
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000000+00:00");
        let t = parse_rfc3339("2024-02-29T23:59:59.999999+00:00").unwrap();
        assert_eq!(iso_time(t), "2024-02-29T23:59:59.999999+00:00");
    }

    #[test]
    fn malformed_events_are_refused() {
        for (body, why) in [
            (&b"nope"[..], "not JSON"),
            (br#"[]"#, "object"),
            (br#"{"session_id": "s"}"#, "event_type"),
            (br#"{"event_type": "session_start"}"#, "session_id"),
            (
                br#"{"event_type": "bogus", "session_id": "s"}"#,
                "unknown event_type",
            ),
            (
                br#"{"event_type": "pre_tool", "session_id": "s"}"#,
                "tool_name",
            ),
            (
                br#"{"event_type": "message", "session_id": "s", "timestamp": "soon"}"#,
                "timestamp",
            ),
            (
                br#"{"event_type": "session_stop", "session_id": "s", "exit_code": "x"}"#,
                "exit_code",
            ),
        ] {
            let err = parse_event(body).expect_err(why);
            assert_eq!(err.status, Http::UNPROCESSABLE_ENTITY);
            assert!(err.message.contains(why), "{why}: {}", err.message);
        }
    }
}
