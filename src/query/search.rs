//! Trace search shared by the Jaeger and Tempo APIs: one span condition (Jaeger tags and TraceQL both
//! become a `traceql::Expr`), narrowed through an index before any span body is decoded.
//!
//! How a search runs: the top-level `&&` terms of the condition that map to columns (service, name,
//! duration, status, kind) become SQL clauses; `key = value` terms on span attributes can use the
//! attribute index (`store::index`). Each usable access path (an attribute's entries, the service's,
//! or every span's: all in that index) is costed by a bounded count over the time range, the cheapest
//! is walked newest first, and each candidate that survives the SQL clauses is decoded and checked
//! against the whole condition. The walk stops once `limit` traces matched, or after `MAX_INSPECTED`
//! candidates (the answer then says it is incomplete).

use super::traceql::{Cond, Expr, Field, Literal, Op, Scope, SpanRef};
use crate::model::{InstrumentationScope, Resource, Span};
use crate::store::body::{SpanRow, SPAN_COLUMNS};
use crate::store::index::{
    all_spans_hash, attr_hash, indexable, indexed_upto, service_hash, Postings, CHUNK_WINDOW_NS,
};
use crate::store::StoreError;
use prost::Message;
use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Candidates decoded and checked at most, per search.
pub const MAX_INSPECTED: usize = 100_000;
/// Bound of the counts that choose an access path.
const ESTIMATE_CAP: i64 = 4096;
pub const MAX_LIMIT: usize = 1500;

/// What to look for. Every field narrows; all conditions hold on one span of a returned trace.
#[derive(Debug, Clone)]
pub struct SearchParams {
    pub service: Option<String>,
    pub operation: Option<String>,
    /// Span start at or after (ns since the epoch).
    pub start_min: Option<i64>,
    /// Span start at or before (ns since the epoch).
    pub start_max: Option<i64>,
    /// Span duration bounds (ns).
    pub min_duration: Option<i64>,
    pub max_duration: Option<i64>,
    /// Whole-trace duration bounds (ns): Tempo's tag search filters traces, not spans, by duration.
    pub trace_min_duration: Option<i64>,
    pub trace_max_duration: Option<i64>,
    pub filter: Expr,
    /// Traces at most.
    pub limit: usize,
    /// Matched spans kept per trace (Tempo's spans per spanset).
    pub keep_spans: usize,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams {
            service: None,
            operation: None,
            start_min: None,
            start_max: None,
            min_duration: None,
            max_duration: None,
            trace_min_duration: None,
            trace_max_duration: None,
            filter: Expr::True,
            limit: 20,
            keep_spans: 3,
        }
    }
}

/// A span that matched, decoded, with what it came with.
#[derive(Debug, Clone)]
pub struct Matched {
    pub span: Span,
    pub resource: Arc<Resource>,
    pub scope: Arc<InstrumentationScope>,
}

