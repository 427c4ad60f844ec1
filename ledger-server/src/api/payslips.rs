//! Pay statements and year-to-date totals: what an employee is handed for each paid (or
//! held) item of a run, as JSON or PDF, derived from the read tables the log makes (so a
//! rebuild from the log gives the same payslip, byte for byte).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use ledger_core::calendar::TaxYearStart;
use ledger_core::gross_to_net::{EarningKind, EarningLine, RuleLine};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as Jsonb;
use uuid::Uuid;

use super::employees::{EmployeeView, open_personal};
use super::extract::{Path, Query};
use super::schema::{Problems, pad};
use super::{AppState, Auth, Consistency, page_limit, parse_cursor, parse_id, require_row};

/// Finds an employee of the reader's organization by id.
const EMPLOYEE_SQL: &str = "select employee_id from employee.employees where employee_id = $1";
use crate::error::{AppError, AppResult};
use crate::keys::Permission;
use ledger_app::Ledger;

/// The statuses of an item that has a payslip: paid (or paid and then reversed or refused
/// by the rail) or held. A pending item has none until it is paid.
const ISSUED: &[&str] = &["paid", "held", "failed", "reversed"];

/// The employer on a payslip.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayslipEmployer {
    pub organization_id: Uuid,
    pub name: String,
}

/// The employee on a payslip.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayslipEmployee {
    pub employee_id: Uuid,
    /// Opened from the sealed personal data; null once it is erased.
    pub name: Option<String>,
    pub personal_data_erased: bool,
    pub position: String,
    pub department: String,
}

/// One earning: regular days at a rate, a retro correction of an earlier period, or a
/// one-off line of an off-cycle run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayslipEarning {
    /// `regular`, `retro` or `one_off`.
    pub kind: String,
    pub description: String,
    /// The days paid (regular) or the period corrected (retro).
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Calendar days paid (regular).
    pub days: Option<i64>,
    /// The pay rate in force on those days when the item was calculated (regular), a
    /// decimal string, per `rate_basis` (`annual`, `monthly` or `hourly`).
    #[schema(value_type = Option<String>, example = "60000.00")]
    pub rate: Option<Decimal>,
    pub rate_basis: Option<String>,
    /// A one-off line's category (`bonus`, `commission`, `correction`, `final_pay`), code and
    /// whether percentage rules applied to it.
    pub category: Option<String>,
    pub code: Option<String>,
    pub taxable: Option<bool>,
    #[schema(value_type = String, example = "5000.00")]
    pub amount: Decimal,
}

/// A deduction or an employer contribution, with its rule's total so far this tax year.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayslipRuleLine {
    pub rule_id: String,
    pub name: String,
    #[schema(value_type = String, example = "750.00")]
    pub amount: Decimal,
    /// The rule's total in the tax year (see `year_to_date`).
    #[schema(value_type = Option<String>, example = "2250.00")]
    pub year_to_date: Option<Decimal>,
}

/// A rule's total of a tax year.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct YearToDateLine {
    /// `deduction` or `contribution`.
    pub kind: String,
    pub rule_id: String,
    pub name: String,
    #[schema(value_type = String, example = "2250.00")]
    pub amount: Decimal,
}

/// Totals of one tax year in one currency: gross, deductions, contributions and net of
/// every payment counted in it (reversed and refused payments taken out).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct YearToDateTotals {
    pub tax_year_start: NaiveDate,
    pub tax_year_end: Option<NaiveDate>,
    #[schema(value_type = String, example = "15000.00")]
    pub gross: Decimal,
    #[schema(value_type = String, example = "2250.00")]
    pub deductions: Decimal,
    #[schema(value_type = String, example = "1147.50")]
    pub contributions: Decimal,
    #[schema(value_type = String, example = "12750.00")]
    pub net: Decimal,
    pub lines: Vec<YearToDateLine>,
}

/// The year to date on a payslip.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayslipYearToDate {
    /// True for a paid item: the tax year's totals just after this payment. False for a held
    /// or failed one: the totals so far, without it.
    pub includes_this_payment: bool,
    #[serde(flatten)]
    pub totals: YearToDateTotals,
}

