//! Where each destination stands, kept in SQLite (migration 3): destinations, one cursor per destination
//! and signal, and dead letters. Writes run through `Writer::transact` (the one writer); reads use the
//! read-only `Reader`.
//!
//! For retention (not built here): a cursor is the highest `seq` of its table (`spans` or `logs`) that
//! the destination accepted or that was dead-lettered. Everything a destination still needs is
//! `seq > cursor`. So rows with `seq <= MIN(forward_cursors.seq)` over the destinations with
//! `active = 1` are delivered everywhere and free to delete; rows above it may only go when a size cap
//! forces it, and then the job should record how many each destination lost (e.g. as a dead letter with
//! kind `dropped`, first/last seq, items). `active = 0` marks destinations no longer configured: their
//! cursors are kept (re-adding the URL resumes there) but hold nothing back.

use super::Signal;
use crate::model::time::now_ns;
use crate::store::StoreError;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

/// Registers the configured destinations: known ones resume at their cursors, new ones start at the
/// current end of the store (older data is what `aotel replay` is for). Marks all others inactive.
/// Returns (id, span cursor, log cursor) per URL, in order.
pub fn register(tx: &Transaction, urls: &[String]) -> Result<Vec<(i64, i64, i64)>, StoreError> {
    let now = now_ns() as i64;
    tx.execute("UPDATE forward_destinations SET active = 0", [])?;
    let span_end: i64 =
        tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM spans", [], |r| r.get(0))?;
    let log_end: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM logs", [], |r| r.get(0))?;
    let mut out = Vec::with_capacity(urls.len());
    for url in urls {
        let id: i64 = tx.query_row(
            "INSERT INTO forward_destinations(url, active, added_ns, seen_ns) VALUES (?1, 1, ?2, ?2)
             ON CONFLICT(url) DO UPDATE SET active = 1, seen_ns = excluded.seen_ns RETURNING id",
            params![url, now],
            |r| r.get(0),
        )?;
        let cursor = |signal: Signal, end: i64| -> rusqlite::Result<i64> {
            tx.execute(
                "INSERT OR IGNORE INTO forward_cursors(destination, signal, seq, updated_ns) VALUES (?1, ?2, ?3, ?4)",
                params![id, signal.as_str(), end, now],
            )?;
            tx.query_row(
                "SELECT seq FROM forward_cursors WHERE destination = ?1 AND signal = ?2",
                params![id, signal.as_str()],
                |r| r.get(0),
            )
        };
        let spans = cursor(Signal::Spans, span_end)?;
        let logs = cursor(Signal::Logs, log_end)?;
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
    tx.prepare_cached(
        "UPDATE forward_cursors SET seq = ?3, updated_ns = ?4 WHERE destination = ?1 AND signal = ?2 AND seq < ?3",
    )?
    .execute(params![destination, signal.as_str(), seq, now_ns() as i64])?;
    Ok(())
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

/// The stored cursor, if the destination is registered.
pub fn load(c: &Connection, destination: i64, signal: Signal) -> Result<Option<i64>, StoreError> {
    Ok(
        c.prepare_cached("SELECT seq FROM forward_cursors WHERE destination = ?1 AND signal = ?2")?
            .query_row(params![destination, signal.as_str()], |r| r.get(0))
            .optional()?,
    )
}
