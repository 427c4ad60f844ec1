//! Pay schedules: an organization's calendars of pay periods, and which regular run pays
//! each period.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use ledger_core::calendar::{PayFrequency, PaySchedule};
use ledger_core::ids::PayScheduleId;
use ledger_core::organization::{OrganizationAggregate, OrganizationCommand};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::employees::ListQuery;
use super::extract::{Path, Query};
use super::schema::{Amounts, Entity, Problems, WrittenView, written};
use super::{AppState, Auth, Command, Consistency, parse_id, read_page, read_row};
use crate::error::{AppError, AppResult};
use crate::keys::Permission;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleInput {
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$", max_length = 200)]
    name: String,
    #[schema(value_type = super::schema::PayFrequency)]
    frequency: PayFrequency,
    /// The first day of one period; the others follow from it.
    anchor_date: NaiveDate,
}

/// `POST /v1/pay-schedules`: adds a pay schedule (a schedule never changes once added).
#[utoipa::path(post, path = "/v1/pay-schedules", tag = "pay schedules", request_body = ScheduleInput, params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 201, body = WrittenView), (status = 200, description = "A repeat", body = WrittenView), Problems))]
pub async fn create(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let input: ScheduleInput = command.json()?;
    if input.name.chars().count() > 200 {
        return Err(AppError::bad_request("name", "must be at most 200 characters"));
    }
    let organization_id = command.context.organization_id();
    let schedule_id = state.ledger.new_id(&command.context, "pay_schedule").await?;
    let add = OrganizationCommand::AddPaySchedule {
        pay_schedule_id: PayScheduleId::from_uuid(schedule_id),
        name: input.name,
        schedule: PaySchedule { frequency: input.frequency, anchor_date: input.anchor_date },
    };
    let done = super::execute_existing::<OrganizationAggregate, _>(
        &state.ledger,
        &command.context,
        organization_id,
        add,
        || "register the organization first: POST /v1/organization".to_owned(),
    )
    .await?;
    Ok(written(StatusCode::CREATED, Entity::PaySchedule, schedule_id, done))
}

/// A pay schedule.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ScheduleView {
    pub pay_schedule_id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    #[schema(value_type = super::schema::PayFrequency)]
    pub frequency: String,
    pub anchor_date: NaiveDate,
    /// The schedule the organization registered with: hires go on it by default.
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
    pub last_position: i64,
}

impl Amounts for ScheduleView {}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SchedulePage {
    pub pay_schedules: Vec<ScheduleView>,
    /// Pass as `after` for the next page; null after the last.
    pub next_after: Option<Uuid>,
}

/// `GET /v1/pay-schedules`.
#[utoipa::path(get, path = "/v1/pay-schedules", tag = "pay schedules", params(ListQuery),
    responses((status = 200, body = SchedulePage), Problems))]
pub async fn list(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<ListQuery>,
) -> AppResult<Json<SchedulePage>> {
    let sql = "select * from payroll.pay_schedules where $1::uuid is null or pay_schedule_id > $1 order by pay_schedule_id limit $2";
    let (pay_schedules, next_after) =
        read_page(&state, &identity, &query, sql, |schedule: &ScheduleView| schedule.pay_schedule_id).await?;
    Ok(Json(SchedulePage { pay_schedules, next_after }))
}

/// `GET /v1/pay-schedules/{id}`.
#[utoipa::path(get, path = "/v1/pay-schedules/{id}", tag = "pay schedules",
    params(("id" = uuid::Uuid, Path, description = "The pay schedule's id (a UUID)"), Consistency),
    responses((status = 200, body = ScheduleView), Problems))]
