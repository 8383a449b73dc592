//! Where each span or log record of a received OTLP protobuf request lies in its bytes, so the store
//! keeps an item as it came instead of encoding the decoded message again (that encoding was an eighth
//! of the receiving threads' work).
//!
//! `ExportTraceServiceRequest` and `ExportLogsServiceRequest` have the same shape: field 1 holds the
//! resource entries, whose field 2 holds the scope entries, whose field 2 holds the items. Repeated
//! message fields decode one element per occurrence, in order, so the n-th range found here is the n-th
//! item the decoder produced.

use bytes::Bytes;
use std::ops::Range;

/// A request's bytes and the range of each of its items, in the order the decoder saw them.
#[derive(Debug, Clone)]
pub struct Wire {
    bytes: Bytes,
    items: Vec<Range<usize>>,
}

impl Wire {
    /// Finds the items of a request that decoded successfully into `decoded` items; None if the walk
    /// does not agree (a group-encoded field, say), and the caller encodes instead.
    pub fn of(bytes: Bytes, decoded: usize) -> Option<Wire> {
        let mut items = Vec::with_capacity(decoded);
        walk(&bytes, 0..bytes.len(), 0, &mut items)?;
        (items.len() == decoded).then_some(Wire { bytes, items })
    }

    /// The bytes of item `i` (sharing the request's buffer).
    pub fn item(&self, i: usize) -> Option<Bytes> {
        self.items.get(i).map(|r| self.bytes.slice(r.clone()))
    }

    /// Forgets the items at `positions` (ascending), as a receiver drops rejected items from the
    /// decoded request, so the positions of the others still match.
    pub fn remove(&mut self, positions: &[usize]) {
        let mut next = positions.iter().peekable();
        let mut i = 0;
        self.items.retain(|_| {
            let drop = next.next_if_eq(&&i).is_some();
            i += 1;
            !drop
        });
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Depth 0: the request, 1: a resource entry, 2: a scope entry, whose field 2 entries are the items.
fn walk(buf: &[u8], range: Range<usize>, depth: u8, items: &mut Vec<Range<usize>>) -> Option<()> {
    for field in fields(buf, range) {
        let field = field?;
        if let Some(inner) = field.inner {
            match (depth, field.number) {
                (0, 1) | (1, 2) => walk(buf, inner, depth + 1, items)?,
                (2, 2) => items.push(inner),
                _ => {}
            }
        }
    }
    Some(())
}

/// A field of an encoded message: its number, where it lies with its key, and for a length-delimited
/// field where its contents lie.
pub(crate) struct FieldAt {
    pub number: u32,
    pub whole: Range<usize>,
    pub inner: Option<Range<usize>>,
}

/// The fields of the message in `buf[range]`, in order. An item is None where a field cannot be read
/// (a group, a field running past the end), and nothing follows it.
pub(crate) fn fields(
    buf: &[u8],
    range: Range<usize>,
) -> impl Iterator<Item = Option<FieldAt>> + '_ {
    let end = range.end;
    let mut at = range.start;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let start = at;
        let field = (|| {
            let tag = varint(buf, &mut at, end)?;
            let mut inner = None;
            match tag & 7 {
                0 => {
                    varint(buf, &mut at, end)?;
                }
                1 => at = at.checked_add(8)?,
                5 => at = at.checked_add(4)?,
                2 => {
                    let len = usize::try_from(varint(buf, &mut at, end)?).ok()?;
                    let contents = at..at.checked_add(len)?;
                    at = contents.end;
                    inner = Some(contents);
                }
                _ => return None,
            }
            if at > end {
                return None;
            }
            Some(FieldAt {
                number: u32::try_from(tag >> 3).ok()?,
                whole: start..at,
                inner,
            })
        })();
        if field.is_none() {
            at = end;
        }
        Some(field)
    })
}

fn varint(buf: &[u8], at: &mut usize, end: usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if *at >= end {
            return None;
        }
        let byte = buf[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attrs::kv_str;
    use crate::model::{
        ExportLogsServiceRequest, ExportTraceServiceRequest, LogRecord, Resource, ResourceLogs,
        ResourceSpans, ScopeLogs, ScopeSpans, Span,
    };
    use prost::Message;

    fn span(n: u8) -> Span {
        Span {
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            name: format!("span {n}"),
            attributes: vec![kv_str("k", "v".repeat(n as usize * 40))],
            ..Default::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        let scope = |spans: Vec<Span>| ScopeSpans {
            spans,
            schema_url: "s".into(),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv_str("service.name", "a")],
                        ..Default::default()
                    }),
                    scope_spans: vec![scope(vec![span(1), span(2)]), scope(vec![])],
                    schema_url: "r".into(),
                },
                ResourceSpans {
                    scope_spans: vec![scope(vec![span(3)])],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn finds_every_span_in_order() {
        let bytes = Bytes::from(request().encode_to_vec());
        let wire = Wire::of(bytes, 3).expect("walks");
        assert_eq!(wire.len(), 3);
        for (i, n) in [1u8, 2, 3].into_iter().enumerate() {
            let raw = wire.item(i).expect("item");
            assert_eq!(Span::decode(raw).expect("decodes"), span(n));
        }
        assert!(wire.item(3).is_none());
    }

    #[test]
    fn log_requests_have_the_same_shape() {
        let log = |n: u8| LogRecord {
            time_unix_nano: n as u64,
            ..Default::default()
        };
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![log(1), log(2)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let wire = Wire::of(Bytes::from(req.encode_to_vec()), 2).expect("walks");
        let raw = wire.item(1).expect("item");
        assert_eq!(LogRecord::decode(raw).expect("decodes"), log(2));
    }

    #[test]
    fn a_count_that_disagrees_gives_none() {
        let bytes = Bytes::from(request().encode_to_vec());
        assert!(Wire::of(bytes, 2).is_none());
    }

    #[test]
    fn truncated_or_group_encoded_input_gives_none() {
        let bytes = request().encode_to_vec();
        assert!(Wire::of(Bytes::copy_from_slice(&bytes[..bytes.len() - 3]), 3).is_none());
        // Field 7 as a start-group (wire type 3) at the top level.
        let mut grouped = vec![(7 << 3) | 3];
        grouped.extend_from_slice(&bytes);
        assert!(Wire::of(Bytes::from(grouped), 3).is_none());
    }

    #[test]
    fn removed_positions_keep_the_others_aligned() {
        let bytes = Bytes::from(request().encode_to_vec());
        let mut wire = Wire::of(bytes, 3).expect("walks");
        wire.remove(&[0, 2]);
        assert_eq!(wire.len(), 1);
        let raw = wire.item(0).expect("item");
        assert_eq!(Span::decode(raw).expect("decodes"), span(2));
    }
}
