//! The store over restarts, duplicates, updates and schema upgrades.

mod common;

use aotel::model::attrs::{kv_f64, kv_i64, kv_str};
use aotel::model::{status, Span, Status};
use aotel::store::body::{SpanRow, SPAN_COLUMNS};
use aotel::store::schema;
use common::TestServer;
use prost::Message;
use serde_json::Value;

fn tool_span(span: u8, failed: bool) -> Span {
    Span {
        trace_id: vec![0x11; 16],
        span_id: vec![span; 8],
        parent_span_id: vec![0xee; 8],
        name: "execute_tool Bash".into(),
        start_time_unix_nano: 1_700_000_000_000_000_000 + span as u64,
        end_time_unix_nano: 1_700_000_002_000_000_000,
        attributes: vec![
            kv_str("gen_ai.operation.name", "execute_tool"),
            kv_str("gen_ai.tool.name", "Bash"),
            kv_str("gen_ai.conversation.id", "dur"),
        ],
        status: failed.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

fn root_span() -> Span {
    Span {
        trace_id: vec![0x11; 16],
        span_id: vec![0xee; 8],
        name: "invoke_agent dev".into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_003_000_000_000,
        attributes: vec![
            kv_str("gen_ai.operation.name", "invoke_agent"),
            kv_str("gen_ai.agent.name", "dev"),
            kv_str("gen_ai.conversation.id", "dur"),
        ],
        ..Default::default()
    }
}

fn body(spans: Vec<Span>) -> Vec<u8> {
    common::traces_request(None, spans).encode_to_vec()
}

async fn export(server: &TestServer, spans: Vec<Span>) {
    export_from(server, None, spans).await
}

async fn export_from(
    server: &TestServer,
    resource: Option<aotel::model::Resource>,
    spans: Vec<Span>,
) {
    let resp = reqwest::Client::new()
        .post(server.otlp_http("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(common::traces_request(resource, spans).encode_to_vec())
        .send()
        .await
        .expect("POST");
    assert!(resp.status().is_success(), "{}", resp.status());
}

async fn session(server: &TestServer) -> Value {
    session_of(server, "dur").await
}

#[tokio::test]
async fn restart_keeps_everything_and_duplicates_keep_one_copy() {
    let server = TestServer::start().await;
    export(
        &server,
        vec![root_span(), tool_span(1, false), tool_span(2, true)],
    )
    .await;
    let before = session(&server).await;
    assert_eq!(before["spans"], 3);
    assert_eq!(before["tool_calls"], 2);
    assert_eq!(before["tool_errors"], 1);
    assert_eq!(before["status"], "finished");

    // The same export again (a client retry) changes nothing.
    export(
        &server,
        vec![root_span(), tool_span(1, false), tool_span(2, true)],
    )
    .await;
    assert_eq!(session(&server).await, before);

    let (db, dir) = server.stop().await;
    let server = TestServer::start_at(&db).await;
    assert_eq!(
        session(&server).await,
        before,
        "a restart keeps the session"
    );
    let tree = server.get_json("/api/sessions/dur").await;
    assert_eq!(
        tree["spans"][0]["children"].as_array().map(Vec::len),
        Some(2)
    );

    // A later copy of a span wins, and the counters follow it instead of double counting.
    export(&server, vec![tool_span(2, false), tool_span(1, true)]).await;
    let after = session(&server).await;
    assert_eq!(after["spans"], 3);
    assert_eq!(after["tool_calls"], 2);
    assert_eq!(after["tool_errors"], 1);
    let tree = server.get_json("/api/sessions/dur").await;
    let failed: Vec<&Value> = tree["spans"][0]["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter(|s| s["status"] == "error")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["span_id"], "01".repeat(8));
    server.stop().await;
    drop(dir);
}

/// Spans are found through the seq ranges each commit gave their trace (`trace_runs`): two traces
/// interleaved in one request and continued in a later one, which also replaces a span of the first
/// and repeats another unchanged, read back whole, once each, and summarised over all their spans.
#[tokio::test]
async fn interleaved_traces_continued_later_read_back_whole() {
    let server = TestServer::start().await;
    let span = |trace: u8, id: u8, parent: Option<u8>, failed: bool| Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("op {id}"),
        start_time_unix_nano: 1_700_000_000_000_000_000 + id as u64 * 1_000,
        end_time_unix_nano: 1_700_000_001_000_000_000 + id as u64 * 1_000,
        attributes: vec![kv_str("gen_ai.conversation.id", "runs")],
        status: failed.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    };
    let resource = || {
        Some(aotel::model::Resource {
            attributes: vec![kv_str("service.name", "runs-svc")],
            ..Default::default()
        })
    };
    let (a, b) = (0xa1, 0xb1);
    export_from(
        &server,
        resource(),
        vec![
            span(a, 1, None, false),
            span(b, 2, None, false),
            span(a, 3, Some(1), false),
            span(b, 4, Some(2), false),
        ],
    )
    .await;
    // Span 5's parent never arrives (an orphan); span 3 fails now; span 4 is the same again.
    export_from(
        &server,
        resource(),
        vec![
            span(a, 5, Some(9), false),
            span(a, 3, Some(1), true),
            span(b, 4, Some(2), false),
        ],
    )
    .await;

    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["data"][0]["spans"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|s| s["spanID"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let trace_a = server
        .get_json(&format!("/api/traces/{}", "a1".repeat(16)))
        .await;
    assert_eq!(
        ids(&trace_a),
        ["01", "03", "05"].map(|i| i.repeat(8)),
        "{trace_a}"
    );
    let failed: Vec<&Value> = (trace_a["data"][0]["spans"].as_array().into_iter().flatten())
        .filter(|s| {
            s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["key"] == "error")
        })
        .collect();
    assert_eq!(failed.len(), 1, "{trace_a}");
    assert_eq!(failed[0]["spanID"], "03".repeat(8), "the later copy wins");
    let trace_b = server
        .get_json(&format!("/api/traces/{}", "b1".repeat(16)))
        .await;
    assert_eq!(
        ids(&trace_b),
        ["02", "04"].map(|i| i.repeat(8)),
        "{trace_b}"
    );

    let window =
        "query.start_time_min=2023-11-14T22:00:00Z&query.start_time_max=2023-11-14T23:00:00Z";
    let v = server
        .get_json(&format!(
            "/api/v3/trace-summaries?query.service_name=runs-svc&{window}"
        ))
        .await;
    let summary = |trace: &str| -> Value {
        (v["result"]["summaries"].as_array().into_iter().flatten())
            .find(|s| s["traceId"] == trace.repeat(16))
            .cloned()
            .unwrap_or_else(|| panic!("no summary of {trace}: {v}"))
    };
    // Spans, error spans, orphans (span 5's parent never arrived).
    let counts = |s: &Value| {
        ["spanCount", "errorSpanCount", "orphanSpanCount"].map(|k| s[k].as_i64().unwrap_or(-1))
    };
    let sa = summary("a1");
    assert_eq!(counts(&sa), [3, 1, 1], "{sa}");
    assert_eq!(sa["rootOperationName"], "op 1");
    assert_eq!(
        sa["services"],
        serde_json::json!([{ "name": "runs-svc", "spanCount": 3, "errorSpanCount": 1 }])
    );
    let sb = summary("b1");
    assert_eq!(counts(&sb), [2, 0, 0], "{sb}");
    assert_eq!(session_of(&server, "runs").await["spans"], 5);

    let (db, dir) = server.stop().await;
    let conn = rusqlite::Connection::open(&db).expect("open");
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    assert_eq!(count("SELECT COUNT(*) FROM spans"), 5);
    assert_eq!(
        count(SPANS_OUTSIDE_THEIR_RUNS),
        0,
        "every span is in a run of its trace"
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM trace_runs r JOIN spans s ON s.seq BETWEEN r.first_seq AND r.last_seq
             WHERE s.tn != r.tn"
        ),
        0,
        "no run covers a span of another trace"
    );
    // The first request: a run per span (interleaved); the second: one for trace A's two spans.
    assert_eq!(count("SELECT COUNT(*) FROM trace_runs"), 5);
    drop(dir);
}

/// Counts the spans that no run of their own trace covers (`trace_runs`): none, in a sound store.
const SPANS_OUTSIDE_THEIR_RUNS: &str = "SELECT COUNT(*) FROM spans s WHERE NOT EXISTS
    (SELECT 1 FROM trace_runs r WHERE r.tn = s.tn AND s.seq BETWEEN r.first_seq AND r.last_seq)";

/// A copy that differs from the stored span only in what the span's columns hold, which its stored
/// body leaves out (name, kind, start, end, parent), replaces it: each change reads back, and the span
/// is still stored once.
#[tokio::test]
async fn a_copy_changed_only_where_its_columns_hold_replaces_the_stored_one() {
    let server = TestServer::start().await;
    export(&server, vec![root_span(), tool_span(1, false)]).await;
    let mut span = tool_span(1, false);
    /// A change, the field of the API's span that shows it, and what that field must then say.
    type Change = (fn(&mut Span), &'static str, Value);
    let changes: [Change; 5] = [
        (
            |s| s.name = "execute_tool Read".into(),
            "name",
            "execute_tool Read".into(),
        ),
        (|s| s.kind = 3, "kind", 3.into()),
        (
            |s| s.start_time_unix_nano -= 5,
            "start_unix_nano",
            "1699999999999999996".into(),
        ),
        (
            |s| s.end_time_unix_nano += 7,
            "end_unix_nano",
            "1700000002000000007".into(),
        ),
        (
            |s| s.parent_span_id = vec![0xdd; 8],
            "parent_span_id",
            "dd".repeat(8).into(),
        ),
    ];
    for (change, field, expected) in changes {
        change(&mut span);
        export(&server, vec![span.clone()]).await;
        let trace = server
            .get_json(&format!("/api/trace/{}", "11".repeat(16)))
            .await;
        let mut found = Vec::new();
        let mut todo: Vec<&Value> = trace["spans"].as_array().expect("spans").iter().collect();
        while let Some(s) = todo.pop() {
            if s["span_id"] == "01".repeat(8) {
                found.push(s);
            }
            todo.extend(s["children"].as_array().into_iter().flatten());
        }
        assert_eq!(found.len(), 1, "{field}: {trace}");
        assert_eq!(found[0][field], expected, "{field}: {trace}");
    }
    assert_eq!(session(&server).await["spans"], 2);
    server.stop().await;
}

async fn session_of(server: &TestServer, key: &str) -> Value {
    server.get_json(&format!("/api/sessions/{key}")).await["session"].clone()
}

#[tokio::test]
async fn a_version_1_database_is_migrated_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("old.db");
    {
        let mut conn = rusqlite::Connection::open(&db).expect("open");
        assert_eq!(schema::migrate_to(&mut conn, 1).expect("v1"), 1);
        // What a version-1 build wrote: one interned resource and scope, one span, its session.
        conn.execute_batch(
            "INSERT INTO resources(id, hash, service, schema_url, body) VALUES (1, x'01', 'old-svc', '', x'');
             INSERT INTO scopes(id, hash, name, version, schema_url, body) VALUES (1, x'02', '', '', '', x'');
             INSERT INTO session_traces(session, trace_id) VALUES ('dur', x'11111111111111111111111111111111');
             INSERT INTO session_traces(session, trace_id) VALUES ('dur', x'22222222222222222222222222222222');",
        )
        .expect("seed");
        let span = root_span();
        conn.execute(
            "INSERT INTO spans(seq, trace_id, span_id, parent_span_id, session, name, kind, start_ns, end_ns,
                status, service, operation, tool, agent, model, flags, input_tokens, output_tokens,
                cache_read_tokens, cache_creation_tokens, cost_usd, resource_id, scope_id, body)
             VALUES (7, ?1, ?2, NULL, 'dur', ?3, 0, ?4, ?5, 0, 'old-svc', 'invoke_agent', NULL, 'dev', NULL, 0,
                0, 0, 0, 0, 0.0, 1, 1, ?6)",
            rusqlite::params![
                span.trace_id,
                span.span_id,
                span.name,
                span.start_time_unix_nano as i64,
                span.end_time_unix_nano as i64,
                span.encode_to_vec()
            ],
        )
        .expect("span");
        conn.execute(
            "INSERT INTO sessions(key, title, agent, service, status, first_ns, last_ns, updated_seq, counters)
             VALUES ('dur', NULL, 'dev', 'old-svc', 'finished', ?1, ?2, 7,
                '{\"traces\":2,\"spans\":1,\"runs\":1,\"roots\":1}')",
            rusqlite::params![span.start_time_unix_nano as i64, span.end_time_unix_nano as i64],
        )
        .expect("session");
    }
    let server = TestServer::start_at(&db).await;
    let s = session(&server).await;
    assert_eq!(s["spans"], 1);
    assert_eq!(s["runs"], 1);
    // Version 16 keyed a session's traces by numbers: the session still leads to its span.
    let tree = server.get_json("/api/sessions/dur").await;
    assert_eq!(tree["spans"][0]["span_id"], "ee".repeat(8), "{tree}");
    // New data lands after the old, with a higher sequence number.
    export(&server, vec![tool_span(3, false)]).await;
    let s = session(&server).await;
    assert_eq!(s["spans"], 2);
    assert_eq!(s["tool_calls"], 1);
    assert!(s["updated_seq"].as_i64().unwrap_or(0) > 7, "{s}");
    // Version 15 numbered the old trace: a copy of the old span is still the same span, and the
    // trace is found by its id with the old span and the new one in it.
    export(&server, vec![root_span()]).await;
    let s = session(&server).await;
    assert_eq!(s["spans"], 2);
    assert_eq!(
        s["traces"], 2,
        "the migrated trace row is the new spans' too: {s}"
    );
    let tree = server.get_json("/api/sessions/dur").await;
    assert_eq!(
        tree["spans"][0]["children"][0]["span_id"],
        "03".repeat(8),
        "{tree}"
    );
    let trace = server
        .get_json(&format!("/api/trace/{}", "11".repeat(16)))
        .await;
    let root = &trace["spans"][0];
    assert_eq!(root["span_id"], "ee".repeat(8), "{trace}");
    assert_eq!(root["children"][0]["span_id"], "03".repeat(8), "{trace}");
    assert_eq!(trace["spans"].as_array().map(Vec::len), Some(1), "{trace}");
    server.stop().await;

    let conn = rusqlite::Connection::open(&db).expect("reopen");
    assert_eq!(
        schema::version(&conn).expect("version"),
        schema::MIGRATIONS.len()
    );
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    // Version 17 gave the span stored before it a run of its trace, and later spans got theirs.
    assert_eq!(count(SPANS_OUTSIDE_THEIR_RUNS), 0);
    assert_eq!(
        count("SELECT COUNT(*) FROM trace_runs WHERE first_seq = 7 AND last_seq = 7"),
        1
    );
    // Version 16 kept both of the session's traces, the one known only from a log record too.
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM session_traces WHERE session = (SELECT num FROM sessions WHERE key = 'dur')"
        ),
        2
    );
    // Version 2 built the operations catalogue from the spans that were already there.
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM operations WHERE service = 'old-svc' AND name = 'invoke_agent dev'"
        ),
        1
    );
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(ok, "ok");
}

