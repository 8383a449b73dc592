//! A span's stored body: its OTLP encoding as received, less the fields that the span's own columns
//! hold (trace and span id, parent, name, kind, start and end), which every span would otherwise
//! store twice. Reading a span puts them back from the columns.
//!
//! Those fields are ~77 of a typical tool span's ~830 bytes, so the store is 5-11% smaller
//! (docs/PERFORMANCE.md, sixteenth round). Stripping costs nothing when they come first, as every
//! OpenTelemetry SDK encodes them: the body is then the tail of the received bytes.
//! Bodies stored before (whole encodings) read the same: the columns hold the same values.

use crate::model::wire::fields;
use crate::model::Span;
use bytes::Bytes;
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;
use rusqlite::Row;
use std::ops::Range;

/// The columns a span is read back with, in this order, the body last (see `SpanRow::read`).
pub const SPAN_COLUMNS: &str =
    "trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, body";

/// `opentelemetry.proto.trace.v1.Span` fields kept in columns, and `trace_state`, which an encoder
/// puts between them.
const TRACE_ID: u32 = 1;
const SPAN_ID: u32 = 2;
const TRACE_STATE: u32 = 3;
const PARENT_SPAN_ID: u32 = 4;
const NAME: u32 = 5;
const KIND: u32 = 6;
const START: u32 = 7;
const END: u32 = 8;

fn in_columns(field: u32) -> bool {
    matches!(field, TRACE_ID | SPAN_ID | PARENT_SPAN_ID..=END)
}

/// `encoded` (a whole span) without the fields its columns hold. It shares `encoded`'s buffer when
/// what is left is one piece, as it is for every SDK's encoding; anything it cannot read is kept whole
/// (reading overrides those fields from the columns either way).
pub fn strip(encoded: Bytes) -> Bytes {
    match one_piece(&encoded) {
        Some(range) => encoded.slice(range),
        None => gathered(&encoded),
    }
}

/// Where the fields outside the columns lie, when they are one piece (an empty one if there are none).
fn one_piece(buf: &[u8]) -> Option<Range<usize>> {
    let mut kept: Option<Range<usize>> = None;
    for field in fields(buf, 0..buf.len()) {
        let field = field?;
        if in_columns(field.number) {
            continue;
        }
        match &mut kept {
            None => kept = Some(field.whole),
            Some(k) if k.end == field.whole.start => k.end = field.whole.end,
            Some(_) => return None,
        }
    }
    Some(kept.unwrap_or(0..0))
}

/// `strip` for fields in another order: the kept fields copied together; the whole body when a field
/// cannot be read.
fn gathered(encoded: &Bytes) -> Bytes {
    let mut out = Vec::with_capacity(encoded.len());
    for field in fields(encoded, 0..encoded.len()) {
        let Some(field) = field else {
            return encoded.clone();
        };
        if !in_columns(field.number) {
            out.extend_from_slice(&encoded[field.whole]);
        }
    }
    Bytes::from(out)
}

/// A span row's columns (`SPAN_COLUMNS`), borrowed from the row.
pub struct SpanRow<'r> {
    pub trace_id: &'r [u8],
    pub span_id: &'r [u8],
    /// Empty for a root (the column is NULL).
    pub parent_span_id: &'r [u8],
    pub name: &'r str,
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub body: &'r [u8],
}

impl<'r> SpanRow<'r> {
    /// Reads `SPAN_COLUMNS`, starting at column `first`.
    pub fn read(row: &'r Row<'_>, first: usize) -> rusqlite::Result<SpanRow<'r>> {
        let blob = |i: usize| -> rusqlite::Result<&'r [u8]> {
            Ok(row
                .get_ref(first + i)?
                .as_blob_or_null()?
                .unwrap_or_default())
        };
        Ok(SpanRow {
            trace_id: blob(0)?,
            span_id: blob(1)?,
            parent_span_id: blob(2)?,
            name: row.get_ref(first + 3)?.as_str()?,
            kind: row.get(first + 4)?,
            start_ns: row.get::<_, i64>(first + 5)? as u64,
            end_ns: row.get::<_, i64>(first + 6)? as u64,
            body: blob(7)?,
        })
    }

    /// The span, its fields from the columns where they are kept.
    pub fn decode(&self) -> Result<Span, prost::DecodeError> {
        let mut span = Span::decode(self.body)?;
        span.trace_id = self.trace_id.to_vec();
        span.span_id = self.span_id.to_vec();
        span.parent_span_id = self.parent_span_id.to_vec();
        span.name = self.name.to_string();
        span.kind = self.kind;
        span.start_time_unix_nano = self.start_ns;
        span.end_time_unix_nano = self.end_ns;
        Ok(span)
    }

    /// Appends the span's whole encoding to `out`: the received bytes again where they came as an SDK
    /// encodes them (fields in order, none given twice). A body stored whole is appended as it is.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let first = fields(self.body, 0..self.body.len()).next().flatten();
        if first.as_ref().is_some_and(|f| f.number == TRACE_ID) {
            out.extend_from_slice(self.body);
            return;
        }
        put_bytes(TRACE_ID, self.trace_id, out);
        put_bytes(SPAN_ID, self.span_id, out);
        let mut rest = self.body;
        if let Some(state) = first.filter(|f| f.number == TRACE_STATE) {
            out.extend_from_slice(&rest[state.whole.clone()]);
            rest = &rest[state.whole.end..];
        }
        put_bytes(PARENT_SPAN_ID, self.parent_span_id, out);
        put_bytes(NAME, self.name.as_bytes(), out);
        if self.kind != 0 {
            encode_key(KIND, WireType::Varint, out);
            encode_varint(self.kind as i64 as u64, out);
        }
        for (number, value) in [(START, self.start_ns), (END, self.end_ns)] {
            if value != 0 {
                encode_key(number, WireType::SixtyFourBit, out);
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
        out.extend_from_slice(rest);
    }
}

