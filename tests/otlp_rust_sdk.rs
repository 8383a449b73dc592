//! The Rust OpenTelemetry SDK exporting agent-shaped traces and logs over gRPC, HTTP protobuf and HTTP
//! JSON: everything comes back through the API intact, with the session counters right.

mod common;

use common::TestServer;
use opentelemetry::logs::{
    AnyValue as LogValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity,
};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, Context, KeyValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::logs::log_processor_with_async_runtime::BatchLogProcessor;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::{json, Value as Json};

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

fn resource() -> Resource {
    Resource::builder()
        .with_service_name("ao-test")
        .with_attribute(KeyValue::new("deployment.environment", "ci"))
        .build()
}

fn providers(server: &TestServer, t: Transport) -> (SdkTracerProvider, SdkLoggerProvider) {
    let (spans, logs) = match t {
        Transport::Grpc => (
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(server.grpc_url())
                .with_compression(opentelemetry_otlp::Compression::Gzip)
                .build()
                .expect("grpc span exporter"),
            opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(server.grpc_url())
                .build()
                .expect("grpc log exporter"),
        ),
        Transport::HttpProtobuf | Transport::HttpJson => {
            let protocol = match t {
                Transport::HttpJson => Protocol::HttpJson,
                _ => Protocol::HttpBinary,
            };
            (
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(reqwest::Client::new())
                    .with_protocol(protocol)
                    .with_endpoint(server.otlp_http("/v1/traces"))
                    .build()
                    .expect("http span exporter"),
                opentelemetry_otlp::LogExporter::builder()
                    .with_http()
                    .with_http_client(reqwest::Client::new())
                    .with_protocol(protocol)
                    .with_endpoint(server.otlp_http("/v1/logs"))
                    .build()
                    .expect("http log exporter"),
            )
        }
    };
    let tracer_provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(spans, Tokio).build())
        .with_resource(resource())
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_log_processor(BatchLogProcessor::builder(logs, Tokio).build())
        .with_resource(resource())
        .build();
    (tracer_provider, logger_provider)
}

/// One agent run: an invoke_agent root, two tool calls (one failed), two model turns, one log event.
fn record_session(
    tracer_provider: &SdkTracerProvider,
    logger_provider: &SdkLoggerProvider,
    session: &str,
) -> String {
    let tracer = tracer_provider.tracer("aotel-test");
    let root = tracer
        .span_builder("invoke_agent researcher")
        .with_kind(SpanKind::Internal)
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "invoke_agent"),
            KeyValue::new("gen_ai.agent.name", "researcher"),
            KeyValue::new("gen_ai.conversation.id", session.to_string()),
            KeyValue::new("gen_ai.provider.name", "anthropic"),
            KeyValue::new("gen_ai.request.model", "claude-sonnet-4-5"),
            KeyValue::new("ao.cost.usd", 0.25),
            KeyValue::new("ao.num_turns", 2i64),
            KeyValue::new("gen_ai.usage.output_tokens", 999i64),
        ])
        .start(&tracer);
    let trace_id = root.span_context().trace_id().to_string();
    let cx = Context::current_with_span(root);
    for (i, (input, output)) in [(100i64, 20i64), (300, 40)].into_iter().enumerate() {
        let mut chat = tracer
            .span_builder("chat claude-sonnet-4-5")
            .with_kind(SpanKind::Client)
            .with_attributes(vec![
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.conversation.id", session.to_string()),
                KeyValue::new("gen_ai.usage.input_tokens", input),
                KeyValue::new("gen_ai.usage.output_tokens", output),
                KeyValue::new("gen_ai.usage.cache_read.input_tokens", 1000i64),
                KeyValue::new("turn", i as i64),
            ])
            .start_with_context(&tracer, &cx);
        chat.end();
    }
    let mut ok = tracer
        .span_builder("execute_tool Read")
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", "Read"),
            KeyValue::new("gen_ai.tool.call.id", "toolu_read"),
            KeyValue::new("gen_ai.conversation.id", session.to_string()),
            KeyValue::new(
                "gen_ai.tool.call.arguments",
                r#"{"file_path":"/etc/hosts"}"#,
            ),
            KeyValue::new("gen_ai.tool.call.result", "127.0.0.1 localhost"),
            KeyValue::new("flag", true),
            KeyValue::new("ratio", 0.5),
            KeyValue::new(
                "tags",
                Value::Array(Array::String(vec!["a".into(), "b".into()])),
            ),
        ])
        .start_with_context(&tracer, &cx);
    ok.add_event("progress", vec![KeyValue::new("pct", 50i64)]);
    ok.end();
    let mut failed = tracer
        .span_builder("execute_tool Bash")
        .with_attributes(vec![
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", "Bash"),
            KeyValue::new("gen_ai.conversation.id", session.to_string()),
            KeyValue::new("error.type", "exit_code"),
        ])
        .start_with_context(&tracer, &cx);
    failed.set_status(Status::error("Command failed with exit code 1"));
    failed.end();
    cx.span().end();

    let logger = logger_provider.logger("aotel-test");
    let mut record = logger.create_log_record();
    record.set_body(LogValue::from("tool finished"));
    record.set_severity_number(Severity::Info);
    record.set_event_name("aotel.test.event");
    record.add_attribute("session.id", session.to_string());
    record.add_attribute("attempt", 3i64);
    logger.emit(record);
    trace_id
}

