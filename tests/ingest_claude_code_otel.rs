//! Claude Code's own telemetry (`CLAUDE_CODE_ENABLE_TELEMETRY=1`): OTLP log events (`claude_code.user_prompt`,
//! `claude_code.tool_result`, `claude_code.api_request`) and beta traces (`claude_code.interaction` →
//! `claude_code.llm_request` / `claude_code.tool` → `claude_code.tool.execution`), shaped as the monitoring
//! docs describe them (numbers as text, `event.name` without prefix, the full name in the body, one
//! trace per prompt, `session.id` on every record), land in one session with the right counts.

mod common;

use common::TestServer;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span, Status};
use prost::Message;

const SESSION: &str = "9b2e4c61-7d3a-4f0e-a5b8-1c6d2e3f4a5b";
const T0: u64 = 1_764_000_000_000_000_000;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn kv_bool(k: &str, v: bool) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::BoolValue(v)),
        }),
        ..Default::default()
    }
}

fn resource() -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", "claude-code"),
            kv("service.version", "2.0.14"),
        ],
        ..Default::default()
    }
}

/// One Claude Code event as its OTLP log exporter sends it.
fn event(name: &str, at_ms: u64, attrs: &[(&str, &str)]) -> LogRecord {
    let mut attributes = vec![
        kv("session.id", SESSION),
        kv("event.name", name),
        kv("event.timestamp", "2025-11-24T16:00:00.000Z"),
        kv("user.id", "u1"),
    ];
    attributes.extend(attrs.iter().map(|(k, v)| kv(k, v)));
    LogRecord {
        time_unix_nano: T0 + at_ms * 1_000_000,
        observed_time_unix_nano: T0 + at_ms * 1_000_000,
        severity_number: 9,
        body: Some(AnyValue {
            value: Some(Value::StringValue(format!("claude_code.{name}"))),
        }),
        attributes,
        ..Default::default()
    }
}

fn logs() -> ExportLogsServiceRequest {
    let records = vec![
        event(
            "user_prompt",
            0,
            &[("prompt_length", "31"), ("prompt.id", "p1")],
        ),
        event(
            "api_request",
            900,
            &[
                ("model", "claude-sonnet-4-5-20250929"),
                ("cost_usd", "0.0125"),
                ("duration_ms", "850"),
                ("input_tokens", "12"),
                ("output_tokens", "40"),
                ("cache_read_tokens", "14336"),
                ("cache_creation_tokens", "1024"),
            ],
        ),
        event(
            "tool_result",
            1500,
            &[
                ("tool_name", "Bash"),
                ("success", "true"),
                ("duration_ms", "400"),
            ],
        ),
        event(
            "tool_result",
            1800,
            &[
                ("tool_name", "Read"),
                ("success", "false"),
                ("error", "File does not exist."),
            ],
        ),
        event(
            "api_request",
            2600,
            &[
                ("model", "claude-sonnet-4-5-20250929"),
                ("cost_usd", "0.0075"),
                ("input_tokens", "30"),
                ("output_tokens", "25"),
                ("cache_read_tokens", "15360"),
                ("cache_creation_tokens", "0"),
            ],
        ),
        event(
            "user_prompt",
            10_000,
            &[("prompt_length", "12"), ("prompt.id", "p2")],
        ),
        event(
            "api_request",
            10_900,
            &[
                ("model", "claude-sonnet-4-5-20250929"),
                ("cost_usd", "0.005"),
                ("input_tokens", "8"),
                ("output_tokens", "60"),
                ("cache_read_tokens", "16000"),
                ("cache_creation_tokens", "0"),
            ],
        ),
        event(
            "tool_result",
            11_500,
            &[("tool_name", "Edit"), ("success", "true")],
        ),
    ];
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource()),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct Tracer {
    spans: Vec<Span>,
}

impl Tracer {
    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        trace: u8,
        id: u8,
        parent: Option<u8>,
        name: &str,
        from_ms: u64,
        to_ms: u64,
        attrs: Vec<KeyValue>,
        ok: bool,
    ) {
        let mut attributes = vec![kv("session.id", SESSION)];
        attributes.extend(attrs);
        self.spans.push(Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            kind: 1,
            start_time_unix_nano: T0 + from_ms * 1_000_000,
            end_time_unix_nano: T0 + to_ms * 1_000_000,
            attributes,
            status: Some(Status {
                code: if ok {
                    StatusCode::Ok
                } else {
                    StatusCode::Error
                } as i32,
                message: if ok {
                    String::new()
                } else {
                    "File does not exist.".into()
                },
            }),
            ..Default::default()
        });
    }
}

fn llm(input: &str, output: &str) -> Vec<KeyValue> {
    vec![
        kv("model", "claude-sonnet-4-5-20250929"),
        kv("gen_ai.system", "anthropic"),
        kv("gen_ai.request.model", "claude-sonnet-4-5-20250929"),
        kv("input_tokens", input),
        kv("output_tokens", output),
        kv("cache_read_tokens", "14336"),
        kv("cache_creation_tokens", "0"),
        kv("ttft_ms", "300"),
    ]
}

fn tool(name: &str, id: &str) -> Vec<KeyValue> {
    vec![
        kv("tool_name", name),
        kv("tool_use_id", id),
        kv("gen_ai.tool.call.id", id),
    ]
}

