//! The attribute index: which spans (and resources) carry a given `key = value`, so tag and TraceQL
//! searches can find rare attributes without decoding span bodies.
//!
//! It is also the spans' time and service index: every span has an entry under `all_spans_hash()` and
//! one under `service_hash(its service)`. Chunked, those cost a row per 64 spans, where a SQLite index
//! on the spans table cost every span an insert (a quarter of the writer's work).
//!
//! Entries hold a 64-bit hash of the key and the value's text form, not the text itself: a search
//! re-checks every candidate on the decoded span, so a hash collision costs a wasted decode, never a
//! wrong answer. Only short scalar values are indexed (long prompts and tool outputs are never
//! searched for by equality); `indexable` tells the query side whether a value it looks for can be in
//! the index at all.
//!
//! An entry is `(hash, start_ns, seq)`. Entries of one hash written together are stored as chunks: a
//! `span_attrs` row is keyed by its newest entry and carries up to `CHUNK_ENTRIES - 1` older ones
//! (within `CHUNK_WINDOW_NS`) in `more`. A value shared by many spans (an operation, a tool) costs one
//! row per 64 spans instead of one per span. A value that a large write holds only once (a tool call
//! id) goes into that write's `Block` instead: one row per write, where a row each landed on a random
//! page and rewrote it. So do a large write's session ids: each session's chunks also landed on a page
//! of their own, and with a new session every hundred spans (the benchmark's agent load) those pages
//! were a fifth of what a commit wrote. `Postings` walks a hash's entries newest first across chunks
//! and blocks.
//!
//! The entries are written behind the spans, not with them: a commit puts them in a `Backlog` and the
//! writer adds the backlog to `span_attrs` in large sorted batches (when it would otherwise wait, or
//! once the backlog is big or old enough). `meta.span_attrs_upto` says which spans are indexed (every
//! seq up to it), and searches check the spans above it directly (`query::search`). A crash loses only
//! the backlog, which `catch_up` rebuilds from the span bodies at the next open.

use crate::model::view::{kv_refs, KvRef, ValueRef};
use crate::model::{any_value::Value, Resource, Span};
use foldhash::HashSet;
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::borrow::Cow;

/// Values whose text form is longer than this are not indexed: ids, names, models and statuses fit;
/// prompts, arguments and outputs are found by scanning, and indexing them would double ingest cost.
pub const MAX_INDEXED_VALUE: usize = 64;
/// At most this many attributes of one span are indexed (in order); the rest are found by scanning.
pub const MAX_INDEXED_PER_SPAN: usize = 64;

const BACKFILL_KEY: &str = "span_attrs_backfill";
/// Set by migration 11: spans up to this seq still need their time and service entries.
const KEYS_BACKFILL_KEY: &str = "span_keys_backfill";
/// Every span with a seq at or below this meta value has its attribute rows in `span_attrs`.
pub const UPTO_KEY: &str = "span_attrs_upto";
const BACKFILL_CHUNK: i64 = 5_000;

/// FNV-1a over `key`, a separator and `value`. Stored in the database, so it must never change.
pub const fn attr_hash(key: &str, value: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    let h = fnv(OFFSET, key.as_bytes());
    let h = fnv(h, &[0xff]);
    fnv(h, value.as_bytes()) as i64
}

const fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(PRIME);
        i += 1;
    }
    h
}

/// The text form a value is indexed (and compared by Jaeger tag searches) under; None for arrays,
/// maps and bytes, which are not indexed.
pub fn value_text(v: &Value) -> Option<Cow<'_, str>> {
    text_of(ValueRef::of(v))
}

