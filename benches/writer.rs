//! Writer benchmark: the store alone, without the network. Agent-shaped requests (the ingest bench's),
//! encoded, are read in place and stored as the receivers store them (`Writer::read_in_place`,
//! `Writer::write_in_place`) from several concurrent tasks on one runtime thread, and the
//! writer thread's own CPU time per stored span is read from /proc: the figure that bounds ingest on
//! a small machine, and far steadier than end-to-end rates on a shared one.
//!
//! `cargo bench --bench writer` (options after `--`: --seconds N --tasks N --spans N, and --batches N
//! to stop after that many batches instead: a fixed amount of work, for instruction counts under
//! `valgrind --tool=callgrind`).

#[path = "support/agent_load.rs"]
mod agent_load;
#[path = "support/procstat.rs"]
#[allow(dead_code)] // shared with the ingest bench; only ThreadUse is used here
mod procstat;

use aotel::store::{self, StoreOptions};
use procstat::ThreadUse;
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let tasks = arg("--tasks", 8);
    let spans = arg("--spans", 100) as usize;
    let batches = arg("--batches", u64::MAX);
    // A fixed amount of work runs until it is done.
    let seconds = arg("--seconds", if batches < u64::MAX { 3600 } else { 8 });
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("writer.db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-submit")
        .enable_all()
        .build()
        .expect("runtime");
    let opened = store::open(&db, &StoreOptions::default()).expect("open store");
    let writer = opened.writer.clone();
    let seq = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let before = (
        ThreadUse::of("self", "aotel-writer"),
        ThreadUse::of("self", "bench-submit"),
    );
    let started = Instant::now();
    let stored: usize = rt.block_on(async {
        let deadline = started + Duration::from_secs(seconds);
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let writer = writer.clone();
            let seq = seq.clone();
            handles.push(tokio::spawn(async move {
                let mut stored = 0;
                while Instant::now() < deadline {
                    let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n > batches {
                        break;
                    }
                    // As the receivers store a protobuf request: read in place (`model::view`).
                    let req = prost::Message::encode_to_vec(&agent_load::request(n, spans));
                    let room = writer.reserve(req.len());
                    let Ok(read) = writer.read_in_place(req.into()) else {
                        panic!("the walk in place declined the agent load");
                    };
                    match async { writer.write_in_place(read, room?).await }.await {
                        Ok(receipt) => stored += receipt.spans,
                        Err(e) => {
                            eprintln!("write failed: {e}");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                stored
            }));
        }
        let mut total = 0;
        for h in handles {
            total += h.await.unwrap_or(0);
        }
        total
    });
    let elapsed = started.elapsed().as_secs_f64();
    let after = (
        ThreadUse::of("self", "aotel-writer"),
        ThreadUse::of("self", "bench-submit"),
    );
    drop(writer);
    rt.block_on(opened.close()).expect("close store");
    let (writer_use, submit_use) = (after.0.since(before.0), after.1.since(before.1));
    let per_span = |ns: u64| ns as f64 / 1e3 / stored.max(1) as f64;
    println!(
        "writer bench: {tasks} tasks, {spans} spans/batch, {stored} spans in {elapsed:.1} s = {:.0} spans/s",
        stored as f64 / elapsed
    );
    println!(
        "writer thread: {:.2} us CPU/span ({:.2} us/span waiting for a CPU); submitting thread (prepare): {:.2} us CPU/span",
        per_span(writer_use.cpu_ns),
        per_span(writer_use.wait_ns),
        per_span(submit_use.cpu_ns),
    );
}
