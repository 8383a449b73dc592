//! The attribute index behind tag search: kept right when a span is replaced by a newer copy, built
//! at startup for data stored before it existed (a database migrated to schema 3), and written behind
//! the spans: searches find spans whose rows are not written yet, and rows a crash lost are rebuilt.

mod common;
mod query_fixture;

use common::{post_otlp_json, TestServer};
use query_fixture::*;
use serde_json::{json, Value};

async fn traces(server: &TestServer, query: &str) -> Vec<String> {
    let v = server.get_json(&format!("/api/traces?{query}")).await;
    let mut ids: Vec<String> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| t["traceID"].as_str().unwrap_or("").to_string())
        .collect();
    ids.sort();
    ids
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

fn attr_count(db: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(db).expect("open db");
    c.query_row("SELECT COUNT(*) FROM span_attrs", [], |r| r.get(0))
        .expect("count")
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
    let indexed = attr_count(&db);
    assert!(
        indexed > 20,
        "every short span attribute is indexed: {indexed}"
    );

    // What migration 3 leaves behind on a database that already had spans: empty index tables and
    // a note of how far the backfill must go.
    {
        let c = rusqlite::Connection::open(&db).expect("open db");
        c.execute_batch(
            "DELETE FROM span_attrs; DELETE FROM resource_attrs;
             INSERT INTO meta(key, value) SELECT 'span_attrs_backfill', MAX(seq) FROM spans;",
        )
        .expect("simulate a migrated database");
    }
    assert_eq!(attr_count(&db), 0);
    let server = TestServer::start_at(&db).await;
    assert_eq!(
        attr_count(&db),
        indexed,
        "the backfill rebuilds the same rows"
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

/// Removes the index rows of the spans above the newest `keep` and marks them unindexed: the state a
/// search meets before the writer wrote its backlog, or a restart after a crash lost it.
fn drop_newest_rows(db: &std::path::Path, keep: i64) -> i64 {
    let c = rusqlite::Connection::open(db).expect("open db");
    let upto: i64 = c
        .query_row("SELECT MAX(seq) - ?1 FROM spans", [keep], |r| r.get(0))
        .expect("max seq");
    c.execute("DELETE FROM span_attrs WHERE seq > ?1", [upto])
        .expect("delete rows");
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
    let indexed = attr_count(&db);
    let upto = drop_newest_rows(&db, 3);
    assert!(attr_count(&db) < indexed, "rows were dropped");

    let server = TestServer::start_at(&db).await;
    assert_eq!(attr_count(&db), indexed, "the same rows are back");
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
