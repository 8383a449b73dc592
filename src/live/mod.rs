//! The live view: a hub that turns each commit into per-subscription updates, the `/ws` WebSocket that
//! pushes them, and the built-in web page (embedded in the binary, so running aotel needs no Node build).

pub mod hub;
pub mod protocol;
pub mod ws;

pub use hub::Hub;

use crate::model::ids;
use crate::query::views::span_view;
use crate::query::ApiError;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::time::Duration;

/// How the live view treats clients, and where the page links traces to.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Messages queued per subscription for each client; a client further behind misses updates and is
    /// sent a fresh snapshot.
    pub client_queue: usize,
    /// A client whose socket accepts no message for this long is disconnected.
    pub send_timeout: Duration,
    /// WebSocket messages per second the hub aims to stay under across all clients. Each message costs
    /// the server a socket write, so under load commits are merged into fewer updates: with N clients,
    /// updates go out at most every N / `fanout_rate` seconds (capped at `MAX_INTERVAL`). After a quiet
    /// spell the first change goes out at once.
    pub fanout_rate: u32,
    /// Jaeger UI base URL (or a template with `{trace_id}`).
    pub jaeger_url: Option<String>,
    /// Grafana base URL (or a template with `{trace_id}`).
    pub grafana_url: Option<String>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            client_queue: 256,
            send_timeout: Duration::from_secs(10),
            fanout_rate: 2000,
            jaeger_url: None,
            grafana_url: None,
        }
    }
}

impl LiveOptions {
    /// Checks the command-line values; the message names the flag.
    pub fn from_args(
        jaeger_url: Option<&str>,
        grafana_url: Option<&str>,
        client_queue: usize,
        send_timeout_secs: f64,
    ) -> Result<LiveOptions, String> {
        let url = |flag: &str, v: Option<&str>| -> Result<Option<String>, String> {
            let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
                return Ok(None);
            };
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                return Err(format!(
                    "{flag} must be an http:// or https:// URL, got {v:?}"
                ));
            }
            Ok(Some(v.trim_end_matches('/').to_string()))
        };
        if !(1..=65_536).contains(&client_queue) {
            return Err("--ws-queue must be between 1 and 65536".into());
        }
        if !(send_timeout_secs.is_finite()
            && send_timeout_secs > 0.0
            && send_timeout_secs <= 3600.0)
        {
            return Err("--ws-send-timeout must be more than 0 and at most 3600 seconds".into());
        }
        Ok(LiveOptions {
            client_queue,
            fanout_rate: LiveOptions::default().fanout_rate,
            send_timeout: Duration::from_secs_f64(send_timeout_secs),
            jaeger_url: url("--jaeger-url", jaeger_url)?,
            grafana_url: url("--grafana-url", grafana_url)?,
        })
    }
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Agent text never becomes markup (the page only uses `textContent`); the policy is a second line of
/// defence: no inline script, no foreign origins.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/ws", get(ws::handler))
        .route("/api/spans/{trace_id}/{span_id}", get(span))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// One span with all its attributes, events and links: what the page shows when a call is expanded.
async fn span(
    State(app): State<AppState>,
    Path((trace_id, span_id)): Path<(String, String)>,
) -> Result<Json<crate::query::views::SpanView>, ApiError> {
    let tid = ids::from_hex(&trace_id, 16).ok_or_else(|| {
        ApiError::bad_request(format!(
            "trace id must be 32 hex digits, not all zero; got {trace_id:?}"
        ))
    })?;
    let sid = ids::from_hex(&span_id, 8).ok_or_else(|| {
        ApiError::bad_request(format!(
            "span id must be 16 hex digits, not all zero; got {span_id:?}"
        ))
    })?;
    match app.reader.span(tid, sid).await? {
        Some(s) => Ok(Json(span_view(&s))),
        None => Err(ApiError::not_found(format!(
            "no span {span_id} in trace {trace_id}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_never_parses_strings_as_html() {
        for (name, src) in [("app.js", super::APP_JS), ("index.html", super::INDEX_HTML)] {
            for api in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "DOMParser",
                "eval(",
                "new Function",
            ] {
                assert!(!src.contains(api), "{name} uses {api}");
            }
        }
        assert!(
            !super::INDEX_HTML.contains("<script>"),
            "inline scripts are refused by the CSP"
        );
    }
}
