//! The read side: aotel's own JSON API, the Jaeger and Tempo APIs, over read-only connections.

pub mod api;
pub mod jaeger;
pub mod metrics;
pub mod search;
pub mod tempo;
pub mod traceql;
pub mod views;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

/// The Jaeger and Tempo APIs. Both use `/api/traces/{id}`: protobuf (what Grafana's Tempo data
/// source asks for) gets Tempo's answer, anything else Jaeger's JSON (Jaeger UI, Grafana's Jaeger).
pub fn trace_apis() -> Router<crate::AppState> {
    Router::new()
        .route("/api/traces/{trace_id}", get(trace_by_id))
        .merge(jaeger::router())
        .merge(tempo::router())
}

async fn trace_by_id(
    State(app): State<crate::AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if tempo::wants_protobuf(&headers) {
        tempo::trace_v1(app, id).await.into_response()
    } else {
        jaeger::get_trace(app, id).await.into_response()
    }
}

/// A JSON error with the right status; the message says what was wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

/// How every read API answers a store failure: logged once here, `503` with what went wrong.
pub fn store_failure(api: &str, e: crate::store::StoreError) -> (StatusCode, String) {
    tracing::error!(error = %e, api, "query failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the store could not answer: {e}"),
    )
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        let (status, message) = store_failure("aotel", e);
        ApiError { status, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message, "status": self.status.as_u16() })),
        )
            .into_response()
    }
}
