//! `aotel replay`: re-export stored traces and logs to any OTLP destination (e.g. to backfill a new
//! Tempo). Read-only: it can run beside a live aotel on the same file and moves no cursor.

use super::client::{Exporter, Outcome};
use super::pipeline::{read_batch, send_until_answered, Delivery, Filter};
use super::retry::{Breaker, RetryPolicy};
use super::{
    parse_compression, parse_header, parse_signals, DestinationSpec, ForwardError, Signal,
};
use crate::model::time::{now_ns, parse_time_param};
use crate::store::Reader;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Destination: grpc://host:4317, grpcs://host:4317 or http(s)://host:4318/v1/traces
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Only spans that started (and logs stamped) at or after this: RFC 3339, Unix ns, or an age like 2h, 30m, 7d
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only this session's spans and logs
    #[arg(long, value_name = "KEY")]
    pub session: Option<String>,
    /// SQLite database file [default: ~/.local/share/aotel/aotel.db]
    #[arg(long, env = "AOTEL_DB")]
    pub db: Option<PathBuf>,
    /// Header sent with every request, `Name: value` (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// PEM file of the CA to trust for a TLS destination
    #[arg(long, value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// gzip or none
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// all, traces or logs
    #[arg(long, default_value = "all")]
    pub signals: String,
    /// Most spans or log records per request
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// Seconds one request may take
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Give up when one batch could not be delivered for this many seconds
    #[arg(long, default_value_t = 300)]
    pub give_up_after: u64,
}

/// What a replay sent.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReplayReport {
    pub spans: u64,
    pub logs: u64,
    pub batches: u64,
    /// Batches the destination refused for good, and the items in them.
    pub rejected_batches: u64,
    pub rejected_items: u64,
    /// Items refused through `partial_success`.
    pub partially_rejected: u64,
    pub errors: Vec<String>,
}

/// `2h`, `30m`, `45s`, `7d` before now; otherwise what `parse_time_param` reads.
pub fn parse_since(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = match s.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return parse_time_param(s).map(|t| t.min(i64::MAX as u64) as i64),
    };
    let n: u64 = s[..s.len() - 1].parse().ok()?;
    Some(now_ns().saturating_sub(n.saturating_mul(unit).saturating_mul(1_000_000_000)) as i64)
}

pub async fn replay(args: &ReplayArgs) -> Result<ReplayReport, ForwardError> {
    let mut spec = DestinationSpec::parse(&args.to).map_err(ForwardError::Config)?;
    for h in &args.headers {
        spec.headers
            .push(parse_header(h).map_err(ForwardError::Config)?);
    }
    spec.ca_file.clone_from(&args.ca);
    spec.gzip = parse_compression(&args.compression).map_err(ForwardError::Config)?;
    (spec.traces, spec.logs) = parse_signals(&args.signals).map_err(ForwardError::Config)?;
    let since_ns = match &args.since {
        Some(s) => Some(parse_since(s).ok_or_else(|| {
            ForwardError::Config(format!(
                "--since {s:?}: expected RFC 3339, Unix nanoseconds, or an age like 2h"
            ))
        })?),
        None => None,
    };
    let db = args
        .db
        .clone()
        .unwrap_or_else(crate::config::default_db_path);
    if !db.exists() {
        return Err(ForwardError::Config(format!(
            "no database at {}",
            db.display()
        )));
    }
    let exporter = Exporter::new(&spec, Duration::from_secs(args.timeout.max(1)))?;
    let reader = Reader::new(db);
    let filter = Filter {
        since_ns,
        session: args.session.clone(),
    };
    let mut report = ReplayReport::default();
    let (_keep, never) = watch::channel(false);
    for signal in spec.signals().collect::<Vec<_>>() {
        let mut after = 0i64;
        loop {
            let f = filter.clone();
            let batch_items = args.batch.clamp(1, 100_000);
            let batch = reader
                .with(move |c| read_batch(c, signal, after, &f, batch_items, 3 << 20))
                .await?;
            let Some(batch) = batch else { break };
            let give_up = Duration::from_secs(args.give_up_after);
            let started = Instant::now();
            let mut breaker = Breaker::new(RetryPolicy::default(), after as u64);
            let mut stop = never.clone();
            // Give up on one batch after `give_up_after`: a replay is a command someone waits for.
            let delivery = tokio::select! {
                d = send_until_answered(&exporter, signal, &batch, &mut breaker, &mut stop, |b, reason, wait| {
                    tracing::warn!(failures = b.failures(), ?wait, reason, "replay batch not taken; retrying");
                }) => d,
                _ = tokio::time::sleep(give_up) => Delivery::Stopped,
            };
            match delivery {
                Delivery::Stopped => {
                    return Err(ForwardError::Destination {
                        url: spec.url.clone(),
                        message: format!(
                            "gave up after {:.0?}: batch of {} {} (seq {}..={}) was not accepted",
                            started.elapsed(),
                            batch.items,
                            signal.as_str(),
                            batch.first_seq,
                            batch.last_seq
                        ),
                    })
                }
                Delivery::Done(Outcome::Accepted { rejected, message }) => {
                    report.batches += 1;
                    match signal {
                        Signal::Spans => report.spans += batch.items as u64,
                        Signal::Logs => report.logs += batch.items as u64,
                    }
                    if rejected > 0 {
                        report.partially_rejected += rejected as u64;
                        report.errors.push(format!(
                            "{rejected} {} rejected: {message}",
                            signal.as_str()
                        ));
                    }
                }
                Delivery::Done(Outcome::Rejected { reason } | Outcome::Retry { reason, .. }) => {
                    report.rejected_batches += 1;
                    report.rejected_items += batch.items as u64;
                    report.errors.push(format!(
                        "{} {} (seq {}..={}) rejected: {reason}",
                        batch.items,
                        signal.as_str(),
                        batch.first_seq,
                        batch.last_seq
                    ));
                }
            }
            after = batch.last_seq;
        }
    }
    Ok(report)
}
