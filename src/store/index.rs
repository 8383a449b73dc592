//! The attribute index: which spans (and resources) carry a given `key = value`, so tag and TraceQL
//! searches can find rare attributes without decoding span bodies.
//!
//! Each row holds a 64-bit hash of the key and the value's text form, not the text itself: rows stay
//! small (three integers), and a search re-checks every candidate on the decoded span, so a hash
//! collision costs a wasted decode, never a wrong answer. Only short scalar values are indexed (long
//! prompts and tool outputs are never searched for by equality); `indexable` tells the query side
//! whether a value it looks for can be in the index at all.
//!
//! The rows are written behind the spans, not with them: a commit puts its spans' rows in a `Backlog`
//! and the writer adds the backlog to `span_attrs` in large sorted batches (when it would otherwise wait,
//! or once the backlog is big or old enough). Hashes are random, so row by row every insert lands on a
//! different page and each commit rewrote thousands of pages; sorted in one batch, neighbouring rows
//! share pages. `meta.span_attrs_upto` says which spans are indexed (every seq up to it), and searches
//! check the spans above it directly (`query::search`). A crash loses only the backlog, which `catch_up`
//! rebuilds from the span bodies at the next open.

use crate::model::{any_value::Value, KeyValue, Resource, Span};
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

/// Values whose text form is longer than this are not indexed: ids, names, models and statuses fit;
/// prompts, arguments and outputs are found by scanning, and indexing them would double ingest cost.
pub const MAX_INDEXED_VALUE: usize = 64;
/// At most this many attributes of one span are indexed (in order); the rest are found by scanning.
pub const MAX_INDEXED_PER_SPAN: usize = 64;

const BACKFILL_KEY: &str = "span_attrs_backfill";
/// Every span with a seq at or below this meta value has its attribute rows in `span_attrs`.
pub const UPTO_KEY: &str = "span_attrs_upto";
const BACKFILL_CHUNK: i64 = 5_000;

/// FNV-1a over `key`, a separator and `value`. Stored in the database, so it must never change.
pub fn attr_hash(key: &str, value: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in key
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(value.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h as i64
}

/// The text form a value is indexed (and compared by Jaeger tag searches) under; None for arrays,
/// maps and bytes, which are not indexed.
pub fn value_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match v {
        Value::StringValue(s) => Some(Cow::Borrowed(s.as_str())),
        Value::BoolValue(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        _ => None,
    }
}

/// Whether a `key = text` pair would have been indexed if a span carried it.
pub fn indexable(text: &str) -> bool {
    text.len() <= MAX_INDEXED_VALUE
}

/// The index hashes of a span's or resource's attributes; computed where the batch is prepared.
pub fn hashes(attrs: &[KeyValue]) -> impl Iterator<Item = i64> + '_ {
    attrs.iter().take(MAX_INDEXED_PER_SPAN).filter_map(|kv| {
        let text = value_text(kv.value.as_ref()?.value.as_ref()?)?;
        indexable(&text).then(|| attr_hash(&kv.key, &text))
    })
}

/// Adds the index rows of a span stored under `seq`.
pub fn index_span(tx: &Transaction, seq: i64, span: &Span) -> rusqlite::Result<()> {
    let mut stmt = insert_stmt(tx)?;
    let start = span.start_time_unix_nano as i64;
    for h in hashes(&span.attributes) {
        stmt.execute(params![h, start, seq])?;
    }
    Ok(())
}

fn insert_stmt<'c>(tx: &'c Transaction) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    tx.prepare_cached("INSERT OR IGNORE INTO span_attrs(h, start_ns, seq) VALUES (?1, ?2, ?3)")
}

/// The highest seq up to which every span is indexed; searches check the spans above it themselves.
pub fn indexed_upto(c: &Connection) -> rusqlite::Result<i64> {
    let upto: Option<i64> = c
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([UPTO_KEY], |r| r.get(0))
        .optional()?;
    Ok(upto.unwrap_or(i64::MAX))
}

/// Index rows of committed spans not yet in `span_attrs`, oldest span first.
#[derive(Default)]
pub struct Backlog {
    /// (seq, hash, start_ns), in seq order.
    rows: Vec<(i64, i64, i64)>,
    spans: usize,
    since: Option<std::time::Instant>,
}

impl Backlog {
    pub fn push(&mut self, seq: i64, start_ns: u64, hashes: &[i64]) {
        if hashes.is_empty() {
            return;
        }
        self.rows
            .extend(hashes.iter().map(|h| (seq, *h, start_ns as i64)));
        self.spans += 1;
        self.since.get_or_insert_with(std::time::Instant::now);
    }

    /// Drops the rows of a span copy that a newer copy replaced before they were written.
    pub fn forget(&mut self, seq: i64) {
        let from = self.rows.partition_point(|r| r.0 < seq);
        let to = self.rows.partition_point(|r| r.0 <= seq);
        if to > from {
            self.rows.drain(from..to);
            self.spans -= 1;
        }
    }

    /// Moves `later`'s rows (all with higher seqs) to the end of this backlog.
    pub fn append(&mut self, later: &mut Backlog) {
        if later.rows.is_empty() {
            return;
        }
        self.rows.append(&mut later.rows);
        self.spans += std::mem::take(&mut later.spans);
        self.since = self.since.or(later.since.take());
    }

    /// The seq of the oldest span waiting.
    pub fn first_seq(&self) -> Option<i64> {
        self.rows.first().map(|r| r.0)
    }

    pub fn spans(&self) -> usize {
        self.spans
    }