/// How the item was paid.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PayslipPayment {
    pub transaction_id: Uuid,
    pub wallet_id: Option<Uuid>,
    /// The transaction's status: `pending`, `settled`, `failed` or `voided`.
    pub status: String,
    pub recorded_at: DateTime<Utc>,
}

/// A pay statement.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayslipView {
    pub payroll_run_id: Uuid,
    pub employer: PayslipEmployer,
    pub employee: PayslipEmployee,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub pay_date: NaiveDate,
    /// `regular` or `off_cycle`.
    pub run_kind: String,
    pub off_cycle_reason: Option<String>,
    pub currency: String,
    /// The item's status: `paid`, `held`, `failed` or `reversed`.
    pub status: String,
    pub hold_reason: Option<String>,
    pub failure_reason: Option<String>,
    pub earnings: Vec<PayslipEarning>,
    pub deductions: Vec<PayslipRuleLine>,
    pub contributions: Vec<PayslipRuleLine>,
    #[schema(value_type = String, example = "5000.00")]
    pub gross: Decimal,
    #[schema(value_type = String, example = "750.00")]
    pub deductions_total: Decimal,
    #[schema(value_type = String, example = "382.50")]
    pub contributions_total: Decimal,
    #[schema(value_type = String, example = "4250.00")]
    pub net: Decimal,
    /// Gross plus employer contributions.
    #[schema(value_type = String, example = "5382.50")]
    pub employer_cost: Decimal,
    pub year_to_date: PayslipYearToDate,
    /// Null while the item has no payment (held).
    pub payment: Option<PayslipPayment>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    gross: Decimal,
    deductions: Decimal,
    contributions: Decimal,
    net: Decimal,
    earnings: Jsonb<Vec<EarningLine>>,
    deduction_lines: Jsonb<Vec<RuleLine>>,
    contribution_lines: Jsonb<Vec<RuleLine>>,
    status: String,
    hold_reason: Option<String>,
    transaction_id: Option<Uuid>,
    failure_reason: Option<String>,
    year_to_date: Option<Jsonb<YearToDateTotals>>,
    calculated_position: Option<i64>,
    currency: String,
    period_start: NaiveDate,
    period_end: NaiveDate,
    pay_date: NaiveDate,
    kind: String,
    off_cycle_reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RateRow {
    valid_from: NaiveDate,
    rate_amount: Option<Decimal>,
    rate_basis: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TotalsRow {
    tax_year_start: NaiveDate,
    tax_year_end: NaiveDate,
    currency: String,
    items: i32,
    gross: Decimal,
    deductions: Decimal,
    contributions: Decimal,
    net: Decimal,
    lines: Jsonb<Vec<YearToDateLine>>,
}

impl TotalsRow {
    fn totals(self) -> YearToDateTotals {
        YearToDateTotals {
            tax_year_start: self.tax_year_start,
            tax_year_end: Some(self.tax_year_end),
            gross: self.gross,
            deductions: self.deductions,
            contributions: self.contributions,
            net: self.net,
            lines: self.lines.0,
        }
    }
}

/// The organization's tax year start as the payroll projection has it.
async fn tax_year_start(read: &mut sqlx::PgConnection) -> AppResult<TaxYearStart> {
    let start: Option<(i32, i32)> =
        sqlx::query_as("select start_month, start_day from payroll.tax_years").fetch_optional(&mut *read).await?;
    Ok(start.map_or_else(TaxYearStart::default, |(month, day)| TaxYearStart { month: month as u32, day: day as u32 }))
}

fn pad_totals(totals: &mut YearToDateTotals, currency: &str) {
    for amount in [&mut totals.gross, &mut totals.deductions, &mut totals.contributions, &mut totals.net] {
        pad(amount, currency);
    }
    for line in &mut totals.lines {
        pad(&mut line.amount, currency);
    }
}

/// The payslip of one item of an organization, read in one snapshot of the read tables.
pub async fn payslip(
    ledger: &Ledger,
    organization_id: Uuid,
    run_id: Uuid,
    employee_id: Uuid,
) -> AppResult<PayslipView> {
    let mut read = ledger.tenant_read(organization_id).await?;
    let item: Option<ItemRow> = sqlx::query_as(
        "select i.gross, i.deductions, i.contributions, i.net, i.earnings, i.deduction_lines, i.contribution_lines, i.status, \
                i.hold_reason, i.transaction_id, i.failure_reason, i.year_to_date, i.calculated_position, \
                r.currency, r.period_start, r.period_end, r.pay_date, r.kind, r.off_cycle_reason \
         from payroll.payroll_items i join payroll.payroll_runs r using (payroll_run_id) \
         where i.payroll_run_id = $1 and i.employee_id = $2",
    )
    .bind(run_id)
    .bind(employee_id)
    .fetch_optional(&mut *read)
    .await?;
    let item =
        item.ok_or_else(|| AppError::NotFound(format!("no item of employee {employee_id} in payroll run {run_id}")))?;
    if !ISSUED.contains(&item.status.as_str()) {
        return Err(AppError::NotFound(format!(
            "no payslip yet: the item of employee {employee_id} in payroll run {run_id} is {} (a payslip is issued once it is paid or held)",
            item.status
        )));
    }
    let employer: (String,) = sqlx::query_as("select name from organization.organizations where organization_id = $1")
        .bind(organization_id)
        .fetch_one(&mut *read)
        .await?;
    let employee: Option<EmployeeView> = sqlx::query_as("select * from employee.employees e where employee_id = $1")
        .bind(employee_id)
        .fetch_optional(&mut *read)
        .await?;
    let mut employee = employee.ok_or_else(|| AppError::NotFound(format!("no employee {employee_id}")))?;
    // The rates known when the item was calculated (a later, backdated change is a retro
    // line of a later run, not a change of this payslip).
    let rates: Vec<RateRow> = sqlx::query_as(
        "select valid_from, rate_amount, rate_basis from employee.employee_history \
         where employee_id = $1 and change = 'pay_rate' and global_position < coalesce($2, 9223372036854775807) \
         order by valid_from, global_position",
    )
    .bind(employee_id)
    .bind(item.calculated_position)
    .fetch_all(&mut *read)
    .await?;
    let payment: Option<PayslipPayment> = match item.transaction_id {
        Some(transaction_id) => {
            sqlx::query_as(
                "select t.transaction_id, coalesce(t.wallet_id, (select substr(p.account, 8)::uuid from transaction.postings p \
                   where p.transaction_id = t.transaction_id and p.account like 'wallet:%' order by p.line limit 1)) as wallet_id, \
                   t.status, t.recorded_at \
                 from transaction.transactions t where t.transaction_id = $1",
            )
            .bind(transaction_id)
            .fetch_optional(&mut *read)
            .await?
        }
        None => None,
    };
    let year_to_date = match (&item.year_to_date, item.status.as_str()) {
        (Some(totals), "paid" | "reversed") => {
            PayslipYearToDate { includes_this_payment: true, totals: totals.0.clone() }
        }
        _ => {
            let start = tax_year_start(&mut read).await?.year_of(item.pay_date);
            let row: Option<TotalsRow> = sqlx::query_as(
                "select * from payroll.year_to_date where employee_id = $1 and tax_year_start = $2 and currency = $3",
            )
            .bind(employee_id)
            .bind(start)
            .bind(&item.currency)
            .fetch_optional(&mut *read)
            .await?;
            let totals = row.map(TotalsRow::totals).unwrap_or_else(|| YearToDateTotals {
                tax_year_start: start,
                tax_year_end: None,
                gross: Decimal::ZERO,
                deductions: Decimal::ZERO,
                contributions: Decimal::ZERO,
                net: Decimal::ZERO,
                lines: Vec::new(),
            });
            PayslipYearToDate { includes_this_payment: false, totals }
        }
    };
    read.commit().await?;
    open_personal(ledger, std::slice::from_mut(&mut employee)).await?;
    Ok(view(run_id, (organization_id, employer.0), employee, item, &rates, payment, year_to_date))
}

fn view(
    run_id: Uuid,
    employer: (Uuid, String),
    employee: EmployeeView,
    item: ItemRow,
    rates: &[RateRow],
    payment: Option<PayslipPayment>,
    mut year_to_date: PayslipYearToDate,
) -> PayslipView {
    let currency = item.currency.clone();
    let money = |mut amount: Decimal| {
        pad(&mut amount, &currency);
        amount
    };
    let earnings = item.earnings.0.iter().map(|line| earning(line, rates, &currency)).collect();
    pad_totals(&mut year_to_date.totals, &currency);
    let rule_lines = |lines: &[RuleLine], kind: &str| {
        lines
            .iter()
            .map(|line| PayslipRuleLine {
                rule_id: line.rule_id.clone(),
                name: line.name.clone(),
                amount: money(line.amount.amount()),
                year_to_date: year_to_date
                    .totals
                    .lines
                    .iter()
                    .find(|total| total.kind == kind && total.rule_id == line.rule_id)
                    .map(|total| total.amount),
            })
            .collect::<Vec<_>>()
    };
    let deductions = rule_lines(&item.deduction_lines.0, "deduction");
    let contributions = rule_lines(&item.contribution_lines.0, "contribution");
    let erased = employee.erased_at.is_some();
    PayslipView {
        payroll_run_id: run_id,
        employer: PayslipEmployer { organization_id: employer.0, name: employer.1 },
        employee: PayslipEmployee {
            employee_id: employee.employee_id,
            name: if erased { None } else { employee.full_name },
            personal_data_erased: erased,
            position: employee.position,
            department: employee.department,
        },
        period_start: item.period_start,
        period_end: item.period_end,
        pay_date: item.pay_date,
        run_kind: item.kind,
        off_cycle_reason: item.off_cycle_reason,
        status: item.status,
        hold_reason: item.hold_reason,
        failure_reason: item.failure_reason,
        earnings,
        deductions,
        contributions,
        gross: money(item.gross),
        deductions_total: money(item.deductions),
        contributions_total: money(item.contributions),
        net: money(item.net),
        employer_cost: money(item.gross + item.contributions),
        year_to_date,
        payment,
        currency,
    }
}

fn earning(line: &EarningLine, rates: &[RateRow], currency: &str) -> PayslipEarning {
    let mut amount = line.amount.amount();
    pad(&mut amount, currency);
    let blank = PayslipEarning {
        kind: String::new(),
        description: String::new(),
        from: None,
        to: None,
        days: None,
        rate: None,
        rate_basis: None,
        category: None,
        code: None,
        taxable: None,
        amount,
    };
    match &line.kind {
        EarningKind::Regular { from, to } => {
            let rate = rates.iter().rev().find(|rate| rate.valid_from <= *from);
            let days = (*to - *from).num_days() + 1;
            let mut rate_amount = rate.and_then(|rate| rate.rate_amount);
            if let Some(amount) = &mut rate_amount {
                pad(amount, currency);
            }
            PayslipEarning {
                kind: "regular".to_owned(),
                description: format!("Regular pay {from} to {to}"),
                from: Some(*from),
                to: Some(*to),
                days: Some(days),
                rate: rate_amount,
                rate_basis: rate.and_then(|rate| rate.rate_basis.clone()),
                ..blank
            }
        }
        EarningKind::Retro { period } => PayslipEarning {
            kind: "retro".to_owned(),
            description: format!("Retro correction {} to {}", period.start(), period.end()),
            from: Some(period.start()),
            to: Some(period.end()),
            ..blank
        },
        EarningKind::OneOff { category, code, taxable } => {
            let category = match serde_json::to_value(category) {
                Ok(serde_json::Value::String(name)) => name,
                _ => format!("{category:?}"),
            };
            PayslipEarning {
                kind: "one_off".to_owned(),
                description: format!("{} {code}", category.replace('_', " ")),
                category: Some(category),
                code: Some(code.clone()),
                taxable: Some(*taxable),
                ..blank
            }
        }
    }
}

/// `GET /v1/payroll-runs/{id}/items/{employee_id}/payslip`: the pay statement of a paid,
/// held, failed or reversed item, as JSON or, with `Accept: application/pdf`, as a PDF.
#[utoipa::path(get, path = "/v1/payroll-runs/{id}/items/{employee_id}/payslip", tag = "payslips",
    params(("id" = uuid::Uuid, Path, description = "The payroll run's id (a UUID)"),
        ("employee_id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"), Consistency),
    responses((status = 200, description = "The payslip; with `Accept: application/pdf`, the same as a one-page PDF",
        content((PayslipView = "application/json"), (Vec<u8> = "application/pdf"))), Problems))]
