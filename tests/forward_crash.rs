//! aotel as a real child process (the built binary) SIGKILLed while a batch is in flight, then restarted
//! on the same database: everything arrives, and only the batch that was in flight arrives twice.
//! Also `aotel replay` from the command line.

mod common;
mod forward_support;

use common::AotelProcess;
use forward_support::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The built binary, forwarding traces to `forward`; on fresh ports each time (`common::spawn_aotel`
/// tries others if another process takes one first).
fn start_aotel(db: &Path, forward: &str) -> AotelProcess {
    let args: [&std::ffi::OsStr; 10] = [
        "--db".as_ref(),
        db.as_os_str(),
        "--forward".as_ref(),
        forward.as_ref(),
        "--forward-signals".as_ref(),
        "traces".as_ref(),
        "--forward-batch".as_ref(),
        "500".as_ref(),
        "--forward-max-backoff".as_ref(),
        "1".as_ref(),
    ];
    // It waits for the child on this thread; the fake destination's tasks go on on the others.
    tokio::task::block_in_place(|| common::spawn_aotel(&args))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_forward_then_restart_delivers_everything_with_duplicates_only_from_the_batch_in_flight(
) {
    // The fourth request is never answered: it is in flight when aotel is killed.
    let mut fake = FakeOtlp::start(|i, _| if i == 3 { Reply::Hold } else { Reply::Ok }).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aotel.db");
    let mut aotel = start_aotel(&db, &fake.url());

    let mut all: HashSet<(Vec<u8>, Vec<u8>)> = HashSet::new();
    for round in 0..10 {
        let req = traces(&format!("kill{round}"), 5, 100);
        all.extend(span_ids(&req));
        send_traces(loopback(aotel.http), &req).await;
    }
    assert_eq!(all.len(), 5000);
    fake.wait_requests(4, Duration::from_secs(30)).await;
    aotel.child.kill().expect("SIGKILL");
    aotel.child.wait().expect("reaped");
    let held: HashSet<_> = fake.requests()[3].spans.iter().cloned().collect();
    assert!(!held.is_empty());

    let again = start_aotel(&db, &fake.url());
    wait_for("every span to arrive", Duration::from_secs(60), || async {
        let got: HashSet<_> = fake.accepted_spans().into_iter().collect();
        (got.len() == all.len()).then_some(())
    })
    .await;
    let got: HashSet<_> = fake.accepted_spans().into_iter().collect();
    assert_eq!(got, all, "exactly the ingested spans arrived");
    let status = wait_caught_up(loopback(again.api), Duration::from_secs(10)).await;
    assert_eq!(status["destinations"][0]["state"], "ok", "{status}");

    let mut seen: HashMap<(Vec<u8>, Vec<u8>), usize> = HashMap::new();
    for r in fake.requests() {
        for id in r.spans {
            *seen.entry(id).or_default() += 1;
        }
    }
    let twice: HashSet<_> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(
        twice.is_subset(&held),
        "{} spans arrived twice that were not in the batch in flight",
        twice.difference(&held).count()
    );
    assert_eq!(
        twice, held,
        "the batch in flight is sent again after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_the_command_line() {
    let mut fake = FakeOtlp::start(|_, _| Reply::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aotel.db");
    {
        // Fill a database through a running aotel whose forwarding goes nowhere useful.
        let nowhere = Refusing::bind();
        let aotel = start_aotel(&db, &format!("http://{}/v1/traces", nowhere.addr()));
        send_traces(loopback(aotel.http), &traces("cli", 3, 7)).await;
    }
    let out = tokio::task::spawn_blocking({
        let (db, url) = (db.clone(), fake.url());
        move || {
            Command::new(env!("CARGO_BIN_EXE_aotel"))
                .arg("replay")
                .args([
                    "--to",
                    &url,
                    "--signals",
                    "traces",
                    "--since",
                    "2025-01-01T00:00:00Z",
                    "--header",
                    "X-Scope-OrgID: backfill",
                ])
                .arg("--db")
                .arg(db)
                .output()
                .expect("run aotel replay")
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["spans"], 21, "{report}");
    fake.wait_requests(1, Duration::from_secs(5)).await;
    assert_eq!(fake.accepted_spans().len(), 21);
    assert_eq!(fake.requests()[0].headers["x-scope-orgid"], "backfill");
}
