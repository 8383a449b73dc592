//! The one writer: owns the write connection, group-commits queued batches (and those queued while it
//! writes them), acknowledges each only after its transaction committed, then tells the live hub what
//! changed.

use super::index::Backlog;
use super::prepare::{
    prepare, read_in_place, InPlace, Meta, Prepared, PreparedLog, PreparedResource, PreparedSpan,
};
use super::session::{Counters, SessionRow};
use super::stats::{label, Dims, StatsDelta};
use super::{Committed, LogSummary, SpanSummary, StoreError, StoreOptions};
use crate::metrics::Metrics;
use crate::model::facts::{self, SpanFacts, Usage, OP_AGENT};
use crate::model::view::kv_refs;
use crate::model::{Batch, Span};
use bytes::Bytes;
use prost::Message;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::hash_map::Entry;
// foldhash, not SipHash: hashing was ~6% of the writer's instructions (callgrind). Its seeds are random
// per process, and these maps are per transaction or bounded caches.
use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// How many spans and logs one transaction takes at most; larger groups only add latency.
const GROUP_ITEMS: usize = 50_000;
const CACHE_LIMIT: usize = 100_000;
/// The attribute index backlog (store::index) is written when the writer would otherwise wait and at
/// least this many spans are in it, ...
const INDEX_IDLE_SPANS: usize = 4_096;
/// ... or when it is this old (every write rewrites the index pages it touches, and a unique value
/// touches a page of its own, so fewer, larger writes cost the disk less; a search reads what waits), ...
const INDEX_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(2000);
/// ... and even while requests wait once it holds this many spans, which bounds what a search has to
/// check without the index.
const INDEX_MAX_SPANS: usize = 16_384;

/// Bytes held in the ingest queue's budget; given back when dropped.
#[derive(Default)]
pub struct Reservation(Option<OwnedSemaphorePermit>);

impl Reservation {
    /// Adds `more` (from the same writer) to this reservation.
    pub fn grow(&mut self, more: Reservation) {
        match (&mut self.0, more.0) {
            (Some(held), Some(p)) => held.merge(p),
            (held, p) => *held = held.take().or(p),
        }
    }
}

/// What was stored for one write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub spans: usize,
    pub logs: usize,
}

enum Msg {
    Job(Job),
    /// Other writes (watch offsets, retention, cursors) run on the write connection in queue order,
    /// each in its own statement or transaction, between group commits.
    Run(Task),
    /// Commit everything queued before it, then stop.
    Stop,
}

/// A write other than a batch. `indexed`: it needs every stored span in the attribute index first
/// (retention deletes spans, and rows still in the backlog would then point at nothing).
struct Task {
    run: Box<dyn FnOnce(&mut Connection) + Send>,
    indexed: bool,
}

/// How far `aotel watch` has read one file, and what identifies that file (see `ingest::watch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOffset {
    pub path: String,
    pub offset: u64,
    pub dev: u64,
    pub ino: u64,
    /// SHA-256 (16 bytes) of the file's first `head_len` bytes: tells a replaced file from a grown one.
    pub head_len: u64,
    pub head: Vec<u8>,
}

struct Job {
    prepared: Prepared,
    _room: Reservation,
    /// The prepared rows travel back with the answer so that freeing them is not the writer's work.
    done: oneshot::Sender<(Result<Receipt, StoreError>, Prepared)>,
}

/// A cheap, cloneable handle for submitting batches to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    queued: Arc<AtomicUsize>,
    changes: broadcast::Sender<Arc<Committed>>,
    /// Whether commits list span summaries; see `want_live_spans`.
    live_spans: Arc<AtomicBool>,
    max_attr: usize,
    metrics: Arc<Metrics>,
    /// The ingest path this handle writes for, as the `transport` label of the ingest metrics.
    transport: &'static str,
    /// See `Counters::status`.
    session_idle_ns: u64,
}

impl Writer {
    /// A handle that counts what it writes under `transport` (grpc, http, events, watch, import).
    pub fn tagged(&self, transport: &'static str) -> Writer {
        Writer {
            transport,
            ..self.clone()
        }
    }