pub async fn show(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path((id, employee)): Path<(String, String)>,
    Query(consistency): Query<Consistency>,
    headers: HeaderMap,
) -> AppResult<Response> {
    identity.require(Permission::Read)?;
    let run_id = parse_id(&id, "payroll run id")?;
    let employee_id = parse_id(&employee, "employee id")?;
    consistency.wait(&state.ledger).await?;
    let payslip = payslip(&state.ledger, identity.organization_id, run_id, employee_id).await?;
    if super::prefers(&headers, "application/pdf") {
        let filename = format!("attachment; filename=\"payslip-{}-{employee_id}.pdf\"", payslip.pay_date);
        let pdf = crate::payslip_pdf::render(&payslip);
        return Ok((
            [(header::CONTENT_TYPE, "application/pdf".to_owned()), (header::CONTENT_DISPOSITION, filename)],
            pdf,
        )
            .into_response());
    }
    Ok(Json(payslip).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PayslipListQuery {
    /// The cursor: the `next_after` of the page before (`<pay_date>~<payroll_run_id>`).
    #[param(
        pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])~[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub after: Option<String>,
    /// Rows per page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    #[param(minimum = 0)]
    pub wait_for_position: Option<i64>,
    #[param(maximum = 30000)]
    pub wait_timeout_ms: Option<u32>,
}

/// One payslip of an employee, in the list.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PayslipSummary {
    pub payroll_run_id: Uuid,
    pub pay_date: NaiveDate,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    /// `regular` or `off_cycle`.
    pub run_kind: String,
    /// `paid`, `held`, `failed` or `reversed`.
    pub status: String,
    pub currency: String,
    #[schema(value_type = String, example = "5000.00")]
    pub gross: Decimal,
    #[schema(value_type = String, example = "4250.00")]
    pub net: Decimal,
    /// The payslip (JSON, or PDF with `Accept: application/pdf`).
    pub href: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayslipPage {
    pub employee_id: Uuid,
    pub payslips: Vec<PayslipSummary>,
    /// Pass as `after` for the next page; null after the last.
    pub next_after: Option<String>,
}

/// `GET /v1/employees/{id}/payslips`: the employee's payslips by pay date.
#[utoipa::path(get, path = "/v1/employees/{id}/payslips", tag = "payslips",
    params(("id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"), PayslipListQuery),
    responses((status = 200, body = PayslipPage), Problems))]
