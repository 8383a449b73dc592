//! Crash consistency: under OTLP load, aotel is SIGKILLed at random moments and restarted on the same
//! file; every span acknowledged before a kill must be there afterwards, the file must stay intact, and
//! the session-file watcher must resume where it stopped.
//!
//! CI runs 5 kills; `AOTEL_CRASH_ROUNDS=20 cargo test --release --test crash` is the long run.

mod common;

use common::AotelProcess;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn start(db: &Path, watch: &Path) -> AotelProcess {
    common::spawn_aotel(&[
        "--db".as_ref(),
        db.as_os_str(),
        "--watch".as_ref(),
        watch.as_os_str(),
        "--watch-poll-ms".as_ref(),
        "20".as_ref(),
    ])
}

fn rounds() -> usize {
    std::env::var("AOTEL_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// A small xorshift so the kill moments vary between runs without a dependency.
fn jitter(state: &mut u64, lo_ms: u64, hi_ms: u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    Duration::from_millis(lo_ms + *state % (hi_ms - lo_ms))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("crash.db");
    // A session file the watcher follows; it grows a few lines per round, across the kills.
    let sessions = dir.path().join("sessions");
    std::fs::create_dir_all(&sessions).expect("dir");
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ao-sessions");
    std::fs::copy(
        fixtures.join("architect.meta.json"),
        sessions.join("architect.meta.json"),
    )
    .expect("meta");
    let lines: Vec<String> = std::fs::read_to_string(fixtures.join("architect.jsonl"))
        .expect("fixture")
        .lines()
        .map(|l| format!("{l}\n"))
        .collect();
    let transcript = sessions.join("architect.jsonl");
    let mut written = 0;
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(1));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 | 1)
        .unwrap_or(88172645463325252);
    let client = reqwest::Client::new();
    let total_rounds = rounds();
    for round in 0..total_rounds {
        let mut aotel = start(&db, &sessions);
        // Part of the transcript arrives while this instance runs; the rest after restarts.
        let upto = ((round + 1) * lines.len()).div_ceil(total_rounds);
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&transcript)
                .expect("transcript");
            for line in &lines[written..upto] {
                f.write_all(line.as_bytes()).expect("append");
            }
            written = upto;
        }
        let url = format!("http://127.0.0.1:{}/v1/traces", aotel.http);
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for _ in 0..4 {
            let (client, url, stop, next, acked) = (
                client.clone(),
                url.clone(),
                stop.clone(),
                next.clone(),
                acked.clone(),
            );
            senders.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(common::load_request(0xc5, n, 50, "crash", 300))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => acked.lock().expect("lock").push(n),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }));
        }
        tokio::time::sleep(jitter(&mut seed, 150, 900)).await;
        aotel.child.kill().expect("SIGKILL");
        aotel.child.wait().expect("reap");
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.await.expect("sender");
        }
        let acked_now: HashSet<u64> = acked.lock().expect("lock").iter().copied().collect();
        assert!(
            !acked_now.is_empty(),
            "round {round}: nothing was acknowledged before the kill"
        );

        // Restart on the same file: everything acknowledged so far must be there, whole.
        let mut again = start(&db, &sessions);
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open read-only");
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(integrity, "ok", "round {round}");
        let counts = common::span_counts_by_trace(&conn);
        for n in &acked_now {
            let count = counts
                .get(&common::load_trace_id(0xc5, *n))
                .copied()
                .unwrap_or(0);
            assert_eq!(
                count, 50,
                "round {round}: acknowledged request {n} has {count} of 50 spans"
            );
        }
        // Session counters were committed with the spans, so they agree with them.
        let (counted, stored): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT SUM(json_extract(counters, '$.spans')) FROM sessions WHERE key LIKE 'crash-%'),
                        (SELECT COUNT(*) FROM spans WHERE session LIKE 'crash-%')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("counters");
        assert_eq!(
            counted, stored,
            "round {round}: session counters match the stored spans"
        );
        // The attribute index is written behind the spans; rows a kill lost were rebuilt at the start,
        // before the listeners opened: every span stored before the kill has its five entries (three
        // attributes, its time and its service).
        let crash_seqs: std::collections::HashSet<i64> = conn
            .prepare("SELECT seq FROM spans WHERE session LIKE 'crash-%'")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("seqs");
        let spans = crash_seqs.len();
        let indexed = aotel::store::index::entries(&conn)
            .expect("index entries")
            .iter()
            .filter(|e| crash_seqs.contains(&e.2))
            .count();
        assert_eq!(
            indexed,
            5 * spans,
            "round {round}: every span's entries are in the index"
        );
        drop(conn);
        if written == lines.len() {
            // The whole transcript has been appended across the kills: the watcher resumed each time.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let counters: Option<String> = rusqlite::Connection::open_with_flags(
                    &db,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .and_then(|c| {
                    c.query_row(
                        "SELECT counters FROM sessions WHERE key = 'd796e8ba-ef3c-453f-97d7-b644930563f5'",
                        [],
                        |r| r.get(0),
                    )
                })
                .ok();
                let v: serde_json::Value =
                    serde_json::from_str(counters.as_deref().unwrap_or("{}")).unwrap_or_default();
                if v["tool_calls"] == 5 && v["runs"] == 2 && v["tool_errors"] == 1 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the watched session is incomplete after restarts: {v}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        again.child.kill().expect("kill");
        again.child.wait().expect("reap");
        eprintln!(
            "round {}/{total_rounds}: {} requests acknowledged so far, all present",
            round + 1,
            acked_now.len()
        );
    }
}
