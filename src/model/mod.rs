//! The agent view of OTLP: attribute access, ids, and the facts (session key, tool, usage) a span carries.

pub mod attrs;
pub mod facts;
pub mod ids;
pub mod rpc;
pub mod time;

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
}

impl Batch {
    pub fn span_count(&self) -> usize {
        self.spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }

    pub fn log_count(&self) -> usize {
        self.logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.span_count() == 0 && self.log_count() == 0
    }
}
