//! Forwarding when destinations misbehave: down for a while, asking for a pause (HTTP Retry-After,
//! gRPC RetryInfo), refusing a batch for good, refusing part of one; and one dead destination beside a
//! healthy one.

mod common;
mod forward_support;

use aotel::forward::retry::RetryPolicy;
use aotel::forward::{DestinationSpec, ForwardConfig};
use aotel::{Config, Listeners};
use common::TestServer;
use forward_support::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Quick retries so a test does not wait for production backoff.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        open_after: 3,
        probe_every: Duration::from_millis(300),
        max_hint: Duration::from_secs(30),
    }
}

fn config_forwarding(db: &Path, destinations: Vec<DestinationSpec>, batch: usize) -> Config {
    let mut config = Config::with_db(db);
    config.forward = ForwardConfig {
        destinations,
        batch_items: batch,
        linger: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
        retry: fast_retry(),
        ..ForwardConfig::default()
    };
    config
}

/// An aotel forwarding traces (only) to `url`, batches of 1,000.
async fn traces_upstream(url: &str) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = DestinationSpec::parse(url).unwrap();
    spec.logs = false;
    let config = config_forwarding(&dir.path().join("up.db"), vec![spec], 1000);
    (TestServer::start_with(config).await, dir)
}

async fn dead_letters(api: std::net::SocketAddr) -> Vec<serde_json::Value> {
    let v: serde_json::Value = reqwest::get(format!("http://{api}/api/forward/dead-letters"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    v["dead_letters"].as_array().expect("array").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_that_is_down_for_a_while_gets_everything_when_back() {
    // The downstream's gRPC port is held, refusing connections, until the downstream starts on it.
    let down = Refusing::bind();
    let dir = tempfile::tempdir().unwrap();
    let spec = DestinationSpec::parse(&format!("grpc://{}", down.addr())).unwrap();
    let upstream =
        TestServer::start_with(config_forwarding(&dir.path().join("up.db"), vec![spec], 64)).await;

    for round in 0..5 {
        send_traces(upstream.http, &traces(&format!("down{round}"), 4, 10)).await;
    }
    // The forwarder notices, and says so, while ingest keeps being acknowledged.
    let status = wait_for("the circuit to open", Duration::from_secs(20), || async {
        let v = forward_status(upstream.api).await;
        (v["destinations"][0]["state"] == "circuit_open").then_some(v)
    })
    .await;
    let d = &status["destinations"][0];
    assert_eq!(d["lag_spans"], 200, "{d}");
    assert!(
        d["last_error"].as_str().unwrap_or("").contains("connect"),
        "{d}"
    );
    assert!(
        d["signals"]["spans"]["next_attempt_unix_nano"].is_string(),
        "{d}"
    );
    send_traces(upstream.http, &traces("down-more", 2, 10)).await;

    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let listeners = Listeners {
        grpc: down.listen(),
        http: tokio::net::TcpListener::bind(any).await.expect("bind"),
        api: tokio::net::TcpListener::bind(any).await.expect("bind"),
    };
    let dir2 = tempfile::tempdir().unwrap();
    let downstream =
        TestServer::start_bound(Config::with_db(dir2.path().join("down.db")), listeners).await;
    let status = wait_caught_up(upstream.api, Duration::from_secs(30)).await;
    assert_eq!(status["destinations"][0]["state"], "ok");
    assert_same_spans(&upstream.db, &downstream.db, "after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_retry_after_is_honored() {
    let mut fake = FakeOtlp::start(|i, _| {
        if i < 2 {
            Reply::Error(503, Some("2".into()), "overloaded".into())
        } else {
            Reply::Ok
        }
    })
    .await;
    let (upstream, _dir) = traces_upstream(&fake.url()).await;
    let req = traces("ra", 2, 5);
    send_traces(upstream.http, &req).await;
    fake.wait_requests(3, Duration::from_secs(30)).await;
    let r = fake.requests();
    // Our own backoff would have tried again after ~20-40 ms; the server asked for 2 s each time.
    for pair in r.windows(2).take(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_secs(2),
            "retried after {gap:?} despite Retry-After: 2"
        );
    }
    assert_eq!(r[0].spans, r[2].spans, "the same batch is sent again");
    let mut got = fake.accepted_spans();
    got.sort();
    let mut want = span_ids(&req);
    want.sort();
    assert_eq!(got, want);
    wait_caught_up(upstream.api, Duration::from_secs(10)).await;
}

/// A gRPC trace receiver that first answers RESOURCE_EXHAUSTED with a RetryInfo, then OK.
#[derive(Clone, Default)]
struct PushyGrpc {
    calls: Arc<Mutex<Vec<(Instant, usize)>>>,
}

#[tonic::async_trait]
impl TraceService for PushyGrpc {
    async fn export(
        &self,
        request: tonic::Request<aotel::model::ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<aotel::model::ExportTraceServiceResponse>, tonic::Status> {
        let spans = span_count(request.get_ref());
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((Instant::now(), spans));
            calls.len()
        };
        if n == 1 {
            let details = aotel::forward::retry::grpc_retry_details(
                8,
                "slow down",
                Duration::from_millis(1500),
            );
            return Err(tonic::Status::with_details(
                tonic::Code::ResourceExhausted,
                "slow down",
                details.into(),
            ));
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retry_info_is_honored() {
    let service = PushyGrpc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(service.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);

    let (upstream, _dir) = traces_upstream(&format!("grpc://{addr}")).await;
    send_traces(upstream.http, &traces("ri", 1, 7)).await;
    wait_for("the second attempt", Duration::from_secs(20), || async {
        (service.calls.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    let calls = service.calls.lock().unwrap().clone();
    let gap = calls[1].0 - calls[0].0;
    assert!(
        gap >= Duration::from_millis(1500),
        "retried after {gap:?} despite RetryInfo 1.5 s"
    );
    assert_eq!((calls[0].1, calls[1].1), (7, 7));
    wait_caught_up(upstream.api, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_dead_lettered_and_later_batches_still_flow() {
    let mut fake = FakeOtlp::start(|i, _| {
        if i == 0 {
            Reply::Error(400, None, "span name too long".into())
        } else if i == 1 {
            Reply::Partial(2, "2 spans had no name".into())
        } else {
            Reply::Ok
        }
    })
    .await;
    let (upstream, _dir) = traces_upstream(&fake.url()).await;

    let first = traces("dl0", 1, 6);
    send_traces(upstream.http, &first).await;
    fake.wait_requests(1, Duration::from_secs(10)).await;
    let letters = wait_for("the dead letter", Duration::from_secs(10), || async {
        let d = dead_letters(upstream.api).await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["kind"], "rejected");
    assert_eq!(letters[0]["items"], 6);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("span name too long"),
        "{}",
        letters[0]
    );

    let second = traces("dl1", 1, 5);
    send_traces(upstream.http, &second).await;
    fake.wait_requests(2, Duration::from_secs(10)).await;
    let third = traces("dl2", 1, 4);
    send_traces(upstream.http, &third).await;
    fake.wait_requests(3, Duration::from_secs(10)).await;
    let status = wait_caught_up(upstream.api, Duration::from_secs(10)).await;

    let r = fake.requests();
    assert_eq!(r.len(), 3, "a refused batch is not sent again");
    let mut want = span_ids(&second);
    want.extend(span_ids(&third));
    want.sort();
    let mut got = fake.accepted_spans();
    got.sort();
    assert_eq!(got, want);

    let letters = dead_letters(upstream.api).await;
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["kind"], "partial");
    assert_eq!(letters[0]["rejected"], 2);
    assert_eq!(letters[0]["reason"], "2 spans had no name");
    let d = &status["destinations"][0];
    assert_eq!(d["dead_letters"], 2, "{d}");
    assert_eq!(d["state"], "ok", "{d}");
    assert_eq!(d["signals"]["spans"]["partially_rejected"], 2, "{d}");
    assert_eq!(d["signals"]["spans"]["sent_items"], 9, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_gzip_reach_the_destination_and_logs_go_to_v1_logs() {
    let mut fake = FakeOtlp::start(|_, _| Reply::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let args = aotel::forward::ForwardArgs {
        forward: vec![fake.url()],
        headers: vec![
            "Authorization: Bearer s3cret".into(),
            format!("{}|X-Scope-OrgID: team-a", fake.url()),
        ],
        compression: vec!["gzip".into()],
        batch: 100,
        timeout: 5,
        max_backoff: 1,
        ..Default::default()
    };
    let mut config = Config::with_db(dir.path().join("up.db"));
    config.forward = args.config().expect("flags parse");
    let upstream = TestServer::start_with(config).await;
    send_traces(upstream.http, &traces("hdr", 1, 3)).await;
    send_logs(upstream.http, &logs("hdr", 4)).await;
    fake.wait_requests(2, Duration::from_secs(10)).await;
    wait_caught_up(upstream.api, Duration::from_secs(10)).await;
    let r = fake.requests();
    assert_eq!(r.len(), 2);
    for req in &r {
        assert!(req.gzip, "gzip was asked for");
        assert_eq!(req.headers["authorization"], "Bearer s3cret");
        assert_eq!(req.headers["x-scope-orgid"], "team-a");
        assert!(req.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("aotel/"));
    }
    let traces_req = r
        .iter()
        .find(|q| q.path == "/v1/traces")
        .expect("a traces request");
    let logs_req = r
        .iter()
        .find(|q| q.path == "/v1/logs")
        .expect("a logs request");
    assert_eq!(traces_req.spans.len(), 3);
    assert_eq!(logs_req.logs, 4);
    let status = forward_status(upstream.api).await;
    assert!(
        !status.to_string().contains("s3cret"),
        "header values stay private: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_destination_holds_back_neither_ingest_nor_another_destination() {
    let healthy = TestServer::start().await;
    let dead = Refusing::bind();
    let dir = tempfile::tempdir().unwrap();
    let specs = vec![
        DestinationSpec::parse(&format!("http://{}/v1/traces", dead.addr())).unwrap(),
        DestinationSpec::parse(&format!("grpc://{}", healthy.grpc)).unwrap(),
    ];
    let upstream =
        TestServer::start_with(config_forwarding(&dir.path().join("up.db"), specs, 50)).await;
    for round in 0..6 {
        send_traces(upstream.http, &traces(&format!("two{round}"), 3, 10)).await;
    }
    let want = count_spans(&upstream.db);
    assert_eq!(want, 180);
    wait_for(
        "the healthy destination to have everything",
        Duration::from_secs(20),
        || async { (count_spans(&healthy.db) == want).then_some(()) },
    )
    .await;
    assert_same_spans(&upstream.db, &healthy.db, "beside a dead destination");
    let status = forward_status(upstream.api).await;
    let dests = status["destinations"].as_array().unwrap();
    assert_ne!(dests[0]["state"], "ok", "{}", dests[0]);
    assert_eq!(dests[0]["lag_spans"], 180);
    assert!(
        dests[0]["lag_seconds"].as_f64().unwrap() > 0.0,
        "{}",
        dests[0]
    );
    assert_eq!(dests[1]["lag_spans"], 0);
}

#[test]
fn flags_are_checked() {
    let args = |forward: &[&str], headers: &[&str]| aotel::forward::ForwardArgs {
        forward: forward.iter().map(|s| s.to_string()).collect(),
        headers: headers.iter().map(|s| s.to_string()).collect(),
        batch: 10,
        timeout: 1,
        max_backoff: 1,
        ..Default::default()
    };
    assert!(args(&["ftp://x:1"], &[]).config().is_err());
    assert!(args(&["grpc://x:4317/v1/traces"], &[]).config().is_err());
    assert!(args(&["http://user:pw@x:4318/v1/traces"], &[])
        .config()
        .is_err());
    assert!(args(&["grpc://x:4317"], &["http://other:1|A: b"])
        .config()
        .is_err());
    assert!(args(&["grpc://x:4317"], &["no colon"]).config().is_err());
    let ok = args(
        &["grpc://a:4317", "https://b/v1/traces"],
        &[
            "grpc://a:4317|X-Scope-OrgID: t1",
            "Authorization=Basic eA==",
        ],
    )
    .config()
    .expect("valid");
    assert_eq!(ok.destinations.len(), 2);
    assert_eq!(
        ok.destinations[0].headers,
        vec![
            ("X-Scope-OrgID".into(), "t1".into()),
            ("Authorization".into(), "Basic eA==".into())
        ]
    );
    assert_eq!(
        ok.destinations[1].headers,
        vec![("Authorization".into(), "Basic eA==".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age_keeps_what_a_destination_has_not_received() {
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = open.clone();
    let fake = FakeOtlp::start(move |_, _| {
        if gate.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::Ok
        } else {
            Reply::Error(503, None, "not yet".into())
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = DestinationSpec::parse(&fake.url()).unwrap();
    spec.logs = false;
    let mut config = config_forwarding(&dir.path().join("up.db"), vec![spec], 1000);
    // The test spans are from 2025: older than a day.
    config.retention = aotel::store::retention::RetentionPolicy {
        max_age: Some(Duration::from_secs(86_400)),
        max_bytes: None,
    };
    let upstream = TestServer::start_with(config).await;
    let req = traces("ret", 3, 4);
    send_traces(upstream.http, &req).await;
    let run_retention = || async {
        let resp = reqwest::Client::new()
            .post(upstream.url("/api/retention/run"))
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 200);
        resp.json::<serde_json::Value>().await.expect("JSON")
    };
    let report = run_retention().await;
    assert_eq!(report["spans"], 0, "{report}");
    assert!(
        report["kept_for_forwarding"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(count_spans(&upstream.db), 12);

    open.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_caught_up(upstream.api, Duration::from_secs(20)).await;
    let report = run_retention().await;
    assert_eq!(
        report["spans"], 12,
        "delivered, so old enough to go: {report}"
    );
    assert_eq!(count_spans(&upstream.db), 0);
    let mut got = fake.accepted_spans();
    got.sort();
    let mut want = span_ids(&req);
    want.sort();
    assert_eq!(got, want);
}
