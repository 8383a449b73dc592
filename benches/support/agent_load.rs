//! The agent-shaped export request that the ingest and writer benchmarks send.

use aotel::model::attrs::{kv_f64, kv_i64, kv_str};
use aotel::model::{ExportTraceServiceRequest, Resource, ResourceSpans, ScopeSpans, Span};

/// A session-shaped request: an invoke_agent root and tool spans with ~256-byte arguments and results.
/// Ids and the session key look random, as an OpenTelemetry SDK and an agent make them: ids that grow
/// with `seq` would let every index keyed by them append at its end, which real traffic never does.
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
    let args = format!("{{\"command\":\"{}\"}}", "a".repeat(240));
    let result = "r".repeat(256);
    for i in 1..spans as u64 {
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

/// SplitMix64: a bijection, so distinct inputs give distinct ids.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