/// A length-delimited field, left out when empty (as prost leaves out an empty proto3 field).
fn put_bytes(number: u32, value: &[u8], out: &mut Vec<u8>) {
    if !value.is_empty() {
        encode_key(number, WireType::LengthDelimited, out);
        encode_varint(value.len() as u64, out);
        out.extend_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attrs::kv_str;
    use crate::model::{Span, Status};
    use rusqlite::Connection;

    fn span() -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            name: "execute_tool Bash".into(),
            kind: 3,
            start_time_unix_nano: 1_764_000_000_000_000_000,
            end_time_unix_nano: 1_764_000_000_500_000_000,
            attributes: vec![kv_str("gen_ai.tool.call.result", "ok")],
            status: Some(Status {
                code: 2,
                message: "failed".into(),
            }),
            flags: 0x301,
            ..Default::default()
        }
    }

    /// Stores `encoded` as the writer does (columns from `span`, the body stripped), in a table with
    /// the spans table's columns, and reads it back: (stored body, decoded, encoded again).
    fn round_trip(span: &Span, encoded: Vec<u8>) -> (Vec<u8>, Span, Vec<u8>) {
        stored(span, &strip(Bytes::from(encoded)))
    }

    /// A row with `span`'s columns and `body`, read back as `round_trip` says.
    fn stored(span: &Span, body: &[u8]) -> (Vec<u8>, Span, Vec<u8>) {
        let c = Connection::open_in_memory().expect("open");
        c.execute_batch(&format!("CREATE TABLE spans({SPAN_COLUMNS})"))
            .expect("create");
        let parent = (!span.parent_span_id.is_empty()).then_some(&span.parent_span_id);
        c.execute(
            "INSERT INTO spans VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                span.trace_id,
                span.span_id,
                parent,
                span.name,
                span.kind,
                span.start_time_unix_nano as i64,
                span.end_time_unix_nano as i64,
                body,
            ],
        )
        .expect("insert");
        c.query_row(&format!("SELECT {SPAN_COLUMNS} FROM spans"), [], |r| {
            let row = SpanRow::read(r, 0)?;
            let mut again = Vec::new();
            row.encode(&mut again);
            Ok((r.get(7)?, row.decode().expect("decodes"), again))
        })
        .expect("read")
    }

    #[test]
    fn an_sdk_encoding_is_stored_as_its_tail_and_put_back_byte_for_byte() {
        for s in [
            span(),
            Span {
                trace_state: "vendor=x".into(),
                ..span()
            },
            Span {
                parent_span_id: Vec::new(),
                kind: 0,
                name: String::new(),
                ..span()
            },
            Span { kind: -1, ..span() },
        ] {
            let encoded = s.encode_to_vec();
            let (body, decoded, again) = round_trip(&s, encoded.clone());
            assert_eq!(decoded, s);
            assert_eq!(again, encoded, "{s:?}");
            let without = Span {
                trace_state: s.trace_state.clone(),
                attributes: s.attributes.clone(),
                status: s.status.clone(),
                flags: s.flags,
                ..Default::default()
            };
            assert_eq!(
                body,
                without.encode_to_vec(),
                "only the columns' fields are left out"
            );
        }
    }

    #[test]
    fn the_tail_shares_the_received_buffer() {
        let encoded = Bytes::from(span().encode_to_vec());
        let body = strip(encoded.clone());
        let tail = &encoded[encoded.len() - body.len()..];
        assert_eq!(body.as_ptr(), tail.as_ptr());
    }

    #[test]
    fn fields_in_another_order_or_unknown_read_back_the_same() {
        let s = span();
        // The name after everything else, and an unknown field 99 between the ids and the rest.
        let mut encoded = Span {
            name: String::new(),
            ..s.clone()
        }
        .encode_to_vec();
        put_bytes(NAME, s.name.as_bytes(), &mut encoded);
        encode_key(99, WireType::Varint, &mut encoded);
        encode_varint(7, &mut encoded);
        let (body, decoded, again) = round_trip(&s, encoded);
        assert_eq!(decoded, s);
        assert!(
            !body.windows(16).any(|w| w == [1; 16]),
            "no trace id in the body"
        );
        let mut expected = s.encode_to_vec();
        encode_key(99, WireType::Varint, &mut expected);
        encode_varint(7, &mut expected);
        assert_eq!(again, expected, "the unknown field is kept");
    }

    #[test]
    fn what_cannot_be_read_around_and_old_bodies_are_kept_whole() {
        let s = span();
        // A group (field 50) cannot be skipped by length: the body is kept as it came.
        let mut grouped = s.encode_to_vec();
        encode_key(50, WireType::StartGroup, &mut grouped);
        encode_key(50, WireType::EndGroup, &mut grouped);
        let (body, decoded, again) = round_trip(&s, grouped.clone());
        assert_eq!(
            (body, decoded, again),
            (grouped.clone(), s.clone(), grouped)
        );
        // A body stored whole by an older build reads as it did.
        let whole = s.encode_to_vec();
        assert_eq!(stored(&s, &whole), (whole.clone(), s, whole));
    }

    #[test]
    fn a_truncated_field_keeps_the_body_whole() {
        let mut encoded = span().encode_to_vec();
        encoded.extend_from_slice(&[0x4a, 0x7f, 0x01]);
        let stripped = strip(Bytes::from(encoded.clone()));
        assert_eq!(&stripped[..], &encoded[..]);
    }
}
