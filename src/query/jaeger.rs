//! Jaeger's query APIs over the store, so Jaeger UI and Grafana's Jaeger data source browse aotel as
//! if it were Jaeger: the v1 JSON API (released Jaeger UI) and api_v3 (OTLP JSON; current Jaeger UI,
//! Grafana). Spans are mapped as the OpenTelemetry→Jaeger specification says: parent → CHILD_OF, links
//! → FOLLOWS_FROM, events → logs, status → `otel.status_code` / `otel.status_description` / `error`,
//! scope → `otel.scope.name` / `otel.scope.version`, resource → process; times in microseconds.

use super::search::{self, parse_trace_id, SearchParams};
use super::traceql::{parse_duration, Cond, Expr, Field, Literal, Op, Scope};
use crate::model::{any_value::Value as Av, ids, AnyValue, KeyValue, ResourceSpans};
use crate::store::{to_resource_spans, StoreError, StoredSpan};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(find_traces))
        .route("/api/dependencies", get(dependencies))
        .route("/api/v3/services", get(v3_services))
        .route("/api/v3/operations", get(v3_operations))
        .route("/api/v3/traces", get(v3_find_traces))
        .route("/api/v3/traces/{trace_id}", get(v3_trace))
        .route("/api/v3/trace-summaries", get(v3_trace_summaries))
}

type Params = Query<Vec<(String, String)>>;

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec())
}

/// An error in v1's envelope: `{"data":null,"total":0,"limit":0,"offset":0,"errors":[{"code","msg"}]}`.
#[derive(Debug)]
pub struct V1Error(pub StatusCode, pub String);

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let body = json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{ "code": self.0.as_u16(), "msg": self.1 }],
        });
        json_response(self.0, to_json(&body))
    }
}

impl From<StoreError> for V1Error {
    fn from(e: StoreError) -> V1Error {
        let (status, message) = super::store_failure("jaeger", e);
        V1Error(status, message)
    }
}

fn bad(msg: impl Into<String>) -> V1Error {
    V1Error(StatusCode::BAD_REQUEST, msg.into())
}

/// An error in api_v3's grpc-gateway shape: `{"error":{"grpcCode","httpCode","message","httpStatus"}}`.
#[derive(Debug)]
pub struct V3Error(pub StatusCode, pub String);

impl IntoResponse for V3Error {
    fn into_response(self) -> Response {
        let grpc = match self.0 {
            StatusCode::BAD_REQUEST => 3,
            StatusCode::NOT_FOUND => 5,
            StatusCode::SERVICE_UNAVAILABLE => 14,
            _ => 2,
        };
        let body = json!({ "error": {
            "grpcCode": grpc,
            "httpCode": self.0.as_u16(),
            "message": self.1,
            "httpStatus": self.0.canonical_reason().unwrap_or(""),
        }});
        json_response(self.0, to_json(&body))
    }
}

impl From<V1Error> for V3Error {
    fn from(e: V1Error) -> V3Error {
        V3Error(e.0, e.1)
    }
}

impl From<StoreError> for V3Error {
    fn from(e: StoreError) -> V3Error {
        V1Error::from(e).into()
    }
}

/// v1's envelope, serialized straight from typed data (a `json!` detour through `Value` costs more
/// than the whole query on big traces).
#[derive(Serialize)]
struct Envelope<T: Serialize> {
    data: T,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<Value>>,
}

fn envelope_bytes<T: Serialize>(data: T, total: usize, errors: Option<Vec<Value>>) -> Vec<u8> {
    to_json(&Envelope {
        data,
        total,
        limit: 0,
        offset: 0,
        errors,
    })
}

fn envelope<T: Serialize>(data: T, total: usize) -> Response {
    json_response(StatusCode::OK, envelope_bytes(data, total, None))
}

// ---------------------------------------------------------------------------------------------
// Parameters

/// The last non-empty value of a parameter, under any of its names.
fn param<'a>(q: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, v)| names.contains(&k.as_str()) && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

fn int_param(q: &[(String, String)], names: &[&str]) -> Result<Option<i64>, V1Error> {
    param(q, names)
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                bad(format!(
                    "unable to parse param '{}': expected an integer, got {v:?}",
                    names[0]
                ))
            })
        })
        .transpose()
}

