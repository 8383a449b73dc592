//! Turns a batch into rows ready to bind. Truncation, fact extraction and encoding run here, on the
//! caller's task and so in parallel, leaving the single writer thread nothing but SQL.

use super::{LogSummary, SpanSummary};
use crate::model::attrs::truncate;
use crate::model::facts::{self, LogFacts, SpanFacts};
use crate::model::wire::Wire;
use crate::model::{ids, Batch, InstrumentationScope, Resource};
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
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Option<Vec<u8>>,
    pub name: String,
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub status: i32,
    pub facts: SpanFacts,
    /// The encoded span: as received when it came as protobuf and was not truncated.
    pub body: Bytes,
    /// Attribute index hashes (store::index).
    pub attr_hashes: Vec<i64>,
    /// The one of them that names its session (`index::span_hashes`).
    pub session_hash: Option<i64>,
    /// Built only while the live view wants spans; the writer takes it at commit and fills in `seq`.
    pub summary: Cell<Option<SpanSummary>>,
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

fn meta<M: Message>(m: &M, schema_url: String) -> Meta {
    let body = m.encode_to_vec();
    Meta {
        hash: hash16(&[&body, schema_url.as_bytes()]),
        schema_url,
        body,
    }
}

fn scope_of(scope: Option<InstrumentationScope>, schema_url: String) -> PreparedScope {
    let scope = scope.unwrap_or_default();
    PreparedScope {
        meta: meta(&scope, schema_url),
        name: scope.name,
        version: scope.version,
        spans: Vec::new(),
        logs: Vec::new(),
    }
}

fn resource_of(resource: &Resource, schema_url: String) -> PreparedResource {
    PreparedResource {
        meta: meta(resource, schema_url),
        service: facts::service_name(&resource.attributes),
        attr_hashes: super::index::hashes(&resource.attributes).collect(),
        scopes: Vec::new(),
    }
}

/// Prepares `batch`, skipping spans without valid ids (receivers have already rejected those). `live`:
/// someone listens to commits; `spans`: they want span summaries too.
pub(super) fn prepare(batch: Batch, max_attr: usize, live: bool, spans: bool) -> Prepared {
    let mut out = Prepared::default();
    let (span_count, log_count) = (batch.span_count(), batch.log_count());
    // A batch of one signal may carry the received bytes of its items, in the order met below.
    let wire = (batch.wire)
        .filter(|w| w.len() == span_count + log_count && (span_count == 0 || log_count == 0));
    let mut position = 0;
    for rs in batch.spans {
        let resource = rs.resource.unwrap_or_default();
        let mut pr = resource_of(&resource, rs.schema_url);
        let service_h = super::index::service_hash(&pr.service);
        for ss in rs.scope_spans {
            let mut ps = scope_of(ss.scope, ss.schema_url);
            for mut span in ss.spans {
                position += 1;
                if ids::check_id(&span.trace_id, 16, "trace_id").is_err()
                    || ids::check_id(&span.span_id, 8, "span_id").is_err()
                {
                    continue;
                }
                let mut cut = truncate(&mut span.attributes, max_attr);
                for event in &mut span.events {
                    cut |= truncate(&mut event.attributes, max_attr);
                }
                let facts = facts::span_facts(&span, &resource.attributes, &pr.service);
                let summary = (live && spans).then(|| SpanSummary::new(0, &span, &facts));
                let body = body_of(&span, wire.as_ref(), position - 1, cut);
                let (attr_hashes, session_hash) =
                    super::index::span_hashes(&span.attributes, service_h);
                ps.spans.push(PreparedSpan {
                    parent_span_id: (!span.parent_span_id.is_empty())
                        .then_some(span.parent_span_id),
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    name: span.name,
                    kind: span.kind,
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    status: span.status.map(|s| s.code).unwrap_or(0),
                    facts,
                    body,
                    attr_hashes,
                    session_hash,
                    summary: Cell::new(summary),
                });
            }
            out.items += ps.spans.len();
            pr.scopes.push(ps);
        }
        out.resources.push(pr);
    }
    position = 0;
    for rl in batch.logs {
        let resource = rl.resource.unwrap_or_default();
        let mut pr = resource_of(&resource, rl.schema_url);
        for sl in rl.scope_logs {
            let mut ps = scope_of(sl.scope, sl.schema_url);
            for mut log in sl.log_records {
                position += 1;
                let cut = truncate(&mut log.attributes, max_attr);
                let facts = facts::log_facts(&log, &resource.attributes);
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
