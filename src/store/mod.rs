//! The embedded SQLite store: one writer thread that group-commits, read-only connections for queries.

pub mod body;
pub mod index;
mod prepare;
mod read;
pub mod retention;
pub mod schema;
pub mod session;
pub mod stats;
mod writer;

pub(crate) use read::{spans_of_trace, spans_where, trace_number};

/// SQL for "the spans of the traces numbered by `$tns`" (a literal subquery or `?N`, for
/// `concat!`). Spans have no index by trace: each commit notes the seq ranges it gave each trace's
/// spans in `trace_runs` (schema version 17), one row per trace per commit where an index entry per
/// span cost the writer a fifth of its work. A range holds only its trace's spans: seqs are given in
/// order and never again, a run grows only by the next seq, and a replaced copy moves to a new seq of
/// its own trace's run, leaving a gap in the old range. So the subquery reads no span's columns.
macro_rules! runs_spans {
    ($tns:literal) => {
        concat!(
            "seq IN (SELECT s.seq FROM trace_runs r JOIN spans s
                ON s.seq BETWEEN r.first_seq AND r.last_seq
              WHERE r.tn IN ",
            $tns,
            ")"
        )
    };
}

/// SQL for "the spans of session `?1`" (a literal, for `concat!`). Spans have no session index, which
/// cost every span an insert: a session's traces (`session_traces`, one row per trace, by the session's
/// number and the trace's) lead to its spans through the traces' runs.
macro_rules! session_spans {
    () => {
        concat!(
            $crate::store::runs_spans!(
                "(SELECT tn FROM session_traces WHERE session = (SELECT num FROM sessions WHERE key = ?1))"
            ),
            " AND session = ?1"
        )
    };
}

/// SQL for "the spans of trace id `?1`" (a literal, for `concat!`): spans are found by their trace's
/// number (schema version 15), which `traces` gives; a trace it does not know has none.
macro_rules! trace_spans {
    () => {
        $crate::store::runs_spans!("(SELECT tn FROM traces WHERE trace_id = ?1)")
    };
}

/// SQL for "the spans of trace number `?1`" (a literal, for `concat!`).
macro_rules! tn_spans {
    () => {
        $crate::store::runs_spans!("(?1)")
    };
}
pub use prepare::InPlace;
pub use read::{to_resource_logs, to_resource_spans, Reader, SessionFilter, StoredLog, StoredSpan};
pub use session::SessionRow;
pub use writer::{FileOffset, Receipt, Reservation, Writer};
pub(crate) use {runs_spans, session_spans, tn_spans, trace_spans};

use crate::model::attrs::Lookup;
use crate::model::facts::{LogFacts, SpanFacts};
use crate::model::view::{kv_refs, SpanRef};
use crate::model::{ids, LogRecord, Span};
use rusqlite::Connection;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the ingest queue is full; retry later")]
    Busy,
    #[error("the store is shutting down")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "database {path} has schema version {found}, newer than this build understands ({known})"
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error("background task failed: {0}")]
    Join(String),
}

/// SQLite's `synchronous` level for the write connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// WAL + `synchronous=NORMAL`: a commit survives the process being killed; a power cut may lose the
    /// last transactions (never corrupts the file).
    #[default]
    Normal,
    /// WAL + `synchronous=FULL`: every acknowledged commit also survives a power cut, at some throughput.
    Full,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(Durability::Normal),
            "full" => Ok(Durability::Full),
            other => Err(format!(
                "unknown durability {other:?}: expected normal or full"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Bytes of requests that may wait for the writer before ingest answers "busy".
    pub queue_bytes: usize,
    /// Requests that may wait for the writer.
    pub queue_requests: usize,
    /// String and bytes attribute values longer than this are cut (and marked).
    pub max_attribute_bytes: usize,
    /// Commits the live hub may lag behind before a slow subscriber misses updates.
    pub live_buffer: usize,
    /// How long a session known only from log events stays running after its last record.
    pub session_idle: std::time::Duration,
    /// Of the database file, the newest this many bytes stay in the OS page cache after a checkpoint;
    /// older pages that this run wrote are dropped once durable (see `CacheTrim`). None keeps them.
    pub page_cache_keep: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Normal,
            queue_bytes: 256 << 20,
            queue_requests: 4096,
            max_attribute_bytes: 256 << 10,
            live_buffer: 1024,
            session_idle: std::time::Duration::from_secs(600),
            page_cache_keep: Some(256 << 20),
        }
    }
}