pub async fn list(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(query): Query<PayslipListQuery>,
) -> AppResult<Json<PayslipPage>> {
    identity.require(Permission::Read)?;
    let employee_id = parse_id(&id, "employee id")?;
    let after: Option<(NaiveDate, Uuid)> =
        query.after.as_deref().map(|cursor| parse_cursor(cursor, "<pay_date>~<payroll_run_id>")).transpose()?;
    let limit = page_limit(query.limit)?;
    Consistency { wait_for_position: query.wait_for_position, wait_timeout_ms: query.wait_timeout_ms }
        .wait(&state.ledger)
        .await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    require_row(&mut read, EMPLOYEE_SQL, employee_id, || format!("no employee {employee_id}")).await?;
    let mut payslips: Vec<PayslipSummary> = sqlx::query_as(
        "select i.payroll_run_id, r.pay_date, r.period_start, r.period_end, r.kind as run_kind, i.status, r.currency, i.gross, i.net, \
                format('/v1/payroll-runs/%s/items/%s/payslip', i.payroll_run_id, i.employee_id) as href \
         from payroll.payroll_items i join payroll.payroll_runs r using (payroll_run_id) \
         where i.employee_id = $1 and i.status = any($2) \
           and ($3::date is null or (r.pay_date, i.payroll_run_id) > ($3, $4)) \
         order by r.pay_date, i.payroll_run_id limit $5",
    )
    .bind(employee_id)
    .bind(ISSUED)
    .bind(after.map(|(day, _)| day))
    .bind(after.map(|(_, run)| run))
    .bind(limit)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    for payslip in &mut payslips {
        pad(&mut payslip.gross, &payslip.currency);
        pad(&mut payslip.net, &payslip.currency);
    }
    let next_after = if payslips.len() as i64 == limit {
        payslips.last().map(|last| format!("{}~{}", last.pay_date, last.payroll_run_id))
    } else {
        None
    };
    Ok(Json(PayslipPage { employee_id, payslips, next_after }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct YearQuery {
    /// The calendar year the tax year starts in (the organization's tax year start); the
    /// tax year of today when not given.
    #[param(minimum = 1900, maximum = 9999)]
    pub year: Option<i32>,
    #[param(minimum = 0)]
    pub wait_for_position: Option<i64>,
    #[param(maximum = 30000)]
    pub wait_timeout_ms: Option<u32>,
}

/// A tax year's totals in one currency.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CurrencyTotals {
    pub currency: String,
    /// Payments counted.
    pub items: i32,
    #[serde(flatten)]
    pub totals: YearToDateTotals,
}

/// An employee's year to date.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct YearToDateView {
    pub employee_id: Uuid,
    pub tax_year_start: NaiveDate,
    pub tax_year_end: NaiveDate,
    /// One entry per currency paid in; empty when nothing was paid in the tax year.
    pub totals: Vec<CurrencyTotals>,
}

/// `GET /v1/employees/{id}/year-to-date?year=`: what the employee was paid in a tax year.
#[utoipa::path(get, path = "/v1/employees/{id}/year-to-date", tag = "payslips",
    params(("id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"), YearQuery),
    responses((status = 200, body = YearToDateView), Problems))]
