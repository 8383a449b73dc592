//! Helpers for the forwarding tests: rich OTLP data, reading what a store holds, a scriptable fake
//! OTLP/HTTP destination that records every request, and waiting for conditions.
#![allow(dead_code)]

use aotel::model::{
    any_value, span, AnyValue, ExportLogsServiceRequest, ExportTraceServiceRequest,
    InstrumentationScope, KeyValue, LogRecord, Resource, ResourceLogs, ResourceSpans, ScopeLogs,
    ScopeSpans, Span, Status,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_string())
}

pub fn trace_id(tag: &str, t: usize) -> Vec<u8> {
    aotel::model::ids::trace_id_for_session(&format!("{tag}-trace-{t}"))
}

pub fn span_id(tag: &str, t: usize, i: usize) -> Vec<u8> {
    aotel::model::ids::span_id_for(&format!("{tag}-{t}-{i}"))
}

/// `traces` traces of `per_trace` spans each, with every kind of attribute value, events, links,
/// statuses, two resources and two scopes. Ids derive from `tag`, so different tags never collide.
pub fn traces(tag: &str, traces: usize, per_trace: usize) -> ExportTraceServiceRequest {
    let base = 1_763_294_409_000_000_000u64;
    let mut by_resource: Vec<ResourceSpans> = (0..2)
        .map(|r| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s(&format!("svc-{r}"))),
                    kv("host.name", s("forward-test")),
                    kv("deployment.replica", any_value::Value::IntValue(r)),
                ],
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            scope_spans: (0..2)
                .map(|sc| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: format!("scope-{sc}"),
                        version: "1.2.3".into(),
                        attributes: vec![kv("scope.kind", s("test"))],
                        dropped_attributes_count: 0,
                    }),
                    spans: Vec::new(),
                    schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                })
                .collect(),
            schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
        })
        .collect();
    for t in 0..traces {
        let tid = trace_id(tag, t);
        let session = format!("{tag}-session-{}", t % 3);
        for i in 0..per_trace {
            let start = base + (t * 1_000 + i) as u64 * 1_000_000;
            let span = Span {
                trace_id: tid.clone(),
                span_id: span_id(tag, t, i),
                trace_state: if i % 2 == 0 {
                    "vendor=x".into()
                } else {
                    String::new()
                },
                parent_span_id: if i == 0 {
                    Vec::new()
                } else {
                    span_id(tag, t, 0)
                },
                flags: 1,
                name: if i == 0 {
                    format!("invoke_agent {tag}")
                } else {
                    format!("execute_tool Tool{i}")
                },
                kind: (i % 5) as i32 + 1,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 500_000 + i as u64,
                attributes: vec![
                    kv("session.id", s(&session)),
                    kv(
                        "gen_ai.operation.name",
                        s(if i == 0 {
                            "invoke_agent"
                        } else {
                            "execute_tool"
                        }),
                    ),
                    kv("gen_ai.tool.name", s(&format!("Tool{i}"))),
                    kv("i", any_value::Value::IntValue(i as i64)),
                    kv("ratio", any_value::Value::DoubleValue(i as f64 / 7.0)),
                    kv("ok", any_value::Value::BoolValue(i % 3 != 0)),
                    kv(
                        "blob",
                        any_value::Value::BytesValue(vec![t as u8, i as u8, 0xff]),
                    ),
                    kv(
                        "list",
                        any_value::Value::ArrayValue(
                            opentelemetry_proto::tonic::common::v1::ArrayValue {
                                values: vec![
                                    AnyValue {
                                        value: Some(s("a")),
                                    },
                                    AnyValue {
                                        value: Some(any_value::Value::IntValue(2)),
                                    },
                                ],
                            },
                        ),
                    ),
                ],
                dropped_attributes_count: (i % 2) as u32,
                events: vec![span::Event {
                    time_unix_nano: start + 1000,
                    name: "gen_ai.content.prompt".into(),
                    attributes: vec![kv("text", s(&format!("hello <b>{t}/{i}</b>")))],
                    dropped_attributes_count: 0,
                }],
                dropped_events_count: 0,
                links: if i == 1 {
                    vec![span::Link {
                        trace_id: trace_id(tag, t + 1000),
                        span_id: span_id(tag, t + 1000, 0),
                        trace_state: String::new(),
                        attributes: vec![kv("link.kind", s("parent_session"))],
                        dropped_attributes_count: 0,
                        flags: 1,
                    }]
                } else {
                    Vec::new()
                },
                dropped_links_count: 0,
                status: Some(Status {
                    message: if i % 4 == 3 {
                        "tool failed".into()
                    } else {
                        String::new()
                    },
                    code: if i % 4 == 3 { 2 } else { 1 },
                }),
            };
            by_resource[t % 2].scope_spans[i % 2].spans.push(span);
        }
    }
    for r in &mut by_resource {
        r.scope_spans.retain(|s| !s.spans.is_empty());
    }
    by_resource.retain(|r| !r.scope_spans.is_empty());
    ExportTraceServiceRequest {
        resource_spans: by_resource,
    }
}

