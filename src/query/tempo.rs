//! Grafana Tempo's HTTP API over the store, so Grafana's Tempo data source (trace view, search, TraceQL
//! editor with autocomplete) works against aotel: trace by id as `tempopb.Trace` /
//! `tempopb.TraceByIDResponse` protobuf (or JSON), search by tags or by TraceQL (see `traceql` for the
//! subset), tag names and values. Errors are plain text, as Tempo sends them.

use super::search::{self, parse_trace_id, Matched, SearchParams};
use super::traceql::{self, parse_duration, Cond, Expr, Field, Literal, Op, Scope};
use crate::model::{any_value::Value as Av, attrs, ids, ResourceSpans};
use crate::store::{to_resource_spans, StoreError};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prost::Message;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The Tempo API level aotel answers like (Grafana reads it to pick features).
pub const TEMPO_API_VERSION: &str = "2.8.0";
/// Spans sampled, newest first, to list tag names and values.
const TAG_SAMPLE: usize = 10_000;
const MAX_TAG_VALUES: usize = 1_000;

/// `tempopb.Trace`: the body of `/api/traces/{id}` in protobuf.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Trace {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `tempopb.TraceByIDMetrics`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TraceByIdMetrics {
    #[prost(uint64, tag = "1")]
    pub inspected_bytes: u64,
}

/// `tempopb.TraceByIDResponse`: the body of `/api/v2/traces/{id}` in protobuf. `status` is
/// `PartialStatus` (0 complete, 1 partial).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    pub trace: Option<Trace>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<TraceByIdMetrics>,
    #[prost(int32, tag = "3")]
    pub status: i32,
    #[prost(string, tag = "4")]
    pub message: String,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/echo", get(|| async { "echo" }))
        .route("/ready", get(ready))
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/v2/traces/{trace_id}", get(trace_v2))
        .route("/api/search", get(search_handler))
        .route("/api/search/tags", get(tags_v1))
        .route("/api/v2/search/tags", get(tags_v2))
        .route("/api/search/tag/{tag}/values", get(values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(values_v2))
}

/// A plain-text error, as Tempo answers.
#[derive(Debug)]
pub struct TempoError(pub StatusCode, pub String);

impl IntoResponse for TempoError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1,
        )
            .into_response()
    }
}

impl From<StoreError> for TempoError {
    fn from(e: StoreError) -> TempoError {
        let (status, message) = super::store_failure("tempo", e);
        TempoError(status, message)
    }
}

fn bad(msg: impl Into<String>) -> TempoError {
    TempoError(StatusCode::BAD_REQUEST, msg.into())
}

async fn ready(State(app): State<AppState>) -> Result<&'static str, TempoError> {
    app.reader
        .with(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await?;
    Ok("ready")
}

async fn buildinfo() -> Response {
    let body = json!({
        "version": TEMPO_API_VERSION,
        "revision": concat!("aotel-", env!("CARGO_PKG_VERSION")),
        "branch": "aotel",
        "buildUser": "aotel",
        "buildDate": "",
        "goVersion": "",
    });
    json_response(serde_json::to_vec(&body).unwrap_or_default())
}

fn json_response(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Whether the client asked for protobuf (Grafana's Tempo data source does, with `application/protobuf`).
pub fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            let media = v.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("application/protobuf")
                || media.eq_ignore_ascii_case("application/x-protobuf")
        })
}

fn protobuf_response(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/protobuf")],
        body,
    )
        .into_response()
}

async fn load(app: &AppState, trace_id: &str) -> Result<Vec<ResourceSpans>, TempoError> {
    let id = parse_trace_id(trace_id).ok_or_else(|| {
        bad(format!(
            "invalid trace id {trace_id:?}: expected up to 32 hex digits"
        ))
    })?;
    let spans = app
        .reader
        .with(move |c| crate::store::spans_of_trace(c, &id))
        .await?;
    if spans.is_empty() {
        return Err(TempoError(
            StatusCode::NOT_FOUND,
            format!("trace {trace_id} not found"),
        ));
    }
    Ok(to_resource_spans(spans))
}

