//! Retention by age and by size: the old goes, whole sessions at a time; the new stays; space is reused;
//! open live views are told.

mod common;
mod live_support;

use aotel::store::retention::RetentionPolicy;
use aotel::Config;
use common::TestServer;
use reqwest::StatusCode;
use std::time::Duration;

fn now_ns() -> u64 {
    aotel::model::time::now_ns()
}

/// One session of `spans` spans, ending `age` ago, each carrying `pad` bytes of tool output.
fn session(key: &str, trace_byte: u8, age: Duration, spans: usize, pad: usize) -> String {
    let end = now_ns() - age.as_nanos() as u64;
    let spans: Vec<serde_json::Value> = (0..spans)
        .map(|i| {
            serde_json::json!({
                "traceId": format!("{:02x}", trace_byte).repeat(16),
                "spanId": format!("{:016x}", i + 1),
                "parentSpanId": if i == 0 { String::new() } else { format!("{:016x}", 1) },
                "name": if i == 0 { "invoke_agent a".to_string() } else { "execute_tool Bash".to_string() },
                "startTimeUnixNano": (end - 1_000_000_000).to_string(),
                "endTimeUnixNano": end.to_string(),
                "attributes": [
                    {"key": "gen_ai.conversation.id", "value": {"stringValue": key}},
                    {"key": "gen_ai.operation.name", "value": {"stringValue": if i == 0 { "invoke_agent" } else { "execute_tool" }}},
                    {"key": "gen_ai.tool.call.result", "value": {"stringValue": "x".repeat(pad)}}
                ]
            })
        })
        .collect();
    serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).to_string()
}

async fn send(server: &TestServer, body: String) {
    let resp = reqwest::Client::new()
        .post(server.otlp_http("/v1/traces"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    assert!(resp.status().is_success());
}

async fn exists(server: &TestServer, key: &str) -> bool {
    let resp = reqwest::get(server.url(&format!("/api/sessions/{key}")))
        .await
        .expect("GET");
    match resp.status() {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        s => panic!("unexpected {s}"),
    }
}

async fn run(server: &TestServer) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(server.url("/api/retention/run"))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("json")
}

fn config(dir: &tempfile::TempDir, policy: RetentionPolicy) -> Config {
    let mut c = Config::with_db(dir.path().join("a.db"));
    c.retention = policy;
    c.retention_interval = Duration::from_secs(3600);
    c
}

/// A server keeping one day, with a session "old" that ended three days ago and "new", a minute ago,
/// of `spans` spans each.
async fn old_and_new(spans: usize) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = RetentionPolicy {
        max_age: Some(Duration::from_secs(86_400)),
        max_bytes: None,
    };
    let server = TestServer::start_with(config(&dir, policy)).await;
    // The policy also runs once at startup; sent before that pass, "old" could go before the test looks.
    after_startup_pass(&server).await;
    let old = session("old", 0x01, Duration::from_secs(3 * 86_400), spans, 10);
    send(&server, old).await;
    send(
        &server,
        session("new", 0x02, Duration::from_secs(60), spans, 10),
    )
    .await;
    (dir, server)
}

#[tokio::test]
async fn age_removes_old_sessions_whole_and_keeps_new_ones() {
    let (_dir, server) = old_and_new(20).await;
    let report = run(&server).await;
    assert_eq!(report["sessions"], 1, "{report}");
    assert_eq!(report["spans"], 20);
    assert!(!exists(&server, "old").await);
    assert!(exists(&server, "new").await);
    let trace = reqwest::get(server.url(&format!("/api/trace/{}", "01".repeat(16))))
        .await
        .expect("GET");
    assert_eq!(
        trace.status(),
        StatusCode::NOT_FOUND,
        "the old trace is gone whole"
    );
    let status = server.get_json("/api/retention").await;
    assert_eq!(status["max_age_seconds"], 86_400);
    assert_eq!(status["total"]["sessions"], 1);
    let conn = rusqlite::Connection::open(&server.db).expect("open");
    let entries = aotel::store::index::entries(&conn).expect("entries");
    let seqs: std::collections::HashSet<i64> = conn
        .prepare("SELECT seq FROM spans")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("seqs");
    let stale = entries.iter().filter(|e| !seqs.contains(&e.2)).count();
    assert_eq!(stale, 0, "the attribute index lost the deleted spans too");
    assert!(!entries.is_empty(), "the new session is still indexed");
    let ids = |sql: &str| -> Vec<Vec<u8>> {
        conn.prepare(sql)
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect(sql)
    };
    assert_eq!(
        ids("SELECT trace_id FROM traces ORDER BY trace_id"),
        ids("SELECT DISTINCT trace_id FROM spans ORDER BY trace_id"),
        "the old trace's number went with it"
    );
    drop(conn);
    // Running again finds nothing more to do.
    assert_eq!(run(&server).await["sessions"], 0);
    server.stop().await;
}