fn duration_param(q: &[(String, String)], names: &[&str]) -> Result<Option<i64>, V1Error> {
    param(q, names)
        .map(|v| {
            parse_duration(v.trim()).filter(|d| *d >= 0).ok_or_else(|| {
                bad(format!(
                    "unable to parse param '{}': expected a duration such as 150ms, 1.5s or 2m, got {v:?}",
                    names[0]
                ))
            })
        })
        .transpose()
}

/// RFC 3339 (api_v3's time format).
fn time_param(q: &[(String, String)], names: &[&str]) -> Result<Option<i64>, V1Error> {
    param(q, names)
        .map(|v| {
            crate::model::time::parse_rfc3339(v)
                .map(|t| t.min(i64::MAX as u64) as i64)
                .ok_or_else(|| {
                    bad(format!(
                        "malformed parameter {}: expected RFC 3339 time, got {v:?}",
                        names[0]
                    ))
                })
        })
        .transpose()
}

fn limit_param(q: &[(String, String)], names: &[&str], default: usize) -> Result<usize, V1Error> {
    match int_param(q, names)? {
        None | Some(0) => Ok(default),
        Some(n) if n < 0 => Err(bad(format!("'{}' must not be negative", names[0]))),
        Some(n) => Ok((n as usize).min(search::MAX_LIMIT)),
    }
}

pub fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "",
    }
}

fn kind_from_name(name: &str) -> Option<i32> {
    match name.to_ascii_lowercase().as_str() {
        "internal" => Some(1),
        "server" => Some(2),
        "client" => Some(3),
        "producer" => Some(4),
        "consumer" => Some(5),
        "unspecified" | "" => Some(0),
        _ => None,
    }
}

fn cmp(field: Field, op: Op, value: Literal) -> Expr {
    Expr::Cmp(Cond {
        field,
        op,
        value,
        regex: None,
    })
}

/// A Jaeger tag filter as a span condition: span or process (resource) tags, compared as text, plus
/// the tags Jaeger derives from OTLP fields (`error`, `span.kind`, `otel.status_code`, ...).
pub fn tag_condition(key: &str, value: &str) -> Expr {
    let attr = || {
        cmp(
            Field::Attr {
                scope: Scope::Any,
                key: key.to_string(),
            },
            Op::Eq,
            Literal::Text(value.to_string()),
        )
    };
    match key {
        "error" if value == "true" => {
            Expr::or(cmp(Field::Status, Op::Eq, Literal::Status(2)), attr())
        }
        "span.kind" => match kind_from_name(value) {
            Some(k) if k > 0 => cmp(Field::Kind, Op::Eq, Literal::Kind(k)),
            _ => attr(),
        },
        "otel.status_code" => match value {
            "OK" => cmp(Field::Status, Op::Eq, Literal::Status(1)),
            "ERROR" => cmp(Field::Status, Op::Eq, Literal::Status(2)),
            _ => attr(),
        },
        "otel.status_description" => cmp(
            Field::StatusMessage,
            Op::Eq,
            Literal::Str(value.to_string()),
        ),
        "otel.scope.name" => cmp(Field::ScopeName, Op::Eq, Literal::Str(value.to_string())),
        "otel.scope.version" => cmp(Field::ScopeVersion, Op::Eq, Literal::Str(value.to_string())),
        _ => attr(),
    }
}

/// Tag conditions per search at most (each adds a level to the condition tree).
const MAX_TAGS: usize = 128;

fn tags_filter(q: &[(String, String)]) -> Result<Expr, V1Error> {
    let tags = q.iter().filter(|(k, _)| k == "tag").count()
        + q.iter()
            .filter(|(k, _)| k == "tags")
            .map(|(_, v)| v.matches(':').count())
            .sum::<usize>();
    if tags > MAX_TAGS {
        return Err(bad(format!("too many tags: at most {MAX_TAGS}")));
    }
    let mut filter = Expr::True;
    for (k, v) in q {
        match k.as_str() {
            "tag" => {
                let (key, value) = v.split_once(':').ok_or_else(|| {
                    bad(format!(
                        "malformed 'tag' parameter, expecting key:value, received: {v}"
                    ))
                })?;
                filter = Expr::and(filter, tag_condition(key, value));
            }
            "tags" if !v.is_empty() => {
                let map: serde_json::Map<String, Value> = serde_json::from_str(v).map_err(|e| {
                    bad(format!(
                        "malformed 'tags' parameter, cannot unmarshal JSON: {e}"
                    ))
                })?;
                for (key, value) in map {
                    let text = match value {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => return Err(bad(format!("malformed 'tags' parameter: value of {key:?} must be a string, got {other}"))),
                    };
                    filter = Expr::and(filter, tag_condition(&key, &text));
                }
            }
            _ => {}
        }
    }
    Ok(filter)
}

