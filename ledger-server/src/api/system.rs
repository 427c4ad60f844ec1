//! Health, readiness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::{AppError, AppResult};

/// The generated OpenAPI document, made once.
static OPENAPI: std::sync::LazyLock<String> = std::sync::LazyLock::new(super::openapi::document);

/// Whether the service is ready.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /health`: the process answers.
#[utoipa::path(get, path = "/health", tag = "system", security(()),
    responses((status = 200, description = "The process answers", content_type = "text/plain", body = String)))]
pub async fn health() -> &'static str {
    "ok"
}

/// `GET /ready`: the database answers and every migration is applied.
#[utoipa::path(get, path = "/ready", tag = "system", security(()),
    responses((status = 200, body = Readiness), (status = 503, description = "Not ready: `reason` says why", body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let expected =
        ledger_store::MIGRATOR.iter().filter(|migration| migration.migration_type.is_up_migration()).count() as i64;
    let applied = state.ledger.store().applied_migrations().await.map(|versions| versions.len() as i64);
    match applied {
        Ok(applied) if applied == expected => {
            (StatusCode::OK, Json(Readiness { ready: true, reason: None })).into_response()
        }
        Ok(applied) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                ready: false,
                reason: Some(format!("{applied} of {expected} migrations applied: run `payroll-ledger migrate`")),
            }),
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            let reason = Some("the database does not answer".to_owned());
            (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { ready: false, reason })).into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "system", security(()),
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> AppResult<Response> {
    let lags = ledger_projections::lag(state.ledger.store()).await?;
    let text = state.metrics.render(&lags);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "system", security(()),
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)))]
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI.as_str()).into_response()
}

pub async fn not_found() -> AppError {
    AppError::NotFound("no such route; see GET /openapi.json".to_owned())
}
