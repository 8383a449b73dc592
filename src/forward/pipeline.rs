//! One destination, one signal: read the rows after the cursor, send them as one Export request, and move
//! the cursor only once the destination answered (accepted, or refused for good and dead-lettered).

use super::client::{Exporter, Outcome};
use super::cursor::{self, NewDeadLetter};
use super::retry::{Breaker, BreakerState};
use super::CommittedSeqs;
use super::{ForwardConfig, Signal};
use crate::metrics::label;
use crate::model::time::now_ns;
use crate::store::body::{SpanRow, SPAN_COLUMNS};
use crate::store::{Reader, StoreError, Writer};
use bytes::Bytes;
use rusqlite::Connection;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the API shows about one signal of one destination.
#[derive(Debug, Clone, Serialize)]
pub struct SignalStatus {
    pub state: BreakerState,
    /// Highest seq the destination has (accepted or dead-lettered).
    pub cursor: i64,
    pub sent_items: u64,
    pub sent_batches: u64,
    /// Items the destination refused through `partial_success`.
    pub partially_rejected: u64,
    pub consecutive_failures: u32,
    pub last_success_unix_nano: Option<String>,
    pub last_error: Option<String>,
    pub last_error_unix_nano: Option<String>,
    /// When the next attempt is due while retrying or while the circuit is open.
    pub next_attempt_unix_nano: Option<String>,
}

impl SignalStatus {
    pub fn new(cursor: i64) -> SignalStatus {
        SignalStatus {
            state: BreakerState::Ok,
            cursor,
            sent_items: 0,
            sent_batches: 0,
            partially_rejected: 0,
            consecutive_failures: 0,
            last_success_unix_nano: None,
            last_error: None,
            last_error_unix_nano: None,
            next_attempt_unix_nano: None,
        }
    }
}

pub type SharedStatus = Arc<Mutex<SignalStatus>>;

/// When each committed seq was first seen, coarsely: the age of the oldest undelivered row is read from
/// here (rows stored before this process started count from its start).
#[derive(Debug, Default)]
pub struct Marks {
    q: Mutex<VecDeque<(i64, u64)>>,
}

const MARKS_MAX: usize = 4096;

impl Marks {
    pub fn push(&self, seq: i64, at_ns: u64) {
        let Ok(mut q) = self.q.lock() else { return };
        if q.back().is_some_and(|(s, _)| *s >= seq) {
            return;
        }
        q.push_back((seq, at_ns));
        if q.len() > MARKS_MAX {
            // Thin the older half: old marks only need to be roughly right.
            let half = q.len() / 2;
            let mut i = 0;
            q.retain(|_| {
                i += 1;
                i > half || i % 2 == 0
            });
        }
    }

    /// Forgets marks every destination is past.
    pub fn prune(&self, upto: i64) {
        if let Ok(mut q) = self.q.lock() {
            while q.front().is_some_and(|(s, _)| *s <= upto) {
                q.pop_front();
            }
        }
    }

    /// When the first row after `cursor` was known to be committed.
    pub fn first_after(&self, cursor: i64) -> Option<u64> {
        let q = self.q.lock().ok()?;
        q.iter().find(|(s, _)| *s > cursor).map(|(_, t)| *t)
    }
}

/// Which rows a read takes: the cursor always, a time and a session for replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since_ns: Option<i64>,
    pub session: Option<String>,
}

/// One encoded Export request and the seq range it covers.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    pub body: Bytes,
    pub first_seq: i64,
    pub last_seq: i64,
    pub items: usize,
    /// Cut by the item or byte limit: more is waiting.
    pub full: bool,
}