/// An open store: the writer handle, readers, and the writer thread to wait for on close.
pub struct Store {
    pub writer: Writer,
    pub reader: Reader,
    thread: std::thread::JoinHandle<()>,
    checkpointer: Checkpointer,
}

impl Store {
    /// Commits everything accepted so far and waits for the writer thread to finish.
    pub async fn close(self) -> Result<(), StoreError> {
        self.writer.stop().await;
        drop(self.writer);
        let mut checkpointer = self.checkpointer;
        checkpointer.stop();
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
            .map_err(|_| StoreError::Join("the writer thread panicked".into()))
    }
}

/// Opens (creating and migrating as needed) the database and starts the writer thread.
pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut conn = Connection::open(path)?;
    conn.busy_handler(Some(writer_busy))?;
    // Every write transaction takes the write lock at BEGIN. A deferred one takes it at its first write,
    // after a read; if a RESTART checkpoint holds it then, SQLite answers SQLITE_BUSY at once without
    // asking `writer_busy` (a read transaction cannot wait for a writer). That failed whole group
    // commits under load ("database is locked") and retried their requests one by one.
    conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
    // Rows are ~1 KiB (attributes inline): larger pages mean fewer splits and WAL frames per span.
    // It only takes effect on a new file, before the first table exists.
    conn.pragma_update(None, "page_size", 16384)?;
    // Lets retention hand deleted pages back to the file system (also only on a new file).
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match opts.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "cache_size", -32768)?;
    // Checkpoints run on their own thread (below), so commits do not do that work; a transaction that
    // begins just as one has copied the whole WAL can still wait for its syncs (docs/PERFORMANCE.md).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // When a checkpoint lets the WAL start over, the next commit cuts a file larger than this back,
    // and the writer waits for that truncate (8-68 ms under load with the file system's discard). Below
    // it, commits overwrite blocks the file already has instead of growing it again after every cut; an
    // idle store truncates it (`Checkpointer`).
    conn.pragma_update(None, "journal_size_limit", 4 * WAL_RESTART_BYTES)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    let found = schema::version(&conn)?;
    if found > schema::MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: schema::MIGRATIONS.len(),
        });
    }
    schema::migrate(&mut conn)?;
    index::backfill(&mut conn)?;
    index::backfill_keys(&mut conn)?;
    index::catch_up(&mut conn)?;
    let reader = Reader::new(path.to_path_buf());
    let checkpointer = Checkpointer::spawn(path, opts.page_cache_keep)?;
    let (writer, thread) = writer::spawn(conn, opts)?;
    Ok(Store {
        writer,
        reader,
        thread,
        checkpointer,
    })
}

/// How the writer waits for a lock (a RESTART checkpoint holds the write lock while it copies the last
/// frames): in short steps for up to 10 s. SQLite's own busy timeout sleeps in steps of up to 100 ms,
/// so a lock held for 2 ms could stall every ingest request for 50.
fn writer_busy(attempt: i32) -> bool {
    const STEP: std::time::Duration = std::time::Duration::from_micros(200);
    if attempt >= 50_000 {
        return false;
    }
    std::thread::sleep(STEP);
    true
}

