//! OTLP/gRPC: `TraceService/Export` and `LogsService/Export`, gzip, bounded message size.

use super::{export_logs, export_traces};
use crate::auth::{GrpcAuth, Tokens};
use crate::model::{
    ExportLogsServiceRequest, ExportLogsServiceResponse, ExportTraceServiceRequest,
    ExportTraceServiceResponse,
};
use crate::store::{StoreError, Writer};
use opentelemetry_proto::tonic::collector::{
    logs::v1::logs_service_server::{LogsService, LogsServiceServer},
    trace::v1::trace_service_server::{TraceService, TraceServiceServer},
};
use prost::Message;
use std::future::Future;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
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
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
