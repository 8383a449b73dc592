//! Live-view benchmark: latency from an OTLP/HTTP export being acknowledged to the WebSocket message
//! that shows it, at about 1,000 and 20,000 spans/s, with 50 idle and 5 stalled WebSocket clients
//! connected; and the highest ingest rate with those clients connected versus none.
//!
//! Run: `cargo bench --bench live` (prints figures; no assertions).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/live_support/mod.rs"]
mod live_support;

use aotel::model::attrs::{kv_i64, kv_str};
use aotel::model::{
    ExportTraceServiceRequest, InstrumentationScope, Resource, ResourceSpans, ScopeSpans, Span,
};
use common::TestServer as Server;
use futures_util::StreamExt;
use prost::Message as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

const IDLE: usize = 50;
const STALLED: usize = 5;
const SECS: f64 = 5.0;
const INGEST_SPANS: usize = 120_000;
const INGEST_PER_REQUEST: usize = 200;
const INGEST_CONCURRENCY: usize = 8;
const INGEST_ROUNDS: usize = 5;

/// One export: a run span and `per - 1` tool calls of session `key`.
fn request(key: &str, n: u64, per: usize) -> Vec<u8> {
    let now = live_support::now_ns();
    let trace = {
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&n.to_be_bytes());
        t[8..].copy_from_slice(&(n ^ 0xa0a0_a0a0_a0a0_a0a0).to_be_bytes());
        t[15] |= 1;
        t.to_vec()
    };
    let run_id = ((n << 16) | 1).to_be_bytes().to_vec();
    let mut spans = vec![Span {
        trace_id: trace.clone(),
        span_id: run_id.clone(),
        name: "invoke_agent bench".into(),
        kind: 1,
        start_time_unix_nano: now - 1_000_000,
        end_time_unix_nano: now,
        attributes: vec![
            kv_str("gen_ai.operation.name", "invoke_agent"),
            kv_str("gen_ai.agent.name", "bench-agent"),
            kv_str("gen_ai.conversation.id", key),
            kv_i64("gen_ai.usage.output_tokens", 120),
        ],
        ..Default::default()
    }];
    for i in 1..per as u64 {
        spans.push(Span {
            trace_id: trace.clone(),
            span_id: ((n << 16) | (i + 1)).to_be_bytes().to_vec(),
            parent_span_id: run_id.clone(),
            name: "execute_tool Bash".into(),
            kind: 1,
            start_time_unix_nano: now - 900_000 + i * 1_000,
            end_time_unix_nano: now - 800_000 + i * 1_000,
            attributes: vec![
                kv_str("gen_ai.operation.name", "execute_tool"),
                kv_str("gen_ai.tool.name", "Bash"),
                kv_str("gen_ai.conversation.id", key),
                kv_str("gen_ai.tool.call.id", format!("toolu_{n}_{i}")),
                kv_str("gen_ai.tool.call.arguments", r#"{"command":"ls -la src/","description":"List source files"}"#),
                kv_str("gen_ai.tool.call.result", "total 48\ndrwxr-xr-x  6 dev dev 4096 lib.rs\n-rw-r--r--  1 dev dev 3120 main.rs\n-rw-r--r--  1 dev dev 2201 config.rs"),
            ],
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "bench")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "aotel-bench".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

async fn export(client: &reqwest::Client, http: SocketAddr, body: Vec<u8>) -> bool {
    match client
        .post(format!("http://{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// Set in the child process that runs the WebSocket clients: the API address to connect to.
const CLIENTS_ENV: &str = "AOTEL_LIVE_BENCH_CLIENTS";

/// The 50 idle and 5 stalled clients run in a child process (this same benchmark binary), so that the
/// server's CPU time can be measured apart from the clients' own.
struct Clients {
    child: std::process::Child,
    out: Option<std::io::BufReader<std::process::ChildStdout>>,
    /// CPU seconds the client process had used once connected.
    ready_cpu: f64,
}

impl Clients {
    async fn start(api: SocketAddr) -> Clients {
        use std::io::BufRead;
        let exe = std::env::current_exe().expect("benchmark binary");
        let mut child = std::process::Command::new(exe)
            .env(CLIENTS_ENV, api.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the client process");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let out = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            out.read_line(&mut line).expect("client process output");
            let cpu = line
                .strip_prefix("ready ")
                .map(|c| c.trim().parse().unwrap_or(0.0));
            (out, cpu.expect("client process did not connect"))
        })
        .await
        .expect("join");
        let (out, ready_cpu) = out;
        Clients {
            child,
            out: Some(out),
            ready_cpu,
        }
    }

    /// Stops the clients: (messages the idle clients received, CPU seconds the client process used
    /// since it was ready).
    async fn finish(mut self) -> (u64, f64) {
        use std::io::{BufRead, Write};
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let Some(mut out) = self.out.take() else {
            return (0, 0.0);
        };
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            line
        })
        .await
        .unwrap_or_default();
        let _ = self.child.wait();
        let mut parts = line.split_whitespace();
        let messages = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let cpu: f64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        (messages, (cpu - self.ready_cpu).max(0.0))
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child process: 50 clients that read everything (open pages nobody touches) and 5 that never
/// read a byte (pages whose tab froze), all on the page's default subscription. Prints `ready`, then,
/// when told to stop on stdin, the message count and its CPU seconds.
fn client_process(api: SocketAddr) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let messages = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for _ in 0..IDLE {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{api}/ws"))
                .await
                .expect("idle client connects");
            let count = messages.clone();
            tokio::spawn(async move {
                while let Some(Ok(_)) = ws.next().await {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        let mut stalled = Vec::new();
        for _ in 0..STALLED {
            let socket = TcpSocket::new_v4().expect("socket");
            socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
            let tcp = socket.connect(api).await.expect("connect");
            let (ws, _) = tokio_tungstenite::client_async(
                format!("ws://{api}/ws"),
                tokio_tungstenite::MaybeTlsStream::Plain(tcp),
            )
            .await
            .expect("stalled client handshake");
            stalled.push(ws);
        }
        // Let every client take its snapshot before the clock starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!("ready {}", cpu_secs().unwrap_or(0.0));
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
        println!(
            "{} {}",
            messages.load(std::sync::atomic::Ordering::Relaxed),
            cpu_secs().unwrap_or(0.0)
        );
        drop(stalled);
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Exports at `rate` spans/s for SECS seconds, one new session per export, and measures the time from
/// each export's acknowledgement to the first WebSocket delta that shows its session.
async fn latency(rate: usize, per: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let server = Server::start_on(
        aotel::Config::with_db(dir.path().join("bench.db")),
        (any, any, any),
    )
    .await;
    let clients = Clients::start(server.api).await;

    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (mut probe, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?limit=1", server.api))
            .await
            .expect("probe connects");
    let seen = arrivals.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = probe.next().await {
            let at = Instant::now();
            let Message::Text(text) = msg else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
                continue;
            };
            if v["type"] != "delta" {
                continue;
            }
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for row in v["sessions"].as_array().into_iter().flatten() {
                if let Some(k) = row["key"].as_str() {
                    seen.entry(k.to_string()).or_insert(at);
                }
            }
        }
    });
    // Let every client finish its snapshot before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let requests_per_sec = (rate / per).max(1);
    let total = (requests_per_sec as f64 * SECS) as usize;
    let bodies: Vec<(String, Vec<u8>)> = (0..total)
        .map(|i| {
            let key = format!("lat-{rate}-{i}");
            let body = request(&key, (rate as u64) << 32 | i as u64, per);
            (key, body)
        })
        .collect();
    let acks: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let client = reqwest::Client::new();
    let limit = Arc::new(Semaphore::new(64));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / requests_per_sec as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sends = Vec::with_capacity(total);
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for (key, body) in bodies {
        ticker.tick().await;
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        let (client, acks, failures, http) =
            (client.clone(), acks.clone(), failures.clone(), server.http);
        sends.push(tokio::spawn(async move {
            let ok = export(&client, http, body).await;
            let at = Instant::now();
            drop(permit);
            if ok {
                acks.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, at);
            } else {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for s in sends {
        let _ = s.await;
    }
    let elapsed = started.elapsed();
    // Wait (bounded) for the last messages.
    for _ in 0..100 {
        if arrivals.lock().unwrap_or_else(|e| e.into_inner()).len() >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    let acks = acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let arrivals = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut lat = Vec::with_capacity(acks.len());
    let mut before_ack = 0;
    for (k, ack) in &acks {
        if let Some(at) = arrivals.get(k) {
            if at < ack {
                before_ack += 1;
            }
            lat.push(at.saturating_duration_since(*ack));
        }
    }
    lat.sort();
    let spans = acks.len() * per;
    println!(
        "  {rate:>6} spans/s target: {spans} spans in {:.1} s = {:.0} spans/s achieved, {} failed exports",
        elapsed.as_secs_f64(),
        spans as f64 / elapsed.as_secs_f64(),
        failures.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "         ack → WebSocket: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms  ({} of {} exports seen; {} arrived before their ack, counted as 0)",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
        lat.len(),
        acks.len(),
        before_ack
    );
    let (messages, _) = clients.finish().await;
    println!("         idle clients received {messages} messages in total");
    server.stop().await;
}

/// CPU seconds this process has used (user + system), from /proc/self/stat; None elsewhere.
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Exports INGEST_SPANS spans as fast as INGEST_CONCURRENCY exporters can: (spans/s, CPU µs per span
/// of this process (server and exporters), CPU µs per span of the client process).
async fn ingest(with_clients: bool) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let server = Server::start_on(
        aotel::Config::with_db(dir.path().join("bench.db")),
        (any, any, any),
    )
    .await;
    let clients = if with_clients {
        Some(Clients::start(server.api).await)
    } else {
        None
    };
    let requests = INGEST_SPANS / INGEST_PER_REQUEST;
    let bodies: Vec<Vec<u8>> = (0..requests)
        .map(|i| {
            request(
                &format!("ingest-{}", i % 100),
                1 << 40 | i as u64,
                INGEST_PER_REQUEST,
            )
        })
        .collect();
    let queue = Arc::new(Mutex::new(bodies));
    let client = reqwest::Client::new();
    let cpu0 = cpu_secs().unwrap_or(0.0);
    let started = Instant::now();
    let workers: Vec<_> = (0..INGEST_CONCURRENCY)
        .map(|_| {
            let (queue, client, http) = (queue.clone(), client.clone(), server.http);
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some(body) = next else { break };
                    while !export(&client, http, body.clone()).await {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let rate = INGEST_SPANS as f64 / started.elapsed().as_secs_f64();
    let cpu = (cpu_secs().unwrap_or(0.0) - cpu0) / INGEST_SPANS as f64 * 1e6;
    let client_cpu = match clients {
        Some(c) => c.finish().await.1 / INGEST_SPANS as f64 * 1e6,
        None => 0.0,
    };
    server.stop().await;
    (rate, cpu, client_cpu)
}

fn main() {
    if let Some(api) = std::env::var(CLIENTS_ENV).ok().and_then(|a| a.parse().ok()) {
        client_process(api);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("live view benchmark: {IDLE} idle + {STALLED} stalled WebSocket clients, OTLP/HTTP protobuf exports");
        println!("latency (target: p99 ≤ 100 ms at 20,000 spans/s):");
        latency(1_000, 20).await;
        latency(20_000, 200).await;
        println!(
            "ingest, highest rate ({INGEST_SPANS} spans, {INGEST_PER_REQUEST}/export, {INGEST_CONCURRENCY} concurrent exporters, best of {INGEST_ROUNDS}; target: within 10%):"
        );
        let (mut none, mut with) = (Vec::new(), Vec::new());
        for _ in 0..INGEST_ROUNDS {
            none.push(ingest(false).await);
            with.push(ingest(true).await);
        }
        let best = |v: &[(f64, f64, f64)]| v.iter().map(|r| r.0).fold(0.0, f64::max);
        let median = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
            let mut c: Vec<f64> = v.iter().map(f).collect();
            c.sort_by(f64::total_cmp);
            c[c.len() / 2]
        };
        let (n, w) = (best(&none), best(&with));
        let (cn, cw) = (median(&none, |r| r.1), median(&with, |r| r.1));
        let clients_cpu = median(&with, |r| r.2);
        println!(
            "  no clients:                    {n:>7.0} spans/s; aotel + exporters {cn:.2} CPU µs/span  (rounds: {})",
            fmt_rounds(&none)
        );
        println!(
            "  {IDLE} idle + {STALLED} stalled clients:   {w:>7.0} spans/s; aotel + exporters {cw:.2} CPU µs/span, the client process {clients_cpu:.2}  (rounds: {})",
            fmt_rounds(&with)
        );
        println!(
            "  ratio with/without: {:.3} by rate (best rounds); {:.3} by aotel's CPU per span (medians)",
            w / n,
            cn / cw
        );
    });
}

fn fmt_rounds(v: &[(f64, f64, f64)]) -> String {
    v.iter()
        .map(|r| format!("{:.0}", r.0))
        .collect::<Vec<_>>()
        .join(", ")
}