/// Copies committed pages from the WAL into the database file on its own connection, so the writer's
/// commits never pay for a checkpoint. Passive checkpoints never take the write lock, but under steady
/// writes they never catch up completely, so the WAL would keep growing: past `WAL_RESTART_BYTES` a
/// RESTART (see below) makes the next commits start it over. Once
/// nothing has been written for `IDLE_TRUNCATE` ticks, a TRUNCATE gives the WAL's disk space back.
struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// Every RESTART holds the writer while it copies and syncs what the last passive copy left, so how
/// often they come decides how long commits stall; the WAL grows at ~300 MB/s at saturation here. At
/// 256 MiB instead of 128, sustained load ran 4% faster (7 of 8 alternating pairs) with a third less
/// time waiting for the lock, and the WAL's peaks stayed about where 128's outliers had been
/// (docs/PERFORMANCE.md, fifteenth round).
const WAL_RESTART_BYTES: i64 = 256 << 20;
const WAL_MAX_BYTES: i64 = 3 * WAL_RESTART_BYTES;
/// A passive checkpoint this short leaves a RESTART little to copy while the writer waits.
const RESTART_AFTER_PASSIVE: std::time::Duration = std::time::Duration::from_millis(20);
const IDLE_TRUNCATE: u32 = 25;
/// Checkpoints grow the database file this much at a time (fallocate).
const DB_CHUNK_BYTES: std::ffi::c_int = 32 << 20;

