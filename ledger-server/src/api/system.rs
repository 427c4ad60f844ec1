//! Health, readiness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use ledger_projections::RunnerState;

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

/// `GET /ready`: 200 only when the service can serve and its read side moves: the database
/// answers, every migration is applied, the ledger's era is this cluster's, its roles and
/// grants are there, this process's projector runners run, its checkpoint signing (with a
/// key) works, and no projection is stalled.
#[utoipa::path(get, path = "/ready", tag = "system", security(()),
    responses((status = 200, body = Readiness), (status = 503, description = "Not ready: `reason` says why and what to do", body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let (status, reason) = match unready_reason(&state).await {
        Ok(None) => (StatusCode::OK, None),
        Ok(Some(reason)) => (StatusCode::SERVICE_UNAVAILABLE, Some(reason)),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Some(format!("the database does not answer as it should: {error}")))
        }
    };
    (status, Json(Readiness { ready: status == StatusCode::OK, reason })).into_response()
}

/// Why the service is not ready, if it is not; checked in the order an operator fixes them.
async fn unready_reason(state: &AppState) -> anyhow::Result<Option<String>> {
    let store = state.ledger.store();
    let expected = ledger_store::MIGRATOR.iter().filter(|migration| migration.migration_type.is_up_migration()).count();
    let applied = store.applied_migrations().await?.len();
    if applied != expected {
        return Ok(Some(format!("{applied} of {expected} migrations applied: run `payroll-ledger migrate`")));
    }
    if let Some(problem) = ledger_store::cluster::era_problem(store.pool()).await? {
        return Ok(Some(format!("{problem}: run `payroll-ledger migrate` or restart the server")));
    }
    let missing = ledger_store::cluster::access_problems(store.pool()).await?;
    if !missing.is_empty() {
        return Ok(Some(format!(
            "the ledger's database roles or grants are missing ({}): run `payroll-ledger migrate` as a role that may \
             create roles, or `select ledger.ensure_access();` in psql as one",
            missing.join("; ")
        )));
    }
    for runner in state.runners.iter() {
        match runner.state() {
            RunnerState::Stopped => {
                return Ok(Some(format!("the {} projector is not running: restart the server", runner.projection())));
            }
            RunnerState::Failing { error, since } => {
                return Ok(Some(format!(
                    "the {} projector has failed since {since} and keeps retrying: {error}",
                    runner.projection()
                )));
            }
            RunnerState::Standby | RunnerState::Leading => {}
        }
    }
    if let Some((error, since)) = state.signing.as_ref().and_then(|signing| signing.failing()) {
        return Ok(Some(format!("the log's checkpoint cannot be signed since {since}: {error}")));
    }
    let names = ledger_projections::projections::names();
    let stalled = ledger_store::checkpoint::stalled(store.pool(), &names, state.stall_after).await?;
    if let Some(stalled) = stalled.first() {
        let at = stalled
            .global_position
            .map_or("it has never run".to_owned(), |position| format!("its checkpoint is at position {position}"));
        return Ok(Some(format!(
            "the {} projection is stalled: committed events have waited {:.0} s and {at}; check that its runner \
             runs (`payroll-ledger serve` or `project`) and that no long transaction holds the cluster back",
            stalled.projection_name, stalled.waiting_seconds
        )));
    }
    Ok(None)
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "system", security(()),
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> AppResult<Response> {
    let lags = ledger_projections::lag(state.ledger.store(), &ledger_projections::projections::names()).await?;
    let checkpoint = ledger_store::signing::latest(state.ledger.pool()).await?.map(|latest| {
        let age = latest.signed_at.map_or(0.0, |at| (chrono::Utc::now() - at).num_milliseconds() as f64 / 1000.0);
        crate::metrics::LatestCheckpoint { tree_size: latest.tree_size, age_seconds: age.max(0.0) }
    });
    let text = state.metrics.render(&lags, checkpoint);
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