/// `/api/traces/{id}` when protobuf is asked for: `tempopb.Trace` (JSON there is Jaeger's; see `query`).
pub async fn trace_v1(app: AppState, trace_id: String) -> Result<Response, TempoError> {
    let rs = load(&app, &trace_id).await?;
    Ok(protobuf_response(
        Trace { resource_spans: rs }.encode_to_vec(),
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TraceJson {
    resource_spans: Vec<ResourceSpans>,
}

async fn trace_v2(
    State(app): State<AppState>,
    Path(trace_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, TempoError> {
    let rs = load(&app, &trace_id).await?;
    if wants_protobuf(&headers) {
        let resp = TraceByIdResponse {
            trace: Some(Trace { resource_spans: rs }),
            metrics: Some(TraceByIdMetrics::default()),
            status: 0,
            message: String::new(),
        };
        return Ok(protobuf_response(resp.encode_to_vec()));
    }
    let body = json!({ "trace": TraceJson { resource_spans: rs }, "metrics": {} });
    Ok(json_response(serde_json::to_vec(&body).unwrap_or_default()))
}

// ---------------------------------------------------------------------------------------------
// Search

type Params = Query<Vec<(String, String)>>;

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

fn uint_param(q: &[(String, String)], name: &str) -> Result<Option<i64>, TempoError> {
    param(q, name)
        .map(|v| match v.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n),
            _ => Err(bad(format!(
                "invalid {name}: expected a whole number, got {v:?}"
            ))),
        })
        .transpose()
}

fn duration_param(q: &[(String, String)], name: &str) -> Result<Option<i64>, TempoError> {
    param(q, name)
        .map(|v| {
            parse_duration(v.trim()).filter(|d| *d >= 0).ok_or_else(|| {
                bad(format!(
                    "invalid {name}: expected a duration such as 100ms or 2s, got {v:?}"
                ))
            })
        })
        .transpose()
}

/// `start` / `end` in Unix seconds, as nanoseconds; `end` covers its whole second.
fn range(q: &[(String, String)]) -> Result<(Option<i64>, Option<i64>), TempoError> {
    let start = uint_param(q, "start")?.map(|s| s.saturating_mul(1_000_000_000));
    let end = uint_param(q, "end")?.map(|s| s.saturating_add(1).saturating_mul(1_000_000_000) - 1);
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return Err(bad("invalid start: after end"));
        }
    }
    Ok((start, end))
}

/// Tempo's `tags` parameter (logfmt, `key=value key2="quoted value"`) as pairs.
pub fn parse_logfmt(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return Err(format!("invalid tags: expected key=value, got {key:?}"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!(
                            "invalid tags: unterminated quote in the value of {key:?}"
                        ))
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

fn cond(field: Field, op: Op, value: Literal) -> Expr {
    Expr::Cmp(Cond {
        field,
        op,
        value,
        regex: None,
    })
}

/// One legacy tag: `name` and `status.code` are the span's own fields, anything else an attribute
/// of the span or its resource, compared as text.
fn tag_condition(key: &str, value: &str) -> Result<Expr, TempoError> {
    Ok(match key {
        "name" => cond(Field::Name, Op::Eq, Literal::Str(value.into())),
        "status.code" | "status" => {
            let code = match value {
                "unset" | "0" | "STATUS_CODE_UNSET" => 0,
                "ok" | "1" | "STATUS_CODE_OK" => 1,
                "error" | "2" | "STATUS_CODE_ERROR" => 2,
                other => {
                    return Err(bad(format!(
                        "invalid tags: {key} must be unset, ok or error, got {other:?}"
                    )))
                }
            };
            cond(Field::Status, Op::Eq, Literal::Status(code))
        }
        _ => cond(
            Field::Attr {
                scope: Scope::Any,
                key: key.into(),
            },
            Op::Eq,
            Literal::Text(value.into()),
        ),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanSetSpan {
    #[serde(rename = "spanID")]
    span_id: String,
    name: String,
    start_time_unix_nano: String,
    duration_nanos: String,
    attributes: Vec<Value>,
}

#[derive(Serialize)]
struct SpanSet {
    spans: Vec<SpanSetSpan>,
    matched: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TraceMeta {
    #[serde(rename = "traceID")]
    trace_id: String,
    root_service_name: String,
    root_trace_name: String,
    start_time_unix_nano: String,
    duration_ms: u64,
    span_set: SpanSet,
    span_sets: Vec<SpanSet>,
}

fn kv_json(key: &str, value: Value) -> Value {
    json!({ "key": key, "value": value })
}

fn any_json(v: &Av) -> Value {
    match v {
        Av::StringValue(s) => json!({ "stringValue": s }),
        Av::BoolValue(b) => json!({ "boolValue": b }),
        Av::IntValue(i) => json!({ "intValue": i.to_string() }),
        Av::DoubleValue(d) => json!({ "doubleValue": d }),
        other => {
            json!({ "stringValue": attrs::to_json(Some(&crate::model::AnyValue { value: Some(other.clone()) })).to_string() })
        }
    }
}

/// The attributes a spanset span shows: its service and every field the query compared.
fn spanset_attributes(m: &Matched, fields: &[&Field]) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(service) = attrs::get(&m.resource.attributes, "service.name") {
        out.push(kv_json("service.name", any_json(service)));
    }
    for f in fields {
        match f {
            Field::Attr { scope, key } if key != "service.name" => {
                if let Some(v) = m.view().attr(scope, key) {
                    out.push(kv_json(key, any_json(v)));
                }
            }
            Field::Status => {
                let code = m.span.status.as_ref().map(|s| s.code).unwrap_or(0);
                out.push(kv_json(
                    "status",
                    json!({ "stringValue": crate::store::status_name(code) }),
                ));
            }
            Field::StatusMessage => {
                let msg = m
                    .span
                    .status
                    .as_ref()
                    .map(|s| s.message.clone())
                    .unwrap_or_default();
                out.push(kv_json("statusMessage", json!({ "stringValue": msg })));
            }
            Field::Kind => {
                out.push(kv_json(
                    "kind",
                    json!({ "stringValue": kind_word(m.span.kind) }),
                ));
            }
            _ => {}
        }
    }
    out
}

fn kind_word(kind: i32) -> &'static str {
    match super::jaeger::kind_name(kind) {
        "" => "unspecified",
        k => k,
    }
}

/// `/api/search?q=<TraceQL>` or `?tags=k=v ...`, with `minDuration`, `maxDuration`, `limit`,
/// `start`, `end` (Unix seconds) and `spss` (spans per spanset).
async fn search_handler(
    State(app): State<AppState>,
    Query(q): Params,
) -> Result<Response, TempoError> {
    let mut filter = match param(&q, "q") {
        Some(text) => {
            traceql::parse(text).map_err(|e| bad(format!("invalid TraceQL query: {e}")))?
        }
        None => Expr::True,
    };
    if let Some(tags) = param(&q, "tags") {
        let pairs = parse_logfmt(tags).map_err(bad)?;
        if pairs.len() > 128 {
            return Err(bad("invalid tags: at most 128"));
        }
        for (k, v) in pairs {
            filter = Expr::and(filter, tag_condition(&k, &v)?);
        }
    }
    let (start_min, start_max) = range(&q)?;
    let limit = match uint_param(&q, "limit")? {
        None | Some(0) => 20,
        Some(n) => (n as usize).min(search::MAX_LIMIT),
    };
    let keep = match uint_param(&q, "spss")? {
        None | Some(0) => 3,
        Some(n) => (n as usize).min(1000),
    };
    let params = SearchParams {
        start_min,
        start_max,
        trace_min_duration: duration_param(&q, "minDuration")?,
        trace_max_duration: duration_param(&q, "maxDuration")?,
        filter,
        limit,
        keep_spans: keep,
        ..SearchParams::default()
    };
    let body = app
        .reader
        .with(move |c| {
            let found = search::search(c, &params)?;
            let fields = params.filter.fields();
            let mut traces = Vec::with_capacity(found.traces.len());
            for hit in &found.traces {
                let s = search::summary(c, &hit.trace_id)?;
                let set = || SpanSet {
                    spans: hit
                        .spans
                        .iter()
                        .map(|m| SpanSetSpan {
                            span_id: ids::to_hex(&m.span.span_id),
                            name: m.span.name.clone(),
                            start_time_unix_nano: m.span.start_time_unix_nano.to_string(),
                            duration_nanos: m
                                .span
                                .end_time_unix_nano
                                .saturating_sub(m.span.start_time_unix_nano)
                                .to_string(),
                            attributes: spanset_attributes(m, &fields),
                        })
                        .collect(),
                    matched: hit.matched,
                };
                traces.push(TraceMeta {
                    trace_id: ids::to_hex(&hit.trace_id),
                    root_service_name: s
                        .root_service
                        .unwrap_or_else(|| "<root span not yet received>".into()),
                    root_trace_name: s.root_name.unwrap_or_default(),
                    start_time_unix_nano: s.start_ns.to_string(),
                    duration_ms: (s.end_ns.saturating_sub(s.start_ns) / 1_000_000) as u64,
                    span_set: set(),
                    span_sets: vec![set()],
                });
            }
            let body = json!({
                "traces": traces,
                "metrics": {
                    "inspectedTraces": traces.len(),
                    "inspectedSpans": found.inspected.to_string(),
                    "inspectedBytes": "0",
                    "completedJobs": 1,
                    "totalJobs": 1,
                },
            });
            Ok(serde_json::to_vec(&body).unwrap_or_default())
        })
        .await?;
    Ok(json_response(body))
}

// ---------------------------------------------------------------------------------------------
// Tags

const INTRINSICS: [&str; 5] = ["duration", "kind", "name", "status", "statusMessage"];

/// Span and resource attribute names of the newest spans in the range.
async fn tag_names(
    app: &AppState,
    q: &[(String, String)],
) -> Result<(BTreeSet<String>, BTreeSet<String>), TempoError> {
    let (lo, hi) = range(q)?;
    let (lo, hi) = (lo.unwrap_or(i64::MIN), hi.unwrap_or(i64::MAX));
    Ok(app
        .reader
        .with(move |c| {
            let mut span_keys = BTreeSet::new();
            let mut resource_keys = BTreeSet::new();
            let mut seen = std::collections::HashSet::new();
            for m in search::recent(c, lo, hi, TAG_SAMPLE)? {
                span_keys.extend(m.span.attributes.iter().map(|kv| kv.key.clone()));
                if seen.insert(std::sync::Arc::as_ptr(&m.resource)) {
                    resource_keys.extend(m.resource.attributes.iter().map(|kv| kv.key.clone()));
                }
            }
            Ok((span_keys, resource_keys))
        })
        .await?)
}

fn scope_param(q: &[(String, String)]) -> Result<Option<&str>, TempoError> {
    match param(q, "scope") {
        None | Some("none") | Some("all") => Ok(None),
        Some(s @ ("span" | "resource" | "intrinsic")) => Ok(Some(s)),
        Some(other) => Err(bad(format!(
            "invalid scope {other:?}: expected span, resource, intrinsic or none"
        ))),
    }
}

/// `/api/search/tags?scope=`: `{"tagNames": [...]}`.
async fn tags_v1(State(app): State<AppState>, Query(q): Params) -> Result<Response, TempoError> {
    let scope = scope_param(&q)?;
    let (span_keys, resource_keys) = tag_names(&app, &q).await?;
    let mut names = BTreeSet::new();
    if scope.is_none() || scope == Some("span") {
        names.extend(span_keys);
    }
    if scope.is_none() || scope == Some("resource") {
        names.extend(resource_keys);
    }
    if scope == Some("intrinsic") {
        names.extend(INTRINSICS.iter().map(|s| s.to_string()));
    }
    Ok(json_response(
        serde_json::to_vec(&json!({ "tagNames": names })).unwrap_or_default(),
    ))
}

/// `/api/v2/search/tags?scope=`: `{"scopes": [{"name", "tags"}]}`.
async fn tags_v2(State(app): State<AppState>, Query(q): Params) -> Result<Response, TempoError> {
    let scope = scope_param(&q)?;
    let (span_keys, resource_keys) = tag_names(&app, &q).await?;
    let mut scopes = Vec::new();
    if scope.is_none() || scope == Some("resource") {
        scopes.push(json!({ "name": "resource", "tags": resource_keys }));
    }
    if scope.is_none() || scope == Some("span") {
        scopes.push(json!({ "name": "span", "tags": span_keys }));
    }
    if scope.is_none() || scope == Some("intrinsic") {
        scopes.push(json!({ "name": "intrinsic", "tags": INTRINSICS }));
    }
    Ok(json_response(
        serde_json::to_vec(&json!({ "scopes": scopes })).unwrap_or_default(),
    ))
}

fn value_type(v: &Av) -> &'static str {
    match v {
        Av::StringValue(_) => "string",
        Av::IntValue(_) => "int",
        Av::DoubleValue(_) => "float",
        Av::BoolValue(_) => "bool",
        _ => "string",
    }
}

/// Distinct (type, value) of a field among the newest spans in the range that match `q` (if it
/// parses: autocomplete sends half-written queries, which then do not filter).
async fn tag_values(
    app: &AppState,
    field: Field,
    q: &[(String, String)],
) -> Result<BTreeMap<String, &'static str>, TempoError> {
    let (lo, hi) = range(q)?;
    let (lo, hi) = (lo.unwrap_or(i64::MIN), hi.unwrap_or(i64::MAX));
    let filter = param(q, "q")
        .and_then(|t| traceql::parse(t).ok())
        .unwrap_or(Expr::True);
    Ok(app
        .reader
        .with(move |c| {
            let mut values: BTreeMap<String, &'static str> = BTreeMap::new();
            let unfiltered = matches!(filter, Expr::True);
            // The catalogue knows every service and operation, not just recent ones.
            match &field {
                Field::Attr {
                    scope: Scope::Resource | Scope::Any,
                    key,
                } if key == "service.name" && unfiltered => {
                    for s in search::services(c)? {
                        values.insert(s, "string");
                    }
                    return Ok(values);
                }
                Field::Name if unfiltered => {
                    for name in c
                        .prepare_cached(
                            "SELECT DISTINCT name FROM operations ORDER BY name LIMIT ?1",
                        )?
                        .query_map([MAX_TAG_VALUES as i64], |r| r.get::<_, String>(0))?
                    {
                        values.insert(name?, "string");
                    }
                    return Ok(values);
                }
                _ => {}
            }
            for m in search::recent(c, lo, hi, TAG_SAMPLE)? {
                if values.len() >= MAX_TAG_VALUES {
                    break;
                }
                let view = m.view();
                if !filter.matches(&view) {
                    continue;
                }
                match &field {
                    Field::Attr { scope, key } => {
                        if let Some(v) = view.attr(scope, key) {
                            if let Some(text) = crate::store::index::value_text(v) {
                                values.insert(text.into_owned(), value_type(v));
                            }
                        }
                    }
                    Field::Name => {
                        values.insert(m.span.name.clone(), "string");
                    }
                    Field::StatusMessage => {
                        if let Some(st) = m.span.status.as_ref().filter(|s| !s.message.is_empty()) {
                            values.insert(st.message.clone(), "string");
                        }
                    }
                    _ => {}
                }
            }
            Ok(values)
        })
        .await?)
}

/// A v2 tag name: `resource.x`, `span.x`, `.x` or an intrinsic; v1 names are unscoped attributes.
fn tag_field(tag: &str, scoped: bool) -> Result<Field, TempoError> {
    if !scoped {
        return Ok(match tag {
            "name" => Field::Name,
            _ => Field::Attr {
                scope: Scope::Any,
                key: tag.to_string(),
            },
        });
    }
    let attr = |scope, key: &str| {
        Ok(Field::Attr {
            scope,
            key: key.to_string(),
        })
    };
    if let Some(k) = tag.strip_prefix("resource.") {
        return attr(Scope::Resource, k);
    }
    if let Some(k) = tag.strip_prefix("span.") {
        return attr(Scope::Span, k);
    }
    if let Some(k) = tag.strip_prefix('.') {
        return attr(Scope::Any, k);
    }
    match tag {
        "name" | "span:name" => Ok(Field::Name),
        "status" | "span:status" => Ok(Field::Status),
        "kind" | "span:kind" => Ok(Field::Kind),
        "statusMessage" | "span:statusMessage" => Ok(Field::StatusMessage),
        "duration" | "span:duration" => Err(bad("tag values of duration are not listed")),
        other => Err(bad(format!(
            "unsupported tag {other:?}: use resource.<name>, span.<name>, .<name> or name, status, statusMessage, kind"
        ))),
    }
}

/// `/api/search/tag/{tag}/values`: `{"tagValues": ["..."]}`.
async fn values_v1(
    State(app): State<AppState>,
    Path(tag): Path<String>,
    Query(q): Params,
) -> Result<Response, TempoError> {
    let field = tag_field(&tag, false)?;
    let values = tag_values(&app, field, &q).await?;
    let list: Vec<&String> = values.keys().collect();
    Ok(json_response(
        serde_json::to_vec(&json!({ "tagValues": list })).unwrap_or_default(),
    ))
}

/// `/api/v2/search/tag/{tag}/values`: `{"tagValues": [{"type", "value"}]}`; status and kind are keywords.
async fn values_v2(
    State(app): State<AppState>,
    Path(tag): Path<String>,
    Query(q): Params,
) -> Result<Response, TempoError> {
    let field = tag_field(&tag, true)?;
    let list: Vec<Value> = match field {
        Field::Status => ["error", "ok", "unset"]
            .iter()
            .map(|v| json!({ "type": "keyword", "value": v }))
            .collect(),
        Field::Kind => [
            "client",
            "consumer",
            "internal",
            "producer",
            "server",
            "unspecified",
        ]
        .iter()
        .map(|v| json!({ "type": "keyword", "value": v }))
        .collect(),
        field => tag_values(&app, field, &q)
            .await?
            .into_iter()
            .map(|(v, t)| json!({ "type": t, "value": v }))
            .collect(),
    };
    Ok(json_response(
        serde_json::to_vec(&json!({ "tagValues": list })).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_tags() {
        assert_eq!(
            parse_logfmt(r#"service.name=ao  gen_ai.tool.name="Bash tool" x=a\b"#).unwrap(),
            vec![
                ("service.name".to_string(), "ao".to_string()),
                ("gen_ai.tool.name".to_string(), "Bash tool".to_string()),
                ("x".to_string(), r"a\b".to_string()),
            ]
        );
        assert!(parse_logfmt("novalue").is_err());
        assert!(parse_logfmt(r#"a="open"#).is_err());
        assert_eq!(parse_logfmt("  ").unwrap(), vec![]);
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!wants_protobuf(&h));
        h.insert(
            header::ACCEPT,
            "application/json, application/protobuf;q=0.9"
                .parse()
                .unwrap(),
        );
        assert!(wants_protobuf(&h));
    }
}
