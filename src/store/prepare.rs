//! Turns a batch into rows ready to bind. Truncation, fact extraction and encoding run here, on the
//! caller's task and so in parallel, leaving the single writer thread nothing but SQL.

use super::{LogSummary, SpanSummary};
use crate::model::attrs::truncate;
use crate::model::attrs::Lookup;
use crate::model::facts::{self, LogFacts, SpanFacts};
use crate::model::view::{self, kv_refs, KvRef, ResourceRef, ScopeRef, SpanAt, SpanRef, Visit};
use crate::model::wire::Wire;
use crate::model::{Batch, InstrumentationScope, Span};
use bytes::Bytes;
use prost::Message;
use sha2::{Digest, Sha256};
use std::cell::Cell;

/// A resource or scope, stored once and referred to by id.
pub(super) struct Meta {
    pub hash: [u8; 16],
    pub schema_url: String,
    pub body: Vec<u8>,
}

pub(super) struct PreparedResource {
    pub meta: Meta,
    pub service: String,
    pub attr_hashes: Vec<i64>,
    pub scopes: Vec<PreparedScope>,
}

pub(super) struct PreparedScope {
    pub meta: Meta,
    pub name: String,
    pub version: String,
    pub spans: Vec<PreparedSpan>,
    pub logs: Vec<PreparedLog>,
}

pub(super) struct PreparedSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub status: i32,
    pub facts: SpanFacts,
    /// The encoded span (as received when it came as protobuf and was not truncated), less what
    /// its columns hold (`store::body`).
    pub body: Bytes,
    /// Attribute index hashes (store::index).
    pub attr_hashes: Vec<i64>,
    /// The one of them that names its session (`index::span_hashes`).
    pub session_hash: Option<i64>,
    /// Built only while the live view wants spans; the writer takes it at commit and fills in `seq`.
    pub summary: Cell<Option<Box<SpanSummary>>>,
}

pub(super) struct PreparedLog {
    pub hash: [u8; 16],
    pub trace_id: Option<Vec<u8>>,
    pub span_id: Option<Vec<u8>>,
    pub time_ns: u64,
    pub severity: i32,
    pub facts: LogFacts,
    /// As for spans.
    pub body: Bytes,
    pub summary: Cell<Option<LogSummary>>,
}

#[derive(Default)]
pub(super) struct Prepared {
    pub resources: Vec<PreparedResource>,
    pub items: usize,
}

pub(super) fn hash16(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

fn meta(body: Vec<u8>, schema_url: String) -> Meta {
    Meta {
        hash: hash16(&[&body, schema_url.as_bytes()]),
        schema_url,
        body,
    }
}

fn scope_of(scope: Option<InstrumentationScope>, schema_url: String) -> PreparedScope {
    let scope = scope.unwrap_or_default();
    let body = scope.encode_to_vec();
    prepared_scope(body, schema_url, scope.name, scope.version)
}

fn prepared_scope(
    body: Vec<u8>,
    schema_url: String,
    name: String,
    version: String,
) -> PreparedScope {
    PreparedScope {
        meta: meta(body, schema_url),
        name,
        version,
        spans: Vec::new(),
        logs: Vec::new(),
    }
}

/// `body`: the resource's encoding; `attrs`: its attributes.
fn resource_of(body: Vec<u8>, schema_url: String, attrs: &[KvRef]) -> PreparedResource {
    PreparedResource {
        meta: meta(body, schema_url),
        service: facts::service_of(Lookup::new(attrs)),
        attr_hashes: super::index::hashes(attrs).collect(),
        scopes: Vec::new(),
    }
}

/// What every span of a resource shares.
struct Shared<'a> {
    resource: Lookup<'a>,
    service: &'a str,
    service_h: i64,
    /// Span summaries wanted (see `prepare`).
    summaries: bool,
}