impl Checkpointer {
    fn spawn(path: &Path, keep: Option<u64>) -> Result<Checkpointer, StoreError> {
        use std::sync::atomic::Ordering;
        let conn = Connection::open(path)?;
        let mut chunk: std::ffi::c_int = DB_CHUNK_BYTES;
        conn.file_control(
            Some(rusqlite::MAIN_DB),
            rusqlite::FileControl::ChunkSize(&mut chunk),
        )?;
        // Short: a RESTART or TRUNCATE that finds the writer busy or a reader on the old WAL gives up
        // and tries again on a later tick, instead of keeping the writer out while it waits.
        conn.busy_timeout(std::time::Duration::from_millis(50))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let mut trim = match keep {
            Some(keep) => Some(CacheTrim::new(path, keep, pages_bytes(&conn)?)?),
            None => None,
        };
        let thread = std::thread::Builder::new()
            .name("aotel-checkpoint".into())
            .spawn(move || {
                let mut checkpoint = |mode: &str| {
                    let sql = format!("PRAGMA wal_checkpoint({mode})");
                    let done = conn.query_row(&sql, [], |r| {
                        Ok((
                            r.get::<_, i64>(1)? * page_size,
                            r.get::<_, i64>(2)? * page_size,
                        ))
                    });
                    if let Err(e) = &done {
                        tracing::debug!(error = %e, mode, "checkpoint did not run");
                    }
                    let done = done.ok();
                    // Everything copied: the file holds every page (`durable` makes sure it is synced).
                    if let (Some((wal, copied)), Some(trim)) = (done, trim.as_mut()) {
                        if wal > 0 && copied == wal {
                            if let Ok(used) = pages_bytes(&conn) {
                                trim.durable(used);
                            }
                        }
                    }
                    done
                };
                let (mut last, mut idle, mut behind) = (0, 0, 0);
                let mut wait = CHECKPOINT_EVERY;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(wait);
                    wait = CHECKPOINT_EVERY;
                    // Bytes in the WAL and bytes of it already copied into the database.
                    let started = std::time::Instant::now();
                    let Some((wal, copied)) = checkpoint("PASSIVE") else {
                        continue;
                    };
                    if wal > WAL_RESTART_BYTES {
                        // A RESTART keeps the writer out while it copies what is left: what arrived
                        // since the last passive copy began. So passive copies (which never take the
                        // write lock) run back to back, each shorter than the one before, until one
                        // copied everything it saw quickly; then what a RESTART has left is small.
                        // Writes faster than the copies can go on without such a moment: past
                        // `WAL_MAX_BYTES` the RESTART runs anyway, so the WAL stays bounded at the cost
                        // of one longer wait.
                        let quick = copied == wal && started.elapsed() <= RESTART_AFTER_PASSIVE;
                        if quick || wal > WAL_MAX_BYTES {
                            checkpoint("RESTART");
                        } else if copied != behind {
                            // Progress; no progress means a reader holds the WAL: wait for the tick.
                            wait = std::time::Duration::ZERO;
                        }
                        behind = copied;
                        continue;
                    }
                    idle = if wal == last { idle + 1 } else { 0 };
                    last = wal;
                    // Retried every tick until it runs: a reader may hold the WAL for a moment.
                    if idle >= IDLE_TRUNCATE && wal > 0 && copied == wal {
                        checkpoint("TRUNCATE");
                    }
                }
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The bytes of the database file that hold pages, free ones included (the file itself is grown ahead,
/// `DB_CHUNK_BYTES`; `retention::used_bytes` leaves the free ones out).
pub fn pages_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|b| b.max(0) as u64)
}

/// Drops pages of the database file from the OS page cache once they are durable and more than `keep`
/// bytes behind the file's end, each region once: the span rows that make up most of the file are
/// rarely read again soon, and every page the file grows by otherwise takes fresh memory from the
/// kernel. On the virtual machines this runs on, such fresh pages cost 5-8 times more to fill than
/// recycled ones (writing into a new file: ~0.4-0.5 GB/s; right after another file's pages were
/// dropped: ~3 GB/s), and filling them was most of the checkpointer's CPU (docs/PERFORMANCE.md).
/// Pages read or written again later stay cached: a region is dropped only when it leaves the window.
struct CacheTrim {
    file: std::fs::File,
    keep: u64,
    /// Every byte below this was dropped already (or was there before this run).
    done: u64,
}

impl CacheTrim {
    fn new(path: &Path, keep: u64, used: u64) -> std::io::Result<CacheTrim> {
        Ok(CacheTrim {
            file: std::fs::File::open(path)?,
            keep,
            done: used,
        })
    }

    /// The file's first `used` bytes are durable.
    fn durable(&mut self, used: u64) {
        // Retention can shrink the file; what grows again is new.
        self.done = self.done.min(used);
        let upto = used.saturating_sub(self.keep);
        if upto > self.done {
            // A checkpoint that copied the whole WAL syncs the file only if nothing was committed
            // while it copied; the kernel keeps dirty pages however it is advised, and this region
            // is never tried again. Cheap when the checkpoint did sync.
            if let Err(e) = self.file.sync_data() {
                tracing::debug!(error = %e, "sync before dropping cached pages failed");
            }
            drop_cached(&self.file, self.done, upto - self.done);
            self.done = upto;
        }
    }
}

#[cfg(target_os = "linux")]
fn drop_cached(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is `file`'s, open for the whole call; the call only advises the kernel,
    // which drops clean cached pages and never loses data.
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        tracing::debug!(rc, "posix_fadvise(DONTNEED) on the database file failed");
    }
}

#[cfg(not(target_os = "linux"))]
fn drop_cached(_: &std::fs::File, _: u64, _: u64) {}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What one commit changed, for the live view.
#[derive(Debug, Clone, Serialize)]
pub struct Committed {
    pub sessions: Vec<SessionRow>,
    pub spans: Vec<SpanSummary>,
    pub logs: Vec<LogSummary>,
    /// The highest span and log sequence numbers once this commit is in: a reader that has seen both
    /// has seen the commit.
    pub span_seq: i64,
    pub log_seq: i64,
    /// False when some stored span or log has no summary in `spans`/`logs` (it was prepared before
    /// anyone listened, or while spans were not wanted): a view of spans must then re-read the store.
    pub complete: bool,
    /// The store changed in a way no delta describes (retention deleted sessions, idle sessions were
    /// marked finished): every view re-reads it.
    pub reread: bool,
}

/// A span as lists and waterfalls show it, without its attributes.
#[derive(Debug, Clone, Serialize)]
pub struct SpanSummary {
    pub seq: i64,
    pub session: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: i32,
    pub start_unix_nano: String,
    pub end_unix_nano: String,
    pub duration_ms: f64,
    pub status: &'static str,
    pub service: String,
    pub operation: Option<&'static str>,
    pub tool: Option<String>,
    pub agent: Option<String>,
    pub model: Option<String>,
    pub in_progress: bool,
    /// For tool calls, one line saying what the call did (its command, path or pattern), so lists and
    /// waterfalls can show it without loading every span's attributes.
    pub preview: Option<String>,
}

pub fn status_name(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

impl SpanSummary {
    /// The summary of a decoded span.
    pub fn of(seq: i64, span: &Span, f: &SpanFacts) -> SpanSummary {
        let attrs = kv_refs(&span.attributes);
        SpanSummary::new(seq, &SpanRef::of(span, &attrs), f)
    }

    pub fn new(seq: i64, span: &SpanRef, f: &SpanFacts) -> SpanSummary {
        SpanSummary {
            seq,
            session: f.session.clone(),
            trace_id: ids::to_hex(span.trace_id),
            span_id: ids::to_hex(span.span_id),
            parent_span_id: (!span.parent_span_id.is_empty())
                .then(|| ids::to_hex(span.parent_span_id)),
            name: span.name.to_string(),
            kind: span.kind,
            start_unix_nano: span.start_time_unix_nano.to_string(),
            end_unix_nano: span.end_time_unix_nano.to_string(),
            duration_ms: span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano) as f64
                / 1e6,
            status: status_name(span.status_code),
            service: f.service.clone(),
            operation: f.operation,
            tool: f.tool.clone(),
            agent: f.agent.clone(),
            model: f.model.clone(),
            in_progress: f.in_progress,
            preview: (f.operation == Some(crate::model::facts::OP_TOOL))
                .then(|| tool_preview(Lookup::new(span.attributes)))
                .flatten(),
        }
    }
}

const PREVIEW_CHARS: usize = 160;

/// The most telling argument of a tool call, on one line and cut to `PREVIEW_CHARS` characters.
fn tool_preview(attrs: Lookup) -> Option<String> {
    const ARGS: &[&str] = &[
        "gen_ai.tool.call.arguments",
        "input.value",
        "tool.arguments",
    ];
    const FIELDS: &[&str] = &[
        "command",
        "file_path",
        "pattern",
        "path",
        "url",
        "query",
        "description",
        "prompt",
    ];
    let raw = attrs.first_str(ARGS)?;
    let picked = if raw.len() <= 64 << 10 && raw.trim_start().starts_with('{') {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw)
            .ok()
            .and_then(|m| {
                FIELDS
                    .iter()
                    .find_map(|k| m.get(*k).and_then(|v| v.as_str()).map(str::to_string))
                    .or_else(|| m.values().find_map(|v| v.as_str().map(str::to_string)))
            })
    } else {
        None
    };
    let text = picked.as_deref().unwrap_or(raw);
    let mut out = String::with_capacity(text.len().min(PREVIEW_CHARS * 2));
    for (n, word) in text.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > PREVIEW_CHARS {
            break;
        }
    }
    if out.chars().count() > PREVIEW_CHARS {
        out = out.chars().take(PREVIEW_CHARS - 1).collect();
        out.push('…');
    }
    (!out.is_empty()).then_some(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct LogSummary {
    pub seq: i64,
    pub session: Option<String>,
    pub time_unix_nano: String,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub severity_number: i32,
    pub severity_text: String,
    pub event_name: Option<String>,
    pub service: String,
    pub body: serde_json::Value,
}

impl LogSummary {
    pub fn new(seq: i64, log: &LogRecord, f: &LogFacts, service: &str) -> LogSummary {
        let time = if log.time_unix_nano > 0 {
            log.time_unix_nano
        } else {
            log.observed_time_unix_nano
        };
        LogSummary {
            seq,
            session: f.session.clone(),
            time_unix_nano: time.to_string(),
            trace_id: (!log.trace_id.is_empty()).then(|| ids::to_hex(&log.trace_id)),
            span_id: (!log.span_id.is_empty()).then(|| ids::to_hex(&log.span_id)),
            severity_number: log.severity_number,
            severity_text: log.severity_text.clone(),
            event_name: f.event_name.clone(),
            service: service.to_string(),
            body: crate::model::attrs::to_json(log.body.as_ref()),
        }
    }
}
