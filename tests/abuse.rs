//! Abuse: hostile or absurd input against a real server. Each case gets a correct answer (stored, or a
//! 4xx naming the problem), never a crash or a stack overflow, and a normal client still gets through.

mod common;

use aotel::model::{
    any_value::Value, attrs::kv_str, AnyValue, ExportTraceServiceRequest, KeyValue, Span,
};
use common::TestServer;
use prost::Message;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const TRACE: [u8; 16] = [0xab; 16];

fn span(trace: [u8; 16], n: u64, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: n.to_be_bytes().to_vec(),
        name: format!("abuse {n}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_001_000_000_000,
        attributes,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    common::traces_request(None, spans)
}

async fn post(server: &TestServer, ctype: &str, body: Vec<u8>) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(server.otlp_http("/v1/traces"))
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .expect("POST /v1/traces");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let text = if ctype == "application/json" {
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        aotel::receiver::http::RpcStatus::decode(bytes.as_ref())
            .map(|s| s.message)
            .unwrap_or_default()
    };
    (status, text)
}

/// A normal export is accepted and readable: the server is alive and not starved.
async fn still_serves(server: &TestServer, n: u64) {
    let trace = [n as u8 | 0x10; 16];
    let body = request(vec![span(trace, n, vec![kv_str("k", "v")])]).encode_to_vec();
    let (status, text) = post(server, "application/x-protobuf", body).await;
    assert_eq!(status, 200, "a normal export after abuse: {text}");
    let trace = server
        .get_json(&format!("/api/trace/{}", const_hex::encode(trace)))
        .await;
    assert!(trace.to_string().contains(&format!("abuse {n}")));
}

// --- protobuf by hand, so that a 10,000-level value never goes through a recursive encoder ---------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(tag: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 8);
    varint(((tag << 3) | 2) as u64, &mut out);
    varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// An AnyValue nested `depth` times, alternating kvlist and array.
fn nested_any_value_pb(depth: usize) -> Vec<u8> {
    let mut v = field(1, b"leaf"); // AnyValue.string_value
    for level in 0..depth {
        v = if level % 2 == 0 {
            // AnyValue.kvlist_value(6) { values(1): KeyValue { key(1), value(2) } }
            let kv = [field(1, b"k"), field(2, &v)].concat();
            field(6, &field(1, &kv))
        } else {
            // AnyValue.array_value(5) { values(1): AnyValue }
            field(5, &field(1, &v))
        };
    }
    v
}

/// A whole request whose one span carries attribute `deep` = the nested value.
fn nested_request_pb(depth: usize, trace: [u8; 16]) -> Vec<u8> {
    let mut span_bytes = span(trace, 1, vec![]).encode_to_vec();
    let kv = [field(1, b"deep"), field(2, &nested_any_value_pb(depth))].concat();
    span_bytes.extend(field(9, &kv)); // Span.attributes: repeated fields concatenate
    field(1, &field(2, &field(2, &span_bytes))) // request.resource_spans.scope_spans.spans
}

fn nested_any_value_json(depth: usize) -> String {
    let mut v = String::from(r#"{"stringValue":"leaf"}"#);
    for level in 0..depth {
        v = if level % 2 == 0 {
            format!(r#"{{"kvlistValue":{{"values":[{{"key":"k","value":{v}}}]}}}}"#)
        } else {
            format!(r#"{{"arrayValue":{{"values":[{v}]}}}}"#)
        };
    }
    v
}

fn nested_request_json(depth: usize, trace: [u8; 16]) -> String {
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"{}","spanId":"0000000000000001","name":"abuse 1","startTimeUnixNano":"1","endTimeUnixNano":"2","attributes":[{{"key":"deep","value":{}}}]}}]}}]}}]}}"#,
        const_hex::encode(trace),
        nested_any_value_json(depth)
    )
}

