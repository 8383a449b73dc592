//! Forwarding over TLS with a private CA: `grpcs://` to a TLS gRPC receiver and `https://` to a TLS
//! OTLP/HTTP receiver, trusting only `--forward-ca`; without the CA the certificate is refused.

mod common;
mod forward_support;

use aotel::forward::retry::RetryPolicy;
use aotel::forward::{DestinationSpec, ForwardConfig};
use aotel::Config;
use common::{make_certs, TestServer};
use forward_support::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn fast_config(db: &Path, spec: DestinationSpec) -> Config {
    let mut config = Config::with_db(db);
    config.forward = ForwardConfig {
        destinations: vec![spec],
        linger: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            open_after: 3,
            probe_every: Duration::from_millis(200),
            max_hint: Duration::from_secs(5),
        },
        ..ForwardConfig::default()
    };
    config
}

type SpanIds = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<SpanIds>>,
    tenants: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<aotel::model::ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<aotel::model::ExportTraceServiceResponse>, tonic::Status> {
        if let Some(t) = request
            .metadata()
            .get("x-scope-orgid")
            .and_then(|v| v.to_str().ok())
        {
            self.tenants.lock().unwrap().push(t.to_string());
        }
        self.spans
            .lock()
            .unwrap()
            .extend(span_ids(request.get_ref()));
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_with_a_private_ca() {
    let certs_dir = tempfile::tempdir().unwrap();
    let (ca, leaf, key) = make_certs(certs_dir.path());
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(&leaf).unwrap(),
        std::fs::read(&key).unwrap(),
    );
    let recorder = Recorder::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .expect("TLS config")
        .add_service(
            TraceServiceServer::new(recorder.clone())
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
        )
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);

    // Trusting the private CA: delivered, with the tenant header.
    let dir = tempfile::tempdir().unwrap();
    let mut spec = DestinationSpec::parse(&format!("grpcs://localhost:{port}")).unwrap();
    spec.ca_file = Some(ca);
    spec.headers
        .push(("X-Scope-OrgID".into(), "tls-tenant".into()));
    spec.gzip = true;
    spec.logs = false;
    let upstream = TestServer::start_with(fast_config(&dir.path().join("up.db"), spec)).await;
    let req = traces("tls", 2, 5);
    send_traces(upstream.http, &req).await;
    let status = wait_caught_up(upstream.api, Duration::from_secs(20)).await;
    assert_eq!(status["destinations"][0]["tls"], true);
    let mut got = recorder.spans.lock().unwrap().clone();
    got.sort();
    let mut want = span_ids(&req);
    want.sort();
    assert_eq!(got, want);
    assert!(recorder
        .tenants
        .lock()
        .unwrap()
        .iter()
        .all(|t| t == "tls-tenant"));

    // Without it, the certificate is not trusted: nothing is sent, and the API says why.
    let dir2 = tempfile::tempdir().unwrap();
    let mut spec = DestinationSpec::parse(&format!("grpcs://localhost:{port}")).unwrap();
    spec.logs = false;
    let untrusting = TestServer::start_with(fast_config(&dir2.path().join("up.db"), spec)).await;
    send_traces(untrusting.http, &traces("tls-no-ca", 1, 3)).await;
    let d = wait_for(
        "the TLS failure to show",
        Duration::from_secs(20),
        || async {
            let v = forward_status(untrusting.api).await;
            let d = v["destinations"][0].clone();
            (d["state"] != "ok" && d["last_error"].is_string()).then_some(d)
        },
    )
    .await;
    assert_eq!(d["lag_spans"], 3, "{d}");
    assert_eq!(
        recorder.spans.lock().unwrap().len(),
        10,
        "nothing went to an untrusted server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca() {
    use rustls::pki_types::pem::PemObject;
    let certs_dir = tempfile::tempdir().unwrap();
    let (ca, leaf, key) = make_certs(certs_dir.path());
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&leaf)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    // The fake OTLP/HTTP destination, behind a TLS terminator on its own port.
    let fake = FakeOtlp::start(|_, _| Reply::Ok).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = fake.addr;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let mut spec = DestinationSpec::parse(&format!("https://localhost:{port}/v1/traces")).unwrap();
    spec.ca_file = Some(ca);
    spec.logs = false;
    let upstream = TestServer::start_with(fast_config(&dir.path().join("up.db"), spec)).await;
    let req = traces("https", 2, 4);
    send_traces(upstream.http, &req).await;
    wait_caught_up(upstream.api, Duration::from_secs(20)).await;
    let mut got = fake.accepted_spans();
    got.sort();
    let mut want = span_ids(&req);
    want.sort();
    assert_eq!(got, want);
}