// ---------------------------------------------------------------------------------------------
// The v1 JSON model

#[derive(Serialize)]
pub struct Tag {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: TagValue,
}

/// A tag's JSON value, typed so that serializing needs no intermediate `serde_json::Value`.
#[derive(Serialize, Debug, PartialEq)]
#[serde(untagged)]
pub enum TagValue {
    Str(String),
    Bool(bool),
    Int(i64),
    Float(f64),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Reference {
    ref_type: &'static str,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Serialize)]
struct Log {
    timestamp: u64,
    fields: Vec<Tag>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JSpan {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(skip_serializing_if = "is_zero")]
    flags: u32,
    operation_name: String,
    references: Vec<Reference>,
    start_time: u64,
    duration: u64,
    tags: Vec<Tag>,
    logs: Vec<Log>,
    #[serde(rename = "processID")]
    process_id: String,
    warnings: Option<Vec<String>>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    service_name: String,
    tags: Vec<Tag>,
}

#[derive(Serialize)]
struct JTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
    spans: Vec<JSpan>,
    processes: std::collections::BTreeMap<String, Process>,
    warnings: Option<Vec<String>>,
}

const JS_SAFE: i64 = (1 << 53) - 1;

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A typed Jaeger tag from an OTLP value: arrays and maps become JSON text, bytes base64.
pub fn tag(key: &str, v: Option<&AnyValue>) -> Tag {
    use TagValue::*;
    let (kind, value) = match v.and_then(|v| v.value.as_ref()) {
        Some(Av::StringValue(s)) => ("string", Str(s.clone())),
        Some(Av::BoolValue(b)) => ("bool", Bool(*b)),
        Some(Av::IntValue(i)) if (-JS_SAFE..=JS_SAFE).contains(i) => ("int64", Int(*i)),
        // Past 2^53 a JavaScript number would round the value: Jaeger sends such integers as text.
        Some(Av::IntValue(i)) => ("int64", Str(i.to_string())),
        Some(Av::DoubleValue(d)) if d.is_finite() => ("float64", Float(*d)),
        Some(Av::DoubleValue(d)) => ("float64", Str(d.to_string())),
        Some(Av::BytesValue(b)) => ("binary", Str(base64(b))),
        Some(Av::ArrayValue(_) | Av::KvlistValue(_)) => {
            ("string", Str(crate::model::attrs::to_json(v).to_string()))
        }
        Some(Av::StringValueStrindex(i)) => ("int64", Int(i64::from(*i))),
        None => ("string", Str(String::new())),
    };
    Tag {
        key: key.to_string(),
        kind,
        value,
    }
}

fn str_tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.into(),
        kind: "string",
        value: TagValue::Str(value.into()),
    }
}

fn int_tag(key: &str, value: i64) -> Tag {
    Tag {
        key: key.into(),
        kind: "int64",
        value: TagValue::Int(value),
    }
}

fn tags_of(attrs: &[KeyValue]) -> Vec<Tag> {
    attrs
        .iter()
        .map(|kv| tag(&kv.key, kv.value.as_ref()))
        .collect()
}

/// One stored trace in Jaeger's v1 JSON model.
fn jaeger_trace(trace_id: &[u8], spans: &[StoredSpan]) -> JTrace {
    let mut processes = std::collections::BTreeMap::new();
    let mut process_of: HashMap<i64, String> = HashMap::new();
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        let process_id = process_of
            .entry(s.resource_id)
            .or_insert_with(|| {
                let id = format!("p{}", processes.len() + 1);
                let attrs = &s.resource.0.attributes;
                let process = Process {
                    service_name: s.service.clone(),
                    tags: attrs
                        .iter()
                        .filter(|kv| kv.key != "service.name")
                        .map(|kv| tag(&kv.key, kv.value.as_ref()))
                        .collect(),
                };
                processes.insert(id.clone(), process);
                id
            })
            .clone();
        out.push(jaeger_span(s, process_id));
    }
    JTrace {
        trace_id: ids::to_hex(trace_id),
        spans: out,
        processes,
        warnings: None,
    }
}

