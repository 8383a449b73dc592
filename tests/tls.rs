//! TLS on every listener with `--tls-cert`/`--tls-key`: HTTPS for OTLP/HTTP and the API, TLS gRPC,
//! plain connections refused, and a bad certificate stops the start with a clear error.

mod common;

use aotel::model::ExportTraceServiceRequest;
use aotel::tls::TlsFiles;
use aotel::{Config, Listeners};
use common::make_certs;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use std::process::Command;
use std::time::Duration;

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("the curl command");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_speaks_tls() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = make_certs(dir.path());
    let mut config = Config::with_db(dir.path().join("a.db"));
    config.tls = Some(TlsFiles { cert, key });
    let listeners = Listeners::ephemeral().await.expect("bind");
    let (grpc, http, api) = listeners.addrs();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(aotel::run(config, listeners, async {
        let _ = stopped.await;
    }));
    let ca_arg = ca.to_str().expect("path").to_string();

    let api_url = format!("https://localhost:{}/healthz", api.port());
    let resolve = format!("localhost:{}:127.0.0.1", api.port());
    let (ok, out) = common::eventually("the API over HTTPS", || {
        let (ca_arg, api_url, resolve) = (ca_arg.clone(), api_url.clone(), resolve.clone());
        async move {
            let r = tokio::task::spawn_blocking(move || {
                curl(&["--cacert", &ca_arg, "--resolve", &resolve, &api_url])
            })
            .await
            .expect("join");
            r.0.then_some(r)
        }
    })
    .await;
    assert!(ok && out.contains("\"ok\""), "{out}");

    // OTLP/HTTP over HTTPS.
    let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"over tls"}]}]}]}"#;
    let url = format!("https://localhost:{}/v1/traces", http.port());
    let resolve_http = format!("localhost:{}:127.0.0.1", http.port());
    let (ok, out) = curl(&[
        "--cacert",
        &ca_arg,
        "--resolve",
        &resolve_http,
        "-H",
        "content-type: application/json",
        "--data",
        body,
        &url,
    ]);
    assert!(ok && out.trim() == "{}", "{out}");

    // Plain HTTP to a TLS port gets nowhere; neither does a client that does not trust the CA.
    let (ok, _) = curl(&[&format!("http://127.0.0.1:{}/healthz", api.port())]);
    assert!(!ok, "plain HTTP must not be answered");
    let (ok, out) = curl(&["--resolve", &resolve, &api_url]);
    assert!(!ok, "an untrusted certificate must be refused: {out}");

    // gRPC over TLS.
    let pem = std::fs::read(&ca).expect("ca");
    let channel =
        tonic::transport::Channel::from_shared(format!("https://localhost:{}", grpc.port()))
            .expect("uri")
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                    .domain_name("localhost"),
            )
            .expect("tls config")
            .connect_timeout(Duration::from_secs(5));
    let channel = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(c) = channel.connect().await {
                return c;
            }
        }
    })
    .await
    .expect("TLS gRPC connects");
    TraceServiceClient::new(channel)
        .export(ExportTraceServiceRequest::default())
        .await
        .expect("export over TLS gRPC");

    let _ = stop.send(());
    server.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn a_bad_certificate_stops_the_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").expect("write");
    let mut config = Config::with_db(dir.path().join("a.db"));
    config.tls = Some(TlsFiles {
        cert: cert.clone(),
        key: dir.path().join("missing.key"),
    });
    let listeners = Listeners::ephemeral().await.expect("bind");
    let err = aotel::run(config, listeners, async {})
        .await
        .expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("missing.key") || msg.contains("cert.pem"),
        "{msg}"
    );
    assert!(
        !dir.path().join("a.db").exists(),
        "nothing is created before the certificate is checked"
    );
}
