//! Optional bearer tokens: one for ingest (OTLP, `POST /events`), one for reading (API, page,
//! WebSocket, Jaeger/Tempo APIs, metrics). Without a token configured, that side is open.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

const COOKIE: &str = "aotel_token";

#[derive(Clone, Default)]
pub struct Tokens {
    pub ingest: Option<Arc<str>>,
    pub read: Option<Arc<str>>,
}

/// Says which tokens are set, never what they are.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("ingest", &self.ingest.as_ref().map(|_| "<set>"))
            .field("read", &self.read.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Which token a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    Ingest,
    Read,
}

/// Compares without stopping at the first difference, so timing says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let v = kv.strip_prefix("token=")?;
        Some(percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                    Some(Ok(b)) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Tokens {
    fn expected(&self, access: Access) -> Option<&str> {
        match access {
            Access::Open => None,
            Access::Ingest => self.ingest.as_deref(),
            Access::Read => self.read.as_deref(),
        }
    }

    /// Checks a request's credentials: `Authorization: Bearer`, the `aotel_token` cookie, or a
    /// `token=` query parameter (for the browser page and WebSocket, which cannot set headers).
    pub fn allows(
        &self,
        access: Access,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<(), &'static str> {
        let Some(expected) = self.expected(access) else {
            return Ok(());
        };
        let given = bearer(headers)
            .map(str::to_string)
            .or_else(|| cookie(headers).map(str::to_string))
            .or_else(|| query_token(query));
        match given {
            None => Err("this endpoint needs a token: send `Authorization: Bearer <token>`"),
            Some(t) if same(t.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err("the token is not valid for this endpoint"),
        }
    }
}

/// What the HTTP API port requires, by route.
pub fn access_for_api(method: &Method, path: &str) -> Access {
    match path {
        "/healthz" | "/readyz" => Access::Open,
        "/events" | "/api/retention/run" if method == Method::POST => Access::Ingest,
        _ => Access::Read,
    }
}

fn unauthorized(message: &str) -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({ "error": message, "status": 401 })),
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"aotel\""),
    );
    resp
}

/// Middleware for the API port. A valid `?token=` also sets a same-site cookie, so the page's own
/// requests and its WebSocket are authorised after the first visit.
pub async fn api_layer(tokens: Tokens, req: Request, next: Next) -> Response {
    let access = access_for_api(req.method(), req.uri().path());
    if let Err(message) = tokens.allows(access, req.headers(), req.uri().query()) {
        return unauthorized(message);
    }
    let from_query = access == Access::Read
        && tokens.read.is_some()
        && bearer(req.headers()).is_none()
        && cookie(req.headers()).is_none();
    let token = from_query.then(|| query_token(req.uri().query())).flatten();
    let mut resp = next.run(req).await;
    if let Some(t) = token {
        if let Ok(v) =
            HeaderValue::from_str(&format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict"))
        {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// Middleware for the OTLP/HTTP port: everything there is ingest.
pub async fn ingest_layer(tokens: Tokens, req: Request, next: Next) -> Response {
    match tokens.allows(Access::Ingest, req.headers(), None) {
        Ok(()) => next.run(req).await,
        Err(message) => {
            let body = serde_json::json!({ "code": 16, "message": message });
            let mut resp = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"aotel\""),
            );
            resp
        }
    }
}

/// gRPC interceptor: the `authorization` metadata must carry the ingest token.
#[derive(Clone)]
pub struct GrpcAuth(pub Tokens);

impl tonic::service::Interceptor for GrpcAuth {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(expected) = self.0.ingest.as_deref() else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(t) if same(t.as_bytes(), expected.as_bytes()) => Ok(req),
            Some(_) => Err(tonic::Status::unauthenticated(
                "the token is not valid for ingest",
            )),
            None => Err(tonic::Status::unauthenticated(
                "ingest needs a token: send `authorization: Bearer <token>` metadata",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_where_browsers_and_sdks_put_them() {
        let tokens = Tokens {
            ingest: Some("in".into()),
            read: Some("r e/d".into()),
        };
        let mut h = HeaderMap::new();
        assert!(tokens.allows(Access::Read, &h, None).is_err());
        assert!(tokens.allows(Access::Open, &h, None).is_ok());
        assert!(tokens
            .allows(Access::Read, &h, Some("a=1&token=r%20e%2Fd"))
            .is_ok());
        assert!(tokens
            .allows(Access::Read, &h, Some("token=r+e%2Fd"))
            .is_ok());
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; aotel_token=r e/d"),
        );
        assert!(tokens.allows(Access::Read, &h, None).is_ok());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer in"));
        assert!(tokens.allows(Access::Ingest, &h, None).is_ok());
        assert!(
            tokens.allows(Access::Read, &h, None).is_err(),
            "an ingest token does not read"
        );
        assert_eq!(access_for_api(&Method::POST, "/events"), Access::Ingest);
        assert_eq!(access_for_api(&Method::GET, "/api/sessions"), Access::Read);
        assert_eq!(access_for_api(&Method::GET, "/healthz"), Access::Open);
    }
}
