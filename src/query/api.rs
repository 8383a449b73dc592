//! aotel's own JSON API: sessions (paged, filtered), one session as a span tree with its logs, a trace.

use super::views::{log_view, span_tree};
use super::ApiError;
use crate::model::ids;
use crate::model::time::parse_time_param;
use crate::store::SessionFilter;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{key}", get(session))
        .route("/api/trace/{trace_id}", get(trace))
        .route("/api/retention", get(retention_status))
        .route("/api/retention/run", axum::routing::post(retention_run))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct SessionsQuery {
    service: Option<String>,
    agent: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

fn time_param(name: &str, v: &Option<String>) -> Result<Option<i64>, ApiError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            parse_time_param(s)
                .map(|t| t.min(i64::MAX as u64) as i64)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{name}: expected Unix nanoseconds or RFC 3339, got {s:?}"
                    ))
                })
        })
        .transpose()
}

fn int_param(name: &str, v: &Option<String>, max: i64) -> Result<Option<i64>, ApiError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<i64>() {
            Ok(n) if (0..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "{name}: expected a whole number from 0 to {max}, got {s:?}"
            ))),
        })
        .transpose()
}

async fn sessions(
    State(app): State<AppState>,
    Query(q): Query<SessionsQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = q.status.as_deref() {
        if !matches!(s, "running" | "finished" | "failed" | "") {
            return Err(ApiError::bad_request(format!(
                "status: expected running, finished or failed, got {s:?}"
            )));
        }
    }
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let filter = SessionFilter {
        since_ns: time_param("since", &q.since)?,
        until_ns: time_param("until", &q.until)?,
        limit: int_param("limit", &q.limit, 1000)?,
        offset: int_param("offset", &q.offset, i64::MAX)?,
        service: nonempty(q.service),
        agent: nonempty(q.agent),
        status: nonempty(q.status),
        q: nonempty(q.q),
    };
    let limit = filter.limit.unwrap_or(50).max(1);
    let offset = filter.offset.unwrap_or(0);
    let (rows, total) = app.reader.sessions(filter).await?;
    Ok(Json(
        json!({ "sessions": rows, "total": total, "limit": limit, "offset": offset }),
    ))
}

async fn session(
    State(app): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(row) = app.reader.session(key.clone()).await? else {
        return Err(ApiError::not_found(format!("no session {key:?}")));
    };
    let spans = app.reader.session_spans(key.clone()).await?;
    let logs = app.reader.session_logs(key).await?;
    let mut traces: Vec<String> = spans
        .iter()
        .map(|s| ids::to_hex(&s.span.trace_id))
        .collect();
    traces.sort();
    traces.dedup();
    Ok(Json(json!({
        "session": row,
        "traces": traces,
        "spans": span_tree(&spans),
        "logs": logs.iter().map(log_view).collect::<Vec<_>>(),
    })))
}

async fn trace(
    State(app): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = ids::from_hex(&trace_id, 16).ok_or_else(|| {
        ApiError::bad_request(format!(
            "trace id must be 32 hex digits, not all zero; got {trace_id:?}"
        ))
    })?;
    let spans = app.reader.trace_spans(id.clone()).await?;
    let logs = app.reader.trace_logs(id).await?;
    if spans.is_empty() && logs.is_empty() {
        return Err(ApiError::not_found(format!("no trace {trace_id}")));
    }
    Ok(Json(json!({
        "trace_id": trace_id.to_ascii_lowercase(),
        "spans": span_tree(&spans),
        "logs": logs.iter().map(log_view).collect::<Vec<_>>(),
    })))
}

async fn retention_status(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let status = app
        .retention
        .lock()
        .map(|s| s.clone())
        .map_err(|_| ApiError::bad_request("retention status unavailable"))?;
    Ok(Json(json!(status)))
}

/// Applies the configured policy now (it also runs every `--retention-interval`).
async fn retention_run(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let policy = app.config.retention;
    if !policy.is_set() {
        return Err(ApiError::bad_request(
            "no retention policy is configured: set --retention-age and/or --retention-max-bytes",
        ));
    }
    let result = crate::store::retention::run(&app.writer, policy, 10_000).await;
    if let Ok(mut status) = app.retention.lock() {
        status.record(&result);
    }
    Ok(Json(json!(result?)))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready while the store answers and the writer keeps up.
async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.reader
        .with(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await?;
    Ok(Json(
        json!({ "status": "ready", "queue_depth": app.writer.queue_depth() }),
    ))
}
