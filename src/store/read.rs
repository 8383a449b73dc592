//! Read-only queries over the store, on a small pool of read-only connections (WAL lets them run
//! beside the writer).

use super::session::{Counters, SessionRow};
use super::StoreError;
use crate::model::{
    InstrumentationScope, LogRecord, Resource, ResourceLogs, ResourceSpans, ScopeLogs, ScopeSpans,
    Span,
};
use prost::{DecodeError, Message};
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension, Row};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const POOL_MAX: usize = 8;

#[derive(Clone)]
pub struct Reader {
    path: PathBuf,
    pool: Arc<Mutex<Vec<Connection>>>,
}

/// A stored span with the resource and scope it came with.
#[derive(Debug, Clone)]
pub struct StoredSpan {
    pub seq: i64,
    pub session: String,
    pub service: String,
    pub span: Span,
    pub resource: Arc<(Resource, String)>,
    pub scope: Arc<(InstrumentationScope, String)>,
    pub resource_id: i64,
    pub scope_id: i64,
}

#[derive(Debug, Clone)]
pub struct StoredLog {
    pub seq: i64,
    pub session: Option<String>,
    pub service: String,
    pub log: LogRecord,
    pub resource: Arc<(Resource, String)>,
    pub scope: Arc<(InstrumentationScope, String)>,
    pub resource_id: i64,
    pub scope_id: i64,
}

/// Filters for the session list; every field narrows.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
pub struct SessionFilter {
    pub service: Option<String>,
    pub agent: Option<String>,
    pub status: Option<String>,
    /// Sessions active at or after this time (ns since the epoch).
    pub since_ns: Option<i64>,
    /// Sessions started before this time (ns since the epoch).
    pub until_ns: Option<i64>,
    /// Substring of the key, title or agent.
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl Reader {
    pub fn new(path: PathBuf) -> Reader {
        Reader {
            path,
            pool: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        if let Some(conn) = self.pool.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(conn)
    }

    /// Runs `f` on a pooled read-only connection off the async runtime.
    pub async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.connect()?;
            let out = f(&conn);
            if let Ok(mut pool) = this.pool.lock() {
                if pool.len() < POOL_MAX {
                    pool.push(conn);
                }
            }
            out
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    pub async fn sessions(
        &self,
        filter: SessionFilter,
    ) -> Result<(Vec<SessionRow>, i64), StoreError> {
        self.with(move |c| list_sessions(c, &filter)).await
    }

    pub async fn session(&self, key: String) -> Result<Option<SessionRow>, StoreError> {
        self.with(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions WHERE key = ?1"
            ))?
            .query_row([key], session_row)
            .optional()?)
        })
        .await
    }

    pub async fn session_spans(&self, key: String) -> Result<Vec<StoredSpan>, StoreError> {
        self.with(move |c| {
            spans_where(
                c,
                concat!(super::session_spans!(), " ORDER BY start_ns, seq"),
                [key],
            )
        })
        .await
    }

    pub async fn session_logs(&self, key: String) -> Result<Vec<StoredLog>, StoreError> {
        self.with(move |c| logs_where(c, "session = ?1 ORDER BY time_ns, seq", [key]))
            .await
    }

    pub async fn trace_spans(&self, trace_id: Vec<u8>) -> Result<Vec<StoredSpan>, StoreError> {
        self.with(move |c| spans_of_trace(c, &trace_id)).await
    }

    pub async fn trace_logs(&self, trace_id: Vec<u8>) -> Result<Vec<StoredLog>, StoreError> {
        self.with(move |c| logs_where(c, "trace_id = ?1 ORDER BY time_ns, seq", [trace_id]))
            .await
    }

    /// One span by its ids.
    pub async fn span(
        &self,
        trace_id: Vec<u8>,
        span_id: Vec<u8>,
    ) -> Result<Option<StoredSpan>, StoreError> {
        self.with(move |c| {
            let condition = concat!(super::trace_spans!(), " AND span_id = ?2");
            Ok(spans_where(c, condition, [trace_id, span_id])?.pop())
        })
        .await
    }
}

