//! Forwarding to Jaeger, Tempo or any OTLP receiver, at least once: the store is the queue, each
//! destination keeps a cursor per signal in SQLite, and its own tasks send what lies past the cursor.

pub mod api;
pub mod client;
pub mod cursor;
pub mod pipeline;
pub mod replay;
pub mod retry;

use crate::model::time::now_ns;
use crate::store::{Reader, StoreError, Writer};
use pipeline::{Marks, Pipeline, SharedStatus, SignalStatus};
use retry::RetryPolicy;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forward destination {url}: {message}")]
    Destination { url: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

/// The two kinds of rows that are forwarded, each with its own `seq` and cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Spans,
    Logs,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Spans => "spans",
            Signal::Logs => "logs",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        match s {
            "spans" => Some(Signal::Spans),
            "logs" => Some(Signal::Logs),
            _ => None,
        }
    }

    /// The OTLP word for it, as users know it from flags and URLs.
    pub fn otlp_name(self) -> &'static str {
        match self {
            Signal::Spans => "traces",
            Signal::Logs => "logs",
        }
    }

    pub fn seq_in(self, s: &CommittedSeqs) -> i64 {
        match self {
            Signal::Spans => s.span,
            Signal::Logs => s.log,
        }
    }
}

/// The highest span and log `seq` known to be committed: pipelines wake when it passes their cursor.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommittedSeqs {
    pub span: i64,
    pub log: i64,
}

fn max_seqs(c: &rusqlite::Connection) -> Result<CommittedSeqs, StoreError> {
    let max = |sql: &str| {
        c.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .map(|v| v.unwrap_or(0))
    };
    Ok(CommittedSeqs {
        span: max("SELECT MAX(seq) FROM spans")?,
        log: max("SELECT MAX(seq) FROM logs")?,
    })
}

/// Follows the writer's commit notifications and keeps `seqs` at the highest committed seqs; when it
/// falls behind the broadcast, it asks the store instead.
async fn follow_commits(
    writer: Writer,
    reader: Reader,
    seqs: watch::Sender<CommittedSeqs>,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut commits = writer.subscribe();
    drop(writer);
    loop {
        let next = tokio::select! {
            c = commits.recv() => c,
            _ = pipeline::stopped(&mut stop) => break,
        };
        let now = match next {
            Ok(c) => CommittedSeqs {
                span: c.spans.iter().map(|s| s.seq).max().unwrap_or(0),
                log: c.logs.iter().map(|l| l.seq).max().unwrap_or(0),
            },
            Err(RecvError::Lagged(_)) => match reader.with(max_seqs).await {
                Ok(s) => s,
                Err(_) => continue,
            },
            Err(RecvError::Closed) => break,
        };
        seqs.send_if_modified(|s| {
            let merged = CommittedSeqs {
                span: s.span.max(now.span),
                log: s.log.max(now.log),
            };
            std::mem::replace(s, merged) != merged
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc {
        tls: bool,
    },
    /// OTLP/HTTP with protobuf bodies; TLS when the URL is `https://`.
    Http,
}

/// One place to forward to and how.
#[derive(Debug, Clone)]
pub struct DestinationSpec {
    /// As configured: also the destination's identity in the database.
    pub url: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    /// PEM file with the CA certificate(s) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    pub gzip: bool,
    pub traces: bool,
    pub logs: bool,
}

impl DestinationSpec {
    /// `grpc://host:port`, `grpcs://host:port`, `http(s)://host:port[/path/v1/traces]`.
    pub fn parse(url: &str) -> Result<DestinationSpec, String> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?}: expected grpc://, grpcs://, http:// or https://"))?;
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "grpc" => Protocol::Grpc { tls: false },
            "grpcs" => Protocol::Grpc { tls: true },
            "http" | "https" => Protocol::Http,
            other => {
                return Err(format!(
                    "{url:?}: unknown scheme {other:?}: use grpc, grpcs, http or https"
                ))
            }
        };
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return Err(format!(
                "{url:?}: expected host:port (credentials go in --forward-header)"
            ));
        }
        if matches!(protocol, Protocol::Grpc { .. }) && rest.trim_end_matches('/') != authority {
            return Err(format!(
                "{url:?}: a gRPC destination is just host:port, without a path"
            ));
        }
        Ok(DestinationSpec {
            url: url.to_string(),
            protocol,
            headers: Vec::new(),
            ca_file: None,
            gzip: false,
            traces: true,
            logs: true,
        })
    }

    fn signals(&self) -> impl Iterator<Item = Signal> {
        [(self.traces, Signal::Spans), (self.logs, Signal::Logs)]
            .into_iter()
            .filter_map(|(on, s)| on.then_some(s))
    }
}

