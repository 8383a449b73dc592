//! Ingest benchmark: drives a release `aotel` (a child process on a fresh database) with concurrent
//! OTLP exporters (gRPC and HTTP protobuf, agent-shaped spans) and the same load against rotel's
//! receive-and-drop (`rotel-agent start --exporter blackhole`) in the same run, and prints figures.
//! The saturation phases of the two alternate (rotel, then aotel) for `--rounds` rounds, each starting
//! on a quiet machine, and the ratio printed last is the median of the rounds': this machine is shared
//! and noisy, and one pair of phases can be off by half or more, so five rounds by default.
//!
//! `cargo bench --bench ingest` (options after `--`: --seconds N --connections N --spans N --rate N
//! --rounds N).

#[path = "support/agent_load.rs"]
mod agent_load;
#[path = "support/procstat.rs"]
mod procstat;

use agent_load::request;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use procstat::ThreadUse;
use prost::Message;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Opts {
    seconds: u64,
    connections: usize,
    spans: usize,
    /// `--rate`: the paced phases' rate (default `DEFAULT_RATE`); an external target is driven at it
    /// only when given, else as fast as it goes.
    rate: Option<u64>,
    rounds: usize,
}

const DEFAULT_RATE: u64 = 20_000;

fn opts() -> Opts {
    let mut o = Opts {
        seconds: 10,
        connections: 8,
        spans: 100,
        rate: None,
        rounds: 5,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let val = || args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match args[i].as_str() {
            "--seconds" => o.seconds = val().unwrap_or(o.seconds),
            "--connections" => o.connections = val().map(|v| v as usize).unwrap_or(o.connections),
            "--spans" => o.spans = val().map(|v| v as usize).unwrap_or(o.spans),
            "--rate" => o.rate = val().or(o.rate),
            "--rounds" => o.rounds = val().map(|v| (v as usize).max(1)).unwrap_or(o.rounds),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[derive(Default)]
struct Outcome {
    spans: u64,
    errors: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.spans as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&mut self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

/// Runs `connections` exporters (half gRPC, half HTTP protobuf) for `seconds`; with `rate`, paced to
/// that many spans/s in total, otherwise as fast as acknowledgements come back.
async fn drive(grpc: u16, http: u16, o: &Opts, rate: Option<u64>, seq: &Arc<AtomicU64>) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..o.connections {
        let seq = Arc::clone(seq);
        let spans = o.spans;
        let interval =
            rate.map(|r| Duration::from_secs_f64(spans as f64 * o.connections as f64 / r as f64));
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let mut grpc_client = if c % 2 == 0 {
                TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
                    .await
                    .ok()
            } else {
                None
            };
            let http_client = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{http}/v1/traces");
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let req = request(seq.fetch_add(1, Ordering::Relaxed), spans);
                let t = Instant::now();
                let ok = match grpc_client.as_mut() {
                    Some(client) => client.export(req).await.is_ok(),
                    None => http_client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(req.encode_to_vec())
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false),
                };
                if ok {
                    out.latencies.push(t.elapsed());
                    out.spans += spans as u64;
                } else {
                    out.errors += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            out
        }));
    }
    let mut total = Outcome::default();
    for t in tasks {
        if let Ok(o) = t.await {
            total.spans += o.spans;
            total.errors += o.errors;
            total.latencies.extend(o.latencies);
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// The most the WAL held while it watched, sampled every 10 ms: how far the checkpoints fell behind. Read
/// from the wal-index header in the `-shm` file (its `mxFrame` and page size, native byte order; see
/// sqlite.org/walformat.html), since the WAL file itself keeps its size once it has grown.
struct WalWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl WalWatch {
    fn start(db: &std::path::Path) -> WalWatch {
        let shm = std::path::PathBuf::from(format!("{}-shm", db.display()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut most = 0;
            while !flag.load(Ordering::Relaxed) {
                most = most.max(wal_bytes(&shm).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(10));
            }
            most
        });
        WalWatch { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

fn wal_bytes(shm: &std::path::Path) -> Option<u64> {
    use std::io::Read;
    let mut head = [0u8; 24];
    std::fs::File::open(shm).ok()?.read_exact(&mut head).ok()?;
    let page = match u16::from_ne_bytes([head[14], head[15]]) {
        1 => 65_536,
        p => u64::from(p),
    };
    let frames = u64::from(u32::from_ne_bytes([head[16], head[17], head[18], head[19]]));
    Some(frames * (page + 24))
}

fn wait_for_port(port: u16) -> bool {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn rotel_binary() -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::path::Path::new(&path).exists().then_some(path)
}

fn report(name: &str, o: &mut Outcome) {
    println!(
        "{name:<36} {:>10.0} spans/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} spans, {} refused/failed requests, {:.1} s)",
        o.rate(),
        o.pct(0.5),
        o.pct(0.99),
        o.spans,
        o.errors,
        o.elapsed.as_secs_f64()
    );
}

/// aotel's threads, its writes and the machine's CPUs at one moment, to say where a phase's time went.
struct Usage {
    threads: Vec<ThreadUse>,
    written: u64,
    cpu: [u64; 4],
}

/// aotel's busy threads, by the name /proc shows (15 bytes at most), and what to call them.
const THREADS: [(&str, &str); 3] = [
    ("aotel-writer", "writer"),
    ("tokio-rt-worker", "receiving (tokio)"),
    ("aotel-checkpoin", "checkpointer"),
];

impl Usage {
    fn now(pid: u32) -> Usage {
        let pid = pid.to_string();
        Usage {
            threads: THREADS
                .iter()
                .map(|(name, _)| ThreadUse::of(&pid, name))
                .collect(),
            written: procstat::written_bytes(&pid),
            cpu: procstat::cpu_ticks(),
        }
    }

    /// Prints CPU time and bytes written per span acknowledged in `phase`, and how busy the machine was.
    fn since(&self, before: &Usage, phase: &Outcome) {
        let spans = phase.spans.max(1) as f64;
        let secs = phase.elapsed.as_secs_f64().max(1e-9);
        let used: Vec<(&str, ThreadUse)> = THREADS
            .iter()
            .zip(self.threads.iter().zip(&before.threads))
            .map(|((_, label), (a, b))| (*label, a.since(*b)))
            .collect();
        let cpu: Vec<String> = used
            .iter()
            .map(|(label, t)| {
                format!(
                    "{label} {:.1} us ({:.0}% of a core, waited for one {:.0}%; {:.0}% of it in the kernel)",
                    t.cpu_ns as f64 / 1e3 / spans,
                    t.cpu_ns as f64 / 1e9 / secs * 100.0,
                    t.wait_ns as f64 / 1e9 / secs * 100.0,
                    t.kernel_ns as f64 / t.cpu_ns.max(1) as f64 * 100.0,
                )
            })
            .collect();
        println!("  per span, CPU: {}", cpu.join(", "));
        let cores = |i: usize| {
            self.cpu[i].saturating_sub(before.cpu[i]) as f64 / procstat::TICKS_PER_SECOND / secs
        };
        // The writer writes the WAL, the checkpointer the database file (the receiving threads only
        // their answers, which `wchar` counts too).
        let by_thread: Vec<String> = used
            .iter()
            .filter(|(_, t)| t.written as f64 / spans >= 10.0)
            .map(|(label, t)| format!("{label} {:.0}", t.written as f64 / spans))
            .collect();
        println!(
            "  per span, {:.0} bytes written (WAL and checkpoints; {}); machine cores busy {:.2}, idle {:.2}, in I/O wait {:.2}, interrupts and stolen {:.2}",
            self.written.saturating_sub(before.written) as f64 / spans,
            by_thread.join(", "),
            cores(0),
            cores(1),
            cores(2),
            cores(3),
        );
    }
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(target) = std::env::var("AOTEL_BENCH_TARGET") {
        // Load only, against an already running collector ("GRPC_PORT,HTTP_PORT"): for profiling.
        let ports: Vec<u16> = target
            .split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect();
        if let [grpc, http] = ports[..] {
            // Sessions numbered from the clock, so a second run against the same collector sends new
            // spans instead of repeats (which the store recognizes and skips): a request advances the
            // number by one and its spans' time by 1 ms, and no run sends 4 requests per ms.
            let first = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| (d.as_millis() as u64).saturating_sub(1_764_000_000_000) * 4)
                .unwrap_or(1);
            let seq = Arc::new(AtomicU64::new(first));
            let mut out = rt.block_on(drive(grpc, http, &o, o.rate, &seq));
            let name = match o.rate {
                Some(r) => format!("external target, paced at {r}/s"),
                None => "external target, max".to_string(),
            };
            report(&name, &mut out);
            return;
        }
        panic!("AOTEL_BENCH_TARGET must be GRPC_PORT,HTTP_PORT");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("bench.db");
    let (grpc, http, api) = (free_port(), free_port(), free_port());
    println!(
        "aotel ingest benchmark: {} connections (half gRPC, half HTTP protobuf), {} spans/request, {} s per phase, {} cores",
        o.connections,
        o.spans,
        o.seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    // `AOTEL_BIN`: another build to measure with the same load (an older commit, say).
    let bin =
        std::env::var("AOTEL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_aotel").to_string());
    let child = Command::new(bin)
        .args([
            "--grpc",
            &format!("127.0.0.1:{grpc}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
        .args(["--api", &format!("127.0.0.1:{api}"), "--db"])
        .arg(&db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start aotel (cargo bench builds it)");
    assert!(wait_for_port(api), "aotel did not start");
    let pid = child.id();
    let peer = rotel_binary().map(|bin| {
        let (rg, rh) = (free_port(), free_port());
        let child = Command::new(bin)
            .args(["start", "--exporter", "blackhole"])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{rg}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{rh}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rotel");
        assert!(
            wait_for_port(rg) && wait_for_port(rh),
            "rotel did not start"
        );
        (child, rg, rh)
    });
    // One sequence across phases: every request is a new trace, never a duplicate.
    let seq = Arc::new(AtomicU64::new(1));
    // Paced twice: on a fresh store, and right after the saturation phases (below).
    let rate = o.rate.unwrap_or(DEFAULT_RATE);
    // What ran before (a previous run's store being deleted, a build) must not land in this phase.
    settle();
    let mut paced = rt.block_on(drive(grpc, http, &o, Some(rate), &seq));
    report(&format!("aotel, paced at {rate}/s"), &mut paced);
    let mut acked = paced.spans;
    let (mut aotel_rates, mut peer_rates) = (Vec::new(), Vec::new());
    for round in 1..=o.rounds {
        // Whatever one collector left to do (a checkpoint, an index write) must not run into the other's
        // phase. rotel goes first, so that aotel's last phase is followed at once by the paced one.
        let peer_rate = peer.as_ref().map(|(_, rg, rh)| {
            settle();
            let mut run = rt.block_on(drive(*rg, *rh, &o, None, &seq));
            report(&format!("rotel blackhole, max (drop) #{round}"), &mut run);
            run.rate()
        });
        settle();
        let before = Usage::now(pid);
        let wal = WalWatch::start(&db);
        let mut max = rt.block_on(drive(grpc, http, &o, None, &seq));
        let wal = wal.stop();
        report(&format!("aotel, max (ack after commit) #{round}"), &mut max);
        Usage::now(pid).since(&before, &max);
        println!("  WAL at most {} MiB", wal >> 20);
        acked += max.spans;
        aotel_rates.push(max.rate());
        if let Some(rate) = peer_rate {
            peer_rates.push(rate);
            println!(
                "  ratio aotel/rotel, round {round}: {:.2}",
                max.rate() / rate
            );
        }
    }
    // Right after saturation: the WAL it left is still being checkpointed, the index backlog written.
    let mut after = rt.block_on(drive(grpc, http, &o, Some(rate), &seq));
    report(&format!("aotel, paced at {rate}/s after max"), &mut after);
    acked += after.spans;
    let rss = peak_rss_mb(pid);
    stop(child);
    let conn = rusqlite::Connection::open(&db).expect("open db");
    let stored: i64 = conn
        .query_row("SELECT COUNT(*) FROM spans", [], |r| r.get(0))
        .unwrap_or(0);
    // The pages in use (WAL included), not the files: a WAL not yet cut back would count twice.
    let bytes: u64 = conn
        .query_row(
            "SELECT (page_count - freelist_count) * page_size
             FROM pragma_page_count, pragma_freelist_count, pragma_page_size",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|b| b as u64)
        .unwrap_or(0);
    println!(
        "aotel peak RSS {rss:.0} MB; {stored} spans stored in {:.1} MB = {:.0} bytes/span",
        bytes as f64 / 1e6,
        bytes as f64 / stored.max(1) as f64
    );
    println!(
        "acknowledged {acked}, stored {stored}: {}",
        if stored as u64 >= acked {
            "every acknowledged span is stored"
        } else {
            "MISSING SPANS"
        }
    );
    println!(
        "aotel max spans/s, median of {} rounds: {:.0}",
        aotel_rates.len(),
        median(&aotel_rates)
    );
    match peer {
        None => println!("rotel: not installed (pip install rotel==0.0.1a15); no peer comparison"),
        Some((child, _, _)) => {
            let rotel_rss = peak_rss_mb(child.id());
            stop(child);
            println!(
                "rotel max spans/s, median of {} rounds: {:.0}; peak RSS {rotel_rss:.0} MB",
                peer_rates.len(),
                median(&peer_rates)
            );
            let ratios: Vec<f64> = (aotel_rates.iter().zip(&peer_rates))
                .map(|(a, p)| a / p)
                .collect();
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "ratio aotel/rotel (max spans/s), median of {} rounds: {:.2} (rounds: {})",
                ratios.len(),
                median(&ratios),
                each.join(", ")
            );
        }
    }
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Waits (up to 60 s) until the machine's cores are nearly idle over half a second, and says how long
/// that took.
fn settle() {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    while started.elapsed() < Duration::from_secs(60) {
        let before = procstat::cpu_ticks();
        std::thread::sleep(Duration::from_millis(500));
        let busy = procstat::cpu_ticks()[0].saturating_sub(before[0]) as f64;
        if busy / procstat::TICKS_PER_SECOND / 0.5 < 0.1 * cores {
            break;
        }
    }
    println!(
        "  (machine quiet after {:.1} s)",
        started.elapsed().as_secs_f64()
    );
}