/// `n` log records (events of a session) under one resource.
pub fn logs(tag: &str, n: usize) -> ExportLogsServiceRequest {
    let base = 1_763_294_409_000_000_000u64;
    let records = (0..n)
        .map(|i| LogRecord {
            time_unix_nano: base + i as u64 * 1_000_000,
            observed_time_unix_nano: base + i as u64 * 1_000_000 + 5,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(s(&format!("{tag} tool result {i}"))),
            }),
            attributes: vec![
                kv("session.id", s(&format!("{tag}-session-0"))),
                kv("event.name", s("claude_code.tool_result")),
                kv("n", any_value::Value::IntValue(i as i64)),
            ],
            dropped_attributes_count: 0,
            flags: 1,
            trace_id: trace_id(tag, 0),
            span_id: span_id(tag, 0, 0),
            event_name: "claude_code.tool_result".into(),
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("claude-code"))],
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "com.anthropic.claude_code.events".into(),
                    version: "2.0.0".into(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// Every (trace_id, span_id) in a request.
pub fn span_ids(req: &ExportTraceServiceRequest) -> Vec<(Vec<u8>, Vec<u8>)> {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect()
}

/// POSTs protobuf OTLP to an aotel's HTTP receiver and insists on 200.
pub async fn post_otlp(http: SocketAddr, path: &str, body: Vec<u8>) {
    let resp = reqwest::Client::new()
        .post(format!("http://{http}{path}"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("POST to aotel");
    assert_eq!(
        resp.status(),
        200,
        "aotel refused the export: {:?}",
        resp.text().await
    );
}

pub async fn send_traces(http: SocketAddr, req: &ExportTraceServiceRequest) {
    post_otlp(http, "/v1/traces", req.encode_to_vec()).await;
}

pub async fn send_logs(http: SocketAddr, req: &ExportLogsServiceRequest) {
    post_otlp(http, "/v1/logs", req.encode_to_vec()).await;
}

/// A span as stored, with the resource and scope it belongs to, keyed by (trace_id, span_id).
pub type SpanRow = (Span, Resource, InstrumentationScope);

/// Everything a database holds, read straight from the file (read-only; the server may be running).
pub fn stored_spans(db: &Path) -> BTreeMap<(Vec<u8>, Vec<u8>), SpanRow> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open db");
    c.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    let mut stmt = c
        .prepare(&format!(
            "SELECT (SELECT body FROM resources WHERE id = resource_id),
                (SELECT body FROM scopes WHERE id = scope_id), {}
             FROM spans",
            aotel::store::body::SPAN_COLUMNS
        ))
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                aotel::store::body::SpanRow::read(r, 2)?.decode(),
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
            ))
        })
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows");
    rows.into_iter()
        .map(|(s, r, sc)| {
            let span = s.expect("span");
            let key = (span.trace_id.clone(), span.span_id.clone());
            (
                key,
                (
                    span,
                    Resource::decode(r.as_slice()).expect("resource"),
                    InstrumentationScope::decode(sc.as_slice()).expect("scope"),
                ),
            )
        })
        .collect()
}

