//! OTLP receivers (gRPC and HTTP): decode, check ids, hand the batch to the store, answer after commit.

pub mod grpc;
pub mod http;

use crate::model::view::SpanRef;
use crate::model::wire::Wire;
use crate::model::{
    ids, log_count, span_count, Batch, ExportLogsServiceRequest, ExportLogsServiceResponse,
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use crate::store::{InPlace, Reservation, StoreError, Writer};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsPartialSuccess, trace::v1::ExportTracePartialSuccess,
};

/// How long a client told to back off should wait, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// What a receiver dropped from a request: how many items, why, and where they stood among all the
/// request's items (in order), so the received bytes of the others can still be found (`model::wire`).
#[derive(Debug, Default)]
pub struct Rejected {
    pub count: i64,
    pub message: String,
    pub positions: Vec<usize>,
}

/// Drops the items for which `invalid` gives a reason, keeping the first reason.
fn reject<'a, T: 'a>(
    scopes: impl Iterator<Item = &'a mut Vec<T>>,
    what: &str,
    mut invalid: impl FnMut(&T) -> Option<String>,
) -> Rejected {
    let mut out = Rejected::default();
    let mut first_reason = None;
    let mut position = 0;
    for items in scopes {
        items.retain(|item| {
            let reason = invalid(item);
            if let Some(reason) = &reason {
                out.positions.push(position);
                first_reason.get_or_insert_with(|| reason.clone());
            }
            position += 1;
            reason.is_none()
        });
    }
    out.count = out.positions.len() as i64;
    out.message = summary(out.count, what, first_reason);
    out
}

/// Drops spans whose ids are invalid, saying how many and why.
pub fn check_traces(req: &mut ExportTraceServiceRequest) -> Rejected {
    let scopes = (req.resource_spans.iter_mut())
        .flat_map(|rs| &mut rs.scope_spans)
        .map(|ss| &mut ss.spans);
    reject(scopes, "span", |span| SpanRef::of(span, &[]).id_problem())
}

/// Drops log records whose (optional) trace or span id is malformed.
pub fn check_logs(req: &mut ExportLogsServiceRequest) -> Rejected {
    let scopes = (req.resource_logs.iter_mut())
        .flat_map(|rl| &mut rl.scope_logs)
        .map(|sl| &mut sl.log_records);
    reject(scopes, "log record", |log| {
        let mut verdict = Ok(());
        if !log.trace_id.is_empty() {
            verdict = ids::check_id(&log.trace_id, 16, "trace_id");
        }
        if verdict.is_ok() && !log.span_id.is_empty() {
            verdict = ids::check_id(&log.span_id, 8, "span_id");
        }
        verdict.err().map(|reason| format!("log record: {reason}"))
    })
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

/// The received bytes of a protobuf request's items, if they can be found (see `model::wire`).
fn wire_of(raw: Option<Bytes>, decoded: usize, rejected: &Rejected) -> Option<Wire> {
    let mut wire = Wire::of(raw?, decoded)?;
    wire.remove(&rejected.positions);
    Some(wire)
}

/// A request as a receiver got it.
pub enum Received<R> {
    /// Decoded by prost or from JSON; `raw`: the protobuf bytes it came as, if it did.
    Decoded { request: R, raw: Option<Bytes> },
    /// Protobuf, not decoded yet: the store reads it in place where it can (`Writer::read_in_place`).
    Protobuf(Bytes),
}

impl<R> Received<R> {
    /// The protobuf bytes it came as (0 for JSON).
    pub fn size(&self) -> usize {
        match self {
            Received::Decoded { raw, .. } => raw.as_ref().map_or(0, Bytes::len),
            Received::Protobuf(raw) => raw.len(),
        }
    }
}

/// Why an export was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The request could not be read; the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One OTLP signal as both receivers serve it: its export request and answer, how its items are
/// checked, and the batch they become.
pub trait Signal: Send + Sync + 'static {
    type Request: prost::Message + Default + serde::de::DeserializeOwned + Send + 'static;
    type Response: prost::Message + serde::Serialize + Send + 'static;
    /// The request message's name, for error messages.
    const REQUEST: &'static str;
    /// The gRPC service whose `Export` method takes it.
    const GRPC_SERVICE: &'static str;
    /// Counts the items dropped for invalid ids.
    const REJECTED_METRIC: &'static str;
    fn items(req: &Self::Request) -> usize;
    /// Drops the items with invalid ids.
    fn check(req: &mut Self::Request) -> Rejected;
    fn batch(req: Self::Request, wire: Option<Wire>) -> Batch;
    fn answer(rejected: Rejected) -> Self::Response;
    /// Decodes a protobuf request, or leaves it to be read in place.
    fn decode_protobuf(raw: Bytes) -> Result<Received<Self::Request>, ExportError> {
        Ok(Received::Decoded {
            request: decode::<Self>(&raw)?,
            raw: Some(raw),
        })
    }
}

