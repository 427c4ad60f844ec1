use axum::Json;
use axum::extract::State;

use super::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use chrono::{DateTime, Utc};
use ledger_app::operations::{NewRun, NewRunKind};
use ledger_core::calendar::{PayFrequency, PayPeriod};
use ledger_core::gross_to_net::{OneOffCategory, OneOffLine, PayrollItem};
use ledger_core::ids::EmployeeId;
use ledger_core::payroll::{OneOffEntry, PayrollRunAggregate, PayrollRunCommand};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::employees::ListQuery;
use super::schema::{Amounts, Entity, Problems, WrittenView, pad, written};
use super::{AppState, Auth, Command, Consistency, MoneyInput, currency, parse_id, read_page, read_row};
use crate::error::{AppError, AppResult};
use crate::keys::Permission;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeriodInput {
    start: NaiveDate,
    end: NaiveDate,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInput {
    payroll_run_id: Option<Uuid>,
    /// A regular run's period is one of its pay schedule's periods
    /// (`GET /v1/pay-schedules/{id}/periods`); an off-cycle run's is the period it reports in.
    period: PeriodInput,
    /// The day the pay is dated (on payslips; a payment counts in the tax year of it): from
    /// the period's first day to 366 days after its last. Defaults to the period's last day.
    pay_date: Option<NaiveDate>,
    /// The schedule a regular run pays a period of; defaults to the organization's default
    /// schedule. Not given for an off-cycle run.
    pay_schedule_id: Option<Uuid>,
    /// Defaults to the pay schedule's.
    #[schema(value_type = Option<super::schema::PayFrequency>)]
    frequency: Option<PayFrequency>,
    /// Defaults to the organization's base currency.
    currency: Option<String>,
    /// A reason makes it an off-cycle run: it pays the `lines` listed, nothing else.
    off_cycle_reason: Option<String>,
    /// An off-cycle run's employees and their one-off lines (more can be added with
    /// `POST /v1/payroll-runs/{id}/lines` until it is approved).
    #[schema(max_items = 1000)]
    lines: Option<Vec<EntryInput>>,
}

/// One employee's one-off lines in an off-cycle run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryInput {
    employee_id: Uuid,
    #[schema(min_items = 1, max_items = 20)]
    lines: Vec<LineInput>,
}

/// A one-off earning.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineInput {
    /// `bonus`, `commission`, `correction` (may be negative) or `final_pay`.
    #[schema(value_type = String, pattern = "^(bonus|commission|correction|final_pay)$")]
    category: OneOffCategory,
    /// The organization's own earning code, e.g. `BON-Q4`.
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$", max_length = 64)]
    code: String,
    amount: SignedMoneyInput,
    /// Whether the organization's percentage rules apply (default true); fixed-amount rules
    /// never apply to one-off lines.
    taxable: Option<bool>,
}

/// An amount that may be negative (a correction): a decimal string and a currency code.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedMoneyInput {
    #[schema(example = "1500.00", pattern = r"^-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,9})?$")]
    pub amount: String,
    #[schema(example = "USD", pattern = r"^[A-Z0-9]{3,12}$")]
    pub currency: String,
}

/// The entries of a request, resolved: amounts parsed in their currencies, each field named.
async fn entries(
    state: &AppState,
    organization_id: Uuid,
    input: Vec<EntryInput>,
    field: &str,
) -> AppResult<Vec<OneOffEntry>> {
    let mut entries = Vec::with_capacity(input.len());
    for (index, entry) in input.into_iter().enumerate() {
        let mut lines = Vec::with_capacity(entry.lines.len());
        for (line_index, line) in entry.lines.into_iter().enumerate() {
            let line_field = format!("{field}[{index}].lines[{line_index}]");
            let money = MoneyInput { amount: line.amount.amount.clone(), currency: line.amount.currency.clone() };
            let amount = match line.amount.amount.strip_prefix('-') {
                Some(magnitude) => {
                    let positive = MoneyInput { amount: magnitude.to_owned(), ..money };
                    positive.resolve(&state.ledger, organization_id, &line_field).await?.negated()
                }
                None => money.resolve(&state.ledger, organization_id, &line_field).await?,
            };
            lines.push(OneOffLine {
                category: line.category,
                code: line.code,
                amount,
                taxable: line.taxable.unwrap_or(true),
            });
        }
        entries.push(OneOffEntry { employee_id: EmployeeId::from_uuid(entry.employee_id), lines });
    }
    Ok(entries)
}