/// Log records with their resource, as stored, sorted by their encoding (logs have no ids).
pub fn stored_logs(db: &Path) -> Vec<(LogRecord, Resource)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open db");
    c.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    let mut stmt = c
        .prepare("SELECT l.body, r.body FROM logs l JOIN resources r ON r.id = l.resource_id")
        .expect("prepare");
    let mut rows: Vec<(Vec<u8>, LogRecord, Resource)> = stmt
        .query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .expect("query")
        .map(|row| {
            let (l, r) = row.expect("row");
            (
                l.clone(),
                LogRecord::decode(l.as_slice()).expect("log"),
                Resource::decode(r.as_slice()).expect("resource"),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.into_iter().map(|(_, l, r)| (l, r)).collect()
}

pub fn count_spans(db: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open db");
    c.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    c.query_row("SELECT COUNT(*) FROM spans", [], |r| r.get(0))
        .expect("count")
}

/// Compares two stores span by span: ids, name, times, attributes, events, links, status, resource, scope.
pub fn assert_same_spans(upstream: &Path, downstream: &Path, what: &str) {
    let a = stored_spans(upstream);
    let b = stored_spans(downstream);
    assert!(!a.is_empty(), "{what}: the upstream stored nothing");
    let missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} spans missing downstream",
        missing.len(),
        a.len()
    );
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: the downstream has spans the upstream does not"
    );
    for (key, (span, resource, scope)) in &a {
        let (other, other_resource, other_scope) = &b[key];
        assert_eq!(
            span,
            other,
            "{what}: span {} differs",
            aotel::model::ids::to_hex(&key.1)
        );
        assert_eq!(
            resource,
            other_resource,
            "{what}: resource of span {} differs",
            aotel::model::ids::to_hex(&key.1)
        );
        assert_eq!(
            scope,
            other_scope,
            "{what}: scope of span {} differs",
            aotel::model::ids::to_hex(&key.1)
        );
    }
}

/// Polls `f` every 25 ms until it gives Some, or panics after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `GET /api/forward` of a server.
pub async fn forward_status(api: SocketAddr) -> serde_json::Value {
    let resp = reqwest::get(format!("http://{api}/api/forward"))
        .await
        .expect("GET /api/forward");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("JSON")
}

/// Waits until every destination of the server at `api` has nothing left to send.
pub async fn wait_caught_up(api: SocketAddr, limit: Duration) -> serde_json::Value {
    wait_for("forwarding to catch up", limit, || async move {
        let v = forward_status(api).await;
        let all = v["destinations"].as_array()?.iter().all(|d| {
            d["lag_spans"].as_i64().unwrap_or(0) == 0 && d["lag_logs"].as_i64().unwrap_or(0) == 0
        });
        all.then_some(v)
    })
    .await
}

/// A free loopback port, bound and released (the forwarding benchmark's aotel processes bind it
/// themselves; tests start such processes through `common::spawn_on_free_ports`, which retries).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A loopback port that refuses connections (bound, not listening) and stays this test's until it is
/// dropped or listened on. A destination that is down needs a port nobody answers on; one picked and
/// released (`free_addr`) could meanwhile be taken by a server of a test running alongside, which would
/// then be sent what was meant for nobody.
pub struct Refusing(tokio::net::TcpSocket);

impl Refusing {
    pub fn bind() -> Refusing {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind a loopback port");
        Refusing(socket)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.local_addr().expect("addr")
    }

    /// Starts accepting on the same port: the destination comes back.
    pub fn listen(self) -> tokio::net::TcpListener {
        self.0.listen(1024).expect("listen")
    }
}

/// What a fake destination answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Ok,
    /// 200 with `partial_success` rejecting this many spans.
    Partial(i64, String),
    /// An error status, with an optional `Retry-After` and a google.rpc.Status message.
    Error(u16, Option<String>, String),
    /// Never answer (the request stays in flight).
    Hold,
}

/// One request as the fake destination saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub gzip: bool,
    pub spans: Vec<(Vec<u8>, Vec<u8>)>,
    pub logs: usize,
    pub reply: String,
}

