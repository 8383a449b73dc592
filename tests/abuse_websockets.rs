//! 1,000 WebSocket clients that connect and then never read: aotel keeps serving everyone else, a
//! reading client still gets every delta, ingest still answers, and nothing crashes.

mod common;
mod live_support;

use common::TestServer;
use live_support::*;

const CLIENTS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_websockets_starve_no_one() {
    let s = TestServer::start().await;
    let client = reqwest::Client::new();
    let mut idle = Vec::with_capacity(CLIENTS);
    for batch in 0..CLIENTS / 100 {
        let mut connecting = Vec::new();
        for _ in 0..100 {
            let api = s.api;
            connecting.push(tokio::spawn(async move {
                let mut ws = Ws::connect(api, "").await;
                assert_eq!(ws.next().await["type"], "hello");
                assert_eq!(ws.next().await["type"], "snapshot");
                ws
            }));
        }
        for c in connecting {
            idle.push(c.await.unwrap_or_else(|e| panic!("batch {batch}: {e}")));
        }
    }
    assert_eq!(idle.len(), CLIENTS);
    let metrics = s.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!("aotel_websocket_clients {}", CLIENTS)),
        "all clients are counted"
    );

    // One more client that reads, while the thousand do not.
    let mut reader = Ws::connect(s.api, "").await;
    reader.next_of("snapshot").await;
    for n in 1..=20u64 {
        let t0 = now_ns();
        let run = run_span(
            &format!("busy-{n}"),
            "agent",
            &trace_hex(n),
            &span_hex(n),
            t0,
            t0 + 1_000,
            false,
        );
        post(&client, s.http, "/v1/traces", &traces("svc", vec![run])).await;
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 20 {
        let m = reader.next().await;
        if let Some(rows) = m["sessions"].as_array() {
            for r in rows {
                if let Some(k) = r["key"].as_str() {
                    seen.insert(k.to_string());
                }
            }
        }
    }
    let health = reqwest::get(s.url("/healthz")).await.expect("healthz");
    assert!(health.status().is_success());
    let list = s.get_json("/api/sessions?limit=100").await;
    assert_eq!(list["total"], 20);
    drop(idle);
    s.stop().await;
}