/// `POST /v1/payroll-runs`: a draft run. A regular run pays one period of a pay schedule
/// (409 `period_taken`, naming the other run, when a live regular run pays it already); an
/// off-cycle run pays the one-off lines it lists.
#[utoipa::path(post, path = "/v1/payroll-runs", tag = "payroll runs", request_body = CreateInput, params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 201, body = WrittenView), (status = 200, description = "A repeat", body = WrittenView), Problems))]
pub async fn create(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    let input: CreateInput = command.json()?;
    let organization_id = command.context.organization_id();
    let period = PayPeriod::new(input.period.start, input.period.end)?;
    let run_currency = match &input.currency {
        Some(code) => Some(currency(&state.ledger, organization_id, code, "currency").await?),
        None => None,
    };
    let kind = match (input.off_cycle_reason, input.lines) {
        (Some(reason), lines) => {
            if input.pay_schedule_id.is_some() {
                return Err(AppError::bad_request("pay_schedule_id", "an off-cycle run pays no schedule's period"));
            }
            let entries = entries(&state, organization_id, lines.unwrap_or_default(), "lines").await?;
            NewRunKind::OffCycle { reason, entries }
        }
        (None, Some(_)) => {
            return Err(AppError::bad_request("lines", "only an off-cycle run (with off_cycle_reason) lists lines"));
        }
        (None, None) => NewRunKind::Regular { pay_schedule_id: input.pay_schedule_id },
    };
    let run_id = match input.payroll_run_id {
        Some(id) => id,
        None => state.ledger.new_id(&command.context, "payroll_run").await?,
    };
    let new = NewRun {
        payroll_run_id: run_id,
        period,
        pay_date: input.pay_date,
        kind,
        frequency: input.frequency,
        currency: run_currency,
    };
    let done = ledger_app::operations::create_run(&state.ledger, &command.context, new).await?;
    Ok(written(StatusCode::CREATED, Entity::PayrollRun, run_id, done))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinesInput {
    #[schema(min_items = 1, max_items = 1000)]
    lines: Vec<EntryInput>,
}

/// `POST /v1/payroll-runs/{id}/lines`: adds employees' one-off lines to an off-cycle run
/// (draft or calculated; a calculated run is to be calculated again).
#[utoipa::path(post, path = "/v1/payroll-runs/{id}/lines", tag = "payroll runs", request_body = LinesInput, params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn add_lines(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let input: LinesInput = command.json()?;
    let entries = entries(&state, command.context.organization_id(), input.lines, "lines").await?;
    let done = ledger_app::operations::add_lines(&state.ledger, &command.context, run_id, entries).await?;
    Ok(written(StatusCode::OK, Entity::PayrollRun, run_id, done))
}

/// `POST /v1/payroll-runs/{id}/calculate`: calculates or recalculates (until approved).
#[utoipa::path(post, path = "/v1/payroll-runs/{id}/calculate", tag = "payroll runs", params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn calculate(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let done = ledger_app::operations::calculate(&state.ledger, &command.context, run_id).await?;
    Ok(written(StatusCode::OK, Entity::PayrollRun, run_id, done))
}

/// `POST /v1/payroll-runs/{id}/preview`: what a calculation would give; records nothing.
#[utoipa::path(post, path = "/v1/payroll-runs/{id}/preview", tag = "payroll runs", params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)")),
    responses((status = 200, body = PreviewView), Problems))]
pub async fn preview(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let items = ledger_app::operations::preview(&state.ledger, &command.context, run_id).await?;
    Ok(Json(PreviewView { payroll_run_id: run_id, items }).into_response())
}

/// `POST /v1/payroll-runs/{id}/approve`: by a person other than who created or calculated it
/// (four eyes compares the keys' holders: another key of the same person is the same person;
/// a service account's key never approves).
#[utoipa::path(post, path = "/v1/payroll-runs/{id}/approve", tag = "payroll runs", params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn approve(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    if !command.identity.is_person() {
        return Err(AppError::Forbidden(format!(
            "{} is a service account: a run is approved by a person (four eyes), with a key naming them",
            command.identity.holder
        )));
    }
    let approve = PayrollRunCommand::Approve { actor: command.context.actor() };
    let done = state.ledger.execute::<PayrollRunAggregate>(&command.context, run_id, approve).await?;
    Ok(written(StatusCode::OK, Entity::PayrollRun, run_id, done))
}