/// `value_text` of a view.
fn text_of(v: ValueRef<'_>) -> Option<Cow<'_, str>> {
    match v {
        ValueRef::Str(s) => Some(Cow::Borrowed(s)),
        ValueRef::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
        ValueRef::Int(i) => Some(Cow::Owned(i.to_string())),
        ValueRef::Double(d) => Some(Cow::Owned(d.to_string())),
        ValueRef::Other => None,
    }
}

/// Whether a `key = text` pair would have been indexed if a span carried it.
pub fn indexable(text: &str) -> bool {
    text.len() <= MAX_INDEXED_VALUE
}

/// The index hashes of a resource's attributes (`span_hashes` gives a span's).
pub fn hashes<'a>(attrs: &'a [KvRef<'a>]) -> impl Iterator<Item = i64> + 'a {
    attrs
        .iter()
        .take(MAX_INDEXED_PER_SPAN)
        .filter_map(entry_hash)
}

fn entry_hash(kv: &KvRef) -> Option<i64> {
    let text = text_of(kv.value?)?;
    indexable(&text).then(|| attr_hash(kv.key, &text))
}

/// The keys of the entries that are not attributes. No attribute key starts with a NUL byte in
/// practice; if one did, a search would still check its candidates (see `query::search`).
const ALL_SPANS_KEY: &str = "\0span";
const SERVICE_KEY: &str = "\0service";

/// The entry every span has: the time index.
pub const fn all_spans_hash() -> i64 {
    const H: i64 = attr_hash(ALL_SPANS_KEY, "");
    H
}

/// The entry every span of `service` has: the service index.
pub fn service_hash(service: &str) -> i64 {
    attr_hash(SERVICE_KEY, service)
}

/// Every index hash of a span: its `KEY_ENTRIES` time and service entries (`service`: its
/// `service_hash`, the same for every span of a resource), then its attributes'. With them, in the
/// same pass, the hash of the first indexed attribute that names the span's session
/// (`facts::SESSION_KEYS`), whose entries a large index write puts in its block (see `Block`).
pub fn span_hashes(attrs: &[KvRef], service: i64) -> (Vec<i64>, Option<i64>) {
    let mut all = Vec::with_capacity(KEY_ENTRIES + attrs.len().min(MAX_INDEXED_PER_SPAN));
    all.extend([all_spans_hash(), service]);
    let mut session = None;
    for kv in attrs.iter().take(MAX_INDEXED_PER_SPAN) {
        if let Some(h) = entry_hash(kv) {
            if session.is_none() && crate::model::facts::SESSION_KEYS.contains(&kv.key) {
                session = Some(h);
            }
            all.push(h);
        }
    }
    (all, session)
}

/// How many of `span_hashes` come before the attributes'.
const KEY_ENTRIES: usize = 2;

/// Entries a chunk holds at most.
const CHUNK_ENTRIES: usize = 64;
/// How much older than its key (the newest) a chunk's entries may be: a search for spans starting at or
/// before `t` starts reading chunks at `t + CHUNK_WINDOW_NS`.
pub const CHUNK_WINDOW_NS: i64 = 1_000_000_000;
const ENTRY_BYTES: usize = 16;

/// An index entry: (hash, start_ns, seq).
pub type Entry = (i64, i64, i64);

/// Whether `a` comes before `b` within a hash: newest first, as a chunk's key is its newest entry.
fn newest_first(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    b.1.cmp(&a.1).then(b.2.cmp(&a.2))
}

/// Orders `entries` by hash, then newest first. The entries of one span share its start and seq and
/// come together, so the spans are put in newest-first order (one comparison sort of a few thousand
/// runs) and a counting sort by hash, filled in that order, leaves every hash's group ordered. Sorting
/// each group instead was 7% of the writer's instructions (callgrind, `cargo bench --bench writer`):
/// requests that overlap in time leave a group of many short runs, which a merging sort does not find.
fn order(entries: &mut Vec<Entry>) {
    use foldhash::{HashMap, HashMapExt};
    // Runs of entries of one (start, seq): (its first entry, first index, end index).
    let mut runs: Vec<(Entry, usize, usize)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if (r.0 .1, r.0 .2) == (e.1, e.2) => r.2 = i + 1,
            _ => runs.push((*e, i, i + 1)),
        }
    }
    runs.sort_unstable_by(|a, b| newest_first(&a.0, &b.0));
    let mut groups: HashMap<i64, (usize, usize)> = HashMap::with_capacity(entries.len() / 4);
    for e in entries.iter() {
        groups.entry(e.0).or_default().0 += 1;
    }
    let mut hashes: Vec<i64> = groups.keys().copied().collect();
    hashes.sort_unstable();
    let mut at = 0;
    for h in &hashes {
        if let Some(g) = groups.get_mut(h) {
            g.1 = at;
            at += g.0;
        }
    }
    let mut out = vec![(0, 0, 0); entries.len()];
    for &(_, from, to) in &runs {
        for e in &entries[from..to] {
            if let Some(g) = groups.get_mut(&e.0) {
                out[g.1] = *e;
                g.1 += 1;
            }
        }
    }
    *entries = out;
}

/// Index writes of at least this many spans put their lone entries in a block (see `Block`); smaller
/// ones touch few pages anyway, and blocks that small would make searches read many rows.
const BLOCK_MIN_SPANS: usize = 1024;

/// Writes `entries` (any order; sorted here) as chunks; with `blocks`, the entries of hashes that occur
/// once in `entries`, and every entry of a hash in `per_session` (session ids, see `span_hashes`), go
/// into one `Block` instead.
fn write_entries(
    tx: &Transaction,
    entries: &mut Vec<Entry>,
    blocks: bool,
    per_session: &HashSet<i64>,
) -> rusqlite::Result<()> {
    order(entries);
    // A key already there (indexing a span twice) keeps every entry of both chunks.
    let mut insert = tx.prepare_cached(
        "INSERT INTO span_attrs(h, start_ns, seq, more) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(h, start_ns, seq) DO UPDATE
         SET more = CAST(COALESCE(more, x'') || COALESCE(excluded.more, x'') AS BLOB)",
    )?;
    let mut lone: Vec<Entry> = Vec::new();
    let mut more: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let (h, start, seq) = entries[i];
        if blocks && per_session.contains(&h) {
            let j = i + entries[i..].partition_point(|e| e.0 == h);
            lone.extend_from_slice(&entries[i..j]);
            i = j;
            continue;
        }
        let mut j = i + 1;
        more.clear();
        while j < entries.len()
            && j - i < CHUNK_ENTRIES
            && entries[j].0 == h
            && start.saturating_sub(entries[j].1) <= CHUNK_WINDOW_NS
        {
            more.extend_from_slice(&entries[j].1.to_le_bytes());
            more.extend_from_slice(&entries[j].2.to_le_bytes());
            j += 1;
        }
        // Only a hash the whole write holds once: one that a chunk's time window cut into chunks of
        // one (a service over a sparse import) is found often, and a block would be read for it.
        let alone = j == i + 1
            && (i == 0 || entries[i - 1].0 != h)
            && entries.get(j).is_none_or(|e| e.0 != h);
        if blocks && alone {
            lone.push(entries[i]);
        } else {
            let more = (!more.is_empty()).then_some(more.as_slice());
            insert.execute(params![h, start, seq, more])?;
        }
        i = j;
    }
    Block::store(tx, None, &lone)
}