fn jaeger_span(s: &StoredSpan, process_id: String) -> JSpan {
    let span = &s.span;
    let trace_hex = ids::to_hex(&span.trace_id);
    let mut references = Vec::with_capacity(1 + span.links.len());
    if !span.parent_span_id.is_empty() {
        references.push(Reference {
            ref_type: "CHILD_OF",
            trace_id: trace_hex.clone(),
            span_id: ids::to_hex(&span.parent_span_id),
        });
    }
    for link in &span.links {
        references.push(Reference {
            ref_type: "FOLLOWS_FROM",
            trace_id: ids::to_hex(&link.trace_id),
            span_id: ids::to_hex(&link.span_id),
        });
    }
    let code = span.status.as_ref().map(|st| st.code).unwrap_or(0);
    let message = span
        .status
        .as_ref()
        .map(|st| st.message.as_str())
        .unwrap_or("");
    let mut tags: Vec<Tag> = span
        .attributes
        .iter()
        .filter(|kv| !(code == 2 && kv.key == "error"))
        .map(|kv| tag(&kv.key, kv.value.as_ref()))
        .collect();
    let scope = &s.scope.0;
    if !scope.name.is_empty() {
        tags.push(str_tag("otel.scope.name", &scope.name));
    }
    if !scope.version.is_empty() {
        tags.push(str_tag("otel.scope.version", &scope.version));
    }
    // INTERNAL (and unspecified) carry no span.kind tag, as the OTel→Jaeger mapping says.
    if span.kind >= 2 {
        tags.push(str_tag("span.kind", kind_name(span.kind)));
    }
    match code {
        1 => tags.push(str_tag("otel.status_code", "OK")),
        2 => {
            tags.push(str_tag("otel.status_code", "ERROR"));
            tags.push(Tag {
                key: "error".into(),
                kind: "bool",
                value: TagValue::Bool(true),
            });
        }
        _ => {}
    }
    if code != 0 && !message.is_empty() {
        tags.push(str_tag("otel.status_description", message));
    }
    if !span.trace_state.is_empty() {
        tags.push(str_tag("w3c.tracestate", &span.trace_state));
    }
    for (key, n) in [
        (
            "otel.dropped_attributes_count",
            span.dropped_attributes_count,
        ),
        ("otel.dropped_events_count", span.dropped_events_count),
        ("otel.dropped_links_count", span.dropped_links_count),
    ] {
        if n > 0 {
            tags.push(int_tag(key, i64::from(n)));
        }
    }
    let logs = span
        .events
        .iter()
        .map(|e| {
            let mut fields = Vec::with_capacity(e.attributes.len() + 1);
            if !e.attributes.iter().any(|kv| kv.key == "event") {
                fields.push(str_tag("event", &e.name));
            }
            fields.extend(tags_of(&e.attributes));
            if e.dropped_attributes_count > 0 {
                fields.push(int_tag(
                    "otel.event.dropped_attributes_count",
                    i64::from(e.dropped_attributes_count),
                ));
            }
            Log {
                timestamp: e.time_unix_nano / 1000,
                fields,
            }
        })
        .collect();
    JSpan {
        trace_id: trace_hex,
        span_id: ids::to_hex(&span.span_id),
        flags: span.flags & 0xff,
        operation_name: span.name.clone(),
        references,
        start_time: span.start_time_unix_nano / 1000,
        duration: span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano)
            / 1000,
        tags,
        logs,
        process_id,
        warnings: None,
    }
}

fn load_trace(c: &rusqlite::Connection, id: &[u8]) -> Result<Vec<StoredSpan>, StoreError> {
    crate::store::spans_of_trace(c, id)
}

// ---------------------------------------------------------------------------------------------
// v1 handlers

async fn services(State(app): State<AppState>) -> Result<Response, V1Error> {
    let names = app.reader.with(|c| Ok(search::services(c)?)).await?;
    let n = names.len();
    Ok(envelope(names, n))
}

async fn service_operations(
    State(app): State<AppState>,
    Path(service): Path<String>,
) -> Result<Response, V1Error> {
    let ops = app
        .reader
        .with(move |c| Ok(search::operations(c, &service, None)?))
        .await?;
    let mut names: Vec<String> = ops.into_iter().map(|(n, _)| n).collect();
    names.dedup();
    let n = names.len();
    Ok(envelope(names, n))
}