pub async fn show(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<ScheduleView>> {
    let schedule_id = parse_id(&id, "pay schedule id")?;
    let sql = "select * from payroll.pay_schedules where pay_schedule_id = $1";
    read_row(&state, &identity, consistency, sql, schedule_id, format!("no pay schedule {schedule_id}")).await
}

/// The periods most one page lists.
pub const PERIODS_PER_PAGE_MAX: usize = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodsQuery {
    /// The first period listed is the one holding this day (default: today).
    pub from: Option<NaiveDate>,
    /// No period starting after this day is listed (default: a year after `from`).
    pub to: Option<NaiveDate>,
    /// Periods per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Wait until every projection has applied the event at this position.
    #[param(minimum = 0)]
    pub wait_for_position: Option<i64>,
    /// How long to wait, in milliseconds (default 5,000; at most 30,000).
    #[param(maximum = 30000)]
    pub wait_timeout_ms: Option<u32>,
}

/// One period of a schedule, and the live regular run that pays it (if any).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeriodView {
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// The regular run that pays this period (not voided, not reversed); null while none does.
    pub payroll_run_id: Option<Uuid>,
    /// That run's status.
    #[schema(value_type = Option<super::schema::RunStatus>)]
    pub run_status: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeriodPage {
    pub pay_schedule_id: Uuid,
    #[schema(value_type = super::schema::PayFrequency)]
    pub frequency: String,
    pub periods: Vec<PeriodView>,
    /// Pass as `from` for the next page; null when the range is done.
    pub next_from: Option<NaiveDate>,
}

/// `GET /v1/pay-schedules/{id}/periods?from=&to=`: the schedule's periods in a range, each
/// with the regular run that pays it.
#[utoipa::path(get, path = "/v1/pay-schedules/{id}/periods", tag = "pay schedules",
    params(("id" = uuid::Uuid, Path, description = "The pay schedule's id (a UUID)"), PeriodsQuery),
    responses((status = 200, body = PeriodPage), Problems))]
pub async fn periods(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(query): Query<PeriodsQuery>,
) -> AppResult<Json<PeriodPage>> {
    identity.require(Permission::Read)?;
    let schedule_id = parse_id(&id, "pay schedule id")?;
    let consistency =
        Consistency { wait_for_position: query.wait_for_position, wait_timeout_ms: query.wait_timeout_ms };
    consistency.wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let schedule: Option<(String, NaiveDate)> =
        sqlx::query_as("select frequency, anchor_date from payroll.pay_schedules where pay_schedule_id = $1")
            .bind(schedule_id)
            .fetch_optional(&mut *read)
            .await?;
    let Some((frequency, anchor_date)) = schedule else {
        return Err(AppError::NotFound(format!("no pay schedule {schedule_id}")));
    };
    let schedule = PaySchedule {
        frequency: serde_json::from_value(serde_json::Value::String(frequency.clone())).map_err(AppError::internal)?,
        anchor_date,
    };
    let from = query.from.unwrap_or_else(|| Utc::now().date_naive());
    let to = query.to.unwrap_or_else(|| from.checked_add_months(chrono::Months::new(12)).unwrap_or(from));
    let limit = query.limit.map_or(100, |limit| limit as usize).clamp(1, PERIODS_PER_PAGE_MAX);
    // One more than the page: whether a next page starts.
    let mut found = schedule.periods(from, to, limit + 1);
    let next_from = (found.len() > limit).then(|| found.pop().map(|next| next.start())).flatten();
    let (first, last) = match (found.first(), found.last()) {
        (Some(first), Some(last)) => (first.start(), last.start()),
        _ => (from, from),
    };
    let claims: Vec<(NaiveDate, Uuid, Option<String>)> = sqlx::query_as(
        "select c.period_start, c.payroll_run_id, r.status from payroll.pay_period_claims c \
         left join payroll.payroll_runs r using (payroll_run_id) \
         where c.pay_schedule_id = $1 and c.period_start between $2 and $3",
    )
    .bind(schedule_id)
    .bind(first)
    .bind(last)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    let periods = found
        .into_iter()
        .map(|period| {
            let claim = claims.iter().find(|(start, _, _)| *start == period.start());
            PeriodView {
                start: period.start(),
                end: period.end(),
                payroll_run_id: claim.map(|(_, run, _)| *run),
                run_status: claim.and_then(|(_, _, status)| status.clone()),
            }
        })
        .collect();
    Ok(Json(PeriodPage { pay_schedule_id: schedule_id, frequency, periods, next_from }))
}
