//! The live view over a real WebSocket client: snapshot then deltas, each kind of subscription, the
//! schema's errors, the span API the page uses, and the slow-client policy (skip ahead, or disconnect).

mod common;
mod live_support;

use aotel::Config;
use common::TestServer;
use live_support::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpSocket;

fn keys(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["key"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn find<'a>(rows: &'a Value, key: &str) -> &'a Value {
    rows.as_array()
        .and_then(|a| a.iter().find(|r| r["key"] == key))
        .unwrap_or_else(|| panic!("no session {key} in {rows}"))
}

/// A session with one in-progress run: the row stays `running`.
async fn start_session(client: &reqwest::Client, s: &TestServer, key: &str, agent: &str, n: u64) {
    let t0 = now_ns();
    let run = run_span(
        key,
        agent,
        &trace_hex(n),
        &span_hex(n),
        t0,
        t0 + 1_000_000,
        true,
    );
    post(client, s.http, "/v1/traces", &traces("svc-a", vec![run])).await;
}

#[tokio::test]
async fn snapshot_then_deltas_for_all_sessions() {
    let s = TestServer::start().await;
    let client = reqwest::Client::new();
    start_session(&client, &s, "sess-old", "planner", 1).await;

    let mut ws = Ws::connect(s.api, "").await;
    let hello = ws.next().await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["server"], "aotel");
    let snap = ws.next().await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["subscription"]["scope"], "all");
    assert_eq!(keys(&snap["sessions"]), vec!["sess-old"]);
    let row = find(&snap["sessions"], "sess-old");
    assert_eq!(row["status"], "running");
    assert_eq!(row["agent"], "planner");
    assert_eq!(row["runs"], 1);
    assert_eq!(snap["total"], 1);
    assert_eq!(snap["agents"], json!(["planner"]));
    assert_eq!(snap["services"], json!(["svc-a"]));

    // A new session arrives as a delta, after it is committed.
    start_session(&client, &s, "sess-new", "coder", 2).await;
    let d = ws.next().await;
    assert_eq!(d["type"], "delta", "{d}");
    assert_eq!(keys(&d["sessions"]), vec!["sess-new"]);
    assert_eq!(
        d["spans"],
        json!([]),
        "the session list does not carry spans unless asked"
    );
    assert_eq!(d["removed"], json!([]));

    // Counters of an existing session move: a failed tool call under its run.
    let t = now_ns();
    let tool = tool_span(
        "sess-old",
        &trace_hex(1),
        &span_hex(10),
        &span_hex(1),
        "Bash",
        "{\"command\":\"false\"}",
        "exit 1",
        t,
        true,
    );
    post(&client, s.http, "/v1/traces", &traces("svc-a", vec![tool])).await;
    let d = ws.next().await;
    let row = find(&d["sessions"], "sess-old");
    assert_eq!(row["tool_calls"], 1);
    assert_eq!(row["tool_errors"], 1);
    assert_eq!(row["spans"], 2);

    // The run ends: the same span arrives again without ao.in_progress, and the session is finished.
    let end = now_ns();
    let run = run_span(
        "sess-old",
        "planner",
        &trace_hex(1),
        &span_hex(1),
        end - 5_000_000,
        end,
        false,
    );
    post(&client, s.http, "/v1/traces", &traces("svc-a", vec![run])).await;
    let d = ws.next().await;
    assert_eq!(find(&d["sessions"], "sess-old")["status"], "finished");
}

