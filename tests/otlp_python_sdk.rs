//! The Python OpenTelemetry SDK (`opentelemetry-sdk` with its OTLP gRPC and HTTP exporters, installed by
//! .ci/run) sends a session from a real script; the API gives it back intact.

mod common;

use common::TestServer;
use std::process::Command;

fn send(transport: &str, endpoint: &str, session: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/send_otlp.py");
    let out = Command::new("python3")
        .args([script, transport, endpoint, session])
        .output()
        .expect("python3 must be installed (CI installs the packages from tests/requirements.txt)");
    assert!(
        out.status.success(),
        "send_otlp.py {transport} failed (are tests/requirements.txt installed?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn check(server: &TestServer, session: &str, trace_id: &str) {
    let body = server.get_json(&format!("/api/sessions/{session}")).await;
    let s = &body["session"];
    assert_eq!(s["service"], "ao-python");
    assert_eq!(s["agent"], "planner");
    assert_eq!(s["spans"], 3, "{s}");
    assert_eq!(s["tool_calls"], 2);
    assert_eq!(s["tool_errors"], 1);
    assert_eq!(s["runs"], 1);
    assert_eq!(s["logs"], 1);
    assert_eq!(s["status"], "finished");
    assert_eq!(s["usage"]["output_tokens"], 70);
    assert_eq!(s["usage"]["cost_usd"], 0.125);
    assert_eq!(body["traces"][0], trace_id);
    let root = &body["spans"][0];
    assert_eq!(root["scope"]["version"], "1.2.3");
    assert_eq!(root["resource"]["host.name"], "ci");
    let grep = root["children"]
        .as_array()
        .and_then(|c| c.iter().find(|s| s["tool"] == "Grep"))
        .expect("Grep span under the root");
    assert_eq!(grep["attributes"]["lines"], serde_json::json!([1, 2, 3]));
    assert_eq!(
        grep["attributes"]["gen_ai.tool.call.result"],
        "src/main.rs:1: // TODO"
    );
    let log = &body["logs"][0];
    assert_eq!(log["body"], "tool done");
    assert_eq!(log["attributes"]["tool"], "Grep");
    // The logging handler records the active span, so the log links to the trace.
    assert_eq!(log["trace_id"], trace_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_grpc_and_http() {
    let server = TestServer::start().await;
    let grpc = server.grpc_url();
    let http = format!("http://{}", server.http);
    let t1 = tokio::task::spawn_blocking(move || send("grpc", &grpc, "py-grpc"))
        .await
        .expect("join");
    let t2 = tokio::task::spawn_blocking(move || send("http", &http, "py-http"))
        .await
        .expect("join");
    check(&server, "py-grpc", &t1).await;
    check(&server, "py-http", &t2).await;
    let list = server.get_json("/api/sessions?service=ao-python").await;
    assert_eq!(list["total"], 2);
    server.stop().await;
}
