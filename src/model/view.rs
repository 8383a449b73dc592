//! OTLP trace requests read where they lie. Decoding a request into prost's owned messages allocates
//! every string, id and attribute, and those allocations (mostly cache misses on cold free lists) were
//! a quarter of the receiving threads' work; the store needs only a few fields of each span and the
//! span's bytes. This reader checks a request as prost would and hands out borrowed views.
//!
//! It declines (and the caller decodes with prost, as before) anything that is not plainly well-formed
//! in the usual way: a singular field given twice (prost would merge or replace), a group, nesting
//! deeper than `MAX_DEPTH`, a varint or tag prost would refuse, a wire type a field does not have. So
//! what is accepted, how it reads and how errors are worded stay prost's.

use super::{any_value::Value, KeyValue, Span};
use std::ops::Range;

/// An attribute value as the facts and the index read it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueRef<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Bytes, arrays, maps and string-table references: never read as facts, never indexed.
    Other,
}

impl<'a> ValueRef<'a> {
    pub fn of(v: &'a Value) -> ValueRef<'a> {
        match v {
            Value::StringValue(s) => ValueRef::Str(s),
            Value::BoolValue(b) => ValueRef::Bool(*b),
            Value::IntValue(i) => ValueRef::Int(*i),
            Value::DoubleValue(d) => ValueRef::Double(*d),
            _ => ValueRef::Other,
        }
    }

    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            ValueRef::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// An attribute: its key and value; `value` is None where the `AnyValue` is missing or empty, as
/// `attrs::get` reads a decoded one.
#[derive(Clone, Copy, Debug)]
pub struct KvRef<'a> {
    pub key: &'a str,
    pub value: Option<ValueRef<'a>>,
}

/// Views of decoded attributes, for code that has prost messages.
pub fn kv_refs(attrs: &[KeyValue]) -> Vec<KvRef<'_>> {
    (attrs.iter())
        .map(|kv| KvRef {
            key: &kv.key,
            value: (kv.value.as_ref())
                .and_then(|v| v.value.as_ref())
                .map(ValueRef::of),
        })
        .collect()
}

/// What the store reads of a span.
#[derive(Clone, Copy, Debug)]
pub struct SpanRef<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status_code: i32,
    pub attributes: &'a [KvRef<'a>],
}

impl<'a> SpanRef<'a> {
    /// Why the span is refused, if it is: an invalid id.
    pub fn id_problem(&self) -> Option<String> {
        super::ids::check_id(self.trace_id, 16, "trace_id")
            .and_then(|_| super::ids::check_id(self.span_id, 8, "span_id"))
            .and_then(|_| {
                if self.parent_span_id.is_empty() {
                    Ok(())
                } else {
                    super::ids::check_id(self.parent_span_id, 8, "parent_span_id")
                }
            })
            .err()
            .map(|reason| format!("span {:?}: {reason}", self.name))
    }

    /// A decoded span, with its attributes' views (`kv_refs`).
    pub fn of(span: &'a Span, attributes: &'a [KvRef<'a>]) -> SpanRef<'a> {
        SpanRef {
            trace_id: &span.trace_id,
            span_id: &span.span_id,
            parent_span_id: &span.parent_span_id,
            name: &span.name,
            kind: span.kind,
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            status_code: span.status.as_ref().map(|s| s.code).unwrap_or(0),
            attributes,
        }
    }
}

/// A `ResourceSpans`' resource: its encoded bytes (empty when absent), schema URL and attributes.
pub struct ResourceRef<'a> {
    pub bytes: &'a [u8],
    pub schema_url: &'a str,
    pub attributes: &'a [KvRef<'a>],
}

/// A `ScopeSpans`' scope, and how many spans it holds.
pub struct ScopeRef<'a> {
    pub bytes: &'a [u8],
    pub schema_url: &'a str,
    pub name: &'a str,
    pub version: &'a str,
    pub spans: usize,
}