#[tokio::test]
async fn sessions_with_spans_option_carry_span_summaries() {
    let s = TestServer::start().await;
    let client = reqwest::Client::new();
    let mut ws = Ws::connect(s.api, "?spans=true").await;
    let snap = ws.next_of("snapshot").await;
    assert_eq!(snap["subscription"]["spans"], true);
    assert_eq!(snap["sessions"], json!([]));
    let t = now_ns();
    let run = run_span("s1", "a", &trace_hex(5), &span_hex(5), t, t + 1, true);
    let tool = tool_span(
        "s1",
        &trace_hex(5),
        &span_hex(6),
        &span_hex(5),
        "Read",
        "{\"file_path\":\"/etc/hosts\"}",
        "127.0.0.1 localhost",
        t,
        false,
    );
    post(
        &client,
        s.http,
        "/v1/traces",
        &traces("svc", vec![run, tool]),
    )
    .await;
    let d = ws.next_of("delta").await;
    let spans = d["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2, "{d}");
    let tool = spans
        .iter()
        .find(|s| s["operation"] == "execute_tool")
        .expect("tool span");
    assert_eq!(tool["tool"], "Read");
    assert_eq!(
        tool["preview"], "/etc/hosts",
        "a tool call carries a one-line preview of its arguments"
    );
    assert_eq!(tool["parent_span_id"], span_hex(5));
    assert_eq!(tool["session"], "s1");
}

#[tokio::test]
async fn one_session_subscription_gets_its_tree_then_only_its_deltas() {
    let s = TestServer::start().await;
    let client = reqwest::Client::new();
    let t = now_ns();
    let (trace, run) = (trace_hex(7), span_hex(7));
    let spans = vec![
        run_span("mine", "researcher", &trace, &run, t, t + 10_000_000, true),
        tool_span(
            "mine",
            &trace,
            &span_hex(8),
            &run,
            "Grep",
            "{\"pattern\":\"^from lib\"}",
            "commands/ao-new",
            t + 1,
            false,
        ),
    ];
    post(&client, s.http, "/v1/traces", &traces("svc", spans)).await;
    post(
        &client,
        s.http,
        "/v1/logs",
        &log_event("svc", "mine", "claude_code.user_prompt", "hello"),
    )
    .await;

    let mut ws = Ws::connect(s.api, "").await;
    ws.next_of("snapshot").await;
    ws.send(json!({ "v": 1, "type": "subscribe", "scope": "session", "session": "mine" }))
        .await;
    let snap = ws.next_of("snapshot").await;
    assert_eq!(
        snap["subscription"],
        json!({ "scope": "session", "session": "mine" })
    );
    assert_eq!(snap["session"]["key"], "mine");
    assert_eq!(snap["traces"], json!([trace]));
    let roots = snap["spans"].as_array().expect("span tree");
    assert_eq!(roots.len(), 1, "{snap}");
    assert_eq!(roots[0]["operation"], "invoke_agent");
    assert_eq!(roots[0]["children"][0]["tool"], "Grep");
    assert_eq!(roots[0]["children"][0]["preview"], "^from lib");
    assert!(
        roots[0].get("attributes").is_none(),
        "snapshots carry summaries; /api/spans has the attributes"
    );
    assert_eq!(snap["logs"][0]["event_name"], "claude_code.user_prompt");
    assert_eq!(snap["logs"][0]["body"], "hello");

    // Another session's commit first, then ours: the first delta we get must be ours.
    start_session(&client, &s, "theirs", "other", 9).await;
    let tool = tool_span(
        "mine",
        &trace,
        &span_hex(11),
        &run,
        "Edit",
        "{\"file_path\":\"a.py\"}",
        "ok",
        now_ns(),
        false,
    );
    post(&client, s.http, "/v1/traces", &traces("svc", vec![tool])).await;
    let d = ws.next().await;
    assert_eq!(d["type"], "delta");
    assert_eq!(keys(&d["sessions"]), vec!["mine"], "{d}");
    assert_eq!(d["spans"].as_array().map(Vec::len), Some(1));
    assert_eq!(d["spans"][0]["span_id"], span_hex(11));
    assert_eq!(d["sessions"][0]["tool_calls"], 2);

    post(
        &client,
        s.http,
        "/v1/logs",
        &log_event("svc", "theirs", "x", "not for us"),
    )
    .await;
    post(
        &client,
        s.http,
        "/v1/logs",
        &log_event("svc", "mine", "claude_code.tool_result", "done"),
    )
    .await;
    let d = ws.next().await;
    assert_eq!(d["logs"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(d["logs"][0]["body"], "done");
    assert_eq!(d["logs"][0]["session"], "mine");
}

#[tokio::test]
async fn filter_subscription_sees_matching_sessions_and_removals() {
    let s = TestServer::start().await;
    let client = reqwest::Client::new();
    start_session(&client, &s, "r1", "reviewer", 21).await;
    start_session(&client, &s, "c1", "coder", 22).await;

    let mut ws = Ws::connect(s.api, "?agent=reviewer&status=running").await;
    ws.next_of("hello").await;
    let snap = ws.next().await;
    assert_eq!(snap["subscription"]["scope"], "filter");
    assert_eq!(snap["subscription"]["agent"], "reviewer");
    assert_eq!(keys(&snap["sessions"]), vec!["r1"]);
    assert_eq!(snap["total"], 1);

    // A coder session does not match; a second reviewer session does and is the next message.
    start_session(&client, &s, "c2", "coder", 23).await;
    start_session(&client, &s, "r2", "reviewer", 24).await;
    let d = ws.next().await;
    assert_eq!(keys(&d["sessions"]), vec!["r2"], "{d}");

    // r1's run ends: it no longer matches status=running and is announced as removed.
    let end = now_ns();
    let run = run_span(
        "r1",
        "reviewer",
        &trace_hex(21),
        &span_hex(21),
        end - 1_000,
        end,
        false,
    );
    post(&client, s.http, "/v1/traces", &traces("svc-a", vec![run])).await;
    let d = ws.next().await;
    assert_eq!(d["removed"], json!(["r1"]), "{d}");
    assert_eq!(d["sessions"], json!([]));

    // Text search narrows too (case-insensitive, over key, title and agent).
    ws.send(json!({ "v": 1, "type": "subscribe", "scope": "filter", "q": "REVIEWER SESS" }))
        .await;
    let snap = ws.next_of("snapshot").await;
    let mut got = keys(&snap["sessions"]);
    got.sort();
    assert_eq!(got, vec!["r1", "r2"]);
}

#[tokio::test]
async fn malformed_requests_are_answered_not_fatal() {
    let s = TestServer::start().await;
    let bad = tokio_tungstenite::connect_async(format!("ws://{}/ws?status=sleeping", s.api)).await;
    match bad {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
        other => panic!("a bad subscription in the URL should be refused with 400, got {other:?}"),
    }
    let mut ws = Ws::connect(s.api, "").await;
    ws.next_of("snapshot").await;
    for bad in [
        json!({ "v": 2, "type": "subscribe" }),
        json!({ "v": 1, "type": "subscribe", "scope": "session" }),
        json!({ "v": 1, "type": "subscribe", "limit": 100000 }),
        json!({ "v": 1, "type": "explode" }),
    ] {
        ws.send(bad.clone()).await;
        let e = ws.next().await;
        assert_eq!(e["type"], "error", "{bad} → {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.send(json!({ "v": 1, "type": "ping", "id": 42 })).await;
    let pong = ws.next().await;
    assert_eq!(pong, json!({ "v": 1, "type": "pong", "id": 42 }));
}

#[tokio::test]
async fn span_api_returns_one_span_with_attributes() {
    let s = TestServer::start().await;
    let client = reqwest::Client::new();
    let t = now_ns();
    let (trace, run) = (trace_hex(31), span_hex(31));
    let tool = tool_span(
        "sx",
        &trace,
        &span_hex(32),
        &run,
        "Bash",
        "{\"command\":\"ls\"}",
        "<b>not bold</b>",
        t,
        true,
    );
    post(&client, s.http, "/v1/traces", &traces("svc", vec![tool])).await;
    let v = s
        .get_json(&format!("/api/spans/{trace}/{}", span_hex(32)))
        .await;
    assert_eq!(v["tool"], "Bash");
    assert_eq!(v["status"], "error");
    assert_eq!(
        v["attributes"]["gen_ai.tool.call.result"],
        "<b>not bold</b>"
    );
    assert_eq!(v["resource"]["service.name"], "svc");
    let missing = reqwest::get(s.url(&format!("/api/spans/{trace}/{}", span_hex(99))))
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let bad = reqwest::get(s.url("/api/spans/nothex/00"))
        .await
        .expect("GET");
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    let s = TestServer::start().await;
    for (path, ty) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let resp = reqwest::get(s.url(path)).await.expect("GET");
        assert_eq!(resp.status(), 200, "{path}");
        let ct = resp.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with(ty), "{path}: {ct}");
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!resp.text().await.expect("body").is_empty());
    }
}

#[tokio::test]
async fn clients_are_told_when_the_server_stops() {
    let s = TestServer::start().await;
    let mut ws = Ws::connect(s.api, "").await;
    ws.next_of("snapshot").await;
    let (_db, _dir) = s.stop().await;
    let frame = loop {
        match tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(&mut ws.stream)).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = frame.expect("close frame with a code");
    assert_eq!(u16::from(frame.code), 1001, "going away");
}

/// A WebSocket client with a tiny receive buffer, so that not reading stalls the server's sends fast.
async fn stalled_client(api: std::net::SocketAddr, query: &str) -> Ws {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket.connect(api).await.expect("connect");
    let (stream, _) = tokio_tungstenite::client_async(
        format!("ws://{api}/ws{query}"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .expect("WebSocket handshake");
    Ws { stream }
}

/// Commits `batches` requests of `per` spans with 64 KiB names (big deltas fill socket buffers fast),
/// all in session `key`. Every request must succeed: a stalled client must not block ingest.
async fn flood(s: &TestServer, key: &str, batches: u64, per: u64) {
    let client = reqwest::Client::new();
    let name = "n".repeat(64 << 10);
    let trace = trace_hex(777);
    for b in 0..batches {
        let t = now_ns();
        let spans = (0..per)
            .map(|i| {
                SpanSpec {
                    trace: &trace,
                    span: &span_hex(1_000 + b * per + i),
                    parent: Some(&span_hex(777)),
                    name: &name,
                    start_ns: t,
                    end_ns: t + 1_000,
                    error: false,
                    attrs: vec![("gen_ai.conversation.id", json!(key))],
                }
                .json()
            })
            .collect();
        post(&client, s.http, "/v1/traces", &traces("flood", spans)).await;
    }
}

const BATCHES: u64 = 40;
const PER_BATCH: u64 = 8;

/// A server with the given live-view settings, a client that stops reading once its snapshot is in
/// flight, and one that reads (its snapshot already read).
async fn stalled_and_reading(
    live: impl FnOnce(&mut aotel::live::LiveOptions),
) -> (TestServer, tempfile::TempDir, Ws, Ws) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::with_db(dir.path().join("aotel.db"));
    live(&mut config.live);
    let s = TestServer::start_with(config).await;
    let stalled = stalled_client(s.api, "?spans=true").await;
    let mut reading = Ws::connect(s.api, "?spans=true").await;
    reading.next_of("snapshot").await;
    (s, dir, stalled, reading)
}

/// Stores `BATCHES` × `PER_BATCH` spans while `reading` follows; gives it back with the spans it saw.
async fn flood_while_reading(s: &TestServer, mut reading: Ws) -> (Ws, u64) {
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < BATCHES * PER_BATCH {
            let d = reading.next_of("delta").await;
            seen += d["spans"].as_array().map_or(0, |a| a.len() as u64);
        }
        (reading, seen)
    });
    flood(s, "flooded", BATCHES, PER_BATCH).await;
    reader.await.expect("reading client")
}

#[tokio::test]
async fn a_client_that_stops_reading_is_skipped_ahead_with_a_fresh_snapshot() {
    let (s, _dir, mut slow, fast) = stalled_and_reading(|live| {
        live.client_queue = 4;
        live.send_timeout = Duration::from_secs(600);
    })
    .await;
    // The slow client has its snapshot in flight; from here on it reads nothing until ingest is done.
    let (_, seen) = flood_while_reading(&s, fast).await;
    assert_eq!(seen, BATCHES * PER_BATCH, "a reading client got every span");

    // Now the slow client reads: it missed updates, is told so, and gets a snapshot with everything.
    let mut missed = None;
    loop {
        let m = slow.next().await;
        match m["type"].as_str() {
            Some("missed") => missed = m["missed"].as_u64(),
            Some("snapshot") if missed.is_some() => {
                let row = find(&m["sessions"], "flooded");
                assert_eq!(
                    row["spans"],
                    BATCHES * PER_BATCH,
                    "the fresh snapshot is up to date"
                );
                break;
            }
            _ => {}
        }
    }
    assert!(
        missed.is_some_and(|n| n > 0),
        "the slow client was told how many updates it missed"
    );
    // It stays connected and keeps following.
    start_session(&reqwest::Client::new(), &s, "after", "a", 5_000).await;
    let d = slow.next_of("delta").await;
    assert_eq!(keys(&d["sessions"]), vec!["after"]);
}

#[tokio::test]
async fn a_client_whose_socket_stays_full_is_disconnected() {
    let (s, _dir, mut stalled, fast) = stalled_and_reading(|live| {
        live.send_timeout = Duration::from_millis(200);
    })
    .await;
    let (mut fast, _) = flood_while_reading(&s, fast).await;

    // The stalled client finds its connection ended after what was already in flight.
    let mut messages = 0;
    let mut spans = 0;
    while let Some(m) = stalled.try_next().await {
        messages += 1;
        spans += m["spans"].as_array().map_or(0, |a| a.len() as u64);
        assert_ne!(
            m["type"], "missed",
            "a stalled client is dropped, not resynced"
        );
    }
    assert!(messages > 0, "it got its hello before stalling");
    assert!(
        spans < BATCHES * PER_BATCH,
        "it was cut off instead of being waited for ({spans} spans delivered)"
    );

    // The server is fine and the other client still follows.
    start_session(&reqwest::Client::new(), &s, "after", "a", 6_000).await;
    let d = fast.next_of("delta").await;
    assert_eq!(keys(&d["sessions"]), vec!["after"]);
}

#[tokio::test]
async fn with_a_read_token_the_websocket_needs_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::with_db(dir.path().join("aotel.db"));
    config.tokens = aotel::auth::Tokens {
        ingest: None,
        read: Some("s3cret".into()),
    };
    let s = TestServer::start_with(config).await;
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", s.api)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401 without the token, got {other:?}"),
    }
    let mut ws = Ws::connect(s.api, "?token=s3cret&status=running").await;
    let snap = ws.next_of("snapshot").await;
    assert_eq!(
        snap["subscription"]["status"], "running",
        "the token parameter is not a filter"
    );
}