fn kind_param(q: &[(String, String)], names: &[&str]) -> Result<Option<i32>, V1Error> {
    param(q, names)
        .map(|v| {
            kind_from_name(v).ok_or_else(|| {
                bad(format!(
                    "unsupported span kind {v:?}: expected server, client, producer, consumer or internal"
                ))
            })
        })
        .transpose()
}

async fn operations(State(app): State<AppState>, Query(q): Params) -> Result<Response, V1Error> {
    let service = param(&q, &["service"])
        .ok_or_else(|| bad("parameter 'service' is required"))?
        .to_string();
    let kind = kind_param(&q, &["spanKind"])?;
    let ops = app
        .reader
        .with(move |c| Ok(search::operations(c, &service, kind)?))
        .await?;
    let data: Vec<Value> = ops
        .iter()
        .map(|(name, k)| json!({ "name": name, "spanKind": kind_name(*k) }))
        .collect();
    let n = data.len();
    Ok(envelope(data, n))
}

/// `/api/traces?service=&operation=&tags=&tag=&start=&end=&minDuration=&maxDuration=&limit=`
/// (start/end in microseconds), or `?traceID=...` (repeated) for given traces.
async fn find_traces(State(app): State<AppState>, Query(q): Params) -> Result<Response, V1Error> {
    let trace_ids: Vec<Vec<u8>> = q
        .iter()
        .filter(|(k, _)| k == "traceID")
        .map(|(_, v)| {
            parse_trace_id(v).ok_or_else(|| bad(format!("cannot parse traceID param: {v:?}")))
        })
        .collect::<Result<_, _>>()?;
    if !trace_ids.is_empty() {
        let body = app
            .reader
            .with(move |c| {
                let mut traces = Vec::new();
                let mut errors = Vec::new();
                for id in &trace_ids {
                    let spans = load_trace(c, id)?;
                    if spans.is_empty() {
                        errors
                            .push(json!({ "msg": "trace not found", "traceID": ids::to_hex(id) }));
                    } else {
                        traces.push(jaeger_trace(id, &spans));
                    }
                }
                let errors = (!errors.is_empty()).then_some(errors);
                Ok(envelope_bytes(traces, 0, errors))
            })
            .await?;
        return Ok(json_response(StatusCode::OK, body));
    }
    let service = param(&q, &["service"]).ok_or_else(|| bad("parameter 'service' is required"))?;
    let micros = |name: &str| -> Result<Option<i64>, V1Error> {
        Ok(int_param(&q, &[name])?.map(|us| us.saturating_mul(1000)))
    };
    let params = SearchParams {
        service: Some(service.to_string()),
        operation: param(&q, &["operation"]).map(str::to_string),
        start_min: micros("start")?,
        start_max: micros("end")?,
        min_duration: duration_param(&q, &["minDuration"])?,
        max_duration: duration_param(&q, &["maxDuration"])?,
        filter: tags_filter(&q)?,
        limit: limit_param(&q, &["limit"], 100)?,
        keep_spans: 0,
        ..SearchParams::default()
    };
    if let (Some(lo), Some(hi)) = (params.min_duration, params.max_duration) {
        if hi < lo {
            return Err(bad("'maxDuration' should be greater than 'minDuration'"));
        }
    }
    let body = app
        .reader
        .with(move |c| {
            let found = search::search(c, &params)?;
            let mut traces = Vec::with_capacity(found.traces.len());
            for hit in &found.traces {
                traces.push(jaeger_trace(&hit.trace_id, &load_trace(c, &hit.trace_id)?));
            }
            if !found.complete {
                tracing::info!(
                    inspected = found.inspected,
                    "Jaeger search stopped early; results may be incomplete"
                );
            }
            Ok(envelope_bytes(traces, 0, None))
        })
        .await?;
    Ok(json_response(StatusCode::OK, body))
}