/// The (start_ns, seq) pairs a chunk's `more` holds, newest first.
fn decode_more(more: Option<&[u8]>) -> impl Iterator<Item = (i64, i64)> + '_ {
    more.unwrap_or_default().chunks_exact(ENTRY_BYTES).map(|e| {
        let mut start = [0u8; 8];
        let mut seq = [0u8; 8];
        start.copy_from_slice(&e[..8]);
        seq.copy_from_slice(&e[8..]);
        (i64::from_le_bytes(start), i64::from_le_bytes(seq))
    })
}

/// The lone entries of one large index write: hashes it held once (a tool call id, a response id), and
/// every entry of its session ids.
/// Given a row each, every one of them landed on a page of its own in a table ordered by hash, so an
/// index write rewrote about as many pages as it had spans, and more as the store grew. A block is one
/// row per write instead: its entries sorted by hash (`ENTRY_RECORD` bytes each), a Bloom filter over
/// their hashes, and the span and time range they cover. A lookup reads the filter of every block in
/// its time range (`BLOOM_BITS_PER_ENTRY` bits per entry) and the entries of the few that match.
struct Block;

const ENTRY_RECORD: usize = 24;
const BLOOM_BITS_PER_ENTRY: usize = 10;
const BLOOM_PROBES: u64 = 6;

/// The filter bits `h` sets in a filter of `bits` bits (a power of two). Stored in the database (the
/// filters), so it must never change.
fn bloom_probes(h: i64, bits: usize) -> impl Iterator<Item = usize> {
    // The FNV hash's low bits are weak; mix them (murmur3's finalizer) before taking probes.
    let mut x = h as u64;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    let step = x.rotate_left(32) | 1;
    (0..BLOOM_PROBES).map(move |i| (x.wrapping_add(i.wrapping_mul(step)) as usize) & (bits - 1))
}

fn bloom_of(entries: &[Entry]) -> Vec<u8> {
    // Sized by distinct hashes (entries come sorted by hash): a session id's entries set the same bits.
    let distinct = 1 + entries.windows(2).filter(|w| w[0].0 != w[1].0).count();
    let bits = (distinct * BLOOM_BITS_PER_ENTRY)
        .next_power_of_two()
        .max(64);
    let mut bloom = vec![0u8; bits / 8];
    for e in entries {
        for p in bloom_probes(e.0, bits) {
            bloom[p / 8] |= 1 << (p % 8);
        }
    }
    bloom
}

/// Whether a block with this filter may hold `h` (a filter of another shape: assume it may).
fn bloom_may_hold(bloom: &[u8], h: i64) -> bool {
    let bits = bloom.len() * 8;
    if bits == 0 || !bits.is_power_of_two() {
        return true;
    }
    bloom_probes(h, bits).all(|p| bloom[p / 8] & (1 << (p % 8)) != 0)
}

fn record(b: &[u8], k: usize) -> Entry {
    let at = |i: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[k * ENTRY_RECORD + i * 8..k * ENTRY_RECORD + i * 8 + 8]);
        i64::from_le_bytes(v)
    };
    (at(0), at(1), at(2))
}

fn records(b: &[u8]) -> impl Iterator<Item = Entry> + '_ {
    (0..b.len() / ENTRY_RECORD).map(|k| record(b, k))
}

