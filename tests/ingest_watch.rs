//! `serve --watch`: lines appended in several writes (one line split across two) are picked up, a restart
//! resumes from the recorded offset without duplicates, and truncated or replaced files are re-read.

mod common;

use aotel::Config;
use common::{eventually, fixtures, TestServer};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CC: &str = "5f0c2a7e-1b9d-4c3e-8f6a-2d4b7e9c1a03";
const AO: &str = "d796e8ba-ef3c-453f-97d7-b644930563f5";

async fn watching(db: &Path, dir: &Path) -> TestServer {
    let mut config = Config::with_db(db);
    config.watch = vec![dir.to_path_buf()];
    config.watch_interval = Duration::from_millis(20);
    TestServer::start_with(config).await
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
}

fn recorded_offset(db: &Path, file: &Path) -> Option<u64> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    let path = std::fs::canonicalize(file).ok()?;
    c.query_row(
        "SELECT offset FROM watch_offsets WHERE path = ?1",
        [path.to_string_lossy().into_owned()],
        |r| r.get::<_, i64>(0),
    )
    .ok()
    .map(|o| o as u64)
}

async fn session_where(
    server: &TestServer,
    key: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let url = server.url(&format!("/api/sessions/{key}"));
    eventually(what, || {
        let url = url.clone();
        let ok = &ok;
        async move {
            let v: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            ok(&v["session"]).then_some(v)
        }
    })
    .await
}

async fn offset_reaches(db: &Path, file: &Path, want: u64) {
    let (db, file) = (db.to_path_buf(), file.to_path_buf());
    eventually(&format!("offset {want} recorded"), || {
        let got = recorded_offset(&db, &file);
        async move { (got == Some(want)).then_some(()) }
    })
    .await;
}

fn cc_lines() -> Vec<String> {
    std::fs::read_to_string(fixtures().join(format!("claude-code/{CC}.jsonl")))
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test]
async fn growing_file_split_lines_and_restart_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("projects/parser");
    std::fs::create_dir_all(&dir).unwrap();
    let db = tmp.path().join("aotel.db");
    let file = dir.join(format!("{CC}.jsonl"));
    let lines = cc_lines();
    assert_eq!(lines.len(), 16);
    let server = watching(&db, tmp.path()).await;

    // Write 1: the prompt, the first response (two lines sharing msg_01) and the failed Bash result.
    append(&file, lines[..4].concat().as_bytes());
    let v = session_where(&server, CC, "first Bash call", |s| s["tool_calls"] == 1).await;
    assert_eq!(v["session"]["tool_errors"], 1);
    assert_eq!(v["session"]["status"], "running");

    // Write 2: the Task call and the first half of the sub-agent's prompt line (no newline yet).
    let split = &lines[5];
    let (head, tail) = split.split_at(split.len() / 2);
    append(&file, format!("{}{head}", lines[4]).as_bytes());
    let through_task: u64 = lines[..5].iter().map(|l| l.len() as u64).sum();
    offset_reaches(&db, &file, through_task).await;
    let v = session_where(&server, CC, "the Task call", |s| s["tool_calls"] == 2).await;
    assert_eq!(
        v["session"]["spans"], 5,
        "run, Bash, Task, msg_01, msg_02; the half line waits"
    );

    // Write 3: the rest of the split line and the sub-agent's lines up to its Grep result.
    append(&file, format!("{tail}{}{}", lines[6], lines[7]).as_bytes());
    let v = session_where(&server, CC, "the sub-agent's Grep", |s| {
        s["tool_calls"] == 3
    })
    .await;
    assert_eq!(v["session"]["runs"], 2, "main run and the sub-agent");
    assert_eq!(v["session"]["status"], "running");

    // Write 4: up to the Edit result. Then stop aotel.
    append(&file, lines[8..12].concat().as_bytes());
    let v = session_where(&server, CC, "the Edit call", |s| s["tool_calls"] == 4).await;
    let spans_before = v["session"]["spans"].clone();
    let upto: u64 = lines[..12].iter().map(|l| l.len() as u64).sum();
    offset_reaches(&db, &file, upto).await;
    let (db, _) = server.stop().await;

    // While aotel is down the session goes on; a new ao-* session file appears too.
    append(&file, lines[12..].concat().as_bytes());
    let ao_dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&ao_dir).unwrap();
    std::fs::copy(
        fixtures().join("ao-sessions/architect.meta.json"),
        ao_dir.join("architect.meta.json"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("ao-sessions/architect.jsonl"),
        ao_dir.join("architect.jsonl"),
    )
    .unwrap();

    let server = watching(&db, tmp.path()).await;
    let v = session_where(&server, CC, "the rest of the session", |s| {
        s["status"] == "finished"
    })
    .await;
    let row = &v["session"];
    assert_eq!(row["tool_calls"], 5);
    assert_eq!(row["tool_errors"], 1);
    assert_eq!(row["title"], "Fix parser nested-array depth limit");
    assert_eq!(
        row["spans"], 14,
        "5 tools + 7 model turns + 2 runs, each once"
    );
    assert!(row["spans"].as_i64() > spans_before.as_i64());
    let ao = session_where(&server, AO, "the ao session", |s| {
        s["runs"] == 2 && s["status"] == "finished"
    })
    .await;
    assert_eq!(ao["session"]["tool_calls"], 5);
    let size = std::fs::metadata(&file).unwrap().len();
    offset_reaches(&db, &file, size).await;

    // Importing the same file now adds nothing: watch and import produce the same spans.
    let summary = {
        let sink = aotel::ingest::import::Sink::Remote(
            aotel::ingest::client::OtlpHttp::new(&server.otlp_http("")).unwrap(),
        );
        aotel::ingest::import::import(std::slice::from_ref(&file), &sink, |_| {}, |_, _, _| {})
            .await
            .unwrap()
    };
    assert_eq!(summary.spans, 14);
    let after = server.get_json(&format!("/api/sessions/{CC}")).await;
    assert_eq!(after["session"]["spans"], 14);
    assert_eq!(
        after["session"]["updated_seq"], v["session"]["updated_seq"],
        "nothing was rewritten"
    );
    server.stop().await;
}

