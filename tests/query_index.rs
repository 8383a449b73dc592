//! The attribute index behind tag search: kept right when a span is replaced by a newer copy, and
//! built at startup for data stored before it existed (a database migrated to schema 3).

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
