//! The agent-shaped export request that the ingest and writer benchmarks send.

use aotel::model::attrs::{kv_f64, kv_i64, kv_str};
use aotel::model::{ExportTraceServiceRequest, Resource, ResourceSpans, ScopeSpans, Span};

/// A session-shaped request: an invoke_agent root and tool spans with ~256-byte arguments and results.
/// Ids and the session key look random, as an OpenTelemetry SDK and an agent make them: ids that grow
/// with `seq` would let every index keyed by them append at its end, which real traffic never does.
/// Arguments and results are text as a coding agent's tools carry it (see `window`), because a store
/// that compresses would make short work of a repeated letter.
pub fn request(seq: u64, spans: usize) -> ExportTraceServiceRequest {
    let (hi, lo) = (splitmix(seq), splitmix(!seq));
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&hi.to_be_bytes());
    trace_id[8..].copy_from_slice(&lo.to_be_bytes());
    let t0 = 1_764_000_000_000_000_000u64 + seq * 1_000_000;
    let span_id = |i: u64| splitmix(hi ^ i).to_be_bytes().to_vec();
    let root_id = span_id(0);
    let session = format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        lo >> 32,
        (lo >> 16) & 0xffff,
        lo & 0xfff,
        hi >> 52,
        hi & 0xffff_ffff_ffff
    );
    let mut out = Vec::with_capacity(spans);
    out.push(Span {
        trace_id: trace_id.to_vec(),
        span_id: root_id.clone(),
        name: "invoke_agent bench".into(),
        start_time_unix_nano: t0,
        end_time_unix_nano: t0 + 900_000_000,
        attributes: vec![
            kv_str("gen_ai.operation.name", "invoke_agent"),
            kv_str("gen_ai.agent.name", "bench"),
            kv_str("gen_ai.conversation.id", session.clone()),
            kv_i64("gen_ai.usage.output_tokens", 1234),
            kv_f64("ao.cost.usd", 0.01),
        ],
        ..Default::default()
    });
    let texts = tool_texts();
    for i in 1..spans as u64 {
        let pick = splitmix(hi ^ i) as usize;
        let (args, result) = (&texts.0[pick % TEXTS], &texts.1[(pick >> 32) % TEXTS]);
        out.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id(i),
            parent_span_id: root_id.clone(),
            name: "execute_tool Bash".into(),
            start_time_unix_nano: t0 + i * 1_000_000,
            end_time_unix_nano: t0 + i * 1_000_000 + 500_000,
            attributes: vec![
                kv_str("gen_ai.operation.name", "execute_tool"),
                kv_str("gen_ai.tool.name", "Bash"),
                kv_str("gen_ai.tool.call.id", format!("toolu_{seq}_{i}")),
                kv_str("gen_ai.conversation.id", session.clone()),
                kv_str("gen_ai.tool.call.arguments", args.clone()),
                kv_str("gen_ai.tool.call.result", result.clone()),
            ],
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "bench")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: out,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// What a Bash tool is asked to run, what a file read returns, and what a command prints: this
/// repository's own scripts, sources and README.
const SHELL: &str = concat!(
    include_str!("../../.ci/run"),
    include_str!("../../scripts/perf/common.sh"),
    include_str!("../../scripts/perf/walmap.sh"),
    include_str!("../../scripts/perf/long-trace.sh"),
);
const CODE: &str = include_str!("../../src/store/writer.rs");
const PROSE: &str = include_str!("../../README.md");

/// How many distinct arguments and results the spans pick from: made once, so that the load generator
/// spends no more per span than it did with fixed strings.
const TEXTS: usize = 256;

fn tool_texts() -> &'static (Vec<String>, Vec<String>) {
    static TEXTS_MADE: std::sync::OnceLock<(Vec<String>, Vec<String>)> = std::sync::OnceLock::new();
    TEXTS_MADE.get_or_init(|| {
        let pick = |n: usize| splitmix(0x5eed ^ n as u64);
        let args = (0..TEXTS)
            .map(|n| serde_json::json!({ "command": window(SHELL, pick(n), 228) }).to_string())
            .collect();
        let results = (0..TEXTS)
            .map(|n| window(if n % 2 == 0 { CODE } else { PROSE }, pick(n + TEXTS), 256))
            .collect();
        (args, results)
    })
}

/// About `len` bytes of `text` from a place chosen by `pick`, cut at character boundaries.
fn window(text: &str, pick: u64, len: usize) -> String {
    let boundary = |mut i: usize| {
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = boundary(pick as usize % (text.len() - len));
    text[start..boundary(start + len)].to_string()
}

/// SplitMix64: a bijection, so distinct inputs give distinct ids.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
