//! Forwarding benchmark, aotel → aotel on loopback, both in this process.
//!
//! 1. Throughput: a backlog of AOTEL_BENCH_SPANS spans (default 200,000) is stored while the downstream
//!    is down; then the downstream starts and we time until the upstream reports no lag. Over OTLP/gRPC
//!    and OTLP/HTTP.
//! 2. Catch-up: ingest 10,000 spans/s steadily; the downstream is down for AOTEL_BENCH_OUTAGE_SECS
//!    (default 60) and then comes back; we time until the lag is under 0.2 s of ingest again, then stop
//!    ingest and check that the downstream holds every span the upstream does.
//!
//! `cargo bench --bench forward` (quick: `AOTEL_BENCH_OUTAGE_SECS=10 AOTEL_BENCH_SPANS=50000 cargo bench --bench forward`)

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/forward_support/mod.rs"]
mod forward_support;

use aotel::forward::retry::RetryPolicy;
use aotel::forward::{DestinationSpec, ForwardConfig};
use aotel::Config;
use common::TestServer as Server;
use forward_support::{count_spans, forward_status, free_addr, send_traces, traces};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn upstream_config(db: &Path, url: String) -> Config {
    let mut config = Config::with_db(db);
    let mut spec = DestinationSpec::parse(&url).expect("url");
    spec.logs = false;
    config.forward = ForwardConfig {
        destinations: vec![spec],
        // Notice the downstream's return within a fraction of a second, so the figure is forwarding time.
        retry: RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
            probe_every: Duration::from_millis(200),
            ..RetryPolicy::default()
        },
        ..ForwardConfig::default()
    };
    config
}

async fn lag_spans(api: SocketAddr) -> i64 {
    forward_status(api).await["destinations"][0]["lag_spans"]
        .as_i64()
        .unwrap_or(i64::MAX)
}

async fn throughput(protocol: &str, spans: u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let (grpc, http, api) = (free_addr(), free_addr(), free_addr());
    let url = match protocol {
        "grpc" => format!("grpc://{grpc}"),
        _ => format!("http://{http}/v1/traces"),
    };
    let up = Server::start_with(upstream_config(&dir.path().join("up.db"), url)).await;
    let per_request = 1000u64;
    let requests: Vec<_> = (0..spans.div_ceil(per_request))
        .map(|i| traces(&format!("tp{i}"), 10, 100))
        .collect();
    let ingest_started = Instant::now();
    for req in &requests {
        send_traces(up.http, req).await;
    }
    let ingest_secs = ingest_started.elapsed().as_secs_f64();
    let stored = count_spans(&dir.path().join("up.db"));
    println!(
        "(for reference: aotel ingested the backlog over OTLP/HTTP at {:.0} spans/s, one request at a time)",
        stored as f64 / ingest_secs
    );
    let down = Server::start_on(
        Config::with_db(dir.path().join("down.db")),
        (grpc, http, api),
    )
    .await;
    let started = Instant::now();
    while lag_spans(up.api).await > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let arrived = count_spans(&dir.path().join("down.db"));
    println!(
        "forward throughput over {protocol:<4}: {stored} spans in {secs:.2} s = {:.0} spans/s (downstream holds {arrived})",
        stored as f64 / secs
    );
    assert_eq!(arrived, stored, "the downstream must hold every span");
    up.stop().await;
    down.stop().await;
}

async fn catch_up(outage: u64) {
    let rate = 10_000u64;
    let dir = tempfile::tempdir().expect("tmp");
    let (grpc, http, api) = (free_addr(), free_addr(), free_addr());
    let up = Server::start_with(upstream_config(
        &dir.path().join("up.db"),
        format!("grpc://{grpc}"),
    ))
    .await;
    // Pre-build the requests so ingest pacing does not depend on this process's CPU for encoding.
    let running = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    let behind = Arc::new(AtomicU64::new(0));
    let ingest = {
        let (running, sent, behind, target) =
            (running.clone(), sent.clone(), behind.clone(), up.http);
        tokio::spawn(async move {
            let tick = Duration::from_millis(100);
            let per_tick = rate / 10;
            let start = Instant::now();
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                let req = traces(&format!("cu{n}"), 10, (per_tick / 10) as usize);
                send_traces(target, &req).await;
                n += 1;
                sent.fetch_add(per_tick, Ordering::Relaxed);
                let due = start + tick * n as u32;
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep(due - now).await;
                } else {
                    behind.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(outage)).await;
    let backlog = lag_spans(up.api).await;
    let down = Server::start_on(
        Config::with_db(dir.path().join("down.db")),
        (grpc, http, api),
    )
    .await;
    let started = Instant::now();
    // Caught up: less than 0.2 s of ingest left to send.
    while lag_spans(up.api).await > (rate / 5) as i64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let forwarded = count_spans(&dir.path().join("down.db"));
    let ingested_by_then = sent.load(Ordering::Relaxed);
    running.store(false, Ordering::Relaxed);
    let _ = ingest.await;
    while lag_spans(up.api).await > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (stored, arrived) = (
        count_spans(&dir.path().join("up.db")),
        count_spans(&dir.path().join("down.db")),
    );
    let ingest_rate = ingested_by_then as f64 / (outage as f64 + secs);
    println!(
        "catch-up after a {outage} s outage at {rate} spans/s: backlog {backlog} spans, caught up in {secs:.2} s, \
         forwarding {:.0} spans/s meanwhile while ingest ran at {ingest_rate:.0} spans/s (pacing fell behind {} \
         times); in the end upstream {stored}, downstream {arrived}",
        forwarded as f64 / secs,
        behind.load(Ordering::Relaxed)
    );
    assert_eq!(stored, arrived, "nothing may be dropped");
    up.stop().await;
    down.stop().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let spans = env_num("AOTEL_BENCH_SPANS", 200_000);
    let outage = env_num("AOTEL_BENCH_OUTAGE_SECS", 60);
    rt.block_on(async {
        if std::env::var_os("AOTEL_BENCH_ONLY_CATCHUP").is_none() {
            throughput("grpc", spans).await;
            throughput("http", spans).await;
        }
        catch_up(outage).await;
    });
}
