//! OTLP receiver edges over real sockets: upstream example files, every kind of bad input, partial
//! success, decompression limits and backpressure. Nothing acknowledged is missing; nothing refused is kept.

mod common;

use aotel::model::{
    attrs::kv_str, ExportLogsServiceRequest, ExportTraceServiceRequest, LogRecord, ResourceLogs,
    ScopeLogs, Span,
};
use aotel::store::body::{SpanRow, SPAN_COLUMNS};
use aotel::Config;
use common::TestServer;
use flate2::{write::GzEncoder, Compression};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::Write;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/examples");

fn span(trace: u8, span: u8, name: &str) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![span; 8],
        name: name.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_001_000_000_000,
        attributes: vec![kv_str("gen_ai.conversation.id", format!("s-{trace}"))],
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    let resource = aotel::model::Resource {
        attributes: vec![kv_str("service.name", "edge")],
        ..Default::default()
    };
    common::traces_request(Some(resource), spans)
}

async fn post(
    server: &TestServer,
    path: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .post(server.otlp_http(path))
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.expect("POST");
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.expect("body").to_vec())
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

async fn stored_spans(server: &TestServer, session: &str) -> i64 {
    let resp = reqwest::get(server.url(&format!("/api/sessions/{session}")))
        .await
        .expect("GET");
    if resp.status() == StatusCode::NOT_FOUND {
        return 0;
    }
    resp.json::<Value>().await.expect("json")["session"]["spans"]
        .as_i64()
        .unwrap_or(0)
}