/// A span with valid ids, ready to bind; `body`: its encoding (stored as `body::strip` leaves it).
fn span_of(span: &SpanRef, shared: &Shared, body: Bytes) -> PreparedSpan {
    let facts = facts::facts_of(span, shared.resource, shared.service);
    let summary = (shared.summaries).then(|| Box::new(SpanSummary::new(0, span, &facts)));
    let (attr_hashes, session_hash) = super::index::span_hashes(span.attributes, shared.service_h);
    // `SpanRef::id_problem` passed: the ids have their lengths, and a parent is absent or 8 bytes.
    PreparedSpan {
        parent_span_id: span.parent_span_id.try_into().ok(),
        trace_id: span.trace_id.try_into().unwrap_or_default(),
        span_id: span.span_id.try_into().unwrap_or_default(),
        name: span.name.to_string(),
        kind: span.kind,
        start_ns: span.start_time_unix_nano,
        end_ns: span.end_time_unix_nano,
        status: span.status_code,
        facts,
        body: super::body::strip(body),
        attr_hashes,
        session_hash,
        summary: Cell::new(summary),
    }
}

/// A decoded span: truncated to `max_attr`, encoded again only when that cut something or `raw` (its
/// received bytes) is missing. None for invalid ids (which the receivers have refused already).
fn decoded_span(
    mut span: Span,
    raw: Option<Bytes>,
    shared: &Shared,
    max_attr: usize,
) -> Option<PreparedSpan> {
    if SpanRef::of(&span, &[]).id_problem().is_some() {
        return None;
    }
    let mut cut = truncate(&mut span.attributes, max_attr);
    for event in &mut span.events {
        cut |= truncate(&mut event.attributes, max_attr);
    }
    let body = match raw.filter(|_| !cut) {
        Some(raw) => raw,
        None => Bytes::from(span.encode_to_vec()),
    };
    let attrs = kv_refs(&span.attributes);
    Some(span_of(&SpanRef::of(&span, &attrs), shared, body))
}

/// A protobuf trace request read in place (`Writer::read_in_place`), ready to store, and the spans it
/// refused for invalid ids.
pub struct InPlace {
    pub(super) prepared: Prepared,
    refused: usize,
    first_refusal: Option<String>,
}

impl InPlace {
    /// The spans it will store.
    pub fn spans(&self) -> usize {
        self.prepared.items
    }

    /// How many spans it refused.
    pub fn refused(&self) -> usize {
        self.refused
    }

    /// Why the first refused span was.
    pub fn first_refusal(&self) -> Option<&str> {
        self.first_refusal.as_deref()
    }
}

/// Walks a request once: checks it, refuses spans with invalid ids, prepares the others. Gives the bytes
/// back when the walk declines them (the caller decodes with prost).
/// `summaries`: span summaries wanted (see `prepare`).
pub(super) fn read_in_place(
    bytes: Bytes,
    max_attr: usize,
    summaries: bool,
) -> Result<InPlace, Bytes> {
    let mut reader = InPlaceReader {
        bytes: &bytes,
        max_attr,
        summaries,
        service_h: 0,
        read: InPlace {
            prepared: Prepared::default(),
            refused: 0,
            first_refusal: None,
        },
    };
    match view::walk_traces(&bytes, &mut reader) {
        Some(()) => Ok(reader.read),
        None => Err(bytes),
    }
}

struct InPlaceReader<'b> {
    bytes: &'b Bytes,
    max_attr: usize,
    summaries: bool,
    /// The current resource's `index::service_hash`.
    service_h: i64,
    read: InPlace,
}

impl Visit for InPlaceReader<'_> {
    fn resource(&mut self, r: &ResourceRef<'_>) {
        let pr = resource_of(r.bytes.to_vec(), r.schema_url.to_string(), r.attributes);
        self.service_h = super::index::service_hash(&pr.service);
        self.read.prepared.resources.push(pr);
    }

    fn scope(&mut self, s: &ScopeRef<'_>) {
        let (name, version) = (s.name.to_string(), s.version.to_string());
        let mut ps = prepared_scope(s.bytes.to_vec(), s.schema_url.to_string(), name, version);
        ps.spans.reserve(s.spans);
        if let Some(pr) = self.read.prepared.resources.last_mut() {
            pr.scopes.push(ps);
        }
    }

    fn span(&mut self, r: &ResourceRef<'_>, at: &SpanAt<'_>) {
        let span = &at.span;
        if let Some(reason) = span.id_problem() {
            self.read.refused += 1;
            self.read.first_refusal.get_or_insert(reason);
            return;
        }
        let Some(pr) = self.read.prepared.resources.last_mut() else {
            return;
        };
        let shared = Shared {
            resource: Lookup::new(r.attributes),
            service: &pr.service,
            service_h: self.service_h,
            summaries: self.summaries,
        };
        let body = self.bytes.slice(at.at.clone());
        let prepared = if at.longest_value > self.max_attr {
            // Rare: truncation works on the decoded span, as for JSON.
            Span::decode(body)
                .ok()
                .and_then(|decoded| decoded_span(decoded, None, &shared, self.max_attr))
        } else {
            Some(span_of(span, &shared, body))
        };
        if let (Some(p), Some(ps)) = (prepared, pr.scopes.last_mut()) {
            ps.spans.push(p);
            self.read.prepared.items += 1;
        }
    }
}

