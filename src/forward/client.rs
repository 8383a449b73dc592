//! The OTLP client side of forwarding: one exporter per destination (gRPC via tonic, HTTP/protobuf via
//! hyper with rustls), sending already-encoded Export requests and sorting every answer into accepted, retry or
//! rejected.

use super::retry::{grpc_retry_delay, parse_retry_after};
use super::{DestinationSpec, ForwardError, Protocol, Signal};
use crate::model::{ExportLogsServiceResponse, ExportTraceServiceResponse};
use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataValue, MetadataKey, MetadataMap};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

const TRACES_METHOD: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const LOGS_METHOD: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
const USER_AGENT: &str = concat!("aotel/", env!("CARGO_PKG_VERSION"));

/// How a destination answered one Export request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored downstream; `rejected` items were refused through `partial_success`.
    Accepted { rejected: i64, message: String },
    /// Worth sending again, after `after` if the server said when.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The destination will never take this batch.
    Rejected { reason: String },
}

/// A connection (pool) to one destination.
#[derive(Clone)]
pub struct Exporter {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Grpc {
        channel: Channel,
        metadata: MetadataMap,
        gzip: bool,
    },
    Http(Box<HttpTarget>),
}

#[derive(Clone)]
struct HttpTarget {
    client: HttpClient,
    traces: http::Uri,
    logs: http::Uri,
    headers: http::HeaderMap,
    gzip: bool,
    timeout: Duration,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

impl Exporter {
    /// Builds the client; nothing is connected until the first request, so a destination that is down
    /// at startup costs nothing but retries.
    pub fn new(spec: &DestinationSpec, timeout: Duration) -> Result<Exporter, ForwardError> {
        let bad = |message: String| ForwardError::Destination {
            url: spec.url.clone(),
            message,
        };
        let ca = match &spec.ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|e| bad(format!("CA file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let inner = match spec.protocol {
            Protocol::Grpc { tls } => {
                let scheme_less = spec
                    .url
                    .split_once("://")
                    .map(|(_, rest)| rest)
                    .unwrap_or(&spec.url);
                let scheme = if tls { "https" } else { "http" };
                let mut endpoint = Endpoint::from_shared(format!(
                    "{scheme}://{}",
                    scheme_less.trim_end_matches('/')
                ))
                .map_err(|e| bad(e.to_string()))?
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .tcp_nodelay(true)
                .user_agent(USER_AGENT)
                .map_err(|e| bad(e.to_string()))?;
                if tls {
                    let mut tls_config = ClientTlsConfig::new();
                    tls_config = match ca {
                        Some(pem) => tls_config.ca_certificate(Certificate::from_pem(pem)),
                        None => tls_config.with_native_roots(),
                    };
                    endpoint = endpoint
                        .tls_config(tls_config)
                        .map_err(|e| bad(e.to_string()))?;
                }
                let mut metadata = MetadataMap::new();
                for (name, value) in &spec.headers {
                    let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|e| bad(format!("header {name:?}: {e}")))?;
                    let value: AsciiMetadataValue = value
                        .parse()
                        .map_err(|e| bad(format!("header {name:?}: {e}")))?;
                    metadata.append(key, value);
                }
                Inner::Grpc {
                    channel: endpoint.connect_lazy(),
                    metadata,
                    gzip: spec.gzip,
                }
            }
            Protocol::Http => {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let builder = hyper_rustls::HttpsConnectorBuilder::new();
                let builder = match ca {
                    Some(pem) => {
                        use rustls::pki_types::{pem::PemObject, CertificateDer};
                        let mut roots = rustls::RootCertStore::empty();
                        for cert in CertificateDer::pem_slice_iter(&pem) {
                            let cert = cert.map_err(|e| bad(format!("CA file: {e}")))?;
                            roots.add(cert).map_err(|e| bad(format!("CA file: {e}")))?;
                        }
                        let tls = rustls::ClientConfig::builder_with_provider(provider)
                            .with_safe_default_protocol_versions()
                            .map_err(|e| bad(e.to_string()))?
                            .with_root_certificates(roots)
                            .with_no_client_auth();
                        builder.with_tls_config(tls)
                    }
                    None => builder
                        .with_provider_and_native_roots(provider)
                        .map_err(|e| bad(format!("system CA certificates: {e}")))?,
                };
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector.enforce_http(false);
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
                let connector = builder
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(connector);
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector);
                let mut headers = http::HeaderMap::new();
                for (name, value) in &spec.headers {
                    let name = http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|e| bad(format!("header {name:?}: {e}")))?;
                    let value = http::HeaderValue::from_str(value)
                        .map_err(|e| bad(format!("header {name:?}: {e}")))?;
                    headers.append(name, value);
                }
                headers.insert(
                    http::header::USER_AGENT,
                    http::HeaderValue::from_static(USER_AGENT),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                let (traces, logs) = http_urls(&spec.url);
                let uri = |u: String| u.parse::<http::Uri>().map_err(|e| bad(format!("{u}: {e}")));
                Inner::Http(Box::new(HttpTarget {
                    client,
                    traces: uri(traces)?,
                    logs: uri(logs)?,
                    headers,
                    gzip: spec.gzip,
                    timeout,
                }))
            }
        };
        Ok(Exporter { inner })
    }

