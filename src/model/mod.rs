//! The agent view of OTLP: attribute access, ids, and the facts (session key, tool, usage) a span carries.

pub mod attrs;
pub mod facts;
pub mod ids;
pub mod rpc;
pub mod time;
pub mod view;
pub mod wire;

pub use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
        trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    },
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
    trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status},
};

/// The one batch type every ingest path produces and every later stage consumes.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub spans: Vec<ResourceSpans>,
    pub logs: Vec<ResourceLogs>,
    /// The received bytes of the items, when the batch is one OTLP request that came as protobuf;
    /// the store uses them only for a batch of one signal whose item count they match.
    pub wire: Option<wire::Wire>,
}

pub fn span_count(spans: &[ResourceSpans]) -> usize {
    spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

pub fn log_count(logs: &[ResourceLogs]) -> usize {
    logs.iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

impl Batch {
    pub fn span_count(&self) -> usize {
        span_count(&self.spans)
    }

    pub fn log_count(&self) -> usize {
        log_count(&self.logs)
    }

    pub fn is_empty(&self) -> bool {
        self.span_count() == 0 && self.log_count() == 0
    }
}
