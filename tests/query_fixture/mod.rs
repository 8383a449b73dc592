//! Agent-shaped traces for the Jaeger and Tempo API tests, as OTLP/JSON the way an SDK sends them.
//!
//! Trace T1 (an `ao` session): `invoke_agent architect` (root, internal, OK, an event) with children
//! `chat claude-sonnet-4` (client), `execute_tool Bash` (status ERROR, an event whose attributes carry
//! their own `event` key) and `execute_tool Read` (3 s). Trace T2 (a child session): `invoke_agent
//! helper` (server) linked to T1's Bash span, with a `claude-code` child span (another service).
#![allow(dead_code)]

use serde_json::{json, Value};

pub const T1: &str = "d796e8baef3c453f97d7b644930563f5";
pub const T2: &str = "5f0c2a7e1b9d4c3e8f6a2d4b7e9c1a03";
pub const ROOT: &str = "a1a1a1a1a1a1a1a1";
pub const CHAT: &str = "b2b2b2b2b2b2b2b2";
pub const BASH: &str = "c3c3c3c3c3c3c3c3";
pub const READ: &str = "d4d4d4d4d4d4d4d4";
pub const HELPER: &str = "e5e5e5e5e5e5e5e5";
pub const CC: &str = "f6f6f6f6f6f6f6f6";

/// The `traceID`s of a Jaeger (`data`) or Tempo (`traces`) result list, sorted.
pub fn trace_ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .expect("a list of traces")
        .iter()
        .map(|t| t["traceID"].as_str().unwrap_or("").to_string())
        .collect();
    ids.sort();
    ids
}

/// 2023-11-14T22:13:20Z, in ns.
pub const BASE: u64 = 1_700_000_000_000_000_000;
pub const SEC: u64 = 1_000_000_000;
pub const MS: u64 = 1_000_000;
pub const BIG: i64 = 1 << 60;

fn s(k: &str, v: &str) -> Value {
    json!({ "key": k, "value": { "stringValue": v } })
}

fn i(k: &str, v: i64) -> Value {
    json!({ "key": k, "value": { "intValue": v.to_string() } })
}

fn f(k: &str, v: f64) -> Value {
    json!({ "key": k, "value": { "doubleValue": v } })
}

fn b(k: &str, v: bool) -> Value {
    json!({ "key": k, "value": { "boolValue": v } })
}

fn t(ns: u64) -> String {
    ns.to_string()
}

pub fn t1_spans() -> Value {
    json!([
        {
            "traceId": T1, "spanId": ROOT, "name": "invoke_agent architect", "kind": 1, "flags": 1,
            "startTimeUnixNano": t(BASE), "endTimeUnixNano": t(BASE + 10 * SEC + 500_123),
            "attributes": [
                s("gen_ai.operation.name", "invoke_agent"),
                s("gen_ai.agent.name", "local-codebase-researcher"),
                s("gen_ai.conversation.id", "d796e8ba-ef3c-453f-97d7-b644930563f5"),
                s("gen_ai.request.model", "claude-sonnet-4"),
                i("gen_ai.usage.output_tokens", 908),
                f("ao.cost.usd", 0.0534445),
                b("ao.timing.estimated", true),
                i("ao.big", BIG),
                json!({ "key": "ao.blob", "value": { "bytesValue": "AQID" } }),
                json!({ "key": "ao.args", "value": { "arrayValue": { "values": [
                    { "stringValue": "-la" }, { "intValue": "2" } ] } } }),
            ],
            "events": [{
                "timeUnixNano": t(BASE + 1_500_000), "name": "gen_ai.user.message",
                "attributes": [s("gen_ai.prompt", "map the parser"), i("turn", 1)],
                "droppedAttributesCount": 2
            }],
            "status": { "code": 1 }
        },
        {
            "traceId": T1, "spanId": CHAT, "parentSpanId": ROOT, "name": "chat claude-sonnet-4", "kind": 3,
            "startTimeUnixNano": t(BASE + 100 * MS), "endTimeUnixNano": t(BASE + 1_100 * MS),
            "attributes": [
                s("gen_ai.operation.name", "chat"),
                i("gen_ai.usage.input_tokens", 1200),
                i("gen_ai.usage.output_tokens", 300),
            ]
        },
        {
            "traceId": T1, "spanId": BASH, "parentSpanId": ROOT, "name": "execute_tool Bash", "kind": 1,
            "startTimeUnixNano": t(BASE + 2 * SEC), "endTimeUnixNano": t(BASE + 2 * SEC + 250 * MS),
            "attributes": [
                s("gen_ai.operation.name", "execute_tool"),
                s("gen_ai.tool.name", "Bash"),
                s("gen_ai.tool.call.id", "toolu_01"),
                s("gen_ai.tool.call.arguments", "{\"command\":\"make\"}"),
                s("error.type", "tool_error"),
            ],
            "events": [{
                "timeUnixNano": t(BASE + 2 * SEC + 200 * MS), "name": "exception",
                "attributes": [s("event", "tool failed"), s("exception.message", "exit status 2")]
            }],
            "status": { "code": 2, "message": "Command failed with exit code 2" }
        },
        {
            "traceId": T1, "spanId": READ, "parentSpanId": ROOT, "name": "execute_tool Read", "kind": 1,
            "startTimeUnixNano": t(BASE + 3 * SEC), "endTimeUnixNano": t(BASE + 6 * SEC),
            "attributes": [
                s("gen_ai.operation.name", "execute_tool"),
                s("gen_ai.tool.name", "Read"),
                s("gen_ai.tool.call.id", "toolu_02"),
            ],
            "status": { "code": 1 }
        }
    ])
}

pub fn t2_ao_spans() -> Value {
    json!([{
        "traceId": T2, "spanId": HELPER, "name": "invoke_agent helper", "kind": 2,
        "startTimeUnixNano": t(BASE + 60 * SEC), "endTimeUnixNano": t(BASE + 61 * SEC),
        "attributes": [
            s("gen_ai.operation.name", "invoke_agent"),
            s("gen_ai.agent.name", "helper"),
            s("ao.parent_session.id", "d796e8ba-ef3c-453f-97d7-b644930563f5"),
        ],
        "links": [{ "traceId": T1, "spanId": BASH, "attributes": [s("link.kind", "parent_session")] }],
        "traceState": "ao=1"
    }])
}

pub fn t2_cc_spans() -> Value {
    json!([{
        "traceId": T2, "spanId": CC, "parentSpanId": HELPER, "name": "claude_code.tool", "kind": 3,
        "startTimeUnixNano": t(BASE + 60 * SEC + 100 * MS), "endTimeUnixNano": t(BASE + 60 * SEC + 300 * MS),
        "attributes": [s("tool_name", "Grep")]
    }])
}

/// The whole export request: two resources (`ao`, `claude-code`), scoped spans.
pub fn request() -> Value {
    let mut ao_spans = t1_spans().as_array().cloned().unwrap_or_default();
    ao_spans.extend(t2_ao_spans().as_array().cloned().unwrap_or_default());
    json!({ "resourceSpans": [
        {
            "resource": { "attributes": [
                s("service.name", "ao"), s("service.version", "1.2.3"), s("host.name", "devbox"),
                i("process.pid", 4242),
            ] },
            "scopeSpans": [{ "scope": { "name": "ao.agent", "version": "0.4.0" }, "spans": ao_spans }]
        },
        {
            "resource": { "attributes": [s("service.name", "claude-code")] },
            "scopeSpans": [{ "scope": { "name": "com.anthropic.claude_code" }, "spans": t2_cc_spans() }]
        }
    ]})
}