#[tokio::test]
async fn a_database_from_a_newer_build_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("new.db");
    {
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.pragma_update(None, "user_version", 999)
            .expect("set version");
    }
    let err = aotel::store::open(&db, &Default::default())
        .err()
        .expect("a newer schema must be refused");
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[tokio::test]
async fn an_idle_store_gives_the_wal_space_back() {
    let server = TestServer::start().await;
    export(&server, vec![root_span(), tool_span(1, false)]).await;
    let wal = std::path::PathBuf::from(format!("{}-wal", server.db.display()));
    let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(size() > 0, "the commit went to the WAL");
    // About five seconds after the last write the checkpointer truncates it; `eventually` allows ten.
    common::eventually("the WAL is truncated", || {
        std::future::ready((size() == 0).then_some(()))
    })
    .await;
    assert_eq!(session(&server).await["spans"], 2, "nothing was lost");
    export(&server, vec![tool_span(2, true)]).await;
    assert_eq!(session(&server).await["spans"], 3, "writes go on after it");
}

/// A RESTART checkpoint holds the write lock while it copies; so does any other connection that writes
/// (here one holds it for 400 ms). A commit that meets it waits and then goes through: the export is
/// answered only after the lock is gone, and answered OK, with its spans stored once.
#[tokio::test]
async fn a_commit_waits_for_a_write_lock_held_elsewhere() {
    let server = TestServer::start().await;
    // Known names, resource and scope: the writer's next transaction starts with a read (the trace's
    // number), as it does under steady load.
    export(&server, vec![root_span(), tool_span(1, false)]).await;
    let mut other = rusqlite::Connection::open(&server.db).expect("open");
    let lock = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("take the write lock");
    let url = server.otlp_http("/v1/traces");
    let sent = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(body(vec![tool_span(2, true), tool_span(3, false)]))
            .send()
            .await
            .expect("POST")
    });
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        !sent.is_finished(),
        "answered while another connection held the write lock: {:?}",
        sent.await.map(|r| r.status())
    );
    lock.rollback().expect("release the write lock");
    let resp = sent.await.expect("join");
    let status = resp.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        resp.text().await.unwrap_or_default()
    );
    let s = session(&server).await;
    assert_eq!(s["spans"], 4, "{s}");
    assert_eq!(s["tool_calls"], 3, "{s}");
    assert_eq!(s["tool_errors"], 1, "{s}");
    // It waited rather than failed: a failed group commit is retried request by request and answers
    // OK too, but costs a rollback and the work again.
    let metrics = server.get_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "aotel_commit_failures_total 0"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("commit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The writer binds only the span columns that changed since the previous span of a batch: every
/// column of every span in a batch that switches values back and forth (and to and from NULL) must
/// still be that span's own.
#[tokio::test]
async fn every_span_of_a_mixed_batch_keeps_its_own_columns() {
    let chat = |id: u8, model: Option<&str>, tokens: i64| {
        let mut attributes = vec![
            kv_str("gen_ai.operation.name", "chat"),
            kv_str("gen_ai.conversation.id", "dur"),
            kv_i64("gen_ai.usage.input_tokens", tokens),
        ];
        attributes.extend(model.map(|m| kv_str("gen_ai.request.model", m)));
        Span {
            trace_id: vec![0x11; 16],
            span_id: vec![id; 8],
            parent_span_id: vec![0xee; 8],
            name: format!("chat {id}"),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_000_000_000 + id as u64,
            end_time_unix_nano: 1_700_000_001_000_000_000 + id as u64,
            attributes,
            ..Default::default()
        }
    };
    let mut costly = root_span();
    costly.attributes.push(kv_f64("ao.cost.usd", 0.25));
    let spans = vec![
        costly,
        tool_span(1, false),
        tool_span(2, true),
        chat(3, Some("claude-a"), 10),
        chat(4, None, 0),
        tool_span(5, false),
        chat(6, Some("claude-b"), 7),
        chat(7, Some("claude-b"), 7),
    ];
    let server = TestServer::start().await;
    export(&server, spans.clone()).await;
    let (db, dir) = server.stop().await;
    let c = rusqlite::Connection::open(&db).expect("open db");
    type Row = (
        Option<Vec<u8>>,
        String,
        i64,
        i64,
        i64,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        i64,
        f64,
        Vec<u8>,
    );
    for span in &spans {
        let row: Row = c
            .query_row(
                &format!(
                    "SELECT parent_span_id, name, kind, start_ns, end_ns, status, operation, tool, model,
                        input_tokens, cost_usd, {SPAN_COLUMNS}
                     FROM spans WHERE trace_id = ?1 AND span_id = ?2"
                ),
                rusqlite::params![span.trace_id, span.span_id],
                |r| {
                    let mut whole = Vec::new();
                    SpanRow::read(r, 11)?.encode(&mut whole);
                    Ok((
                        r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?,
                        r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?, whole,
                    ))
                },
            )
            .expect("stored span");
        let attr = |key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        use aotel::model::any_value::Value as V;
        let text = |key: &str| match attr(key) {
            Some(V::StringValue(s)) => Some(s),
            _ => None,
        };
        let expected: Row = (
            (!span.parent_span_id.is_empty()).then(|| span.parent_span_id.clone()),
            span.name.clone(),
            span.kind.into(),
            span.start_time_unix_nano as i64,
            span.end_time_unix_nano as i64,
            span.status.as_ref().map_or(0, |s| s.code).into(),
            text("gen_ai.operation.name"),
            text("gen_ai.tool.name"),
            text("gen_ai.request.model"),
            match attr("gen_ai.usage.input_tokens") {
                Some(V::IntValue(n)) => n,
                _ => 0,
            },
            match attr("ao.cost.usd") {
                Some(V::DoubleValue(d)) => d,
                _ => 0.0,
            },
            span.encode_to_vec(),
        );
        assert_eq!(row, expected, "span {:?}", span.span_id);
    }
    drop(dir);
}

/// The share of the file's bytes in `from..to` that the OS page cache holds (mincore on a mapping).
fn resident_share(path: &std::path::Path, from: u64, to: u64) -> f64 {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).expect("open db");
    let page = 4096u64;
    let from = from / page * page;
    let len = to.saturating_sub(from) as usize;
    if len == 0 {
        return 0.0;
    }
    let pages = len.div_ceil(page as usize);
    let mut vec = vec![0u8; pages];
    // SAFETY: a read-only shared mapping of an open file, unmapped before returning; mincore only
    // reports which of its pages are cached and touches none of them.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            from as libc::off_t,
        );
        assert_ne!(addr, libc::MAP_FAILED, "mmap the database file");
        let rc = libc::mincore(addr, len, vec.as_mut_ptr());
        libc::munmap(addr, len);
        assert_eq!(rc, 0, "mincore");
    }
    vec.iter().filter(|v| *v & 1 == 1).count() as f64 / pages as f64
}

