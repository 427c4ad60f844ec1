//! Health, readiness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::{AppError, AppResult};

/// The OpenAPI document, checked in at `docs/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// `GET /health`: the process answers.
pub async fn health() -> &'static str {
    "ok"
}

/// `GET /ready`: the database answers and every migration is applied.
pub async fn ready(State(state): State<AppState>) -> Response {
    let expected =
        ledger_store::MIGRATOR.iter().filter(|migration| migration.migration_type.is_up_migration()).count() as i64;
    let applied = state.ledger.store().applied_migrations().await.map(|versions| versions.len() as i64);
    match applied {
        Ok(applied) if applied == expected => (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response(),
        Ok(applied) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": format!("{applied} of {expected} migrations applied: run `payroll-ledger migrate`") })),
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "ready": false, "reason": "the database does not answer" }))).into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> AppResult<Response> {
    let lags = ledger_projections::lag(state.ledger.store()).await?;
    let text = state.metrics.render(&lags);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn not_found() -> AppError {
    AppError::NotFound("no such route; see GET /openapi.json".to_owned())
}
