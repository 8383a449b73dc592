//! Deterministic mutation fuzzing on stable Rust (no nightly, no cargo-fuzz): a seeded xorshift
//! mutator (bit flips, byte sets, inserts, deletes, duplications, splices, dictionary tokens) over the
//! committed seed corpora in `fuzz/corpus/<target>/`. Every target must answer with Ok or an error,
//! never a panic; inputs that were accepted join the in-memory corpus, so mutation walks further into
//! valid space. Inputs under `fuzz/regressions/<target>/` (crashes once found) are replayed first.
//!
//! `cargo test --test fuzz` runs a bounded number of iterations per target (a few seconds in total).
//! `AOTEL_FUZZ_SECONDS=600 cargo test --release --test fuzz -- --nocapture --test-threads 8` runs every
//! target for that long, concurrently, and prints executions per second and counts per target.
//! `AOTEL_FUZZ_SEED=n` changes the seed (the default is fixed, so CI runs are reproducible).

mod common;

use aotel::model::view::{self, kv_refs, ResourceRef, ScopeRef, SpanAt, SpanRef, Visit};
use aotel::model::wire::Wire;
use aotel::model::{attrs, facts, ExportLogsServiceRequest, ExportTraceServiceRequest, Span};
use aotel::query::traceql;
use aotel::receiver::{check_logs, check_traces};
use aotel::store::{body, index, SpanSummary};
use prost::Message;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// xorshift64*: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, 0xfe, 0xc0, 0xe0, 0xf0, b'{', b'}', b'[', b']', b'"', b':', b',',
    b'\\', b'\n', b'0', b'9', b'-', b'e', b'.',
];

fn mutate(rng: &mut Rng, base: &[u8], corpus: &[Vec<u8>], dict: &[&[u8]], max: usize) -> Vec<u8> {
    let mut out = base.to_vec();
    let rounds = 1 << rng.below(4);
    for _ in 0..rounds {
        let len = out.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                out.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let chunk = out[i..i + n].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, chunk);
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            6 | 7 if !dict.is_empty() => {
                let tok = dict[rng.below(dict.len())];
                let i = rng.below(len + 1);
                if rng.below(2) == 0 || len == 0 {
                    out.splice(i..i, tok.iter().copied());
                } else {
                    let end = (i + 1 + rng.below(8)).min(len);
                    out.splice(i..end, tok.iter().copied());
                }
            }
            8 if len > 0 => {
                let i = rng.below(len);
                out[i] = out[i].wrapping_add((rng.below(33) as u8).wrapping_sub(16));
            }
            9 if len > 1 => {
                out.truncate(rng.below(len));
            }
            _ => {}
        }
    }
    out.truncate(max);
    out
}

const JSON_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"false",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"{\"kvlistValue\":{\"values\":[",
    b"{\"arrayValue\":{\"values\":[",
    b"\"intValue\":\"9223372036854775808\"",
    b"\"bytesValue\":\"!!\"",
    b"\"traceId\":\"\"",
    b"\"spanId\":\"00\"",
    b"\"stringValue\":",
    b"\"doubleValue\":\"NaN\"",
    b"\"timestamp\":",
    b"\"event_type\":\"post_tool\"",
    b"\"tool_use_id\":",
    b"\"type\":\"assistant\"",
    b"\"content\":[",
    b"\"tool_use\"",
    b"\"tool_result\"",
    b"\"usage\":{",
    b"\"input_tokens\":",
];

const TRACEQL_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"(",
    b")",
    b"&&",
    b"||",
    b"=",
    b"!=",
    b"=~",
    b"!~",
    b">",
    b">=",
    b"<",
    b"<=",
    b"span.",
    b"resource.",
    b".",
    b"name",
    b"status",
    b"statusMessage",
    b"duration",
    b"kind",
    b"error",
    b"ok",
    b"unset",
    b"server",
    b"internal",
    b"\"",
    b"`",
    b"1s",
    b"1.5ms",
    b"-3",
    b"1e308",
    b"99999999999999999999",
    b"true",
    b"nil",
    b"\\",
    b"\"(a*)*b\"",
    b"\"[\"",
    b"\"\\\\\"",
    b"|",
    b"count()",
    b"span:",
    b"event.",
    b"!",
];

