//! `aotel import`: each fixture gives exactly the facts in tests/fixtures/README.md, importing twice adds
//! nothing (locally and over OTLP/HTTP), and broken lines are reported with file and line.

mod common;

use aotel::ingest::client::OtlpHttp;
use aotel::ingest::import::{import, Sink, Summary};
use common::{fixtures, TestServer};
use serde_json::Value;
use std::path::{Path, PathBuf};

const AO: &str = "d796e8ba-ef3c-453f-97d7-b644930563f5";
const CC: &str = "5f0c2a7e-1b9d-4c3e-8f6a-2d4b7e9c1a03";

async fn import_local(db: &Path, paths: &[PathBuf]) -> Summary {
    let store = aotel::store::open(db, &aotel::store::StoreOptions::default()).expect("open store");
    let summary = import(
        paths,
        &Sink::Local(store.writer.clone()),
        |_| {},
        |_, _, _| {},
    )
    .await
    .expect("import");
    store.close().await.expect("close store");
    summary
}

/// Every span of a session tree, depth first, with its depth-first path of ancestors' names.
fn flatten(spans: &Value, out: &mut Vec<(Value, Vec<String>)>, path: &[String]) {
    for s in spans.as_array().expect("span list") {
        out.push((s.clone(), path.to_vec()));
        let mut p = path.to_vec();
        p.push(s["name"].as_str().unwrap_or_default().to_string());
        flatten(&s["children"], out, &p);
    }
}

fn spans_of(session: &Value) -> Vec<(Value, Vec<String>)> {
    let mut out = Vec::new();
    flatten(&session["spans"], &mut out, &[]);
    out
}

fn tools(spans: &[(Value, Vec<String>)]) -> Vec<(Value, Vec<String>)> {
    let mut t: Vec<_> = spans
        .iter()
        .filter(|(s, _)| s["operation"] == "execute_tool")
        .cloned()
        .collect();
    t.sort_by_key(|(s, _)| {
        s["start_unix_nano"]
            .as_str()
            .unwrap_or("")
            .parse::<u64>()
            .unwrap_or(0)
    });
    t
}