impl Matched {
    /// As conditions see it.
    pub fn view(&self) -> SpanRef<'_> {
        SpanRef {
            span: &self.span,
            resource: &self.resource,
            scope: &self.scope,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TraceHit {
    pub trace_id: Vec<u8>,
    /// Up to `keep_spans` matching spans, newest first.
    pub spans: Vec<Matched>,
    /// Matching spans seen before the search stopped.
    pub matched: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Newest matching span first.
    pub traces: Vec<TraceHit>,
    pub inspected: usize,
    /// False when the search stopped at `MAX_INSPECTED` before finding `limit` traces.
    pub complete: bool,
}

/// The SQL side of a search: clauses over `spans s` and an optional resource allow-list.
#[derive(Default)]
struct Narrowing {
    clauses: Vec<&'static str>,
    args: Vec<Sql>,
    attr_hashes: Vec<i64>,
    services: Vec<String>,
    resources: Option<HashSet<i64>>,
    /// Whether the SQL clauses alone decide the condition (no span body needs decoding).
    exact: bool,
    impossible: bool,
}

fn duration_clause(op: Op) -> Option<&'static str> {
    Some(match op {
        Op::Eq => "s.end_ns - s.start_ns = ?",
        Op::Gt => "s.end_ns - s.start_ns > ?",
        Op::Ge => "s.end_ns - s.start_ns >= ?",
        Op::Lt => "s.end_ns - s.start_ns < ?",
        Op::Le => "s.end_ns - s.start_ns <= ?",
        Op::Ne => "s.end_ns - s.start_ns != ?",
        Op::Re | Op::NotRe => return None,
    })
}

fn resource_ids(c: &Connection, h: i64) -> rusqlite::Result<HashSet<i64>> {
    c.prepare_cached("SELECT resource_id FROM resource_attrs WHERE h = ?1")?
        .query_map([h], |r| r.get(0))?
        .collect()
}

fn narrow(c: &Connection, p: &SearchParams) -> rusqlite::Result<Narrowing> {
    let mut n = Narrowing::default();
    if let Some(s) = &p.service {
        n.services.push(s.clone());
    }
    if let Some(o) = &p.operation {
        n.clauses.push("s.name = ?");
        n.args.push(o.clone().into());
    }
    if let Some(d) = p.min_duration {
        n.clauses.push("s.end_ns - s.start_ns >= ?");
        n.args.push(d.into());
    }
    if let Some(d) = p.max_duration {
        n.clauses.push("s.end_ns - s.start_ns <= ?");
        n.args.push(d.into());
    }
    let conjuncts = p.filter.conjuncts();
    let mut exact_terms = 0;
    for cond in &conjuncts {
        if narrow_one(c, cond, &mut n)? {
            exact_terms += 1;
        }
    }
    n.exact = matches!(p.filter, Expr::True) || exact_terms == count_terms(&p.filter);
    Ok(n)
}

fn count_terms(e: &Expr) -> usize {
    match e {
        Expr::True => 0,
        Expr::Cmp(_) => 1,
        Expr::And(a, b) | Expr::Or(a, b) => {
            count_terms(a) + count_terms(b) + usize::from(matches!(e, Expr::Or(..)))
        }
    }
}

/// Adds what SQL can check of one condition; true when SQL decides it entirely.
fn narrow_one(c: &Connection, cond: &Cond, n: &mut Narrowing) -> rusqlite::Result<bool> {
    match (&cond.field, cond.op, &cond.value) {
        (Field::Name, Op::Eq, Literal::Str(s)) => {
            n.clauses.push("s.name = ?");
            n.args.push(s.clone().into());
            Ok(true)
        }
        (Field::Duration, op, Literal::Duration(d)) => match duration_clause(op) {
            Some(cl) => {
                n.clauses.push(cl);
                n.args.push((*d).into());
                Ok(true)
            }
            None => Ok(false),
        },
        (Field::Status, Op::Eq, Literal::Status(v)) => {
            n.clauses.push("s.status = ?");
            n.args.push((*v).into());
            Ok(true)
        }
        (Field::Status, Op::Ne, Literal::Status(v)) => {
            n.clauses.push("s.status != ?");
            n.args.push((*v).into());
            Ok(true)
        }
        (Field::Kind, Op::Eq, Literal::Kind(v)) => {
            n.clauses.push("s.kind = ?");
            n.args.push((*v).into());
            Ok(true)
        }
        (Field::Kind, Op::Ne, Literal::Kind(v)) => {
            n.clauses.push("s.kind != ?");
            n.args.push((*v).into());
            Ok(true)
        }
        (Field::Attr { scope, key }, Op::Eq, lit) => {
            if *scope == Scope::Resource && key == "service.name" {
                if let Literal::Str(s) = lit {
                    n.services.push(s.clone());
                }
            }
            let Some(text) = lit.index_text().filter(|t| indexable(t)) else {
                return Ok(false);
            };
            let h = attr_hash(key, &text);
            match scope {
                Scope::Span => n.attr_hashes.push(h),
                Scope::Any => {
                    // Usable only when no resource carries the pair: then a match must be a span attribute.
                    if resource_ids(c, h)?.is_empty() {
                        n.attr_hashes.push(h);
                    }
                }
                Scope::Resource => {
                    let ids = resource_ids(c, h)?;
                    let allowed = match n.resources.take() {
                        Some(prev) => prev.intersection(&ids).copied().collect(),
                        None => ids,
                    };
                    n.impossible |= allowed.is_empty();
                    n.resources = Some(allowed);
                }
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// A cheap bounded count of the index entries of `h` in the time range, plus every span above `indexed`
/// (not in the index yet), which a walk has to check (by rowid range, see `unindexed`). Entries in
/// blocks (lone values of large index writes) are counted only when the chunks leave room under the
/// cap: a value with many chunk entries is not the rarest path whatever its blocks hold.
fn estimate(c: &Connection, h: i64, lo: i64, hi: i64, indexed: i64) -> rusqlite::Result<i64> {
    // A chunk holds entries up to CHUNK_WINDOW_NS older than its key (store::index).
    let n: i64 = c
        .prepare_cached(
            "SELECT (SELECT COALESCE(SUM(1 + COALESCE(length(more), 0) / 16), 0) FROM (SELECT more FROM span_attrs
                 WHERE h = ?1 AND start_ns BETWEEN ?2 AND ?6 LIMIT ?4))
            + (SELECT COUNT(*) FROM (SELECT 1 FROM spans NOT INDEXED WHERE seq > ?5 AND start_ns BETWEEN ?2 AND ?3 LIMIT ?4))",
        )?
        .query_row(
            params![h, lo, hi, ESTIMATE_CAP, indexed, hi.saturating_add(CHUNK_WINDOW_NS)],
            |r| r.get(0),
        )?;
    if n >= ESTIMATE_CAP {
        return Ok(n);
    }
    Ok(n + Postings::in_blocks(h, lo, hi).count(c, ESTIMATE_CAP - n)?)
}

/// Decoded resources and scopes by id, loaded on first use.
#[derive(Default)]
pub struct MetaCache {
    resources: HashMap<i64, Arc<Resource>>,
    scopes: HashMap<i64, Arc<InstrumentationScope>>,
}

impl MetaCache {
    pub fn resource(&mut self, c: &Connection, id: i64) -> rusqlite::Result<Arc<Resource>> {
        if let Some(r) = self.resources.get(&id) {
            return Ok(r.clone());
        }
        let body: Option<Vec<u8>> = c
            .prepare_cached("SELECT body FROM resources WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let r = Arc::new(
            body.and_then(|b| Resource::decode(b.as_slice()).ok())
                .unwrap_or_default(),
        );
        self.resources.insert(id, r.clone());
        Ok(r)
    }

    pub fn scope(
        &mut self,
        c: &Connection,
        id: i64,
    ) -> rusqlite::Result<Arc<InstrumentationScope>> {
        if let Some(s) = self.scopes.get(&id) {
            return Ok(s.clone());
        }
        let body: Option<Vec<u8>> = c
            .prepare_cached("SELECT body FROM scopes WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let s = Arc::new(
            body.and_then(|b| InstrumentationScope::decode(b.as_slice()).ok())
                .unwrap_or_default(),
        );
        self.scopes.insert(id, s.clone());
        Ok(s)
    }
}

struct Candidate {
    seq: i64,
    trace_id: Vec<u8>,
    start_ns: i64,
    resource_id: i64,
    scope_id: i64,
}

/// Runs a search on a read connection.
pub fn search(c: &Connection, p: &SearchParams) -> Result<Outcome, StoreError> {
    let limit = p.limit.clamp(1, MAX_LIMIT);
    let lo = p.start_min.unwrap_or(i64::MIN);
    let hi = p.start_max.unwrap_or(i64::MAX);
    let out = Outcome {
        complete: true,
        ..Outcome::default()
    };
    if lo > hi {
        return Ok(out);
    }
    let mut n = narrow(c, p)?;
    if n.impossible {
        return Ok(out);
    }
    n.services.sort();
    n.services.dedup();
    if n.services.len() > 1 {
        return Ok(out);
    }

    // Access paths, each an entry key of the attribute index: the attributes', the service's, and
    // every span's (which always applies).
    let mut paths = n.attr_hashes.clone();
    paths.extend(n.services.iter().map(|s| service_hash(s)));
    paths.push(all_spans_hash());
    let indexed = indexed_upto(c)?;
    let mut best: Option<(i64, i64)> = None;
    for h in paths {
        let est = estimate(c, h, lo, hi, indexed)?;
        if est == 0 {
            // Every path is exact: no entry on one means no match at all.
            return Ok(out);
        }
        if best.is_none_or(|(b, _)| est < b) {
            best = Some((est, h));
        }
    }
    let Some((_, h)) = best else {
        return Ok(out);
    };

    let mut clauses: Vec<String> = n.clauses.iter().map(|s| s.to_string()).collect();
    let mut args = n.args.clone();
    if let Some(s) = n.services.first() {
        clauses.push("s.service = ?".into());
        args.push(s.clone().into());
    }
    let extra = if clauses.is_empty() {
        String::new()
    } else {
        format!(" AND {}", clauses.join(" AND "))
    };
    let mut newest = Newest::new(c, h, (lo, hi), indexed, &extra, args)?;
    let mut walk = Walk {
        c,
        p,
        n: &n,
        limit,
        span_stmt: c.prepare_cached(&format!("SELECT {SPAN_COLUMNS} FROM spans WHERE seq = ?1"))?,
        meta: MetaCache::default(),
        index: HashMap::new(),
        rejected: HashSet::new(),
        out: Outcome {
            complete: true,
            ..Outcome::default()
        },
    };
    while let Some(cand) = newest.next()? {
        if walk.consider(cand, n.exact)? {
            break;
        }
    }
    Ok(walk.out)
}

/// A search's candidates, newest (start, seq) first: the entries of one key of the attribute index,
/// looked up a batch at a time (and checked against the SQL clauses), merged with the spans the index
/// does not cover yet (store::index::Backlog), which are read directly with the same clauses.
struct Newest<'c> {
    c: &'c Connection,
    entries: Postings,
    lookup: rusqlite::Statement<'c>,
    args: Vec<Sql>,
    /// Entries per lookup: small first (most searches stop early), larger on long walks.
    batch: usize,
    /// Every span up to this seq is in the index; the ones above are in `tail`.
    indexed: i64,
    /// Looked-up candidates and the unindexed ones, each oldest first (so `pop` gives the newest).
    ready: Vec<Candidate>,
    tail: Vec<Candidate>,
    exhausted: bool,
}

impl<'c> Newest<'c> {
    /// Entries of `h` starting in `lo..=hi`; `indexed` as `index::indexed_upto` read it; `extra` and
    /// `args`: further SQL clauses over `spans s` and their values.
    fn new(
        c: &'c Connection,
        h: i64,
        (lo, hi): (i64, i64),
        indexed: i64,
        extra: &str,
        args: Vec<Sql>,
    ) -> rusqlite::Result<Self> {
        Ok(Newest {
            c,
            entries: Postings::new(h, lo, hi),
            lookup: c.prepare(&format!(
                "SELECT {CANDIDATE_COLUMNS} FROM spans s \
                 WHERE s.seq IN (SELECT value FROM json_each(?)){extra}"
            ))?,
            tail: unindexed(c, indexed, lo, hi, extra, &args)?,
            args,
            batch: INDEX_BATCH,
            indexed,
            ready: Vec::new(),
            exhausted: false,
        })
    }

    fn next(&mut self) -> rusqlite::Result<Option<Candidate>> {
        while self.ready.is_empty() && !self.exhausted {
            self.look_up()?;
        }
        let tail_first = match (self.ready.last(), self.tail.last()) {
            (Some(r), Some(t)) => (t.start_ns, t.seq) > (r.start_ns, r.seq),
            (None, t) => t.is_some(),
            (Some(_), None) => false,
        };
        Ok(if tail_first {
            self.tail.pop()
        } else {
            self.ready.pop()
        })
    }

    /// Looks up the next batch of entries into `ready`.
    fn look_up(&mut self) -> rusqlite::Result<()> {
        let mut seqs = Vec::with_capacity(self.batch);
        while seqs.len() < self.batch {
            match self.entries.next(self.c)? {
                Some((_, seq)) if seq <= self.indexed => seqs.push(seq),
                // Indexed after `indexed` was read: `tail` has it.
                Some(_) => {}
                None => {
                    self.exhausted = true;
                    break;
                }
            }
        }
        self.batch = (self.batch * 2).min(MAX_INDEX_BATCH);
        if seqs.is_empty() {
            return Ok(());
        }
        let mut bind: Vec<Sql> = Vec::with_capacity(self.args.len() + 1);
        bind.push(seq_list(&seqs).into());
        bind.extend(self.args.iter().cloned());
        // A span the clauses reject (or a retention step removed meanwhile) is simply not returned.
        self.ready = candidates(&mut self.lookup, &bind)?;
        // The entries came newest first; the rows come in seq order.
        self.ready.sort_unstable_by_key(|c| (c.start_ns, c.seq));
        Ok(())
    }
}

/// Index entries looked up per batch, first and at most.
const INDEX_BATCH: usize = 256;
const MAX_INDEX_BATCH: usize = 4096;

/// Spans above `upto` in the time range that pass the SQL clauses, oldest first (so `pop` gives the
/// newest); at most `MAX_INSPECTED`, the newest. `NOT INDEXED` keeps SQLite on the rowid range (the
/// few newest rows).
fn unindexed(
    c: &Connection,
    upto: i64,
    lo: i64,
    hi: i64,
    extra: &str,
    args: &[Sql],
) -> rusqlite::Result<Vec<Candidate>> {
    if upto == i64::MAX {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {CANDIDATE_COLUMNS} FROM spans s NOT INDEXED \
         WHERE s.seq > ? AND s.start_ns >= ? AND s.start_ns <= ?{extra} \
         ORDER BY s.start_ns DESC, s.seq DESC LIMIT ?"
    );
    let mut bind: Vec<Sql> = vec![upto.into(), lo.into(), hi.into()];
    bind.extend(args.iter().cloned());
    bind.push((MAX_INSPECTED as i64).into());
    let mut rows = candidates(&mut c.prepare(&sql)?, &bind)?;
    rows.reverse();
    Ok(rows)
}

/// What a candidate query selects (see `candidates`).
const CANDIDATE_COLUMNS: &str = "s.seq, s.trace_id, s.start_ns, s.resource_id, s.scope_id";

/// Runs a candidate query (`CANDIDATE_COLUMNS`).
fn candidates(stmt: &mut rusqlite::Statement, bind: &[Sql]) -> rusqlite::Result<Vec<Candidate>> {
    stmt.query_map(params_from_iter(bind.iter()), |r| {
        Ok(Candidate {
            seq: r.get(0)?,
            trace_id: r.get(1)?,
            start_ns: r.get(2)?,
            resource_id: r.get(3)?,
            scope_id: r.get(4)?,
        })
    })?
    .collect()
}

/// The state of one search while it walks its candidates.
struct Walk<'a> {
    c: &'a Connection,
    p: &'a SearchParams,
    n: &'a Narrowing,
    limit: usize,
    span_stmt: rusqlite::CachedStatement<'a>,
    meta: MetaCache,
    /// Position of each matched trace in `out.traces`.
    index: HashMap<Vec<u8>, usize>,
    /// Traces whose duration is out of bounds.
    rejected: HashSet<Vec<u8>>,
    out: Outcome,
}

impl Walk<'_> {
    /// Takes one candidate span; `exact`: SQL has already decided that it matches. True once the search
    /// is done (enough traces, or the inspection budget spent).
    fn consider(&mut self, cand: Candidate, exact: bool) -> rusqlite::Result<bool> {
        let (p, n) = (self.p, self.n);
        if self.rejected.contains(&cand.trace_id) {
            return Ok(false);
        }
        if let Some(allowed) = &n.resources {
            if !allowed.contains(&cand.resource_id) {
                return Ok(false);
            }
        }
        let known = self.index.get(&cand.trace_id).copied();
        let wants_span = known.is_none_or(|i| self.out.traces[i].spans.len() < p.keep_spans);
        if exact && !wants_span {
            if let Some(i) = known {
                self.out.traces[i].matched += 1;
            }
            return Ok(false);
        }
        if self.out.inspected >= MAX_INSPECTED {
            self.out.complete = false;
            return Ok(true);
        }
        self.out.inspected += 1;
        let decoded =
            (self.span_stmt).query_row([cand.seq], |r| Ok(SpanRow::read(r, 0)?.decode()))?;
        let Ok(span) = decoded else {
            return Ok(false);
        };
        let resource = self.meta.resource(self.c, cand.resource_id)?;
        let scope = self.meta.scope(self.c, cand.scope_id)?;
        let view = SpanRef {
            span: &span,
            resource: &resource,
            scope: &scope,
        };
        if !exact && !p.filter.matches(&view) {
            return Ok(false);
        }
        let i = match known {
            Some(i) => i,
            None => {
                if (p.trace_min_duration.is_some() || p.trace_max_duration.is_some())
                    && !trace_duration_ok(self.c, &cand.trace_id, p)?
                {
                    self.rejected.insert(cand.trace_id);
                    return Ok(false);
                }
                self.out.traces.push(TraceHit {
                    trace_id: cand.trace_id.clone(),
                    spans: Vec::new(),
                    matched: 0,
                });
                self.index.insert(cand.trace_id, self.out.traces.len() - 1);
                self.out.traces.len() - 1
            }
        };
        let hit = &mut self.out.traces[i];
        hit.matched += 1;
        if hit.spans.len() < p.keep_spans {
            hit.spans.push(Matched {
                span,
                resource,
                scope,
            });
        }
        Ok(self.out.traces.len() >= self.limit)
    }
}