/// The number `traces` gave trace `byte`, if it is stored.
fn trace_number(server: &TestServer, byte: u8) -> Option<i64> {
    let conn = rusqlite::Connection::open(&server.db).expect("open");
    conn.query_row(
        "SELECT tn FROM traces WHERE trace_id = ?1",
        [vec![byte; 16]],
        |r| r.get(0),
    )
    .ok()
}

async fn after_startup_pass(server: &TestServer) {
    common::eventually("the startup retention pass", || async {
        let s = server.get_json("/api/retention").await;
        (!s["last_run_unix_nano"].is_null()).then_some(())
    })
    .await;
}

/// Sends an old session last, so that its trace has the highest number, and lets retention delete it;
/// the number its trace had.
async fn delete_newest_trace(server: &TestServer, key: &str, byte: u8) -> i64 {
    let old = Duration::from_secs(3 * 86_400);
    send(server, session(key, byte, old, 3, 10)).await;
    let tn = trace_number(server, byte).expect("the old trace is numbered");
    assert_eq!(run(server).await["sessions"], 1);
    assert_eq!(trace_number(server, byte), None, "deleted with its session");
    tn
}

/// Sends a recent session; the number its trace got.
async fn new_trace(server: &TestServer, key: &str, byte: u8) -> i64 {
    send(server, session(key, byte, Duration::from_secs(60), 3, 10)).await;
    trace_number(server, byte).expect("numbered")
}