#[tokio::test]
async fn deeply_nested_values_are_refused_or_stored_never_a_crash() {
    let server = TestServer::start().await;

    // 10,000 levels: prost's recursion limit (100) refuses it with a 400 naming the problem.
    let (status, text) = post(
        &server,
        "application/x-protobuf",
        nested_request_pb(10_000, [0x01; 16]),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("recursion limit"), "{text}");

    // serde_json's depth limit (128) does the same for OTLP/JSON.
    let (status, text) = post(
        &server,
        "application/json",
        nested_request_json(10_000, [0x02; 16]).into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("recursion limit"), "{text}");

    // Nesting under the limits is stored and read back through the query API. (prost counts messages:
    // each kvlist level is three, each array level two, so ~40 value levels already reach 100.)
    let trace = [0x03; 16];
    let (status, text) = post(
        &server,
        "application/x-protobuf",
        nested_request_pb(20, trace),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let trace = [0x04; 16];
    let (status, text) = post(
        &server,
        "application/json",
        nested_request_json(20, trace).into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    for trace in [[0x03u8; 16], [0x04; 16]] {
        let url = server.url(&format!("/api/trace/{}", const_hex::encode(trace)));
        let resp = reqwest::get(url).await.expect("GET trace");
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.text().await.expect("text").contains("leaf"));
    }
    still_serves(&server, 1).await;
}

#[tokio::test]
async fn ten_thousand_attributes_on_one_span_are_stored() {
    let server = TestServer::start().await;
    let attrs = (0..10_000)
        .map(|i| kv_str(&format!("attr.{i:05}"), format!("value {i}")))
        .collect();
    let body = request(vec![span(TRACE, 7, attrs)]).encode_to_vec();
    let (status, text) = post(&server, "application/x-protobuf", body).await;
    assert_eq!(status, 200, "{text}");
    let trace = server
        .get_json(&format!("/api/trace/{}", const_hex::encode(TRACE)))
        .await
        .to_string();
    assert!(trace.contains("attr.00000") && trace.contains("attr.09999"));
    assert_eq!(trace.matches("\"attr.0").count(), 10_000);
    still_serves(&server, 2).await;
}

#[tokio::test]
async fn megabyte_attribute_values_are_truncated_with_a_marker() {
    let server = TestServer::start().await;
    let big = "é".repeat(512 * 1024); // 1 MiB of two-byte characters: the cut must respect them
    let bytes_value = KeyValue {
        key: "blob".into(),
        value: Some(AnyValue {
            value: Some(Value::BytesValue(vec![7u8; 1 << 20])),
        }),
        ..Default::default()
    };
    let body = request(vec![span(TRACE, 8, vec![kv_str("big", big), bytes_value])]).encode_to_vec();
    let (status, text) = post(&server, "application/x-protobuf", body).await;
    assert_eq!(status, 200, "{text}");

    let v3 = server
        .get_json(&format!("/api/v3/traces/{}", const_hex::encode(TRACE)))
        .await;
    let attrs = v3["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
        .as_array()
        .unwrap_or_else(|| panic!("attributes in {v3}"))
        .clone();
    let get = |k: &str| {
        attrs
            .iter()
            .find(|a| a["key"] == k)
            .map(|a| a["value"].clone())
            .unwrap_or_else(|| panic!("attribute {k} missing"))
    };
    let limit = aotel::store::StoreOptions::default().max_attribute_bytes;
    let kept = get("big")["stringValue"].as_str().expect("string").len();
    assert!(kept <= limit && kept > limit - 4, "kept {kept} bytes");
    assert_eq!(get("ao.truncated")["boolValue"], true);
    assert_eq!(get("ao.original_length.big")["intValue"], "1048576");
    assert_eq!(get("ao.original_length.blob")["intValue"], "1048576");
    still_serves(&server, 3).await;
}

#[tokio::test]
async fn invalid_utf8_in_protobuf_strings_is_a_400_naming_it() {
    let server = TestServer::start().await;
    let mut bytes = request(vec![span(TRACE, 9, vec![kv_str("k", "MARKER")])]).encode_to_vec();
    let at = bytes
        .windows(6)
        .position(|w| w == b"MARKER")
        .expect("marker");
    bytes[at + 2] = 0xff; // not UTF-8
    let (status, text) = post(&server, "application/x-protobuf", bytes).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("UTF-8"), "{text}");
    // Nothing of the refused request was stored.
    let resp = reqwest::get(server.url(&format!("/api/trace/{}", const_hex::encode(TRACE))))
        .await
        .expect("GET");
    assert_eq!(resp.status().as_u16(), 404);
    still_serves(&server, 4).await;
}

/// Many connections that dribble a request's headers one byte at a time hold a task each, not a
/// thread: a normal client is served meanwhile.
#[tokio::test]
async fn slow_loris_connections_do_not_starve_a_normal_client() {
    let server = TestServer::start().await;
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nX-Slow: ",
        server.http
    );
    let mut loris = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(server.http)
            .await
            .expect("connect");
        s.write_all(head.as_bytes()).await.expect("write head");
        loris.push(s);
    }
    // Keep dribbling while the normal client works.
    let dribble = tokio::spawn(async move {
        loop {
            for s in loris.iter_mut() {
                if s.write_all(b"a").await.is_err() {
                    return loris.len();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    for n in 10..20 {
        // Bounded so that starvation fails the test instead of hanging it.
        tokio::time::timeout(Duration::from_secs(30), still_serves(&server, n))
            .await
            .expect("a normal export completes while 300 slow connections are open");
    }
    dribble.abort();
}

/// The same on the gRPC port: connections that dribble the HTTP/2 connection preface hold a task each;
/// a gRPC client's exports go through meanwhile.
#[tokio::test]
async fn slow_http2_prefaces_do_not_starve_a_grpc_client() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let server = TestServer::start().await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut loris = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(server.grpc)
            .await
            .expect("connect");
        s.write_all(&preface[..4]).await.expect("write");
        loris.push(s);
    }
    let dribble = tokio::spawn(async move {
        for i in 4..preface.len() {
            for s in loris.iter_mut() {
                let _ = s.write_all(&preface[i..i + 1]).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        loris
    });
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .expect("gRPC connect");
    for n in 40..50u64 {
        let trace = [n as u8; 16];
        let req = request(vec![span(trace, n, vec![kv_str("k", "v")])]);
        tokio::time::timeout(Duration::from_secs(30), client.export(req))
            .await
            .expect("an export completes while 300 slow connections are open")
            .expect("export accepted");
    }
    let trace = server
        .get_json(&format!("/api/trace/{}", const_hex::encode([49u8; 16])))
        .await;
    assert!(trace.to_string().contains("abuse 49"), "{trace}");
    dribble.abort();
}

/// And the bound: a gRPC connection that has not sent the 24-byte HTTP/2 preface by the timeout (aotel
/// serves with 30 s; here 300 ms) is closed. An established connection is not: a client that waits
/// longer than that before exporting is served.
#[tokio::test]
async fn a_grpc_connection_without_its_preface_is_closed() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().expect("tmp");
    let store = aotel::store::open(&dir.path().join("a.db"), &Default::default()).expect("store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(aotel::receiver::grpc::serve(
        listener,
        store.writer.clone(),
        16 << 20,
        aotel::auth::Tokens::default(),
        None,
        Duration::from_millis(300),
        async {
            let _ = stopped.await;
        },
    ));
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"PRI ").await.expect("write");
    let mut rest = Vec::new();
    // EOF (or a reset) means the server hung up; the bound only turns a failure into an error.
    let hung_up = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut rest)).await;
    assert!(
        hung_up.is_ok(),
        "the connection without a preface was left open"
    );

    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("gRPC connect");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let req = request(vec![span([0x61; 16], 1, vec![kv_str("k", "v")])]);
    client.export(req).await.expect("export after the timeout");
    let _ = stop.send(());
    let _ = server.await;
}