/// Reads the next batch after `after` and encodes it as an Export request (on a blocking thread).
///
/// Stored rows keep each span or log record, resource and scope in its protobuf encoding, and protobuf
/// messages concatenate: so the request is assembled from those bytes, regrouped by resource and scope,
/// without decoding and re-encoding every item (that would cost more than the rest of forwarding).
pub fn read_batch(
    c: &Connection,
    signal: Signal,
    after: i64,
    filter: &Filter,
    max_items: usize,
    max_bytes: usize,
) -> Result<Option<ReadBatch>, StoreError> {
    use rusqlite::types::Value;
    // Only these fixed fragments are ever put into the SQL text; every value is bound.
    let (table, columns, time_clause) = match signal {
        Signal::Spans => ("spans", SPAN_COLUMNS, " AND start_ns >= ?"),
        Signal::Logs => ("logs", "body", " AND time_ns >= ?"),
    };
    let mut sql =
        format!("SELECT seq, resource_id, scope_id, {columns} FROM {table} WHERE seq > ?");
    let mut args: Vec<Value> = vec![after.into()];
    if let Some(since) = filter.since_ns {
        sql.push_str(time_clause);
        args.push(since.into());
    }
    if let Some(session) = &filter.session {
        sql.push_str(" AND session = ?");
        args.push(session.clone().into());
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    let max_items = max_items.max(1);
    args.push((max_items as i64).into());

    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
    let mut groups = Groups::default();
    let (mut first, mut last, mut items, mut bytes) = (None, 0i64, 0usize, 0usize);
    let mut full = false;
    let mut span = Vec::new();
    while let Some(row) = rows.next()? {
        let body = match signal {
            Signal::Spans => {
                span.clear();
                SpanRow::read(row, 3)?.encode(&mut span);
                &span[..]
            }
            Signal::Logs => row.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?,
        };
        if items > 0 && bytes + body.len() + 16 > max_bytes {
            full = true;
            break;
        }
        let seq: i64 = row.get(0)?;
        first.get_or_insert(seq);
        last = seq;
        items += 1;
        bytes += body.len() + 16;
        groups.push(row.get(1)?, row.get(2)?, body);
    }
    drop(rows);
    let Some(first) = first else {
        return Ok(None);
    };
    full |= items >= max_items;
    Ok(Some(ReadBatch {
        body: groups.encode(c, bytes)?.into(),
        first_seq: first,
        last_seq: last,
        items,
        full,
    }))
}

/// Items grouped by resource, then scope, in first-seen order; each scope's items already framed as
/// field 2 (`spans` / `log_records`) of ScopeSpans / ScopeLogs.
#[derive(Default)]
struct Groups {
    resources: Vec<(i64, Vec<Scoped>)>,
    index: std::collections::HashMap<(i64, i64), (usize, usize)>,
}

/// A scope id and its items, framed.
type Scoped = (i64, Vec<u8>);

const LEN: prost::encoding::WireType = prost::encoding::WireType::LengthDelimited;

fn put_field(tag: u32, data: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, LEN, out);
    prost::encoding::encode_varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

impl Groups {
    fn push(&mut self, resource: i64, scope: i64, item: &[u8]) {
        let (ri, si) = match self.index.get(&(resource, scope)) {
            Some(at) => *at,
            None => {
                let ri = match self.resources.iter().position(|(id, _)| *id == resource) {
                    Some(ri) => ri,
                    None => {
                        self.resources.push((resource, Vec::new()));
                        self.resources.len() - 1
                    }
                };
                self.resources[ri].1.push((scope, Vec::new()));
                let at = (ri, self.resources[ri].1.len() - 1);
                self.index.insert((resource, scope), at);
                at
            }
        };
        put_field(2, item, &mut self.resources[ri].1[si].1);
    }

    /// `Export*ServiceRequest { resource_* = 1 }` of `Resource* { resource = 1, scope_* = 2,
    /// schema_url = 3 }` of `Scope* { scope = 1, items = 2, schema_url = 3 }`.
    fn encode(self, c: &Connection, approx: usize) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(approx + 1024);
        let mut resource_msg = Vec::new();
        let mut scope_msg = Vec::new();
        for (resource_id, scopes) in self.resources {
            let (body, url) = interned(
                c,
                "SELECT body, schema_url FROM resources WHERE id = ?1",
                resource_id,
            )?;
            resource_msg.clear();
            put_field(1, &body, &mut resource_msg);
            for (scope_id, items) in scopes {
                let (sbody, surl) = interned(
                    c,
                    "SELECT body, schema_url FROM scopes WHERE id = ?1",
                    scope_id,
                )?;
                scope_msg.clear();
                put_field(1, &sbody, &mut scope_msg);
                scope_msg.extend_from_slice(&items);
                if !surl.is_empty() {
                    put_field(3, surl.as_bytes(), &mut scope_msg);
                }
                put_field(2, &scope_msg, &mut resource_msg);
            }
            if !url.is_empty() {
                put_field(3, url.as_bytes(), &mut resource_msg);
            }
            put_field(1, &resource_msg, &mut out);
        }
        Ok(out)
    }
}

