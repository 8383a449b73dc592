//! Where each destination stands, kept in SQLite (migration 6): destinations, their cursors and dead
//! letters. Writes run on the one writer (`Writer::run_on_writer`); reads use the read-only `Reader`.
//!
//! For retention: `forward_cursors` has one row per configured destination; `span_seq` / `log_seq` are
//! the highest seq of `spans` / `logs` the destination accepted (or that was dead-lettered), so what it
//! still needs is `seq > cursor`, and rows with `seq <= MIN(span_seq)` are delivered everywhere. A
//! signal a destination does not forward (`--forward-signals`) has the cursor `NOT_FORWARDED` (i64::MAX):
//! it holds nothing back. A destination no longer configured moves its cursors to
//! `forward_destinations.parked_*` and leaves `forward_cursors`, so it holds nothing back either;
//! configuring the URL again resumes there. When a size cap forces deleting rows a destination has not
//! received, the retention job should record them (e.g. a dead letter of kind `dropped` with the seq
//! range and count) so the API shows them.

use super::Signal;
use crate::model::time::now_ns;
use crate::store::StoreError;
use rusqlite::{params, Connection, Transaction};
use serde::Serialize;

/// The cursor of a signal that is not forwarded to a destination.
pub const NOT_FORWARDED: i64 = i64::MAX;

/// A destination to register and the signals it gets.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub url: String,
    pub spans: bool,
    pub logs: bool,
}

/// Registers the configured destinations: known ones resume at their cursors, new ones (and signals
/// newly switched on) start at the current end of the store (older data is what `aotel replay` is
/// for). Parks the cursors of destinations no longer configured. Returns (id, span cursor, log cursor)
/// per destination, in order.
pub fn register(tx: &Transaction, wanted: &[Wanted]) -> Result<Vec<(i64, i64, i64)>, StoreError> {
    let now = now_ns() as i64;
    tx.execute(
        "UPDATE forward_destinations SET active = 0,
            parked_span_seq = (SELECT span_seq FROM forward_cursors WHERE destination = id),
            parked_log_seq = (SELECT log_seq FROM forward_cursors WHERE destination = id)
         WHERE id IN (SELECT destination FROM forward_cursors)",
        [],
    )?;
    tx.execute("DELETE FROM forward_cursors", [])?;
    let span_end: i64 =
        tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM spans", [], |r| r.get(0))?;
    let log_end: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM logs", [], |r| r.get(0))?;
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        let (id, parked_span, parked_log): (i64, Option<i64>, Option<i64>) = tx.query_row(
            "INSERT INTO forward_destinations(url, active, added_ns, seen_ns) VALUES (?1, 1, ?2, ?2)
             ON CONFLICT(url) DO UPDATE SET active = 1, seen_ns = excluded.seen_ns
             RETURNING id, parked_span_seq, parked_log_seq",
            params![w.url, now],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let pick = |on: bool, parked: Option<i64>, end: i64| match (on, parked) {
            (false, _) => NOT_FORWARDED,
            (true, Some(p)) if p != NOT_FORWARDED => p,
            (true, _) => end,
        };
        let spans = pick(w.spans, parked_span, span_end);
        let logs = pick(w.logs, parked_log, log_end);
        tx.execute(
            "INSERT OR REPLACE INTO forward_cursors(destination, span_seq, log_seq, updated_ns) VALUES (?1, ?2, ?3, ?4)",
            params![id, spans, logs, now],
        )?;
        tx.execute(
            "UPDATE forward_destinations SET parked_span_seq = NULL, parked_log_seq = NULL WHERE id = ?1",
            [id],
        )?;
        out.push((id, spans, logs));
    }
    Ok(out)
}

/// Moves a cursor forward (never back: a stale update after a newer one changes nothing).
pub fn advance(
    tx: &Transaction,
    destination: i64,
    signal: Signal,
    seq: i64,
) -> Result<(), StoreError> {
    let sql = match signal {
        Signal::Spans => {
            "UPDATE forward_cursors SET span_seq = ?2, updated_ns = ?3 WHERE destination = ?1 AND span_seq < ?2"
        }
        Signal::Logs => {
            "UPDATE forward_cursors SET log_seq = ?2, updated_ns = ?3 WHERE destination = ?1 AND log_seq < ?2"
        }
    };
    tx.prepare_cached(sql)?
        .execute(params![destination, seq, now_ns() as i64])?;
    Ok(())
}

