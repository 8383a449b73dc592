//! Query benchmark: builds a store of agent sessions (1,000,000 spans by default) through the Writer
//! in big batches, then times the Jaeger and Tempo APIs over HTTP on a running aotel: service + tag +
//! time-range searches and the fetch of a 2,000-span trace. Prints figures; asserts nothing.
//!
//! `cargo bench --bench query` (release). `-- --spans N` for another size, `-- --ingest-only` to stop
//! after building the store.

use aotel::model::attrs::{kv_bool, kv_f64, kv_i64, kv_str};
use aotel::model::{
    Batch, InstrumentationScope, Resource, ResourceSpans, ScopeSpans, Span, Status,
};
use aotel::store::StoreOptions;
use aotel::{Config, Listeners};
use std::time::{Duration, Instant};

const SPANS_PER_SESSION: usize = 50;
const BIG_TRACE_SPANS: usize = 2_000;
const SERVICES: [&str; 4] = ["ao", "claude-code", "ao-research", "ao-review"];
const TOOLS: [&str; 8] = [
    "Bash", "Read", "Grep", "Edit", "Write", "Glob", "WebFetch", "Task",
];
const T0: u64 = 1_750_000_000_000_000_000;
const WEEK: u64 = 7 * 86_400 * 1_000_000_000;

fn id16(n: u64) -> Vec<u8> {
    let mut v = vec![0xa0; 16];
    v[8..].copy_from_slice(&n.to_be_bytes());
    v
}

fn id8(n: u64) -> Vec<u8> {
    (n | 1 << 63).to_be_bytes().to_vec()
}

/// One agent session: an invoke_agent root, then alternating chat turns and tool calls.
fn session(i: u64, spans: usize, start: u64) -> Vec<Span> {
    let trace_id = id16(i);
    let root_id = id8(i << 16);
    let end = start + spans as u64 * 2_000_000_000;
    let mut out = Vec::with_capacity(spans);
    out.push(Span {
        trace_id: trace_id.clone(),
        span_id: root_id.clone(),
        name: "invoke_agent architect".into(),
        kind: 1,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: vec![
            kv_str("gen_ai.operation.name", "invoke_agent"),
            kv_str("gen_ai.agent.name", "local-codebase-researcher"),
            kv_str("gen_ai.conversation.id", format!("session-{i}")),
            kv_str("gen_ai.provider.name", "anthropic"),
            kv_str("gen_ai.request.model", "claude-sonnet-4"),
            kv_i64("gen_ai.usage.output_tokens", 900 + (i % 100) as i64),
            kv_f64("ao.cost.usd", 0.05),
            kv_i64("ao.num_turns", (spans / 2) as i64),
        ],
        status: Some(Status {
            code: 1,
            message: String::new(),
        }),
        ..Default::default()
    });
    for j in 1..spans as u64 {
        let s = start + j * 2_000_000_000;
        let mut span = Span {
            trace_id: trace_id.clone(),
            span_id: id8(i << 16 | j),
            parent_span_id: root_id.clone(),
            kind: 1,
            start_time_unix_nano: s,
            end_time_unix_nano: s + 1_000_000_000 + (j % 7) * 100_000_000,
            ..Default::default()
        };
        if j % 2 == 1 {
            span.name = "chat claude-sonnet-4".into();
            span.kind = 3;
            span.attributes = vec![
                kv_str("gen_ai.operation.name", "chat"),
                kv_str("gen_ai.request.model", "claude-sonnet-4"),
                kv_i64("gen_ai.usage.input_tokens", 1000 + j as i64),
                kv_i64("gen_ai.usage.output_tokens", 200 + j as i64),
                kv_i64("gen_ai.usage.cache_read.input_tokens", 5000),
            ];
        } else {
            let tool = TOOLS[((i + j / 2) % TOOLS.len() as u64) as usize];
            let failed = (i + j) % 20 == 0;
            span.name = format!("execute_tool {tool}");
            span.attributes = vec![
                kv_str("gen_ai.operation.name", "execute_tool"),
                kv_str("gen_ai.tool.name", tool),
                kv_str("gen_ai.tool.call.id", format!("toolu_{i}_{j}")),
                kv_str(
                    "gen_ai.tool.call.arguments",
                    format!("{{\"command\":\"make test-{j}\"}}"),
                ),
                kv_str("gen_ai.tool.call.result", "ok\n".repeat(40)),
                kv_bool("ao.timing.estimated", false),
            ];
            if failed {
                span.attributes.push(kv_str("error.type", "tool_error"));
                span.status = Some(Status {
                    code: 2,
                    message: "Command failed with exit code 1".into(),
                });
            }
        }
        out.push(span);
    }
    out
}

