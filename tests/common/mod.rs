//! Starts a whole aotel on loopback port 0 with a temporary database, and small client helpers.
#![allow(dead_code)]

use aotel::{Config, Listeners};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
    pub db: PathBuf,
    pub dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), aotel::Error>>>,
}

impl TestServer {
    /// A fresh server on a fresh database.
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("aotel.db");
        let mut server = TestServer::start_with(Config::with_db(&db)).await;
        server.dir = Some(dir);
        server
    }

    /// A server on an existing database file (for restart tests).
    pub async fn start_at(db: &Path) -> TestServer {
        TestServer::start_with(Config::with_db(db)).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let listeners = Listeners::ephemeral().await.expect("bind loopback ports");
        TestServer::start_bound(config, listeners).await
    }

    /// A server on chosen addresses (gRPC, HTTP, API; port 0 picks one), so a test can stop it and
    /// start another on the same ports. The old listener's port may take a moment to be free again.
    pub async fn start_on(
        config: Config,
        addrs: (SocketAddr, SocketAddr, SocketAddr),
    ) -> TestServer {
        let mut tries = 0;
        let listeners = loop {
            match Listeners::bind(addrs.0, addrs.1, addrs.2).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("bind {addrs:?}: {e}"),
            }
        };
        TestServer::start_bound(config, listeners).await
    }

    pub fn addrs(&self) -> (SocketAddr, SocketAddr, SocketAddr) {
        (self.grpc, self.http, self.api)
    }

    /// A server on listeners the caller bound (e.g. the same ports again, to bring a downstream back).
    pub async fn start_bound(config: Config, listeners: Listeners) -> TestServer {
        let (grpc, http, api) = listeners.addrs();
        let db = config.db.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(aotel::run(config, listeners, async {
            let _ = stopped.await;
        }));
        let server = TestServer {
            grpc,
            http,
            api,
            db,
            dir: None,
            stop: Some(stop),
            handle: Some(handle),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("aotel did not become ready on {}", self.api);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    pub fn otlp_http(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let body = self.get_text(path).await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// The body of a successful GET (`/metrics`, say).
    pub async fn get_text(&self, path: &str) -> String {
        let resp = reqwest::get(self.url(path)).await.expect("GET");
        let status = resp.status();
        let body = resp.text().await.expect("body");
        assert!(status.is_success(), "GET {path} answered {status}: {body}");
        body
    }

    /// Stops gracefully and returns the database path (the temp dir moves to the caller).
    pub async fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("server task")
                .expect("aotel stopped cleanly");
        }
        (self.db.clone(), self.dir.take())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Polls `f` until it returns Some, for up to ten seconds.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..400 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The session fixtures (copied from the shared fixtures; their README says what a correct import gives).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// POSTs an OTLP/JSON `ExportTraceServiceRequest` to the server's OTLP/HTTP `/v1/traces` and checks it
/// was accepted (stored: aotel answers only after the commit).
pub async fn post_otlp_json(server: &TestServer, body: &serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(server.otlp_http("/v1/traces"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /v1/traces");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "POST /v1/traces answered {status}: {text}"
    );
}

/// GET with optional Accept header: (status, content type, body bytes).
pub async fn get_raw(
    server: &TestServer,
    path: &str,
    accept: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let mut req = reqwest::Client::new().get(server.url(path));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.expect("GET");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ctype, resp.bytes().await.expect("body").to_vec())
}

/// A CA and a certificate for localhost/127.0.0.1 it signed, made with the openssl command.
pub fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=aotel test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// The real `aotel` binary on free loopback ports, as a user runs it; killed when dropped.
pub struct AotelProcess {
    pub child: std::process::Child,
    pub grpc: u16,
    pub http: u16,
    pub api: u16,
}

impl Drop for AotelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `aotel <first> --grpc … --http … --api …` on loopback `ports` (gRPC, HTTP, API), for
/// `spawn_on_free_ports`; `first` is a subcommand or nothing.
pub fn aotel_on(first: &[&str], [grpc, http, api]: [u16; 3]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aotel"));
    c.args(first)
        .args(["--grpc", &format!("127.0.0.1:{grpc}")])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--api", &format!("127.0.0.1:{api}")]);
    c
}

/// Starts `aotel` with `args` (and `RUST_LOG=warn`) on free ports, once its API answers `/readyz`.
pub fn spawn_aotel(args: &[&std::ffi::OsStr]) -> AotelProcess {
    let (child, [grpc, http, api]) = spawn_on_free_ports(
        "aotel",
        |ports| {
            let mut c = aotel_on(&[], ports);
            c.args(args)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit());
            c
        },
        |[_, _, api]| answers_ready(api),
    );
    AotelProcess {
        child,
        grpc,
        http,
        api,
    }
}

/// Starts the child that `command` makes for `N` free loopback ports, once `ready` says it serves on
/// them and it is still running a moment later. The child binds the ports itself, so another process
/// can take one after it was picked here: then the child exits (perhaps just after that other process
/// answered for it), and it is started again on new ports.
pub fn spawn_on_free_ports<const N: usize>(
    what: &str,
    command: impl Fn([u16; N]) -> Command,
    ready: impl Fn([u16; N]) -> bool,
) -> (std::process::Child, [u16; N]) {
    for _ in 0..5 {
        let ports = std::array::from_fn(|_| free_port());
        let mut child = command(ports)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("try_wait").is_none() && std::time::Instant::now() < deadline
        {
            if ready(ports) {
                std::thread::sleep(Duration::from_millis(200));
                if child.try_wait().expect("try_wait").is_none() {
                    return (child, ports);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("{what} did not start listening");
}

/// Whether `GET /readyz` on `port` answers 200. The listening sockets exist before the store is open
/// (and before the attribute index has caught up after a crash); an answer means the server is serving.
pub fn answers_ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// The trace id of request `n` in a load test: `tag` repeated, then `n`, so a test can find which of
/// its requests were stored.
pub fn load_trace_id(tag: u8, n: u64) -> Vec<u8> {
    let mut id = vec![tag; 8];
    id.extend_from_slice(&n.to_be_bytes());
    id
}

/// How many spans the store holds of each trace, read in one scan. The spans' trace id has no index of
/// its own (reads reach a trace through `traces` and `trace_runs`), so a count per trace would scan the
/// whole table each time: minutes for the thousands of requests a load test sends.
pub fn span_counts_by_trace(
    conn: &rusqlite::Connection,
) -> std::collections::HashMap<Vec<u8>, i64> {
    conn.prepare("SELECT trace_id, COUNT(*) FROM spans GROUP BY trace_id")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("span counts")
}

/// One encoded OTLP request of `spans` Bash tool calls (the first one the parent of the rest) in trace
/// `load_trace_id(tag, n)`, in session `{session}-{n % 7}`, each with `result_bytes` of output.
pub fn load_request(tag: u8, n: u64, spans: u64, session: &str, result_bytes: usize) -> Vec<u8> {
    use aotel::model::{attrs::kv_str, Span};
    use prost::Message;
    let trace_id = load_trace_id(tag, n);
    let spans = (1..=spans)
        .map(|i| Span {
            trace_id: trace_id.clone(),
            span_id: i.to_be_bytes().to_vec(),
            parent_span_id: if i == 1 {
                vec![]
            } else {
                1u64.to_be_bytes().to_vec()
            },
            name: "execute_tool Bash".into(),
            start_time_unix_nano: 1_700_000_000_000_000_000 + n * 1000 + i,
            end_time_unix_nano: 1_700_000_000_000_000_000 + n * 1000 + i + 500,
            attributes: vec![
                kv_str("gen_ai.operation.name", "execute_tool"),
                kv_str("gen_ai.tool.name", "Bash"),
                kv_str("gen_ai.conversation.id", format!("{session}-{}", n % 7)),
                kv_str("gen_ai.tool.call.result", "x".repeat(result_bytes)),
            ],
            ..Default::default()
        })
        .collect();
    traces_request(None, spans).encode_to_vec()
}

/// An export request of `spans` in one scope, with `resource`.
pub fn traces_request(
    resource: Option<aotel::model::Resource>,
    spans: Vec<aotel::model::Span>,
) -> aotel::model::ExportTraceServiceRequest {
    use aotel::model::{ExportTraceServiceRequest, ResourceSpans, ScopeSpans};
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
