//! The one writer: owns the write connection, group-commits queued batches, acknowledges each only after
//! its transaction committed, then tells the live hub what changed.

use super::session::{Counters, SessionRow};
use super::{Committed, LogSummary, SpanSummary, StoreError, StoreOptions};
use crate::model::attrs::truncate;
use crate::model::facts::{self, LogFacts, SpanFacts, Usage, OP_AGENT};
use crate::model::{ids, Batch, InstrumentationScope, LogRecord, Resource, Span};
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sha2::{Digest, Sha256};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// How many spans and logs one transaction takes at most; larger groups only add latency.
const GROUP_ITEMS: usize = 50_000;
const CACHE_LIMIT: usize = 100_000;

/// What was stored for one write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub spans: usize,
    pub logs: usize,
}

enum Msg {
    Job(Job),
    /// Commit everything queued before it, then stop.
    Stop,
}

struct Job {
    batch: Batch,
    _permit: OwnedSemaphorePermit,
    done: oneshot::Sender<Result<Receipt, StoreError>>,
}

/// A cheap, cloneable handle for submitting batches to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    queued: Arc<AtomicUsize>,
    changes: broadcast::Sender<Arc<Committed>>,
}

impl Writer {
    /// Stores `batch`, answering only once it is committed. Fails fast with `StoreError::Busy` when the
    /// queue's byte budget is used up, so receivers can push back instead of buffering without bound.
    pub async fn write(&self, batch: Batch, approx_bytes: usize) -> Result<Receipt, StoreError> {
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(self.permits(approx_bytes))
            .map_err(|_| StoreError::Busy)?;
        let (done, rx) = oneshot::channel();
        self.tx
            .try_send(Msg::Job(Job {
                batch,
                _permit: permit,
                done,
            }))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Busy,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        self.queued.fetch_add(1, Ordering::Relaxed);
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Like `write`, but waits for room instead of failing: for importers, which can afford to wait.
    pub async fn write_waiting(
        &self,
        batch: Batch,
        approx_bytes: usize,
    ) -> Result<Receipt, StoreError> {
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(self.permits(approx_bytes))
            .await
            .map_err(|_| StoreError::Closed)?;
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Msg::Job(Job {
                batch,
                _permit: permit,
                done,
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        self.queued.fetch_add(1, Ordering::Relaxed);
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn permits(&self, approx_bytes: usize) -> u32 {
        approx_bytes.clamp(1, self.budget_bytes) as u32
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
}

pub(super) fn spawn(
    conn: Connection,
    opts: &StoreOptions,
) -> Result<(Writer, std::thread::JoinHandle<()>), StoreError> {
    let (tx, rx) = mpsc::channel(opts.queue_requests.max(1));
    let (changes, _) = broadcast::channel(opts.live_buffer.max(16));
    let budget_bytes = opts.queue_bytes.clamp(1, u32::MAX as usize >> 1);
    let queued = Arc::new(AtomicUsize::new(0));
    let mut state = WriterState::new(conn, opts.max_attribute_bytes)?;
    let writer = Writer {
        tx,
        budget: Arc::new(Semaphore::new(budget_bytes)),
        budget_bytes,
        queued: queued.clone(),
        changes: changes.clone(),
    };
    let handle = std::thread::Builder::new()
        .name("aotel-writer".into())
        .spawn(move || state.run(rx, queued, changes))
        .map_err(StoreError::Io)?;
    Ok((writer, handle))
}

struct SessionState {
    title: Option<String>,
    agent: Option<String>,
    service: String,
    first_ns: u64,
    last_ns: u64,
    counters: Counters,
}

struct WriterState {
    conn: Connection,
    max_attr: usize,
    next_span_seq: i64,
    next_log_seq: i64,
    resources: HashMap<[u8; 16], i64>,
    scopes: HashMap<[u8; 16], i64>,
    operations: HashSet<(String, String, i32)>,
}

/// The per-transaction scratch: sessions touched and what the live hub will be told.
#[derive(Default)]
struct Pending {
    sessions: HashMap<String, SessionState>,
    session_traces: HashSet<(String, Vec<u8>)>,
    spans: Vec<SpanSummary>,
    logs: Vec<LogSummary>,
}

fn hash16(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

impl WriterState {
    fn new(conn: Connection, max_attr: usize) -> Result<Self, StoreError> {
        let mut state = WriterState {
            conn,
            max_attr,
            next_span_seq: 1,
            next_log_seq: 1,
            resources: HashMap::new(),
            scopes: HashMap::new(),
            operations: HashSet::new(),
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
        let hwm = |key: &str, table: &str| -> rusqlite::Result<i64> {
            let stored: Option<i64> = self
                .conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?;
            let max: Option<i64> =
                self.conn
                    .query_row(&format!("SELECT MAX(seq) FROM {table}"), [], |r| r.get(0))?;
            Ok(stored.unwrap_or(0).max(max.unwrap_or(0)) + 1)
        };
        self.next_span_seq = hwm("span_seq", "spans")?;
        self.next_log_seq = hwm("log_seq", "logs")?;
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
            let Some(Msg::Job(first)) = rx.blocking_recv() else {
                break;
            };
            let mut items = first.batch.span_count() + first.batch.log_count();
            let mut jobs = vec![first];
            while items < GROUP_ITEMS {
                match rx.try_recv() {
                    Ok(Msg::Job(job)) => {
                        items += job.batch.span_count() + job.batch.log_count();
                        jobs.push(job);
                    }
                    Ok(Msg::Stop) => {
                        stopping = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            queued.fetch_sub(jobs.len(), Ordering::Relaxed);
            let live = changes.receiver_count() > 0;
            let batches: Vec<&mut Batch> = jobs.iter_mut().map(|j| &mut j.batch).collect();
            match self.commit(batches, live) {
                Ok((receipts, committed)) => {
                    for (job, receipt) in jobs.into_iter().zip(receipts) {
                        let _ = job.done.send(Ok(receipt));
                    }
                    if let Some(c) = committed {
                        let _ = changes.send(Arc::new(c));
                    }
                }
                Err(err) => {
                    // One bad request must not fail the others that shared its transaction.
                    tracing::warn!(error = %err, jobs = jobs.len(), "group commit failed; retrying one by one");
                    if let Err(e) = self.reload() {
                        tracing::error!(error = %e, "writer could not re-read its state");
                    }
                    for mut job in jobs {
                        let result = self.commit(vec![&mut job.batch], live);
                        match result {
                            Ok((receipts, committed)) => {
                                let _ = job.done.send(Ok(receipts[0]));
                                if let Some(c) = committed {
                                    let _ = changes.send(Arc::new(c));
                                }
                            }
                            Err(e) => {
                                let _ = self.reload();
                                let _ = job.done.send(Err(e));
                            }
                        }
                    }
                }
            }
        }
        rx.close();
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "final checkpoint failed");
        }
        tracing::debug!("writer stopped");
    }

    fn commit(
        &mut self,
        batches: Vec<&mut Batch>,
        live: bool,
    ) -> Result<(Vec<Receipt>, Option<Committed>), StoreError> {
        let max_attr = self.max_attr;
        let mut pending = Pending::default();
        let mut receipts = Vec::with_capacity(batches.len());
        let tx = self.conn.transaction()?;
        let mut seqs = (self.next_span_seq, self.next_log_seq);
        let mut caches = Caches {
            resources: &mut self.resources,
            scopes: &mut self.scopes,
            operations: &mut self.operations,
        };
        for batch in batches {
            let mut receipt = Receipt::default();
            for rs in &mut batch.spans {
                let resource = rs.resource.take().unwrap_or_default();
                let service = facts::service_name(&resource.attributes);
                let resource_id = caches.resource(&tx, &resource, &rs.schema_url, &service)?;
                for ss in &mut rs.scope_spans {
                    let scope = ss.scope.take().unwrap_or_default();
                    let scope_id = caches.scope(&tx, &scope, &ss.schema_url)?;
                    for span in &mut ss.spans {
                        if ids::check_id(&span.trace_id, 16, "trace_id").is_err()
                            || ids::check_id(&span.span_id, 8, "span_id").is_err()
                        {
                            continue;
                        }
                        truncate(&mut span.attributes, max_attr);
                        for event in &mut span.events {
                            truncate(&mut event.attributes, max_attr);
                        }
                        let f = facts::span_facts(span, &resource.attributes, &service);
                        caches.operation(&tx, &service, &span.name, span.kind)?;
                        if store_span(
                            &tx,
                            span,
                            &f,
                            resource_id,
                            scope_id,
                            &mut seqs.0,
                            &mut pending,
                            live,
                        )? {
                            receipt.spans += 1;
                        }
                    }
                }
                rs.resource = Some(resource);
            }
            for rl in &mut batch.logs {
                let resource = rl.resource.take().unwrap_or_default();
                let service = facts::service_name(&resource.attributes);
                let resource_id = caches.resource(&tx, &resource, &rl.schema_url, &service)?;
                for sl in &mut rl.scope_logs {
                    let scope = sl.scope.take().unwrap_or_default();
                    let scope_id = caches.scope(&tx, &scope, &sl.schema_url)?;
                    for log in &mut sl.log_records {
                        truncate(&mut log.attributes, max_attr);
                        let f = facts::log_facts(log, &resource.attributes);
                        if store_log(
                            &tx,
                            log,
                            &f,
                            &service,
                            resource_id,
                            scope_id,
                            &mut seqs.1,
                            &mut pending,
                            live,
                        )? {
                            receipt.logs += 1;
                        }
                    }
                }
                rl.resource = Some(resource);
            }
            receipts.push(receipt);
        }
        let sessions = write_sessions(&tx, &mut pending, seqs.0 - 1)?;
        tx.execute(
            "INSERT INTO meta(key, value) VALUES ('span_seq', ?1), ('log_seq', ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![seqs.0 - 1, seqs.1 - 1],
        )?;
        tx.commit()?;
        (self.next_span_seq, self.next_log_seq) = seqs;
        let committed = live.then_some(Committed {
            sessions,
            spans: pending.spans,
            logs: pending.logs,
        });
        Ok((receipts, committed))
    }
}

struct Caches<'a> {
    resources: &'a mut HashMap<[u8; 16], i64>,
    scopes: &'a mut HashMap<[u8; 16], i64>,
    operations: &'a mut HashSet<(String, String, i32)>,
}

impl Caches<'_> {
    fn resource(
        &mut self,
        tx: &Transaction,
        resource: &Resource,
        schema_url: &str,
        service: &str,
    ) -> rusqlite::Result<i64> {
        let body = resource.encode_to_vec();
        let hash = hash16(&[&body, schema_url.as_bytes()]);
        if let Some(id) = self.resources.get(&hash) {
            return Ok(*id);
        }
        let id = intern(
            tx,
            "INSERT INTO resources(hash, service, schema_url, body) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(hash) DO UPDATE SET hash = hash RETURNING id",
            params![&hash[..], service, schema_url, body],
        )?;
        super::index::index_resource(tx, id, resource)?;
        if self.resources.len() > CACHE_LIMIT {
            self.resources.clear();
        }
        self.resources.insert(hash, id);
        Ok(id)
    }

    fn scope(
        &mut self,
        tx: &Transaction,
        scope: &InstrumentationScope,
        schema_url: &str,
    ) -> rusqlite::Result<i64> {
        let body = scope.encode_to_vec();
        let hash = hash16(&[&body, schema_url.as_bytes()]);
        if let Some(id) = self.scopes.get(&hash) {
            return Ok(*id);
        }
        let id = intern(
            tx,
            "INSERT INTO scopes(hash, name, version, schema_url, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(hash) DO UPDATE SET hash = hash RETURNING id",
            params![&hash[..], scope.name, scope.version, schema_url, body],
        )?;
        if self.scopes.len() > CACHE_LIMIT {
            self.scopes.clear();
        }
        self.scopes.insert(hash, id);
        Ok(id)
    }

    fn operation(
        &mut self,
        tx: &Transaction,
        service: &str,
        name: &str,
        kind: i32,
    ) -> rusqlite::Result<()> {
        let key = (service.to_string(), name.to_string(), kind);
        if self.operations.contains(&key) {
            return Ok(());
        }
        tx.prepare_cached(
            "INSERT OR IGNORE INTO operations(service, name, kind) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![service, name, kind])?;
        if self.operations.len() > CACHE_LIMIT {
            self.operations.clear();
        }
        self.operations.insert(key);
        Ok(())
    }
}

fn intern(tx: &Transaction, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<i64> {
    tx.prepare_cached(sql)?.query_row(p, |r| r.get(0))
}

const FLAG_IN_PROGRESS: i64 = 1;

/// Inserts or replaces one span; returns whether anything changed (an identical copy changes nothing).
#[allow(clippy::too_many_arguments)]
fn store_span(
    tx: &Transaction,
    span: &Span,
    f: &SpanFacts,
    resource_id: i64,
    scope_id: i64,
    next_seq: &mut i64,
    pending: &mut Pending,
    live: bool,
) -> Result<bool, StoreError> {
    let body = span.encode_to_vec();
    let status = span.status.as_ref().map(|s| s.code).unwrap_or(0);
    let parent = (!span.parent_span_id.is_empty()).then_some(&span.parent_span_id);
    let flags = if f.in_progress { FLAG_IN_PROGRESS } else { 0 };
    let seq = *next_seq;
    let values = params![
        seq,
        span.trace_id,
        span.span_id,
        parent,
        f.session,
        span.name,
        span.kind,
        span.start_time_unix_nano as i64,
        span.end_time_unix_nano as i64,
        status,
        f.service,
        f.operation,
        f.tool,
        f.agent,
        f.model,
        flags,
        f.usage.input_tokens,
        f.usage.output_tokens,
        f.usage.cache_read_tokens,
        f.usage.cache_creation_tokens,
        f.usage.cost_usd,
        resource_id,
        scope_id,
        body,
    ];
    let inserted = tx
        .prepare_cached(
            "INSERT INTO spans(seq, trace_id, span_id, parent_span_id, session, name, kind, start_ns, end_ns,
                status, service, operation, tool, agent, model, flags, input_tokens, output_tokens,
                cache_read_tokens, cache_creation_tokens, cost_usd, resource_id, scope_id, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
                ?20, ?21, ?22, ?23, ?24)
             ON CONFLICT(trace_id, span_id) DO NOTHING",
        )?
        .execute(values)?;
    if inserted == 0 {
        let Some((old, old_end, same)) = previous_copy(tx, span, &body, resource_id, scope_id)?
        else {
            return Ok(false);
        };
        if same {
            return Ok(false);
        }
        // The later copy wins; its seq moves forward so forwarders send the new version too.
        let (old_seq, old_body): (i64, Vec<u8>) = tx
            .prepare_cached("SELECT seq, body FROM spans WHERE trace_id = ?1 AND span_id = ?2")?
            .query_row(params![span.trace_id, span.span_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        super::index::unindex_span(tx, old_seq, &old_body)?;
        tx.prepare_cached(
            "UPDATE spans SET seq = ?1, parent_span_id = ?4, session = ?5, name = ?6, kind = ?7,
                start_ns = ?8, end_ns = ?9, status = ?10, service = ?11, operation = ?12, tool = ?13,
                agent = ?14, model = ?15, flags = ?16, input_tokens = ?17, output_tokens = ?18,
                cache_read_tokens = ?19, cache_creation_tokens = ?20, cost_usd = ?21, resource_id = ?22,
                scope_id = ?23, body = ?24
             WHERE trace_id = ?2 AND span_id = ?3",
        )?
        .execute(values)?;
        session_mut(tx, pending, &old.session, &old.service)?
            .counters
            .apply_span(&old, old_end, -1);
    }
    super::index::index_span(tx, seq, span)?;
    *next_seq += 1;
    let state = session_mut(tx, pending, &f.session, &f.service)?;
    state.counters.apply_span(f, span.end_time_unix_nano, 1);
    state.first_ns = state.first_ns.min(span.start_time_unix_nano);
    state.last_ns = state
        .last_ns
        .max(span.end_time_unix_nano.max(span.start_time_unix_nano));
    if f.title.is_some() {
        state.title.clone_from(&f.title);
    }
    if f.agent.is_some() && (state.agent.is_none() || (f.is_root && f.operation == Some(OP_AGENT)))
    {
        state.agent.clone_from(&f.agent);
    }
    pending
        .session_traces
        .insert((f.session.clone(), span.trace_id.clone()));
    if live {
        pending.spans.push(SpanSummary::new(seq, span, f));
    }
    Ok(true)
}

/// The stored copy's facts, its end time, and whether it is byte-for-byte what just arrived.
fn previous_copy(
    tx: &Transaction,
    span: &Span,
    body: &[u8],
    resource_id: i64,
    scope_id: i64,
) -> rusqlite::Result<Option<(SpanFacts, u64, bool)>> {
    tx.prepare_cached(
        "SELECT body, resource_id, scope_id, session, service, operation, tool, agent, model, flags, status,
            parent_span_id IS NULL, end_ns, input_tokens, output_tokens, cache_read_tokens,
            cache_creation_tokens, cost_usd
         FROM spans WHERE trace_id = ?1 AND span_id = ?2",
    )?
    .query_row(params![span.trace_id, span.span_id], |r| {
        let same = r.get_ref(0)?.as_blob()? == body
            && r.get::<_, i64>(1)? == resource_id
            && r.get::<_, i64>(2)? == scope_id;
        let operation: Option<String> = r.get(5)?;
        let facts = SpanFacts {
            session: r.get(3)?,
            service: r.get(4)?,
            operation: operation.as_deref().and_then(facts::known_operation),
            tool: r.get(6)?,
            agent: r.get(7)?,
            model: r.get(8)?,
            title: None,
            in_progress: r.get::<_, i64>(9)? & FLAG_IN_PROGRESS != 0,
            is_error: r.get::<_, i32>(10)? == 2,
            is_root: r.get(11)?,
            usage: Usage {
                input_tokens: r.get(13)?,
                output_tokens: r.get(14)?,
                cache_read_tokens: r.get(15)?,
                cache_creation_tokens: r.get(16)?,
                cost_usd: r.get(17)?,
            },
        };
        Ok((facts, r.get::<_, i64>(12)? as u64, same))
    })
    .optional()
}

#[allow(clippy::too_many_arguments)]
fn store_log(
    tx: &Transaction,
    log: &LogRecord,
    f: &LogFacts,
    service: &str,
    resource_id: i64,
    scope_id: i64,
    next_seq: &mut i64,
    pending: &mut Pending,
    live: bool,
) -> Result<bool, StoreError> {
    let body = log.encode_to_vec();
    let hash = hash16(&[&resource_id.to_le_bytes(), &scope_id.to_le_bytes(), &body]);
    let time = if log.time_unix_nano > 0 {
        log.time_unix_nano
    } else {
        log.observed_time_unix_nano
    };
    let seq = *next_seq;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO logs(seq, hash, time_ns, trace_id, span_id, session, severity, event_name, service,
                resource_id, scope_id, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT(hash) DO NOTHING",
        )?
        .execute(params![
            seq,
            &hash[..],
            time as i64,
            (!log.trace_id.is_empty()).then_some(&log.trace_id),
            (!log.span_id.is_empty()).then_some(&log.span_id),
            f.session,
            log.severity_number,
            f.event_name,
            service,
            resource_id,
            scope_id,
            body,
        ])?;
    if inserted == 0 {
        return Ok(false);
    }
    *next_seq += 1;
    if let Some(session) = &f.session {
        let state = session_mut(tx, pending, session, service)?;
        state.counters.apply_log(f);
        if time > 0 {
            state.first_ns = state.first_ns.min(time);
            state.last_ns = state.last_ns.max(time);
        }
        if !log.trace_id.is_empty() {
            pending
                .session_traces
                .insert((session.clone(), log.trace_id.clone()));
        }
    }
    if live {
        pending.logs.push(LogSummary::new(seq, log, f, service));
    }
    Ok(true)
}

fn session_mut<'p>(
    tx: &Transaction,
    pending: &'p mut Pending,
    key: &str,
    service: &str,
) -> rusqlite::Result<&'p mut SessionState> {
    let vacant = match pending.sessions.entry(key.to_string()) {
        Entry::Occupied(e) => return Ok(e.into_mut()),
        Entry::Vacant(v) => v,
    };
    let loaded = tx
        .prepare_cached("SELECT title, agent, service, first_ns, last_ns, counters FROM sessions WHERE key = ?1")?
        .query_row([key], |r| {
            let counters: String = r.get(5)?;
            Ok(SessionState {
                title: r.get(0)?,
                agent: r.get(1)?,
                service: r.get(2)?,
                first_ns: r.get::<_, i64>(3)? as u64,
                last_ns: r.get::<_, i64>(4)? as u64,
                counters: serde_json::from_str(&counters).unwrap_or_default(),
            })
        })
        .optional()?;
    Ok(vacant.insert(loaded.unwrap_or_else(|| SessionState {
        title: None,
        agent: None,
        service: service.to_string(),
        first_ns: u64::MAX,
        last_ns: 0,
        counters: Counters::default(),
    })))
}

fn write_sessions(
    tx: &Transaction,
    pending: &mut Pending,
    seq: i64,
) -> rusqlite::Result<Vec<SessionRow>> {
    for (session, trace_id) in pending.session_traces.drain() {
        let added = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO session_traces(session, trace_id) VALUES (?1, ?2)",
            )?
            .execute(params![session, trace_id])?;
        if added > 0 {
            if let Some(state) = pending.sessions.get_mut(&session) {
                state.counters.traces += 1;
            }
        }
    }
    let mut rows = Vec::with_capacity(pending.sessions.len());
    for (key, s) in pending.sessions.drain() {
        let first = if s.first_ns == u64::MAX {
            s.last_ns
        } else {
            s.first_ns
        };
        let counters = serde_json::to_string(&s.counters).unwrap_or_default();
        tx.prepare_cached(
            "INSERT INTO sessions(key, title, agent, service, status, first_ns, last_ns, updated_seq, counters)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(key) DO UPDATE SET title = excluded.title, agent = excluded.agent,
                status = excluded.status, first_ns = excluded.first_ns, last_ns = excluded.last_ns,
                updated_seq = excluded.updated_seq, counters = excluded.counters",
        )?
        .execute(params![
            key,
            s.title,
            s.agent,
            s.service,
            s.counters.status(),
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
            first,
            s.last_ns,
            seq,
            &s.counters,
        ));
    }
    Ok(rows)
}
