//! Forwarding end to end with real components: aotel → aotel over OTLP/gRPC and OTLP/HTTP, and
//! aotel → rotel (a real collector) → aotel; spans and logs compared one by one. Also replay.

mod common;
mod forward_support;

use aotel::forward::{DestinationSpec, ForwardConfig};
use aotel::Config;
use common::TestServer;
use forward_support::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn config_forwarding(db: &Path, destinations: Vec<DestinationSpec>) -> Config {
    let mut config = Config::with_db(db);
    config.forward = ForwardConfig {
        destinations,
        batch_items: 50,
        linger: Duration::from_millis(20),
        ..ForwardConfig::default()
    };
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_destinations_receive_every_span_and_log_unchanged() {
    let via_grpc = TestServer::start().await;
    let via_http = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut grpc = DestinationSpec::parse(&format!("grpc://{}", via_grpc.grpc)).unwrap();
    grpc.headers
        .push(("X-Scope-OrgID".into(), "tenant-1".into()));
    grpc.gzip = true;
    let mut http = DestinationSpec::parse(&format!("http://{}/v1/traces", via_http.http)).unwrap();
    http.gzip = true;
    let upstream = TestServer::start_with(config_forwarding(
        &dir.path().join("up.db"),
        vec![grpc, http],
    ))
    .await;

    // Several requests, so several batches (50 spans each) and updates interleave with forwarding.
    for round in 0..4 {
        send_traces(upstream.http, &traces(&format!("rt{round}"), 5, 12)).await;
    }
    send_logs(upstream.http, &logs("rt0", 120)).await;

    let status = wait_caught_up(upstream.api, Duration::from_secs(30)).await;
    let dests = status["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 2);
    for d in dests {
        assert_eq!(d["state"], "ok", "{d}");
        assert_eq!(d["dead_letters"], 0, "{d}");
        assert_eq!(d["signals"]["spans"]["sent_items"], 240, "{d}");
        assert_eq!(d["signals"]["logs"]["sent_items"], 120, "{d}");
    }
    // Header names are shown, their values (often credentials) are not.
    assert_eq!(dests[0]["headers"], serde_json::json!(["X-Scope-OrgID"]));
    assert!(!status.to_string().contains("tenant-1"));

    let metrics = reqwest::get(upstream.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let grpc_label = format!("destination=\"grpc://{}\"", via_grpc.grpc);
    assert!(
        metrics.contains(&format!(
            "aotel_forward_sent_spans_total{{{grpc_label}}} 240"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("aotel_forward_lag_spans{{{grpc_label}}} 0")),
        "{metrics}"
    );
    assert_same_spans(&upstream.db, &via_grpc.db, "aotel → aotel over gRPC");
    assert_same_spans(&upstream.db, &via_http.db, "aotel → aotel over HTTP");
    let up_logs = stored_logs(&upstream.db);
    assert_eq!(up_logs.len(), 120);
    assert_eq!(up_logs, stored_logs(&via_grpc.db), "logs over gRPC");
    assert_eq!(up_logs, stored_logs(&via_http.db), "logs over HTTP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_updated_span_is_forwarded_again() {
    let downstream = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = DestinationSpec::parse(&format!("grpc://{}", downstream.grpc)).unwrap();
    let upstream =
        TestServer::start_with(config_forwarding(&dir.path().join("up.db"), vec![spec])).await;

    let mut req = traces("upd", 1, 3);
    send_traces(upstream.http, &req).await;
    wait_caught_up(upstream.api, Duration::from_secs(30)).await;
    // The same spans again, finished later and renamed: the stored copy changes and gets a new seq.
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                span.end_time_unix_nano += 1_000_000_000;
                span.name.push_str(" (done)");
            }
        }
    }
    send_traces(upstream.http, &req).await;
    wait_for(
        "the new version downstream",
        Duration::from_secs(30),
        || async {
            stored_spans(&downstream.db)
                .values()
                .all(|(s, _, _)| s.name.ends_with("(done)"))
                .then_some(())
        },
    )
    .await;
    assert_same_spans(&upstream.db, &downstream.db, "after an update");
}

/// The rotel agent that `pip install rotel` puts inside the Python package.
fn rotel_binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("ROTEL_AGENT") {
        return p.into();
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .expect("python3 runs");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && Path::new(&path).exists(),
        "rotel is not installed (pip install -r tests/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path.into()
}

struct Rotel(Child);

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// rotel forwarding to `downstream` over OTLP/gRPC, and its OTLP/HTTP address.
fn start_rotel(downstream: SocketAddr, scratch: &Path) -> (Rotel, SocketAddr) {
    let (child, [_, http]) = common::spawn_on_free_ports(
        "rotel",
        |[grpc, http]| {
            let mut c = Command::new(rotel_binary());
            c.arg("start")
                .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
                .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
                .args(["--exporter", "otlp"])
                .args(["--otlp-exporter-protocol", "grpc"])
                .args(["--otlp-exporter-endpoint", &format!("http://{downstream}")])
                .args(["--batch-timeout", "50ms"])
                .arg("--pid-file")
                .arg(scratch.join(format!("rotel-{http}.pid")))
                .arg("--log-file")
                .arg(scratch.join(format!("rotel-{http}.log")))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        },
        |[_, http]| std::net::TcpStream::connect(("127.0.0.1", http)).is_ok(),
    );
    (Rotel(child), SocketAddr::from(([127, 0, 0, 1], http)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_rotel_every_span_arrives_unchanged() {
    let downstream = TestServer::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let (_rotel, rotel_http) =
        tokio::task::block_in_place(|| start_rotel(downstream.grpc, scratch.path()));

    // aotel → rotel over OTLP/HTTP, rotel → aotel over OTLP/gRPC.
    let dir = tempfile::tempdir().unwrap();
    let mut spec = DestinationSpec::parse(&format!("http://{rotel_http}/v1/traces")).unwrap();
    spec.gzip = true;
    let upstream =
        TestServer::start_with(config_forwarding(&dir.path().join("up.db"), vec![spec])).await;
    for round in 0..3 {
        send_traces(upstream.http, &traces(&format!("rotel{round}"), 4, 10)).await;
    }
    send_logs(upstream.http, &logs("rotel", 30)).await;
    wait_caught_up(upstream.api, Duration::from_secs(30)).await;
    let expected = count_spans(&upstream.db);
    wait_for(
        "rotel to pass everything on",
        Duration::from_secs(30),
        || async {
            (count_spans(&downstream.db) >= expected && stored_logs(&downstream.db).len() >= 30)
                .then_some(())
        },
    )
    .await;
    assert_same_spans(&upstream.db, &downstream.db, "aotel → rotel → aotel");
    assert_eq!(
        stored_logs(&upstream.db),
        stored_logs(&downstream.db),
        "logs through rotel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reexports_one_session_or_everything() {
    let source = TestServer::start().await;
    send_traces(source.http, &traces("replay", 6, 5)).await;
    send_logs(source.http, &logs("replay", 10)).await;
    let (db, _dir) = source.stop().await;

    let one = TestServer::start().await;
    let args = aotel::forward::replay::ReplayArgs {
        to: format!("grpc://{}", one.grpc),
        since: None,
        session: Some("replay-session-1".into()),
        db: Some(db.clone()),
        headers: vec!["Authorization: Bearer x".into()],
        ca: None,
        compression: "gzip".into(),
        signals: "all".into(),
        batch: 4,
        timeout: 10,
        give_up_after: 30,
    };
    let report = aotel::forward::replay::replay(&args).await.expect("replay");
    // Sessions are t % 3: traces 1 and 4, five spans each; the logs belong to session 0.
    assert_eq!(report.spans, 10, "{report:?}");
    assert_eq!(report.logs, 0, "{report:?}");
    assert_eq!(report.rejected_batches, 0);
    let got = stored_spans(&one.db);
    assert_eq!(got.len(), 10);
    assert!(got
        .keys()
        .all(|(t, _)| *t == trace_id("replay", 1) || *t == trace_id("replay", 4)));

    let all = TestServer::start().await;
    let args = aotel::forward::replay::ReplayArgs {
        to: format!("http://{}/v1/traces", all.http),
        session: None,
        since: Some("2025-01-01T00:00:00Z".into()),
        ..args.clone()
    };
    let report = aotel::forward::replay::replay(&args).await.expect("replay");
    assert_eq!((report.spans, report.logs), (30, 10), "{report:?}");
    assert_same_spans(&db, &all.db, "replay of everything");
    assert_eq!(stored_logs(&db), stored_logs(&all.db));

    let future = aotel::forward::replay::ReplayArgs {
        since: Some("2100-01-01T00:00:00Z".into()),
        ..args
    };
    let report = aotel::forward::replay::replay(&future)
        .await
        .expect("replay");
    assert_eq!(
        (report.spans, report.logs),
        (0, 0),
        "nothing is that recent"
    );
}