/// `POST /v1/payroll-runs/{id}/items/{employee_id}/release`: pays an item held for KYC (now
/// approved) or failed (for want of a wallet, or refused by the rail; a wallet exists now);
/// the run completes again. 422 `item_held` while the cause remains; an item paid already
/// pays nothing more.
#[utoipa::path(post, path = "/v1/payroll-runs/{id}/items/{employee_id}/release", tag = "payroll runs", params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"), ("employee_id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = ProcessView), Problems))]
pub async fn release(
    State(state): State<AppState>,
    Path((id, employee)): Path<(String, String)>,
    command: Command,
) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let employee_id = parse_id(&employee, "employee id")?;
    let report = ledger_app::operations::release(&state.ledger, &command.context, run_id, employee_id).await?;
    Ok(process_view(run_id, report))
}

/// `POST /v1/payroll-runs/{id}/process`: pays every pending item and completes the run.
/// Safe to repeat: it pays what is still pending and nobody twice. On a completed run it pays
/// the held and failed items whose cause has cleared since (KYC approved, a wallet opened).
#[utoipa::path(post, path = "/v1/payroll-runs/{id}/process", tag = "payroll runs", params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = ProcessView), Problems))]
pub async fn process(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let report = ledger_app::operations::process(&state.ledger, &command.context, run_id).await?;
    Ok(process_view(run_id, report))
}

fn process_view(run_id: Uuid, report: ledger_app::operations::ProcessReport) -> Response {
    let replayed = report.replayed;
    let report = ProcessReportView {
        status: report.status.into(),
        paid_now: report.paid_now,
        failed_now: report.failed_now,
        paid: report.paid,
        failed: report.failed,
        held: report.held,
        position: report.position,
    };
    Json(ProcessView { payroll_run_id: run_id, position: report.position, replayed, report }).into_response()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonInput {
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    reason: String,
}

/// `POST /v1/payroll-runs/{id}/void`: cancels a run before any payment.
#[utoipa::path(post, path = "/v1/payroll-runs/{id}/void", tag = "payroll runs", request_body = ReasonInput, params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn void(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let input: ReasonInput = command.json()?;
    let done = ledger_app::operations::void(&state.ledger, &command.context, run_id, input.reason).await?;
    Ok(written(StatusCode::OK, Entity::PayrollRun, run_id, done))
}

/// `POST /v1/payroll-runs/{id}/reverse`: reverses a paid run, item by item.
#[utoipa::path(post, path = "/v1/payroll-runs/{id}/reverse", tag = "payroll runs", request_body = ReasonInput, params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn reverse(State(state): State<AppState>, Path(id): Path<String>, command: Command) -> AppResult<Response> {
    let run_id = parse_id(&id, "payroll run id")?;
    let input: ReasonInput = command.json()?;
    let done = ledger_app::operations::reverse(&state.ledger, &command.context, run_id, input.reason).await?;
    Ok(written(StatusCode::OK, Entity::PayrollRun, run_id, done))
}

/// What a calculation would give, item by item; nothing is recorded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PreviewView {
    pub payroll_run_id: Uuid,
    /// Each item's earning, deduction and contribution lines, gross and net, as the domain
    /// calculates them; amounts are `{"amount": "<decimal string>", "currency": {...}}`.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<PayrollItem>,
}

/// What processing did to a run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProcessView {
    pub payroll_run_id: Uuid,
    pub report: ProcessReportView,
    /// The last position this request wrote (0 when it paid nothing): pass it as
    /// `wait_for_position` to read your write.
    pub position: i64,
    /// True when this request repeats an earlier one with the same `Idempotency-Key`.
    pub replayed: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProcessReportView {
    pub status: super::schema::RunStatus,
    /// Items this request paid.
    pub paid_now: u64,
    /// Items this request failed (no active wallet).
    pub failed_now: u64,
    pub paid: u64,
    pub failed: u64,
    pub held: u64,
    pub position: i64,
}

/// A payroll run as the payroll projection has it: its totals and item counts.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunView {
    pub payroll_run_id: Uuid,
    pub organization_id: Uuid,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    /// The day the pay is dated (a payment counts in the tax year of it).
    pub pay_date: NaiveDate,
    #[schema(value_type = super::schema::PayFrequency)]
    pub frequency: String,
    pub currency: String,
    /// `regular` or `off_cycle`.
    pub kind: String,
    pub off_cycle_reason: Option<String>,
    #[schema(value_type = super::schema::RunStatus)]
    pub status: String,
    pub created_by: String,
    pub calculated_by: Option<String>,
    pub approved_by: Option<String>,
    pub item_count: i64,
    /// Decimal strings in `currency`.
    #[schema(value_type = String, example = "50000.00")]
    pub gross: Decimal,
    #[schema(value_type = String, example = "7500.00")]
    pub deductions: Decimal,
    #[schema(value_type = String, example = "3825.00")]
    pub contributions: Decimal,
    #[schema(value_type = String, example = "42500.00")]
    pub net: Decimal,
    #[schema(value_type = String, example = "53825.00")]
    pub employer_cost: Decimal,
    pub paid_count: i64,
    pub failed_count: i64,
    pub held_count: i64,
    pub created_at: DateTime<Utc>,
    pub last_position: i64,
}