fn decode<S: Signal + ?Sized>(raw: &Bytes) -> Result<S::Request, ExportError> {
    <S::Request as prost::Message>::decode(raw.clone())
        .map_err(|e| ExportError::Invalid(format!("invalid protobuf {}: {e}", S::REQUEST)))
}

pub struct Traces;
pub struct Logs;

impl Signal for Traces {
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    const REQUEST: &'static str = "ExportTraceServiceRequest";
    const GRPC_SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const REJECTED_METRIC: &'static str = "aotel_rejected_spans_total";

    fn items(req: &Self::Request) -> usize {
        span_count(&req.resource_spans)
    }

    fn check(req: &mut Self::Request) -> Rejected {
        check_traces(req)
    }

    fn batch(req: Self::Request, wire: Option<Wire>) -> Batch {
        Batch {
            spans: req.resource_spans,
            wire,
            ..Batch::default()
        }
    }

    /// Read in place by `export`, where the store's settings are known.
    fn decode_protobuf(raw: Bytes) -> Result<Received<Self::Request>, ExportError> {
        Ok(Received::Protobuf(raw))
    }

    fn answer(rejected: Rejected) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: (rejected.count > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: rejected.count,
                error_message: rejected.message,
            }),
        }
    }
}

impl Signal for Logs {
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    const REQUEST: &'static str = "ExportLogsServiceRequest";
    const GRPC_SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const REJECTED_METRIC: &'static str = "aotel_rejected_log_records_total";

    fn items(req: &Self::Request) -> usize {
        log_count(&req.resource_logs)
    }

    fn check(req: &mut Self::Request) -> Rejected {
        check_logs(req)
    }

    fn batch(req: Self::Request, wire: Option<Wire>) -> Batch {
        Batch {
            logs: req.resource_logs,
            wire,
            ..Batch::default()
        }
    }

    fn answer(rejected: Rejected) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: (rejected.count > 0).then_some(ExportLogsPartialSuccess {
                rejected_log_records: rejected.count,
                error_message: rejected.message,
            }),
        }
    }
}

/// Stores a received request of signal `S`.
pub async fn export<S: Signal>(
    writer: &Writer,
    received: Received<S::Request>,
    room: Reservation,
) -> Result<S::Response, ExportError> {
    let (mut request, raw) = match received {
        Received::Decoded { request, raw } => (request, raw),
        Received::Protobuf(raw) => match writer.read_in_place(raw) {
            Ok(read) => return export_in_place::<S>(writer, read, room).await,
            Err(raw) => {
                // Counted, so an exporter whose encoding always takes the slower way shows.
                let metrics = writer.metrics();
                metrics.inc("aotel_trace_requests_decoded_total", String::new(), 1.0);
                (decode::<S>(&raw)?, Some(raw))
            }
        },
    };
    let decoded = S::items(&request);
    let rejected = S::check(&mut request);
    count_invalid(writer, S::REJECTED_METRIC, rejected.count);
    let batch = S::batch(request, wire_of(raw, decoded, &rejected));
    if !batch.is_empty() {
        writer.write_reserved(batch, room).await?;
    }
    Ok(S::answer(rejected))
}

async fn export_in_place<S: Signal>(
    writer: &Writer,
    read: InPlace,
    room: Reservation,
) -> Result<S::Response, ExportError> {
    let count = read.refused() as i64;
    let rejected = Rejected {
        count,
        message: summary(count, "span", read.first_refusal().map(str::to_string)),
        positions: Vec::new(),
    };
    count_invalid(writer, S::REJECTED_METRIC, count);
    if read.spans() > 0 {
        writer.write_in_place(read, room).await?;
    }
    Ok(S::answer(rejected))
}
