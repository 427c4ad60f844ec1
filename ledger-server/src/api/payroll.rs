use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use ledger_core::calendar::{PayFrequency, PayPeriod};
use ledger_core::ids::{OrganizationId, PayrollRunId};
use ledger_core::organization::OrganizationAggregate;
use ledger_core::payroll::{PayrollRunAggregate, PayrollRunCommand, RunKind};
use serde::Deserialize;
use uuid::Uuid;

use super::employees::ListQuery;
use super::{AppState, Auth, Command, Consistency, currency, parse_id, read_page, read_row, written};
use crate::error::{AppError, AppResult};
use crate::keys::Permission;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodInput {
    start: NaiveDate,
    end: NaiveDate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInput {
    payroll_run_id: Option<Uuid>,
    period: PeriodInput,
    /// Defaults to the organization's pay schedule.
    frequency: Option<PayFrequency>,
    /// Defaults to the organization's base currency.
    currency: Option<String>,
    /// A reason makes it an off-cycle run.
    off_cycle_reason: Option<String>,
}

/// `POST /v1/payroll-runs`: a draft run for a period.
pub async fn create(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    let input: CreateInput = command.json()?;
    let organization_id = command.context.organization_id();
    let period = PayPeriod::new(input.period.start, input.period.end)?;
    let organization = state.ledger.load::<OrganizationAggregate>(organization_id, organization_id).await?.state;
    let organization = organization
        .ok_or_else(|| AppError::NotFound("register the organization first: POST /v1/organization".to_owned()))?;
    let run_currency = match &input.currency {
        Some(code) => currency(&state.ledger, organization_id, code, "currency").await?,
        None => organization.base_currency.clone(),
    };
    let run_id = input.payroll_run_id.unwrap_or_else(|| command.context.new_id("payroll_run"));
    let create = PayrollRunCommand::Create {
        payroll_run_id: PayrollRunId::from_uuid(run_id),
        organization_id: OrganizationId::from_uuid(organization_id),
        period,
        frequency: input.frequency.unwrap_or(organization.pay_schedule.frequency),
        currency: run_currency,
        kind: match input.off_cycle_reason {
            Some(reason) => RunKind::OffCycle { reason },
            None => RunKind::Regular,
        },
        actor: command.context.actor(),
    };
    let done = state.ledger.execute::<PayrollRunAggregate>(&command.context, run_id, create).await?;
    Ok(written(StatusCode::CREATED, "payroll_run_id", run_id, done))
}

/// `POST /v1/payroll-runs/{id}/calculate`: calculates or recalculates (until approved).
pub async fn calculate(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let done = ledger_app::operations::calculate(&state.ledger, &command.context, run_id).await?;
    Ok(written(StatusCode::OK, "payroll_run_id", run_id, done))
}

/// `POST /v1/payroll-runs/{id}/preview`: what a calculation would give; records nothing.
pub async fn preview(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let items = ledger_app::operations::preview(&state.ledger, &command.context, run_id).await?;
    Ok(Json(serde_json::json!({ "payroll_run_id": run_id, "items": items })).into_response())
}

/// `POST /v1/payroll-runs/{id}/approve`: by someone other than who created or calculated it.
pub async fn approve(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let approve = PayrollRunCommand::Approve { actor: command.context.actor() };
    let done = state.ledger.execute::<PayrollRunAggregate>(&command.context, run_id, approve).await?;
    Ok(written(StatusCode::OK, "payroll_run_id", run_id, done))
}

/// `POST /v1/payroll-runs/{id}/process`: pays every pending item and completes the run.
/// Safe to repeat: it pays what is still pending and nobody twice.
pub async fn process(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let report = ledger_app::operations::process(&state.ledger, &command.context, run_id).await?;
    Ok(Json(serde_json::json!({ "payroll_run_id": run_id, "report": report, "position": report.position }))
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonInput {
    reason: String,
}

/// `POST /v1/payroll-runs/{id}/void`: cancels a run before any payment.
pub async fn void(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let input: ReasonInput = command.json()?;
    let void = PayrollRunCommand::Void { reason: input.reason, actor: command.context.actor() };
    let done = state.ledger.execute::<PayrollRunAggregate>(&command.context, run_id, void).await?;
    Ok(written(StatusCode::OK, "payroll_run_id", run_id, done))
}

/// `POST /v1/payroll-runs/{id}/reverse`: reverses a paid run, item by item.
pub async fn reverse(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let input: ReasonInput = command.json()?;
    let done = ledger_app::operations::reverse(&state.ledger, &command.context, run_id, input.reason).await?;
    Ok(written(StatusCode::OK, "payroll_run_id", run_id, done))
}

/// `GET /v1/payroll-runs`.
pub async fn list(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<ListQuery>,
) -> AppResult<Json<serde_json::Value>> {
    let sql = "select to_jsonb(r) from payroll.payroll_runs r where $1::uuid is null or payroll_run_id > $1 order by payroll_run_id limit $2";
    let (rows, next) = read_page(&state, &identity, &query, sql, "payroll_run_id").await?;
    Ok(Json(serde_json::json!({ "payroll_runs": rows, "next_after": next })))
}

/// `GET /v1/payroll-runs/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<serde_json::Value>> {
    let run_id = parse_id(&id, "payroll run id")?;
    let sql = "select to_jsonb(r) from payroll.payroll_runs r where payroll_run_id = $1";
    read_row(&state, &identity, consistency, sql, run_id, format!("no payroll run {run_id}")).await
}

/// `GET /v1/payroll-runs/{id}/items?after=<employee>&limit=N`.
pub async fn items(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> AppResult<Json<serde_json::Value>> {
    identity.require(Permission::Read)?;
    let run_id = parse_id(&id, "payroll run id")?;
    query.consistency().wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(
        "select to_jsonb(i) from payroll.payroll_items i where payroll_run_id = $1 and ($2::uuid is null or employee_id > $2) \
         order by employee_id limit $3",
    )
    .bind(run_id)
    .bind(query.after)
    .bind(query.limit())
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    let next = if rows.len() as i64 == query.limit() {
        rows.last().and_then(|row| row.get("employee_id").cloned())
    } else {
        None
    };
    Ok(Json(serde_json::json!({ "payroll_run_id": run_id, "items": rows, "next_after": next })))
}
