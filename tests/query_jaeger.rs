//! Jaeger's v1 JSON API and api_v3 over agent traces ingested through OTLP/HTTP: golden responses
//! checked field by field, every search filter, and bad parameters.

mod common;
mod query_fixture;

use common::{get_raw, post_otlp_json, TestServer};
use query_fixture::*;
use serde_json::{json, Value};

async fn server() -> TestServer {
    let server = TestServer::start().await;
    post_otlp_json(&server, &request()).await;
    server
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let (status, ctype, body) = get_raw(server, path, None).await;
    assert!(
        ctype.starts_with("application/json"),
        "{path}: content type {ctype}"
    );
    let v = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e})"));
    (status, v)
}

fn span<'a>(trace: &'a Value, id: &str) -> &'a Value {
    trace["spans"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["spanID"] == id))
        .unwrap_or_else(|| panic!("no span {id} in {trace}"))
}

fn tag<'a>(tags: &'a Value, key: &str) -> Option<&'a Value> {
    tags.as_array()
        .and_then(|t| t.iter().find(|t| t["key"] == key))
}

fn tag_is(tags: &Value, key: &str, kind: &str, value: Value) {
    let t = tag(tags, key).unwrap_or_else(|| panic!("no tag {key} in {tags}"));
    assert_eq!(t["type"], kind, "type of {key}");
    assert_eq!(t["value"], value, "value of {key}");
}

