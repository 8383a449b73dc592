//! Retention: deletes whole sessions (with every trace and log record they hold) that are older than
//! an age, or the oldest ones while the database is over a size cap, in small steps on the write
//! connection so ingest keeps flowing between them. Data a forward destination has not received yet is
//! kept unless the size cap forces it out; what that drops is counted.

use super::StoreError;
use crate::model::view::kv_refs;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::time::Duration;

/// Sessions deleted per step (one transaction).
const STEP_SESSIONS: i64 = 50;
/// Free pages handed back to the file system per step.
const VACUUM_PAGES: i64 = 4096;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RetentionPolicy {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

impl RetentionPolicy {
    pub fn is_set(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }
}

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct RetentionReport {
    pub sessions: u64,
    pub spans: u64,
    pub logs: u64,
    /// Spans deleted before every forward destination had them (only under the size cap).
    pub unforwarded_spans_dropped: u64,
    /// Sessions past the age limit kept because a destination still needs them.
    pub kept_for_forwarding: u64,
    pub db_bytes: u64,
    /// Whether another step has work to do.
    #[serde(skip)]
    pub more: bool,
}

impl RetentionReport {
    pub fn add(&mut self, o: &RetentionReport) {
        self.sessions += o.sessions;
        self.spans += o.spans;
        self.logs += o.logs;
        self.unforwarded_spans_dropped += o.unforwarded_spans_dropped;
        self.kept_for_forwarding = o.kept_for_forwarding;
        self.db_bytes = o.db_bytes;
    }
}

/// Bytes in use: pages minus free pages, so the cap holds even before free pages are given back.
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let used = pragma("page_count")? - pragma("freelist_count")?;
    Ok((used.max(0) * pragma("page_size")?) as u64)
}

/// The lowest span sequence number some forward destination has not received, if any destination is
/// behind. Spans with a higher `seq` must not be deleted by age.
fn unforwarded_floor(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let has_cursors: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'forward_cursors')",
        [],
        |r| r.get(0),
    )?;
    if !has_cursors {
        return Ok(None);
    }
    conn.query_row("SELECT MIN(span_seq) FROM forward_cursors", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
}

/// Adds the attribute index entries (store::index) of the spans matching `condition` (fixed SQL) to
/// `gone`, so that one pass removes those of a whole step.
fn index_entries<P: rusqlite::ToSql>(
    tx: &rusqlite::Transaction,
    condition: &str,
    value: P,
    gone: &mut Vec<super::index::Entry>,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT seq, start_ns, body, service FROM spans WHERE {condition}"
    ))?;
    let mut rows = stmt.query([value])?;
    while let Some(r) = rows.next()? {
        let (seq, start): (i64, i64) = (r.get(0)?, r.get(1)?);
        let body = r.get_ref(2)?.as_blob()?;
        if let Ok(span) = <crate::model::Span as prost::Message>::decode(body) {
            let service = super::index::service_hash(r.get_ref(3)?.as_str()?);
            let (all, _) = super::index::span_hashes(&kv_refs(&span.attributes), service);
            gone.extend(all.into_iter().map(|h| (h, start, seq)));
        }
    }
    Ok(())
}