/// Runs `f` in one transaction on the writer thread.
pub async fn on_writer<T, F>(writer: &crate::store::Writer, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Transaction) -> Result<T, StoreError> + Send + 'static,
{
    writer
        .run_on_writer(move |conn| {
            let tx = conn.transaction()?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
        .await
}

/// A batch (or part of one) a destination refused for good.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub destination: String,
    pub signal: &'static str,
    /// `rejected`: the whole batch was refused; `partial`: accepted, but `rejected` items were refused
    /// through OTLP `partial_success`.
    pub kind: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub items: i64,
    pub rejected: i64,
    pub reason: String,
    pub at_unix_nano: String,
}

/// What to record about a refused batch.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub kind: &'static str,
    pub first_seq: i64,
    pub last_seq: i64,
    pub items: i64,
    pub rejected: i64,
    pub reason: String,
}

pub fn record(
    tx: &Transaction,
    destination: i64,
    signal: Signal,
    d: &NewDeadLetter,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO forward_dead_letters(destination, signal, kind, first_seq, last_seq, items, rejected, reason, at_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        destination,
        signal.as_str(),
        d.kind,
        d.first_seq,
        d.last_seq,
        d.items,
        d.rejected,
        d.reason,
        now_ns() as i64
    ])?;
    Ok(())
}

/// Newest first; `destination` narrows to one URL.
pub fn dead_letters(
    c: &Connection,
    destination: Option<&str>,
    limit: i64,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT d.id, f.url, d.signal, d.kind, d.first_seq, d.last_seq, d.items, d.rejected, d.reason, d.at_ns
         FROM forward_dead_letters d JOIN forward_destinations f ON f.id = d.destination
         WHERE ?1 IS NULL OR f.url = ?1
         ORDER BY d.id DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![destination, limit], |r| {
            let signal: String = r.get(2)?;
            Ok(DeadLetter {
                id: r.get(0)?,
                destination: r.get(1)?,
                signal: Signal::parse(&signal)
                    .map(Signal::as_str)
                    .unwrap_or("spans"),
                kind: r.get(3)?,
                first_seq: r.get(4)?,
                last_seq: r.get(5)?,
                items: r.get(6)?,
                rejected: r.get(7)?,
                reason: r.get(8)?,
                at_unix_nano: r.get::<_, i64>(9)?.to_string(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// (dead-letter records, items in them) per signal of one destination.
pub fn dead_letter_counts(
    c: &Connection,
    destination: i64,
    signal: Signal,
) -> Result<(i64, i64), StoreError> {
    Ok(c.prepare_cached(
        "SELECT COUNT(*), COALESCE(SUM(CASE kind WHEN 'partial' THEN rejected ELSE items END), 0)
         FROM forward_dead_letters WHERE destination = ?1 AND signal = ?2",
    )?
    .query_row(params![destination, signal.as_str()], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?)
}

/// Exact count of rows after `cursor` while that is cheap; past `exact_up_to`, the distance in seq
/// (an upper bound: updated spans leave gaps).
pub fn lag(
    c: &Connection,
    signal: Signal,
    cursor: i64,
    exact_up_to: i64,
) -> Result<i64, StoreError> {
    let (count_sql, max_sql) = match signal {
        Signal::Spans => (
            "SELECT COUNT(*) FROM (SELECT 1 FROM spans WHERE seq > ?1 LIMIT ?2)",
            "SELECT COALESCE(MAX(seq), 0) FROM spans",
        ),
        Signal::Logs => (
            "SELECT COUNT(*) FROM (SELECT 1 FROM logs WHERE seq > ?1 LIMIT ?2)",
            "SELECT COALESCE(MAX(seq), 0) FROM logs",
        ),
    };
    let max: i64 = c.prepare_cached(max_sql)?.query_row([], |r| r.get(0))?;
    if max - cursor > exact_up_to {
        return Ok(max - cursor);
    }
    Ok(c.prepare_cached(count_sql)?
        .query_row(params![cursor, exact_up_to], |r| r.get(0))?)
}
