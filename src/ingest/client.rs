//! A small OTLP/HTTP client (protobuf, plain HTTP/1.1) so `aotel import --endpoint` can hand spans to a
//! running aotel instead of opening its database. Honours 429/503 with `Retry-After`.

use crate::model::{Batch, ExportTraceServiceRequest};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use prost::Message;
use std::time::Duration;

const ATTEMPTS: u32 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "endpoint {0:?} is not an http:// URL (https is not supported; use a local collector)"
    )]
    BadEndpoint(String),
    #[error("could not reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} refused the spans: HTTP {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
}

/// Where to send: `http://host:port` (`/v1/traces` is added) or the full traces URL.
#[derive(Debug, Clone)]
pub struct OtlpHttp {
    uri: Uri,
    url: String,
}

impl OtlpHttp {
    pub fn new(endpoint: &str) -> Result<OtlpHttp, ClientError> {
        let trimmed = endpoint.trim().trim_end_matches('/');
        let url = if trimmed.ends_with("/v1/traces") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/v1/traces")
        };
        let uri: Uri = url
            .parse()
            .map_err(|_| ClientError::BadEndpoint(endpoint.to_string()))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(ClientError::BadEndpoint(endpoint.to_string()));
        }
        Ok(OtlpHttp { uri, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the batch's spans, retrying while the server asks for patience or cannot be reached.
    pub async fn send(&self, batch: Batch) -> Result<(), ClientError> {
        let body = Bytes::from(
            ExportTraceServiceRequest {
                resource_spans: batch.spans,
            }
            .encode_to_vec(),
        );
        let mut delay = Duration::from_millis(100);
        let mut last = None;
        for _ in 0..ATTEMPTS {
            match self.post(body.clone()).await {
                Ok((status, _, _)) if status.is_success() => return Ok(()),
                Ok((status, retry_after, _))
                    if status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::SERVICE_UNAVAILABLE =>
                {
                    tokio::time::sleep(retry_after.unwrap_or(delay)).await;
                    last = Some(format!("HTTP {status}"));
                }
                Ok((status, _, text)) => {
                    return Err(ClientError::Refused {
                        url: self.url.clone(),
                        status: status.as_u16(),
                        body: text,
                    })
                }
                Err(reason) => {
                    tokio::time::sleep(delay).await;
                    last = Some(reason);
                }
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        Err(ClientError::Unreachable {
            url: self.url.clone(),
            reason: last.unwrap_or_default(),
        })
    }

    async fn post(&self, body: Bytes) -> Result<(StatusCode, Option<Duration>, String), String> {
        let host = self.uri.host().unwrap_or("127.0.0.1");
        let port = self.uri.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let authority = self
            .uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or(host)
            .to_string();
        let req = Request::post(
            self.uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/v1/traces"),
        )
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok((
            status,
            retry_after,
            String::from_utf8_lossy(&bytes).chars().take(500).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            OtlpHttp::new("http://127.0.0.1:4318").unwrap().url(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            OtlpHttp::new("http://h:1/v1/traces/").unwrap().url(),
            "http://h:1/v1/traces"
        );
        assert!(OtlpHttp::new("https://h:1").is_err());
        assert!(OtlpHttp::new("nonsense").is_err());
    }
}
