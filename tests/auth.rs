//! Bearer tokens on every surface: OTLP/HTTP, OTLP/gRPC, the API, /metrics and the legacy /events.

mod common;

use aotel::auth::Tokens;
use aotel::model::ExportTraceServiceRequest;
use aotel::Config;
use common::TestServer;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use reqwest::StatusCode;

async fn server() -> TestServer {
    let dir = tempfile::tempdir().expect("tmp");
    let mut config = Config::with_db(dir.path().join("a.db"));
    config.tokens = Tokens {
        ingest: Some("ingest-secret".into()),
        read: Some("read-secret".into()),
    };
    let mut server = TestServer::start_with(config).await;
    server.dir = Some(dir);
    server
}

const SPAN: &str = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"x","attributes":[{"key":"session.id","value":{"stringValue":"auth"}}]}]}]}]}"#;

#[tokio::test]
async fn every_surface_asks_for_its_token() {
    let server = server().await;
    let c = reqwest::Client::new();
    let otlp = |token: Option<&str>| {
        let mut r = c
            .post(server.otlp_http("/v1/traces"))
            .header("content-type", "application/json")
            .body(SPAN);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let resp = otlp(None).await.expect("POST");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["code"], 16);
    assert!(body["message"].as_str().unwrap_or("").contains("Bearer"));
    assert_eq!(
        otlp(Some("read-secret")).await.expect("POST").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        otlp(Some("ingest-secret")).await.expect("POST").status(),
        StatusCode::OK
    );

    // gRPC: metadata `authorization`.
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .expect("connect");
    let err = client
        .export(ExportTraceServiceRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(ExportTraceServiceRequest::default());
    req.metadata_mut().insert(
        "authorization",
        "Bearer ingest-secret".parse().expect("metadata"),
    );
    client.export(req).await.expect("with the ingest token");

    // Reading: API and metrics need the read token; health checks stay open.
    for path in ["/api/sessions", "/api/sessions/auth", "/metrics"] {
        let resp = c.get(server.url(path)).send().await.expect("GET");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let resp = c
            .get(server.url(path))
            .bearer_auth("ingest-secret")
            .send()
            .await
            .expect("GET");
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "{path}: an ingest token does not read"
        );
        let resp = c
            .get(server.url(path))
            .bearer_auth("read-secret")
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            c.get(server.url(path)).send().await.expect("GET").status(),
            StatusCode::OK
        );
    }
    // A browser gets in with ?token= once; the cookie it receives works afterwards.
    let resp = c
        .get(server.url("/api/sessions?token=read-secret"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap_or("").to_string();
    let resp = c
        .get(server.url("/api/sessions"))
        .header("cookie", pair)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::OK);

    // The old /events API is ingest.
    let event = r#"{"event_type":"session_start","session_id":"7a1c9e55-3b2d-4f80-9e6a-0c5d8b7f2e14","session_name":"x","timestamp":"2025-11-16T12:00:00Z"}"#;
    let post = |t: &'static str| {
        c.post(server.url("/events"))
            .header("content-type", "application/json")
            .bearer_auth(t)
            .body(event)
            .send()
    };
    assert_eq!(
        post("read-secret").await.expect("POST").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post("ingest-secret").await.expect("POST").status(),
        StatusCode::OK
    );
    server.stop().await;
}

#[test]
fn exposing_a_port_needs_both_tokens_or_insecure() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: aotel::config::ServeArgs,
    }
    let parse = |args: &[&str]| {
        let mut argv = vec!["aotel", "--db", "/tmp/unused.db", "--api", "0.0.0.0:8765"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("parses").serve.config()
    };
    let err = parse(&[]).expect_err("refused");
    assert!(
        err.contains("--ingest-token") && err.contains("--insecure"),
        "{err}"
    );
    assert!(
        parse(&["--ingest-token", "a"]).is_err(),
        "one token is not enough"
    );
    assert!(parse(&["--ingest-token", "a", "--read-token", "b"]).is_ok());
    assert!(parse(&["--insecure"]).is_ok());
}