/// Where a target's inputs come from and what it does with one.
struct Target {
    name: &'static str,
    corpora: &'static [&'static str],
    dict: Dict,
    max_len: usize,
    /// Short-run iterations (the CI budget).
    ci_iterations: usize,
    run: Run,
}

/// One execution: refused with an error (None), or accepted with how many spans, records or events of
/// substance it made (Some(n)). A panic is a crash.
type Run = Box<dyn FnMut(&[u8]) -> Verdict>;
type Verdict = Option<usize>;
type Dict = &'static [&'static [u8]];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn load_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn fuzz(mut t: Target) {
    let seconds: Option<u64> = std::env::var("AOTEL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let seed: u64 = std::env::var("AOTEL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_A07E);
    let mut corpus: Vec<Vec<u8>> = t
        .corpora
        .iter()
        .flat_map(|c| load_dir(&root().join("corpus").join(c)))
        .map(|(_, b)| b)
        .collect();
    assert!(!corpus.is_empty(), "{}: empty seed corpus", t.name);
    let seeds = corpus.len();

    // Known crashes first: each must now be handled.
    for (path, bytes) in load_dir(&root().join("regressions").join(t.name)) {
        let r = catch_unwind(AssertUnwindSafe(|| (t.run)(&bytes)));
        assert!(
            r.is_ok(),
            "{}: regression {} panics again",
            t.name,
            path.display()
        );
    }
    for input in corpus.clone() {
        let r = catch_unwind(AssertUnwindSafe(|| (t.run)(&input)));
        assert!(r.is_ok(), "{}: a seed input panics", t.name);
    }

    let mut rng = Rng::new(seed ^ fnv(t.name.as_bytes()));
    let started = Instant::now();
    let deadline = seconds.map(|s| started + Duration::from_secs(s));
    let (mut execs, mut accepted, mut refused) = (0u64, 0u64, 0u64);
    let mut crashes: Vec<PathBuf> = Vec::new();
    const MAX_CORPUS: usize = 512;
    loop {
        match deadline {
            Some(d) if execs % 64 == 0 && Instant::now() >= d => break,
            None if execs as usize >= t.ci_iterations => break,
            _ => {}
        }
        let base = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base, &corpus, t.dict, t.max_len);
        execs += 1;
        match catch_unwind(AssertUnwindSafe(|| (t.run)(&input))) {
            Ok(Some(substance)) => {
                accepted += 1;
                // Without coverage feedback, accepted inputs that made something are the interesting
                // ones: keep a window of them. (Keeping empty ones would shrink the corpus to `{}`.)
                if substance == 0 {
                } else if corpus.len() < MAX_CORPUS {
                    corpus.push(input);
                } else {
                    let i = seeds + rng.below(MAX_CORPUS - seeds);
                    corpus[i] = input;
                }
            }
            Ok(None) => refused += 1,
            Err(_) => {
                let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("{}-{:016x}", t.name, fnv(&input)));
                let _ = std::fs::write(&path, &input);
                crashes.push(path);
                if crashes.len() >= 10 {
                    break;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {:<18} {:>10} execs in {:>6.1}s = {:>8.0}/s; accepted {}, refused {}, corpus {} ({} seeds, mean {} B), crashes {}",
        t.name,
        execs,
        secs,
        execs as f64 / secs.max(1e-9),
        accepted,
        refused,
        corpus.len(),
        seeds,
        corpus.iter().map(Vec::len).sum::<usize>() / corpus.len(),
        crashes.len()
    );
    assert!(
        crashes.is_empty(),
        "{}: {} crashing inputs saved: {:?} (copy them to fuzz/regressions/{}/)",
        t.name,
        crashes.len(),
        crashes,
        t.name
    );
    assert!(accepted > 0, "{}: no mutant was ever accepted", t.name);
}

// ------------------------------------------------------------------------------------------------
// What each target does with an input: decode, then everything aotel does with a decoded batch
// before SQL (id checks, truncation, facts, index hashes, live summaries, re-encoding).

const MAX_ATTR: usize = 64;

fn check_truncated(attrs: &[aotel::model::KeyValue]) {
    use aotel::model::any_value::Value;
    for kv in attrs {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => assert!(s.len() <= MAX_ATTR, "{} not truncated", kv.key),
            Some(Value::BytesValue(b)) => assert!(b.len() <= MAX_ATTR, "{} not truncated", kv.key),
            _ => {}
        }
    }
}