type Script = Box<dyn FnMut(usize, &Recorded) -> Reply + Send>;

pub struct FakeState {
    pub requests: Mutex<Vec<Recorded>>,
    script: Mutex<Script>,
    count: watch::Sender<usize>,
}

/// A tiny OTLP/HTTP server whose answers a test scripts, recording every request.
pub struct FakeOtlp {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    pub count: watch::Receiver<usize>,
}

impl FakeOtlp {
    /// On a port of its own: bound here on port 0, not picked by `free_addr` and bound after, which
    /// another test's process can take in between.
    pub async fn start(script: impl FnMut(usize, &Recorded) -> Reply + Send + 'static) -> FakeOtlp {
        let (count_tx, count) = watch::channel(0);
        let state = Arc::new(FakeState {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(Box::new(script)),
            count: count_tx,
        });
        let app = axum::Router::new()
            .route("/v1/traces", post(fake_export))
            .route("/v1/logs", post(fake_export))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake destination");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOtlp { addr, state, count }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// Every span id that arrived in a request answered 200.
    pub fn accepted_spans(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.requests()
            .into_iter()
            .filter(|r| r.reply == "ok" || r.reply.starts_with("partial"))
            .flat_map(|r| r.spans)
            .collect()
    }

    pub async fn wait_requests(&mut self, n: usize, limit: Duration) {
        let wait = self.count.wait_for(|c| *c >= n);
        if tokio::time::timeout(limit, wait).await.is_err() {
            panic!(
                "the fake destination got {} requests, not {n}, within {limit:?}",
                *self.count.borrow()
            );
        }
    }
}

fn rpc_status(code: i32, message: &str) -> Vec<u8> {
    aotel::model::rpc::RpcStatus {
        code,
        message: message.to_string(),
        details: Vec::new(),
    }
    .encode_to_vec()
}

async fn fake_export(
    State(state): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let raw = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .expect("gzip body");
        out
    } else {
        body.to_vec()
    };
    let path = uri.path().to_string();
    let (spans, logs) = if path.ends_with("/v1/traces") {
        let req = ExportTraceServiceRequest::decode(raw.as_slice()).expect("trace request");
        (span_ids(&req), 0)
    } else {
        let req = ExportLogsServiceRequest::decode(raw.as_slice()).expect("logs request");
        let n = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        (Vec::new(), n)
    };
    let mut rec = Recorded {
        at: Instant::now(),
        path,
        headers,
        gzip,
        spans,
        logs,
        reply: String::new(),
    };
    let reply = {
        let mut requests = state.requests.lock().expect("lock");
        let index = requests.len();
        let reply = (state.script.lock().expect("lock"))(index, &rec);
        rec.reply = match &reply {
            Reply::Ok => "ok".into(),
            Reply::Partial(n, _) => format!("partial {n}"),
            Reply::Error(code, _, _) => format!("error {code}"),
            Reply::Hold => "hold".into(),
        };
        requests.push(rec);
        reply
    };
    state.count.send_modify(|c| *c += 1);
    match reply {
        Reply::Ok => (
            StatusCode::OK,
            [("content-type", "application/x-protobuf")],
            Vec::new(),
        )
            .into_response(),
        Reply::Partial(n, message) => {
            let resp = aotel::model::ExportTraceServiceResponse {
                partial_success: Some(
                    opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                        rejected_spans: n,
                        error_message: message,
                    },
                ),
            };
            (
                StatusCode::OK,
                [("content-type", "application/x-protobuf")],
                resp.encode_to_vec(),
            )
                .into_response()
        }
        Reply::Error(code, retry_after, message) => {
            let status = StatusCode::from_u16(code).expect("status code");
            let mut resp = (
                status,
                [("content-type", "application/x-protobuf")],
                rpc_status(if code == 400 { 3 } else { 14 }, &message),
            )
                .into_response();
            if let Some(ra) = retry_after {
                resp.headers_mut()
                    .insert("retry-after", ra.parse().expect("header"));
            }
            resp
        }
        Reply::Hold => std::future::pending::<Response>().await,
    }
}