#[tokio::test]
async fn a_deleted_traces_number_is_never_given_again() {
    // A session's traces are kept by number; a number given again would make a row left by a deleted
    // trace (another session's, which shared it) point at an unrelated new trace.
    let dir = tempfile::tempdir().expect("tmp");
    let policy = || RetentionPolicy {
        max_age: Some(Duration::from_secs(86_400)),
        max_bytes: None,
    };
    let server = TestServer::start_with(config(&dir, policy())).await;
    after_startup_pass(&server).await;
    let first = new_trace(&server, "new", 0x02).await;
    let old = delete_newest_trace(&server, "old", 0x01).await;
    assert!(old > first);
    let later = new_trace(&server, "later", 0x03).await;
    assert!(
        later > old,
        "trace {later} took deleted trace {old}'s number"
    );

    // Across a restart too: the highest number given is kept, not derived from the traces left.
    let old2 = delete_newest_trace(&server, "old2", 0x04).await;
    server.stop().await;
    let server = TestServer::start_with(config(&dir, policy())).await;
    after_startup_pass(&server).await;
    let latest = new_trace(&server, "latest", 0x05).await;
    assert!(
        latest > old2,
        "after a restart, trace {latest} took {old2}'s number"
    );
    for key in ["new", "later", "latest"] {
        let tree = server.get_json(&format!("/api/sessions/{key}")).await;
        assert_eq!(
            tree["session"]["traces"], 1,
            "{key} has its one trace: {tree}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn size_cap_removes_the_oldest_until_it_fits() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start_with(config(&dir, RetentionPolicy::default())).await;
    for (i, key) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
        // Oldest first: s1 ended 4 hours ago, s4 one hour ago; ~1.6 MB each.
        send(
            &server,
            session(
                key,
                0x10 + i as u8,
                Duration::from_secs(3600 * (4 - i as u64)),
                8,
                200_000,
            ),
        )
        .await;
    }
    let (db, dir2) = server.stop().await;
    let used = {
        let c = rusqlite::Connection::open(&db).expect("open");
        aotel::store::retention::used_bytes(&c).expect("size")
    };
    let cap = used / 2;
    let mut c = config(
        &dir,
        RetentionPolicy {
            max_age: None,
            max_bytes: Some(cap),
        },
    );
    c.db = db.clone();
    let server = TestServer::start_with(c).await;
    // The periodic run starts at once; an explicit run then has at most the rest to do.
    let report = run(&server).await;
    assert!(
        report["db_bytes"].as_u64().unwrap_or(u64::MAX) <= cap,
        "{report} over cap {cap}"
    );
    let status = common::eventually("retention totals", || async {
        let s = server.get_json("/api/retention").await;
        (s["total"]["sessions"].as_u64().unwrap_or(0) >= 2).then_some(s)
    })
    .await;
    assert_eq!(status["max_bytes"], cap);
    assert!(!exists(&server, "s1").await, "the oldest goes first");
    assert!(exists(&server, "s4").await, "the newest stays");
    server.stop().await;
    // Freed pages leave the file's page count (incremental vacuum), not its free list. The file itself
    // grows and shrinks by whole 32 MiB chunks when the checkpointer does the last copy, so it is at most
    // its pages rounded up to a chunk (exactly its pages when the writer's final checkpoint did it).
    let pages = rusqlite::Connection::open(&db)
        .and_then(|c| aotel::store::pages_bytes(&c))
        .expect("page count");
    assert!(
        pages < used,
        "free pages were handed back: {pages} bytes of pages, {used} used before"
    );
    let chunk: u64 = 32 << 20;
    let file = std::fs::metadata(&db).expect("db").len();
    assert!(
        file <= pages.div_ceil(chunk) * chunk,
        "the file ({file} bytes) is its pages ({pages}) rounded up to a growth chunk at most"
    );
    drop(dir2);
}

#[tokio::test]
async fn run_without_a_policy_is_a_clear_400() {
    let server = TestServer::start().await;
    let resp = reqwest::Client::new()
        .post(server.url("/api/retention/run"))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(body["error"]
        .as_str()
        .unwrap_or("")
        .contains("--retention-age"));
}

#[tokio::test]
async fn data_a_forward_destination_still_needs_is_kept_unless_the_cap_forces_it() {
    let dir = tempfile::tempdir().expect("tmp");
    // A destination that is never up: nothing is ever acknowledged by it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let mut c = config(
        &dir,
        RetentionPolicy {
            max_age: Some(Duration::from_secs(86_400)),
            max_bytes: None,
        },
    );
    c.forward.destinations =
        vec![
            aotel::forward::DestinationSpec::parse(&format!("grpc://127.0.0.1:{port}"))
                .expect("url"),
        ];
    let server = TestServer::start_with(c).await;
    send(
        &server,
        session("old-unsent", 0x21, Duration::from_secs(3 * 86_400), 5, 10),
    )
    .await;
    let report = run(&server).await;
    assert_eq!(report["sessions"], 0, "{report}");
    assert_eq!(report["kept_for_forwarding"], 1, "{report}");
    assert!(exists(&server, "old-unsent").await);
    let (db, _) = server.stop().await;

    // Under a size cap the same data has to go, and what was never forwarded is counted.
    let mut c = config(
        &dir,
        RetentionPolicy {
            max_age: None,
            max_bytes: Some(1),
        },
    );
    c.db = db;
    c.forward.destinations =
        vec![
            aotel::forward::DestinationSpec::parse(&format!("grpc://127.0.0.1:{port}"))
                .expect("url"),
        ];
    let server = TestServer::start_with(c).await;
    run(&server).await;
    let status = common::eventually("the forced deletion", || async {
        let s = server.get_json("/api/retention").await;
        (s["total"]["sessions"].as_u64().unwrap_or(0) >= 1).then_some(s)
    })
    .await;
    assert_eq!(status["total"]["unforwarded_spans_dropped"], 5, "{status}");
    assert!(!exists(&server, "old-unsent").await);
    server.stop().await;
}

fn keys(rows: &serde_json::Value) -> Vec<&str> {
    let mut k: Vec<&str> = rows
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["key"].as_str()).collect())
        .unwrap_or_default();
    k.sort();
    k
}

#[tokio::test]
async fn open_live_views_are_told_when_sessions_are_deleted() {
    use live_support::Ws;
    let (_dir, server) = old_and_new(3).await;

    let mut list = Ws::connect(server.api, "").await;
    assert_eq!(list.next().await["type"], "hello");
    assert_eq!(
        keys(&list.next_of("snapshot").await["sessions"]),
        ["new", "old"]
    );
    let mut view = Ws::connect(server.api, "?scope=session&session=old").await;
    assert_eq!(view.next().await["type"], "hello");
    assert_eq!(view.next_of("snapshot").await["session"]["key"], "old");

    assert_eq!(run(&server).await["sessions"], 1);
    // No delta can say "gone": both views get a fresh snapshot, unasked.
    let snap = list.next().await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(keys(&snap["sessions"]), ["new"]);
    let snap = view.next().await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert!(snap["session"].is_null(), "{snap}");
    assert_eq!(snap["spans"], serde_json::json!([]));
    server.stop().await;
}