/// Two prompts, so two traces: the first with two model calls, Bash and a failed Read (the failure on
/// the `claude_code.tool.execution` child), the second with one model call and Edit.
fn traces() -> ExportTraceServiceRequest {
    let mut t = Tracer { spans: Vec::new() };
    t.span(
        0xa1,
        1,
        None,
        "claude_code.interaction",
        0,
        3000,
        vec![
            kv("user_prompt_length", "31"),
            kv("interaction.sequence", "1"),
        ],
        true,
    );
    t.span(
        0xa1,
        2,
        Some(1),
        "claude_code.llm_request",
        50,
        900,
        llm("12", "40"),
        true,
    );
    t.span(
        0xa1,
        3,
        Some(1),
        "claude_code.tool",
        1000,
        1500,
        tool("Bash", "toolu_1"),
        true,
    );
    t.span(
        0xa1,
        4,
        Some(3),
        "claude_code.tool.blocked_on_user",
        1000,
        1100,
        vec![kv("decision", "accept")],
        true,
    );
    t.span(
        0xa1,
        5,
        Some(3),
        "claude_code.tool.execution",
        1100,
        1500,
        vec![kv_bool("success", true)],
        true,
    );
    t.span(
        0xa1,
        6,
        Some(1),
        "claude_code.tool",
        1600,
        1800,
        tool("Read", "toolu_2"),
        true,
    );
    t.span(
        0xa1,
        7,
        Some(6),
        "claude_code.tool.execution",
        1600,
        1800,
        vec![
            kv_bool("success", false),
            kv("error", "File does not exist."),
        ],
        false,
    );
    t.span(
        0xa1,
        8,
        Some(1),
        "claude_code.llm_request",
        1900,
        2600,
        llm("30", "25"),
        true,
    );
    t.span(
        0xa2,
        11,
        None,
        "claude_code.interaction",
        10_000,
        12_000,
        vec![
            kv("user_prompt_length", "12"),
            kv("interaction.sequence", "2"),
        ],
        true,
    );
    t.span(
        0xa2,
        12,
        Some(11),
        "claude_code.llm_request",
        10_050,
        10_900,
        llm("8", "60"),
        true,
    );
    t.span(
        0xa2,
        13,
        Some(11),
        "claude_code.tool",
        11_000,
        11_500,
        tool("Edit", "toolu_3"),
        true,
    );
    t.span(
        0xa2,
        14,
        Some(13),
        "claude_code.tool.execution",
        11_000,
        11_500,
        vec![kv_bool("success", true)],
        true,
    );
    common::traces_request(Some(resource()), t.spans)
}

async fn post(server: &TestServer, path: &str, content_type: &str, body: Vec<u8>) {
    let resp = reqwest::Client::new()
        .post(server.otlp_http(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("OTLP/HTTP export");
    let status = resp.status();
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        resp.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn logs_and_traces_land_in_one_session() {
    let server = TestServer::start().await;
    // Logs as http/json, traces as http/protobuf: two of the protocols Claude Code can be set to.
    post(
        &server,
        "/v1/logs",
        "application/json",
        serde_json::to_vec(&logs()).unwrap(),
    )
    .await;
    post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        traces().encode_to_vec(),
    )
    .await;

    let list = server.get_json("/api/sessions").await;
    assert_eq!(
        list["total"], 1,
        "everything groups under session.id: {list}"
    );
    let v = server.get_json(&format!("/api/sessions/{SESSION}")).await;
    let row = &v["session"];
    assert_eq!(row["service"], "claude-code");
    assert_eq!(row["traces"], 2, "one trace per prompt");
    assert_eq!(row["runs"], 2, "one interaction per prompt");
    assert_eq!(row["logs"], 8);
    assert_eq!(
        row["tool_calls"], 3,
        "claude_code.tool spans; tool_result events describe the same calls"
    );
    assert_eq!(row["tool_errors"], 1, "the failed Read");
    assert_eq!(row["status"], "finished");
    // Tokens from the model-call spans (not again from the api_request events), cost from the events.
    assert_eq!(row["usage"]["input_tokens"], 12 + 30 + 8);
    assert_eq!(row["usage"]["output_tokens"], 40 + 25 + 60);
    let cost = row["usage"]["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.025).abs() < 1e-9, "cost {cost}");
    let names: Vec<String> = v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["attributes"]["event.name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "tool_result").count(), 3);
    server.stop().await;
}

#[tokio::test]
async fn log_events_alone_give_tools_errors_tokens_and_cost() {
    let server = TestServer::start().await;
    post(
        &server,
        "/v1/logs",
        "application/x-protobuf",
        logs().encode_to_vec(),
    )
    .await;
    let v = server.get_json(&format!("/api/sessions/{SESSION}")).await;
    let row = &v["session"];
    // Log events alone never say a session ended; these are a year old, far past the idle time.
    assert_eq!(row["status"], "finished");
    assert_eq!(row["tool_calls"], 3);
    assert_eq!(row["tool_errors"], 1);
    assert_eq!(row["usage"]["output_tokens"], 40 + 25 + 60);
    assert_eq!(row["usage"]["cache_read_tokens"], 14336 + 15360 + 16000);
    let cost = row["usage"]["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.025).abs() < 1e-9, "cost {cost}");
    let events: Vec<&str> = v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["body"].as_str().unwrap())
        .collect();
    assert_eq!(events[0], "claude_code.user_prompt");
    server.stop().await;
}

#[tokio::test]
async fn traces_alone_count_the_failed_execution() {
    let server = TestServer::start().await;
    post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        traces().encode_to_vec(),
    )
    .await;
    let row = server.get_json(&format!("/api/sessions/{SESSION}")).await["session"].clone();
    assert_eq!(row["tool_calls"], 3);
    assert_eq!(
        row["tool_errors"], 1,
        "from the claude_code.tool.execution child"
    );
    assert_eq!(row["runs"], 2);
    assert_eq!(row["usage"]["output_tokens"], 125);
    server.stop().await;
}
