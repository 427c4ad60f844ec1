use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;
use ledger_core::calendar::PayFrequency;
use ledger_core::employee::{EmployeeAggregate, EmployeeCommand, KycStatus, PayBasis, PayRate, PersonalData};
use ledger_core::ids::{EmployeeId, OrganizationId};
use rust_decimal::Decimal;
use serde::Deserialize;
use uuid::Uuid;

use super::{AppState, Auth, Command, Consistency, MoneyInput, parse_id, read_page, read_row, written};
use crate::error::{AppError, AppResult};
use crate::keys::Permission;
use ledger_app::Ledger;

/// The most rows one list page returns.
pub const PAGE_ROWS_MAX: i64 = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateInput {
    amount: MoneyInput,
    basis: String,
    hours_per_week: Option<Decimal>,
}

impl RateInput {
    async fn resolve(&self, ledger: &Ledger, organization_id: Uuid, field: &str) -> AppResult<PayRate> {
        let basis = match (self.basis.as_str(), self.hours_per_week) {
            ("annual", None) => PayBasis::Annual,
            ("monthly", None) => PayBasis::Monthly,
            ("hourly", Some(hours_per_week)) => PayBasis::Hourly { hours_per_week },
            ("hourly", None) => {
                return Err(AppError::bad_request(
                    &format!("{field}.hours_per_week"),
                    "an hourly rate needs hours_per_week",
                ));
            }
            ("annual" | "monthly", Some(_)) => {
                return Err(AppError::bad_request(&format!("{field}.hours_per_week"), "only an hourly rate has it"));
            }
            (other, _) => {
                return Err(AppError::bad_request(
                    &format!("{field}.basis"),
                    format!("{other:?} is not annual, monthly or hourly"),
                ));
            }
        };
        Ok(PayRate { amount: self.amount.resolve(ledger, organization_id, &format!("{field}.amount")).await?, basis })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HireInput {
    employee_id: Option<Uuid>,
    personal: PersonalData,
    position: String,
    department: String,
    rate: RateInput,
    pay_frequency: PayFrequency,
    start_date: NaiveDate,
}

/// `POST /v1/employees`.
pub async fn hire(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    let input: HireInput = command.json()?;
    let organization_id = command.context.organization_id();
    let employee_id = input.employee_id.unwrap_or_else(|| command.context.new_id("employee"));
    let hire = EmployeeCommand::Hire {
        employee_id: EmployeeId::from_uuid(employee_id),
        organization_id: OrganizationId::from_uuid(organization_id),
        personal: input.personal,
        position: input.position,
        department: input.department,
        rate: input.rate.resolve(&state.ledger, organization_id, "rate").await?,
        pay_frequency: input.pay_frequency,
        start_date: input.start_date,
    };
    let done = state.ledger.execute::<EmployeeAggregate>(&command.context, employee_id, hire).await?;
    Ok(written(StatusCode::CREATED, "employee_id", employee_id, done))
}

async fn employee_command(
    state: &AppState,
    id: &str,
    command: &Command,
    employee_command: EmployeeCommand,
) -> AppResult<Response> {
    let employee_id = parse_id(id, "employee id")?;
    let existing = state.ledger.load::<EmployeeAggregate>(command.context.organization_id(), employee_id).await?.state;
    if existing.is_none() {
        return Err(AppError::NotFound(format!("no employee {employee_id}")));
    }
    let done = state.ledger.execute::<EmployeeAggregate>(&command.context, employee_id, employee_command).await?;
    Ok(written(StatusCode::OK, "employee_id", employee_id, done))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayRateInput {
    rate: RateInput,
    effective_from: NaiveDate,
    reason: String,
}

/// `POST /v1/employees/{id}/pay-rate`: a new rate from a day on (may be backdated).
pub async fn change_pay_rate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    command: Command,
) -> AppResult<Response> {
    let input: PayRateInput = command.json()?;
    let rate = input.rate.resolve(&state.ledger, command.context.organization_id(), "rate").await?;
    let change = EmployeeCommand::ChangePayRate { rate, effective_from: input.effective_from, reason: input.reason };
    employee_command(&state, &id, &command, change).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionInput {
    position: String,
    department: String,
    effective_from: NaiveDate,
}

/// `POST /v1/employees/{id}/position`.
pub async fn change_position(
    State(state): State<AppState>,
    Path(id): Path<String>,
    command: Command,
) -> AppResult<Response> {
    let input: PositionInput = command.json()?;
    let change = EmployeeCommand::ChangePosition {
        position: input.position,
        department: input.department,
        effective_from: input.effective_from,
    };
    employee_command(&state, &id, &command, change).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KycInput {
    status: KycStatus,
    note: Option<String>,
}

/// `POST /v1/employees/{id}/kyc`.
pub async fn change_kyc(
    State(state): State<AppState>,
    Path(id): Path<String>,
    command: Command,
) -> AppResult<Response> {
    let input: KycInput = command.json()?;
    employee_command(&state, &id, &command, EmployeeCommand::ChangeKycStatus { status: input.status, note: input.note })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TerminateInput {
    end_date: NaiveDate,
    reason: String,
}

/// `POST /v1/employees/{id}/terminate`.
pub async fn terminate(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let input: TerminateInput = command.json()?;
    employee_command(
        &state,
        &id,
        &command,
        EmployeeCommand::Terminate { end_date: input.end_date, reason: input.reason },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RehireInput {
    start_date: NaiveDate,
    rate: Option<RateInput>,
}

/// `POST /v1/employees/{id}/rehire`.
pub async fn rehire(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let input: RehireInput = command.json()?;
    let rate = match &input.rate {
        Some(rate) => Some(rate.resolve(&state.ledger, command.context.organization_id(), "rate").await?),
        None => None,
    };
    employee_command(&state, &id, &command, EmployeeCommand::Rehire { start_date: input.start_date, rate }).await
}

/// A page of a list, with read-your-writes. (Flat fields: serde's `flatten` cannot read
/// numbers from a query string.)
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub after: Option<Uuid>,
    pub limit: Option<i64>,
    pub wait_for_position: Option<i64>,
    pub wait_timeout_ms: Option<u64>,
}

impl ListQuery {
    pub fn consistency(&self) -> Consistency {
        Consistency { wait_for_position: self.wait_for_position, wait_timeout_ms: self.wait_timeout_ms }
    }

    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, PAGE_ROWS_MAX)
    }
}

/// `GET /v1/employees?after=<id>&limit=N`: a page of employees by id.
pub async fn list(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<ListQuery>,
) -> AppResult<Json<serde_json::Value>> {
    let sql = "select to_jsonb(e) from employee.employees e where $1::uuid is null or employee_id > $1 order by employee_id limit $2";
    let (rows, next) = read_page(&state, &identity, &query, sql, "employee_id").await?;
    Ok(Json(serde_json::json!({ "employees": rows, "next_after": next })))
}

/// `GET /v1/employees/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<serde_json::Value>> {
    let employee_id = parse_id(&id, "employee id")?;
    let sql = "select to_jsonb(e) from employee.employees e where employee_id = $1";
    read_row(&state, &identity, consistency, sql, employee_id, format!("no employee {employee_id}")).await
}

/// `GET /v1/employees/{id}/history`: every effective-dated change with its validity.
pub async fn history(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<serde_json::Value>> {
    identity.require(Permission::Read)?;
    let employee_id = parse_id(&id, "employee id")?;
    consistency.wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(
        "select to_jsonb(h) from employee.employee_history h where employee_id = $1 order by change, valid_from, global_position",
    )
    .bind(employee_id)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    if rows.is_empty() {
        return Err(AppError::NotFound(format!("no employee {employee_id}")));
    }
    Ok(Json(serde_json::json!({ "employee_id": employee_id, "history": rows })))
}
