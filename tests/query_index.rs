//! The attribute index behind tag search (and behind search by service and by time): kept right when a
//! span is replaced by a newer copy, built at startup for data stored before it existed (a database
//! migrated to schema 3, or to 11 for the service and time entries), and written behind the spans:
//! searches find spans whose rows are not written yet, and rows a crash lost are rebuilt.

mod common;
mod query_fixture;

use common::{post_otlp_json, TestServer};
use query_fixture::*;
use serde_json::{json, Value};

async fn traces(server: &TestServer, query: &str) -> Vec<String> {
    trace_ids(&server.get_json(&format!("/api/traces?{query}")).await["data"])
}

/// Waits until the writer has indexed every stored span (it writes the rows behind the spans).
async fn index_written(db: &std::path::Path) {
    let c = rusqlite::Connection::open(db).expect("open db");
    common::eventually("the attribute index catches up", || {
        let (upto, max): (i64, i64) = c
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'span_attrs_upto'),
                        (SELECT COALESCE(MAX(seq), 0) FROM spans)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("read meta");
        std::future::ready((upto >= max).then_some(()))
    })
    .await;
}

/// Index entries (expanded from their chunks and blocks).
fn attr_entries(db: &std::path::Path) -> Vec<aotel::store::index::Entry> {
    let c = rusqlite::Connection::open(db).expect("open db");
    let mut e = aotel::store::index::entries(&c).expect("entries");
    e.sort_unstable();
    e
}

fn attr_count(db: &std::path::Path) -> usize {
    attr_entries(db).len()
}