fn find<'a>(spans: &'a [Json], name: &str) -> &'a Json {
    fn walk<'a>(spans: &'a [Json], name: &str) -> Option<&'a Json> {
        spans.iter().find_map(|s| {
            if s["name"] == name {
                Some(s)
            } else {
                walk(s["children"].as_array()?, name)
            }
        })
    }
    walk(spans, name).unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}

async fn round_trip(t: Transport) {
    let server = TestServer::start().await;
    let session = format!("session-{t:?}");
    let (tp, lp) = providers(&server, t);
    let trace_id = record_session(&tp, &lp, &session);
    tp.force_flush().expect("flush spans");
    lp.force_flush().expect("flush logs");
    tp.shutdown().expect("shutdown tracer");
    lp.shutdown().expect("shutdown logger");

    let body = server.get_json(&format!("/api/sessions/{session}")).await;
    let s = &body["session"];
    assert_eq!(s["spans"], 5, "{t:?}: {s}");
    assert_eq!(s["runs"], 1);
    assert_eq!(s["tool_calls"], 2);
    assert_eq!(s["tool_errors"], 1);
    assert_eq!(s["agent"], "researcher");
    assert_eq!(s["service"], "ao-test");
    assert_eq!(s["status"], "finished");
    assert_eq!(s["logs"], 1);
    assert_eq!(s["traces"], 1);
    // Model turns are the detailed source of tokens; the agent's own total (999) is not added on top.
    assert_eq!(s["usage"]["input_tokens"], 400);
    assert_eq!(s["usage"]["output_tokens"], 60);
    assert_eq!(s["usage"]["cache_read_tokens"], 2000);
    assert_eq!(s["usage"]["cost_usd"], 0.25);
    assert_eq!(body["traces"], json!([trace_id]));

    let roots = body["spans"].as_array().expect("span tree");
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    let root = &roots[0];
    assert_eq!(root["name"], "invoke_agent researcher");
    assert_eq!(root["children"].as_array().map(Vec::len), Some(4));
    assert_eq!(root["resource"]["service.name"], "ao-test");
    assert_eq!(root["resource"]["deployment.environment"], "ci");
    assert_eq!(root["scope"]["name"], "aotel-test");
    assert_eq!(root["attributes"]["ao.num_turns"], 2);

    let read = find(roots, "execute_tool Read");
    assert_eq!(
        read["attributes"],
        json!({
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "Read",
            "gen_ai.tool.call.id": "toolu_read",
            "gen_ai.conversation.id": session,
            "gen_ai.tool.call.arguments": r#"{"file_path":"/etc/hosts"}"#,
            "gen_ai.tool.call.result": "127.0.0.1 localhost",
            "flag": true,
            "ratio": 0.5,
            "tags": ["a", "b"],
        })
    );
    assert_eq!(read["events"][0]["name"], "progress");
    assert_eq!(read["events"][0]["attributes"]["pct"], 50);
    assert_eq!(read["tool"], "Read");
    assert_eq!(read["status"], "unset");
    let bash = find(roots, "execute_tool Bash");
    assert_eq!(bash["status"], "error");
    assert_eq!(bash["status_message"], "Command failed with exit code 1");
    assert_eq!(find(roots, "chat claude-sonnet-4-5")["kind"], 3);

    let log = &body["logs"][0];
    assert_eq!(log["body"], "tool finished");
    assert_eq!(log["event_name"], "aotel.test.event");
    assert_eq!(log["attributes"]["attempt"], 3);
    assert_eq!(log["severity_number"], 9);

    let trace = server.get_json(&format!("/api/trace/{trace_id}")).await;
    assert_eq!(trace["spans"][0]["span_id"], root["span_id"]);
    let list = server.get_json("/api/sessions?agent=researcher").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["sessions"][0]["key"], session);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_exporter_round_trip() {
    round_trip(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_exporter_round_trip() {
    round_trip(Transport::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_exporter_round_trip() {
    round_trip(Transport::HttpJson).await;
}
