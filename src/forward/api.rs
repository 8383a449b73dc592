//! `GET /api/forward` (per destination: state, lag, last error, dead letters) and
//! `GET /api/forward/dead-letters`.

use super::cursor;
use crate::query::ApiError;
use crate::AppState;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/forward", get(destinations))
        .route("/api/forward/dead-letters", get(dead_letters))
}

async fn destinations(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(app.forward.report(&app.reader).await?))
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct DeadLetterQuery {
    destination: Option<String>,
    limit: Option<String>,
}

async fn dead_letters(
    State(app): State<AppState>,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        None => 100,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: expected 1 to 10000, got {s:?}"
                )))
            }
        },
    };
    let destination = q.destination.filter(|s| !s.is_empty());
    let rows = app
        .reader
        .with(move |c| cursor::dead_letters(c, destination.as_deref(), limit))
        .await?;
    Ok(Json(json!({ "dead_letters": rows })))
}