/// A span where it lies in the request.
pub struct SpanAt<'a> {
    pub span: SpanRef<'a>,
    /// Its bytes' place in the request.
    pub at: Range<usize>,
    /// The longest string or bytes value among its and its events' attributes (what truncation cuts).
    pub longest_value: usize,
}

/// What a walk meets, in the order prost would decode it.
pub trait Visit {
    fn resource(&mut self, resource: &ResourceRef<'_>);
    fn scope(&mut self, scope: &ScopeRef<'_>);
    fn span(&mut self, resource: &ResourceRef<'_>, span: &SpanAt<'_>);
}

/// Walks an `ExportTraceServiceRequest`, checking it as prost would (every string UTF-8, every field
/// of the wire type it has). None: declined (see the module's note), and `visit` may have seen part of it.
pub fn walk_traces(buf: &[u8], visit: &mut impl Visit) -> Option<()> {
    Walker { buf }.request(visit).ok()
}

/// How deep attribute values may nest (arrays and maps inside values) before the walk declines.
const MAX_DEPTH: u8 = 16;

struct Decline;

type Step<T> = Result<T, Decline>;

enum Field {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Len(Range<usize>),
}

impl Field {
    fn len(self) -> Step<Range<usize>> {
        match self {
            Field::Len(r) => Ok(r),
            _ => Err(Decline),
        }
    }

    fn varint(self) -> Step<u64> {
        match self {
            Field::Varint(v) => Ok(v),
            _ => Err(Decline),
        }
    }

    fn fixed64(self) -> Step<u64> {
        match self {
            Field::Fixed64(v) => Ok(v),
            _ => Err(Decline),
        }
    }

    fn fixed32(self) -> Step<()> {
        match self {
            Field::Fixed32 => Ok(()),
            _ => Err(Decline),
        }
    }
}

/// What a field that is checked but not read must be.
#[derive(Clone, Copy)]
enum Kind {
    Varint,
    Fixed64,
    Fixed32,
    Bytes,
    Text,
}

/// The fields of one message, in order.
struct Fields<'a> {
    buf: &'a [u8],
    at: usize,
    end: usize,
    /// Singular fields met so far (by number, below 32).
    seen: u32,
}

impl Fields<'_> {
    fn varint(&mut self) -> Step<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            if self.at >= self.end {
                return Err(Decline);
            }
            let byte = self.buf[self.at];
            self.at += 1;
            // prost refuses a tenth byte that would overflow 64 bits.
            if i == 9 && byte > 1 {
                return Err(Decline);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(Decline)
    }

    fn skip(&mut self, n: usize) -> Step<Range<usize>> {
        let start = self.at;
        let end = start.checked_add(n).filter(|e| *e <= self.end);
        self.at = end.ok_or(Decline)?;
        Ok(start..self.at)
    }

    /// The next field's number and value, None at the message's end.
    fn next(&mut self) -> Step<Option<(u32, Field)>> {
        if self.at >= self.end {
            return Ok(None);
        }
        // prost refuses a key past 32 bits, and field number 0.
        let key = u32::try_from(self.varint()?).map_err(|_| Decline)?;
        let number = key >> 3;
        if number == 0 {
            return Err(Decline);
        }
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                let r = self.skip(8)?;
                let mut le = [0u8; 8];
                le.copy_from_slice(&self.buf[r]);
                Field::Fixed64(u64::from_le_bytes(le))
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| Decline)?;
                Field::Len(self.skip(n)?)
            }
            5 => {
                self.skip(4)?;
                Field::Fixed32
            }
            // Groups (3, 4), which prost can skip but no OTLP encoder writes, and invalid wire types.
            _ => return Err(Decline),
        };
        Ok(Some((number, field)))
    }

    /// Marks singular field `number` as met; declines the second time.
    fn once(&mut self, number: u32) -> Step<()> {
        let bit = 1u32 << (number % 32);
        if self.seen & bit != 0 {
            return Err(Decline);
        }
        self.seen |= bit;
        Ok(())
    }

    /// `v`, the value of singular field `number`, marked as met (see `once`).
    fn single(&mut self, number: u32, v: Field) -> Step<Field> {
        self.once(number)?;
        Ok(v)
    }
}