pub async fn year_to_date(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(query): Query<YearQuery>,
) -> AppResult<Json<YearToDateView>> {
    identity.require(Permission::Read)?;
    let employee_id = parse_id(&id, "employee id")?;
    if let Some(year) = query.year
        && !(1900..=9999).contains(&year)
    {
        return Err(AppError::bad_request("year", format!("must be from 1900 to 9999, not {year}")));
    }
    Consistency { wait_for_position: query.wait_for_position, wait_timeout_ms: query.wait_timeout_ms }
        .wait(&state.ledger)
        .await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    require_row(&mut read, EMPLOYEE_SQL, employee_id, || format!("no employee {employee_id}")).await?;
    let start_day = tax_year_start(&mut read).await?;
    let start = match query.year {
        Some(year) => start_day.start_in(year),
        None => start_day.year_of(Utc::now().date_naive()),
    };
    let rows: Vec<TotalsRow> = sqlx::query_as(
        "select * from payroll.year_to_date where employee_id = $1 and tax_year_start = $2 order by currency",
    )
    .bind(employee_id)
    .bind(start)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    let totals = rows
        .into_iter()
        .map(|row| {
            let (currency, items) = (row.currency.clone(), row.items);
            let mut totals = row.totals();
            pad_totals(&mut totals, &currency);
            CurrencyTotals { currency, items, totals }
        })
        .collect();
    let tax_year_end = start_day.end_of(start);
    Ok(Json(YearToDateView { employee_id, tax_year_start: start, tax_year_end, totals }))
}