impl Block {
    /// Writes `entries` (ordered as `order` leaves them) as block `id`, or as a new block; an empty
    /// list deletes the block.
    fn store(tx: &Transaction, id: Option<i64>, entries: &[Entry]) -> rusqlite::Result<()> {
        if entries.is_empty() {
            if let Some(id) = id {
                tx.prepare_cached("DELETE FROM span_attr_blocks WHERE id = ?1")?
                    .execute([id])?;
            }
            return Ok(());
        }
        let (mut seqs, mut starts) = ((i64::MAX, i64::MIN), (i64::MAX, i64::MIN));
        let mut bytes = Vec::with_capacity(entries.len() * ENTRY_RECORD);
        for &(h, start, seq) in entries {
            seqs = (seqs.0.min(seq), seqs.1.max(seq));
            starts = (starts.0.min(start), starts.1.max(start));
            bytes.extend_from_slice(&h.to_le_bytes());
            bytes.extend_from_slice(&start.to_le_bytes());
            bytes.extend_from_slice(&seq.to_le_bytes());
        }
        tx.prepare_cached(
            "INSERT OR REPLACE INTO span_attr_blocks(id, first_seq, last_seq, min_start, max_start, bloom, entries)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![id, seqs.0, seqs.1, starts.0, starts.1, bloom_of(entries), bytes])?;
        Ok(())
    }

    /// The (start_ns, seq) entries of `h` in a block's entries, newest first.
    fn lookup(entries: &[u8], h: i64) -> impl Iterator<Item = (i64, i64)> + '_ {
        let n = entries.len() / ENTRY_RECORD;
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if record(entries, mid).0 < h {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo..n)
            .map(|k| record(entries, k))
            .take_while(move |e| e.0 == h)
            .map(|e| (e.1, e.2))
    }

    /// Removes `gone` entries from the blocks that hold them. Blocks cover disjoint seq ranges (each
    /// index write covers newer spans than the last), so each step finds the next block at or above
    /// the lowest gone seq left and skips every gone seq below its end: a gone seq far from the others
    /// (a replaced span that was old) costs a lookup, not a scan of the blocks between.
    fn unindex(tx: &Transaction, gone: &[Entry]) -> rusqlite::Result<()> {
        let mut seqs: Vec<i64> = gone.iter().map(|e| e.2).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut next = tx.prepare_cached(
            "SELECT id, first_seq, last_seq FROM span_attr_blocks
             WHERE last_seq >= ?1 ORDER BY last_seq LIMIT 1",
        )?;
        let mut holding = Vec::new();
        let mut k = 0;
        while let Some(&seq) = seqs.get(k) {
            let Some((id, first, last)) = next
                .query_row([seq], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?)))
                .optional()?
            else {
                break;
            };
            k += seqs[k..].partition_point(|s| *s < first);
            if seqs.get(k).is_some_and(|s| *s <= last) {
                holding.push(id);
            }
            k += seqs[k..].partition_point(|s| *s <= last);
        }
        if holding.is_empty() {
            return Ok(());
        }
        let gone: std::collections::HashSet<(i64, i64)> = gone.iter().map(|e| (e.0, e.2)).collect();
        for id in holding {
            let kept = Block::with_entries(tx, id, |bytes| {
                let kept: Vec<Entry> = records(bytes)
                    .filter(|e| !gone.contains(&(e.0, e.2)))
                    .collect();
                (kept.len() < bytes.len() / ENTRY_RECORD).then_some(kept)
            })?;
            if let Some(kept) = kept.flatten() {
                Block::store(tx, Some(id), &kept)?;
            }
        }
        Ok(())
    }

    /// Runs `f` on block `id`'s entries as stored (None if there is no such block).
    fn with_entries<T>(
        c: &Connection,
        id: i64,
        f: impl FnOnce(&[u8]) -> T,
    ) -> rusqlite::Result<Option<T>> {
        let mut stmt = c.prepare_cached("SELECT entries FROM span_attr_blocks WHERE id = ?1")?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(r) => Ok(Some(f(r.get_ref(0)?.as_blob()?))),
            None => Ok(None),
        }
    }
}

/// Removes `gone` entries (spans deleted, or replaced by a newer copy). Chunks and blocks holding one
/// are rewritten without it. A chunk's key is at most `CHUNK_WINDOW_NS` newer than any entry in it, so for
/// each hash only the chunks keyed within that window above a gone entry are read (overlapping windows
/// read once).
pub fn unindex(tx: &Transaction, gone: &mut [Entry]) -> rusqlite::Result<()> {
    Block::unindex(tx, gone)?;
    gone.sort_unstable();
    let mut find = tx.prepare_cached(
        "SELECT start_ns, seq, more FROM span_attrs WHERE h = ?1 AND start_ns BETWEEN ?2 AND ?3",
    )?;
    let mut delete =
        tx.prepare_cached("DELETE FROM span_attrs WHERE h = ?1 AND start_ns = ?2 AND seq = ?3")?;
    let mut kept: Vec<Entry> = Vec::new();
    for group in gone.chunk_by(|a, b| a.0 == b.0) {
        let h = group[0].0;
        let seqs: std::collections::HashSet<i64> = group.iter().map(|e| e.2).collect();
        // The group is sorted by start: merge the windows [start, start + window] that overlap.
        let mut windows: Vec<(i64, i64)> = Vec::new();
        for e in group {
            let end = e.1.saturating_add(CHUNK_WINDOW_NS);
            match windows.last_mut() {
                Some(w) if e.1 <= w.1 => w.1 = end,
                _ => windows.push((e.1, end)),
            }
        }
        for (lo, hi) in windows {
            let chunks: Vec<(i64, i64, Option<Vec<u8>>)> = find
                .query_map(params![h, lo, hi], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            for (start, seq, more) in chunks {
                let all: Vec<(i64, i64)> = std::iter::once((start, seq))
                    .chain(decode_more(more.as_deref()))
                    .collect();
                if !all.iter().any(|(_, s)| seqs.contains(s)) {
                    continue;
                }
                delete.execute(params![h, start, seq])?;
                kept.extend(
                    all.into_iter()
                        .filter(|(_, s)| !seqs.contains(s))
                        .map(|(t, s)| (h, t, s)),
                );
            }
        }
    }
    write_entries(tx, &mut kept, false, &HashSet::default())
}

/// Every entry, expanded from its chunk or block: for consistency checks and tests.
pub fn entries(c: &Connection) -> rusqlite::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut stmt = c.prepare("SELECT h, start_ns, seq, more FROM span_attrs")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let h: i64 = r.get(0)?;
        out.push((h, r.get(1)?, r.get(2)?));
        out.extend(decode_more(r.get_ref(3)?.as_blob_or_null()?).map(|(t, s)| (h, t, s)));
    }
    let mut stmt = c.prepare("SELECT entries FROM span_attr_blocks")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        out.extend(records(r.get_ref(0)?.as_blob()?));
    }
    Ok(out)
}

