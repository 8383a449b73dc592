//! The old backend's API: the legacy ndjson posted event by event (with a restart between a pre_tool and
//! its post_tool) gives the documented result, retries change nothing, malformed events get 422 and
//! write nothing, and `GET /sessions` / `GET /events/{id}` answer in the old shapes.

mod common;

use common::{fixtures, TestServer};
use serde_json::Value;

const SID: &str = "7a1c9e55-3b2d-4f80-9e6a-0c5d8b7f2e14";

fn events() -> Vec<Value> {
    std::fs::read_to_string(fixtures().join("legacy-events/session.ndjson"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn post(server: &TestServer, body: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(server.url("/events"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /events");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn flatten(spans: &Value, out: &mut Vec<Value>) {
    for s in spans.as_array().unwrap() {
        out.push(s.clone());
        flatten(&s["children"], out);
    }
}

async fn session(server: &TestServer) -> (Value, Vec<Value>) {
    let v = server.get_json(&format!("/api/sessions/{SID}")).await;
    let mut spans = Vec::new();
    flatten(&v["spans"], &mut spans);
    (v, spans)
}

#[tokio::test]
async fn legacy_events_become_one_session_and_the_old_reads_answer() {
    let events = events();
    assert_eq!(events.len(), 7);
    let server = TestServer::start().await;
    // session_start, message, pre_tool
    for ev in &events[..3] {
        let (status, body) = post(&server, &ev.to_string()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ok");
    }
    let (v, spans) = session(&server).await;
    assert_eq!(
        v["session"]["status"], "running",
        "session_start opened a run"
    );
    assert!(spans
        .iter()
        .any(|s| s["tool"] == "Read" && s["in_progress"] == true));

    // A restart between pre_tool and post_tool: the pairing lives in the store.
    let (db, dir) = server.stop().await;
    let mut server = TestServer::start_at(&db).await;
    server.dir = dir;
    for ev in &events[3..] {
        let (status, body) = post(&server, &ev.to_string()).await;
        assert_eq!(status, 200, "{body}");
    }
    let (v, spans) = session(&server).await;
    let row = &v["session"];
    assert_eq!(row["status"], "finished");
    assert_eq!(row["tool_calls"], 2);
    assert_eq!(row["tool_errors"], 1);
    assert_eq!(row["runs"], 1);
    assert_eq!(row["logs"], 7, "every event kept as it was posted");
    assert_eq!(
        row["last_unix_nano"], "1763294409100000000",
        "finished at 12:00:09.100 UTC"
    );
    let tools: Vec<&Value> = spans
        .iter()
        .filter(|s| s["operation"] == "execute_tool")
        .collect();
    assert_eq!(tools.len(), 2);
    let read = tools.iter().find(|s| s["tool"] == "Read").unwrap();
    assert_eq!(read["duration_ms"], 60.0);
    assert_eq!(read["status"], "ok");
    assert_eq!(read["in_progress"], false);
    let bash = tools.iter().find(|s| s["tool"] == "Bash").unwrap();
    assert_eq!(bash["status"], "error");
    assert_eq!(bash["status_message"], "Command failed with exit code 1");
    assert_eq!(
        bash["duration_ms"], 0.0,
        "a lone post_tool is a span at the event time"
    );
    let run = spans
        .iter()
        .find(|s| s["operation"] == "invoke_agent")
        .unwrap();
    assert_eq!(run["attributes"]["ao.stop_reason"], "completed");
    assert_eq!(run["attributes"]["ao.exit_code"], 0);
    assert_eq!(run["end_unix_nano"], "1763294409100000000");
    assert_eq!(run["in_progress"], false);
    assert!(
        tools.iter().all(|t| t["parent_span_id"] == run["span_id"]),
        "tools sit under the run"
    );

    // A client retrying every event changes nothing.
    for ev in &events {
        assert_eq!(post(&server, &ev.to_string()).await.0, 200);
    }
    let (again, spans_again) = session(&server).await;
    assert_eq!(again["session"]["spans"], row["spans"]);
    assert_eq!(again["session"]["logs"], 7);
    assert_eq!(again["session"]["tool_calls"], 2);
    assert_eq!(spans_again.len(), spans.len());

    // Malformed events: 422 with a message, nothing written.
    for bad in [
        "not json".to_string(),
        r#"{"event_type": "pre_tool", "session_id": "7a1c9e55-3b2d-4f80-9e6a-0c5d8b7f2e14"}"#.to_string(),
        r#"{"event_type": "teleport", "session_id": "x"}"#.to_string(),
        r#"{"event_type": "message", "session_id": "7a1c9e55-3b2d-4f80-9e6a-0c5d8b7f2e14", "timestamp": "later"}"#
            .to_string(),
    ] {
        let (status, body) = post(&server, &bad).await;
        assert_eq!(status, 422, "{bad}");
        assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    let (after, _) = session(&server).await;
    assert_eq!(after["session"]["logs"], 7);
    assert_eq!(server.get_json("/api/sessions").await["total"], 1);

    // GET /sessions: the old list shape.
    let list = server.get_json("/sessions").await;
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(s["session_id"], SID);
    assert_eq!(s["session_name"], SID);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["start_time"], "2025-11-16T12:00:00.000000+00:00");
    assert_eq!(s["end_time"], "2025-11-16T12:00:09.100000+00:00");
    assert_eq!(s["tool_count"], 2);
    assert_eq!(s["error_count"], 1);

    // GET /events/{id}: the events as they were posted, in order.
    let got = server.get_json(&format!("/events/{SID}")).await;
    let got = got.as_array().expect("an array");
    assert_eq!(got.len(), 7);
    for (g, want) in got.iter().zip(&events) {
        let mut g = g.clone();
        assert!(g["id"].is_i64());
        g.as_object_mut().unwrap().remove("id");
        assert_eq!(&g, want);
    }
    let missing = reqwest::get(server.url("/events/no-such-session"))
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    server.stop().await;
}

#[tokio::test]
async fn sessions_from_other_sources_read_as_old_events() {
    let server = TestServer::start().await;
    let sink = aotel::ingest::import::Sink::Remote(
        aotel::ingest::client::OtlpHttp::new(&server.otlp_http("")).unwrap(),
    );
    aotel::ingest::import::import(
        &[fixtures().join("ao-sessions")],
        &sink,
        |_| {},
        |_, _, _| {},
    )
    .await
    .unwrap();
    let got = server
        .get_json("/events/d796e8ba-ef3c-453f-97d7-b644930563f5")
        .await;
    let types: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types.iter().filter(|t| **t == "session_start").count(), 2);
    assert_eq!(types.iter().filter(|t| **t == "session_stop").count(), 2);
    assert_eq!(types.iter().filter(|t| **t == "pre_tool").count(), 5);
    assert_eq!(types.iter().filter(|t| **t == "post_tool").count(), 5);
    assert_eq!(types[0], "session_start");
    let failed: Vec<&Value> = got
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "post_tool" && !e["error"].is_null())
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["tool_name"], "Read");
    assert_eq!(failed[0]["session_name"], "architect");
    server.stop().await;
}