impl Amounts for RunView {
    fn pad_amounts(&mut self) {
        for amount in
            [&mut self.gross, &mut self.deductions, &mut self.contributions, &mut self.net, &mut self.employer_cost]
        {
            pad(amount, &self.currency);
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunPage {
    pub payroll_runs: Vec<RunView>,
    /// Pass as `after` for the next page; null after the last.
    pub next_after: Option<Uuid>,
}

/// `GET /v1/payroll-runs`.
#[utoipa::path(get, path = "/v1/payroll-runs", tag = "payroll runs", params(ListQuery),
    responses((status = 200, body = RunPage), Problems))]
pub async fn list(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<ListQuery>,
) -> AppResult<Json<RunPage>> {
    let sql = "select * from payroll.payroll_runs r where $1::uuid is null or payroll_run_id > $1 order by payroll_run_id limit $2";
    let (payroll_runs, next_after) =
        read_page(&state, &identity, &query, sql, |run: &RunView| run.payroll_run_id).await?;
    Ok(Json(RunPage { payroll_runs, next_after }))
}

/// `GET /v1/payroll-runs/{id}`.
#[utoipa::path(get, path = "/v1/payroll-runs/{id}", tag = "payroll runs",
    params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"), Consistency),
    responses((status = 200, body = RunView), Problems))]
pub async fn show(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
) -> AppResult<Json<RunView>> {
    let run_id = parse_id(&id, "payroll run id")?;
    let sql = "select * from payroll.payroll_runs r where payroll_run_id = $1";
    read_row(&state, &identity, consistency, sql, run_id, format!("no payroll run {run_id}")).await
}

/// One employee's item in a run: amounts, lines and payment.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ItemView {
    pub payroll_run_id: Uuid,
    pub employee_id: Uuid,
    pub organization_id: Uuid,
    /// Decimal strings in `currency`.
    #[schema(value_type = String, example = "5000.00")]
    pub gross: Decimal,
    #[schema(value_type = String, example = "750.00")]
    pub deductions: Decimal,
    #[schema(value_type = String, example = "382.50")]
    pub contributions: Decimal,
    #[schema(value_type = String, example = "4250.00")]
    pub net: Decimal,
    /// Earning lines: regular days at a rate, or a retro correction of an earlier period.
    #[schema(value_type = Vec<Object>)]
    pub earnings: sqlx::types::Json<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub deduction_lines: sqlx::types::Json<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub contribution_lines: sqlx::types::Json<serde_json::Value>,
    /// `pending`, `held`, `paid`, `failed` or `reversed`.
    pub status: String,
    pub hold_reason: Option<String>,
    pub transaction_id: Option<Uuid>,
    pub failure_reason: Option<String>,
    pub last_position: i64,
    /// The run's currency.
    pub currency: String,
}

impl Amounts for ItemView {
    fn pad_amounts(&mut self) {
        for amount in [&mut self.gross, &mut self.deductions, &mut self.contributions, &mut self.net] {
            pad(amount, &self.currency);
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ItemPage {
    pub payroll_run_id: Uuid,
    pub items: Vec<ItemView>,
    /// Pass as `after` for the next page; null after the last.
    pub next_after: Option<Uuid>,
}

/// `GET /v1/payroll-runs/{id}/items?after=<employee>&limit=N`.
#[utoipa::path(get, path = "/v1/payroll-runs/{id}/items", tag = "payroll runs",
    params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"), ListQuery),
    responses((status = 200, body = ItemPage), Problems))]
pub async fn items(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> AppResult<Json<ItemPage>> {
    identity.require(Permission::Read)?;
    let run_id = parse_id(&id, "payroll run id")?;
    query.consistency().wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let mut items: Vec<ItemView> = sqlx::query_as(
        "select i.*, r.currency from payroll.payroll_items i join payroll.payroll_runs r using (payroll_run_id) \
         where i.payroll_run_id = $1 and ($2::uuid is null or i.employee_id > $2) order by i.employee_id limit $3",
    )
    .bind(run_id)
    .bind(query.after)
    .bind(query.limit())
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    items.iter_mut().for_each(Amounts::pad_amounts);
    let next_after = if items.len() as i64 == query.limit() { items.last().map(|item| item.employee_id) } else { None };
    Ok(Json(ItemPage { payroll_run_id: run_id, items, next_after }))
}
