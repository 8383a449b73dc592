//! Grafana Tempo's HTTP API over agent traces ingested through OTLP/HTTP: trace by id in protobuf
//! (decoded with the opentelemetry-proto types) and JSON, search by tags and TraceQL, tag names and
//! values, and bad parameters.

mod common;
mod query_fixture;

use aotel::model::ResourceSpans;
use common::{get_raw, post_otlp_json, TestServer};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;
use query_fixture::*;
use serde_json::{json, Value};

/// `tempopb.TraceByIDResponse`, with its `Trace` read as OTLP `TracesData` (the same wire format).
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
    #[prost(int32, tag = "3")]
    status: i32,
}

async fn server() -> TestServer {
    let server = TestServer::start().await;
    post_otlp_json(&server, &request()).await;
    server
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let (status, ctype, body) = get_raw(server, path, None).await;
    if status != 200 {
        return (
            status,
            Value::String(String::from_utf8_lossy(&body).into_owned()),
        );
    }
    assert!(
        ctype.starts_with("application/json"),
        "{path}: content type {ctype}"
    );
    (
        status,
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e})")),
    )
}

fn count_spans(rs: &[ResourceSpans]) -> usize {
    rs.iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

fn enc(q: &str) -> String {
    let mut out = String::new();
    for b in q.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[tokio::test]
async fn probes_and_build_info() {
    let server = server().await;
    let (status, _, body) = get_raw(&server, "/api/echo", None).await;
    assert_eq!((status, body.as_slice()), (200, &b"echo"[..]));
    let (status, _, body) = get_raw(&server, "/ready", None).await;
    assert_eq!((status, body.as_slice()), (200, &b"ready"[..]));
    let (status, v) = get(&server, "/api/status/buildinfo").await;
    assert_eq!(status, 200);
    assert!(
        v["version"]
            .as_str()
            .is_some_and(|s| s.split('.').count() == 3),
        "{v}"
    );
    for k in ["revision", "branch", "buildUser", "buildDate", "goVersion"] {
        assert!(v[k].is_string(), "{k} in {v}");
    }
}

#[tokio::test]
async fn trace_by_id_in_protobuf_and_json() {
    let server = server().await;
    // v1: tempopb.Trace, which is OTLP TracesData on the wire.
    let (status, ctype, body) = get_raw(
        &server,
        &format!("/api/traces/{T1}"),
        Some("application/protobuf"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/protobuf");
    let trace = TracesData::decode(body.as_slice()).expect("tempopb.Trace decodes as TracesData");
    assert_eq!(count_spans(&trace.resource_spans), 4);
    let resource = trace.resource_spans[0].resource.as_ref().expect("resource");
    assert!(resource
        .attributes
        .iter()
        .any(|kv| kv.key == "service.name"));
    let spans = &trace.resource_spans[0].scope_spans[0].spans;
    assert_eq!(const_hex::encode(&spans[0].span_id), ROOT);
    assert_eq!(spans[0].events.len(), 1);
    let bash = spans
        .iter()
        .find(|s| const_hex::encode(&s.span_id) == BASH)
        .expect("Bash");
    assert_eq!(const_hex::encode(&bash.parent_span_id), ROOT);
    assert_eq!(
        bash.status.as_ref().map(|s| s.message.as_str()),
        Some("Command failed with exit code 2")
    );

    // v2: TraceByIDResponse wrapping the same trace.
    let (status, ctype, body) = get_raw(
        &server,
        &format!("/api/v2/traces/{T2}"),
        Some("application/protobuf"),
    )
    .await;
    assert_eq!((status, ctype.as_str()), (200, "application/protobuf"));
    let resp = TraceByIdResponse::decode(body.as_slice()).expect("TraceByIDResponse");
    assert_eq!(resp.status, 0, "complete");
    let trace = resp.trace.expect("trace");
    assert_eq!(
        trace.resource_spans.len(),
        2,
        "one ResourceSpans per resource"
    );
    assert_eq!(count_spans(&trace.resource_spans), 2);
    let helper = &trace.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(const_hex::encode(&helper.links[0].span_id), BASH);

    // v2 JSON: OTLP/JSON under "trace".
    let (status, v) = get(&server, &format!("/api/v2/traces/{T1}")).await;
    assert_eq!(status, 200);
    let rs: Vec<ResourceSpans> =
        serde_json::from_value(v["trace"]["resourceSpans"].clone()).expect("OTLP/JSON");
    assert_eq!(count_spans(&rs), 4);

    // /api/traces/{id} without protobuf is Jaeger's JSON (the two APIs share the path).
    let (status, v) = get(&server, &format!("/api/traces/{T1}")).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"][0]["traceID"], T1);

    let (status, _, _) =
        get_raw(&server, "/api/v2/traces/0123", Some("application/protobuf")).await;
    assert_eq!(status, 404);
    let (status, _, _) = get_raw(&server, "/api/traces/0123", Some("application/protobuf")).await;
    assert_eq!(status, 404);
    let (status, ctype, body) = get_raw(&server, "/api/v2/traces/xyz", None).await;
    assert_eq!(status, 400);
    assert!(ctype.starts_with("text/plain"));
    assert!(String::from_utf8_lossy(&body).contains("trace id"));
}

async fn search(server: &TestServer, query: &str) -> Value {
    let (status, v) = get(server, &format!("/api/search?{query}")).await;
    assert_eq!(status, 200, "{query}: {v}");
    v
}

fn ids(v: &Value) -> Vec<String> {
    trace_ids(&v["traces"])
}

async fn traceql(server: &TestServer, q: &str) -> Vec<String> {
    ids(&search(server, &format!("q={}", enc(q))).await)
}

#[tokio::test]
async fn search_results_have_tempos_shape() {
    let server = server().await;
    let v = search(
        &server,
        &format!(
            "q={}",
            enc(r#"{ span.gen_ai.tool.name = "Bash" && status = error }"#)
        ),
    )
    .await;
    let traces = v["traces"].as_array().expect("traces");
    assert_eq!(traces.len(), 1);
    let t = &traces[0];
    assert_eq!(t["traceID"], T1);
    assert_eq!(t["rootServiceName"], "ao");
    assert_eq!(t["rootTraceName"], "invoke_agent architect");
    assert_eq!(t["startTimeUnixNano"], BASE.to_string());
    assert_eq!(t["durationMs"], 10_000);
    let set = &t["spanSets"][0];
    assert_eq!(set["matched"], 1);
    assert_eq!(
        t["spanSet"], *set,
        "the deprecated single spanSet repeats the first"
    );
    let span = &set["spans"][0];
    assert_eq!(span["spanID"], BASH);
    assert_eq!(span["name"], "execute_tool Bash");
    assert_eq!(span["startTimeUnixNano"], (BASE + 2 * SEC).to_string());
    assert_eq!(span["durationNanos"], (250 * MS).to_string());
    let attrs = span["attributes"].as_array().expect("attributes");
    assert!(attrs.contains(&json!({ "key": "service.name", "value": { "stringValue": "ao" } })));
    assert!(
        attrs.contains(&json!({ "key": "gen_ai.tool.name", "value": { "stringValue": "Bash" } }))
    );
    assert!(attrs.contains(&json!({ "key": "status", "value": { "stringValue": "error" } })));
    assert!(v["metrics"]["inspectedTraces"].is_number());

    // spss caps spans per spanset; matched still counts them all.
    let v = search(
        &server,
        &format!(
            "q={}&spss=1",
            enc(r#"{ span.gen_ai.operation.name = "execute_tool" }"#)
        ),
    )
    .await;
    let set = &v["traces"][0]["spanSets"][0];
    assert_eq!(set["spans"].as_array().map(Vec::len), Some(1));
    assert_eq!(set["matched"], 2);
    assert_eq!(set["spans"][0]["spanID"], READ, "newest match first");
}

#[tokio::test]
async fn traceql_filters() {
    let server = server().await;
    let t1 = vec![T1.to_string()];
    let t2 = vec![T2.to_string()];
    let both = {
        let mut v = vec![T1.to_string(), T2.to_string()];
        v.sort();
        v
    };
    let none: Vec<String> = vec![];
    assert_eq!(traceql(&server, "{}").await, both);
    assert_eq!(
        traceql(
            &server,
            r#"{ resource.service.name = "ao" && duration > 2s }"#
        )
        .await,
        t1
    );
    assert_eq!(
        traceql(&server, r#"{ resource.service.name = "claude-code" }"#).await,
        t2
    );
    assert_eq!(
        traceql(&server, r#"{ .service.name = "claude-code" }"#).await,
        t2
    );
    assert_eq!(
        traceql(
            &server,
            r#"{ resource.host.name = "devbox" && kind = server }"#
        )
        .await,
        t2
    );
    assert_eq!(
        traceql(&server, r#"{ resource.host.name = "nowhere" }"#).await,
        none
    );
    assert_eq!(
        traceql(
            &server,
            r#"{ span.gen_ai.tool.name = "Read" && duration >= 3s && duration <= 3000ms }"#
        )
        .await,
        t1
    );
    assert_eq!(
        traceql(
            &server,
            r#"{ span.gen_ai.tool.name = "Read" && status = error }"#
        )
        .await,
        none
    );
    assert_eq!(
        traceql(&server, r#"{ .gen_ai.tool.name = "Bash" }"#).await,
        t1
    );
    assert_eq!(
        traceql(&server, r#"{ span.gen_ai.tool.name != "Bash" }"#).await,
        t1
    );
    assert_eq!(
        traceql(
            &server,
            r#"{ name =~ "invoke_agent .*" && kind != internal }"#
        )
        .await,
        t2
    );
    assert_eq!(
        traceql(
            &server,
            r#"{ name !~ "invoke_agent.*|execute_tool.*|chat.*" }"#
        )
        .await,
        t2
    );
    assert_eq!(
        traceql(&server, r#"{ span.gen_ai.usage.output_tokens > 500 }"#).await,
        t1
    );
    assert_eq!(
        traceql(
            &server,
            r#"{ span.gen_ai.usage.output_tokens = 908 && span.ao.cost.usd < 0.1 }"#
        )
        .await,
        t1
    );
    assert_eq!(
        traceql(&server, "{ span.ao.timing.estimated = true }").await,
        t1
    );
    assert_eq!(
        traceql(&server, r#"{ statusMessage =~ ".*exit code 2" }"#).await,
        t1
    );
    assert_eq!(traceql(&server, "{ kind = client }").await, both);
    assert_eq!(
        traceql(
            &server,
            r#"{ status = error } || { span.tool_name = "Grep" }"#
        )
        .await,
        both
    );
    assert_eq!(
        traceql(
            &server,
            r#"{ (kind = client || kind = server) && resource.service.name = "ao" }"#
        )
        .await,
        both
    );

    // Legacy tag search (logfmt), trace-level durations, limits and the time range (seconds).
    assert_eq!(
        ids(&search(&server, &format!("tags={}", enc("gen_ai.tool.name=Bash"))).await),
        t1
    );
    assert_eq!(
        ids(&search(
            &server,
            &format!("tags={}", enc("service.name=claude-code tool_name=Grep"))
        )
        .await),
        t2
    );
    assert_eq!(
        ids(&search(
            &server,
            &format!("tags={}", enc("name=\"execute_tool Read\""))
        )
        .await),
        t1
    );
    assert_eq!(
        ids(&search(&server, &format!("tags={}", enc("status.code=error"))).await),
        t1
    );
    assert_eq!(ids(&search(&server, "minDuration=5s").await), t1);
    assert_eq!(ids(&search(&server, "maxDuration=5s").await), t2);
    assert_eq!(ids(&search(&server, "limit=1").await), t2, "newest first");
    let s = BASE / SEC;
    assert_eq!(
        ids(&search(&server, &format!("start={}&end={}", s + 30, s + 90)).await),
        t2
    );
    assert_eq!(
        ids(&search(&server, &format!("start={s}&end={s}")).await),
        t1
    );
    assert_eq!(
        ids(&search(&server, &format!("start={}&end={}", s + 1000, s + 2000)).await),
        none
    );
}

#[tokio::test]
async fn bad_requests_are_400_with_a_message() {
    let server = server().await;
    for (query, naming) in [
        (
            "q=%7B%20status%20%3D%20error%20%7D%20%7C%20count()%20%3E%201",
            "pipelines",
        ),
        ("q=%7B%20event.name%20%3D%20%22x%22%20%7D", "event.name"),
        ("q=%7B%20status%20%3D%20", "value"),
        ("q=%7B%20duration%20%3E%205%20%7D", "duration"),
        (
            "q=%7B%20span.x%20%3D~%20%22(%22%20%7D",
            "regular expression",
        ),
        ("limit=ten", "limit"),
        ("limit=-3", "limit"),
        ("start=yesterday", "start"),
        ("start=20&end=10", "start"),
        ("minDuration=long", "minDuration"),
        ("spss=x", "spss"),
        ("tags=novalue", "tags"),
        ("tags=status.code%3Dbroken", "status.code"),
    ] {
        let (status, ctype, body) = get_raw(&server, &format!("/api/search?{query}"), None).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{query}: {text}");
        assert!(ctype.starts_with("text/plain"), "{query}");
        assert!(
            text.contains(naming),
            "{query}: {text:?} does not name {naming:?}"
        );
    }
    for path in [
        "/api/search/tags?scope=everything",
        "/api/v2/search/tag/duration/values",
        "/api/v2/search/tag/bogus/values",
        "/api/search/tags?start=x",
    ] {
        let (status, _, body) = get_raw(&server, path, None).await;
        assert_eq!(status, 400, "{path}: {}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test]
async fn tag_names_and_values() {
    let server = server().await;
    let (_, v) = get(&server, "/api/search/tags").await;
    let names = v["tagNames"].as_array().expect("tagNames");
    for k in ["gen_ai.tool.name", "service.name", "host.name", "tool_name"] {
        assert!(names.contains(&json!(k)), "{k} in {v}");
    }
    let (_, v) = get(&server, "/api/search/tags?scope=resource").await;
    assert!(!v["tagNames"]
        .as_array()
        .expect("names")
        .contains(&json!("gen_ai.tool.name")));

    let (_, v) = get(&server, "/api/v2/search/tags").await;
    let scopes = v["scopes"].as_array().expect("scopes");
    let scope = |name: &str| {
        scopes
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("scope {name}"))
    };
    assert!(scope("resource")["tags"]
        .as_array()
        .expect("tags")
        .contains(&json!("service.name")));
    assert!(scope("span")["tags"]
        .as_array()
        .expect("tags")
        .contains(&json!("gen_ai.tool.call.id")));
    assert!(!scope("span")["tags"]
        .as_array()
        .expect("tags")
        .contains(&json!("service.name")));
    assert_eq!(
        scope("intrinsic")["tags"],
        json!(["duration", "kind", "name", "status", "statusMessage"])
    );
    let (_, v) = get(&server, "/api/v2/search/tags?scope=intrinsic").await;
    assert_eq!(v["scopes"].as_array().map(Vec::len), Some(1));

    let (_, v) = get(&server, "/api/search/tag/service.name/values").await;
    assert_eq!(v, json!({ "tagValues": ["ao", "claude-code"] }));
    let (_, v) = get(&server, "/api/search/tag/gen_ai.tool.name/values").await;
    assert_eq!(v, json!({ "tagValues": ["Bash", "Read"] }));
    let (_, v) = get(&server, "/api/v2/search/tag/resource.service.name/values").await;
    assert_eq!(
        v,
        json!({ "tagValues": [{ "type": "string", "value": "ao" }, { "type": "string", "value": "claude-code" }] })
    );
    let (_, v) = get(
        &server,
        "/api/v2/search/tag/span.gen_ai.usage.output_tokens/values",
    )
    .await;
    assert_eq!(
        v,
        json!({ "tagValues": [{ "type": "int", "value": "300" }, { "type": "int", "value": "908" }] })
    );
    let (_, v) = get(&server, "/api/v2/search/tag/status/values").await;
    assert!(v["tagValues"]
        .as_array()
        .expect("values")
        .contains(&json!({ "type": "keyword", "value": "error" })));
    let (_, v) = get(&server, "/api/v2/search/tag/kind/values").await;
    assert!(v["tagValues"]
        .as_array()
        .expect("values")
        .contains(&json!({ "type": "keyword", "value": "server" })));
    // Values narrowed by a TraceQL query; a half-written one (autocomplete) does not filter.
    let q = enc(r#"{ span.gen_ai.tool.name = "Bash" }"#);
    let (_, v) = get(
        &server,
        &format!("/api/v2/search/tag/span.gen_ai.tool.call.id/values?q={q}"),
    )
    .await;
    assert_eq!(
        v,
        json!({ "tagValues": [{ "type": "string", "value": "toolu_01" }] })
    );
    let (_, v) = get(
        &server,
        &format!(
            "/api/v2/search/tag/name/values?q={}",
            enc("{ kind = server && ")
        ),
    )
    .await;
    assert_eq!(v["tagValues"].as_array().map(Vec::len), Some(6));
}