/// The entries of one hash with `lo <= start_ns <= hi`, newest (start_ns, seq) first, read chunk by
/// chunk and block by block. Chunks overlap in time (each flush writes its own), and so do blocks, so
/// entries wait in a heap until no unread chunk or block can hold a newer one: chunks are read in key
/// order and every entry is at most its chunk's key; blocks in the order of their newest entry.
pub struct Postings {
    h: i64,
    lo: i64,
    hi: i64,
    /// Every chunk not read yet has a key below this.
    below: (i64, i64),
    heap: std::collections::BinaryHeap<(i64, i64)>,
    exhausted: bool,
    /// Every block not read yet is below this (its newest start, its id); None once all are read.
    blocks: Option<(i64, i64)>,
    /// The entry returned last: an entry indexed twice is returned once.
    last: Option<(i64, i64)>,
}

const POSTING_ROWS: i64 = 64;
const BLOCK_ROWS: i64 = 16;

impl Postings {
    pub fn new(h: i64, lo: i64, hi: i64) -> Postings {
        Postings {
            h,
            lo,
            hi,
            below: (hi.saturating_add(CHUNK_WINDOW_NS), i64::MAX),
            heap: Default::default(),
            exhausted: lo > hi,
            blocks: (lo <= hi).then_some((i64::MAX, i64::MAX)),
            last: None,
        }
    }