    /// The collector's own counters, shared by every handle.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn transport(&self) -> &'static str {
        self.transport
    }

    fn count_received(&self, spans: usize, logs: usize) {
        let t = label("transport", self.transport);
        self.metrics
            .inc("aotel_received_spans_total", t.clone(), spans as f64);
        self.metrics
            .inc("aotel_received_log_records_total", t, logs as f64);
    }

    fn count_busy(&self) -> StoreError {
        self.metrics.inc(
            "aotel_rejected_requests_total",
            format!(
                "{},{}",
                label("transport", self.transport),
                label("reason", "queue_full")
            ),
            1.0,
        );
        StoreError::Busy
    }

    /// Bytes of requests waiting for the writer.
    pub fn queue_bytes(&self) -> usize {
        self.budget_bytes
            .saturating_sub(self.budget.available_permits())
    }

    /// Stores `batch`, answering only once it is committed. Fails fast with `StoreError::Busy` when the
    /// queue's byte budget is used up, so receivers can push back instead of buffering without bound.
    pub async fn write(&self, batch: Batch, approx_bytes: usize) -> Result<Receipt, StoreError> {
        self.count_received(batch.span_count(), batch.log_count());
        let room = self.reserve(approx_bytes)?;
        self.send(self.prepare(batch), room, false).await
    }

    /// Room for `bytes` in the queue's byte budget, or `Busy` at once. A receiver reserves while it
    /// reads a request body, so requests still being read count against the budget too.
    pub fn reserve(&self, bytes: usize) -> Result<Reservation, StoreError> {
        self.budget
            .clone()
            .try_acquire_many_owned(self.permits(bytes))
            .map(|p| Reservation(Some(p)))
            .map_err(|_| self.count_busy())
    }

    /// Like `write`, with room reserved beforehand (see `reserve`).
    pub async fn write_reserved(
        &self,
        batch: Batch,
        room: Reservation,
    ) -> Result<Receipt, StoreError> {
        self.count_received(batch.span_count(), batch.log_count());
        self.send(self.prepare(batch), room, false).await
    }

    /// Reads a protobuf `ExportTraceServiceRequest` in place and prepares it (see `model::view`): one
    /// walk over its bytes instead of decoding it. Gives the bytes back when the walk declines them.
    pub fn read_in_place(&self, bytes: Bytes) -> Result<InPlace, Bytes> {
        let (live, spans) = self.wants_summaries();
        read_in_place(bytes, self.max_attr, live && spans)
    }

    /// Like `write_reserved`, for a request `read_in_place` read.
    pub async fn write_in_place(
        &self,
        read: InPlace,
        room: Reservation,
    ) -> Result<Receipt, StoreError> {
        self.count_received(read.spans(), 0);
        self.send(read.prepared, room, false).await
    }

    /// Like `write`, but waits for room instead of failing: for importers, which can afford to wait.
    pub async fn write_waiting(
        &self,
        batch: Batch,
        approx_bytes: usize,
    ) -> Result<Receipt, StoreError> {
        self.count_received(batch.span_count(), batch.log_count());
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(self.permits(approx_bytes))
            .await
            .map_err(|_| StoreError::Closed)?;
        self.send(self.prepare(batch), Reservation(Some(permit)), true)
            .await
    }

    /// Queues the job (waiting for a slot when `wait`, else failing with `Busy`) and waits for its commit.
    async fn send(
        &self,
        prepared: Prepared,
        room: Reservation,
        wait: bool,
    ) -> Result<Receipt, StoreError> {
        let (done, rx) = oneshot::channel();
        let job = Msg::Job(Job {
            prepared,
            _room: room,
            done,
        });
        // Counted before it can be taken, so the writer never sees the count run below zero.
        self.queued.fetch_add(1, Ordering::Relaxed);
        let sent = if wait {
            self.tx.send(job).await.map_err(|_| StoreError::Closed)
        } else {
            self.tx.try_send(job).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => self.count_busy(),
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })
        };
        if let Err(e) = sent {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(e);
        }
        rx.await.map_err(|_| StoreError::Closed)?.0
    }

    fn prepare(&self, batch: Batch) -> Prepared {
        let (live, spans) = self.wants_summaries();
        prepare(batch, self.max_attr, live, spans)
    }

    /// Whether anyone listens to commits, and whether they want span summaries too.
    fn wants_summaries(&self) -> (bool, bool) {
        let live = self.changes.receiver_count() > 0;
        (live, self.live_spans.load(Ordering::Acquire))
    }

    fn permits(&self, approx_bytes: usize) -> u32 {
        approx_bytes.clamp(1, self.budget_bytes) as u32
    }

    /// Records a watched file's offset through the one write connection. The watcher calls it after the
    /// spans read up to `offset` were acknowledged, so a crash in between only means a harmless re-read.
    pub async fn record_file_offset(&self, offset: FileOffset) -> Result<(), StoreError> {
        self.run_on_writer(move |conn| save_offset(conn, &offset))
            .await
    }

    /// Runs `f` on the one write connection, after everything queued before it: how writes other than
    /// span and log batches keep to the one-writer rule.
    pub async fn run_on_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.run_task(f, false).await
    }

    /// Like `run_on_writer`, once the attribute index covers every stored span: for writes that delete
    /// spans.
    pub async fn run_on_writer_indexed<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.run_task(f, true).await
    }

    async fn run_task<T, F>(&self, f: F, indexed: bool) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, rx) = oneshot::channel();
        let run = Box::new(move |conn: &mut Connection| {
            let _ = done.send(f(conn));
        });
        self.tx
            .send(Msg::Run(Task { run, indexed }))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Asks the writer to commit what is queued and stop; later writes fail with `Closed`.
    pub async fn stop(&self) {
        let _ = self.tx.send(Msg::Stop).await;
    }

    /// Requests waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Every commit, after it happened.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.changes.subscribe()
    }

    /// Marks finished the sessions known only from log events that have been idle for
    /// `StoreOptions::session_idle` (`Counters::status`), and tells live views. Returns how many changed.
    pub async fn finish_idle_sessions(&self) -> Result<usize, StoreError> {
        let idle_ns = self.session_idle_ns;
        let changed = self
            .run_on_writer(move |conn| {
                Ok(super::session::finish_idle(
                    conn,
                    crate::model::time::now_ns(),
                    idle_ns,
                )?)
            })
            .await?;
        if changed > 0 {
            self.announce_reread();
        }
        Ok(changed)
    }

    /// Tells live views that the store changed in a way no delta describes (see `Committed::reread`).
    pub fn announce_reread(&self) {
        let _ = self.changes.send(Arc::new(Committed {
            sessions: Vec::new(),
            spans: Vec::new(),
            logs: Vec::new(),
            span_seq: 0,
            log_seq: 0,
            complete: true,
            reread: true,
        }));
    }

    /// Whether commits should list their spans (`Committed::spans`). A summary per span costs CPU on
    /// every export, so the live hub asks for them only while some client shows spans; session rows
    /// and log records are listed whenever anyone listens.
    pub fn want_live_spans(&self, on: bool) {
        self.live_spans.store(on, Ordering::Release);
    }
}

pub(super) fn spawn(
    conn: Connection,
    opts: &StoreOptions,
) -> Result<(Writer, std::thread::JoinHandle<()>), StoreError> {
    let (tx, rx) = mpsc::channel(opts.queue_requests.max(1));
    let (changes, _) = broadcast::channel(opts.live_buffer.max(16));
    let budget_bytes = opts.queue_bytes.clamp(1, u32::MAX as usize >> 1);
    let queued = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(Metrics::default());
    let session_idle_ns = u64::try_from(opts.session_idle.as_nanos()).unwrap_or(u64::MAX);
    let mut state = WriterState::new(conn, metrics.clone(), session_idle_ns)?;
    let writer = Writer {
        tx,
        budget: Arc::new(Semaphore::new(budget_bytes)),
        budget_bytes,
        queued: queued.clone(),
        changes: changes.clone(),
        live_spans: Arc::new(AtomicBool::new(true)),
        max_attr: opts.max_attribute_bytes,
        metrics: metrics.clone(),
        transport: "other",
        session_idle_ns,
    };
    let handle = std::thread::Builder::new()
        .name("aotel-writer".into())
        .spawn(move || state.run(rx, queued, changes))
        .map_err(StoreError::Io)?;
    Ok((writer, handle))
}

struct SessionState {
    /// `sessions.num`, given by the writer to a new session.
    num: i64,
    /// The numbers of the traces this transaction's spans and logs of the session are in.
    traces: HashSet<i64>,
    title: Option<String>,
    agent: Option<String>,
    service: String,
    first_ns: u64,
    last_ns: u64,
    counters: Counters,
}

struct WriterState {
    conn: Connection,
    metrics: Arc<Metrics>,
    dims: Dims,
    next: Numbers,
    resources: HashMap<[u8; 16], i64>,
    scopes: HashMap<[u8; 16], i64>,
    operations: Operations,
    /// Attribute index rows of committed spans, not written yet.
    backlog: Backlog,
    known: KnownSpans,
    /// Waits with a timeout for the next message while the backlog ages.
    timer: tokio::runtime::Runtime,
    /// See `Counters::status`.
    session_idle_ns: u64,
}

/// The next numbers the writer gives. A transaction works on a copy (`Pending::next`), which becomes
/// the writer's once it committed.
#[derive(Clone, Copy, Default)]
struct Numbers {
    span_seq: i64,
    log_seq: i64,
    /// `traces.tn`: above every number given before, deleted traces' included.
    trace: i64,
    /// `sessions.num`. A deleted session's rows in `session_traces` go with it, so its number may be
    /// given again after a restart.
    session: i64,
}