/// The fix for the above at scale: a connection that never finishes its headers is closed once the
/// header timeout passes (aotel serves with 30 s; here 300 ms), instead of holding a socket for ever,
/// and so is an idle keep-alive connection.
#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(aotel::serve::serve_with(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        Duration::from_millis(300),
    ));
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .await
        .expect("write");
    let mut rest = Vec::new();
    // EOF (or a reset) means the server hung up; the bound only turns a failure into an error.
    let hung_up = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut rest)).await;
    assert!(hung_up.is_ok(), "the slow connection was left open");

    // The same timer closes a keep-alive connection left idle after a complete request.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), idle.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the idle connection was left open");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));

    let ok = reqwest::get(format!("http://{addr}/"))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert_eq!(ok, "ok");
    let _ = stop.send(());
    server.await.expect("task").expect("graceful stop");
}

/// Large bodies being read at the same time count against the ingest queue's byte budget as their
/// bytes arrive: past it a request is refused (503 + Retry-After) and the rest of its body is read and
/// dropped, instead of every connection holding up to `--max-request-bytes` in memory.
#[tokio::test]
async fn bodies_being_read_count_against_the_queue_budget() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().expect("tmp");
    let mut config = aotel::Config::with_db(dir.path().join("a.db"));
    config.max_request_bytes = 1 << 20;
    config.store.queue_bytes = 1 << 20;
    let server = TestServer::start_with(config).await;
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        server.http,
        900 << 10
    );
    let part = vec![0u8; 400 << 10];
    // Two requests send 400 KiB of their 900 KiB and stop there: 800 KiB of the 1 MiB budget is held.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(server.http)
            .await
            .expect("connect");
        s.write_all(head.as_bytes()).await.expect("head");
        s.write_all(&part).await.expect("part");
        held.push(s);
    }
    common::eventually("the two partial bodies to be reserved", || async {
        let metrics = server.get_text("/metrics").await;
        let used = metrics
            .lines()
            .find_map(|l| l.strip_prefix("aotel_ingest_queue_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        (used >= (800 << 10) as f64).then_some(())
    })
    .await;

    // A third one does not fit: its whole body goes through (not held), and it is answered 503.
    let mut third = tokio::net::TcpStream::connect(server.http)
        .await
        .expect("connect");
    third.write_all(head.as_bytes()).await.expect("head");
    third
        .write_all(&vec![0u8; 900 << 10])
        .await
        .expect("the whole body is read, not cut off");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), third.read(&mut answer))
        .await
        .expect("an answer")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after:"), "{answer}");

    // Once the stalled clients go away, their room is given back and exports are accepted again.
    drop(held);
    drop(third);
    common::eventually("the budget to be free again", || async {
        let body = request(vec![span([0x51; 16], 1, vec![kv_str("k", "v")])]).encode_to_vec();
        let (status, _) = post(&server, "application/x-protobuf", body).await;
        (status == 200).then_some(())
    })
    .await;
    still_serves(&server, 30).await;
}