fn map_span(mut span: Span, resource: &[aotel::model::KeyValue], service: &str) {
    attrs::truncate(&mut span.attributes, MAX_ATTR);
    check_truncated(&span.attributes);
    for event in &mut span.events {
        attrs::truncate(&mut event.attributes, MAX_ATTR);
    }
    let f = facts::span_facts(&span, resource, service);
    let _ = SpanSummary::of(0, &span, &f);
    let _ = index::hashes(&kv_refs(&span.attributes)).count();
    let _ = serde_json::to_string(&attrs::map_of(&span.attributes));
    let body = span.encode_to_vec();
    let again = Span::decode(body.as_slice()).expect("a stored span body decodes");
    assert_eq!(again.encode_to_vec(), body, "span body round trip");
}

fn map_traces(mut req: ExportTraceServiceRequest) -> usize {
    let mut n = 0;
    let aotel::receiver::Rejected {
        count: rejected,
        message,
        ..
    } = check_traces(&mut req);
    assert_eq!(rejected == 0, message.is_empty());
    for rs in req.resource_spans {
        let resource = rs.resource.unwrap_or_default();
        let service = facts::service_name(&resource.attributes);
        let _ = index::hashes(&kv_refs(&resource.attributes)).count();
        for ss in rs.scope_spans {
            for span in ss.spans {
                assert_eq!(span.trace_id.len(), 16);
                assert_eq!(span.span_id.len(), 8);
                map_span(span, &resource.attributes, &service);
                n += 1;
            }
        }
    }
    n
}

fn map_logs(mut req: ExportLogsServiceRequest) -> usize {
    let mut n = 0;
    let aotel::receiver::Rejected {
        count: rejected,
        message,
        ..
    } = check_logs(&mut req);
    assert_eq!(rejected == 0, message.is_empty());
    for rl in req.resource_logs {
        let resource = rl.resource.unwrap_or_default();
        for sl in rl.scope_logs {
            for mut log in sl.log_records {
                attrs::truncate(&mut log.attributes, MAX_ATTR);
                check_truncated(&log.attributes);
                let f = facts::log_facts(&log, &resource.attributes);
                let _ = attrs::to_json(log.body.as_ref()).to_string();
                let _ = f;
                let _ = log.encode_to_vec();
                n += 1;
            }
        }
    }
    n
}

/// Our own encoding of what we decoded must decode to the same encoding.
fn reencodes<M: Message + Default>(m: &M) {
    let once = m.encode_to_vec();
    let twice = M::decode(once.as_slice())
        .expect("aotel's own encoding decodes")
        .encode_to_vec();
    assert_eq!(once, twice);
}

/// The received bytes the store keeps for each item (`model::wire`) must decode to that item; a walk
/// that cannot tell gives None (and the store encodes instead), never a wrong item.
fn wire_agrees<T: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8], items: Vec<&T>) {
    let Some(wire) = Wire::of(bytes::Bytes::copy_from_slice(data), items.len()) else {
        return;
    };
    for (i, item) in items.into_iter().enumerate() {
        let raw = wire.item(i).expect("the wire has every item");
        assert_eq!(&T::decode(raw).expect("a received item decodes"), item);
    }
}

/// What a walk in place (`model::view`) saw, written down to compare with prost's decoding.
#[derive(Default, PartialEq, Debug)]
struct Seen(Vec<String>);