/// Known (service, operation name) pairs with a bit per span kind, looked up without allocating.
type Operations = HashMap<String, HashMap<String, u32>>;

/// The per-transaction scratch: sessions touched and what the live hub will be told.
#[derive(Default)]
struct Pending {
    sessions: HashMap<String, SessionState>,
    spans: Vec<SpanSummary>,
    logs: Vec<LogSummary>,
    /// Spans and logs stored without a summary (prepared while nobody listened or spans were not
    /// wanted): the commit's lists are then incomplete.
    unsummarised: usize,
    stats: StatsDelta,
    /// Lent by the writer state for the transaction (re-read if it rolls back).
    dims: Dims,
    /// This transaction's attribute index rows; they join the writer's backlog once it committed.
    backlog: Backlog,
    /// Seqs of replaced span copies whose rows may still be in the writer's backlog.
    replaced: Vec<i64>,
    /// The numbers (`traces.tn`) of the traces this transaction wrote spans or logs of.
    trace_numbers: HashMap<Vec<u8>, i64>,
    /// Lent by the writer state for the transaction (dropped if it rolls back, as it then holds ids
    /// that were never stored).
    known: KnownSpans,
    /// Trace numbers from here on were given by this transaction: their traces have no stored spans.
    new_traces_from: i64,
    /// The seq ranges this transaction gave each trace's spans, `(tn, first_seq, last_seq)`, for
    /// `trace_runs`, in the order the seqs were given.
    runs: Vec<(i64, i64, i64)>,
    next: Numbers,
}

/// Where the spans of recently written traces are: span id to seq, for the writer to recognise a copy
/// (the spans table has no index by span id). A trace stored before is read once, through its runs,
/// when a transaction first writes to it; its ids are then kept from one commit to the next, so that
/// a trace written to by many commits is not read again by each. Bounded: past `KNOWN_SPANS_MAX` ids,
/// the traces used longest ago are dropped, and read again if they come back.
#[derive(Default)]
struct KnownSpans {
    traces: HashMap<i64, KnownTrace>,
    /// Ids held, over all traces.
    entries: usize,
    /// Counts commits; `KnownTrace::used` is the last one that used a trace.
    commit: u64,
}

struct KnownTrace {
    used: u64,
    ids: HashMap<[u8; 8], i64>,
}

/// ~20 bytes each: a few MiB (beyond it, only the traces of the last commit are kept).
const KNOWN_SPANS_MAX: usize = 1 << 18;

impl KnownSpans {
    /// The ids of trace `tn`, read from the store first unless known already or `new` (numbered by
    /// this transaction, so nothing of it is stored).
    fn trace(
        &mut self,
        tx: &Transaction,
        tn: i64,
        new: bool,
    ) -> rusqlite::Result<&HashMap<[u8; 8], i64>> {
        let trace = match self.traces.entry(tn) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let mut ids = HashMap::new();
                if !new {
                    let mut stmt = tx.prepare_cached(concat!(
                        "SELECT span_id, seq FROM spans WHERE ",
                        super::tn_spans!()
                    ))?;
                    let mut rows = stmt.query([tn])?;
                    while let Some(r) = rows.next()? {
                        if let Ok(id) = <[u8; 8]>::try_from(r.get_ref(0)?.as_blob()?) {
                            ids.insert(id, r.get(1)?);
                        }
                    }
                    self.entries += ids.len();
                }
                v.insert(KnownTrace { used: 0, ids })
            }
        };
        trace.used = self.commit;
        Ok(&trace.ids)
    }

    /// Notes that span `id` of trace `tn` (looked up by `trace` before) is at `seq`.
    fn insert(&mut self, tn: i64, id: [u8; 8], seq: i64) {
        if let Some(t) = self.traces.get_mut(&tn) {
            if t.ids.insert(id, seq).is_none() {
                self.entries += 1;
            }
        }
    }

    /// After a commit: past the bound, drops the traces used longest ago, down to half of it (so that
    /// this sorting is rare). The traces this commit used stay, however large: one that is written to
    /// on and on is read once, not at every commit.
    fn committed(&mut self) {
        let this = self.commit;
        self.commit += 1;
        if self.entries <= KNOWN_SPANS_MAX {
            return;
        }
        let mut by_use: Vec<(u64, i64)> = (self.traces.iter())
            .filter(|(_, t)| t.used < this)
            .map(|(tn, t)| (t.used, *tn))
            .collect();
        by_use.sort_unstable();
        for (_, tn) in by_use {
            if self.entries <= KNOWN_SPANS_MAX / 2 {
                break;
            }
            if let Some(t) = self.traces.remove(&tn) {
                self.entries -= t.ids.len();
            }
        }
    }
}

impl Pending {
    /// Notes that trace `tn`'s span went to `seq`. Seqs are given one after another, so only the last
    /// run can go on: it does when it is this trace's.
    fn note_run(&mut self, tn: i64, seq: i64) {
        match self.runs.last_mut() {
            Some(run) if run.0 == tn && run.2 + 1 == seq => run.2 = seq,
            _ => self.runs.push((tn, seq, seq)),
        }
    }
}

impl WriterState {
    fn new(
        conn: Connection,
        metrics: Arc<Metrics>,
        session_idle_ns: u64,
    ) -> Result<Self, StoreError> {
        let mut state = WriterState {
            conn,
            metrics,
            dims: Dims::default(),
            next: Numbers::default(),
            resources: HashMap::new(),
            scopes: HashMap::new(),
            operations: HashMap::new(),
            backlog: Backlog::default(),
            known: KnownSpans::default(),
            timer: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(StoreError::Io)?,
            session_idle_ns,
        };
        state.reload()?;
        Ok(state)
    }

    /// Re-reads what the caches mirror; after a rolled-back transaction they may hold rows that never
    /// made it to disk.
    fn reload(&mut self) -> Result<(), StoreError> {
        self.resources.clear();
        self.scopes.clear();
        self.operations.clear();
        self.dims = Dims::load(&self.conn)?;
        let hwm = |key: &str, max: &str| -> rusqlite::Result<i64> {
            let stored: Option<i64> = self
                .conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?;
            let max: Option<i64> = self.conn.query_row(max, [], |r| r.get(0))?;
            Ok(stored.unwrap_or(0).max(max.unwrap_or(0)) + 1)
        };
        self.next = Numbers {
            span_seq: hwm("span_seq", "SELECT MAX(seq) FROM spans")?,
            log_seq: hwm("log_seq", "SELECT MAX(seq) FROM logs")?,
            trace: hwm("trace_seq", "SELECT MAX(tn) FROM traces")?,
            // No high-water mark kept: a session number may be given again (above).
            session: self.conn.query_row(
                "SELECT COALESCE(MAX(num), 0) + 1 FROM sessions",
                [],
                |r| r.get(0),
            )?,
        };
        Ok(())
    }