/// Prepares `batch`, skipping spans without valid ids (receivers have already rejected those). `live`:
/// someone listens to commits; `spans`: they want span summaries too.
pub(super) fn prepare(batch: Batch, max_attr: usize, live: bool, spans: bool) -> Prepared {
    let mut out = Prepared::default();
    let summaries = live && spans;
    let (span_count, log_count) = (batch.span_count(), batch.log_count());
    // A batch of one signal may carry the received bytes of its items, in the order met below.
    let wire = (batch.wire)
        .filter(|w| w.len() == span_count + log_count && (span_count == 0 || log_count == 0));
    let mut position = 0;
    for rs in batch.spans {
        let resource = rs.resource.unwrap_or_default();
        let attrs = kv_refs(&resource.attributes);
        let mut pr = resource_of(resource.encode_to_vec(), rs.schema_url, &attrs);
        let shared = Shared {
            resource: Lookup::new(&attrs),
            service: &pr.service,
            service_h: super::index::service_hash(&pr.service),
            summaries,
        };
        let mut scopes = Vec::with_capacity(rs.scope_spans.len());
        for ss in rs.scope_spans {
            let mut ps = scope_of(ss.scope, ss.schema_url);
            ps.spans.reserve(ss.spans.len());
            for span in ss.spans {
                position += 1;
                let raw = wire.as_ref().and_then(|w| w.item(position - 1));
                ps.spans.extend(decoded_span(span, raw, &shared, max_attr));
            }
            out.items += ps.spans.len();
            scopes.push(ps);
        }
        pr.scopes = scopes;
        out.resources.push(pr);
    }
    position = 0;
    for rl in batch.logs {
        let resource = rl.resource.unwrap_or_default();
        let attrs = kv_refs(&resource.attributes);
        let mut pr = resource_of(resource.encode_to_vec(), rl.schema_url, &attrs);
        let resource_lookup = Lookup::new(&attrs);
        for sl in rl.scope_logs {
            let mut ps = scope_of(sl.scope, sl.schema_url);
            for mut log in sl.log_records {
                position += 1;
                let cut = truncate(&mut log.attributes, max_attr);
                let facts = facts::facts_of_log(&log, resource_lookup);
                let summary = live.then(|| LogSummary::new(0, &log, &facts, &pr.service));
                let body = body_of(&log, wire.as_ref(), position - 1, cut);
                ps.logs.push(PreparedLog {
                    // Log records have no id: identical content from the same resource and scope is a retry.
                    hash: hash16(&[&pr.meta.hash, &ps.meta.hash, &body]),
                    time_ns: if log.time_unix_nano > 0 {
                        log.time_unix_nano
                    } else {
                        log.observed_time_unix_nano
                    },
                    trace_id: (!log.trace_id.is_empty()).then_some(log.trace_id),
                    span_id: (!log.span_id.is_empty()).then_some(log.span_id),
                    severity: log.severity_number,
                    facts,
                    body,
                    summary: Cell::new(summary),
                });
            }
            out.items += ps.logs.len();
            pr.scopes.push(ps);
        }
        out.resources.push(pr);
    }
    out
}

/// An item's stored encoding: the bytes it arrived as, unless it came decoded from elsewhere (JSON, an
/// importer) or truncation changed it.
fn body_of<M: Message>(item: &M, wire: Option<&Wire>, position: usize, changed: bool) -> Bytes {
    match wire.filter(|_| !changed).and_then(|w| w.item(position)) {
        Some(raw) => raw,
        None => Bytes::from(item.encode_to_vec()),
    }
}