#[tokio::test]
async fn a_replaced_span_is_found_by_its_new_attributes_only() {
    let server = TestServer::start().await;
    post_otlp_json(&server, &request()).await;
    assert_eq!(
        traces(&server, "service=ao&tag=gen_ai.tool.name:Read").await,
        vec![T1]
    );
    index_written(&server.db).await;
    let rows = attr_count(&server.db);

    // The same span again, its tool renamed: the later copy wins.
    let mut req = request();
    let spans = req["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array_mut()
        .expect("spans");
    spans.retain(|s| s["spanId"] == READ);
    spans[0]["attributes"][1] =
        json!({ "key": "gen_ai.tool.name", "value": { "stringValue": "Glob" } });
    req["resourceSpans"].as_array_mut().expect("rs").truncate(1);
    post_otlp_json(&server, &req).await;

    assert_eq!(
        traces(&server, "service=ao&tag=gen_ai.tool.name:Glob").await,
        vec![T1]
    );
    index_written(&server.db).await;
    assert_eq!(
        attr_count(&server.db),
        rows,
        "the old copy's rows are gone, the new copy's are in"
    );
    assert_eq!(
        traces(&server, "service=ao&tag=gen_ai.tool.name:Read").await,
        Vec::<String>::new()
    );
    let tempo = server
        .get_json("/api/search?q=%7B%20span.gen_ai.tool.name%20%3D%20%22Read%22%20%7D")
        .await;
    assert_eq!(tempo["traces"], json!([]));
}

#[tokio::test]
async fn data_stored_before_the_index_is_indexed_at_startup() {
    let server = TestServer::start().await;
    post_otlp_json(&server, &request()).await;
    let (db, dir) = server.stop().await;
    let indexed = attr_entries(&db);
    assert!(
        indexed.len() > 20,
        "every short span attribute is indexed: {}",
        indexed.len()
    );

    // What migrations 3 and 11 leave behind on a database that already had spans: empty index tables
    // and notes of how far the backfills must go.
    {
        let c = rusqlite::Connection::open(&db).expect("open db");
        c.execute_batch(
            "DELETE FROM span_attrs; DELETE FROM resource_attrs;
             INSERT INTO meta(key, value) SELECT 'span_attrs_backfill', MAX(seq) FROM spans;
             INSERT INTO meta(key, value) SELECT 'span_keys_backfill', MAX(seq) FROM spans;",
        )
        .expect("simulate a migrated database");
    }
    assert_eq!(attr_count(&db), 0);
    let server = TestServer::start_at(&db).await;
    assert_eq!(
        attr_entries(&db),
        indexed,
        "the backfill rebuilds the same entries"
    );
    assert_eq!(
        traces(&server, "service=ao&tag=gen_ai.tool.call.id:toolu_02").await,
        vec![T1]
    );
    assert_eq!(
        traces(
            &server,
            "service=ao&tag=host.name:devbox&tag=span.kind:server"
        )
        .await,
        vec![T2]
    );
    let c = rusqlite::Connection::open(&db).expect("open db");
    let left: Option<Value> = c
        .query_row(
            "SELECT value FROM meta WHERE key = 'span_attrs_backfill'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .ok()
        .map(Value::from);
    assert_eq!(left, None, "the backfill note is removed when done");
    drop(server);
    drop(dir);
}

#[tokio::test]
async fn a_schema_10_database_gets_service_and_time_entries_at_startup() {
    use aotel::store::index::{all_spans_hash, service_hash};
    let server = TestServer::start().await;
    post_otlp_json(&server, &request()).await;
    let (db, dir) = server.stop().await;
    let indexed = attr_entries(&db);
    // What the answers must be, read from the spans themselves.
    let c = rusqlite::Connection::open(&db).expect("open db");
    let column = |sql: &str| -> Vec<String> {
        let mut stmt = c.prepare(sql).expect("prepare");
        let rows = stmt.query_map([], |r| r.get(0)).expect("query");
        rows.collect::<Result<_, _>>().expect("rows")
    };
    let services = column("SELECT DISTINCT service FROM spans ORDER BY service");
    let all_traces = column("SELECT DISTINCT lower(hex(trace_id)) AS t FROM spans ORDER BY t");
    let spans = c
        .query_row("SELECT COUNT(*) FROM spans", [], |r| r.get::<_, i64>(0))
        .expect("count") as usize;
    let by_service: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            column(&format!(
                "SELECT DISTINCT lower(hex(trace_id)) AS t FROM spans WHERE service = '{s}' ORDER BY t"
            ))
        })
        .collect();
    drop(c);
    let mut key_hashes: Vec<i64> = services.iter().map(|s| service_hash(s)).collect();
    key_hashes.push(all_spans_hash());
    let keys = |e: &&aotel::store::index::Entry| key_hashes.contains(&e.0);
    assert_eq!(
        indexed.iter().filter(keys).count(),
        2 * spans,
        "every span has a time and a service entry"
    );

    // A schema-10 file: the same spans and attribute entries, the spans table's own service and time
    // indexes and its (trace id, span id) index, no trace or session numbers, and none of the entries
    // that replace them.
    {
        let c = rusqlite::Connection::open(&db).expect("open db");
        let mut gone: Vec<_> = indexed.iter().filter(keys).copied().collect();
        let tx = c.unchecked_transaction().expect("tx");
        aotel::store::index::unindex(&tx, &mut gone).expect("delete entries");
        tx.execute_batch(
            "ALTER TABLE session_traces RENAME TO session_traces_v16;
             CREATE TABLE session_traces(session TEXT NOT NULL, trace_id BLOB NOT NULL,
                PRIMARY KEY(session, trace_id)) WITHOUT ROWID;
             INSERT INTO session_traces SELECT s.key, t.trace_id FROM session_traces_v16 st
                JOIN sessions s ON s.num = st.session JOIN traces t ON t.tn = st.tn;
             DROP TABLE session_traces_v16;
             ALTER TABLE sessions RENAME TO sessions_v16;
             CREATE TABLE sessions(key TEXT PRIMARY KEY, title TEXT, agent TEXT, service TEXT NOT NULL,
                status TEXT NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
                updated_seq INTEGER NOT NULL, counters TEXT NOT NULL);
             INSERT INTO sessions SELECT key, title, agent, service, status, first_ns, last_ns, updated_seq,
                counters FROM sessions_v16;
             DROP TABLE sessions_v16;
             CREATE INDEX sessions_by_first ON sessions(first_ns);
             CREATE INDEX sessions_by_last ON sessions(last_ns);
             CREATE INDEX spans_by_service ON spans(service, start_ns);
             CREATE INDEX spans_by_start ON spans(start_ns);
             CREATE INDEX session_traces_by_trace ON session_traces(trace_id);
             DROP TABLE trace_runs;
             ALTER TABLE spans DROP COLUMN tn;
             DROP TABLE traces;
             CREATE UNIQUE INDEX spans_by_id ON spans(trace_id, span_id);
             PRAGMA user_version = 10;",
        )
        .expect("schema 10");
        tx.commit().expect("commit");
    }
    assert_eq!(attr_count(&db), indexed.len() - 2 * spans);
    let server = TestServer::start_at(&db).await;
    assert_eq!(
        attr_entries(&db),
        indexed,
        "the backfill adds exactly those entries"
    );
    // By service alone, and by time alone (Tempo's search with no condition).
    for (service, expected) in services.iter().zip(&by_service) {
        assert_eq!(
            &traces(&server, &format!("service={service}")).await,
            expected
        );
    }
    let tempo = server.get_json("/api/search?limit=20").await;
    assert_eq!(trace_ids(&tempo["traces"]), all_traces);
    let c = rusqlite::Connection::open(&db).expect("open db");
    let (note, old_indexes): (i64, i64) = c
        .query_row(
            "SELECT (SELECT COUNT(*) FROM meta WHERE key = 'span_keys_backfill'),
                    (SELECT COUNT(*) FROM sqlite_master WHERE name IN ('spans_by_service', 'spans_by_start', 'session_traces_by_trace'))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("meta");
    assert_eq!(
        (note, old_indexes),
        (0, 0),
        "the note is removed, the old indexes are gone"
    );
    drop(server);
    drop(dir);
}

/// Removes the index rows of the spans above the newest `keep` and marks them unindexed: the state a
/// search meets before the writer wrote its backlog, or a restart after a crash lost it.
fn drop_newest_rows(db: &std::path::Path, keep: i64) -> i64 {
    let c = rusqlite::Connection::open(db).expect("open db");
    let upto: i64 = c
        .query_row("SELECT MAX(seq) - ?1 FROM spans", [keep], |r| r.get(0))
        .expect("max seq");
    let mut gone: Vec<_> = aotel::store::index::entries(&c)
        .expect("entries")
        .into_iter()
        .filter(|e| e.2 > upto)
        .collect();
    let tx = c.unchecked_transaction().expect("tx");
    aotel::store::index::unindex(&tx, &mut gone).expect("delete entries");
    tx.commit().expect("commit");
    c.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'span_attrs_upto'",
        [upto],
    )
    .expect("lower upto");
    upto
}