fn check_ao(view: &Value) {
    let row = &view["session"];
    assert_eq!(row["key"], AO);
    assert_eq!(row["title"], "architect");
    assert_eq!(row["agent"], "local-codebase-researcher");
    assert_eq!(row["status"], "finished");
    assert_eq!(row["runs"], 2);
    assert_eq!(row["tool_calls"], 5);
    assert_eq!(row["tool_errors"], 1);
    assert_eq!(row["usage"]["output_tokens"], 908);
    let cost = row["usage"]["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.0534445).abs() < 1e-9, "cost {cost}");
    assert_eq!(view["traces"].as_array().unwrap().len(), 1);
    assert_eq!(view["traces"][0], AO.replace('-', ""));
    let spans = spans_of(view);
    let tools = tools(&spans);
    let names: Vec<&str> = tools
        .iter()
        .map(|(s, _)| s["tool"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Bash", "Read", "Grep", "Read", "Edit"]);
    let failed: Vec<&str> = tools
        .iter()
        .filter(|(s, _)| s["status"] == "error")
        .map(|(s, _)| s["attributes"]["gen_ai.tool.call.id"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        ["toolu_01HxW2aZP4mQe7yTt3bKc9Ld"],
        "exactly the first Read failed"
    );
    // Grep and the second Read were asked for in one assistant message: same estimated start.
    assert_eq!(tools[2].0["start_unix_nano"], tools[3].0["start_unix_nano"]);
    // Four tools in run 1, Edit in run 2, each under its run.
    let runs: Vec<&(Value, Vec<String>)> = spans
        .iter()
        .filter(|(s, _)| s["operation"] == "invoke_agent")
        .collect();
    assert_eq!(runs.len(), 2);
    for (t, path) in &tools {
        assert_eq!(
            path.len(),
            1,
            "tool {} sits directly under its run",
            t["tool"]
        );
        assert_eq!(t["attributes"]["ao.timing.estimated"], true);
    }
    // Tool output with markup is stored verbatim (the page must show it as text).
    let read2 = &tools[3].0;
    assert!(read2["attributes"]["gen_ai.tool.call.result"]
        .as_str()
        .unwrap()
        .contains(r#"<tag onmouseover="alert(1)">not html</tag>"#));
    // Run 1 lasted the result line's duration_ms from its user_message timestamp.
    let run1 = runs
        .iter()
        .find(|(s, _)| s["attributes"]["ao.run.index"] == 1)
        .unwrap();
    assert_eq!(run1.0["duration_ms"], 18234.0);
    assert_eq!(run1.0["start_unix_nano"], "1763289012101000000");
}

fn check_cc(view: &Value) {
    let row = &view["session"];
    assert_eq!(row["key"], CC);
    assert_eq!(row["title"], "Fix parser nested-array depth limit");
    assert_eq!(row["status"], "finished");
    assert_eq!(row["tool_calls"], 5);
    assert_eq!(row["tool_errors"], 1);
    assert_eq!(
        row["usage"]["output_tokens"],
        41 + 60 + 70 + 33 + 28 + 30 + 25
    );
    let spans = spans_of(view);
    let tools = tools(&spans);
    let names: Vec<(&str, usize)> = tools
        .iter()
        .map(|(s, p)| (s["tool"].as_str().unwrap(), p.len()))
        .collect();
    // Main agent: Bash, Task, Edit, Bash (depth 1, under the run); Grep inside the sub-agent under Task.
    assert_eq!(
        names,
        [
            ("Bash", 1),
            ("Task", 1),
            ("Grep", 3),
            ("Edit", 1),
            ("Bash", 1)
        ],
        "tools and their depth"
    );
    let (grep, grep_path) = &tools[2];
    assert_eq!(grep_path[1], "execute_tool Task");
    assert_eq!(grep_path[2], "invoke_agent Explore");
    assert_eq!(grep["status"], "ok");
    let (bash, _) = &tools[0];
    assert_eq!(bash["status"], "error");
    assert_eq!(bash["duration_ms"], 6491.0);
    let chats: Vec<&(Value, Vec<String>)> = spans
        .iter()
        .filter(|(s, _)| s["operation"] == "chat")
        .collect();
    assert_eq!(chats.len(), 7, "seven model turns (distinct message ids)");
    let in_sub = chats
        .iter()
        .filter(|(_, p)| p.iter().any(|n| n == "invoke_agent Explore"))
        .count();
    assert_eq!(in_sub, 2, "two of them in the sub-agent");
    // The sub-agent's run span sits under the Task call.
    let sub = spans
        .iter()
        .find(|(s, _)| s["name"] == "invoke_agent Explore")
        .unwrap();
    assert_eq!(sub.1.last().map(String::as_str), Some("execute_tool Task"));
}

#[tokio::test]
async fn fixtures_give_the_documented_facts_and_a_second_import_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aotel.db");
    let paths = [
        fixtures().join("ao-sessions"),
        fixtures().join("claude-code"),
    ];
    let first = import_local(&db, &paths).await;
    assert_eq!(first.files, 2);
    assert_eq!(first.sessions.len(), 2);
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    assert_eq!(first.stored, Some(first.spans));

    let server = TestServer::start_at(&db).await;
    let ao = server.get_json(&format!("/api/sessions/{AO}")).await;
    let cc = server.get_json(&format!("/api/sessions/{CC}")).await;
    check_ao(&ao);
    check_cc(&cc);
    let (db, _) = server.stop().await;

    let second = import_local(&db, &paths).await;
    assert_eq!(second.spans, first.spans);
    assert_eq!(second.stored, Some(0), "a second import stores nothing new");
    let server = TestServer::start_at(&db).await;
    assert_eq!(
        server.get_json(&format!("/api/sessions/{AO}")).await["session"],
        ao["session"]
    );
    assert_eq!(
        server.get_json(&format!("/api/sessions/{CC}")).await["session"],
        cc["session"]
    );
    assert_eq!(server.get_json("/api/sessions").await["total"], 2);
    server.stop().await;
}

#[tokio::test]
async fn import_over_otlp_http_to_a_running_aotel() {
    let server = TestServer::start().await;
    let sink = Sink::Remote(OtlpHttp::new(&server.otlp_http("")).unwrap());
    let paths = [fixtures()];
    for _ in 0..2 {
        let s = import(&paths, &sink, |_| {}, |_, _, _| {})
            .await
            .expect("import");
        assert_eq!(s.sessions.len(), 2);
        assert_eq!(s.stored, None);
        check_ao(&server.get_json(&format!("/api/sessions/{AO}")).await);
        check_cc(&server.get_json(&format!("/api/sessions/{CC}")).await);
    }
    let list = server.get_json("/api/sessions").await;
    assert_eq!(
        list["total"], 2,
        "the legacy ndjson is not a session file and the rest came once"
    );
    server.stop().await;
}

const GOOD_RUN: &str = r#"{"type": "user_message", "content": "go", "timestamp": "2025-11-16T10:30:12.101000Z"}
{"subtype": "init", "data": {"type": "system", "subtype": "init", "session_id": "11111111-2222-4333-8444-555555555555", "model": "m"}}
not json at all
{"content": [{"id": "toolu_A", "name": "Bash", "input": {"command": "true"}}], "model": "m", "parent_tool_use_id": null}
{"mystery": true}
{"content": [{"tool_use_id": "toolu_A", "content": "ok", "is_error": false}], "parent_tool_use_id": null}
{"subtype": "success", "duration_ms": 1000, "is_error": false, "num_turns": 1, "session_id": "11111111-2222-4333-8444-555555555555", "total_cost_usd": 0.5, "usage": {"input_tokens": 1, "output_tokens": 2}, "result": "done"}
{"content": [{"text": "cut"#;

#[tokio::test]
async fn broken_input_is_skipped_with_file_and_line_and_the_exit_code_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = dir.path().join("sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    let broken = sessions.join("broken.jsonl");
    std::fs::write(&broken, GOOD_RUN).unwrap();
    std::fs::write(
        sessions.join("broken.meta.json"),
        r#"{"session_name": "broken", "session_id": "11111111-2222-4333-8444-555555555555", "agent": "a"}"#,
    )
    .unwrap();
    let orphan = sessions.join("orphan.jsonl");
    std::fs::copy(fixtures().join("ao-sessions/architect.jsonl"), &orphan).unwrap();
    let db = dir.path().join("aotel.db");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aotel"))
        .arg("import")
        .arg(&sessions)
        .arg("--db")
        .arg(&db)
        .env("NO_COLOR", "1")
        .output()
        .expect("run aotel import");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code says something was skipped: {stderr}"
    );
    let b = broken.display().to_string();
    assert!(stderr.contains(&format!("{b}:3: not JSON")), "{stderr}");
    assert!(
        stderr.contains(&format!("{b}:5: unknown message shape")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{b}:8: truncated last line")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: missing meta file", orphan.display())),
        "{stderr}"
    );
    assert!(stderr.contains("imported 2 files: 2 sessions"), "{stderr}");
    assert!(stderr.contains("skipped 4"), "{stderr}");

    // Everything else was imported: the broken file's run and tool, and the meta-less session by its id.
    let server = TestServer::start_at(&db).await;
    let s = server
        .get_json("/api/sessions/11111111-2222-4333-8444-555555555555")
        .await;
    assert_eq!(s["session"]["tool_calls"], 1);
    assert_eq!(s["session"]["status"], "finished");
    assert_eq!(s["session"]["usage"]["cost_usd"], 0.5);
    let orphan_view = server.get_json(&format!("/api/sessions/{AO}")).await;
    assert_eq!(orphan_view["session"]["tool_calls"], 5);
    server.stop().await;

    // A clean folder exits 0.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aotel"))
        .arg("import")
        .arg(fixtures().join("claude-code"))
        .arg("--db")
        .arg(&db)
        .output()
        .expect("run aotel import");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