impl Visit for Seen {
    fn resource(&mut self, r: &ResourceRef<'_>) {
        let decoded =
            aotel::model::Resource::decode(r.bytes).expect("an accepted resource decodes");
        assert_eq!(
            format!("{:?}", r.attributes),
            format!("{:?}", kv_refs(&decoded.attributes))
        );
        self.0
            .push(format!("resource {:?} {:?}", decoded, r.schema_url));
    }
    fn scope(&mut self, s: &ScopeRef<'_>) {
        let decoded = aotel::model::InstrumentationScope::decode(s.bytes).expect("a scope decodes");
        assert_eq!(
            (s.name, s.version),
            (decoded.name.as_str(), decoded.version.as_str())
        );
        (self.0).push(format!(
            "scope {:?} {:?} with {} spans",
            decoded, s.schema_url, s.spans
        ));
    }
    fn span(&mut self, _: &ResourceRef<'_>, at: &SpanAt<'_>) {
        self.0.push(format!(
            "span {:?} at {:?}, longest {}",
            at.span, at.at, at.longest_value
        ));
    }
}

/// The same, from prost's decoding: a walk in place must agree wherever it does not decline.
fn seen_by_prost(data: &[u8], req: &ExportTraceServiceRequest) -> Seen {
    let mut seen = Seen::default();
    let copy = bytes::Bytes::copy_from_slice(data);
    let wire = Wire::of(copy.clone(), aotel::model::span_count(&req.resource_spans))
        .expect("a request read in place has no group fields, so the wire walk finds its spans");
    let mut i = 0;
    for rs in &req.resource_spans {
        let resource = rs.resource.clone().unwrap_or_default();
        seen.0
            .push(format!("resource {:?} {:?}", resource, rs.schema_url));
        for ss in &rs.scope_spans {
            let scope = ss.scope.clone().unwrap_or_default();
            (seen.0).push(format!(
                "scope {:?} {:?} with {} spans",
                scope,
                ss.schema_url,
                ss.spans.len()
            ));
            for span in &ss.spans {
                let attrs = kv_refs(&span.attributes);
                let longest = (span.attributes.iter())
                    .chain(span.events.iter().flat_map(|e| &e.attributes))
                    .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        aotel::model::any_value::Value::StringValue(s) => Some(s.len()),
                        aotel::model::any_value::Value::BytesValue(b) => Some(b.len()),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                let raw = wire.item(i).expect("every span has its bytes");
                let start = raw.as_ptr() as usize - copy.as_ptr() as usize;
                let at = start..start + raw.len();
                seen.0.push(format!(
                    "span {:?} at {:?}, longest {}",
                    SpanRef::of(span, &attrs),
                    at,
                    longest
                ));
                i += 1;
            }
        }
    }
    seen
}

fn in_place_agrees(data: &[u8], decoded: Option<&ExportTraceServiceRequest>) {
    let mut checked = Seen::default();
    if view::walk_traces(data, &mut checked).is_none() {
        return;
    }
    let req = decoded.expect("a request the walk in place accepts, prost accepts too");
    assert_eq!(
        checked,
        seen_by_prost(data, req),
        "walk in place and prost disagree"
    );
}

/// What the store keeps of each accepted span, its bytes less the fields its columns hold
/// (`store::body`), reads back as prost read the span, and so does the encoding put back together.
fn stored_spans_read_back(data: &[u8], req: &ExportTraceServiceRequest) {
    let spans = (req.resource_spans.iter())
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans);
    let Some(wire) = Wire::of(bytes::Bytes::copy_from_slice(data), spans.clone().count()) else {
        return;
    };
    for (i, span) in spans.enumerate() {
        let body = body::strip(wire.item(i).expect("every span has its bytes"));
        let row = body::SpanRow {
            trace_id: &span.trace_id,
            span_id: &span.span_id,
            parent_span_id: &span.parent_span_id,
            name: &span.name,
            kind: span.kind,
            start_ns: span.start_time_unix_nano,
            end_ns: span.end_time_unix_nano,
            body: &body,
        };
        assert_eq!(&row.decode().expect("a stored body decodes"), span);
        let mut whole = Vec::new();
        row.encode(&mut whole);
        assert_eq!(
            &Span::decode(whole.as_slice()).expect("put back, it decodes"),
            span
        );
    }
}

fn proto_traces(data: &[u8]) -> Verdict {
    let req = ExportTraceServiceRequest::decode(data).ok();
    in_place_agrees(data, req.as_ref());
    let req = req?;
    stored_spans_read_back(data, &req);
    reencodes(&req);
    let spans = (req.resource_spans.iter())
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans);
    wire_agrees(data, spans.collect());
    Some(map_traces(req))
}