    /// Sends one encoded `Export{Trace,Logs}ServiceRequest`.
    pub async fn export(&self, signal: Signal, body: Bytes) -> Outcome {
        match &self.inner {
            Inner::Grpc {
                channel,
                metadata,
                gzip,
            } => grpc_export(channel.clone(), metadata, *gzip, signal, body).await,
            Inner::Http(target) => {
                let HttpTarget {
                    client,
                    traces,
                    logs,
                    headers,
                    gzip,
                    timeout,
                } = target.as_ref();
                let url = match signal {
                    Signal::Spans => traces,
                    Signal::Logs => logs,
                };
                let request = http_export(client, url, headers, *gzip, signal, body);
                match tokio::time::timeout(*timeout, request).await {
                    Ok(outcome) => outcome,
                    Err(_) => Outcome::Retry {
                        reason: format!("timed out after {timeout:?}"),
                        after: None,
                    },
                }
            }
        }
    }
}

/// The traces URL as given, and its sibling `/v1/logs` for logs (or `…/v1/logs` after a bare base URL).
pub fn http_urls(url: &str) -> (String, String) {
    let url = url.trim_end_matches('/');
    if let Some(base) = url.strip_suffix("/v1/traces") {
        (url.to_string(), format!("{base}/v1/logs"))
    } else {
        (format!("{url}/v1/traces"), format!("{url}/v1/logs"))
    }
}

/// Passes pre-encoded request bytes through and decodes the response, so a retry resends the same bytes
/// without re-encoding.
#[derive(Clone, Copy)]
struct RawCodec<R>(std::marker::PhantomData<R>);

struct RawEncoder;
struct RawDecoder<R>(std::marker::PhantomData<R>);

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl<R: Message + Default> Decoder for RawDecoder<R> {
    type Item = R;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        let msg = R::decode(src.copy_to_bytes(src.remaining()))
            .map_err(|e| Status::internal(format!("undecodable response: {e}")))?;
        Ok(Some(msg))
    }
}

impl<R: Message + Default + Send + 'static> Codec for RawCodec<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder<R>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder<R> {
        RawDecoder(std::marker::PhantomData)
    }
}

async fn grpc_export(
    channel: Channel,
    metadata: &MetadataMap,
    gzip: bool,
    signal: Signal,
    body: Bytes,
) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(channel).accept_compressed(CompressionEncoding::Gzip);
    if gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    if let Err(e) = grpc.ready().await {
        return Outcome::Retry {
            reason: format!("cannot connect: {e}"),
            after: None,
        };
    }
    let mut request = tonic::Request::new(body);
    *request.metadata_mut() = metadata.clone();
    match signal {
        Signal::Spans => {
            let path = http::uri::PathAndQuery::from_static(TRACES_METHOD);
            match grpc
                .unary(
                    request,
                    path,
                    RawCodec::<ExportTraceServiceResponse>(Default::default()),
                )
                .await
            {
                Ok(resp) => accepted_traces(resp.into_inner()),
                Err(status) => grpc_failure(&status, signal),
            }
        }
        Signal::Logs => {
            let path = http::uri::PathAndQuery::from_static(LOGS_METHOD);
            match grpc
                .unary(
                    request,
                    path,
                    RawCodec::<ExportLogsServiceResponse>(Default::default()),
                )
                .await
            {
                Ok(resp) => accepted_logs(resp.into_inner()),
                Err(status) => grpc_failure(&status, signal),
            }
        }
    }
}

fn accepted_traces(resp: ExportTraceServiceResponse) -> Outcome {
    let (rejected, message) = resp
        .partial_success
        .map(|p| (p.rejected_spans, p.error_message))
        .unwrap_or_default();
    Outcome::Accepted { rejected, message }
}