/// Everything about forwarding.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub destinations: Vec<DestinationSpec>,
    /// Most spans (or log records) in one Export request.
    pub batch_items: usize,
    /// Most encoded bytes in one Export request (receivers commonly refuse gRPC messages over 4 MiB).
    pub batch_bytes: usize,
    /// How long a batch that is not full waits for more before going out.
    pub linger: Duration,
    /// Per request, connecting included.
    pub timeout: Duration,
    /// Look for new rows this often even without a commit notification.
    pub poll: Duration,
    pub retry: RetryPolicy,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            destinations: Vec::new(),
            batch_items: 4096,
            batch_bytes: 3 << 20,
            linger: Duration::from_millis(200),
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }
}

/// The `--forward*` flags of `aotel serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ForwardArgs {
    /// Forward stored traces and logs to an OTLP destination (repeatable): grpc://host:4317,
    /// grpcs://host:4317 (TLS) or http(s)://host:4318/v1/traces
    #[arg(
        long = "forward",
        env = "AOTEL_FORWARD",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub forward: Vec<String>,
    /// Header for destinations, `Name: value` (all) or `URL|Name: value` (one); repeatable.
    /// Env AOTEL_FORWARD_HEADERS: comma-separated `Name=value` pairs for all destinations
    #[arg(long = "forward-header", value_name = "[URL|]NAME: VALUE")]
    pub headers: Vec<String>,
    /// PEM file of the CA to trust for TLS destinations, `PATH` (all) or `URL|PATH`
    #[arg(
        long = "forward-ca",
        env = "AOTEL_FORWARD_CA",
        value_name = "[URL|]PATH"
    )]
    pub ca: Vec<String>,
    /// `gzip` or `none`, for all destinations or `URL|gzip` for one
    #[arg(
        long = "forward-compression",
        env = "AOTEL_FORWARD_COMPRESSION",
        value_name = "[URL|]gzip|none"
    )]
    pub compression: Vec<String>,
    /// What to forward: `all`, `traces` or `logs` (Jaeger and Tempo take traces only), or `URL|traces`
    #[arg(
        long = "forward-signals",
        env = "AOTEL_FORWARD_SIGNALS",
        value_name = "[URL|]all|traces|logs"
    )]
    pub signals: Vec<String>,
    /// Most spans or log records per Export request
    #[arg(
        long = "forward-batch",
        env = "AOTEL_FORWARD_BATCH",
        default_value_t = 4096
    )]
    pub batch: usize,
    /// Seconds one Export request may take
    #[arg(
        long = "forward-timeout",
        env = "AOTEL_FORWARD_TIMEOUT",
        default_value_t = 10
    )]
    pub timeout: u64,
    /// Longest pause between retries, in seconds; also how often an open circuit probes
    #[arg(
        long = "forward-max-backoff",
        env = "AOTEL_FORWARD_MAX_BACKOFF",
        default_value_t = 30
    )]
    pub max_backoff: u64,
}

/// `URL|value` → (Some(URL), value); a bare value applies to every destination.
fn split_target(s: &str) -> (Option<&str>, &str) {
    match s.split_once('|') {
        Some((url, value)) if url.contains("://") => (Some(url.trim()), value.trim()),
        _ => (None, s.trim()),
    }
}

/// `Name: value` or `Name=value` (header names contain neither `:` nor `=`).
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let at = s
        .find([':', '='])
        .ok_or_else(|| format!("header {s:?}: expected `Name: value`"))?;
    let (name, value) = (s[..at].trim(), s[at + 1..].trim());
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!("header {s:?}: invalid name {name:?}"));
    }
    Ok((name.to_string(), value.to_string()))
}