fn proto_logs(data: &[u8]) -> Verdict {
    let req = ExportLogsServiceRequest::decode(data).ok()?;
    reencodes(&req);
    let logs = (req.resource_logs.iter())
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records);
    wire_agrees(data, logs.collect());
    Some(map_logs(req))
}

fn otlp_json(data: &[u8]) -> Verdict {
    let traces = serde_json::from_slice::<ExportTraceServiceRequest>(data);
    let logs = serde_json::from_slice::<ExportLogsServiceRequest>(data);
    let ok = traces.is_ok() || logs.is_ok();
    let mut n = 0;
    if let Ok(req) = traces {
        let _ = serde_json::to_vec(&req);
        n += map_traces(req);
    }
    if let Ok(req) = logs {
        let _ = serde_json::to_vec(&req);
        n += map_logs(req);
    }
    ok.then_some(n)
}

fn transcript(data: &[u8]) -> Verdict {
    use aotel::ingest::transcript::Transcript;
    // A path with no meta file beside it: the parser sees only the lines.
    let mut t = Transcript::open(Path::new("/nonexistent/aotel-fuzz/session.jsonl"));
    t.push_bytes(data, 0, 1_700_000_000_000_000_000);
    let _ = t.take_warnings();
    match t.render() {
        Some(r) => {
            let n = r.spans.len();
            for span in r.spans {
                assert_eq!(span.trace_id.len(), 16, "rendered trace id");
                assert_eq!(span.span_id.len(), 8, "rendered span id");
                map_span(span, &[], r.format.service());
            }
            Some(n)
        }
        None => None,
    }
}

fn legacy_event(data: &[u8]) -> Verdict {
    match aotel::ingest::legacy::check_event(data) {
        Ok(_) => Some(1),
        Err(message) => {
            assert!(!message.is_empty());
            None
        }
    }
}

fn sample_spans() -> Vec<(Span, aotel::model::Resource)> {
    let json = std::fs::read(root().join("corpus/otlp_json/traces-genai.json")).expect("seed");
    let req: ExportTraceServiceRequest = serde_json::from_slice(&json).expect("seed parses");
    req.resource_spans
        .into_iter()
        .flat_map(|rs| {
            let resource = rs.resource.unwrap_or_default();
            rs.scope_spans
                .into_iter()
                .flat_map(|ss| ss.spans)
                .map(move |s| (s, resource.clone()))
        })
        .collect()
}

fn traceql_target() -> impl FnMut(&[u8]) -> Verdict {
    let spans = sample_spans();
    let scope = aotel::model::InstrumentationScope::default();
    move |data| {
        let Ok(text) = std::str::from_utf8(data) else {
            return None;
        };
        let _ = traceql::parse_duration(text);
        match traceql::parse(text) {
            Ok(expr) => {
                for (span, resource) in &spans {
                    let _ = expr.matches(&traceql::SpanRef {
                        span,
                        resource,
                        scope: &scope,
                    });
                }
                Some(1)
            }
            Err(e) => {
                assert!(!e.0.is_empty());
                None
            }
        }
    }
}

/// The real HTTP handlers of a running aotel, over loopback: OTLP protobuf and JSON on the OTLP/HTTP
/// port, legacy events on the API port. Any answer but a 2xx or a 4xx (a 500, a dropped connection) is
/// a crash, and so is a server that no longer answers.
fn http_target() -> impl FnMut(&[u8]) -> Verdict {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(common::TestServer::start());
    let client = reqwest::Client::new();
    move |data| {
        let _keep = &server;
        let json = data.first() == Some(&b'{');
        let (url, ctype) = if json && data.windows(10).any(|w| w == b"event_type") {
            (server.url("/events"), "application/json")
        } else if json {
            let logs = data.windows(12).any(|w| w == b"resourceLogs");
            let path = if logs { "/v1/logs" } else { "/v1/traces" };
            (server.otlp_http(path), "application/json")
        } else {
            let path = if data.len() % 2 == 0 {
                "/v1/traces"
            } else {
                "/v1/logs"
            };
            (server.otlp_http(path), "application/x-protobuf")
        };
        let status = rt.block_on(async {
            client
                .post(&url)
                .header("content-type", ctype)
                .body(data.to_vec())
                .send()
                .await
                .expect("aotel answers")
                .status()
        });
        assert!(
            status.is_success() || status.is_client_error(),
            "{url} answered {status}"
        );
        // An empty request is accepted too, but teaches the corpus nothing.
        status.is_success().then_some(usize::from(data.len() > 32))
    }
}