    /// How many entries there are, counting up to `cap`.
    pub fn count(mut self, c: &Connection, cap: i64) -> rusqlite::Result<i64> {
        let mut n = 0;
        while n < cap && self.next(c)?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// Only the entries in blocks: what `estimate`-style counts of chunk rows do not see.
    pub fn in_blocks(h: i64, lo: i64, hi: i64) -> Postings {
        Postings {
            exhausted: true,
            ..Postings::new(h, lo, hi)
        }
    }

    /// The next entry as (start_ns, seq).
    pub fn next(&mut self, c: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
        loop {
            let chunks = if self.exhausted {
                (i64::MIN, i64::MIN)
            } else {
                self.below
            };
            // A block's entries are at most its newest start, and a search's at most `hi`.
            let blocks = self
                .blocks
                .map_or((i64::MIN, i64::MIN), |b| (b.0.min(self.hi), i64::MAX));
            match self.heap.peek() {
                Some(&top) if top >= chunks.max(blocks) => {
                    self.heap.pop();
                    if self.last.replace(top) != Some(top) {
                        return Ok(Some(top));
                    }
                    continue;
                }
                None if self.exhausted && self.blocks.is_none() => return Ok(None),
                _ => {}
            }
            if chunks >= blocks {
                self.read_chunks(c)?;
            } else {
                self.read_blocks(c)?;
            }
        }
    }

    fn keep(&mut self, entries: impl Iterator<Item = (i64, i64)>) {
        let (lo, hi) = (self.lo, self.hi);
        self.heap.extend(entries.filter(|e| e.0 >= lo && e.0 <= hi));
    }

    fn read_chunks(&mut self, c: &Connection) -> rusqlite::Result<()> {
        let mut stmt = c.prepare_cached(
            "SELECT start_ns, seq, more FROM span_attrs WHERE h = ?1 AND start_ns >= ?2
               AND (start_ns, seq) < (?3, ?4) ORDER BY start_ns DESC, seq DESC LIMIT ?5",
        )?;
        let mut rows = stmt.query(params![
            self.h,
            self.lo,
            self.below.0,
            self.below.1,
            POSTING_ROWS
        ])?;
        let mut read = 0;
        while let Some(r) = rows.next()? {
            read += 1;
            let key: (i64, i64) = (r.get(0)?, r.get(1)?);
            self.below = key;
            let more = decode_more(r.get_ref(2)?.as_blob_or_null()?);
            self.keep(std::iter::once(key).chain(more));
        }
        if read < POSTING_ROWS {
            self.exhausted = true;
        }
        Ok(())
    }

    fn read_blocks(&mut self, c: &Connection) -> rusqlite::Result<()> {
        let Some(below) = self.blocks else {
            return Ok(());
        };
        let mut stmt = c.prepare_cached(
            "SELECT max_start, id, bloom FROM span_attr_blocks WHERE max_start >= ?1 AND min_start <= ?2
               AND (max_start, id) < (?3, ?4) ORDER BY max_start DESC, id DESC LIMIT ?5",
        )?;
        let mut rows = stmt.query(params![self.lo, self.hi, below.0, below.1, BLOCK_ROWS])?;
        let (mut read, mut at, mut hits) = (0, below, Vec::new());
        while let Some(r) = rows.next()? {
            read += 1;
            at = (r.get(0)?, r.get(1)?);
            if bloom_may_hold(r.get_ref(2)?.as_blob()?, self.h) {
                hits.push(at.1);
            }
        }
        drop(rows);
        self.blocks = (read == BLOCK_ROWS).then_some(at);
        for id in hits {
            Block::with_entries(c, id, |bytes| self.keep(Block::lookup(bytes, self.h)))?;
        }
        Ok(())
    }
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
    /// The hashes of session ids among them (`span_hashes`).
    per_session: HashSet<i64>,
    spans: usize,
    since: Option<std::time::Instant>,
}

impl Backlog {
    pub fn push(&mut self, seq: i64, start_ns: u64, hashes: &[i64], session: Option<i64>) {
        if hashes.is_empty() {
            return;
        }
        self.rows
            .extend(hashes.iter().map(|h| (seq, *h, start_ns as i64)));
        self.per_session.extend(session);
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
        self.per_session.extend(later.per_session.drain());
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

    /// Writes every waiting entry and records `upto` (the highest seq stored so far) as indexed. The
    /// backlog is emptied only by `written`, once the transaction committed.
    pub fn write(&self, tx: &Transaction, upto: i64) -> rusqlite::Result<()> {
        let mut entries: Vec<Entry> = self
            .rows
            .iter()
            .map(|&(seq, h, start)| (h, start, seq))
            .collect();
        write_entries(
            tx,
            &mut entries,
            self.spans >= BLOCK_MIN_SPANS,
            &self.per_session,
        )?;
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
        index_seqs(&tx, from, to, false)?;
        set_upto(&tx, to)?;
        tx.commit()?;
        from = to;
    }
    Ok(())
}

/// Indexes the spans with `after < seq <= upto`: every entry, or (`attributes_only`) only their
/// attributes' (the backfill of a schema older than the time and service entries, which
/// `backfill_keys` writes).
fn index_seqs(
    tx: &Transaction,
    after: i64,
    upto: i64,
    attributes_only: bool,
) -> rusqlite::Result<()> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut per_session = HashSet::default();
    let mut stmt = tx.prepare_cached(
        "SELECT seq, service, body, start_ns FROM spans WHERE seq > ?1 AND seq <= ?2",
    )?;
    let mut rows = stmt.query(params![after, upto])?;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        // Only the attributes are read from the body (which leaves the times to the columns).
        if let Ok(span) = Span::decode(r.get_ref(2)?.as_blob()?) {
            let start: i64 = r.get(3)?;
            let (all, session) = span_hashes(
                &kv_refs(&span.attributes),
                service_hash(r.get_ref(1)?.as_str()?),
            );
            let skip = if attributes_only { KEY_ENTRIES } else { 0 };
            entries.extend(all[skip..].iter().map(|&h| (h, start, seq)));
            per_session.extend(session);
        }
    }
    write_entries(
        tx,
        &mut entries,
        upto - after >= BLOCK_MIN_SPANS as i64,
        &per_session,
    )
}

/// Adds the index rows of an interned resource (idempotent).
pub fn index_resource(tx: &Transaction, id: i64, resource: &Resource) -> rusqlite::Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO resource_attrs(h, resource_id) VALUES (?1, ?2)")?;
    for h in hashes(&kv_refs(&resource.attributes)) {
        stmt.execute(params![h, id])?;
    }
    Ok(())
}