fn interned(c: &Connection, sql: &str, id: i64) -> Result<(Vec<u8>, String), StoreError> {
    Ok(c.prepare_cached(sql)?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// How a send loop ended.
pub enum Delivery {
    /// The destination answered for the batch (accepted, partially rejected or dead-lettered).
    Done(Outcome),
    /// aotel is stopping; the batch goes again next time.
    Stopped,
}

/// Sends `batch` until the destination gives a final answer, waiting between attempts as the breaker
/// says. `on_retry` hears about each failed attempt and the wait that follows.
pub async fn send_until_answered(
    exporter: &Exporter,
    signal: Signal,
    batch: &ReadBatch,
    breaker: &mut Breaker,
    stop: &mut watch::Receiver<bool>,
    mut on_retry: impl FnMut(&Breaker, &str, Duration),
) -> Delivery {
    loop {
        let outcome = tokio::select! {
            o = exporter.export(signal, batch.body.clone()) => o,
            _ = stopped(stop) => return Delivery::Stopped,
        };
        match outcome {
            Outcome::Retry { reason, after } => {
                let wait = breaker.failure(after);
                on_retry(breaker, &reason, wait);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(stop) => return Delivery::Stopped,
                }
            }
            done => {
                breaker.success();
                return Delivery::Done(done);
            }
        }
    }
}

/// Resolves once stop is asked for (or the sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn read_after(
    reader: &Reader,
    signal: Signal,
    after: i64,
    config: &ForwardConfig,
) -> Result<Option<ReadBatch>, StoreError> {
    let (items, bytes) = (config.batch_items, config.batch_bytes);
    reader
        .with(move |c| read_batch(c, signal, after, &Filter::default(), items, bytes))
        .await
}

/// The long-running task for one (destination, signal).
pub struct Pipeline {
    pub destination: i64,
    pub url: String,
    pub signal: Signal,
    pub exporter: Exporter,
    pub reader: Reader,
    pub writer: Writer,
    pub status: SharedStatus,
    pub config: Arc<ForwardConfig>,
    pub stop: watch::Receiver<bool>,
    pub seqs: watch::Receiver<CommittedSeqs>,
    pub cursor: i64,
}

