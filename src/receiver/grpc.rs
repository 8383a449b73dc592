//! OTLP/gRPC: `TraceService/Export` and `LogsService/Export`, gzip, bounded message size.

use super::{export, ExportError, Logs, Received, Signal, Traces};
use crate::auth::{GrpcAuth, Tokens};
use crate::store::{StoreError, Writer};
use bytes::{Buf, Bytes};
use futures_util::TryStreamExt;
use prost::Message;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::codec::{CompressionEncoding, DecodeBuf, EncodeBuf};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Connected, TcpIncoming};
use tonic::{Request, Response, Status};

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

fn export_status(err: ExportError) -> Status {
    match err {
        ExportError::Invalid(message) => Status::invalid_argument(message),
        ExportError::Store(e) => status_of(e),
    }
}

/// prost's gRPC codec, except that decoding keeps the message's bytes (`model::wire`), a trace request is
/// left to be read in place (`Signal::decode_protobuf`), and a malformed message is INVALID_ARGUMENT, as
/// OTLP asks, where tonic's codec says INTERNAL.
struct Codec<K>(PhantomData<K>);

struct Decoder<K>(PhantomData<K>);

struct Encoder<K>(PhantomData<K>);

impl<K: Signal> tonic::codec::Encoder for Encoder<K> {
    type Item = K::Response;
    type Error = Status;

    fn encode(&mut self, item: K::Response, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("could not encode the answer: {e}")))
    }
}

impl<K: Signal> tonic::codec::Codec for Codec<K> {
    type Encode = K::Response;
    type Decode = Received<K::Request>;
    type Encoder = Encoder<K>;
    type Decoder = Decoder<K>;

    fn encoder(&mut self) -> Self::Encoder {
        Encoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(PhantomData)
    }
}

impl<K: Signal> tonic::codec::Decoder for Decoder<K> {
    type Item = Received<K::Request>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        // A copy (one memcpy per request): sharing tonic's read buffer would pin all of its
        // allocation until the commit, more than the request's size that the queue budget counts.
        let raw = Bytes::copy_from_slice(&src.copy_to_bytes(src.remaining()));
        K::decode_protobuf(raw).map(Some).map_err(export_status)
    }
}

/// `K`'s gRPC service, served as the generated server would but with `Codec`.
struct Server<K> {
    writer: Writer,
    max_message_bytes: usize,
    kind: PhantomData<K>,
}

impl<K> Server<K> {
    fn new(writer: Writer, max_message_bytes: usize) -> Self {
        Server {
            writer,
            max_message_bytes,
            kind: PhantomData,
        }
    }
}

impl<K> Clone for Server<K> {
    fn clone(&self) -> Self {
        Server::new(self.writer.clone(), self.max_message_bytes)
    }
}

impl<K: Signal> tonic::server::NamedService for Server<K> {
    const NAME: &'static str = K::GRPC_SERVICE;
}

/// The call itself, once tonic has decoded the request.
struct Method<K> {
    writer: Writer,
    kind: PhantomData<K>,
}

impl<K: Signal> tonic::server::UnaryService<Received<K::Request>> for Method<K> {
    type Response = K::Response;
    type Future = BoxFuture<Response<K::Response>, Status>;

    fn call(&mut self, request: Request<Received<K::Request>>) -> Self::Future {
        let writer = self.writer.clone();
        Box::pin(async move {
            let received = request.into_inner();
            let room = writer.reserve(received.size()).map_err(status_of)?;
            export::<K>(&writer, received, room)
                .await
                .map(Response::new)
                .map_err(export_status)
        })
    }
}

impl<K: Signal, B> Service<http::Request<B>> for Server<K>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(K::GRPC_SERVICE))
            != Some("/Export")
        {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let method = Method::<K> {
            writer: self.writer.clone(),
            kind: PhantomData,
        };
        // tonic caps the inflated size of a gzip message at the same limit, so a bomb is refused early.
        let mut grpc = tonic::server::Grpc::new(Codec::<K>(PhantomData))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(self.max_message_bytes);
        Box::pin(async move { Ok(grpc.unary(method, req).await) })
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
    let traces = Server::<Traces>::new(writer.clone(), max_message_bytes);
    let logs = Server::<Logs>::new(writer, max_message_bytes);
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