#[derive(Clone, Copy)]
struct Walker<'a> {
    buf: &'a [u8],
}

impl<'a> Walker<'a> {
    fn fields(&self, r: Range<usize>) -> Fields<'a> {
        Fields {
            buf: self.buf,
            at: r.start,
            end: r.end,
            seen: 0,
        }
    }

    fn bytes(&self, r: Range<usize>) -> &'a [u8] {
        &self.buf[r]
    }

    fn str(&self, r: Range<usize>) -> Step<&'a str> {
        std::str::from_utf8(&self.buf[r]).map_err(|_| Decline)
    }

    /// A singular field that is checked, not read: given once, of `kind`.
    fn check(&self, f: &mut Fields, n: u32, v: Field, kind: Kind) -> Step<()> {
        f.once(n)?;
        match kind {
            Kind::Varint => v.varint().map(drop),
            Kind::Fixed64 => v.fixed64().map(drop),
            Kind::Fixed32 => v.fixed32(),
            Kind::Bytes => v.len().map(drop),
            Kind::Text => self.str(v.len()?).map(drop),
        }
    }

    // Each message below reads its known fields; any other field is checked for its wire type only, as
    // prost skips unknown fields.
    fn request(&self, visit: &mut impl Visit) -> Step<()> {
        let mut f = self.fields(0..self.buf.len());
        let mut span_attrs = Vec::new();
        while let Some((n, v)) = f.next()? {
            if n == 1 {
                self.resource_spans(v.len()?, visit, &mut span_attrs)?;
            }
        }
        Ok(())
    }

    /// A `ResourceSpans` or `ScopeSpans`, whose fields are alike: its resource or scope (1), how many
    /// scopes or spans (2), and its schema URL (3). Read first, wherever they stand in it.
    fn container(&self, r: Range<usize>) -> Step<(Range<usize>, &'a str, usize)> {
        let (mut head, mut schema_url, mut items) = (0..0, "", 0);
        let mut f = self.fields(r);
        while let Some((n, v)) = f.next()? {
            match n {
                1 => head = f.single(n, v)?.len()?,
                2 => {
                    v.len()?;
                    items += 1;
                }
                3 => schema_url = self.str(f.single(n, v)?.len()?)?,
                _ => {}
            }
        }
        Ok((head, schema_url, items))
    }

    fn resource_spans(
        &self,
        r: Range<usize>,
        visit: &mut impl Visit,
        span_attrs: &mut Vec<KvRef<'a>>,
    ) -> Step<()> {
        let (resource, schema_url, _) = self.container(r.clone())?;
        let mut attributes = Vec::new();
        let mut f = self.fields(resource.clone());
        while let Some((n, v)) = f.next()? {
            match n {
                1 => attributes.push(self.key_value(v.len()?, 0)?.0),
                2 => self.check(&mut f, n, v, Kind::Varint)?,
                3 => self.entity_ref(v.len()?)?,
                _ => {}
            }
        }
        let res = ResourceRef {
            bytes: self.bytes(resource),
            schema_url,
            attributes: &attributes,
        };
        visit.resource(&res);
        let mut f = self.fields(r);
        while let Some((n, v)) = f.next()? {
            if n == 2 {
                self.scope_spans(v.len()?, &res, visit, span_attrs)?;
            }
        }
        Ok(())
    }

    fn entity_ref(&self, r: Range<usize>) -> Step<()> {
        let mut f = self.fields(r);
        while let Some((n, v)) = f.next()? {
            match n {
                1 | 2 => self.check(&mut f, n, v, Kind::Text)?,
                3 | 4 => {
                    self.str(v.len()?)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn scope_spans(
        &self,
        r: Range<usize>,
        res: &ResourceRef<'_>,
        visit: &mut impl Visit,
        span_attrs: &mut Vec<KvRef<'a>>,
    ) -> Step<()> {
        let (scope, schema_url, spans) = self.container(r.clone())?;
        let (mut name, mut version) = ("", "");
        let mut f = self.fields(scope.clone());
        while let Some((n, v)) = f.next()? {
            match n {
                1 => name = self.str(f.single(n, v)?.len()?)?,
                2 => version = self.str(f.single(n, v)?.len()?)?,
                3 => {
                    self.key_value(v.len()?, 0)?;
                }
                4 => self.check(&mut f, n, v, Kind::Varint)?,
                _ => {}
            }
        }
        visit.scope(&ScopeRef {
            bytes: self.bytes(scope),
            schema_url,
            name,
            version,
            spans,
        });
        let mut f = self.fields(r);
        while let Some((n, v)) = f.next()? {
            if n == 2 {
                let at = v.len()?;
                span_attrs.clear();
                let (span, longest_value) = self.span(at.clone(), span_attrs)?;
                let span = SpanRef {
                    attributes: span_attrs,
                    ..span
                };
                visit.span(
                    res,
                    &SpanAt {
                        span,
                        at,
                        longest_value,
                    },
                );
            }
        }
        Ok(())
    }

    /// A span's fields (its attributes go to `attrs`; the returned view has none) and the longest
    /// string or bytes value of its and its events' attributes.
    fn span(&self, r: Range<usize>, attrs: &mut Vec<KvRef<'a>>) -> Step<(SpanRef<'a>, usize)> {
        let mut s = SpanRef {
            trace_id: &[],
            span_id: &[],
            parent_span_id: &[],
            name: "",
            kind: 0,
            start_time_unix_nano: 0,
            end_time_unix_nano: 0,
            status_code: 0,
            attributes: &[],
        };
        let mut longest = 0;
        let mut f = self.fields(r);
        while let Some((n, v)) = f.next()? {
            match n {
                1 => s.trace_id = self.bytes(f.single(n, v)?.len()?),
                2 => s.span_id = self.bytes(f.single(n, v)?.len()?),
                3 => self.check(&mut f, n, v, Kind::Text)?,
                4 => s.parent_span_id = self.bytes(f.single(n, v)?.len()?),
                5 => s.name = self.str(f.single(n, v)?.len()?)?,
                6 => s.kind = f.single(n, v)?.varint()? as i32,
                7 => s.start_time_unix_nano = f.single(n, v)?.fixed64()?,
                8 => s.end_time_unix_nano = f.single(n, v)?.fixed64()?,
                9 => {
                    let (kv, len) = self.key_value(v.len()?, 0)?;
                    longest = longest.max(len);
                    attrs.push(kv);
                }
                10 | 12 | 14 => self.check(&mut f, n, v, Kind::Varint)?,
                11 => longest = longest.max(self.event(v.len()?)?),
                13 => self.link(v.len()?)?,
                15 => s.status_code = self.status(f.single(n, v)?.len()?)?,
                16 => self.check(&mut f, n, v, Kind::Fixed32)?,
                _ => {}
            }
        }
        Ok((s, longest))
    }

    /// An event, checked; the longest string or bytes value of its attributes.
    fn event(&self, r: Range<usize>) -> Step<usize> {
        let mut longest = 0;
        let mut f = self.fields(r);
        while let Some((n, v)) = f.next()? {
            match n {
                1 => self.check(&mut f, n, v, Kind::Fixed64)?,
                2 => self.check(&mut f, n, v, Kind::Text)?,
                3 => longest = longest.max(self.key_value(v.len()?, 0)?.1),
                4 => self.check(&mut f, n, v, Kind::Varint)?,
                _ => {}
            }
        }
        Ok(longest)
    }

    fn link(&self, r: Range<usize>) -> Step<()> {
        let mut f = self.fields(r);
        while let Some((n, v)) = f.next()? {
            match n {
                1 | 2 => self.check(&mut f, n, v, Kind::Bytes)?,
                3 => self.check(&mut f, n, v, Kind::Text)?,
                4 => {
                    self.key_value(v.len()?, 0)?;
                }
                5 => self.check(&mut f, n, v, Kind::Varint)?,
                6 => self.check(&mut f, n, v, Kind::Fixed32)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn status(&self, r: Range<usize>) -> Step<i32> {
        let mut code = 0;
        let mut f = self.fields(r);
        while let Some((n, v)) = f.next()? {
            match n {
                2 => self.check(&mut f, n, v, Kind::Text)?,
                3 => code = f.single(n, v)?.varint()? as i32,
                _ => {}
            }
        }
        Ok(code)
    }

    /// A `KeyValue` and the length of its value when that is a string or bytes.
    fn key_value(&self, r: Range<usize>, depth: u8) -> Step<(KvRef<'a>, usize)> {
        let mut kv = KvRef {
            key: "",
            value: None,
        };
        let mut len = 0;
        let mut f = self.fields(r);
        while let Some((n, v)) = f.next()? {
            match n {
                1 => kv.key = self.str(f.single(n, v)?.len()?)?,
                2 => (kv.value, len) = self.any_value(f.single(n, v)?.len()?, depth)?,
                3 => self.check(&mut f, n, v, Kind::Varint)?,
                _ => {}
            }
        }
        Ok((kv, len))
    }

    /// An `AnyValue`: None when it holds nothing; with the length of a string or bytes value.
    fn any_value(&self, r: Range<usize>, depth: u8) -> Step<(Option<ValueRef<'a>>, usize)> {
        if depth > MAX_DEPTH {
            return Err(Decline);
        }
        let (mut value, mut len) = (None, 0);
        let mut f = self.fields(r);
        while let Some((n, v)) = f.next()? {
            if (1..=8).contains(&n) {
                // One of a oneof: a second would replace (or merge into) the first in prost.
                f.once(0)?;
            }
            value = Some(match n {
                1 => {
                    let r = v.len()?;
                    len = r.len();
                    ValueRef::Str(self.str(r)?)
                }
                2 => ValueRef::Bool(v.varint()? != 0),
                3 => ValueRef::Int(v.varint()? as i64),
                4 => ValueRef::Double(f64::from_bits(v.fixed64()?)),
                5 | 6 => {
                    let mut inner = self.fields(v.len()?);
                    while let Some((m, w)) = inner.next()? {
                        if m == 1 && n == 5 {
                            self.any_value(w.len()?, depth + 1)?;
                        } else if m == 1 {
                            self.key_value(w.len()?, depth + 1)?;
                        }
                    }
                    ValueRef::Other
                }
                7 => {
                    len = v.len()?.len();
                    ValueRef::Other
                }
                8 => {
                    v.varint()?;
                    ValueRef::Other
                }
                _ => continue,
            });
        }
        Ok((value, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attrs::{kv_i64, kv_str};
    use crate::model::{span::Event, ExportTraceServiceRequest, ResourceSpans, ScopeSpans};
    use prost::Message;

    /// Every span the walk met: its view (as text, the attributes' included), place and longest value.
    #[derive(Default)]
    struct Spans(Vec<(String, Range<usize>, usize)>);

    impl Visit for Spans {
        fn resource(&mut self, _: &ResourceRef<'_>) {}
        fn scope(&mut self, _: &ScopeRef<'_>) {}
        fn span(&mut self, _: &ResourceRef<'_>, at: &SpanAt<'_>) {
            self.0
                .push((format!("{:?}", at.span), at.at.clone(), at.longest_value));
        }
    }

    fn request(spans: Vec<Span>) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn span() -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "execute_tool Bash".into(),
            kind: 3,
            start_time_unix_nano: 5,
            end_time_unix_nano: 9,
            attributes: vec![kv_str("gen_ai.tool.name", "Bash"), kv_i64("n", -3)],
            events: vec![Event {
                name: "e".into(),
                attributes: vec![kv_str("long", "x".repeat(300))],
                ..Default::default()
            }],
            status: Some(crate::model::Status {
                code: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn walk(buf: &[u8]) -> Option<Spans> {
        let mut spans = Spans::default();
        walk_traces(buf, &mut spans).map(|_| spans)
    }

    #[test]
    fn a_span_reads_as_prost_decodes_it() {
        let s = span();
        let buf = request(vec![s.clone(), s.clone()]);
        let spans = walk(&buf).expect("accepted").0;
        let attrs = kv_refs(&s.attributes);
        let want = format!("{:?}", SpanRef::of(&s, &attrs));
        assert_eq!(spans.len(), 2);
        for (view, at, longest) in &spans {
            assert_eq!(view, &want);
            assert_eq!(Span::decode(&buf[at.clone()]).expect("its bytes"), s);
            assert_eq!(*longest, 300, "the event's attribute is the longest");
        }
        assert_eq!(walk(&[]).expect("an empty request").0.len(), 0);
    }

    #[test]
    fn what_prost_would_read_otherwise_is_declined() {
        let base = span().encode_to_vec();
        let with = |extra: &[u8]| {
            let mut s = base.clone();
            s.extend_from_slice(extra);
            request_of_raw(&s)
        };
        // The name again (prost: the last wins), a group (prost skips it), a bad UTF-8 in an event
        // name (prost refuses), a wire type the field does not have, a field key past 32 bits, a tenth
        // varint byte over 1.
        let cases: [(&str, Vec<u8>, bool); 6] = [
            ("name twice", with(&[0x2a, 1, b'z']), true),
            ("group", with(&[0x83, 0x03, 0x84, 0x03]), true),
            ("bad UTF-8", with(&[0x5a, 3, 0x12, 1, 0xff]), false),
            ("kind as bytes", with(&[0x32, 0]), false),
            (
                "key past 32 bits",
                with(&[0x80, 0x80, 0x80, 0x80, 0x10, 0]),
                false,
            ),
            (
                "varint overflow",
                with(&[
                    0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                ]),
                false,
            ),
        ];
        for (what, buf, prost_reads) in cases {
            assert!(walk(&buf).is_none(), "{what}: declined");
            let decoded = ExportTraceServiceRequest::decode(buf.as_slice());
            assert_eq!(decoded.is_ok(), prost_reads, "{what}: {decoded:?}");
        }
        assert!(
            walk(&with(&[0xa0, 0x06, 7])).is_some(),
            "an unknown field is skipped"
        );
    }

    #[test]
    fn deep_values_are_left_to_prost() {
        let mut value = crate::model::AnyValue {
            value: Some(Value::StringValue("bottom".into())),
        };
        for depth in 0..40 {
            let mut s = span();
            s.attributes.push(KeyValue {
                key: "deep".into(),
                value: Some(value.clone()),
                ..Default::default()
            });
            let buf = request(vec![s]);
            assert_eq!(walk(&buf).is_some(), depth <= MAX_DEPTH as usize, "{depth}");
            value = crate::model::AnyValue {
                value: Some(Value::ArrayValue(
                    opentelemetry_proto::tonic::common::v1::ArrayValue {
                        values: vec![value],
                    },
                )),
            };
        }
    }

    #[test]
    fn ids_are_checked_like_the_receivers_check_decoded_spans() {
        let mut s = span();
        assert_eq!(SpanRef::of(&s, &[]).id_problem(), None);
        s.parent_span_id = vec![0; 8];
        let problem = SpanRef::of(&s, &[]).id_problem().expect("refused");
        assert!(problem.contains("parent_span_id is all zeros"), "{problem}");
        s.trace_id = vec![1; 3];
        let problem = SpanRef::of(&s, &[]).id_problem().expect("refused");
        assert!(problem.contains("trace_id must be 16 bytes"), "{problem}");
    }

    /// A request around one span's bytes, as given.
    fn request_of_raw(span: &[u8]) -> Vec<u8> {
        let wrap = |number: u8, inner: &[u8]| {
            let mut out = vec![number << 3 | 2];
            let mut n = inner.len();
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out.extend_from_slice(inner);
            out
        };
        wrap(1, &wrap(2, &wrap(2, span)))
    }
}
