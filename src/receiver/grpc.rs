//! OTLP/gRPC: `TraceService/Export` and `LogsService/Export`, gzip, bounded message size.

use super::{export_logs, export_traces};
use crate::auth::{GrpcAuth, Tokens};
use crate::model::{
    ExportLogsServiceRequest, ExportLogsServiceResponse, ExportTraceServiceRequest,
    ExportTraceServiceResponse,
};
use crate::store::{StoreError, Writer};
use futures_util::TryStreamExt;
use opentelemetry_proto::tonic::collector::{
    logs::v1::logs_service_server::{LogsService, LogsServiceServer},
    trace::v1::trace_service_server::{TraceService, TraceServiceServer},
};
use prost::Message;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Connected, TcpIncoming};
use tonic::{Request, Response, Status};

#[derive(Clone)]
struct Receiver {
    writer: Writer,
}

/// Store failures are all worth retrying from the client's side: a full queue, a shutdown, a disk hiccup.
fn status_of(err: StoreError) -> Status {
    match err {
        StoreError::Busy => Status::unavailable("aotel's ingest queue is full; retry with backoff"),
        StoreError::Closed => {
            Status::unavailable("aotel is shutting down; retry against the next instance")
        }
        other => {
            tracing::error!(error = %other, "export failed");
            Status::unavailable(format!("could not store the data: {other}"))
        }
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let req = request.into_inner();
        let room = self.writer.reserve(req.encoded_len()).map_err(status_of)?;
        export_traces(&self.writer, req, room)
            .await
            .map(Response::new)
            .map_err(status_of)
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let req = request.into_inner();
        let room = self.writer.reserve(req.encoded_len()).map_err(status_of)?;
        export_logs(&self.writer, req, room)
            .await
            .map(Response::new)
            .map_err(status_of)
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves, then finishes in-flight calls.
pub async fn serve(
    listener: TcpListener,
    writer: Writer,
    max_message_bytes: usize,
    tokens: Tokens,
    tls: Option<tonic::transport::Identity>,
    preface_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let receiver = Receiver { writer };
    // tonic caps the inflated size of a gzip message at the same limit, so a bomb is refused early.
    let traces = TraceServiceServer::new(receiver.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes);
    let logs = LogsServiceServer::new(receiver)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes);
    let auth = GrpcAuth(tokens);
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = tls {
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    builder
        .add_service(InterceptedService::new(traces, auth.clone()))
        .add_service(InterceptedService::new(logs, auth))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .map_ok(move |io| Prefaced::new(io, preface_timeout)),
            shutdown,
        )
        .await
}

/// The HTTP/2 connection preface is 24 bytes (TLS sends more before it).
const PREFACE_BYTES: usize = 24;

/// An accepted socket whose reads fail once `deadline` passes before its first `PREFACE_BYTES` bytes
/// arrived. tonic has no handshake timeout, so without it a peer that opens a connection and dribbles
/// (or never sends) the preface holds a socket and a task for ever; the OTLP/HTTP port has the same
/// bound through its header timeout (`serve::HEADER_READ_TIMEOUT`).
struct Prefaced {
    io: TcpStream,
    awaited: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Prefaced {
    fn new(io: TcpStream, within: Duration) -> Prefaced {
        Prefaced {
            io,
            awaited: PREFACE_BYTES,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

impl AsyncRead for Prefaced {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.awaited > 0 && this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the connection preface did not arrive in time",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if read.is_ready() {
            this.awaited = this
                .awaited
                .saturating_sub(buf.filled().len().saturating_sub(before));
        }
        read
    }
}

impl AsyncWrite for Prefaced {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for Prefaced {
    type ConnectInfo = <TcpStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