    fn run(
        &mut self,
        mut rx: mpsc::Receiver<Msg>,
        queued: Arc<AtomicUsize>,
        changes: broadcast::Sender<Arc<Committed>>,
    ) {
        let mut stopping = false;
        while !stopping {
            let first = match self.next_message(&mut rx) {
                Some(Msg::Job(job)) => job,
                Some(Msg::Run(task)) => {
                    self.run_task(task);
                    continue;
                }
                Some(Msg::Stop) | None => break,
            };
            let mut items = first.prepared.items;
            queued.fetch_sub(1, Ordering::Relaxed);
            let mut jobs = vec![first];
            let mut run_after = None;
            // The next queued request, while the commit has room and no task or stop is waiting. The
            // commit asks before each round of rows it writes, until a round brings none, so a request
            // that arrived just after it began shares it instead of waiting for all of it and then for
            // one of its own:
            // under load commits grew from ~290 to ~460 spans, sharing the pages every commit rewrites
            // (docs/PERFORMANCE.md, seventeenth round).
            let take = || -> Option<Job> {
                if items >= GROUP_ITEMS || run_after.is_some() || stopping {
                    return None;
                }
                match rx.try_recv() {
                    Ok(Msg::Job(job)) => {
                        items += job.prepared.items;
                        queued.fetch_sub(1, Ordering::Relaxed);
                        Some(job)
                    }
                    Ok(Msg::Run(task)) => {
                        run_after = Some(task);
                        None
                    }
                    Ok(Msg::Stop) => {
                        stopping = true;
                        None
                    }
                    Err(_) => None,
                }
            };
            match self.commit(&mut jobs, take) {
                Ok((receipts, committed)) => {
                    for (job, receipt) in jobs.into_iter().zip(receipts) {
                        let _ = job.done.send((Ok(receipt), job.prepared));
                    }
                    if let Some(c) = committed {
                        let _ = changes.send(Arc::new(c));
                    }
                }
                Err(err) => {
                    // One bad request must not fail the others that shared its transaction.
                    tracing::warn!(error = %err, jobs = jobs.len(), "group commit failed; retrying one by one");
                    self.metrics
                        .inc("aotel_commit_failures_total", String::new(), 1.0);
                    if let Err(e) = self.reload() {
                        tracing::error!(error = %e, "writer could not re-read its state");
                    }
                    for job in jobs {
                        let mut one = vec![job];
                        let result = self.commit(&mut one, || None);
                        let Some(job) = one.pop() else { continue };
                        match result {
                            Ok((receipts, committed)) => {
                                let receipt = receipts.first().copied().unwrap_or_default();
                                let _ = job.done.send((Ok(receipt), job.prepared));
                                if let Some(c) = committed {
                                    let _ = changes.send(Arc::new(c));
                                }
                            }
                            Err(e) => {
                                let _ = self.reload();
                                let _ = job.done.send((Err(e), job.prepared));
                            }
                        }
                    }
                }
            }
            if let Some(task) = run_after {
                self.run_task(task);
            }
        }
        rx.close();
        self.write_index();
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "final checkpoint failed");
        }
        tracing::debug!("writer stopped");
    }

    fn run_task(&mut self, task: Task) {
        if task.indexed {
            self.write_index();
        }
        (task.run)(&mut self.conn);
    }

    /// The next message; while attribute index rows wait, writes them first when the time is right.
    fn next_message(&mut self, rx: &mut mpsc::Receiver<Msg>) -> Option<Msg> {
        loop {
            if self.backlog.spans() == 0 {
                return rx.blocking_recv();
            }
            match rx.try_recv() {
                Ok(msg) => {
                    if self.backlog.spans() >= INDEX_MAX_SPANS
                        || self.backlog.age() >= 4 * INDEX_MAX_AGE
                    {
                        self.write_index();
                    }
                    return Some(msg);
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            let age = self.backlog.age();
            if self.backlog.spans() >= INDEX_IDLE_SPANS || age >= INDEX_MAX_AGE {
                self.write_index();
                continue;
            }
            // The timer must be made inside the runtime that drives it.
            let wait = async { tokio::time::timeout(INDEX_MAX_AGE - age, rx.recv()).await };
            if let Ok(msg) = self.timer.block_on(wait) {
                return msg;
            }
        }
    }

    /// Writes the attribute index backlog in one sorted batch.
    fn write_index(&mut self) {
        if self.backlog.spans() == 0 {
            return;
        }
        let started = std::time::Instant::now();
        let upto = self.next.span_seq - 1;
        let written = self.conn.transaction().and_then(|tx| {
            self.backlog.write(&tx, upto)?;
            tx.commit()
        });
        match written {
            Ok(()) => {
                tracing::trace!(spans = self.backlog.spans(), took = ?started.elapsed(), "attribute index written");
                self.backlog.written();
            }
            Err(e) => {
                // Searches still find these spans (they check what is above `span_attrs_upto`).
                tracing::warn!(error = %e, spans = self.backlog.spans(), "attribute index not written; will retry");
                self.backlog.retry_later();
            }
        }
    }

    /// Stores `jobs` in one transaction, and the jobs `more` hands over while it runs, which it adds to
    /// `jobs`; a receipt for each, in order.
    fn commit(
        &mut self,
        jobs: &mut Vec<Job>,
        mut more: impl FnMut() -> Option<Job>,
    ) -> Result<(Vec<Receipt>, Option<Committed>), StoreError> {
        let started = std::time::Instant::now();
        let mut pending = Pending {
            dims: std::mem::take(&mut self.dims),
            known: std::mem::take(&mut self.known),
            new_traces_from: self.next.trace,
            next: self.next,
            ..Pending::default()
        };
        let mut receipts = Vec::with_capacity(jobs.len());
        let tx = self.conn.transaction()?;
        let mut caches = Caches {
            resources: &mut self.resources,
            scopes: &mut self.scopes,
            operations: &mut self.operations,
        };
        let mut done = 0;
        loop {
            jobs.extend(std::iter::from_fn(&mut more));
            if done == jobs.len() {
                break;
            }
            // A statement per round: the last row it keeps borrows from the jobs, which then grow.
            let mut insert_span = SpanInsert::new(&tx)?;
            for job in &jobs[done..] {
                let receipt = caches.store(&tx, &mut insert_span, &job.prepared, &mut pending)?;
                receipts.push(receipt);
            }
            done = jobs.len();
        }
        write_runs(&tx, &mut pending.runs)?;
        let next = pending.next;
        let sessions = write_sessions(&tx, &mut pending, next.span_seq - 1, self.session_idle_ns)?;
        pending.stats.flush(&tx)?;
        let indexed_upto = self
            .backlog
            .first_seq()
            .or(pending.backlog.first_seq())
            .map_or(next.span_seq - 1, |seq| seq - 1);
        tx.prepare_cached(
            "INSERT INTO meta(key, value) VALUES ('span_seq', ?1), ('log_seq', ?2), ('span_attrs_upto', ?3),
                ('trace_seq', ?4)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![
            next.span_seq - 1,
            next.log_seq - 1,
            indexed_upto,
            next.trace - 1
        ])?;
        tx.commit()?;
        pending.known.committed();
        self.known = std::mem::take(&mut pending.known);
        for seq in pending.replaced.drain(..) {
            self.backlog.forget(seq);
        }
        self.backlog.append(&mut pending.backlog);
        self.next = next;
        self.dims = std::mem::take(&mut pending.dims);
        self.metrics.observe_commit(started.elapsed().as_secs_f64());
        let stored = receipts
            .iter()
            .fold((0, 0), |(s, l), r| (s + r.spans, l + r.logs));
        self.metrics
            .inc("aotel_stored_spans_total", String::new(), stored.0 as f64);
        self.metrics.inc(
            "aotel_stored_log_records_total",
            String::new(),
            stored.1 as f64,
        );
        let live =
            !pending.spans.is_empty() || !pending.logs.is_empty() || pending.unsummarised > 0;
        let committed = live.then_some(Committed {
            sessions,
            spans: pending.spans,
            logs: pending.logs,
            span_seq: next.span_seq - 1,
            log_seq: next.log_seq - 1,
            complete: pending.unsummarised == 0,
            reread: false,
        });
        Ok((receipts, committed))
    }
}

struct Caches<'a> {
    resources: &'a mut HashMap<[u8; 16], i64>,
    scopes: &'a mut HashMap<[u8; 16], i64>,
    operations: &'a mut Operations,
}

