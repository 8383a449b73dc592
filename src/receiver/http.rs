//! OTLP/HTTP: `POST /v1/traces` and `/v1/logs`, protobuf or JSON, optional gzip, answered in kind.

use super::{export, ExportError, Logs, Received, Signal, Traces, RETRY_AFTER_SECS};
use crate::metrics::label;
use crate::store::{Reservation, StoreError, Writer};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message;
use serde::Serialize;
use std::io::Read;

#[derive(Clone)]
struct HttpState {
    writer: Writer,
    max_bytes: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body of every OTLP/HTTP error.
pub use crate::model::rpc::RpcStatus;

/// A refused request: HTTP status, gRPC code for the body, and what was wrong.
struct Refusal {
    status: StatusCode,
    code: i32,
    message: String,
    queue_full: bool,
}

const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;

impl Refusal {
    fn new(status: StatusCode, code: i32, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            queue_full: false,
        }
    }

    fn into_response(self, format: Format) -> Response {
        let status = RpcStatus {
            code: self.code,
            message: self.message,
            details: Vec::new(),
        };
        let mut resp = encode(format, &status, self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}

fn encode<T: Message + Serialize>(format: Format, msg: &T, status: StatusCode) -> Response {
    let body = match format {
        Format::Protobuf => msg.encode_to_vec(),
        Format::Json => json_without_nulls(msg),
    };
    (
        status,
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

/// OTLP/JSON leaves unset fields out; serde would write `"partialSuccess": null`.
fn json_without_nulls<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut value = serde_json::to_value(msg).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec())
}

pub fn router(writer: Writer, max_bytes: usize) -> Router {
    Router::new()
        .route("/v1/traces", post(handle::<Traces>))
        .route("/v1/logs", post(handle::<Logs>))
        .with_state(HttpState { writer, max_bytes })
}

fn format_of(headers: &HeaderMap) -> Result<Format, Refusal> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_ARGUMENT,
            format!(
                "unsupported Content-Type {raw:?}: use application/x-protobuf or application/json"
            ),
        )),
    }
}

/// The most a body's buffer is sized ahead for.
const PRESIZE_LIMIT: usize = 4 << 20;

fn too_large(max: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        RESOURCE_EXHAUSTED,
        format!("request body exceeds the {max}-byte limit (after decompression)"),
    )
}

/// Reads the body, never holding more than `max` bytes, before or after gzip, and reserves room in the
/// ingest queue for every byte as it arrives: many large requests read at once are refused (503) once
/// their bytes would exceed `--queue-bytes`, instead of each holding up to `max` in memory.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    writer: &Writer,
) -> Result<(Vec<u8>, Reservation), Refusal> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    if !matches!(encoding.as_str(), "identity" | "" | "gzip") {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_ARGUMENT,
            format!("unsupported Content-Encoding {encoding:?}: use gzip or none"),
        ));
    }
    // Sized by Content-Length (within a bound: it is only the client's word), so the body is not
    // copied again at every doubling.
    let declared = (headers.get(header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let mut raw = Vec::with_capacity(declared.min(max).min(PRESIZE_LIMIT));
    let mut room = Reservation::default();
    let mut busy = None;
    let mut read = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                format!("could not read the body: {e}"),
            )
        })?;
        read += chunk.len();
        if read > max {
            return Err(too_large(max));
        }
        if busy.is_some() {
            continue;
        }
        match writer.reserve(chunk.len()) {
            Ok(more) => {
                room.grow(more);
                raw.extend_from_slice(&chunk);
            }
            Err(e) => {
                // The rest is read and dropped, so that the client, still sending, gets to read the
                // 503 instead of a broken connection.
                busy = Some(store_refusal(e));
                raw = Vec::new();
                room = Reservation::default();
            }
        }
    }
    if let Some(refusal) = busy {
        return Err(refusal);
    }
    if encoding != "gzip" {
        return Ok((raw, room));
    }
    let mut inflated = Vec::new();
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .take(max as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                format!("invalid gzip body: {e}"),
            )
        })?;
    if inflated.len() > max {
        return Err(too_large(max));
    }
    room.grow(writer.reserve(inflated.len()).map_err(store_refusal)?);
    Ok((inflated, room))
}

fn decode<S: Signal>(format: Format, bytes: Vec<u8>) -> Result<Received<S::Request>, Refusal> {
    match format {
        Format::Protobuf => S::decode_protobuf(Bytes::from(bytes)).map_err(export_refusal),
        Format::Json => serde_json::from_slice(&bytes)
            .map(|request| Received::Decoded { request, raw: None })
            .map_err(|e| invalid(format!("invalid OTLP/JSON {}: {e}", S::REQUEST))),
    }
}

fn invalid(message: String) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, message)
}

fn export_refusal(err: ExportError) -> Refusal {
    match err {
        ExportError::Invalid(message) => invalid(message),
        ExportError::Store(e) => store_refusal(e),
    }
}

fn store_refusal(err: StoreError) -> Refusal {
    match err {
        StoreError::Busy => Refusal {
            queue_full: true,
            ..Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "aotel's ingest queue is full; retry after the Retry-After delay",
            )
        },
        StoreError::Closed => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "aotel is shutting down",
        ),
        other => {
            tracing::error!(error = %other, "export failed");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                format!("could not store the data: {other}"),
            )
        }
    }
}

/// Both endpoints: negotiate, read, decode, store, answer in kind.
async fn handle<S: Signal>(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let format = match format_of(&headers) {
        Ok(f) => f,
        Err(r) => return count(&s.writer, r).into_response(Format::Json),
    };
    let result = async {
        let (bytes, room) = read_body(&headers, body, s.max_bytes, &s.writer).await?;
        let received = decode::<S>(format, bytes)?;
        export::<S>(&s.writer, received, room)
            .await
            .map_err(export_refusal)
    }
    .await;
    match result {
        Ok(resp) => encode(format, &resp, StatusCode::OK),
        Err(r) => count(&s.writer, r).into_response(format),
    }
}

/// Counts a refused request by reason; a full queue was already counted where it was detected.
fn count(writer: &Writer, r: Refusal) -> Refusal {
    let reason = match r.status {
        StatusCode::BAD_REQUEST => Some("malformed"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Some("unsupported"),
        StatusCode::PAYLOAD_TOO_LARGE => Some("too_large"),
        _ if r.queue_full => None,
        _ => Some("unavailable"),
    };
    if let Some(reason) = reason {
        writer.metrics().inc(
            "aotel_rejected_requests_total",
            format!(
                "{},{}",
                label("transport", writer.transport()),
                label("reason", reason)
            ),
            1.0,
        );
    }
    r
}