const SESSION_COLS: &str =
    "key, title, agent, service, first_ns, last_ns, updated_seq, counters, status";

fn session_row(r: &Row) -> rusqlite::Result<SessionRow> {
    let counters: String = r.get(7)?;
    let counters: Counters = serde_json::from_str(&counters).unwrap_or_default();
    Ok(SessionRow::new(
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(8)?,
        r.get::<_, i64>(4)? as u64,
        r.get::<_, i64>(5)? as u64,
        r.get(6)?,
        &counters,
    ))
}

fn list_sessions(c: &Connection, f: &SessionFilter) -> Result<(Vec<SessionRow>, i64), StoreError> {
    // Plain `?` placeholders number themselves in order, so clauses and values stay in step.
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(s) = &f.service {
        clauses.push("service = ?");
        args.push(s.clone().into());
    }
    if let Some(a) = &f.agent {
        clauses.push("agent = ?");
        args.push(a.clone().into());
    }
    if let Some(s) = &f.status {
        clauses.push("status = ?");
        args.push(s.clone().into());
    }
    if let Some(t) = f.since_ns {
        clauses.push("last_ns >= ?");
        args.push(t.into());
    }
    if let Some(t) = f.until_ns {
        clauses.push("first_ns < ?");
        args.push(t.into());
    }
    if let Some(q) = f.q.as_ref().filter(|q| !q.is_empty()) {
        let escaped = q
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%{escaped}%");
        clauses.push(
            "(key LIKE ? ESCAPE '\\' OR title LIKE ? ESCAPE '\\' OR agent LIKE ? ESCAPE '\\')",
        );
        args.extend(std::iter::repeat_n(
            rusqlite::types::Value::from(pattern),
            3,
        ));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let total: i64 = c.query_row(
        &format!("SELECT COUNT(*) FROM sessions {filter}"),
        params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    let limit = f.limit.unwrap_or(50).clamp(1, 1000);
    let offset = f.offset.unwrap_or(0).max(0);
    let sql = format!(
        "SELECT {SESSION_COLS} FROM sessions {filter} ORDER BY first_ns DESC, key LIMIT {limit} OFFSET {offset}"
    );
    let rows = c
        .prepare(&sql)?
        .query_map(params_from_iter(args.iter()), session_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((rows, total))
}

/// A decoded row of `spans` or `logs` with the resource and scope it came with.
struct Decoded<T> {
    seq: i64,
    session: Option<String>,
    service: String,
    item: T,
    resource: Arc<(Resource, String)>,
    scope: Arc<(InstrumentationScope, String)>,
    resource_id: i64,
    scope_id: i64,
}

/// How a stored span or log record is read back: its table, and the columns it takes after `seq,
/// session, service, resource_id, scope_id`.
trait Stored: Sized {
    const TABLE: &'static str;
    const COLUMNS: &'static str;
    fn read(row: &Row, first: usize) -> rusqlite::Result<Result<Self, DecodeError>>;
}

impl Stored for Span {
    const TABLE: &'static str = "spans";
    const COLUMNS: &'static str = super::body::SPAN_COLUMNS;
    fn read(row: &Row, first: usize) -> rusqlite::Result<Result<Self, DecodeError>> {
        Ok(super::body::SpanRow::read(row, first)?.decode())
    }
}

impl Stored for LogRecord {
    const TABLE: &'static str = "logs";
    const COLUMNS: &'static str = "body";
    fn read(row: &Row, first: usize) -> rusqlite::Result<Result<Self, DecodeError>> {
        Ok(LogRecord::decode(row.get_ref(first)?.as_blob()?))
    }
}

/// Loads and decodes the rows of `T`'s table matching a fixed SQL condition (never user text) with
/// bound parameters. A body that does not decode is skipped with a warning.
fn decoded_where<T: Stored, P: rusqlite::Params>(
    c: &Connection,
    condition: &str,
    p: P,
) -> Result<Vec<Decoded<T>>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT seq, session, service, resource_id, scope_id, {} FROM {} WHERE {condition}",
        T::COLUMNS,
        T::TABLE
    ))?;
    let raw = stmt
        .query_map(p, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                T::read(r, 5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut meta = MetaCache::default();
    let mut out = Vec::with_capacity(raw.len());
    for (seq, session, service, resource_id, scope_id, item) in raw {
        let Ok(item) = item else {
            tracing::warn!(seq, table = T::TABLE, "stored row does not decode; skipped");
            continue;
        };
        out.push(Decoded {
            seq,
            session,
            service,
            item,
            resource: meta.resource(c, resource_id)?,
            scope: meta.scope(c, scope_id)?,
            resource_id,
            scope_id,
        });
    }
    Ok(out)
}

/// The number `traces` gives trace `trace_id` (schema version 15), if it has any spans or logs.
pub(crate) fn trace_number(c: &Connection, trace_id: &[u8]) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached("SELECT tn FROM traces WHERE trace_id = ?1")?
        .query_row([trace_id], |r| r.get(0))
        .optional()
}

/// Every span of a trace, in start order.
pub(crate) fn spans_of_trace(
    c: &Connection,
    trace_id: &[u8],
) -> Result<Vec<StoredSpan>, StoreError> {
    spans_where(
        c,
        concat!(super::trace_spans!(), " ORDER BY start_ns, seq"),
        [trace_id],
    )
}

/// Loads spans matching a fixed SQL condition (never user text) with bound parameters.
pub(crate) fn spans_where<P: rusqlite::Params>(
    c: &Connection,
    condition: &str,
    p: P,
) -> Result<Vec<StoredSpan>, StoreError> {
    Ok(decoded_where::<Span, P>(c, condition, p)?
        .into_iter()
        .map(|d| StoredSpan {
            seq: d.seq,
            session: d.session.unwrap_or_default(),
            service: d.service,
            span: d.item,
            resource: d.resource,
            scope: d.scope,
            resource_id: d.resource_id,
            scope_id: d.scope_id,
        })
        .collect())
}

pub(crate) fn logs_where<P: rusqlite::Params>(
    c: &Connection,
    condition: &str,
    p: P,
) -> Result<Vec<StoredLog>, StoreError> {
    Ok(decoded_where::<LogRecord, P>(c, condition, p)?
        .into_iter()
        .map(|d| StoredLog {
            seq: d.seq,
            session: d.session,
            service: d.service,
            log: d.item,
            resource: d.resource,
            scope: d.scope,
            resource_id: d.resource_id,
            scope_id: d.scope_id,
        })
        .collect())
}

#[derive(Default)]
struct MetaCache {
    resources: HashMap<i64, Arc<(Resource, String)>>,
    scopes: HashMap<i64, Arc<(InstrumentationScope, String)>>,
}

impl MetaCache {
    fn resource(&mut self, c: &Connection, id: i64) -> rusqlite::Result<Arc<(Resource, String)>> {
        if let Some(r) = self.resources.get(&id) {
            return Ok(r.clone());
        }
        let (body, url): (Vec<u8>, String) = c
            .prepare_cached("SELECT body, schema_url FROM resources WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let r = Arc::new((Resource::decode(body.as_slice()).unwrap_or_default(), url));
        self.resources.insert(id, r.clone());
        Ok(r)
    }

    fn scope(
        &mut self,
        c: &Connection,
        id: i64,
    ) -> rusqlite::Result<Arc<(InstrumentationScope, String)>> {
        if let Some(s) = self.scopes.get(&id) {
            return Ok(s.clone());
        }
        let (body, url): (Vec<u8>, String) = c
            .prepare_cached("SELECT body, schema_url FROM scopes WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let s = Arc::new((
            InstrumentationScope::decode(body.as_slice()).unwrap_or_default(),
            url,
        ));
        self.scopes.insert(id, s.clone());
        Ok(s)
    }
}

/// One OTLP resource-level container (`ResourceSpans`, `ResourceLogs`) and how items go into it.
trait Regroup: Sized {
    type Item;
    type Scoped;
    fn new(resource: &(Resource, String)) -> Self;
    fn new_scope(scope: &(InstrumentationScope, String)) -> Self::Scoped;
    fn scopes(&mut self) -> &mut Vec<Self::Scoped>;
    fn push(scoped: &mut Self::Scoped, item: Self::Item);
}

impl Regroup for ResourceSpans {
    type Item = Span;
    type Scoped = ScopeSpans;
    fn new(r: &(Resource, String)) -> Self {
        ResourceSpans {
            resource: Some(r.0.clone()),
            schema_url: r.1.clone(),
            scope_spans: Vec::new(),
        }
    }
    fn new_scope(s: &(InstrumentationScope, String)) -> ScopeSpans {
        ScopeSpans {
            scope: Some(s.0.clone()),
            schema_url: s.1.clone(),
            spans: Vec::new(),
        }
    }
    fn scopes(&mut self) -> &mut Vec<ScopeSpans> {
        &mut self.scope_spans
    }
    fn push(scoped: &mut ScopeSpans, item: Span) {
        scoped.spans.push(item);
    }
}

impl Regroup for ResourceLogs {
    type Item = LogRecord;
    type Scoped = ScopeLogs;
    fn new(r: &(Resource, String)) -> Self {
        ResourceLogs {
            resource: Some(r.0.clone()),
            schema_url: r.1.clone(),
            scope_logs: Vec::new(),
        }
    }
    fn new_scope(s: &(InstrumentationScope, String)) -> ScopeLogs {
        ScopeLogs {
            scope: Some(s.0.clone()),
            schema_url: s.1.clone(),
            log_records: Vec::new(),
        }
    }
    fn scopes(&mut self) -> &mut Vec<ScopeLogs> {
        &mut self.scope_logs
    }
    fn push(scoped: &mut ScopeLogs, item: LogRecord) {
        scoped.log_records.push(item);
    }
}

type Placed<T> = (
    i64,
    Arc<(Resource, String)>,
    i64,
    Arc<(InstrumentationScope, String)>,
    T,
);

/// Groups items by resource and then scope, in first-seen order.
fn regroup<G: Regroup>(items: impl IntoIterator<Item = Placed<G::Item>>) -> Vec<G> {
    let mut out: Vec<G> = Vec::new();
    let mut index: HashMap<i64, (usize, HashMap<i64, usize>)> = HashMap::new();
    for (resource_id, resource, scope_id, scope, item) in items {
        let (ri, scopes) = index.entry(resource_id).or_insert_with(|| {
            out.push(G::new(&resource));
            (out.len() - 1, HashMap::new())
        });
        let group = &mut out[*ri];
        let si = *scopes.entry(scope_id).or_insert_with(|| {
            group.scopes().push(G::new_scope(&scope));
            group.scopes().len() - 1
        });
        G::push(&mut group.scopes()[si], item);
    }
    out
}

/// Rebuilds OTLP from stored spans.
pub fn to_resource_spans(spans: Vec<StoredSpan>) -> Vec<ResourceSpans> {
    regroup(
        spans
            .into_iter()
            .map(|s| (s.resource_id, s.resource, s.scope_id, s.scope, s.span)),
    )
}

/// Rebuilds OTLP from stored log records.
pub fn to_resource_logs(logs: Vec<StoredLog>) -> Vec<ResourceLogs> {
    regroup(
        logs.into_iter()
            .map(|l| (l.resource_id, l.resource, l.scope_id, l.scope, l.log)),
    )
}
