use axum::Json;
use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;
use chrono::{DateTime, Utc};
use ledger_core::calendar::PayFrequency;
use ledger_core::employee::{EmployeeAggregate, EmployeeCommand, KycStatus, PayBasis, PayRate, PersonalData};
use ledger_core::ids::{EmployeeId, OrganizationId, PayScheduleId};
use ledger_core::organization::{Organization, OrganizationAggregate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::schema::{Amounts, Entity, Problems, WrittenView, pad, written};
use super::{AppState, Auth, Command, Consistency, MoneyInput, parse_id, read_page, read_row};
use crate::error::{AppError, AppResult};
use crate::keys::Permission;
use ledger_app::Ledger;

/// The most rows one list page returns.
pub const PAGE_ROWS_MAX: i64 = 1_000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateInput {
    amount: MoneyInput,
    /// `annual`, `monthly` or `hourly` (with `hours_per_week`).
    #[schema(example = "monthly", pattern = "^(annual|monthly|hourly)$")]
    basis: String,
    #[schema(value_type = Option<String>, example = "40")]
    #[serde(default, with = "rust_decimal::serde::str_option")]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HireInput {
    /// Defaults to one derived from the `Idempotency-Key`, or a new one.
    employee_id: Option<Uuid>,
    #[schema(value_type = super::schema::PersonalData)]
    personal: PersonalData,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    position: String,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    department: String,
    rate: RateInput,
    /// Defaults to the pay schedule's frequency.
    #[schema(value_type = Option<super::schema::PayFrequency>)]
    pay_frequency: Option<PayFrequency>,
    /// The pay schedule whose regular runs pay the employee. Defaults to the organization's
    /// default schedule, or, given a `pay_frequency` that is not the default's, to its only
    /// schedule of that frequency.
    pay_schedule_id: Option<Uuid>,
    start_date: NaiveDate,
}

/// The schedule a hire goes on (see [`HireInput::pay_schedule_id`]) and its frequency.
fn hire_schedule(
    organization: &Organization,
    schedule_id: Option<Uuid>,
    frequency: Option<PayFrequency>,
) -> AppResult<(PayScheduleId, PayFrequency)> {
    let schedule = match (schedule_id, frequency) {
        (Some(id), _) => organization.schedule(PayScheduleId::from_uuid(id), "pay_schedule_id")?,
        (None, Some(frequency)) if organization.default_schedule().schedule.frequency != frequency => {
            let mut of_frequency =
                organization.pay_schedules.values().filter(|named| named.schedule.frequency == frequency);
            match (of_frequency.next(), of_frequency.next()) {
                (Some(only), None) => only,
                (None, _) => {
                    return Err(AppError::bad_request(
                        "pay_frequency",
                        format!("the organization has no {frequency:?} pay schedule: add one (POST /v1/pay-schedules)"),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(AppError::bad_request(
                        "pay_schedule_id",
                        format!("the organization has several {frequency:?} pay schedules: name one"),
                    ));
                }
            }
        }
        (None, _) => organization.default_schedule(),
    };
    let scheduled = schedule.schedule.frequency;
    if frequency.is_some_and(|frequency| frequency != scheduled) {
        return Err(AppError::bad_request(
            "pay_frequency",
            format!(
                "pay schedule {} pays {scheduled:?}; leave pay_frequency out or name a schedule of it",
                schedule.id
            ),
        ));
    }
    Ok((schedule.id, scheduled))
}

/// `POST /v1/employees`: hires an employee.
#[utoipa::path(post, path = "/v1/employees", tag = "employees", request_body = HireInput,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 201, description = "Hired", body = WrittenView), (status = 200, description = "A repeat of an earlier request", body = WrittenView), Problems))]
pub async fn hire(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    let input: HireInput = command.json()?;
    let organization_id = command.context.organization_id();
    let employee_id = match input.employee_id {
        Some(id) => id,
        None => state.ledger.new_id(&command.context, "employee").await?,
    };
    let organization = state.ledger.load::<OrganizationAggregate>(organization_id, organization_id).await?.state;
    let organization = organization
        .ok_or_else(|| AppError::NotFound("register the organization first: POST /v1/organization".to_owned()))?;
    let (pay_schedule_id, pay_frequency) = hire_schedule(&organization, input.pay_schedule_id, input.pay_frequency)?;
    let hire = EmployeeCommand::Hire {
        employee_id: EmployeeId::from_uuid(employee_id),
        organization_id: OrganizationId::from_uuid(organization_id),
        personal: input.personal,
        position: input.position,
        department: input.department,
        rate: input.rate.resolve(&state.ledger, organization_id, "rate").await?,
        pay_frequency,
        pay_schedule_id: Some(pay_schedule_id),
        start_date: input.start_date,
    };
    let done = state.ledger.execute::<EmployeeAggregate>(&command.context, employee_id, hire).await?;
    Ok(written(StatusCode::CREATED, Entity::Employee, employee_id, done))
}

async fn employee_command(
    state: &AppState,
    id: &str,
    command: &Command,
    employee_command: EmployeeCommand,
) -> AppResult<Response> {
    let employee_id = parse_id(id, "employee id")?;
    let done = super::execute_existing::<EmployeeAggregate, _>(
        &state.ledger,
        &command.context,
        employee_id,
        employee_command,
        || format!("no employee {employee_id}"),
    )
    .await?;
    Ok(written(StatusCode::OK, Entity::Employee, employee_id, done))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayRateInput {
    rate: RateInput,
    effective_from: NaiveDate,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    reason: String,
}

/// `POST /v1/employees/{id}/pay-rate`: a new rate from a day on (may be backdated).
#[utoipa::path(post, path = "/v1/employees/{id}/pay-rate", tag = "employees", request_body = PayRateInput,
    params(("id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PositionInput {
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    position: String,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    department: String,
    effective_from: NaiveDate,
}

/// `POST /v1/employees/{id}/position`.
#[utoipa::path(post, path = "/v1/employees/{id}/position", tag = "employees", request_body = PositionInput,
    params(("id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycInput {
    #[schema(value_type = super::schema::KycStatus)]
    status: KycStatus,
    #[schema(pattern = r"^[^\x00]*$")]
    note: Option<String>,
}

/// `POST /v1/employees/{id}/kyc`.
#[utoipa::path(post, path = "/v1/employees/{id}/kyc", tag = "employees", request_body = KycInput,
    params(("id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn change_kyc(
    State(state): State<AppState>,
    Path(id): Path<String>,
    command: Command,
) -> AppResult<Response> {
    let input: KycInput = command.json()?;
    employee_command(&state, &id, &command, EmployeeCommand::ChangeKycStatus { status: input.status, note: input.note })
        .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateInput {
    end_date: NaiveDate,
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    reason: String,
}

/// `POST /v1/employees/{id}/terminate`.
#[utoipa::path(post, path = "/v1/employees/{id}/terminate", tag = "employees", request_body = TerminateInput,
    params(("id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RehireInput {
    start_date: NaiveDate,
    rate: Option<RateInput>,
}

/// `POST /v1/employees/{id}/rehire`.
#[utoipa::path(post, path = "/v1/employees/{id}/rehire", tag = "employees", request_body = RehireInput,
    params(("id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
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
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The cursor: the `next_after` of the page before.
    pub after: Option<Uuid>,
    /// Rows per page, 1 to 1,000 (default 100).
    pub limit: Option<i64>,
    /// Wait until every projection has applied the event at this position.
    #[param(minimum = 0)]
    pub wait_for_position: Option<i64>,
    /// How long to wait, in milliseconds (default 5,000; at most 30,000).
    #[param(maximum = 30000)]
    pub wait_timeout_ms: Option<u32>,
}

impl ListQuery {
    pub fn consistency(&self) -> Consistency {
        Consistency { wait_for_position: self.wait_for_position, wait_timeout_ms: self.wait_timeout_ms }
    }

    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, PAGE_ROWS_MAX)
    }
}

/// An employee as the employee projection has them: the rate in force from the latest
/// effective date on.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EmployeeView {
    pub employee_id: Uuid,
    pub organization_id: Uuid,
    /// Null once the employee's personal data is erased.
    pub full_name: Option<String>,
    pub email: Option<String>,
    #[sqlx(skip)]
    pub address: Option<String>,
    /// The personal data as the table keeps it (sealed), opened into the fields above.
    #[serde(skip)]
    #[schema(ignore)]
    pub personal_sealed: Option<serde_json::Value>,
    pub position: String,
    pub department: String,
    pub currency: String,
    #[schema(value_type = super::schema::PayFrequency)]
    pub pay_frequency: String,
    /// A decimal string in `currency`.
    #[schema(value_type = String, example = "5000.00")]
    pub rate_amount: Decimal,
    /// `annual`, `monthly` or `hourly`.
    pub rate_basis: String,
    pub rate_effective_from: NaiveDate,
    #[schema(value_type = super::schema::KycStatus)]
    pub kyc_status: String,
    /// `employed` or `terminated`.
    pub status: String,
    pub start_date: NaiveDate,
    pub end_date: Option<NaiveDate>,
    /// When the employee's personal data was erased (`POST /v1/employees/{id}/erase`).
    pub erased_at: Option<DateTime<Utc>>,
    /// The position of the last event that changed this row.
    pub last_position: i64,
}

impl Amounts for EmployeeView {
    fn pad_amounts(&mut self) {
        pad(&mut self.rate_amount, &self.currency);
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmployeePage {
    pub employees: Vec<EmployeeView>,
    /// Pass as `after` for the next page; null after the last.
    pub next_after: Option<Uuid>,
}

/// `GET /v1/employees?after=<id>&limit=N`: a page of employees by id.
#[utoipa::path(get, path = "/v1/employees", tag = "employees", params(ListQuery),
    responses((status = 200, body = EmployeePage), Problems))]
pub async fn list(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<ListQuery>,
) -> AppResult<Json<EmployeePage>> {
    let sql =
        "select * from employee.employees e where $1::uuid is null or employee_id > $1 order by employee_id limit $2";
    let (mut employees, next_after) =
        read_page(&state, &identity, &query, sql, |employee: &EmployeeView| employee.employee_id).await?;
    open_personal(&state.ledger, &mut employees).await?;
    Ok(Json(EmployeePage { employees, next_after }))
}

/// `GET /v1/employees/{id}`.
#[utoipa::path(get, path = "/v1/employees/{id}", tag = "employees",
    params(("id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"), Consistency),
    responses((status = 200, body = EmployeeView), Problems))]
pub async fn show(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<EmployeeView>> {
    let employee_id = parse_id(&id, "employee id")?;
    let sql = "select * from employee.employees e where employee_id = $1";
    let Json(mut employee) =
        read_row(&state, &identity, consistency, sql, employee_id, format!("no employee {employee_id}")).await?;
    open_personal(&state.ledger, std::slice::from_mut(&mut employee)).await?;
    Ok(Json(employee))
}

/// Fills in the names the table keeps sealed, opened with the master key (null once erased).
pub(crate) async fn open_personal(ledger: &Ledger, employees: &mut [EmployeeView]) -> AppResult<()> {
    let mut values: Vec<(Uuid, &mut serde_json::Value)> = employees
        .iter_mut()
        .filter_map(|employee| employee.personal_sealed.as_mut().map(|value| (employee.organization_id, value)))
        .collect();
    ledger_store::vault::open_values(ledger.pool(), &mut values).await?;
    for employee in employees {
        let Some(opened) = employee.personal_sealed.take() else { continue };
        if let Ok(personal) = serde_json::from_value::<PersonalData>(opened) {
            employee.full_name = Some(personal.full_name);
            employee.email = personal.email;
            employee.address = personal.address;
        }
    }
    Ok(())
}

/// One effective-dated change of an employee: a pay rate or a position, valid from a day
/// to the day before the next change (open while current).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct HistoryView {
    pub employee_id: Uuid,
    pub global_position: i64,
    pub organization_id: Uuid,
    /// `pay_rate` or `position`.
    pub change: String,
    pub valid_from: NaiveDate,
    pub valid_to: Option<NaiveDate>,
    /// A decimal string in `currency` (a pay rate change).
    #[schema(value_type = Option<String>, example = "5000.00")]
    pub rate_amount: Option<Decimal>,
    pub rate_basis: Option<String>,
    pub position: Option<String>,
    pub department: Option<String>,
    pub reason: Option<String>,
    pub recorded_at: DateTime<Utc>,
    pub last_position: i64,
    /// The employee's pay currency.
    pub currency: String,
}

impl Amounts for HistoryView {
    fn pad_amounts(&mut self) {
        if let Some(rate) = &mut self.rate_amount {
            pad(rate, &self.currency);
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    pub employee_id: Uuid,
    pub history: Vec<HistoryView>,
}

/// `GET /v1/employees/{id}/history`: every effective-dated change with its validity.
#[utoipa::path(get, path = "/v1/employees/{id}/history", tag = "employees",
    params(("id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"), Consistency),
    responses((status = 200, body = HistoryPage), Problems))]
pub async fn history(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<HistoryPage>> {
    identity.require(Permission::Read)?;
    let employee_id = parse_id(&id, "employee id")?;
    consistency.wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let mut history: Vec<HistoryView> = sqlx::query_as(
        "select h.*, e.currency from employee.employee_history h join employee.employees e using (employee_id) \
         where h.employee_id = $1 order by h.change, h.valid_from, h.global_position",
    )
    .bind(employee_id)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    if history.is_empty() {
        return Err(AppError::NotFound(format!("no employee {employee_id}")));
    }
    history.iter_mut().for_each(Amounts::pad_amounts);
    Ok(Json(HistoryPage { employee_id, history }))
}