#[tokio::test]
async fn v1_trace_matches_the_jaeger_model() {
    let server = server().await;
    let (status, v) = get(&server, &format!("/api/traces/{T1}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["total"], 0);
    assert_eq!(v["limit"], 0);
    assert_eq!(v["offset"], 0);
    assert_eq!(v["errors"], Value::Null);
    let trace = &v["data"][0];
    assert_eq!(trace["traceID"], T1);
    assert_eq!(trace["spans"].as_array().map(Vec::len), Some(4));

    // The process: one per resource, service name plus the other resource attributes, typed.
    let processes = trace["processes"].as_object().expect("processes map");
    assert_eq!(processes.len(), 1);
    let p1 = &processes["p1"];
    assert_eq!(p1["serviceName"], "ao");
    assert!(
        tag(&p1["tags"], "service.name").is_none(),
        "service.name is the serviceName, not a tag"
    );
    tag_is(&p1["tags"], "service.version", "string", json!("1.2.3"));
    tag_is(&p1["tags"], "host.name", "string", json!("devbox"));
    tag_is(&p1["tags"], "process.pid", "int64", json!(4242));

    // The root: no references, µs times, every value type, scope tags, no span.kind for INTERNAL.
    let root = span(trace, ROOT);
    assert_eq!(root["traceID"], T1);
    assert_eq!(root["operationName"], "invoke_agent architect");
    assert_eq!(root["flags"], 1);
    assert_eq!(root["references"], json!([]));
    assert_eq!(root["startTime"], BASE / 1000);
    assert_eq!(root["duration"], (10 * SEC + 500_123) / 1000);
    assert_eq!(root["processID"], "p1");
    let tags = &root["tags"];
    tag_is(
        tags,
        "gen_ai.agent.name",
        "string",
        json!("local-codebase-researcher"),
    );
    tag_is(tags, "gen_ai.usage.output_tokens", "int64", json!(908));
    tag_is(tags, "ao.cost.usd", "float64", json!(0.0534445));
    tag_is(tags, "ao.timing.estimated", "bool", json!(true));
    tag_is(tags, "ao.big", "int64", json!(BIG.to_string()));
    tag_is(tags, "ao.blob", "binary", json!("AQID"));
    tag_is(tags, "ao.args", "string", json!("[\"-la\",2]"));
    tag_is(tags, "otel.scope.name", "string", json!("ao.agent"));
    tag_is(tags, "otel.scope.version", "string", json!("0.4.0"));
    tag_is(tags, "otel.status_code", "string", json!("OK"));
    assert!(
        tag(tags, "span.kind").is_none(),
        "INTERNAL spans carry no span.kind"
    );
    assert!(tag(tags, "error").is_none());
    assert!(tag(tags, "otel.status_description").is_none());
    // Events become logs: µs timestamp, the name as `event` first, attributes, dropped count.
    let log = &root["logs"][0];
    assert_eq!(log["timestamp"], (BASE + 1_500_000) / 1000);
    assert_eq!(
        log["fields"][0],
        json!({ "key": "event", "type": "string", "value": "gen_ai.user.message" })
    );
    tag_is(
        &log["fields"],
        "gen_ai.prompt",
        "string",
        json!("map the parser"),
    );
    tag_is(&log["fields"], "turn", "int64", json!(1));
    tag_is(
        &log["fields"],
        "otel.event.dropped_attributes_count",
        "int64",
        json!(2),
    );

    // A child: CHILD_OF its parent; CLIENT kind.
    let chat = span(trace, CHAT);
    assert_eq!(
        chat["references"],
        json!([{ "refType": "CHILD_OF", "traceID": T1, "spanID": ROOT }])
    );
    assert_eq!(chat["startTime"], (BASE + 100 * MS) / 1000);
    assert_eq!(chat["duration"], 1_000_000);
    assert!(
        chat.get("flags").is_none(),
        "zero flags are left out, as Jaeger does"
    );
    tag_is(&chat["tags"], "span.kind", "string", json!("client"));
    assert!(
        tag(&chat["tags"], "otel.status_code").is_none(),
        "UNSET status adds no tag"
    );
    assert!(chat.get("logs").is_some_and(|l| l == &json!([])));

    // The failed tool call: status code, error=true, the description; the event's own `event` wins.
    let bash = span(trace, BASH);
    tag_is(&bash["tags"], "otel.status_code", "string", json!("ERROR"));
    tag_is(&bash["tags"], "error", "bool", json!(true));
    tag_is(
        &bash["tags"],
        "otel.status_description",
        "string",
        json!("Command failed with exit code 2"),
    );
    tag_is(&bash["tags"], "gen_ai.tool.name", "string", json!("Bash"));
    let fields = &bash["logs"][0]["fields"];
    assert_eq!(fields.as_array().map(Vec::len), Some(2));
    tag_is(fields, "event", "string", json!("tool failed"));
    assert_eq!(span(trace, READ)["duration"], 3_000_000);

    // Short ids are left-padded; unknown ones are 404, malformed ones 400, both in the envelope.
    let (status, v) = get(&server, "/api/traces/ffff").await;
    assert_eq!((status, &v["errors"][0]["code"]), (404, &json!(404)));
    assert_eq!(v["data"], Value::Null);
    let (status, v) = get(&server, "/api/traces/not-hex").await;
    assert_eq!((status, &v["errors"][0]["code"]), (400, &json!(400)));
    assert!(v["errors"][0]["msg"]
        .as_str()
        .is_some_and(|m| m.contains("traceID")));
}

#[tokio::test]
async fn v1_links_processes_and_catalogue() {
    let server = server().await;
    let (_, v) = get(&server, &format!("/api/traces/{T2}")).await;
    let trace = &v["data"][0];
    let helper = span(trace, HELPER);
    assert_eq!(
        helper["references"],
        json!([{ "refType": "FOLLOWS_FROM", "traceID": T1, "spanID": BASH }])
    );
    tag_is(&helper["tags"], "span.kind", "string", json!("server"));
    tag_is(&helper["tags"], "w3c.tracestate", "string", json!("ao=1"));
    let cc = span(trace, CC);
    assert_eq!(
        cc["references"],
        json!([{ "refType": "CHILD_OF", "traceID": T2, "spanID": HELPER }])
    );
    assert_ne!(cc["processID"], helper["processID"]);
    let processes = trace["processes"].as_object().expect("processes");
    assert_eq!(processes.len(), 2);
    assert_eq!(
        processes[cc["processID"].as_str().unwrap_or("")]["serviceName"],
        "claude-code"
    );
    tag_is(
        &cc["tags"],
        "otel.scope.name",
        "string",
        json!("com.anthropic.claude_code"),
    );
    assert!(
        tag(&cc["tags"], "otel.scope.version").is_none(),
        "empty scope version adds no tag"
    );

    let (_, v) = get(&server, "/api/services").await;
    assert_eq!(v["data"], json!(["ao", "claude-code"]));
    assert_eq!(v["total"], 2);
    let (_, v) = get(&server, "/api/services/ao/operations").await;
    assert_eq!(
        v["data"],
        json!([
            "chat claude-sonnet-4",
            "execute_tool Bash",
            "execute_tool Read",
            "invoke_agent architect",
            "invoke_agent helper"
        ])
    );
    let (_, v) = get(&server, "/api/operations?service=ao").await;
    assert_eq!(v["total"], 5);
    assert!(v["data"].as_array().is_some_and(
        |d| d.contains(&json!({ "name": "chat claude-sonnet-4", "spanKind": "client" }))
    ));
    let (_, v) = get(&server, "/api/operations?service=ao&spanKind=server").await;
    assert_eq!(
        v["data"],
        json!([{ "name": "invoke_agent helper", "spanKind": "server" }])
    );
    let (status, v) = get(&server, "/api/operations?service=ao&spanKind=sideways").await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = get(&server, "/api/operations").await;
    assert_eq!(status, 400);

    let end_ms = (BASE + 120 * SEC) / MS;
    let (_, v) = get(
        &server,
        &format!("/api/dependencies?endTs={end_ms}&lookback=3600000"),
    )
    .await;
    assert_eq!(
        v["data"],
        json!([{ "parent": "ao", "child": "claude-code", "callCount": 1 }])
    );
    let (_, v) = get(
        &server,
        &format!("/api/dependencies?endTs={}&lookback=1000", BASE / MS),
    )
    .await;
    assert_eq!(v["data"], json!([]));
    let (status, _) = get(&server, "/api/dependencies?endTs=yesterday").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn v1_search_filters() {
    let server = server().await;
    let q = |s: &str| format!("/api/traces?{s}");
    let enc = |s: &str| {
        s.replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace(' ', "%20")
            .replace(':', "%3A")
    };
    let found = |path: String| {
        let server = &server;
        async move {
            let (status, v) = get(server, &path).await;
            assert_eq!(status, 200, "{path}: {v}");
            trace_ids(&v["data"])
        }
    };
    let both = {
        let mut v = vec![T1.to_string(), T2.to_string()];
        v.sort();
        v
    };
    assert_eq!(found(q("service=ao")).await, both);
    assert_eq!(found(q("service=claude-code")).await, vec![T2]);
    assert_eq!(found(q("service=nobody")).await, Vec::<String>::new());
    assert_eq!(
        found(q("service=ao&operation=execute_tool%20Bash")).await,
        vec![T1]
    );
    assert_eq!(
        found(q(&format!(
            "service=ao&tags={}",
            enc(r#"{"gen_ai.tool.name":"Bash"}"#)
        )))
        .await,
        vec![T1]
    );
    assert_eq!(
        found(q("service=ao&tag=gen_ai.tool.name:Read")).await,
        vec![T1]
    );
    assert_eq!(
        found(q("service=ao&tag=gen_ai.tool.name:Grep")).await,
        Vec::<String>::new()
    );
    // Conditions hold on one span: Bash's call id is not on the Read span.
    assert_eq!(
        found(q(
            "service=ao&tag=gen_ai.tool.name:Read&tag=gen_ai.tool.call.id:toolu_01"
        ))
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        found(q(
            "service=ao&tag=gen_ai.tool.name:Bash&tag=gen_ai.tool.call.id:toolu_01"
        ))
        .await,
        vec![T1]
    );
    // Typed attributes compare by their text; derived tags come from OTLP fields.
    assert_eq!(
        found(q("service=ao&tag=gen_ai.usage.output_tokens:908")).await,
        vec![T1]
    );
    assert_eq!(
        found(q("service=ao&tag=ao.timing.estimated:true")).await,
        vec![T1]
    );
    assert_eq!(found(q("service=ao&tag=error:true")).await, vec![T1]);
    assert_eq!(
        found(q("service=ao&tag=otel.status_code:ERROR")).await,
        vec![T1]
    );
    assert_eq!(found(q("service=ao&tag=span.kind:server")).await, vec![T2]);
    assert_eq!(
        found(q(
            "service=ao&tag=otel.scope.name:ao.agent&tag=span.kind:client"
        ))
        .await,
        vec![T1]
    );
    // Process (resource) tags.
    assert_eq!(
        found(q(
            "service=ao&tag=host.name:devbox&operation=invoke_agent%20helper"
        ))
        .await,
        vec![T2]
    );
    assert_eq!(
        found(q("service=ao&tag=host.name:elsewhere")).await,
        Vec::<String>::new()
    );
    // Time window (µs) on span start, durations on span duration.
    let us = |ns: u64| ns / 1000;
    assert_eq!(
        found(q(&format!(
            "service=ao&start={}&end={}",
            us(BASE + 30 * SEC),
            us(BASE + 90 * SEC)
        )))
        .await,
        vec![T2]
    );
    assert_eq!(
        found(q(&format!(
            "service=ao&start={}&end={}",
            us(BASE),
            us(BASE + SEC)
        )))
        .await,
        vec![T1]
    );
    assert_eq!(
        found(q("service=ao&minDuration=2.5s&maxDuration=4s")).await,
        vec![T1]
    );
    assert_eq!(
        found(q("service=ao&minDuration=11s")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        found(q("service=ao&limit=1")).await,
        vec![T2],
        "newest first"
    );
    assert_eq!(found(q(&format!("traceID={T1}&traceID={T2}"))).await, both);

    let (_, v) = get(&server, &q(&format!("traceID={T1}&traceID=abcd"))).await;
    assert_eq!(trace_ids(&v["data"]), vec![T1]);
    assert_eq!(v["errors"][0]["traceID"], format!("{:0>32}", "abcd"));

    for bad in [
        "operation=x",
        "service=ao&start=yesterday",
        "service=ao&end=1.5",
        "service=ao&limit=-1",
        "service=ao&limit=many",
        "service=ao&minDuration=5x",
        "service=ao&minDuration=2s&maxDuration=1s",
        "service=ao&tags=notjson",
        "service=ao&tags=%5B1%5D",
        "service=ao&tag=nocolon",
        "traceID=xyz",
    ] {
        let (status, v) = get(&server, &q(bad)).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert_eq!(v["errors"][0]["code"], 400, "{bad}");
        assert!(
            v["errors"][0]["msg"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn api_v3() {
    let server = server().await;
    let (status, v) = get(&server, "/api/v3/services").await;
    assert_eq!(
        (status, &v),
        (200, &json!({ "services": ["ao", "claude-code"] }))
    );
    let (_, v) = get(&server, "/api/v3/operations?service=ao&span_kind=client").await;
    assert_eq!(
        v,
        json!({ "operations": [{ "name": "chat claude-sonnet-4", "spanKind": "client" }] })
    );
    let (_, v) = get(&server, "/api/v3/operations?service=ao&spanKind=server").await;
    assert_eq!(v["operations"][0]["name"], "invoke_agent helper");

    // A trace as OTLP/JSON under "result"; it reads back as the opentelemetry-proto types.
    let (status, v) = get(&server, &format!("/api/v3/traces/{T1}")).await;
    assert_eq!(status, 200, "{v}");
    let rs: Vec<aotel::model::ResourceSpans> =
        serde_json::from_value(v["result"]["resourceSpans"].clone())
            .expect("OTLP/JSON resource spans");
    assert_eq!(rs.len(), 1);
    let spans = &rs[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 4);
    assert_eq!(const_hex::encode(&spans[0].trace_id), T1);
    assert_eq!(spans[0].start_time_unix_nano, BASE);
    assert_eq!(
        rs[0].scope_spans[0].scope.as_ref().map(|s| s.name.as_str()),
        Some("ao.agent")
    );
    let bash = spans
        .iter()
        .find(|s| const_hex::encode(&s.span_id) == BASH)
        .expect("Bash span");
    assert_eq!(bash.status.as_ref().map(|s| s.code), Some(2));
    assert_eq!(
        v["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"],
        T1
    );

    // Not found: grpc-gateway's error shape.
    let (status, v) = get(&server, "/api/v3/traces/0123456789abcdef").await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["httpCode"], 404);
    assert_eq!(v["error"]["grpcCode"], 5);
    assert_eq!(v["error"]["httpStatus"], "Not Found");
    assert!(v["error"]["message"].is_string());

    // Search, parameters in snake_case or camelCase; RFC 3339 times; start_time_max exclusive.
    let window =
        "query.start_time_min=2023-11-14T22:13:20Z&query.start_time_max=2023-11-14T22:15:00Z";
    let (_, v) = get(
        &server,
        &format!("/api/v3/traces?query.service_name=claude-code&{window}"),
    )
    .await;
    let rs: Vec<aotel::model::ResourceSpans> =
        serde_json::from_value(v["result"]["resourceSpans"].clone()).expect("OTLP");
    let n: usize = rs
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    assert_eq!(n, 2, "the whole matching trace T2 is returned");
    let camel = window
        .replace("start_time_min", "startTimeMin")
        .replace("start_time_max", "startTimeMax");
    let attrs = "query.attributes=%7B%22gen_ai.tool.name%22%3A%22Bash%22%7D";
    let (status, v) = get(
        &server,
        &format!("/api/v3/traces?query.serviceName=ao&{camel}&{attrs}&query.searchDepth=5"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let ids: std::collections::BTreeSet<String> = v["result"]["resourceSpans"][0]["scopeSpans"][0]
        ["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| s["traceId"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), vec![T1]);
    let (status, v) = get(
        &server,
        &format!("/api/v3/traces?query.service_name=ao&{window}&query.operation_name=execute_tool%20Bash&query.duration_min=1s"),
    )
    .await;
    assert_eq!(status, 404, "nothing matches: {v}");
    assert_eq!(v["error"]["httpCode"], 404);
    let early = "query.start_time_min=2023-11-14T22:13:20Z&query.start_time_max=2023-11-14T22:13:20.000000001Z";
    let (status, _) = get(
        &server,
        &format!("/api/v3/traces?query.service_name=ao&{early}"),
    )
    .await;
    assert_eq!(status, 200);
    let exact =
        "query.start_time_min=2023-11-14T22:14:00Z&query.start_time_max=2023-11-14T22:14:20Z";
    let (status, _) = get(
        &server,
        &format!("/api/v3/traces?query.service_name=ao&{exact}"),
    )
    .await;
    assert_eq!(
        status, 404,
        "T2's root starts at 22:14:20, and start_time_max is exclusive"
    );

    let (status, v) = get(
        &server,
        &format!("/api/v3/trace-summaries?query.service_name=ao&{window}"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let summaries = v["result"]["summaries"].as_array().expect("summaries");
    assert_eq!(summaries.len(), 2);
    let t1 = summaries
        .iter()
        .find(|s| s["traceId"] == T1)
        .expect("T1 summary");
    assert_eq!(t1["rootServiceName"], "ao");
    assert_eq!(t1["rootOperationName"], "invoke_agent architect");
    assert_eq!(t1["minStartTimeUnixNano"], BASE.to_string());
    assert_eq!(
        t1["maxEndTimeUnixNano"],
        (BASE + 10 * SEC + 500_123).to_string()
    );
    assert_eq!(t1["spanCount"], 4);
    assert_eq!(t1["errorSpanCount"], 1);
    assert_eq!(t1["orphanSpanCount"], 0);
    assert_eq!(
        t1["services"],
        json!([{ "name": "ao", "spanCount": 4, "errorSpanCount": 1 }])
    );
    let t2 = summaries
        .iter()
        .find(|s| s["traceId"] == T2)
        .expect("T2 summary");
    assert_eq!(t2["services"].as_array().map(Vec::len), Some(2));

    for bad in [
        format!("/api/v3/traces?{window}"),
        "/api/v3/traces?query.service_name=ao".to_string(),
        "/api/v3/traces?query.service_name=ao&query.start_time_min=yesterday&query.start_time_max=2023-11-14T22:15:00Z".to_string(),
        format!("/api/v3/traces?query.service_name=ao&{window}&query.duration_min=fast"),
        format!("/api/v3/traces?query.service_name=ao&{window}&query.search_depth=x"),
        format!("/api/v3/traces?query.service_name=ao&{window}&query.attributes=%5B%5D"),
        format!("/api/v3/trace-summaries?query.service_name=ao&{window}&query.raw_traces=maybe"),
        "/api/v3/traces/zz".to_string(),
        "/api/v3/operations".to_string(),
    ] {
        let (status, v) = get(&server, &bad).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert_eq!(v["error"]["httpCode"], 400, "{bad}");
        assert_eq!(v["error"]["grpcCode"], 3, "{bad}");
    }
}
