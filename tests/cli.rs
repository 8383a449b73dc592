//! The `aotel` binary as a user runs it: defaults, refusals, and a graceful stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn non_loopback_bind_is_refused_without_insecure() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_aotel"))
        .args(["--api", "0.0.0.0:0", "--db"])
        .arg(dir.path().join("x.db"))
        .output()
        .expect("run aotel");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--insecure"),
        "{err}"
    );
    assert!(
        !dir.path().join("x.db").exists(),
        "nothing is created when refusing to start"
    );
}

#[test]
fn sigterm_commits_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("nested/dir/aotel.db");
    // Started again on other ports if another process takes one of them first; the log lines read below
    // wait in the pipe meanwhile.
    let (mut child, [grpc, http, api]) = common::spawn_on_free_ports(
        "aotel",
        |ports| {
            let mut c = common::aotel_on(&["serve"], ports);
            c.env("AOTEL_DB", &db)
                .env("RUST_LOG", "info")
                .stderr(Stdio::piped());
            c
        },
        |[_, _, api]| common::answers_ready(api),
    );
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let line = lines
            .next()
            .expect("aotel logs its listeners")
            .expect("line");
        if line.contains("listening") || line.contains("data stored") {
            seen.push(line);
        }
    }
    let joined = seen.join("\n");
    assert!(joined.contains(&format!("127.0.0.1:{grpc}")), "{joined}");
    assert!(joined.contains(&format!("127.0.0.1:{api}")), "{joined}");
    assert!(joined.contains(&db.display().to_string()), "{joined}");

    let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"last words","attributes":[{"key":"session.id","value":{"stringValue":"term"}}]}]}]}]}"#;
    let resp = post(http, body);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut rest = String::new();
    for line in lines.map_while(Result::ok) {
        rest.push_str(&line);
        rest.push('\n');
    }
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "exit {exit:?}; log:\n{rest}");
    assert!(rest.contains("stopped cleanly"), "{rest}");

    let conn = rusqlite::Connection::open(&db).expect("open db");
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM spans WHERE session = 'term'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(n, 1);
}

/// A bare HTTP/1.1 POST, so this test needs no async runtime.
fn post(port: u16, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        body
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}