/// One bounded step: picks up to `STEP_SESSIONS` sessions and deletes them in one transaction.
pub fn step(
    conn: &mut Connection,
    policy: &RetentionPolicy,
    now_ns: u64,
) -> Result<RetentionReport, StoreError> {
    let mut report = RetentionReport::default();
    let over_cap = match policy.max_bytes {
        Some(max) => used_bytes(conn)? > max,
        None => false,
    };
    let cutoff = policy
        .max_age
        .map(|a| now_ns.saturating_sub(a.as_nanos().min(u64::MAX as u128) as u64) as i64);
    let floor = unforwarded_floor(conn)?;
    let candidates: Vec<(i64, String)> = if over_cap {
        conn.prepare_cached("SELECT num, key FROM sessions ORDER BY last_ns, key LIMIT ?1")?
            .query_map([STEP_SESSIONS], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?
    } else if let Some(cutoff) = cutoff {
        conn.prepare_cached(
            "SELECT num, key FROM sessions WHERE last_ns < ?1 ORDER BY last_ns, key LIMIT ?2",
        )?
        .query_map(params![cutoff, STEP_SESSIONS * 4], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?
    } else {
        Vec::new()
    };
    let tx = conn.transaction()?;
    let mut deleted = 0i64;
    let mut unindexed = Vec::new();
    for (num, key) in &candidates {
        if deleted >= STEP_SESSIONS {
            report.more = true;
            break;
        }
        let unforwarded: i64 = match floor {
            Some(floor) => tx
                .prepare_cached(concat!(
                    "SELECT COUNT(*) FROM spans WHERE ",
                    super::session_spans!(),
                    " AND seq > ?2"
                ))?
                .query_row(params![key, floor], |r| r.get(0))?,
            None => 0,
        };
        if unforwarded > 0 && !over_cap {
            report.kept_for_forwarding += 1;
            continue;
        }
        report.unforwarded_spans_dropped += unforwarded as u64;
        // Whole traces: everything in the session's traces goes, whichever session key a span had;
        // every span of the session is in one of them (the writer notes each span's trace).
        // By number: spans (through their runs) and `traces` are found by it; logs name the trace id.
        let traces: Vec<(i64, Vec<u8>)> = tx
            .prepare_cached(
                "SELECT t.tn, t.trace_id FROM session_traces st JOIN traces t ON t.tn = st.tn
                 WHERE st.session = ?1",
            )?
            .query_map([num], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (tn, trace_id) in &traces {
            index_entries(&tx, super::tn_spans!(), tn, &mut unindexed)?;
            report.spans += tx
                .prepare_cached(concat!("DELETE FROM spans WHERE ", super::tn_spans!()))?
                .execute([tn])? as u64;
            tx.prepare_cached("DELETE FROM trace_runs WHERE tn = ?1")?
                .execute([tn])?;
            tx.prepare_cached("DELETE FROM traces WHERE tn = ?1")?
                .execute([tn])?;
            report.logs += tx
                .prepare_cached("DELETE FROM logs WHERE trace_id = ?1")?
                .execute([trace_id])? as u64;
        }
        report.logs += tx
            .prepare_cached("DELETE FROM logs WHERE session = ?1")?
            .execute([key])? as u64;
        tx.prepare_cached("DELETE FROM session_traces WHERE session = ?1")?
            .execute([num])?;
        tx.prepare_cached("DELETE FROM sessions WHERE num = ?1")?
            .execute([num])?;
        report.sessions += 1;
        deleted += 1;
        // Under the cap, stop as soon as it fits: only the oldest that must go, go.
        if over_cap
            && policy
                .max_bytes
                .is_some_and(|m| used_bytes(&tx).is_ok_and(|u| u <= m))
        {
            break;
        }
    }
    super::index::unindex(&tx, &mut unindexed)?;
    if report.unforwarded_spans_dropped > 0 {
        tx.prepare_cached(
            "INSERT INTO meta(key, value) VALUES ('retention_unforwarded_dropped', ?1)
             ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
        )?
        .execute([report.unforwarded_spans_dropped as i64])?;
    }
    tx.commit()?;
    // Hands free pages back (the file is created with auto_vacuum=INCREMENTAL).
    conn.query_row(
        &format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"),
        [],
        |_| Ok(()),
    )
    .optional()?;
    report.db_bytes = used_bytes(conn)?;
    report.more |= deleted > 0 && policy.max_bytes.is_some_and(|m| report.db_bytes > m);
    if deleted == STEP_SESSIONS && candidates.len() as i64 > deleted {
        report.more = true;
    }
    Ok(report)
}

/// Runs steps until there is nothing left to do (or `max_steps`), adding up what they did. Each step
/// waits its turn behind queued ingest on the writer.
pub async fn run(
    writer: &super::Writer,
    policy: RetentionPolicy,
    max_steps: usize,
) -> Result<RetentionReport, StoreError> {
    let mut total = RetentionReport::default();
    for _ in 0..max_steps.max(1) {
        let now = crate::model::time::now_ns();
        let report = writer
            .run_on_writer_indexed(move |conn| step(conn, &policy, now))
            .await?;
        total.add(&report);
        if !report.more {
            break;
        }
    }
    if total.sessions > 0 {
        writer.announce_reread();
    }
    Ok(total)
}

/// What `/api/retention` shows: the policy, the last run and totals since start.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RetentionStatus {
    pub max_age_seconds: Option<u64>,
    pub max_bytes: Option<u64>,
    pub last_run_unix_nano: Option<String>,
    pub last_run: Option<RetentionReport>,
    pub total: RetentionReport,
    pub last_error: Option<String>,
}

impl RetentionStatus {
    pub fn new(policy: &RetentionPolicy) -> RetentionStatus {
        RetentionStatus {
            max_age_seconds: policy.max_age.map(|d| d.as_secs()),
            max_bytes: policy.max_bytes,
            ..Default::default()
        }
    }

    pub fn record(&mut self, result: &Result<RetentionReport, StoreError>) {
        self.last_run_unix_nano = Some(crate::model::time::now_ns().to_string());
        match result {
            Ok(r) => {
                self.total.add(r);
                self.last_run = Some(r.clone());
                self.last_error = None;
            }
            Err(e) => self.last_error = Some(e.to_string()),
        }
    }
}

/// Parses `30d`, `12h`, `90m`, `45s` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30d, 12h, 90m or 45s"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 604_800,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use s, m, h, d or w)"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}