/// The seq a backfill note in `meta` says its spans go up to, if one is pending.
fn backfill_note(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

/// Runs `index(tx, after, upto)` over the spans up to the note under `key`, newest first (so a search
/// over recent data is right as soon as possible), a chunk per transaction that also moves the note
/// down; the note goes when done, and a crash midway resumes where it stopped. Runs at open, before
/// the writer starts.
fn backfill_spans(
    conn: &mut Connection,
    key: &str,
    what: &str,
    mut index: impl FnMut(&Transaction, i64, i64) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let Some(mut upto) = backfill_note(conn, key)? else {
        return Ok(());
    };
    tracing::info!(spans_up_to_seq = upto, "indexing {what} of existing data");
    while upto > 0 {
        let tx = conn.transaction()?;
        index(&tx, upto - BACKFILL_CHUNK, upto)?;
        upto -= BACKFILL_CHUNK;
        if upto > 0 {
            tx.execute(
                "UPDATE meta SET value = ?2 WHERE key = ?1",
                params![key, upto],
            )?;
        } else {
            tx.execute("DELETE FROM meta WHERE key = ?1", [key])?;
        }
        tx.commit()?;
    }
    tracing::info!("{what}: index complete");
    Ok(())
}

/// Indexes spans and resources stored before the index existed (a database migrated to schema 3).
pub fn backfill(conn: &mut Connection) -> rusqlite::Result<()> {
    if backfill_note(conn, BACKFILL_KEY)?.is_none() {
        return Ok(());
    }
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
    backfill_spans(conn, BACKFILL_KEY, "span attributes", |tx, after, upto| {
        index_seqs(tx, after, upto, true)
    })
}

/// Adds the time and service entries of spans stored before they existed (schema 11 dropped the
/// spans table's time and service indexes for them).
pub fn backfill_keys(conn: &mut Connection) -> rusqlite::Result<()> {
    backfill_spans(
        conn,
        KEYS_BACKFILL_KEY,
        "span times and services",
        |tx, after, upto| {
            let mut entries: Vec<Entry> = Vec::new();
            let mut stmt = tx.prepare_cached(
                "SELECT seq, start_ns, service FROM spans WHERE seq > ?1 AND seq <= ?2",
            )?;
            let mut rows = stmt.query(params![after, upto])?;
            while let Some(r) = rows.next()? {
                let (seq, start): (i64, i64) = (r.get(0)?, r.get(1)?);
                entries.push((all_spans_hash(), start, seq));
                entries.push((service_hash(r.get_ref(2)?.as_str()?), start, seq));
            }
            drop(rows);
            drop(stmt);
            write_entries(tx, &mut entries, false, &HashSet::default())
        },
    )
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

    #[test]
    fn session_ids_of_a_large_write_live_in_its_block() {
        let mut c = Connection::open_in_memory().expect("open");
        crate::store::schema::migrate(&mut c).expect("schema");
        // 1,200 spans 1 ms apart, of 12 sessions (100 spans each), all with one shared value too.
        let all: Vec<Entry> = (0..1200i64)
            .flat_map(|seq| {
                [
                    (1, seq * 1_000_000, seq),
                    (100 + seq / 100, seq * 1_000_000, seq),
                ]
            })
            .collect();
        let per_session: HashSet<i64> = (100..112).collect();
        let tx = c.transaction().expect("tx");
        write_entries(&tx, &mut all.clone(), true, &per_session).expect("write");
        tx.commit().expect("commit");
        let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).expect(sql) };
        assert_eq!(count("SELECT COUNT(*) FROM span_attr_blocks"), 1);
        assert_eq!(
            count("SELECT COUNT(*) FROM span_attrs"),
            19,
            "only the shared value is in chunks (1,200 entries, 64 a chunk)"
        );
        assert_eq!(
            count("SELECT length(entries) / 24 FROM span_attr_blocks"),
            1200
        );
        // The filter is sized by distinct hashes: 12 of them, 10 bits each, rounded up to 128 bits.
        assert_eq!(count("SELECT length(bloom) FROM span_attr_blocks"), 16);
        let mut stored = entries(&c).expect("entries");
        stored.sort_unstable();
        let mut want = all.clone();
        want.sort_unstable();
        assert_eq!(stored, want);
        let mut p = Postings::new(105, 550_000_000, i64::MAX);
        let found: Vec<(i64, i64)> = std::iter::from_fn(|| p.next(&c).expect("next")).collect();
        let want: Vec<(i64, i64)> = (550..600).rev().map(|s| (s * 1_000_000, s)).collect();
        assert_eq!(
            found, want,
            "a session's entries, newest first, from the time asked"
        );

        // A write below BLOCK_MIN_SPANS keeps them in chunks.
        let mut c = Connection::open_in_memory().expect("open");
        crate::store::schema::migrate(&mut c).expect("schema");
        let tx = c.transaction().expect("tx");
        write_entries(&tx, &mut all.clone(), false, &per_session).expect("write");
        tx.commit().expect("commit");
        let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).expect(sql) };
        assert_eq!(count("SELECT COUNT(*) FROM span_attr_blocks"), 0);
        assert_eq!(count("SELECT COUNT(*) FROM span_attrs"), 19 + 12 * 2);
    }

    #[test]
    fn lone_entries_live_in_a_block_until_unindexed() {
        let mut c = Connection::open_in_memory().expect("open");
        crate::store::schema::migrate(&mut c).expect("schema");
        // 2,000 spans, 1 ms apart: a value all share, one of their own each, and one three share.
        let mut all: Vec<Entry> = (0..2000i64)
            .flat_map(|seq| {
                [
                    (1, seq * 1_000_000, seq),
                    (1_000_000 + seq, seq * 1_000_000, seq),
                ]
            })
            .collect();
        all.extend((0..3).map(|seq| (7, seq * 1_000_000, seq)));
        let tx = c.transaction().expect("tx");
        write_entries(&tx, &mut all.clone(), true, &HashSet::default()).expect("write");
        tx.commit().expect("commit");
        fn count(c: &Connection, sql: &str) -> i64 {
            c.query_row(sql, [], |r| r.get(0)).expect(sql)
        }
        fn walk(c: &Connection, h: i64, lo: i64, hi: i64) -> Vec<(i64, i64)> {
            let mut p = Postings::new(h, lo, hi);
            std::iter::from_fn(|| p.next(c).expect("next")).collect()
        }
        assert_eq!(count(&c, "SELECT COUNT(*) FROM span_attr_blocks"), 1);
        assert_eq!(
            count(&c, "SELECT COUNT(*) FROM span_attrs"),
            33,
            "shared values: chunks"
        );
        let mut stored = entries(&c).expect("entries");
        stored.sort_unstable();
        let mut want = all.clone();
        want.sort_unstable();
        assert_eq!(stored, want);
        assert_eq!(walk(&c, 1_000_077, 0, i64::MAX), vec![(77_000_000, 77)]);
        assert_eq!(walk(&c, 1_000_077, 78_000_000, i64::MAX), vec![]);
        assert_eq!(walk(&c, 5, 0, i64::MAX), vec![], "a hash no span has");
        let shared = walk(&c, 1, 10_000_000, 19_000_000);
        assert_eq!(
            shared.iter().map(|e| e.1).collect::<Vec<_>>(),
            (10..20).rev().collect::<Vec<_>>()
        );
        assert_eq!(
            Postings::in_blocks(1, 0, i64::MAX)
                .count(&c, 10)
                .expect("count"),
            0
        );
        assert_eq!(
            Postings::in_blocks(1_000_500, 0, i64::MAX)
                .count(&c, 10)
                .expect("count"),
            1
        );

        // A later write makes a second block. Half the first block's lone entries go together with
        // one of the second's (gone seqs far apart), then the rest: blocks shrink, then are deleted.
        let later: Vec<Entry> = (5000..6000i64)
            .map(|seq| (2_000_000 + seq, seq * 1_000_000, seq))
            .collect();
        let tx = c.transaction().expect("tx");
        write_entries(&tx, &mut later.clone(), true, &HashSet::default()).expect("write");
        tx.commit().expect("commit");
        assert_eq!(count(&c, "SELECT COUNT(*) FROM span_attr_blocks"), 2);
        let lone: Vec<Entry> = all.iter().copied().filter(|e| e.0 > 7).collect();
        let mut steps = [lone[..1000].to_vec(), lone[1000..].to_vec(), later.clone()];
        steps[0].push(later[500]);
        let sizes = |c: &Connection| -> Vec<i64> {
            c.prepare("SELECT length(entries) / 24 FROM span_attr_blocks ORDER BY id")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .expect("sizes")
        };
        let after = [vec![1000, 999], vec![999], vec![]];
        for (step, want) in steps.iter_mut().zip(after) {
            let tx = c.transaction().expect("tx");
            unindex(&tx, step).expect("unindex");
            tx.commit().expect("commit");
            assert_eq!(sizes(&c), want);
        }
        assert_eq!(walk(&c, 1_001_500, 0, i64::MAX), vec![]);
        assert_eq!(walk(&c, 2_005_500, 0, i64::MAX), vec![]);
        assert_eq!(entries(&c).expect("entries").len(), 2003);
    }

    #[test]
    fn order_is_by_hash_then_newest_first() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as i64
        };
        let reference = |mut e: Vec<Entry>| {
            e.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(newest_first(a, b)));
            e
        };
        let mut cases: Vec<Vec<Entry>> = vec![Vec::new()];
        // Random: few hashes, starts and seqs in any order, duplicates.
        cases.push(
            (0..2000)
                .map(|_| (next(7) - 3, next(50), next(30)))
                .collect(),
        );
        // As the writer pushes them: by seq, starts mostly rising, some spans starting earlier.
        cases.push(
            (0..3000i64)
                .flat_map(|seq| {
                    let start = seq * 10 - if seq % 97 == 0 { 500 } else { 0 };
                    [(1, start, seq), (seq * 7919, start, seq), (-5, start, seq)]
                })
                .collect(),
        );
        // Requests that overlap in time, by seq: each a run of rising starts that the next one
        // overlaps, sharing an operation and a session per request; every span has its own call id.
        cases.push(
            (0..16_000i64)
                .flat_map(|seq| {
                    let (request, i) = (seq / 100, seq % 100);
                    let start = (request + i) * 1_000_000;
                    [
                        (11, start, seq),
                        (request, start, seq),
                        (seq << 20, start, seq),
                    ]
                })
                .collect(),
        );
        for entries in cases {
            let mut got = entries.clone();
            order(&mut got);
            assert_eq!(got, reference(entries));
        }
    }
}