impl Caches<'_> {
    /// Stores one request's spans and log records; what it stored, for its receipt.
    fn store<'a>(
        &mut self,
        tx: &Transaction,
        insert_span: &mut SpanInsert<'_, 'a>,
        batch: &'a Prepared,
        pending: &mut Pending,
    ) -> Result<Receipt, StoreError> {
        let mut receipt = Receipt::default();
        for pr in &batch.resources {
            let resource_id = self.resource(tx, pr)?;
            for ps in &pr.scopes {
                let scope_id = self.scope(tx, &ps.meta, &ps.name, &ps.version)?;
                for span in &ps.spans {
                    self.operation(tx, &pr.service, &span.name, span.kind)?;
                    if store_span(tx, insert_span, span, resource_id, scope_id, pending)? {
                        receipt.spans += 1;
                    }
                }
                for log in &ps.logs {
                    if store_log(tx, log, &pr.service, resource_id, scope_id, pending)? {
                        receipt.logs += 1;
                    }
                }
            }
        }
        Ok(receipt)
    }

    fn resource(&mut self, tx: &Transaction, pr: &PreparedResource) -> rusqlite::Result<i64> {
        let meta = &pr.meta;
        if let Some(id) = self.resources.get(&meta.hash) {
            return Ok(*id);
        }
        let id = intern(
            tx,
            "INSERT INTO resources(hash, service, schema_url, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(hash) DO UPDATE SET hash = hash RETURNING id",
            params![&meta.hash[..], pr.service, meta.schema_url, meta.body],
        )?;
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO resource_attrs(h, resource_id) VALUES (?1, ?2)",
        )?;
        for h in &pr.attr_hashes {
            stmt.execute(params![h, id])?;
        }
        if self.resources.len() > CACHE_LIMIT {
            self.resources.clear();
        }
        self.resources.insert(meta.hash, id);
        Ok(id)
    }

    fn scope(
        &mut self,
        tx: &Transaction,
        meta: &Meta,
        name: &str,
        version: &str,
    ) -> rusqlite::Result<i64> {
        if let Some(id) = self.scopes.get(&meta.hash) {
            return Ok(*id);
        }
        let id = intern(
            tx,
            "INSERT INTO scopes(hash, name, version, schema_url, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(hash) DO UPDATE SET hash = hash RETURNING id",
            params![&meta.hash[..], name, version, meta.schema_url, meta.body],
        )?;
        if self.scopes.len() > CACHE_LIMIT {
            self.scopes.clear();
        }
        self.scopes.insert(meta.hash, id);
        Ok(id)
    }

    fn operation(
        &mut self,
        tx: &Transaction,
        service: &str,
        name: &str,
        kind: i32,
    ) -> rusqlite::Result<()> {
        let bit = 1u32 << kind.clamp(0, 31);
        let known = self
            .operations
            .get(service)
            .and_then(|names| names.get(name))
            .is_some_and(|kinds| kinds & bit != 0);
        if known {
            return Ok(());
        }
        tx.prepare_cached(
            "INSERT OR IGNORE INTO operations(service, name, kind) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![service, name, kind])?;
        if self.operations.len() > CACHE_LIMIT {
            self.operations.clear();
        }
        *self
            .operations
            .entry(service.to_string())
            .or_default()
            .entry(name.to_string())
            .or_default() |= bit;
        Ok(())
    }
}

fn intern(tx: &Transaction, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<i64> {
    tx.prepare_cached(sql)?.query_row(p, |r| r.get(0))
}

const FLAG_IN_PROGRESS: i64 = 1;

/// Prepared once per transaction (`store_span` runs per span; looking a statement up costs a hash of
/// its text).
const INSERT_SPAN: &str = "INSERT INTO spans(seq, trace_id, span_id, parent_span_id, session, name, kind,
        start_ns, end_ns, status, service, operation, tool, agent, model, flags, input_tokens, output_tokens,
        cache_read_tokens, cache_creation_tokens, cost_usd, resource_id, scope_id, body, tn)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
        ?22, ?23, ?24, ?25)";

/// Where a span goes: its seq, and the ids of its trace's number, resource and scope.
#[derive(Clone, Copy)]
struct Place {
    seq: i64,
    tn: i64,
    resource_id: i64,
    scope_id: i64,
}

