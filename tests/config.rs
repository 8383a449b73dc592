//! The config file, `AOTEL_*` variables and flags, in that order of precedence; config errors name the
//! key and the problem.

use std::io::Write;
use std::process::Command;

fn aotel(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aotel"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run aotel")
}

fn parse(argv: &[&str]) -> Result<aotel::config::ServeArgs, aotel::config::ConfigError> {
    use clap::{CommandFactory, FromArgMatches, Parser};
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: aotel::config::ServeArgs,
    }
    let argv: Vec<std::ffi::OsString> = std::iter::once("aotel")
        .chain(argv.iter().copied())
        .map(Into::into)
        .collect();
    let m = aotel::config::with_config_file(Cli::command(), argv)?;
    Ok(Cli::from_arg_matches(&m).expect("matches").serve)
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("tmp");
    f.write_all(text.as_bytes()).expect("write");
    f
}

/// Tests here read the process environment, and one sets it: they take turns.
static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn file_then_environment_then_flags() {
    let _turn = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let f = file(
        "db = \"/tmp/from-file.db\"\nmax_request_bytes = 2048\nqueue-bytes = 4096\nsync = \"full\"\nwatch = [\"/a\", \"/b\"]\ninsecure = true\n",
    );
    let path = f.path().to_str().expect("path");
    let a = parse(&["--config", path]).expect("file alone");
    assert_eq!(
        a.db.as_deref(),
        Some(std::path::Path::new("/tmp/from-file.db"))
    );
    assert_eq!(a.max_request_bytes, 2048);
    assert_eq!(a.queue_bytes, 4096);
    assert_eq!(a.durability, aotel::store::Durability::Full);
    assert_eq!(a.watch.len(), 2);
    assert!(a.insecure);

    std::env::set_var("AOTEL_MAX_REQUEST_BYTES", "3072");
    let b = parse(&["--config", path]).expect("env over file");
    assert_eq!(b.max_request_bytes, 3072, "the environment beats the file");
    assert_eq!(b.queue_bytes, 4096, "the file still fills in the rest");
    let c = parse(&["--config", path, "--max-request-bytes", "5000"]).expect("flag over env");
    assert_eq!(c.max_request_bytes, 5000, "a flag beats the environment");
    std::env::remove_var("AOTEL_MAX_REQUEST_BYTES");

    let d = parse(&[]).expect("defaults");
    assert_eq!(d.max_request_bytes, 16 << 20);
    assert_eq!(d.grpc.to_string(), "127.0.0.1:4317");
}

#[test]
fn config_errors_name_the_key_and_the_problem() {
    let _turn = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let err = |text: &str| {
        let f = file(text);
        match parse(&["--config", f.path().to_str().expect("path")]) {
            Err(aotel::config::ConfigError::File(m)) => m,
            other => panic!("expected a config file error, got {:?}", other.map(|_| ())),
        }
    };
    let m = err("colour = \"blue\"\n");
    assert!(m.contains("unknown key \"colour\""), "{m}");
    let m = err("max_request_bytes = \"lots\"\n");
    assert!(
        m.contains("--max-request-bytes") && m.contains("lots"),
        "{m}"
    );
    let m = err("sync = \"sometimes\"\n");
    assert!(
        m.contains("sometimes") && m.contains("normal or full"),
        "{m}"
    );
    let m = err("db = [1, 2\n");
    assert!(m.contains("not valid TOML"), "{m}");
    let m = err("grpc = { host = \"x\" }\n");
    assert!(m.contains("\"grpc\"") && m.contains("table"), "{m}");

    // The binary exits non-zero with the message.
    let f = file("nope = 1\n");
    let out = aotel(&["--config", f.path().to_str().expect("path")], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key \"nope\""));
    let out = aotel(&["--config", "/nonexistent/aotel.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read it"));
}
