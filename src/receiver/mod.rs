//! OTLP receivers (gRPC and HTTP): decode, check ids, hand the batch to the store, answer after commit.

pub mod grpc;
pub mod http;

use crate::model::{
    ids, Batch, ExportLogsServiceRequest, ExportLogsServiceResponse, ExportTraceServiceRequest,
    ExportTraceServiceResponse,
};
use crate::store::{Reservation, StoreError, Writer};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsPartialSuccess, trace::v1::ExportTracePartialSuccess,
};

/// How long a client told to back off should wait, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Drops spans whose ids are invalid, saying how many and why.
pub fn check_traces(req: &mut ExportTraceServiceRequest) -> (i64, String) {
    let mut rejected = 0i64;
    let mut first_reason = None;
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|span| {
                let verdict = ids::check_id(&span.trace_id, 16, "trace_id")
                    .and_then(|_| ids::check_id(&span.span_id, 8, "span_id"))
                    .and_then(|_| {
                        if span.parent_span_id.is_empty() {
                            Ok(())
                        } else {
                            ids::check_id(&span.parent_span_id, 8, "parent_span_id")
                        }
                    });
                match verdict {
                    Ok(()) => true,
                    Err(reason) => {
                        rejected += 1;
                        first_reason
                            .get_or_insert_with(|| format!("span {:?}: {reason}", span.name));
                        false
                    }
                }
            });
        }
    }
    (rejected, summary(rejected, "span", first_reason))
}

/// Drops log records whose (optional) trace or span id is malformed.
pub fn check_logs(req: &mut ExportLogsServiceRequest) -> (i64, String) {
    let mut rejected = 0i64;
    let mut first_reason = None;
    for rl in &mut req.resource_logs {
        for sl in &mut rl.scope_logs {
            sl.log_records.retain(|log| {
                let mut verdict = Ok(());
                if !log.trace_id.is_empty() {
                    verdict = ids::check_id(&log.trace_id, 16, "trace_id");
                }
                if verdict.is_ok() && !log.span_id.is_empty() {
                    verdict = ids::check_id(&log.span_id, 8, "span_id");
                }
                match verdict {
                    Ok(()) => true,
                    Err(reason) => {
                        rejected += 1;
                        first_reason.get_or_insert(format!("log record: {reason}"));
                        false
                    }
                }
            });
        }
    }
    (rejected, summary(rejected, "log record", first_reason))
}

fn count_invalid(writer: &Writer, metric: &'static str, rejected: i64) {
    writer.metrics().inc(
        metric,
        crate::metrics::label("reason", "invalid_id"),
        rejected as f64,
    );
}

fn summary(rejected: i64, what: &str, first: Option<String>) -> String {
    match (rejected, first) {
        (0, _) | (_, None) => String::new(),
        (1, Some(reason)) => format!("1 {what} rejected: {reason}"),
        (n, Some(reason)) => format!("{n} {what}s rejected; first: {reason}"),
    }
}

pub async fn export_traces(
    writer: &Writer,
    mut req: ExportTraceServiceRequest,
    room: Reservation,
) -> Result<ExportTraceServiceResponse, StoreError> {
    let (rejected, message) = check_traces(&mut req);
    count_invalid(writer, "aotel_rejected_spans_total", rejected);
    let batch = Batch {
        spans: req.resource_spans,
        logs: Vec::new(),
    };
    if batch.span_count() > 0 {
        writer.write_reserved(batch, room).await?;
    }
    Ok(ExportTraceServiceResponse {
        partial_success: (rejected > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: message,
        }),
    })
}

pub async fn export_logs(
    writer: &Writer,
    mut req: ExportLogsServiceRequest,
    room: Reservation,
) -> Result<ExportLogsServiceResponse, StoreError> {
    let (rejected, message) = check_logs(&mut req);
    count_invalid(writer, "aotel_rejected_log_records_total", rejected);
    let batch = Batch {
        spans: Vec::new(),
        logs: req.resource_logs,
    };
    if batch.log_count() > 0 {
        writer.write_reserved(batch, room).await?;
    }
    Ok(ExportLogsServiceResponse {
        partial_success: (rejected > 0).then_some(ExportLogsPartialSuccess {
            rejected_log_records: rejected,
            error_message: message,
        }),
    })
}