/// Whether a checkpoint has copied every frame of the WAL into the database file: the wal-index (the
/// `-shm` file, https://www.sqlite.org/walformat.html) holds the WAL's last frame at byte 16 and the
/// last frame copied at byte 96, in the machine's byte order.
fn wal_copied(db: &std::path::Path) -> bool {
    let mut shm = db.as_os_str().to_owned();
    shm.push("-shm");
    let Ok(bytes) = std::fs::read(shm) else {
        return false;
    };
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    matches!((word(16), word(96)), (Some(last), Some(copied)) if last > 0 && copied == last)
}

/// Pages of the database file that a checkpoint made durable and that are more than the window behind
/// its end leave the OS page cache (`--page-cache-bytes`); with the window off they stay. ~24 MB of
/// spans, a 4 MiB window: the first 20 MB or so are the ones compared.
#[tokio::test]
async fn durable_pages_behind_the_window_leave_the_page_cache() {
    const KEEP: u64 = 4 << 20;
    for keep in [Some(KEEP), None] {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("a.db");
        let mut config = aotel::Config::with_db(&db);
        config.store.page_cache_keep = keep;
        let server = TestServer::start_with(config).await;
        let client = reqwest::Client::new();
        for n in 0..48 {
            let resp = client
                .post(server.otlp_http("/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(common::load_request(0xd1, n, 50, "cache", 10_000))
                .send()
                .await
                .expect("POST");
            assert!(resp.status().is_success(), "{}", resp.status());
        }
        let used = rusqlite::Connection::open(&db)
            .and_then(|c| aotel::store::pages_bytes(&c))
            .expect("page count");
        assert!(used > 20 << 20, "the spans take {used} bytes");
        let early = used - KEEP;
        // The checkpointer copies the WAL within a few ticks; the window applies after each copy. With
        // it, at most a few pages read or rewritten since stay cached; without it, all of them.
        let what = match keep {
            Some(_) => "the early pages leave the page cache once copied (4 MiB window)",
            None => "the early pages stay in the page cache once copied (no window)",
        };
        common::eventually(what, || {
            if !wal_copied(&db) {
                return std::future::ready(None);
            }
            let share = resident_share(&db, 0, early);
            let settled = if keep.is_some() {
                share < 0.3
            } else {
                share > 0.9
            };
            std::future::ready(settled.then_some(()))
        })
        .await;
        drop(server);
    }
}