#[tokio::test]
async fn upstream_examples_decode_and_rebuild_the_same_otlp() {
    let server = TestServer::start().await;
    let traces = std::fs::read(format!("{EXAMPLES}/trace.json")).expect("trace.json");
    let logs = std::fs::read(format!("{EXAMPLES}/logs.json")).expect("logs.json");
    let (status, _, body) = post(
        &server,
        "/v1/traces",
        "application/json",
        None,
        traces.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body), json!({}));
    let (status, _, body) = post(
        &server,
        "/v1/logs",
        "application/json; charset=utf-8",
        None,
        logs.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (db, _dir) = server.stop().await;

    let want_traces: ExportTraceServiceRequest =
        serde_json::from_slice(&traces).expect("example decodes");
    let want_logs: ExportLogsServiceRequest =
        serde_json::from_slice(&logs).expect("example decodes");
    let store = aotel::store::open(&db, &Default::default()).expect("reopen");
    let trace_id = want_traces.resource_spans[0].scope_spans[0].spans[0]
        .trace_id
        .clone();
    let spans = store
        .reader
        .trace_spans(trace_id.clone())
        .await
        .expect("spans");
    assert_eq!(
        aotel::store::to_resource_spans(spans),
        want_traces.resource_spans
    );
    let logs = store.reader.trace_logs(trace_id).await.expect("logs");
    assert_eq!(
        aotel::store::to_resource_logs(logs),
        want_logs.resource_logs
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn otlp_json_variants_are_understood() {
    let server = TestServer::start().await;
    // Upper-case hex ids, int64 as a number and as a string, enum as an integer, an unknown field.
    let body = json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "0AF7651916CD43DD8448EB211C80319C",
                "spanId": "B7AD6B7169203331",
                "name": "variants",
                "kind": 3,
                "startTimeUnixNano": 1700000000000000000u64,
                "endTimeUnixNano": "1700000000500000000",
                "attributes": [
                    {"key": "n", "value": {"intValue": "42"}},
                    {"key": "m", "value": {"intValue": 7}},
                    {"key": "gen_ai.conversation.id", "value": {"stringValue": "variants"}}
                ],
                "somethingNew": {"ignored": true}
            }]}]
        }]
    });
    let (status, _, resp) = post(
        &server,
        "/v1/traces",
        "application/json",
        None,
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&resp));
    let got = server
        .get_json("/api/trace/0af7651916cd43dd8448eb211c80319c")
        .await;
    let s = &got["spans"][0];
    assert_eq!(s["span_id"], "b7ad6b7169203331");
    assert_eq!(s["kind"], 3);
    assert_eq!(s["attributes"]["n"], 42);
    assert_eq!(s["attributes"]["m"], 7);
    assert_eq!(s["duration_ms"], 500.0);
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_reason() {
    let server = TestServer::start().await;
    let (status, headers, body) = post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        None,
        vec![0x0a, 0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let rpc = aotel::receiver::http::RpcStatus::decode(body.as_slice()).expect("google.rpc.Status");
    assert_eq!(rpc.code, 3);
    assert!(
        rpc.message
            .contains("invalid protobuf ExportTraceServiceRequest"),
        "{}",
        rpc.message
    );

    let (status, _, body) = post(
        &server,
        "/v1/logs",
        "application/json",
        None,
        b"{\"resourceLogs\": [".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v = json_of(&body);
    assert_eq!(v["code"], 3);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("invalid OTLP/JSON ExportLogsServiceRequest"),
        "{v}"
    );

    let (status, _, body) = post(
        &server,
        "/v1/traces",
        "application/json",
        None,
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#.to_vec(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );

    let (status, _, body) =
        post(&server, "/v1/traces", "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(json_of(&body)["message"]
        .as_str()
        .unwrap_or("")
        .contains("Content-Type"));

    let (status, _, body) = post(
        &server,
        "/v1/traces",
        "application/json",
        Some("br"),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(json_of(&body)["message"]
        .as_str()
        .unwrap_or("")
        .contains("Content-Encoding"));

    let (status, _, body) = post(
        &server,
        "/v1/traces",
        "application/json",
        Some("gzip"),
        b"not gzip at all".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json_of(&body)["message"]
        .as_str()
        .unwrap_or("")
        .contains("gzip"));

    // The server is still healthy and stored nothing.
    let list = server.get_json("/api/sessions").await;
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn invalid_ids_are_rejected_alone_and_the_rest_is_stored() {
    let server = TestServer::start().await;
    let mut zero_trace = span(0, 2, "zero trace id");
    zero_trace.trace_id = vec![0; 16];
    let mut short_span = span(1, 3, "short span id");
    short_span.span_id = vec![3; 7];
    let req = request(vec![
        span(1, 1, "good"),
        zero_trace,
        short_span,
        span(1, 4, "also good"),
    ]);

    // Protobuf over HTTP.
    let (status, _, body) = post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        None,
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let resp = aotel::model::ExportTraceServiceResponse::decode(body.as_slice()).expect("response");
    let partial = resp.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("trace_id is all zeros"),
        "{}",
        partial.error_message
    );
    assert_eq!(stored_spans(&server, "s-1").await, 2);

    // JSON, gzipped.
    let mut req = request(vec![span(5, 1, "good"), span(5, 2, "good too")]);
    req.resource_spans[0].scope_spans[0].spans[1].parent_span_id = vec![9; 3];
    let (status, _, body) = post(
        &server,
        "/v1/traces",
        "application/json",
        Some("gzip"),
        gzip(&serde_json::to_vec(&req).expect("json")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v = json_of(&body);
    assert_eq!(v["partialSuccess"]["rejectedSpans"], 1, "{v}");
    assert!(v["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap_or("")
        .contains("parent_span_id"));
    assert_eq!(stored_spans(&server, "s-5").await, 1);

    // gRPC.
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .expect("connect");
    let mut bad = span(6, 2, "bad");
    bad.span_id.clear();
    let resp = client
        .export(request(vec![span(6, 1, "good"), bad]))
        .await
        .expect("export")
        .into_inner();
    assert_eq!(resp.partial_success.map(|p| p.rejected_spans), Some(1));
    assert_eq!(stored_spans(&server, "s-6").await, 1);

    // Logs: a malformed trace id is rejected, a log without one is fine.
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    LogRecord {
                        trace_id: vec![1; 5],
                        time_unix_nano: 1,
                        ..Default::default()
                    },
                    LogRecord {
                        attributes: vec![kv_str("session.id", "s-logs")],
                        time_unix_nano: 2,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (status, _, body) = post(
        &server,
        "/v1/logs",
        "application/x-protobuf",
        None,
        logs.encode_to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let resp = aotel::model::ExportLogsServiceResponse::decode(body.as_slice()).expect("response");
    assert_eq!(
        resp.partial_success.map(|p| p.rejected_log_records),
        Some(1)
    );
    let session = server.get_json("/api/sessions/s-logs").await;
    assert_eq!(session["session"]["logs"], 1);
}

fn small_limit_config(dir: &tempfile::TempDir) -> Config {
    let mut config = Config::with_db(dir.path().join("aotel.db"));
    config.max_request_bytes = 1 << 20;
    config
}

#[tokio::test]
async fn size_limits_apply_after_decompression() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start_with(small_limit_config(&dir)).await;

    let (status, _, body) = post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        None,
        vec![0u8; (1 << 20) + 1],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let rpc = aotel::receiver::http::RpcStatus::decode(body.as_slice()).expect("status");
    assert_eq!(rpc.code, 8);

    // A gzip bomb: 64 MiB of zeros in ~64 KiB. Refused without inflating it all.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    let (status, _, body) = post(
        &server,
        "/v1/traces",
        "application/json",
        Some("gzip"),
        bomb,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(json_of(&body)["message"]
        .as_str()
        .unwrap_or("")
        .contains("after decompression"));

    // gRPC: an over-limit message, compressed to well under the limit, is RESOURCE_EXHAUSTED.
    let mut big = span(7, 1, "big");
    big.attributes.push(kv_str("blob", "x".repeat(4 << 20)));
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .expect("connect")
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(64 << 20);
    let err = client
        .export(request(vec![big]))
        .await
        .expect_err("over the limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    // Just under the limit is fine, and long attributes are cut with a marker, not silently.
    let mut fits = span(8, 1, "fits");
    fits.attributes
        .push(kv_str("gen_ai.tool.call.result", "y".repeat(600 << 10)));
    let (status, _, _) = post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        None,
        request(vec![fits]).encode_to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let got = server
        .get_json(&format!("/api/trace/{}", "08".repeat(16)))
        .await;
    let attrs = &got["spans"][0]["attributes"];
    assert_eq!(attrs["ao.truncated"], true);
    assert_eq!(
        attrs["ao.original_length.gen_ai.tool.call.result"],
        600 << 10
    );
    assert_eq!(
        attrs["gen_ai.tool.call.result"].as_str().map(str::len),
        Some(256 << 10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_pushes_back_and_never_acknowledges_unstored_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut config = small_limit_config(&dir);
    // Room for about one request at a time.
    config.store.queue_bytes = 300 << 10;
    let server = TestServer::start_with(config).await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let spans: Vec<Span> = (0..800u32)
            .map(|j| {
                let mut s = span(9, 0, "flood");
                s.span_id = (i * 1000 + j + 1).to_be_bytes().repeat(2);
                s.attributes.push(kv_str("payload", "z".repeat(200)));
                s
            })
            .collect();
        let body = request(spans).encode_to_vec();
        let client = client.clone();
        let url = server.otlp_http("/v1/traces");
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .expect("POST");
            (resp.status(), resp.headers().get("retry-after").cloned())
        }));
    }
    let (mut acked, mut refused) = (0, 0);
    for t in tasks {
        let (status, retry_after) = t.await.expect("task");
        match status {
            StatusCode::OK => acked += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert!(retry_after.is_some(), "503 without Retry-After");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        refused > 0,
        "64 concurrent requests into a one-request queue were all accepted"
    );
    assert!(acked > 0, "nothing was accepted");
    assert_eq!(
        stored_spans(&server, "s-9").await,
        acked * 800,
        "acknowledged = stored"
    );
}

/// A protobuf field: tag and, for length-delimited ones, the length.
fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// A span encoded the way prost would never write it: its name (field 5) after its attributes and an
/// unknown field 99 at the end, so a decode-and-encode would give different bytes.
fn hand_encoded(span: &Span) -> Vec<u8> {
    let mut out = Span {
        name: String::new(),
        ..span.clone()
    }
    .encode_to_vec();
    out.extend(field(5, span.name.as_bytes()));
    unknown_field(&mut out);
    out
}

/// An export request around already encoded spans.
fn hand_request(spans: &[Vec<u8>]) -> Vec<u8> {
    let resource = aotel::model::Resource {
        attributes: vec![kv_str("service.name", "edge")],
        ..Default::default()
    };
    let mut scope = Vec::new();
    for s in spans {
        scope.extend(field(2, s));
    }
    let mut resource_spans = field(1, &resource.encode_to_vec());
    resource_spans.extend(field(2, &scope));
    field(1, &resource_spans)
}

/// Sends `body` as the message of a gRPC trace export, byte for byte.
async fn grpc_raw(
    server: &TestServer,
    body: Vec<u8>,
) -> Result<aotel::model::ExportTraceServiceResponse, tonic::Status> {
    #[derive(Clone)]
    struct Raw;
    struct RawEncoder;
    struct ResponseDecoder;
    impl tonic::codec::Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = aotel::model::ExportTraceServiceResponse;
        type Encoder = RawEncoder;
        type Decoder = ResponseDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> ResponseDecoder {
            ResponseDecoder
        }
    }
    impl tonic::codec::Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }
    impl tonic::codec::Decoder for ResponseDecoder {
        type Item = aotel::model::ExportTraceServiceResponse;
        type Error = tonic::Status;
        fn decode(
            &mut self,
            src: &mut tonic::codec::DecodeBuf<'_>,
        ) -> Result<Option<Self::Item>, tonic::Status> {
            Message::decode(src)
                .map(Some)
                .map_err(|e| tonic::Status::internal(e.to_string()))
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(tonic::Request::new(body), path, Raw)
        .await
        .map(tonic::Response::into_inner)
}

/// What the store keeps of span (`trace` repeated, `span` repeated), read from the database file: its
/// body, and its whole encoding as aotel puts it back together from the body and the columns (what
/// forwarding sends).
fn stored(server: &TestServer, trace: u8, span: u8) -> (Vec<u8>, Vec<u8>) {
    let conn = rusqlite::Connection::open(&server.db).expect("open the store");
    conn.query_row(
        &format!("SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id = ?1 AND span_id = ?2"),
        (vec![trace; 16], vec![span; 8]),
        |r| {
            let mut whole = Vec::new();
            SpanRow::read(r, 0)?.encode(&mut whole);
            Ok((r.get(7)?, whole))
        },
    )
    .unwrap_or_else(|e| panic!("span {trace}/{span} is not stored: {e}"))
}

/// The body a `hand_encoded` span must be stored with: what came, less the fields the span's columns
/// hold (ids, name, times), the unknown field 99 kept.
fn hand_encoded_body(span: &Span) -> Vec<u8> {
    let mut out = Span {
        attributes: span.attributes.clone(),
        ..Default::default()
    }
    .encode_to_vec();
    unknown_field(&mut out);
    out
}

/// A `hand_encoded` span put back together: its fields in the usual order, the unknown field 99 kept.
fn hand_encoded_whole(span: &Span) -> Vec<u8> {
    let mut out = span.encode_to_vec();
    unknown_field(&mut out);
    out
}

fn unknown_field(out: &mut Vec<u8>) {
    prost::encoding::encode_key(99, prost::encoding::WireType::Varint, out);
    prost::encoding::encode_varint(7, out);
}

/// Spans that come as protobuf are stored as the bytes they came in, less the fields their columns
/// hold, over HTTP and gRPC, and put back together from them; a rejected span in the same request does
/// not shift which bytes go with which span. A span that truncation changed is stored as changed.
#[tokio::test]
async fn protobuf_spans_are_stored_as_received() {
    let server = TestServer::start().await;
    for (transport, trace) in [("http", 1u8), ("grpc", 2)] {
        let (first, second) = (span(trace, 1, "first"), span(trace, 3, "second"));
        let mut bad = span(trace, 2, "bad");
        bad.trace_id = vec![0; 16];
        let body = hand_request(&[
            hand_encoded(&first),
            hand_encoded(&bad),
            hand_encoded(&second),
        ]);
        let resp = if transport == "http" {
            let (status, _, resp) =
                post(&server, "/v1/traces", "application/x-protobuf", None, body).await;
            assert_eq!(status, StatusCode::OK);
            aotel::model::ExportTraceServiceResponse::decode(resp.as_slice()).expect("response")
        } else {
            grpc_raw(&server, body).await.expect("export")
        };
        let partial = resp.partial_success.expect("partial success");
        assert_eq!(partial.rejected_spans, 1, "{transport}");
        for (i, sent) in [(1, &first), (3, &second)] {
            let (body, whole) = stored(&server, trace, i);
            assert_eq!(body, hand_encoded_body(sent), "{transport} span {i}");
            assert_eq!(whole, hand_encoded_whole(sent), "{transport} span {i}");
            assert_eq!(&Span::decode(whole.as_slice()).expect("decodes"), sent);
        }
    }

    // Truncated on the way in: stored as truncated, with its marker.
    let mut long = span(4, 1, "long");
    long.attributes
        .push(kv_str("gen_ai.tool.call.result", "z".repeat(2 << 20)));
    let raw = hand_encoded(&long);
    let (status, _, _) = post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        None,
        hand_request(std::slice::from_ref(&raw)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, whole) = stored(&server, 4, 1);
    assert_ne!(whole, raw);
    let decoded = Span::decode(whole.as_slice()).expect("decodes");
    assert_eq!(decoded.name, "long");
    assert!(decoded.attributes.iter().any(|kv| kv.key == "ao.truncated"));

    // Malformed protobuf over gRPC is INVALID_ARGUMENT and says what was wrong.
    let err = grpc_raw(&server, vec![0x0a, 0xff, 0xff, 0x01])
        .await
        .expect_err("malformed");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("invalid protobuf"), "{err:?}");
}

/// What the store reads in place (`model::view`) it reads as prost does, and what that walk declines
/// (a field given twice, a group, deep nesting) prost still reads: over HTTP and gRPC, such spans are
/// stored as received (less the fields their columns hold) and read back as prost reads them. A
/// string that is not UTF-8 deep in a span is refused as malformed, with nothing of the request kept.
#[tokio::test]
async fn spans_the_walk_in_place_declines_are_read_by_prost() {
    let server = TestServer::start().await;
    for (transport, trace) in [("http", 11u8), ("grpc", 12)] {
        // The name twice: prost keeps the last.
        let mut twice = span(trace, 1, "first name").encode_to_vec();
        twice.extend(field(5, b"last name"));
        // A group (unknown field 50, start and end): prost skips it.
        let mut group = span(trace, 2, "grouped").encode_to_vec();
        prost::encoding::encode_key(50, prost::encoding::WireType::StartGroup, &mut group);
        prost::encoding::encode_key(50, prost::encoding::WireType::EndGroup, &mut group);
        // An attribute value nested 40 arrays deep.
        let mut deep = aotel::model::AnyValue {
            value: Some(aotel::model::any_value::Value::StringValue("bottom".into())),
        };
        for _ in 0..40 {
            deep = aotel::model::AnyValue {
                value: Some(aotel::model::any_value::Value::ArrayValue(
                    opentelemetry_proto::tonic::common::v1::ArrayValue { values: vec![deep] },
                )),
            };
        }
        let mut nested = span(trace, 3, "nested");
        nested.attributes.push(aotel::model::KeyValue {
            key: "deep".into(),
            value: Some(deep),
            ..Default::default()
        });
        let nested = nested.encode_to_vec();
        let body = hand_request(&[twice.clone(), group.clone(), nested.clone()]);
        let resp = if transport == "http" {
            let (status, _, resp) =
                post(&server, "/v1/traces", "application/x-protobuf", None, body).await;
            assert_eq!(status, StatusCode::OK, "{transport}");
            aotel::model::ExportTraceServiceResponse::decode(resp.as_slice()).expect("response")
        } else {
            grpc_raw(&server, body).await.expect("export")
        };
        assert_eq!(resp.partial_success, None, "{transport}");
        // Put back together: the name given twice once, as prost read it; the group, which the body
        // cannot be read around, stored whole; the deep one as it came.
        let twice_read = span(trace, 1, "last name").encode_to_vec();
        for (i, sent) in [(1, &twice_read), (2, &group), (3, &nested)] {
            assert_eq!(&stored(&server, trace, i).1, sent, "{transport} span {i}");
        }
        let api: Value = reqwest::get(server.url(&format!(
            "/api/traces/{}",
            aotel::model::ids::to_hex(&[trace; 16])
        )))
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
        assert!(api.to_string().contains("last name"), "{transport}: {api}");

        // Not UTF-8, in an event's name: the whole request is malformed.
        let mut bad = span(trace, 4, "bad event");
        bad.events.push(aotel::model::span::Event {
            name: "x".into(),
            ..Default::default()
        });
        let mut bytes = bad.encode_to_vec();
        let at = bytes.len() - 1;
        bytes[at] = 0xff;
        let body = hand_request(&[bytes]);
        if transport == "http" {
            let (status, _, resp) =
                post(&server, "/v1/traces", "application/x-protobuf", None, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            let status = aotel::model::rpc::RpcStatus::decode(resp.as_slice()).expect("status");
            assert!(status.message.contains("invalid protobuf"), "{status:?}");
        } else {
            let err = grpc_raw(&server, body).await.expect_err("malformed");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains("invalid protobuf"), "{err:?}");
        }
        let conn = rusqlite::Connection::open(&server.db).expect("open the store");
        let kept: i64 = conn
            .query_row(
                "SELECT count(*) FROM spans WHERE trace_id = ?1 AND span_id = ?2",
                (vec![trace; 16], vec![4u8; 8]),
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(kept, 0, "{transport}");
    }
    // One request read by prost and one malformed, per transport.
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l == "aotel_trace_requests_decoded_total 4"),
        "{metrics}"
    );
}