/// `/api/traces/{traceID}` in Jaeger's JSON (the route itself is shared with Tempo; see `query::trace_by_id`).
pub async fn get_trace(app: AppState, trace_id: String) -> Result<Response, V1Error> {
    let id = parse_trace_id(&trace_id).ok_or_else(|| {
        bad(format!(
            "cannot parse traceID {trace_id:?}: expected up to 32 hex digits"
        ))
    })?;
    let body = app
        .reader
        .with(move |c| {
            let spans = load_trace(c, &id)?;
            Ok((!spans.is_empty()).then(|| envelope_bytes([jaeger_trace(&id, &spans)], 0, None)))
        })
        .await?;
    match body {
        Some(b) => Ok(json_response(StatusCode::OK, b)),
        None => Err(V1Error(StatusCode::NOT_FOUND, "trace not found".into())),
    }
}

/// `/api/dependencies?endTs=&lookback=` (milliseconds; lookback defaults to a day).
async fn dependencies(State(app): State<AppState>, Query(q): Params) -> Result<Response, V1Error> {
    let end_ms =
        int_param(&q, &["endTs"])?.unwrap_or((crate::model::time::now_ns() / 1_000_000) as i64);
    let lookback_ms = int_param(&q, &["lookback"])?.unwrap_or(86_400_000);
    if lookback_ms < 0 {
        return Err(bad("'lookback' must not be negative"));
    }
    let hi = end_ms.saturating_mul(1_000_000);
    let lo = hi.saturating_sub(lookback_ms.saturating_mul(1_000_000));
    let deps = app
        .reader
        .with(move |c| Ok(search::dependencies(c, lo, hi)?))
        .await?;
    let data: Vec<Value> = deps
        .iter()
        .map(|(p, c, n)| json!({ "parent": p, "child": c, "callCount": n }))
        .collect();
    Ok(envelope(data, 0))
}

// ---------------------------------------------------------------------------------------------
// api_v3

async fn v3_services(State(app): State<AppState>) -> Result<Response, V3Error> {
    let names = app.reader.with(|c| Ok(search::services(c)?)).await?;
    Ok(json_response(
        StatusCode::OK,
        to_json(&json!({ "services": names })),
    ))
}

async fn v3_operations(State(app): State<AppState>, Query(q): Params) -> Result<Response, V3Error> {
    let service = param(&q, &["service"])
        .ok_or_else(|| bad("parameter 'service' is required"))?
        .to_string();
    let kind = kind_param(&q, &["span_kind", "spanKind"])?;
    let ops = app
        .reader
        .with(move |c| Ok(search::operations(c, &service, kind)?))
        .await?;
    let data: Vec<Value> = ops
        .iter()
        .map(|(name, k)| json!({ "name": name, "spanKind": kind_name(*k) }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        to_json(&json!({ "operations": data })),
    ))
}

/// OTLP/JSON wrapped as grpc-gateway streams it: `{"result": {"resourceSpans": [...]}}`.
#[derive(Serialize)]
struct Wrapped<'a> {
    result: TracesData<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TracesData<'a> {
    resource_spans: &'a [ResourceSpans],
}

/// api_v3's answer for the spans found: `{"result": {"resourceSpans": [...]}}`, or None when there are
/// none (then the caller answers the documented 404).
fn v3_body(spans: Vec<crate::store::StoredSpan>) -> Option<Vec<u8>> {
    (!spans.is_empty()).then(|| {
        let rs = to_resource_spans(spans);
        to_json(&Wrapped {
            result: TracesData {
                resource_spans: &rs,
            },
        })
    })
}

fn not_found() -> V3Error {
    V3Error(StatusCode::NOT_FOUND, "trace not found".into())
}

async fn v3_trace(
    State(app): State<AppState>,
    Path(trace_id): Path<String>,
    Query(q): Params,
) -> Result<Response, V3Error> {
    let id = parse_trace_id(&trace_id).ok_or_else(|| {
        bad(format!(
            "malformed parameter trace_id: expected up to 32 hex digits, got {trace_id:?}"
        ))
    })?;
    time_param(&q, &["start_time", "startTime"])?;
    time_param(&q, &["end_time", "endTime"])?;
    let body = app
        .reader
        .with(move |c| {
            let spans = load_trace(c, &id)?;
            Ok(v3_body(spans))
        })
        .await?;
    body.map(|b| json_response(StatusCode::OK, b))
        .ok_or_else(not_found)
}