/// A session known only from log events (Claude Code's own telemetry sends no run spans) has no end to
/// wait for: it is running while records come, finished once idle, running again with a new record;
/// the API, its status filter and the live view all follow.
#[tokio::test]
async fn a_log_only_session_finishes_when_idle_and_views_follow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::with_db(dir.path().join("aotel.db"));
    // Long enough that the checks below see it running even on a loaded machine.
    config.store.session_idle = Duration::from_secs(6);
    let s = TestServer::start_with(config).await;
    let client = reqwest::Client::new();
    // Stamped now: a record repeated byte for byte would be a duplicate.
    let prompt = || {
        log_event(
            "claude-code",
            "cc-1",
            "user_prompt",
            "claude_code.user_prompt",
        )
    };
    post(&client, s.http, "/v1/logs", &prompt()).await;
    let status = |v: &Value| v["session"]["status"].as_str().map(str::to_string);
    assert_eq!(
        status(&s.get_json("/api/sessions/cc-1").await).as_deref(),
        Some("running"),
        "a record just arrived"
    );
    assert_eq!(
        keys(&s.get_json("/api/sessions?status=running").await["sessions"]),
        vec!["cc-1"]
    );

    let mut ws = Ws::connect(s.api, "").await;
    let snap = ws.next_of("snapshot").await;
    assert_eq!(find(&snap["sessions"], "cc-1")["status"], "running");
    // Marking it finished is a change no delta describes: the client gets a fresh snapshot.
    let snap = ws.next_of("snapshot").await;
    assert_eq!(
        find(&snap["sessions"], "cc-1")["status"],
        "finished",
        "{snap}"
    );
    assert_eq!(
        status(&s.get_json("/api/sessions/cc-1").await).as_deref(),
        Some("finished")
    );
    assert!(keys(&s.get_json("/api/sessions?status=running").await["sessions"]).is_empty());
    assert_eq!(
        keys(&s.get_json("/api/sessions?status=finished").await["sessions"]),
        vec!["cc-1"]
    );

    // The user comes back: the next record makes it running again, live.
    post(&client, s.http, "/v1/logs", &prompt()).await;
    let d = ws.next_of("delta").await;
    assert_eq!(find(&d["sessions"], "cc-1")["status"], "running", "{d}");
    assert_eq!(find(&d["sessions"], "cc-1")["logs"], 2);
    s.stop().await;
}