/// A span's INSERT parameters (?1 to ?25 of `INSERT_SPAN`, the same for the UPDATE that replaces a copy).
fn span_row(span: &PreparedSpan, at: Place) -> [ToSqlOutput<'_>; 25] {
    fn int(v: i64) -> ToSqlOutput<'static> {
        ToSqlOutput::Owned(Value::Integer(v))
    }
    fn text(v: Option<&str>) -> ToSqlOutput<'_> {
        v.map_or(ToSqlOutput::Owned(Value::Null), |t| {
            ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes()))
        })
    }
    fn blob(v: &[u8]) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Blob(v))
    }
    let f = &span.facts;
    let u = &f.usage;
    [
        int(at.seq),
        blob(&span.trace_id),
        blob(&span.span_id),
        span.parent_span_id
            .as_ref()
            .map_or(ToSqlOutput::Owned(Value::Null), |p| blob(p)),
        text(Some(&f.session)),
        text(Some(&span.name)),
        int(span.kind.into()),
        int(span.start_ns as i64),
        int(span.end_ns as i64),
        int(span.status.into()),
        text(Some(&f.service)),
        text(f.operation),
        text(f.tool.as_deref()),
        text(f.agent.as_deref()),
        text(f.model.as_deref()),
        int(if f.in_progress { FLAG_IN_PROGRESS } else { 0 }),
        int(u.input_tokens),
        int(u.output_tokens),
        int(u.cache_read_tokens),
        int(u.cache_creation_tokens),
        ToSqlOutput::Owned(Value::Real(u.cost_usd)),
        int(at.resource_id),
        int(at.scope_id),
        blob(&span.body),
        int(at.tn),
    ]
}

/// The span INSERT with the parameters it was last run with. SQLite keeps bindings from one run of a
/// statement to the next, and the spans of a batch mostly share their trace, parent, session, service,
/// operation, tool, resource and scope: binding only what changed saves most of the binding work
/// (which was an eighth of the writer's instructions).
struct SpanInsert<'s, 'a> {
    stmt: rusqlite::CachedStatement<'s>,
    bound: Option<[ToSqlOutput<'a>; 25]>,
}

impl<'s, 'a> SpanInsert<'s, 'a> {
    fn new(tx: &'s Transaction) -> rusqlite::Result<Self> {
        Ok(SpanInsert {
            stmt: tx.prepare_cached(INSERT_SPAN)?,
            bound: None,
        })
    }