fn ao_copy(dir: &Path, name: &str, session: &str) -> PathBuf {
    let text = std::fs::read_to_string(fixtures().join("ao-sessions/architect.jsonl"))
        .unwrap()
        .replace(AO, session);
    let meta = std::fs::read_to_string(fixtures().join("ao-sessions/architect.meta.json"))
        .unwrap()
        .replace(AO, session);
    std::fs::write(dir.join(format!("{name}.meta.json")), meta).unwrap();
    let path = dir.join(format!("{name}.jsonl"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn truncated_and_replaced_files_are_read_again() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("aotel.db");
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let one = "00000000-0000-4000-8000-000000000001";
    let two = "00000000-0000-4000-8000-000000000002";
    let three = "00000000-0000-4000-8000-000000000003";
    let server = watching(&db, &dir).await;
    let path = ao_copy(&dir, "worker", one);
    session_where(&server, one, "first session", |s| s["tool_calls"] == 5).await;

    // Rotation: the file is renamed away and a new one takes its name.
    std::fs::rename(&path, dir.join("worker.jsonl.1")).unwrap();
    ao_copy(&dir, "worker", two);
    session_where(&server, two, "session in the replacing file", |s| {
        s["tool_calls"] == 5
    })
    .await;

    // Truncation: the file is cut and written again, shorter (only the first run).
    let first_run: String = std::fs::read_to_string(&path)
        .unwrap()
        .replace(two, three)
        .lines()
        .take(10)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        dir.join("worker.meta.json"),
        "{\"session_name\": \"worker\", \"agent\": \"a\"}",
    )
    .unwrap();
    std::fs::write(&path, first_run).unwrap();
    let v = session_where(&server, three, "session in the truncated file", |s| {
        s["tool_calls"] == 4
    })
    .await;
    assert_eq!(v["session"]["runs"], 1);

    // The earlier sessions are still there, unchanged.
    assert_eq!(
        server.get_json(&format!("/api/sessions/{one}")).await["session"]["tool_calls"],
        5
    );
    assert_eq!(
        server.get_json(&format!("/api/sessions/{two}")).await["session"]["tool_calls"],
        5
    );
    server.stop().await;
}