fn target(name: &'static str) -> Target {
    let (corpora, dict, max_len, ci_iterations, run): (
        &'static [&'static str],
        Dict,
        usize,
        usize,
        Run,
    ) = match name {
        "otlp_proto_traces" => (
            &["otlp_proto_traces"],
            &[],
            1 << 16,
            100_000,
            Box::new(proto_traces),
        ),
        "otlp_proto_logs" => (
            &["otlp_proto_logs"],
            &[],
            1 << 16,
            100_000,
            Box::new(proto_logs),
        ),
        "otlp_json" => (
            &["otlp_json"],
            JSON_DICT,
            1 << 16,
            50_000,
            Box::new(otlp_json),
        ),
        "transcript" => (
            &["transcript"],
            JSON_DICT,
            1 << 17,
            5_000,
            Box::new(transcript),
        ),
        "legacy_event" => (
            &["legacy_event"],
            JSON_DICT,
            1 << 14,
            100_000,
            Box::new(legacy_event),
        ),
        "traceql" => (
            &["traceql"],
            TRACEQL_DICT,
            1 << 10,
            50_000,
            Box::new(traceql_target()),
        ),
        "http" => (
            &[
                "otlp_proto_traces",
                "otlp_proto_logs",
                "otlp_json",
                "legacy_event",
            ],
            JSON_DICT,
            1 << 16,
            3_000,
            Box::new(http_target()),
        ),
        other => panic!("unknown target {other}"),
    };
    Target {
        name,
        corpora,
        dict,
        max_len,
        ci_iterations,
        run,
    }
}

#[test]
fn fuzz_otlp_proto_traces() {
    fuzz(target("otlp_proto_traces"));
}

#[test]
fn fuzz_otlp_proto_logs() {
    fuzz(target("otlp_proto_logs"));
}

#[test]
fn fuzz_otlp_json() {
    fuzz(target("otlp_json"));
}

#[test]
fn fuzz_transcript() {
    fuzz(target("transcript"));
}

#[test]
fn fuzz_legacy_event() {
    fuzz(target("legacy_event"));
}

#[test]
fn fuzz_traceql() {
    fuzz(target("traceql"));
}

#[test]
fn fuzz_http_handlers() {
    fuzz(target("http"));
}

/// The mutator itself is deterministic: the same seed gives the same inputs (so a CI failure replays).
#[test]
fn mutation_is_deterministic() {
    let corpus = vec![b"{\"a\":[1,2,3]}".to_vec(), b"hello".to_vec()];
    let run = || {
        let mut rng = Rng::new(42);
        (0..100)
            .map(|_| mutate(&mut rng, &corpus[0], &corpus, JSON_DICT, 256))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
    assert!(run().iter().any(|m| m != &corpus[0]));
}

/// Regenerates the protobuf seeds from the OTLP/JSON seeds (run by hand after editing those):
/// `cargo test --test fuzz write_protobuf_seeds -- --ignored`.
#[test]
#[ignore]
fn write_protobuf_seeds() {
    for (path, bytes) in load_dir(&root().join("corpus/otlp_json")) {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("seed")
            .to_string();
        if let Ok(req) = serde_json::from_slice::<ExportTraceServiceRequest>(&bytes) {
            if !req.resource_spans.is_empty() {
                let out = root().join(format!("corpus/otlp_proto_traces/{stem}.pb"));
                std::fs::write(out, req.encode_to_vec()).expect("write seed");
            }
        }
        if let Ok(req) = serde_json::from_slice::<ExportLogsServiceRequest>(&bytes) {
            if !req.resource_logs.is_empty() {
                let out = root().join(format!("corpus/otlp_proto_logs/{stem}.pb"));
                std::fs::write(out, req.encode_to_vec()).expect("write seed");
            }
        }
    }
}
