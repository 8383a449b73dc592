//! Reading and building OTLP attributes (`KeyValue` / `AnyValue`) without ceremony.

use super::view::{KvRef, ValueRef};
use super::{any_value::Value, AnyValue, KeyValue};
use serde_json::{json, Map, Value as Json};

pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

pub fn str_of(v: &Value) -> Option<&str> {
    ref_str(ValueRef::of(v))
}

/// Integers arrive as ints, doubles or numeric strings depending on the producer.
pub fn i64_of(v: &Value) -> Option<i64> {
    ref_i64(ValueRef::of(v))
}

pub fn f64_of(v: &Value) -> Option<f64> {
    ref_f64(ValueRef::of(v))
}

pub fn bool_of(v: &Value) -> Option<bool> {
    ref_bool(ValueRef::of(v))
}

/// Attributes and a summary of their keys' lengths, for code that asks for many keys (facts asks for
/// ~35 of every span): a key whose length no attribute has is answered without a scan. Asking every
/// key of every attribute was a tenth of the receiving threads' work. It reads views (`model::view`),
/// so spans read in place and decoded ones go the same way.
#[derive(Clone, Copy)]
pub struct Lookup<'a> {
    attrs: &'a [KvRef<'a>],
    lengths: u64,
}

fn length_bit(len: usize) -> u64 {
    1 << (len % 64)
}

impl<'a> Lookup<'a> {
    pub fn new(attrs: &'a [KvRef<'a>]) -> Self {
        let lengths = (attrs.iter()).fold(0, |m, kv| m | length_bit(kv.key.len()));
        Lookup { attrs, lengths }
    }

    /// As `get`.
    pub fn get(&self, key: &str) -> Option<ValueRef<'a>> {
        if self.lengths & length_bit(key.len()) == 0 {
            return None;
        }
        (self.attrs.iter())
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value)
    }

    /// As `first_str`.
    pub fn first_str(&self, keys: &[&str]) -> Option<&'a str> {
        keys.iter().find_map(|k| self.get(k).and_then(ref_str))
    }

    /// As `first_i64`.
    pub fn first_i64(&self, keys: &[&str]) -> Option<i64> {
        keys.iter().find_map(|k| self.get(k).and_then(ref_i64))
    }

    /// As `first_f64`.
    pub fn first_f64(&self, keys: &[&str]) -> Option<f64> {
        keys.iter().find_map(|k| self.get(k).and_then(ref_f64))
    }

    /// As `bool_of` on `get`.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(ref_bool)
    }
}

fn ref_str(v: ValueRef<'_>) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

fn ref_bool(v: ValueRef) -> Option<bool> {
    match v {
        ValueRef::Bool(b) => Some(b),
        v => v.as_str()?.parse().ok(),
    }
}

fn ref_i64(v: ValueRef) -> Option<i64> {
    match v {
        ValueRef::Int(i) => Some(i),
        ValueRef::Double(d) if d.is_finite() => Some(d as i64),
        v => v.as_str()?.trim().parse::<f64>().ok().map(|d| d as i64),
    }
}

fn ref_f64(v: ValueRef) -> Option<f64> {
    match v {
        ValueRef::Int(i) => Some(i as f64),
        ValueRef::Double(d) => Some(d),
        v => v.as_str()?.trim().parse().ok(),
    }
}

/// The first of `keys` present as a non-empty string.
pub fn first_str<'a>(attrs: &'a [KeyValue], keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| get(attrs, k).and_then(str_of))
}

pub fn first_i64(attrs: &[KeyValue], keys: &[&str]) -> Option<i64> {
    keys.iter().find_map(|k| get(attrs, k).and_then(i64_of))
}

pub fn first_f64(attrs: &[KeyValue], keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| get(attrs, k).and_then(f64_of))
}

pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub fn kv_str(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

pub fn kv_i64(key: &str, value: i64) -> KeyValue {
    kv(key, Value::IntValue(value))
}

pub fn kv_f64(key: &str, value: f64) -> KeyValue {
    kv(key, Value::DoubleValue(value))
}

pub fn kv_bool(key: &str, value: bool) -> KeyValue {
    kv(key, Value::BoolValue(value))
}

/// Plain JSON for an attribute value: what the API and the page show.
pub fn to_json(v: Option<&AnyValue>) -> Json {
    match v.and_then(|v| v.value.as_ref()) {
        None => Json::Null,
        Some(Value::StringValue(s)) => json!(s),
        Some(Value::BoolValue(b)) => json!(b),
        Some(Value::IntValue(i)) => json!(i),
        Some(Value::DoubleValue(d)) => json!(d),
        Some(Value::BytesValue(b)) => json!(const_hex::encode(b)),
        Some(Value::ArrayValue(a)) => {
            Json::Array(a.values.iter().map(|v| to_json(Some(v))).collect())
        }
        Some(Value::KvlistValue(l)) => Json::Object(map_of(&l.values)),
        Some(Value::StringValueStrindex(i)) => json!(i),
    }
}

pub fn map_of(attrs: &[KeyValue]) -> Map<String, Json> {
    attrs
        .iter()
        .map(|kv| (kv.key.clone(), to_json(kv.value.as_ref())))
        .collect()
}

/// Cuts string and bytes values longer than `max` bytes, marking the span with `ao.truncated=true` and
/// `ao.original_length.<key>`, so nothing is cut silently. Returns whether anything was cut.
pub fn truncate(attrs: &mut Vec<KeyValue>, max: usize) -> bool {
    let mut notes = Vec::new();
    for kv in attrs.iter_mut() {
        let Some(value) = kv.value.as_mut().and_then(|v| v.value.as_mut()) else {
            continue;
        };
        match value {
            Value::StringValue(s) if s.len() > max => {
                notes.push(kv_i64(
                    &format!("ao.original_length.{}", kv.key),
                    s.len() as i64,
                ));
                let mut cut = max;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
            }
            Value::BytesValue(b) if b.len() > max => {
                notes.push(kv_i64(
                    &format!("ao.original_length.{}", kv.key),
                    b.len() as i64,
                ));
                b.truncate(max);
            }
            _ => {}
        }
    }
    if notes.is_empty() {
        return false;
    }
    if get(attrs, "ao.truncated").is_none() {
        attrs.push(kv_bool("ao.truncated", true));
    }
    attrs.extend(notes);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_answers_like_a_scan() {
        let long = "k".repeat(65);
        let attrs = vec![
            kv_str("a", "first"),
            kv_i64("tokens", 7),
            kv_str("a", "second"),
            kv_str(&long, "long"),
            kv_str("empty", ""),
        ];
        let refs = crate::model::view::kv_refs(&attrs);
        let l = Lookup::new(&refs);
        // "k" and "x"*65 have the length of the long key, modulo 64, and are not there.
        for key in ["a", "tokens", "b", "empty", &long, "k", &"x".repeat(65), ""] {
            assert_eq!(l.get(key), get(&attrs, key).map(ValueRef::of), "{key:?}");
            assert_eq!(l.first_str(&[key]), first_str(&attrs, &[key]), "{key:?}");
            assert_eq!(l.first_i64(&[key]), first_i64(&attrs, &[key]), "{key:?}");
        }
        assert_eq!(l.first_str(&["missing", "empty", "a"]), Some("first"));
        assert_eq!(l.first_f64(&["tokens"]), Some(7.0));
        assert_eq!(l.bool("a"), None);
        assert_eq!(Lookup::new(&[]).get("a"), None);
    }

    #[test]
    fn truncation_is_recorded() {
        let mut attrs = vec![kv_str("big", "é".repeat(10)), kv_str("small", "x")];
        assert!(truncate(&mut attrs, 5));
        assert_eq!(get(&attrs, "big").and_then(str_of), Some("éé"));
        assert_eq!(get(&attrs, "ao.truncated").and_then(bool_of), Some(true));
        assert_eq!(first_i64(&attrs, &["ao.original_length.big"]), Some(20));
        assert!(!truncate(&mut attrs, 5));
    }

    #[test]
    fn numbers_are_read_loosely() {
        let attrs = vec![kv_str("a", "12"), kv_f64("b", 1.5), kv_i64("c", 3)];
        assert_eq!(first_i64(&attrs, &["a"]), Some(12));
        assert_eq!(first_f64(&attrs, &["b"]), Some(1.5));
        assert_eq!(first_i64(&attrs, &["missing", "c"]), Some(3));
    }
}