/// `query.*` parameters of api_v3, in camelCase or snake_case.
fn v3_search_params(q: &[(String, String)]) -> Result<SearchParams, V1Error> {
    let service = param(q, &["query.service_name", "query.serviceName"])
        .ok_or_else(|| bad("query.service_name is required"))?;
    let lo = time_param(q, &["query.start_time_min", "query.startTimeMin"])?;
    let hi = time_param(q, &["query.start_time_max", "query.startTimeMax"])?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Err(bad(
            "query.start_time_min and query.start_time_max are required",
        ));
    };
    if lo > hi {
        return Err(bad(
            "query.start_time_min must not be after query.start_time_max",
        ));
    }
    let mut filter = Expr::True;
    if let Some(attrs) = param(q, &["query.attributes"]) {
        if attrs.matches(':').count() > MAX_TAGS {
            return Err(bad(format!(
                "too many query.attributes: at most {MAX_TAGS}"
            )));
        }
        let map: HashMap<String, String> = serde_json::from_str(attrs).map_err(|e| {
            bad(format!(
                "malformed parameter query.attributes: expected a JSON map of strings: {e}"
            ))
        })?;
        for (k, v) in map {
            filter = Expr::and(filter, tag_condition(&k, &v));
        }
    }
    let params = SearchParams {
        service: Some(service.to_string()),
        operation: param(q, &["query.operation_name", "query.operationName"]).map(str::to_string),
        start_min: Some(lo),
        // start_time_max is exclusive.
        start_max: Some(hi.saturating_sub(1)),
        min_duration: duration_param(q, &["query.duration_min", "query.durationMin"])?,
        max_duration: duration_param(q, &["query.duration_max", "query.durationMax"])?,
        filter,
        limit: limit_param(
            q,
            &[
                "query.search_depth",
                "query.searchDepth",
                "query.num_traces",
                "query.numTraces",
            ],
            100,
        )?,
        keep_spans: 0,
        ..SearchParams::default()
    };
    for name in ["query.raw_traces", "query.rawTraces"] {
        if let Some(v) = param(q, &[name]) {
            if !matches!(v, "true" | "false") {
                return Err(bad(format!(
                    "malformed parameter {name}: expected true or false, got {v:?}"
                )));
            }
        }
    }
    Ok(params)
}

async fn v3_find_traces(
    State(app): State<AppState>,
    Query(q): Params,
) -> Result<Response, V3Error> {
    let params = v3_search_params(&q)?;
    let body = app
        .reader
        .with(move |c| {
            let found = search::search(c, &params)?;
            let mut spans = Vec::new();
            for hit in &found.traces {
                spans.extend(load_trace(c, &hit.trace_id)?);
            }
            Ok(v3_body(spans))
        })
        .await?;
    body.map(|b| json_response(StatusCode::OK, b))
        .ok_or_else(not_found)
}

async fn v3_trace_summaries(
    State(app): State<AppState>,
    Query(q): Params,
) -> Result<Response, V3Error> {
    let params = v3_search_params(&q)?;
    let summaries = app
        .reader
        .with(move |c| {
            let found = search::search(c, &params)?;
            let mut out = Vec::with_capacity(found.traces.len());
            for hit in &found.traces {
                let s = search::summary(c, &hit.trace_id)?;
                out.push(json!({
                    "traceId": ids::to_hex(&hit.trace_id),
                    "rootServiceName": s.root_service.unwrap_or_default(),
                    "rootOperationName": s.root_name.unwrap_or_default(),
                    "minStartTimeUnixNano": s.start_ns.to_string(),
                    "maxEndTimeUnixNano": s.end_ns.to_string(),
                    "spanCount": s.spans,
                    "errorSpanCount": s.errors,
                    "orphanSpanCount": s.orphans,
                    "services": s.services.iter().map(|(name, n, e)| json!({
                        "name": name, "spanCount": n, "errorSpanCount": e,
                    })).collect::<Vec<_>>(),
                }));
            }
            Ok(out)
        })
        .await?;
    if summaries.is_empty() {
        return Err(not_found());
    }
    Ok(json_response(
        StatusCode::OK,
        to_json(&json!({ "result": { "summaries": summaries } })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0x01]), "//79AQ==");
    }

    #[test]
    fn big_integers_travel_as_text() {
        let v = AnyValue {
            value: Some(Av::IntValue(1 << 60)),
        };
        let t = tag("n", Some(&v));
        assert_eq!(
            (t.kind, t.value),
            ("int64", TagValue::Str((1i64 << 60).to_string()))
        );
    }
}