fn accepted_logs(resp: ExportLogsServiceResponse) -> Outcome {
    let (rejected, message) = resp
        .partial_success
        .map(|p| (p.rejected_log_records, p.error_message))
        .unwrap_or_default();
    Outcome::Accepted { rejected, message }
}

/// The OTLP spec's retryable codes, plus the ones that mean "fix the configuration" (credentials, a
/// destination that does not take this signal): aotel holds such data rather than dropping it.
fn grpc_failure(status: &Status, signal: Signal) -> Outcome {
    let code = status.code();
    let reason = format!("gRPC {code:?}: {}", status.message());
    let hint = grpc_retry_delay(status.details());
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled
        | Code::OutOfRange
        | Code::DataLoss
        | Code::Unknown
        | Code::Unauthenticated
        | Code::PermissionDenied => Outcome::Retry {
            reason,
            after: hint,
        },
        Code::ResourceExhausted if hint.is_some() => Outcome::Retry {
            reason,
            after: hint,
        },
        Code::Unimplemented => {
            let advice = if status.message().contains("compress") {
                "the destination does not take gzip; see --forward-compression".to_string()
            } else {
                format!(
                    "the destination does not accept {}; see --forward-signals",
                    signal.otlp_name()
                )
            };
            Outcome::Retry {
                reason: format!("{reason} ({advice})"),
                after: hint,
            }
        }
        _ => Outcome::Rejected { reason },
    }
}

async fn http_export(
    client: &HttpClient,
    url: &http::Uri,
    headers: &http::HeaderMap,
    gzip: bool,
    signal: Signal,
    body: Bytes,
) -> Outcome {
    use http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
    use http_body_util::BodyExt;
    let mut request = http::Request::post(url.clone());
    if let Some(h) = request.headers_mut() {
        h.clone_from(headers);
    }
    let body = if gzip {
        request = request.header(CONTENT_ENCODING, "gzip");
        match gzip_bytes(&body) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return Outcome::Rejected {
                    reason: format!("gzip failed: {e}"),
                }
            }
        }
    } else {
        body
    };
    let request = match request.body(http_body_util::Full::new(body)) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Rejected {
                reason: format!("invalid request: {e}"),
            }
        }
    };
    let resp = match client.request(request).await {
        Ok(r) => r,
        Err(e) => {
            let what = if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            return Outcome::Retry {
                reason: format!("{what}: {}", error_chain(&e)),
                after: None,
            };
        }
    };
    let status = resp.status();
    let hint = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let is_protobuf = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("protobuf"));
    // Answers are small; a huge one is cut rather than buffered.
    let limited = http_body_util::Limited::new(resp.into_body(), 1 << 20);
    let bytes = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if status.is_success() => {
            return Outcome::Retry {
                reason: format!("answer cut off: {e}"),
                after: None,
            }
        }
        Err(_) => Bytes::new(),
    };
    if status.is_success() {
        let accepted = Outcome::Accepted {
            rejected: 0,
            message: String::new(),
        };
        if !is_protobuf || bytes.is_empty() {
            return accepted;
        }
        return match signal {
            Signal::Spans => ExportTraceServiceResponse::decode(bytes)
                .map(accepted_traces)
                .unwrap_or(accepted),
            Signal::Logs => ExportLogsServiceResponse::decode(bytes)
                .map(accepted_logs)
                .unwrap_or(accepted),
        };
    }
    let detail = error_detail(&bytes, is_protobuf);
    let reason = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    match status.as_u16() {
        408 | 429 | 502 | 503 | 504 | 401 | 403 => Outcome::Retry {
            reason,
            after: hint,
        },
        404 | 405 => Outcome::Retry {
            reason: format!(
                "{reason} (is the URL right, and does the destination accept {}?)",
                signal.otlp_name()
            ),
            after: hint,
        },
        _ => Outcome::Rejected { reason },
    }
}

/// The message of a `google.rpc.Status` body, or the text of a plain one, kept short.
fn error_detail(bytes: &[u8], is_protobuf: bool) -> String {
    let text = if is_protobuf {
        crate::model::rpc::RpcStatus::decode(bytes)
            .map(|s| s.message)
            .unwrap_or_default()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    };
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn gzip_bytes(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_go_to_the_sibling_path() {
        assert_eq!(
            http_urls("http://tempo:4318/v1/traces"),
            (
                "http://tempo:4318/v1/traces".into(),
                "http://tempo:4318/v1/logs".into()
            )
        );
        assert_eq!(
            http_urls("https://otlp.example/otlp/"),
            (
                "https://otlp.example/otlp/v1/traces".into(),
                "https://otlp.example/otlp/v1/logs".into()
            )
        );
    }
}
