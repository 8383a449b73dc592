//! Helpers for the live-view tests and benchmark: OTLP/JSON spans built by hand, posted over OTLP/HTTP,
//! and a small WebSocket client that reads JSON messages.
#![allow(dead_code)]

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A 32-hex-digit trace id made from a number (never all zero).
pub fn trace_hex(n: u64) -> String {
    format!(
        "{:016x}{:016x}",
        0xa07e_1000_0000_0000u64 | (n >> 1),
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
    )
}

/// A 16-hex-digit span id made from a number (never all zero).
pub fn span_hex(n: u64) -> String {
    format!("{:016x}", n.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1)
}

pub fn attr(key: &str, value: Value) -> Value {
    let v = match value {
        Value::String(s) => json!({ "stringValue": s }),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n.as_f64() }),
        other => json!({ "stringValue": other.to_string() }),
    };
    json!({ "key": key, "value": v })
}

/// One span in OTLP/JSON.
pub struct SpanSpec<'a> {
    pub trace: &'a str,
    pub span: &'a str,
    pub parent: Option<&'a str>,
    pub name: &'a str,
    pub start_ns: u64,
    pub end_ns: u64,
    pub error: bool,
    pub attrs: Vec<(&'a str, Value)>,
}

impl SpanSpec<'_> {
    pub fn json(&self) -> Value {
        let mut s = json!({
            "traceId": self.trace,
            "spanId": self.span,
            "name": self.name,
            "kind": 1,
            "startTimeUnixNano": self.start_ns.to_string(),
            "endTimeUnixNano": self.end_ns.to_string(),
            "attributes": self.attrs.iter().map(|(k, v)| attr(k, v.clone())).collect::<Vec<_>>(),
        });
        if let Some(p) = self.parent {
            s["parentSpanId"] = json!(p);
        }
        if self.error {
            s["status"] = json!({ "code": 2, "message": "tool failed" });
        }
        s
    }
}

/// An agent run span (`invoke_agent`) of session `session`.
pub fn run_span(
    session: &str,
    agent: &str,
    trace: &str,
    span: &str,
    start_ns: u64,
    end_ns: u64,
    in_progress: bool,
) -> Value {
    let mut attrs = vec![
        ("gen_ai.operation.name", json!("invoke_agent")),
        ("gen_ai.agent.name", json!(agent)),
        ("gen_ai.conversation.id", json!(session)),
        ("ao.session.title", json!(format!("{agent} session"))),
    ];
    if in_progress {
        attrs.push(("ao.in_progress", json!(true)));
    }
    SpanSpec {
        trace,
        span,
        parent: None,
        name: &format!("invoke_agent {agent}"),
        start_ns,
        end_ns,
        error: false,
        attrs,
    }
    .json()
}

/// A tool call (`execute_tool`) under `parent`.
#[allow(clippy::too_many_arguments)]
pub fn tool_span(
    session: &str,
    trace: &str,
    span: &str,
    parent: &str,
    tool: &str,
    args: &str,
    result: &str,
    start_ns: u64,
    error: bool,
) -> Value {
    SpanSpec {
        trace,
        span,
        parent: Some(parent),
        name: &format!("execute_tool {tool}"),
        start_ns,
        end_ns: start_ns + 25_000_000,
        error,
        attrs: vec![
            ("gen_ai.operation.name", json!("execute_tool")),
            ("gen_ai.tool.name", json!(tool)),
            ("gen_ai.conversation.id", json!(session)),
            ("gen_ai.tool.call.id", json!(format!("toolu_{span}"))),
            ("gen_ai.tool.call.arguments", json!(args)),
            ("gen_ai.tool.call.result", json!(result)),
        ],
    }
    .json()
}

/// An OTLP/JSON `ExportTraceServiceRequest` with `spans` under one resource.
pub fn traces(service: &str, spans: Vec<Value>) -> Value {
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [attr("service.name", json!(service))] },
            "scopeSpans": [{ "scope": { "name": "aotel-tests" }, "spans": spans }]
        }]
    })
}

/// An OTLP/JSON `ExportLogsServiceRequest` with one event of `session`.
pub fn log_event(service: &str, session: &str, event: &str, body: &str) -> Value {
    json!({
        "resourceLogs": [{
            "resource": { "attributes": [attr("service.name", json!(service))] },
            "scopeLogs": [{ "scope": { "name": "aotel-tests" }, "logRecords": [{
                "timeUnixNano": now_ns().to_string(),
                "severityNumber": 9,
                "severityText": "INFO",
                "eventName": event,
                "body": { "stringValue": body },
                "attributes": [attr("session.id", json!(session))]
            }]}]
        }]
    })
}

/// Posts OTLP/JSON to `http://{otlp_http}{path}` and insists on 200.
pub async fn post(client: &reqwest::Client, otlp_http: SocketAddr, path: &str, body: &Value) {
    let resp = client
        .post(format!("http://{otlp_http}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "POST {path} answered {status}: {text}");
}

/// A WebSocket client reading JSON messages from `/ws`.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How long a test waits for one message before it fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(30);

impl Ws {
    pub async fn connect(api: SocketAddr, query: &str) -> Ws {
        let url = format!("ws://{api}/ws{query}");
        let (stream, _) = tokio_tungstenite::connect_async(&url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Ws { stream }
    }

    /// The next text message as JSON; None when the connection ended (closed, reset or cut off).
    pub async fn try_next(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("no WebSocket message within the test's patience");
            match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sent JSON");
                    assert_eq!(v["v"], 1, "every message carries schema version 1: {v}");
                    assert!(v["type"].is_string(), "every message has a type: {v}");
                    return Some(v);
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn next(&mut self) -> Value {
        self.try_next()
            .await
            .expect("the WebSocket closed unexpectedly")
    }

    /// Skips messages until one of type `kind` arrives.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let m = self.next().await;
            if m["type"] == kind {
                return m;
            }
        }
    }

    pub async fn send(&mut self, v: Value) {
        use futures_util::SinkExt;
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send on the WebSocket");
    }
}
