//! JSON views of stored spans and logs: the tree a session or trace page draws.

use crate::model::attrs::{map_of, to_json};
use crate::model::facts::span_facts;
use crate::model::ids::to_hex;
use crate::store::{SpanSummary, StoredLog, StoredSpan};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;

#[derive(Debug, Serialize)]
pub struct SpanView {
    #[serde(flatten)]
    pub summary: SpanSummary,
    pub status_message: String,
    pub attributes: Map<String, Value>,
    pub events: Vec<Value>,
    pub links: Vec<Value>,
    pub trace_state: String,
    pub flags: u32,
    pub dropped_attributes_count: u32,
    pub resource: Map<String, Value>,
    pub scope: Value,
    pub children: Vec<SpanView>,
}

pub fn span_view(s: &StoredSpan) -> SpanView {
    let span = &s.span;
    let facts = span_facts(span, &s.resource.0.attributes, &s.service);
    SpanView {
        summary: SpanSummary::of(s.seq, span, &facts),
        status_message: span
            .status
            .as_ref()
            .map(|st| st.message.clone())
            .unwrap_or_default(),
        attributes: map_of(&span.attributes),
        events: span
            .events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name,
                    "time_unix_nano": e.time_unix_nano.to_string(),
                    "attributes": map_of(&e.attributes),
                })
            })
            .collect(),
        links: span
            .links
            .iter()
            .map(|l| {
                serde_json::json!({
                    "trace_id": to_hex(&l.trace_id),
                    "span_id": to_hex(&l.span_id),
                    "attributes": map_of(&l.attributes),
                })
            })
            .collect(),
        trace_state: span.trace_state.clone(),
        flags: span.flags,
        dropped_attributes_count: span.dropped_attributes_count,
        resource: map_of(&s.resource.0.attributes),
        scope: serde_json::json!({ "name": s.scope.0.name, "version": s.scope.0.version }),
        children: Vec::new(),
    }
}

/// Nests spans under their parents (by trace and span id); spans whose parent is missing become roots.
pub fn span_tree(spans: &[StoredSpan]) -> Vec<SpanView> {
    let views: Vec<SpanView> = spans.iter().map(span_view).collect();
    let index: HashMap<(String, String), usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| ((v.summary.trace_id.clone(), v.summary.span_id.clone()), i))
        .collect();
    let parent_of: Vec<Option<usize>> = views
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let p = v.summary.parent_span_id.as_ref()?;
            index
                .get(&(v.summary.trace_id.clone(), p.clone()))
                .copied()
                .filter(|p| *p != i)
        })
        .collect();
    // A span whose ancestry loops back on itself is shown as a root rather than lost.
    let in_cycle = |start: usize| {
        let mut seen = 0;
        let mut at = parent_of[start];
        while let Some(p) = at {
            if p == start || seen > views.len() {
                return true;
            }
            seen += 1;
            at = parent_of[p];
        }
        false
    };
    let parents: Vec<Option<usize>> = (0..views.len())
        .map(|i| if in_cycle(i) { None } else { parent_of[i] })
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); views.len()];
    let mut roots = Vec::new();
    for (i, p) in parents.iter().enumerate() {
        match p {
            Some(p) => children[*p].push(i),
            None => roots.push(i),
        }
    }
    let mut slots: Vec<Option<SpanView>> = views.into_iter().map(Some).collect();
    fn build(
        i: usize,
        slots: &mut [Option<SpanView>],
        children: &[Vec<usize>],
    ) -> Option<SpanView> {
        let mut view = slots[i].take()?;
        view.children = children[i]
            .iter()
            .filter_map(|c| build(*c, slots, children))
            .collect();
        Some(view)
    }
    roots
        .into_iter()
        .filter_map(|r| build(r, &mut slots, &children))
        .collect()
}

pub fn log_view(l: &StoredLog) -> Value {
    let log = &l.log;
    let time = if log.time_unix_nano > 0 {
        log.time_unix_nano
    } else {
        log.observed_time_unix_nano
    };
    serde_json::json!({
        "seq": l.seq,
        "session": l.session,
        "service": l.service,
        "time_unix_nano": time.to_string(),
        "observed_time_unix_nano": log.observed_time_unix_nano.to_string(),
        "severity_number": log.severity_number,
        "severity_text": log.severity_text,
        "event_name": log.event_name,
        "body": to_json(log.body.as_ref()),
        "attributes": map_of(&log.attributes),
        "trace_id": (!log.trace_id.is_empty()).then(|| to_hex(&log.trace_id)),
        "span_id": (!log.span_id.is_empty()).then(|| to_hex(&log.span_id)),
        "resource": map_of(&l.resource.0.attributes),
        "scope": { "name": l.scope.0.name, "version": l.scope.0.version },
    })
}