fn batch_of(service: usize, spans: Vec<Span>) -> Batch {
    Batch {
        spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", SERVICES[service]),
                    kv_str("service.version", "1.0.0"),
                    kv_str("host.name", "bench"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "ao.agent".into(),
                    version: "0.4.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
        ..Batch::default()
    }
}

struct Args {
    spans: usize,
    ingest_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        spans: 1_000_000,
        ingest_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--spans" => a.spans = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.spans),
            "--ingest-only" => a.ingest_only = true,
            _ => {}
        }
    }
    a
}

fn percentile(times: &mut [Duration], p: f64) -> f64 {
    times.sort();
    let i = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[i].as_secs_f64() * 1e3
}

async fn time_get(
    client: &reqwest::Client,
    url: &str,
    accept: &str,
    runs: usize,
) -> (f64, f64, usize, u16) {
    let mut times = Vec::with_capacity(runs);
    let mut size = 0;
    let mut status = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let resp = client
            .get(url)
            .header("accept", accept)
            .send()
            .await
            .expect("GET");
        status = resp.status().as_u16();
        size = resp.bytes().await.expect("body").len();
        times.push(t.elapsed());
    }
    (
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.95),
        size,
        status,
    )
}

fn enc(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    let sessions = a.spans.saturating_sub(BIG_TRACE_SPANS) / SPANS_PER_SESSION;
    println!("building a store of {} spans ({sessions} sessions of {SPANS_PER_SESSION} + one of {BIG_TRACE_SPANS}) at {}", sessions * SPANS_PER_SESSION + BIG_TRACE_SPANS, db.display());

    let store = aotel::store::open(&db, &StoreOptions::default()).expect("open store");
    let started = Instant::now();
    let mut written = 0usize;
    let mut pending = Vec::new();
    let per_batch = 200; // sessions: 10,000 spans per write
    let spacing = WEEK / sessions.max(1) as u64;
    let big_trace = sessions as u64 + 1;
    for chunk_start in (0..sessions).step_by(per_batch) {
        let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
        for i in chunk_start..(chunk_start + per_batch).min(sessions) {
            by_service[i % SERVICES.len()].extend(session(
                i as u64,
                SPANS_PER_SESSION,
                T0 + i as u64 * spacing,
            ));
        }
        let mut batch = Batch::default();
        for (svc, spans) in by_service.into_iter().enumerate() {
            if !spans.is_empty() {
                batch.spans.extend(batch_of(svc, spans).spans);
            }
        }
        written += batch.span_count();
        let w = store.writer.clone();
        pending.push(tokio::spawn(async move {
            w.write_waiting(batch, 4 << 20).await
        }));
        if pending.len() >= 4 {
            pending.remove(0).await.expect("join").expect("write");
        }
    }
    let big = session(big_trace, BIG_TRACE_SPANS, T0 + WEEK - 3_600_000_000_000);
    written += big.len();
    pending.push(tokio::spawn({
        let w = store.writer.clone();
        async move { w.write_waiting(batch_of(0, big), 4 << 20).await }
    }));
    for p in pending {
        p.await.expect("join").expect("write");
    }
    let took = started.elapsed();
    store.close().await.expect("close");
    let size: u64 = std::fs::read_dir(dir.path())
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!(
        "ingest: {written} spans in {:.1} s = {:.0} spans/s through Writer::write_waiting; database {:.0} MiB",
        took.as_secs_f64(),
        written as f64 / took.as_secs_f64(),
        size as f64 / (1 << 20) as f64
    );
    if a.ingest_only {
        return;
    }

    let listeners = Listeners::ephemeral().await.expect("bind");
    let (_, _, api) = listeners.addrs();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(aotel::run(Config::with_db(&db), listeners, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let base = format!("http://{api}");
    for _ in 0..200 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let end_us = (T0 + WEEK) / 1000;
    let day_us = 86_400_000_000u64;
    let (end_s, day_s) = (end_us / 1_000_000, 86_400u64);
    let rare_session = sessions as u64 / 3;
    let big_hex = const_hex::encode(id16(big_trace));
    let cases: Vec<(String, String, &str)> = vec![
        (
            "Jaeger: service + common tag (Bash) + last day, limit 20".into(),
            format!(
                "{base}/api/traces?service=ao&tags={}&start={}&end={end_us}&limit=20",
                enc(r#"{"gen_ai.tool.name":"Bash"}"#),
                end_us - day_us
            ),
            "application/json",
        ),
        (
            "Jaeger: service + rare tag (one tool call id) + whole week".into(),
            format!(
                "{base}/api/traces?service={}&tags={}&start={}&end={end_us}&limit=20",
                SERVICES[(rare_session % 4) as usize],
                enc(&format!(
                    r#"{{"gen_ai.tool.call.id":"toolu_{rare_session}_8"}}"#
                )),
                end_us - 7 * day_us
            ),
            "application/json",
        ),
        (
            "Jaeger: one session's id (gen_ai.conversation.id) + whole week".into(),
            format!(
                "{base}/api/traces?service={}&tags={}&start={}&end={end_us}&limit=20",
                SERVICES[(rare_session % 4) as usize],
                enc(&format!(
                    r#"{{"gen_ai.conversation.id":"session-{rare_session}"}}"#
                )),
                end_us - 7 * day_us
            ),
            "application/json",
        ),
        (
            "Jaeger: service + error=true + last day".into(),
            format!(
                "{base}/api/traces?service=ao&tag=error:true&start={}&end={end_us}&limit=20",
                end_us - day_us
            ),
            "application/json",
        ),
        (
            "Tempo TraceQL: service + tool + status, last day".into(),
            format!(
                "{base}/api/search?q={}&start={}&end={end_s}&limit=20",
                enc(
                    r#"{ resource.service.name = "ao" && span.gen_ai.tool.name = "Bash" && status = error }"#
                ),
                end_s - day_s
            ),
            "application/json",
        ),
        (
            "Tempo TraceQL: regex on name + duration, whole week".into(),
            format!(
                "{base}/api/search?q={}&start={}&end={end_s}&limit=20",
                enc(
                    r#"{ resource.service.name = "ao-review" && name =~ "execute_tool (Web.*|Task)" && duration > 1500ms }"#
                ),
                end_s - 7 * day_s
            ),
            "application/json",
        ),
        (
            format!("Jaeger: fetch the {BIG_TRACE_SPANS}-span trace (JSON)"),
            format!("{base}/api/traces/{big_hex}"),
            "application/json",
        ),
        (
            format!("Tempo: fetch the {BIG_TRACE_SPANS}-span trace (protobuf, v2)"),
            format!("{base}/api/v2/traces/{big_hex}"),
            "application/protobuf",
        ),
        (
            format!("Jaeger api_v3: fetch the {BIG_TRACE_SPANS}-span trace (OTLP/JSON)"),
            format!("{base}/api/v3/traces/{big_hex}"),
            "application/json",
        ),
    ];
    println!(
        "\n{:<70} {:>9} {:>9} {:>10} {:>6}",
        "request (HTTP, 20 runs after 2 warm-ups)", "p50 ms", "p95 ms", "bytes", "status"
    );
    for (name, url, accept) in &cases {
        time_get(&client, url, accept, 2).await;
        let (p50, p95, size, status) = time_get(&client, url, accept, 20).await;
        println!("{name:<70} {p50:>9.1} {p95:>9.1} {size:>10} {status:>6}");
    }
    let _ = stop.send(());
    let _ = server.await;
}