fn trace_duration_ok(c: &Connection, trace_id: &[u8], p: &SearchParams) -> rusqlite::Result<bool> {
    let (lo, hi): (Option<i64>, Option<i64>) = c
        .prepare_cached(concat!(
            "SELECT MIN(start_ns), MAX(end_ns) FROM spans WHERE ",
            crate::store::trace_spans!()
        ))?
        .query_row([trace_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let d = hi.unwrap_or(0).saturating_sub(lo.unwrap_or(0));
    Ok(p.trace_min_duration.is_none_or(|m| d >= m) && p.trace_max_duration.is_none_or(|m| d <= m))
}

/// What a search-results row shows of a trace, computed from the store's columns.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub root_service: Option<String>,
    pub root_name: Option<String>,
    pub start_ns: i64,
    pub end_ns: i64,
    pub spans: i64,
    pub errors: i64,
    pub orphans: i64,
    /// (service, spans, error spans), by name.
    pub services: Vec<(String, i64, i64)>,
}

pub fn summary(c: &Connection, trace_id: &[u8]) -> rusqlite::Result<Summary> {
    let mut s = Summary::default();
    // Looked up once, for the pass below.
    let Some(tn) = crate::store::trace_number(c, trace_id)? else {
        return Ok(s);
    };
    // One pass over the trace's spans (found through its runs; there is no index by span id).
    let mut stmt = c.prepare_cached(concat!(
        "SELECT start_ns, end_ns, seq, parent_span_id, span_id, status, service, name FROM spans WHERE ",
        crate::store::tn_spans!()
    ))?;
    let mut rows = stmt.query([tn])?;
    let mut root: Option<(i64, i64, String, String)> = None;
    let mut services: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    let mut ids: HashSet<Vec<u8>> = HashSet::new();
    let mut parents: Vec<Vec<u8>> = Vec::new();
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    while let Some(r) = rows.next()? {
        let (start, end, seq): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        lo = lo.min(start);
        hi = hi.max(end);
        s.spans += 1;
        let service: String = r.get(6)?;
        match r.get::<_, Option<Vec<u8>>>(3)? {
            Some(parent) => parents.push(parent),
            None => {
                if root
                    .as_ref()
                    .is_none_or(|(t, q, ..)| (start, seq) < (*t, *q))
                {
                    root = Some((start, seq, service.clone(), r.get(7)?));
                }
            }
        }
        ids.insert(r.get(4)?);
        let counts = services.entry(service).or_default();
        counts.0 += 1;
        counts.1 += i64::from(r.get::<_, i32>(5)? == 2);
    }
    if s.spans > 0 {
        s.start_ns = lo;
        s.end_ns = hi.max(lo);
    }
    if let Some((_, _, service, name)) = root {
        s.root_service = Some(service);
        s.root_name = Some(name);
    }
    s.services = services.into_iter().map(|(k, (n, e))| (k, n, e)).collect();
    s.errors = s.services.iter().map(|x| x.2).sum();
    s.orphans = parents.iter().filter(|p| !ids.contains(*p)).count() as i64;
    Ok(s)
}

/// Services, from the operations catalogue (no span scan).
pub fn services(c: &Connection) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached("SELECT DISTINCT service FROM operations ORDER BY service")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// (name, OTLP kind) of a service's operations, optionally of one kind.
pub fn operations(
    c: &Connection,
    service: &str,
    kind: Option<i32>,
) -> rusqlite::Result<Vec<(String, i32)>> {
    c.prepare_cached(
        "SELECT name, kind FROM operations WHERE service = ?1 AND (?2 IS NULL OR kind = ?2) ORDER BY name, kind",
    )?
    .query_map(params![service, kind], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// The seqs of the newest `n` spans starting in the range, newest first.
fn newest_seqs(c: &Connection, lo: i64, hi: i64, n: usize) -> rusqlite::Result<Vec<i64>> {
    let indexed = indexed_upto(c)?;
    let mut newest = Newest::new(c, all_spans_hash(), (lo, hi), indexed, "", Vec::new())?;
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match newest.next()? {
            Some(cand) => seqs.push(cand.seq),
            None => break,
        }
    }
    Ok(seqs)
}

/// The seqs as a JSON array, for `json_each`: one bound parameter however many there are.
fn seq_list(seqs: &[i64]) -> String {
    serde_json::to_string(seqs).unwrap_or_else(|_| "[]".into())
}

/// Spans starting in the range whose parent belongs to another service, counted by (parent, child).
/// Bounded: the newest `MAX_INSPECTED` spans of the range are looked at.
pub fn dependencies(
    c: &Connection,
    lo: i64,
    hi: i64,
) -> rusqlite::Result<Vec<(String, String, i64)>> {
    let seqs = newest_seqs(c, lo, hi, MAX_INSPECTED)?;
    // (trace number, parent span id, service) of each child, by trace; then each trace's span ids
    // read once (through its runs) to name the parents' services.
    let mut children: HashMap<i64, Vec<(Vec<u8>, String)>> = HashMap::new();
    let mut stmt = c.prepare_cached(
        "SELECT tn, parent_span_id, service FROM spans
         WHERE seq IN (SELECT value FROM json_each(?1)) AND parent_span_id IS NOT NULL",
    )?;
    let mut rows = stmt.query([seq_list(&seqs)])?;
    while let Some(r) = rows.next()? {
        children
            .entry(r.get(0)?)
            .or_default()
            .push((r.get(1)?, r.get(2)?));
    }
    let mut spans = c.prepare_cached(concat!(
        "SELECT span_id, service FROM spans WHERE ",
        crate::store::tn_spans!()
    ))?;
    let mut pairs: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for (tn, kids) in children {
        let service_of: HashMap<Vec<u8>, String> = spans
            .query_map([tn], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (parent, service) in kids {
            match service_of.get(&parent) {
                Some(p) if *p != service => *pairs.entry((p.clone(), service)).or_default() += 1,
                _ => {}
            }
        }
    }
    Ok(pairs.into_iter().map(|((p, k), n)| (p, k, n)).collect())
}

/// The newest spans of a time range, decoded: where tag names and values are read from.
pub fn recent(c: &Connection, lo: i64, hi: i64, n: usize) -> Result<Vec<Matched>, StoreError> {
    let seqs = newest_seqs(c, lo, hi, n)?;
    let rows: Vec<(_, i64, i64)> = c
        .prepare_cached(&format!(
            "SELECT resource_id, scope_id, {SPAN_COLUMNS} FROM spans
             WHERE seq IN (SELECT value FROM json_each(?1)) ORDER BY seq DESC"
        ))?
        .query_map([seq_list(&seqs)], |r| {
            Ok((SpanRow::read(r, 2)?.decode(), r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut meta = MetaCache::default();
    let mut out = Vec::with_capacity(rows.len());
    for (span, rid, sid) in rows {
        if let Ok(span) = span {
            out.push(Matched {
                span,
                resource: meta.resource(c, rid)?,
                scope: meta.scope(c, sid)?,
            });
        }
    }
    Ok(out)
}

/// A trace id from its hex form: up to 32 digits, left-padded (Jaeger and Tempo both accept short ids).
pub fn parse_trace_id(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{s:0>32}");
    crate::model::ids::from_hex(&padded, 16)
}