    pub fn age(&self) -> std::time::Duration {
        self.since.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Writes every waiting row in key order and records `upto` (the highest seq stored so far) as
    /// indexed. The backlog is emptied only by `written`, once the transaction committed.
    pub fn write(&self, tx: &Transaction, upto: i64) -> rusqlite::Result<()> {
        let mut sorted: Vec<(i64, i64, i64)> = self
            .rows
            .iter()
            .map(|&(seq, h, start)| (h, start, seq))
            .collect();
        sorted.sort_unstable();
        // Many rows per statement: per row, binding and stepping cost about as much as the insert.
        let mut chunks = sorted.chunks_exact(ROWS_PER_INSERT);
        let mut many = tx.prepare_cached(&many_rows_sql())?;
        for chunk in &mut chunks {
            let values = chunk.iter().flat_map(|(h, start, seq)| [*h, *start, *seq]);
            many.execute(rusqlite::params_from_iter(values))?;
        }
        let mut one = insert_stmt(tx)?;
        for (h, start, seq) in chunks.remainder() {
            one.execute(params![h, start, seq])?;
        }
        set_upto(tx, upto)
    }

    /// After a failed write: the next attempt waits as long as a new backlog would.
    pub fn retry_later(&mut self) {
        self.since = Some(std::time::Instant::now());
    }

    pub fn written(&mut self) {
        *self = Backlog::default();
    }
}

const ROWS_PER_INSERT: usize = 64;

fn many_rows_sql() -> String {
    let rows = vec!["(?, ?, ?)"; ROWS_PER_INSERT].join(", ");
    format!("INSERT OR IGNORE INTO span_attrs(h, start_ns, seq) VALUES {rows}")
}

fn set_upto(tx: &Transaction, upto: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![UPTO_KEY, upto])?;
    Ok(())
}

/// Indexes the spans committed after the last written backlog (a crash lost it). Runs at open, before
/// the writer starts.
pub fn catch_up(conn: &mut Connection) -> rusqlite::Result<()> {
    let upto = indexed_upto(conn)?;
    let max: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM spans", [], |r| r.get(0))?;
    if upto >= max {
        return Ok(());
    }
    tracing::info!(
        from_seq = upto + 1,
        to_seq = max,
        "indexing span attributes the last run did not write"
    );
    let mut from = upto;
    while from < max {
        let to = (from + BACKFILL_CHUNK).min(max);
        let tx = conn.transaction()?;
        index_seqs(&tx, from, to)?;
        set_upto(&tx, to)?;
        tx.commit()?;
        from = to;
    }
    Ok(())
}

/// Indexes the spans with `after < seq <= upto`.
fn index_seqs(tx: &Transaction, after: i64, upto: i64) -> rusqlite::Result<()> {
    let rows: Vec<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT seq, body FROM spans WHERE seq > ?1 AND seq <= ?2")?
        .query_map(params![after, upto], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (seq, body) in rows {
        if let Ok(span) = Span::decode(body.as_slice()) {
            index_span(tx, seq, &span)?;
        }
    }
    Ok(())
}

/// Adds the index rows of an interned resource (idempotent).
pub fn index_resource(tx: &Transaction, id: i64, resource: &Resource) -> rusqlite::Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO resource_attrs(h, resource_id) VALUES (?1, ?2)")?;
    for h in hashes(&resource.attributes) {
        stmt.execute(params![h, id])?;
    }
    Ok(())
}

/// Indexes spans and resources stored before the index existed (a database migrated to schema 3).
/// Runs once, at open, before the writer starts; a crash midway resumes where it stopped.
pub fn backfill(conn: &mut Connection) -> rusqlite::Result<()> {
    let pending: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [BACKFILL_KEY],
            |r| r.get(0),
        )
        .optional()?;
    let Some(mut upto) = pending else {
        return Ok(());
    };
    tracing::info!(
        spans_up_to_seq = upto,
        "indexing span attributes of existing data"
    );
    {
        let tx = conn.transaction()?;
        let rows: Vec<(i64, Vec<u8>)> = tx
            .prepare("SELECT id, body FROM resources")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, body) in rows {
            if let Ok(resource) = Resource::decode(body.as_slice()) {
                index_resource(&tx, id, &resource)?;
            }
        }
        tx.commit()?;
    }
    // Newest first, so a search over recent data is right as soon as possible after an interruption.
    while upto > 0 {
        let tx = conn.transaction()?;
        index_seqs(&tx, upto - BACKFILL_CHUNK, upto)?;
        upto -= BACKFILL_CHUNK;
        if upto > 0 {
            tx.execute(
                "UPDATE meta SET value = ?2 WHERE key = ?1",
                params![BACKFILL_KEY, upto],
            )?;
        } else {
            tx.execute("DELETE FROM meta WHERE key = ?1", [BACKFILL_KEY])?;
        }
        tx.commit()?;
    }
    tracing::info!("span attribute index complete");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_separates_key_from_value() {
        // Stored on disk: a change here would silently break every existing index.
        assert_eq!(attr_hash("a", "b"), attr_hash("a", "b"));
        assert_ne!(attr_hash("ab", ""), attr_hash("a", "b"));
        assert_eq!(attr_hash("gen_ai.tool.name", "Bash"), -4061494277852450368);
        assert_eq!(value_text(&Value::IntValue(200)).as_deref(), Some("200"));
        assert_eq!(value_text(&Value::DoubleValue(2.0)).as_deref(), Some("2"));
        assert_eq!(value_text(&Value::BoolValue(true)).as_deref(), Some("true"));
        assert!(value_text(&Value::BytesValue(vec![1])).is_none());
    }
}