fn search_ids(db: &std::path::Path, query: &str) -> (Vec<String>, usize) {
    use aotel::query::search::{search, SearchParams};
    let c = rusqlite::Connection::open(db).expect("open db");
    let p = SearchParams {
        filter: aotel::query::traceql::parse(query).expect("traceql"),
        limit: 20,
        ..SearchParams::default()
    };
    let out = search(&c, &p).expect("search");
    let mut ids: Vec<String> = out.traces.iter().map(|t| hex(&t.trace_id)).collect();
    ids.sort();
    (ids, out.traces.iter().map(|t| t.matched).sum())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn spans_whose_index_rows_are_not_written_yet_are_found() {
    let server = TestServer::start().await;
    post_otlp_json(&server, &request()).await;
    let (db, dir) = server.stop().await;
    let queries = [
        r#"{ span.gen_ai.tool.name = "Read" }"#,
        r#"{ span.gen_ai.tool.call.id = "toolu_01" }"#,
        r#"{ span.gen_ai.operation.name = "execute_tool" }"#,
        r#"{ span.gen_ai.operation.name = "execute_tool" && status = error }"#,
        r#"{ span.gen_ai.tool.name = "Nothing" }"#,
    ];
    let full: Vec<_> = queries.iter().map(|q| search_ids(&db, q)).collect();
    assert_eq!(full[0].0, vec![T1]);
    assert_eq!(
        full[2],
        (vec![T1.to_string()], 2),
        "both tool spans match once"
    );
    assert_eq!(full[4].0, Vec::<String>::new());
    // Half the spans (the newest by seq) lose their rows: the answers must not change, and no span is
    // counted twice.
    let total: i64 = rusqlite::Connection::open(&db)
        .expect("open")
        .query_row("SELECT COUNT(*) FROM spans", [], |r| r.get(0))
        .expect("count");
    for keep in [total / 2, total] {
        drop_newest_rows(&db, keep);
        for (q, want) in queries.iter().zip(&full) {
            assert_eq!(
                &search_ids(&db, q),
                want,
                "{q} with the newest {keep} spans unindexed"
            );
        }
    }
    drop(dir);
}

#[tokio::test]
async fn index_rows_a_crash_lost_are_rebuilt_at_startup() {
    let server = TestServer::start().await;
    post_otlp_json(&server, &request()).await;
    let (db, dir) = server.stop().await;
    let indexed = attr_entries(&db);
    let upto = drop_newest_rows(&db, 3);
    assert!(attr_count(&db) < indexed.len(), "entries were dropped");

    let server = TestServer::start_at(&db).await;
    assert_eq!(attr_entries(&db), indexed, "the same entries are back");
    let c = rusqlite::Connection::open(&db).expect("open db");
    let (now, max): (i64, i64) = c
        .query_row(
            "SELECT (SELECT value FROM meta WHERE key = 'span_attrs_upto'), (SELECT MAX(seq) FROM spans)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("meta");
    assert!(
        now == max && now > upto,
        "upto {now} covers every span ({max})"
    );
    assert_eq!(
        traces(&server, "service=ao&tag=gen_ai.tool.call.id:toolu_02").await,
        vec![T1]
    );
    drop(server);
    drop(dir);
}

/// Batches whose spans share values (one chunk holds many entries) and overlap in time (chunks of
/// different flushes interleave): every search answers exactly what checking every span would.
#[tokio::test]
async fn chunked_entries_answer_like_checking_every_span() {
    let (blocks, session_rows) = answers_like_checking_every_span(400).await;
    assert_eq!(blocks, 0, "index writes this small make no blocks");
    assert!(session_rows > 0, "session ids are chunks too");
}

/// The same with index writes large enough that their lone entries (each call id) and their session ids
/// go into blocks, and a span replaced by a newer copy leaves its block.
#[tokio::test]
async fn entries_in_blocks_answer_like_checking_every_span() {
    let (blocks, session_rows) = answers_like_checking_every_span(1500).await;
    assert!(blocks >= 8, "every index write made a block, got {blocks}");
    // Only the last write, the one replaced span alone (too small for a block), made a chunk of one.
    assert_eq!(
        session_rows, 1,
        "session ids are in the blocks, not in chunks"
    );
}

/// Posts eight batches of `batch_spans` spans (each indexed on its own), replaces one span of the
/// first with a copy carrying another call id, and checks searches against every span decoded.
/// Returns how many blocks the index holds, and how many chunk rows hold session ids.
async fn answers_like_checking_every_span(batch_spans: u64) -> (i64, i64) {
    use aotel::query::search::{search, SearchParams};
    use aotel::store::index::attr_hash;
    let server = TestServer::start().await;
    // A small deterministic generator, so a failure can be replayed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut first: Option<Value> = None;
    for batch in 0..8u64 {
        let mut spans = Vec::new();
        for i in 0..batch_spans {
            let trace = format!("{:016x}{:016x}", batch + 1, i % 40 + 1);
            // Every batch spreads over the same 120 s: chunks of different flushes interleave, and
            // within one flush a value's entries are cut into chunks by the window as well as by count.
            let start = BASE + next(120) * SEC + next(1000) * MS;
            let op = ["a", "b"][next(2) as usize];
            let attrs = json!([
                { "key": "op", "value": { "stringValue": op } },
                { "key": "tool", "value": { "stringValue": format!("t{}", next(5)) } },
                { "key": "call", "value": { "stringValue": format!("c{batch}-{i}") } },
                // Sessions that go on across batches, a few dozen spans of each per batch.
                { "key": "gen_ai.conversation.id", "value": { "stringValue": format!("s{}", (i + batch * 7) % 50) } },
            ]);
            spans.push(json!({
                "traceId": trace, "spanId": format!("{:016x}", batch * 1000 + i + 1),
                "name": "execute_tool", "kind": 1,
                "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + MS).to_string(),
                "attributes": attrs,
            }));
        }
        let req = json!({ "resourceSpans": [{
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "chunks" } }] },
            "scopeSpans": [{ "spans": spans }],
        }]});
        first.get_or_insert_with(|| req.clone());
        post_otlp_json(&server, &req).await;
        // Each batch its own flush.
        index_written(&server.db).await;
    }
    // A newer copy of the first batch's sixth span, its call id changed: the old id's entry goes.
    let mut again = first.expect("a batch was sent");
    let mut span = again["resourceSpans"][0]["scopeSpans"][0]["spans"][5].take();
    span["attributes"][2]["value"]["stringValue"] = json!("renamed");
    again["resourceSpans"][0]["scopeSpans"][0]["spans"] = json!([span]);
    let old = attr_hash("call", "c0-5");
    assert!(
        attr_entries(&server.db).iter().any(|e| e.0 == old),
        "the call id is indexed before its span is replaced"
    );
    post_otlp_json(&server, &again).await;
    index_written(&server.db).await;
    assert!(
        !attr_entries(&server.db).iter().any(|e| e.0 == old),
        "a replaced span's old call id leaves the index"
    );
    let (db, dir) = server.stop().await;
    let c = rusqlite::Connection::open(&db).expect("open db");
    let blocks: i64 = c
        .query_row("SELECT COUNT(*) FROM span_attr_blocks", [], |r| r.get(0))
        .expect("blocks");
    let rows: i64 = c
        .query_row("SELECT COUNT(*) FROM span_attrs", [], |r| r.get(0))
        .expect("rows");
    let session_rows: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM span_attrs WHERE h IN (SELECT value FROM json_each(?1))",
            [serde_json::to_string(
                &(0..50)
                    .map(|n| attr_hash("gen_ai.conversation.id", &format!("s{n}")))
                    .collect::<Vec<_>>(),
            )
            .expect("json")],
            |r| r.get(0),
        )
        .expect("session rows");
    let rows = rows as usize;
    assert!(
        rows < attr_count(&db),
        "shared values are stored as chunks: {rows} rows for {} entries",
        attr_count(&db)
    );
    // Every span, decoded: what a search must find, newest first.
    let mut all: Vec<(i64, i64, String, aotel::model::Span)> = c
        .prepare(&format!(
            "SELECT start_ns, seq, {} FROM spans",
            aotel::store::body::SPAN_COLUMNS
        ))
        .and_then(|mut s| {
            s.query_map([], |r| {
                let span = (aotel::store::body::SpanRow::read(r, 2)?.decode()).expect("decode");
                Ok((r.get(0)?, r.get(1)?, hex(&span.trace_id), span))
            })?
            .collect()
        })
        .expect("spans");
    all.sort_by_key(|s| std::cmp::Reverse((s.0, s.1)));
    let cases = [
        ("op", "a", 0, 120, 5),
        ("op", "a", 0, 120, 1500),
        ("op", "b", 30, 90, 1500),
        ("tool", "t3", 0, 120, 7),
        ("tool", "t1", 12, 12, 1500),
        ("call", "c3-17", 0, 120, 20),
        ("call", "c4-0", 0, 120, 20),
        ("call", "renamed", 0, 120, 20),
        ("op", "a", 7, 7, 3),
        ("gen_ai.conversation.id", "s7", 0, 120, 20),
        ("gen_ai.conversation.id", "s7", 40, 50, 3),
        ("gen_ai.conversation.id", "s49", 100, 120, 1500),
    ];
    for (key, value, from_s, to_s, limit) in cases {
        let (lo, hi) = (
            (BASE + from_s * SEC) as i64,
            (BASE + to_s * SEC + 999 * MS) as i64,
        );
        // Traces in the order of their newest match, each with its newest `keep_spans` (3) matches;
        // the search stops at the `limit`-th trace.
        let mut want: Vec<(String, Vec<String>)> = Vec::new();
        for (start, _, trace, span) in &all {
            let carries = span.attributes.iter().any(|kv| {
                kv.key == key
                    && kv.value.as_ref().and_then(|v| v.value.as_ref())
                        == Some(&aotel::model::any_value::Value::StringValue(value.into()))
            });
            if !carries || !(lo..=hi).contains(start) {
                continue;
            }
            match want.iter_mut().find(|(t, _)| t == trace) {
                Some((_, kept)) if kept.len() < 3 => kept.push(hex(&span.span_id)),
                Some(_) => {}
                None => {
                    want.push((trace.clone(), vec![hex(&span.span_id)]));
                    if want.len() == limit {
                        break;
                    }
                }
            }
        }
        let p = SearchParams {
            filter: aotel::query::traceql::parse(&format!(r#"{{ span.{key} = "{value}" }}"#))
                .expect("traceql"),
            start_min: Some(lo),
            start_max: Some(hi),
            limit,
            ..SearchParams::default()
        };
        let got: Vec<(String, Vec<String>)> = search(&c, &p)
            .expect("search")
            .traces
            .iter()
            .map(|t| {
                let kept = t.spans.iter().map(|m| hex(&m.span.span_id)).collect();
                (hex(&t.trace_id), kept)
            })
            .collect();
        assert!(!want.is_empty(), "{key}={value}: the case finds something");
        assert_eq!(
            got, want,
            "{key}={value} from {from_s}s to {to_s}s, limit {limit}"
        );
    }
    // A value no span carries: every path's estimate is empty, blocks included.
    let p = SearchParams {
        filter: aotel::query::traceql::parse(r#"{ span.call = "c0-5" }"#).expect("traceql"),
        limit: 20,
        ..SearchParams::default()
    };
    assert!(search(&c, &p).expect("search").traces.is_empty());
    drop(dir);
    (blocks, session_rows)
}