pub fn parse_compression(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "gzip" => Ok(true),
        "none" | "" => Ok(false),
        other => Err(format!("compression {other:?}: expected gzip or none")),
    }
}

/// (traces, logs)
pub fn parse_signals(s: &str) -> Result<(bool, bool), String> {
    match s.to_ascii_lowercase().as_str() {
        "all" | "" => Ok((true, true)),
        "traces" | "spans" => Ok((true, false)),
        "logs" => Ok((false, true)),
        other => Err(format!("signals {other:?}: expected all, traces or logs")),
    }
}

impl ForwardArgs {
    pub fn config(&self) -> Result<ForwardConfig, String> {
        let mut destinations: Vec<DestinationSpec> = Vec::new();
        for url in self
            .forward
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
        {
            if destinations.iter().any(|d| d.url == url) {
                continue;
            }
            destinations.push(DestinationSpec::parse(url)?);
        }
        let env_headers: Vec<String> = if self.headers.is_empty() {
            std::env::var("AOTEL_FORWARD_HEADERS")
                .map(|v| {
                    v.split(',')
                        .map(str::to_string)
                        .filter(|s| !s.trim().is_empty())
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut apply = |flag: &str,
                         values: &[String],
                         f: &mut dyn FnMut(&mut DestinationSpec, &str) -> Result<(), String>|
         -> Result<(), String> {
            for raw in values {
                let (target, value) = split_target(raw);
                let mut matched = false;
                for d in destinations
                    .iter_mut()
                    .filter(|d| target.is_none_or(|t| t == d.url))
                {
                    matched = true;
                    f(d, value)?;
                }
                if let (Some(t), false) = (target, matched) {
                    return Err(format!(
                        "{flag} names {t:?}, which is not a --forward destination"
                    ));
                }
            }
            Ok(())
        };
        apply("--forward-header", &self.headers, &mut |d, v| {
            d.headers.push(parse_header(v)?);
            Ok(())
        })?;
        apply("AOTEL_FORWARD_HEADERS", &env_headers, &mut |d, v| {
            d.headers.push(parse_header(v)?);
            Ok(())
        })?;
        apply("--forward-ca", &self.ca, &mut |d, v| {
            d.ca_file = Some(PathBuf::from(v));
            Ok(())
        })?;
        apply("--forward-compression", &self.compression, &mut |d, v| {
            d.gzip = parse_compression(v)?;
            Ok(())
        })?;
        apply("--forward-signals", &self.signals, &mut |d, v| {
            (d.traces, d.logs) = parse_signals(v)?;
            Ok(())
        })?;
        let max_backoff = Duration::from_secs(self.max_backoff.max(1));
        Ok(ForwardConfig {
            destinations,
            batch_items: self.batch.clamp(1, 100_000),
            timeout: Duration::from_secs(self.timeout.max(1)),
            retry: RetryPolicy {
                max: max_backoff,
                probe_every: max_backoff,
                ..RetryPolicy::default()
            },
            ..ForwardConfig::default()
        })
    }
}

/// Lag is counted exactly up to this many rows (a count walks the rows themselves); past it, the API
/// gives the distance in seq, which only overcounts by spans that were stored again.
const LAG_EXACT_UP_TO: i64 = 10_000;

/// The running forwarders: what the API reports on and what `run` stops at shutdown.
#[derive(Clone, Default)]
pub struct Forwarders {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    destinations: Vec<Destination>,
    marks: [Arc<Marks>; 2],
    stop: Option<watch::Sender<bool>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct Destination {
    id: i64,
    spec: DestinationSpec,
    spans: Option<SharedStatus>,
    logs: Option<SharedStatus>,
}

impl Destination {
    fn status(&self, signal: Signal) -> Option<&SharedStatus> {
        match signal {
            Signal::Spans => self.spans.as_ref(),
            Signal::Logs => self.logs.as_ref(),
        }
    }
}

fn mark_index(signal: Signal) -> usize {
    match signal {
        Signal::Spans => 0,
        Signal::Logs => 1,
    }
}

impl Forwarders {
    /// Registers the destinations (new ones start at the current end of the store) and starts one task
    /// per destination and signal. Call before ingest starts, so nothing committed after this is missed.
    pub async fn start(
        config: &ForwardConfig,
        writer: &Writer,
        reader: &Reader,
    ) -> Result<Forwarders, ForwardError> {
        let exporters = config
            .destinations
            .iter()
            .map(|d| client::Exporter::new(d, config.timeout))
            .collect::<Result<Vec<_>, _>>()?;
        let wanted: Vec<cursor::Wanted> = config
            .destinations
            .iter()
            .map(|d| cursor::Wanted {
                url: d.url.clone(),
                spans: d.traces,
                logs: d.logs,
            })
            .collect();
        let registered = cursor::on_writer(writer, move |tx| cursor::register(tx, &wanted)).await?;
        if config.destinations.is_empty() {
            return Ok(Forwarders::default());
        }
        let (stop_tx, stop) = watch::channel(false);
        let shared = Arc::new(config.clone());
        let marks = [Arc::new(Marks::default()), Arc::new(Marks::default())];
        // Subscribe before reading the current end, so no commit falls between the two.
        let (seqs_tx, seqs) = watch::channel(CommittedSeqs::default());
        let follower = tokio::spawn(follow_commits(
            writer.clone(),
            reader.clone(),
            seqs_tx.clone(),
            stop.clone(),
        ));
        let now = reader.with(max_seqs).await?;
        seqs_tx.send_if_modified(|s| {
            let merged = CommittedSeqs {
                span: s.span.max(now.span),
                log: s.log.max(now.log),
            };
            std::mem::replace(s, merged) != merged
        });
        let start_ns = now_ns();
        for signal in [Signal::Spans, Signal::Logs] {
            marks[mark_index(signal)].push(signal.seq_in(&now), start_ns);
        }
        let mut destinations = Vec::new();
        let mut tasks = vec![follower];
        for ((spec, exporter), (id, span_cursor, log_cursor)) in
            config.destinations.iter().zip(exporters).zip(registered)
        {
            let mut dest = Destination {
                id,
                spec: spec.clone(),
                spans: None,
                logs: None,
            };
            for signal in spec.signals() {
                let cursor = if signal == Signal::Spans {
                    span_cursor
                } else {
                    log_cursor
                };
                let status: SharedStatus = Arc::new(Mutex::new(SignalStatus::new(cursor)));
                match signal {
                    Signal::Spans => dest.spans = Some(status.clone()),
                    Signal::Logs => dest.logs = Some(status.clone()),
                }
                let pipeline = Pipeline {
                    destination: id,
                    url: spec.url.clone(),
                    signal,
                    exporter: exporter.clone(),
                    reader: reader.clone(),
                    writer: writer.clone(),
                    status,
                    config: shared.clone(),
                    stop: stop.clone(),
                    seqs: seqs.clone(),
                    cursor,
                };
                tasks.push(tokio::spawn(pipeline.run()));
            }
            destinations.push(dest);
        }
        let inner = Inner {
            destinations,
            marks,
            stop: Some(stop_tx),
            tasks: Mutex::new(tasks),
        };
        let forwarders = Forwarders {
            inner: Arc::new(inner),
        };
        let marker = tokio::spawn(forwarders.clone().keep_marks(seqs, stop));
        if let Ok(mut t) = forwarders.inner.tasks.lock() {
            t.push(marker);
        }
        Ok(forwarders)
    }

    /// Notes when new seqs appear (at most ten times a second) and forgets what all destinations passed.
    async fn keep_marks(
        self,
        mut seqs: watch::Receiver<CommittedSeqs>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                r = seqs.changed() => if r.is_err() { break },
                _ = pipeline::stopped(&mut stop) => break,
            }
            let now = *seqs.borrow_and_update();
            for signal in [Signal::Spans, Signal::Logs] {
                let marks = &self.inner.marks[mark_index(signal)];
                marks.push(signal.seq_in(&now), now_ns());
                let min_cursor = self
                    .inner
                    .destinations
                    .iter()
                    .filter_map(|d| d.status(signal))
                    .filter_map(|s| s.lock().ok().map(|s| s.cursor))
                    .min();
                if let Some(min) = min_cursor {
                    marks.prune(min);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every task; an unanswered batch is sent again after the next start.
    pub async fn stop(&self) {
        if let Some(stop) = &self.inner.stop {
            let _ = stop.send(true);
        }
        let tasks: Vec<JoinHandle<()>> = self
            .inner
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for mut task in tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.inner.destinations.is_empty()
    }

    /// The lag gauges of `/metrics`, per destination (spans only, as the metric names say).
    pub async fn collect_metrics(
        &self,
        reader: &Reader,
        samples: &mut crate::metrics::Samples,
    ) -> Result<(), StoreError> {
        if self.is_empty() {
            return Ok(());
        }
        let report = self.report(reader).await?;
        for d in report["destinations"].as_array().into_iter().flatten() {
            let spans = &d["signals"]["spans"];
            if spans.is_null() {
                continue;
            }
            let dest = crate::metrics::label("destination", d["url"].as_str().unwrap_or(""));
            samples.push(
                "aotel_forward_lag_spans",
                &dest,
                spans["lag"].as_f64().unwrap_or(0.0),
            );
            samples.push(
                "aotel_forward_lag_seconds",
                &dest,
                spans["lag_seconds"].as_f64().unwrap_or(0.0),
            );
        }
        Ok(())
    }

    /// Per destination: state, lag, last error and dead letters, as `GET /api/forward` shows it.
    pub async fn report(&self, reader: &Reader) -> Result<Value, StoreError> {
        let mut rows = Vec::new();
        for d in &self.inner.destinations {
            let mut signals = serde_json::Map::new();
            let mut worst = retry::BreakerState::Ok;
            let mut lag_seconds = 0f64;
            let mut last_error: Option<(String, String)> = None;
            let mut dead_total = 0i64;
            let mut lags = serde_json::Map::new();
            for signal in [Signal::Spans, Signal::Logs] {
                let Some(status) = d.status(signal) else {
                    continue;
                };
                let Ok(s) = status.lock().map(|s| s.clone()) else {
                    continue;
                };
                let (id, cursor) = (d.id, s.cursor);
                let (lag, (dead_records, dead_items)) = reader
                    .with(move |c| {
                        Ok((
                            cursor::lag(c, signal, cursor, LAG_EXACT_UP_TO)?,
                            cursor::dead_letter_counts(c, id, signal)?,
                        ))
                    })
                    .await?;
                let seconds = if lag > 0 {
                    self.inner.marks[mark_index(signal)]
                        .first_after(cursor)
                        .map(|t| now_ns().saturating_sub(t) as f64 / 1e9)
                        .unwrap_or(0.0)
                } else {
                    0.0
                };
                lag_seconds = lag_seconds.max(seconds);
                worst = worst.max(s.state);
                dead_total += dead_records;
                if let (Some(e), Some(at)) = (&s.last_error, &s.last_error_unix_nano) {
                    if last_error
                        .as_ref()
                        .is_none_or(|(_, t)| t.parse::<u64>().ok() < at.parse::<u64>().ok())
                    {
                        last_error = Some((e.clone(), at.clone()));
                    }
                }
                lags.insert(format!("lag_{}", signal.as_str()), json!(lag));
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("lag".into(), json!(lag));
                    o.insert("lag_seconds".into(), json!(seconds));
                    o.insert("dead_letters".into(), json!(dead_records));
                    o.insert("dead_letter_items".into(), json!(dead_items));
                }
                signals.insert(signal.as_str().into(), v);
            }
            let (protocol, tls) = match d.spec.protocol {
                Protocol::Grpc { tls } => ("grpc", tls),
                Protocol::Http => ("http", d.spec.url.to_ascii_lowercase().starts_with("https")),
            };
            let mut row = json!({
                "url": d.spec.url,
                "protocol": protocol,
                "tls": tls,
                "gzip": d.spec.gzip,
                "ca_file": d.spec.ca_file.as_ref().map(|p| p.display().to_string()),
                // Names only: values are often credentials.
                "headers": d.spec.headers.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                "state": worst,
                "lag_seconds": lag_seconds,
                "last_error": last_error.as_ref().map(|(e, _)| e.clone()),
                "last_error_unix_nano": last_error.map(|(_, t)| t),
                "dead_letters": dead_total,
                "signals": signals,
            });
            if let Some(o) = row.as_object_mut() {
                o.extend(lags);
            }
            rows.push(row);
        }
        Ok(json!({ "destinations": rows }))
    }
}