    /// Runs the INSERT with `row`, which it keeps to compare the next row with.
    fn execute(&mut self, row: [ToSqlOutput<'a>; 25]) -> rusqlite::Result<usize> {
        // Forgotten until the run succeeded: after any failure the next run binds everything.
        let last = self.bound.take();
        for (i, value) in row.iter().enumerate() {
            if last.as_ref().is_none_or(|b| b[i] != *value) {
                self.stmt.raw_bind_parameter(i + 1, value)?;
            }
        }
        let changed = self.stmt.raw_execute()?;
        self.bound = Some(row);
        Ok(changed)
    }
}

/// Inserts or replaces one span; returns whether anything changed (an identical copy changes nothing).
fn store_span<'a>(
    tx: &Transaction,
    insert: &mut SpanInsert<'_, 'a>,
    span: &'a PreparedSpan,
    resource_id: i64,
    scope_id: i64,
    pending: &mut Pending,
) -> Result<bool, StoreError> {
    let f = &span.facts;
    let seq = pending.next.span_seq;
    let tn = trace_number(tx, pending, &span.trace_id)?;
    let at = Place {
        seq,
        tn,
        resource_id,
        scope_id,
    };
    let new = tn >= pending.new_traces_from;
    let old = match pending.known.trace(tx, tn, new)?.get(&span.span_id) {
        Some(&old_seq) => previous_copy(tx, span, at, old_seq)?,
        None => None,
    };
    let mut replaced: Option<SpanFacts> = None;
    match old {
        None => {
            insert.execute(span_row(span, at))?;
        }
        Some(old) if old.same => return Ok(false),
        Some(old) => {
            let mut gone: Vec<_> = (old.attr_hashes.iter())
                .map(|h| (*h, old.start_ns as i64, old.seq))
                .collect();
            super::index::unindex(tx, &mut gone)?;
            pending.backlog.forget(old.seq);
            pending.replaced.push(old.seq);
            // The later copy wins; its seq moves forward so forwarders send the new version too.
            let row = span_row(span, at);
            tx.prepare_cached(
                "UPDATE spans SET seq = ?1, parent_span_id = ?4, session = ?5, name = ?6, kind = ?7,
                    start_ns = ?8, end_ns = ?9, status = ?10, service = ?11, operation = ?12, tool = ?13,
                    agent = ?14, model = ?15, flags = ?16, input_tokens = ?17, output_tokens = ?18,
                    cache_read_tokens = ?19, cache_creation_tokens = ?20, cost_usd = ?21, resource_id = ?22,
                    scope_id = ?23, body = ?24
                 WHERE seq = ?26",
            )?
            .execute(rusqlite::params_from_iter(
                row.iter().chain([&ToSqlOutput::Owned(Value::Integer(old.seq))]),
            ))?;
            session_mut(tx, pending, &old.facts.session, &old.facts.service)?
                .counters
                .apply_span(&old.facts, old.end_ns, -1);
            replaced = Some(old.facts);
        }
    }
    pending.known.insert(tn, span.span_id, seq);
    pending.note_run(tn, seq);
    pending
        .backlog
        .push(seq, span.start_ns, &span.attr_hashes, span.session_hash);
    pending.next.span_seq += 1;
    let state = session_mut(tx, pending, &f.session, &f.service)?;
    state.counters.apply_span(f, span.end_ns, 1);
    state.traces.insert(at.tn);
    state.first_ns = state.first_ns.min(span.start_ns);
    state.last_ns = state.last_ns.max(span.end_ns.max(span.start_ns));
    if f.title.is_some() {
        state.title.clone_from(&f.title);
    }
    if f.agent.is_some() && (state.agent.is_none() || (f.is_root && f.operation == Some(OP_AGENT)))
    {
        state.agent.clone_from(&f.agent);
    }
    // Cost is counted by agent; only then is the session's agent worth a copy.
    let agent = if f.usage.cost_usd > 0.0 {
        state.agent.clone()
    } else {
        None
    };
    let duration_s = span.end_ns.saturating_sub(span.start_ns) as f64 / 1e9;
    pending.stats.span(
        tx,
        &mut pending.dims,
        f,
        replaced.as_ref(),
        duration_s,
        agent.as_deref(),
    )?;
    // Taken, not cloned: the writer thread only moves it. A retry after a failed group commit then finds
    // it gone and the commit is marked incomplete, which the live hub handles.
    match span.summary.take() {
        Some(mut summary) => {
            summary.seq = seq;
            pending.spans.push(*summary);
        }
        None => pending.unsummarised += 1,
    }
    Ok(true)
}

/// The copy a newer one replaces: its facts, end time, and where its index rows are.
struct OldCopy {
    facts: SpanFacts,
    end_ns: u64,
    seq: i64,
    start_ns: u64,
    /// Whether it is byte-for-byte what just arrived (then nothing changes).
    same: bool,
    /// Its index hashes, when it differs.
    attr_hashes: Vec<i64>,
}

/// The stored copy of `span`, at `old_seq`.
fn previous_copy(
    tx: &Transaction,
    span: &PreparedSpan,
    at: Place,
    old_seq: i64,
) -> rusqlite::Result<Option<OldCopy>> {
    let body = &span.body[..];
    tx.prepare_cached(
        "SELECT body, resource_id, scope_id, session, service, operation, tool, agent, model, flags, status,
            parent_span_id IS NULL, end_ns, input_tokens, output_tokens, cache_read_tokens,
            cache_creation_tokens, cost_usd, name, seq, start_ns, kind, parent_span_id
         FROM spans WHERE seq = ?1 AND tn = ?2 AND span_id = ?3",
    )?
    .query_row(params![old_seq, at.tn, span.span_id], |r| {
        let old_body = r.get_ref(0)?.as_blob()?;
        // The body leaves out what the columns hold (store::body), so those are compared too.
        let same = old_body == body
            && r.get::<_, i64>(1)? == at.resource_id
            && r.get::<_, i64>(2)? == at.scope_id
            && r.get_ref(18)?.as_str()? == span.name
            && r.get::<_, i32>(21)? == span.kind
            && r.get::<_, i64>(20)? == span.start_ns as i64
            && r.get::<_, i64>(12)? == span.end_ns as i64
            && r.get::<_, Option<[u8; 8]>>(22)? == span.parent_span_id;
        let service: String = r.get(4)?;
        let attr_hashes = if same {
            Vec::new()
        } else {
            let service_h = super::index::service_hash(&service);
            Span::decode(old_body)
                .map(|s| super::index::span_hashes(&kv_refs(&s.attributes), service_h).0)
                .unwrap_or_default()
        };
        let operation: Option<String> = r.get(5)?;
        let facts = SpanFacts {
            session: r.get(3)?,
            service,
            operation: operation.as_deref().and_then(facts::known_operation),
            tool: r.get(6)?,
            agent: r.get(7)?,
            model: r.get(8)?,
            title: None,
            in_progress: r.get::<_, i64>(9)? & FLAG_IN_PROGRESS != 0,
            is_error: r.get::<_, i32>(10)? == 2,
            is_root: r.get(11)?,
            tool_execution_error: r.get::<_, i32>(10)? == 2
                && r.get_ref(18)?.as_str()? == facts::CLAUDE_CODE_TOOL_EXECUTION,
            usage: Usage {
                input_tokens: r.get(13)?,
                output_tokens: r.get(14)?,
                cache_read_tokens: r.get(15)?,
                cache_creation_tokens: r.get(16)?,
                cost_usd: r.get(17)?,
            },
        };
        Ok(OldCopy {
            facts,
            end_ns: r.get::<_, i64>(12)? as u64,
            seq: r.get(19)?,
            start_ns: r.get::<_, i64>(20)? as u64,
            same,
            attr_hashes,
        })
    })
    .optional()
}

fn save_offset(conn: &mut Connection, o: &FileOffset) -> Result<(), StoreError> {
    conn
        .prepare_cached(
            "INSERT INTO watch_offsets(path, offset, dev, ino, head_len, head, updated_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(path) DO UPDATE SET offset = excluded.offset, dev = excluded.dev, ino = excluded.ino,
                head_len = excluded.head_len, head = excluded.head, updated_ns = excluded.updated_ns",
        )?
        .execute(params![
            o.path,
            o.offset as i64,
            o.dev as i64,
            o.ino as i64,
            o.head_len as i64,
            o.head,
            crate::model::time::now_ns() as i64
        ])?;
    Ok(())
}

fn store_log(
    tx: &Transaction,
    log: &PreparedLog,
    service: &str,
    resource_id: i64,
    scope_id: i64,
    pending: &mut Pending,
) -> Result<bool, StoreError> {
    let f = &log.facts;
    let seq = pending.next.log_seq;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO logs(seq, hash, time_ns, trace_id, span_id, session, severity, event_name, service,
                resource_id, scope_id, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT(hash) DO NOTHING",
        )?
        .execute(params![
            seq,
            &log.hash[..],
            log.time_ns as i64,
            log.trace_id,
            log.span_id,
            f.session,
            log.severity,
            f.event_name,
            service,
            resource_id,
            scope_id,
            &log.body[..],
        ])?;
    if inserted == 0 {
        return Ok(false);
    }
    pending.next.log_seq += 1;
    let mut agent = None;
    if let Some(session) = &f.session {
        let tn = match &log.trace_id {
            Some(trace_id) => Some(trace_number(tx, pending, trace_id)?),
            None => None,
        };
        let state = session_mut(tx, pending, session, service)?;
        state.traces.extend(tn);
        state.counters.apply_log(f);
        agent.clone_from(&state.agent);
        if log.time_ns > 0 {
            state.first_ns = state.first_ns.min(log.time_ns);
            state.last_ns = state.last_ns.max(log.time_ns);
        }
    }
    pending
        .stats
        .log(tx, &mut pending.dims, f, agent.as_deref())?;
    match log.summary.take() {
        Some(mut summary) => {
            summary.seq = seq;
            pending.logs.push(summary);
        }
        None => pending.unsummarised += 1,
    }
    Ok(true)
}

/// The number of trace `trace_id` (`traces.tn`), given to it here if it is new. Numbers grow, so
/// `trace_runs` and `session_traces` grow at their end however random the trace ids are. They are given
/// explicitly, not as SQLite's next rowid, which would give a deleted last trace's number again and
/// let a `session_traces` row of the deleted trace point at the new one.
fn trace_number(tx: &Transaction, pending: &mut Pending, trace_id: &[u8]) -> rusqlite::Result<i64> {
    if let Some(tn) = pending.trace_numbers.get(trace_id) {
        return Ok(*tn);
    }
    // Not `intern`'s upsert: its no-op update would rewrite a known trace's (random) page.
    let tn = match super::trace_number(tx, trace_id)? {
        Some(tn) => tn,
        None => {
            let tn = pending.next.trace;
            tx.prepare_cached("INSERT INTO traces(tn, trace_id) VALUES (?1, ?2)")?
                .execute(params![tn, trace_id])?;
            pending.next.trace += 1;
            tn
        }
    };
    pending.trace_numbers.insert(trace_id.to_vec(), tn);
    Ok(tn)
}

/// Notes this transaction's runs in `trace_runs`, in key order.
fn write_runs(tx: &Transaction, runs: &mut [(i64, i64, i64)]) -> rusqlite::Result<()> {
    runs.sort_unstable();
    let mut stmt =
        tx.prepare_cached("INSERT INTO trace_runs(tn, first_seq, last_seq) VALUES (?1, ?2, ?3)")?;
    for (tn, first, last) in runs.iter() {
        stmt.execute(params![tn, first, last])?;
    }
    Ok(())
}

fn session_mut<'p>(
    tx: &Transaction,
    pending: &'p mut Pending,
    key: &str,
    service: &str,
) -> rusqlite::Result<&'p mut SessionState> {
    // The common case, a session already touched in this transaction, allocates nothing.
    if pending.sessions.contains_key(key) {
        return pending
            .sessions
            .get_mut(key)
            .ok_or(rusqlite::Error::QueryReturnedNoRows);
    }
    let vacant = match pending.sessions.entry(key.to_string()) {
        Entry::Occupied(e) => return Ok(e.into_mut()),
        Entry::Vacant(v) => v,
    };
    let loaded = tx
        .prepare_cached(
            "SELECT title, agent, service, first_ns, last_ns, counters, num FROM sessions WHERE key = ?1",
        )?
        .query_row([key], |r| {
            let counters: String = r.get(5)?;
            Ok(SessionState {
                num: r.get(6)?,
                traces: HashSet::default(),
                title: r.get(0)?,
                agent: r.get(1)?,
                service: r.get(2)?,
                first_ns: r.get::<_, i64>(3)? as u64,
                last_ns: r.get::<_, i64>(4)? as u64,
                counters: serde_json::from_str(&counters).unwrap_or_default(),
            })
        })
        .optional()?;
    let state = match loaded {
        Some(state) => state,
        None => {
            pending.next.session += 1;
            SessionState {
                num: pending.next.session - 1,
                traces: HashSet::default(),
                title: None,
                agent: None,
                service: service.to_string(),
                first_ns: u64::MAX,
                last_ns: 0,
                counters: Counters::default(),
            }
        }
    };
    Ok(vacant.insert(state))
}