impl Pipeline {
    pub async fn run(mut self) {
        let seed = (self.destination as u64) << 1 | (self.signal == Signal::Logs) as u64;
        let mut breaker = Breaker::new(self.config.retry.clone(), seed);
        let mut lingered = false;
        let mut prefetched: Option<Result<Option<ReadBatch>, StoreError>> = None;
        tracing::info!(destination = %self.url, signal = self.signal.as_str(), cursor = self.cursor, "forwarding");
        while !*self.stop.borrow() {
            let read = match prefetched.take() {
                Some(r) => r,
                None => read_after(&self.reader, self.signal, self.cursor, &self.config).await,
            };
            let batch = match read {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(destination = %self.url, error = %e, "could not read the store; trying again");
                    self.note_error(&format!("reading the store: {e}"), None);
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(batch) = batch else {
                self.wait_for_data().await;
                continue;
            };
            // Batch by time: give a trickle a moment to become a batch, once.
            if !batch.full && !lingered && !self.config.linger.is_zero() {
                lingered = true;
                self.pause(self.config.linger).await;
                continue;
            }
            lingered = false;
            let status = self.status.clone();
            let (metrics, url) = (self.writer.metrics().clone(), self.url.clone());
            let send = send_until_answered(
                &self.exporter,
                self.signal,
                &batch,
                &mut breaker,
                &mut self.stop,
                |b, reason, wait| {
                    tracing::debug!(
                        reason,
                        ?wait,
                        "destination did not take the batch; retrying"
                    );
                    metrics.inc(
                        "aotel_forward_errors_total",
                        label("destination", &url),
                        1.0,
                    );
                    if let Ok(mut s) = status.lock() {
                        s.state = b.state();
                        s.consecutive_failures = b.failures();
                        s.last_error = Some(reason.to_string());
                        s.last_error_unix_nano = Some(now_ns().to_string());
                        s.next_attempt_unix_nano =
                            Some((now_ns() + wait.as_nanos() as u64).to_string());
                    }
                },
            );
            // Read the next batch while this one is on the wire: the destination's work and ours overlap.
            // Still one request in flight, so a crash resends at most that one batch.
            let next = async {
                if batch.full {
                    Some(read_after(&self.reader, self.signal, batch.last_seq, &self.config).await)
                } else {
                    None
                }
            };
            let (delivery, next) = tokio::join!(send, next);
            match delivery {
                Delivery::Stopped => break,
                Delivery::Done(outcome) => {
                    if !self.answered(&batch, outcome).await {
                        break;
                    }
                    prefetched = next;
                }
            }
        }
        tracing::debug!(destination = %self.url, signal = self.signal.as_str(), "forwarding stopped");
    }

    /// Records the final answer and moves the cursor. False when the store is closing.
    async fn answered(&mut self, batch: &ReadBatch, outcome: Outcome) -> bool {
        let dead = match &outcome {
            Outcome::Accepted { rejected, message } if *rejected > 0 => Some(NewDeadLetter {
                kind: "partial",
                first_seq: batch.first_seq,
                last_seq: batch.last_seq,
                items: batch.items as i64,
                rejected: *rejected,
                reason: if message.is_empty() {
                    "partial_success without a message".into()
                } else {
                    message.clone()
                },
            }),
            Outcome::Rejected { reason } => Some(NewDeadLetter {
                kind: "rejected",
                first_seq: batch.first_seq,
                last_seq: batch.last_seq,
                items: batch.items as i64,
                rejected: batch.items as i64,
                reason: reason.clone(),
            }),
            _ => None,
        };
        if let Some(d) = &dead {
            tracing::warn!(destination = %self.url, signal = self.signal.as_str(), kind = d.kind,
                items = d.rejected, reason = %d.reason, "destination refused data; dead-lettered");
        }
        let (id, signal, seq) = (self.destination, self.signal, batch.last_seq);
        let result = cursor::on_writer(&self.writer, move |tx| {
            if let Some(d) = &dead {
                cursor::record(tx, id, signal, d)?;
            }
            cursor::advance(tx, id, signal, seq)
        })
        .await;
        let dest = label("destination", &self.url);
        match &outcome {
            Outcome::Accepted { rejected, .. } if self.signal == Signal::Spans => {
                self.writer.metrics().inc(
                    "aotel_forward_sent_spans_total",
                    dest,
                    (batch.items as i64 - rejected).max(0) as f64,
                )
            }
            Outcome::Rejected { .. } => {
                self.writer
                    .metrics()
                    .inc("aotel_forward_dead_letters_total", dest, 1.0)
            }
            _ => {}
        }
        // The destination has the batch either way; the in-memory cursor moves on so it is not resent
        // while this process lives. If the write failed, a restart resends it (at least once).
        self.cursor = batch.last_seq;
        if let Ok(mut s) = self.status.lock() {
            s.cursor = batch.last_seq;
            s.state = BreakerState::Ok;
            s.consecutive_failures = 0;
            s.next_attempt_unix_nano = None;
            match &outcome {
                Outcome::Accepted { rejected, message } => {
                    s.sent_items += batch.items as u64;
                    s.sent_batches += 1;
                    s.last_success_unix_nano = Some(now_ns().to_string());
                    if *rejected > 0 {
                        s.partially_rejected += *rejected as u64;
                        s.last_error = Some(format!("{rejected} items rejected: {message}"));
                        s.last_error_unix_nano = Some(now_ns().to_string());
                    }
                }
                Outcome::Rejected { reason } | Outcome::Retry { reason, .. } => {
                    s.last_error = Some(format!("batch dead-lettered: {reason}"));
                    s.last_error_unix_nano = Some(now_ns().to_string());
                }
            }
        }
        match result {
            Ok(()) => true,
            Err(StoreError::Closed) => false,
            Err(e) => {
                tracing::error!(destination = %self.url, error = %e, "could not save the forwarding cursor");
                true
            }
        }
    }

    fn note_error(&self, message: &str, next: Option<Duration>) {
        if let Ok(mut s) = self.status.lock() {
            s.last_error = Some(message.to_string());
            s.last_error_unix_nano = Some(now_ns().to_string());
            s.next_attempt_unix_nano = next.map(|d| (now_ns() + d.as_nanos() as u64).to_string());
        }
    }

    async fn pause(&mut self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stopped(&mut self.stop) => {}
        }
    }

    /// Sleeps until a commit passes the cursor, the poll interval ends, or stop.
    async fn wait_for_data(&mut self) {
        let (signal, cursor) = (self.signal, self.cursor);
        let seqs = &mut self.seqs;
        let moved = async move { seqs.wait_for(|s| signal.seq_in(s) > cursor).await.is_ok() };
        let closed = tokio::select! {
            ok = moved => !ok,
            _ = tokio::time::sleep(self.config.poll) => false,
            _ = stopped(&mut self.stop) => false,
        };
        if closed {
            // The writer is gone: aotel is stopping.
            stopped(&mut self.stop).await;
        }
    }
}