fn write_sessions(
    tx: &Transaction,
    pending: &mut Pending,
    seq: i64,
    idle_ns: u64,
) -> rusqlite::Result<Vec<SessionRow>> {
    let now = crate::model::time::now_ns();
    let mut rows = Vec::with_capacity(pending.sessions.len());
    for (key, mut s) in pending.sessions.drain() {
        for &tn in &s.traces {
            let added = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO session_traces(session, tn) VALUES (?1, ?2)",
                )?
                .execute(params![s.num, tn])?;
            s.counters.traces += added as i64;
        }
        let first = if s.first_ns == u64::MAX {
            s.last_ns
        } else {
            s.first_ns
        };
        let counters = serde_json::to_string(&s.counters).unwrap_or_default();
        let status = s.counters.status(s.last_ns, now, idle_ns);
        tx.prepare_cached(
            "INSERT INTO sessions(num, key, title, agent, service, status, first_ns, last_ns, updated_seq,
                counters)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT(key) DO UPDATE SET title = excluded.title, agent = excluded.agent,
                status = excluded.status, first_ns = excluded.first_ns, last_ns = excluded.last_ns,
                updated_seq = excluded.updated_seq, counters = excluded.counters",
        )?
        .execute(params![
            s.num,
            key,
            s.title,
            s.agent,
            s.service,
            status,
            first as i64,
            s.last_ns as i64,
            seq,
            counters
        ])?;
        rows.push(SessionRow::new(
            key,
            s.title,
            s.agent,
            s.service,
            status.to_string(),
            first,
            s.last_ns,
            seq,
            &s.counters,
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request with one span of session `key` in trace `trace`.
    fn job(key: &str, trace: u8) -> Job {
        let span = Span {
            trace_id: vec![trace; 16],
            span_id: vec![1; 8],
            name: "execute_tool Bash".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![crate::model::attrs::kv_str("gen_ai.conversation.id", key)],
            ..Default::default()
        };
        let batch =
            crate::ingest::spans::span_batch(Default::default(), Default::default(), vec![span]);
        Job {
            prepared: prepare(batch, usize::MAX, false, false),
            _room: Reservation::default(),
            done: oneshot::channel().0,
        }
    }

    #[test]
    fn requests_handed_over_during_a_commit_share_it() {
        let mut conn = Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&mut conn).expect("schema");
        let mut state =
            WriterState::new(conn, Arc::new(Metrics::default()), u64::MAX).expect("state");
        let mut late = vec![job("late", 2)];
        let mut jobs = vec![job("first", 1)];
        let (receipts, _) = state.commit(&mut jobs, || late.pop()).expect("commit");
        assert_eq!(jobs.len(), 2, "the late request joined the commit");
        assert_eq!(receipts, vec![Receipt { spans: 1, logs: 0 }; 2]);
        // A session's `updated_seq` is the last seq of the commit that wrote it.
        let updated: Vec<(String, i64)> = state
            .conn
            .prepare("SELECT key, updated_seq FROM sessions ORDER BY key")
            .expect("select")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(updated, vec![("first".into(), 2), ("late".into(), 2)]);
        // Nothing handed over: one request, one commit of its own.
        let mut alone = vec![job("alone", 3)];
        let (receipts, _) = state.commit(&mut alone, || None).expect("commit");
        assert_eq!(receipts.len(), 1);
        let seq: i64 = state
            .conn
            .query_row(
                "SELECT updated_seq FROM sessions WHERE key = 'alone'",
                [],
                |r| r.get(0),
            )
            .expect("alone");
        assert_eq!(seq, 3);
    }

    #[test]
    fn known_spans_keep_the_traces_used_last() {
        let mut conn = Connection::open_in_memory().expect("db");
        let tx = conn.transaction().expect("tx");
        let mut known = KnownSpans::default();
        let quarter = KNOWN_SPANS_MAX / 4;
        let fill = |known: &mut KnownSpans, tn: i64| {
            known.trace(&tx, tn, true).expect("new trace");
            for i in 0..quarter {
                known.insert(tn, (i as u64).to_be_bytes(), i as i64);
            }
            known.committed();
        };
        for tn in 0..4 {
            fill(&mut known, tn);
        }
        assert_eq!(
            known.entries, KNOWN_SPANS_MAX,
            "at the bound, nothing is dropped"
        );
        // Trace 0 is used again, so traces 1 and 2 are the ones used longest ago.
        assert_eq!(known.trace(&tx, 0, false).expect("known").len(), quarter);
        known.committed();
        fill(&mut known, 4);
        let mut kept: Vec<i64> = known.traces.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            [0, 4],
            "dropped down to half the bound, oldest use first"
        );
        assert_eq!(known.entries, 2 * quarter);
        // A span of a known trace is found where it was last noted.
        known.insert(4, 7u64.to_be_bytes(), 99);
        assert_eq!(
            known
                .trace(&tx, 4, false)
                .expect("known")
                .get(&7u64.to_be_bytes()),
            Some(&99)
        );
        assert_eq!(known.entries, 2 * quarter);
        known.committed();
        // One trace larger than the bound stays known while commits use it.
        known.trace(&tx, 5, true).expect("new trace");
        for i in 0..KNOWN_SPANS_MAX as u64 + 1 {
            known.insert(5, i.to_be_bytes(), i as i64);
        }
        known.committed();
        assert_eq!(known.traces.keys().copied().collect::<Vec<_>>(), [5]);
        assert_eq!(known.entries, KNOWN_SPANS_MAX + 1);
    }
}
