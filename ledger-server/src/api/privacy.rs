//! Personal data: the organization's retention period, erasure (crypto-shredding), who is
//! due for it, and the subject-access export of everything the ledger holds on a person.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use ledger_app::operations::{EraseRequest, erase as erase_personal_data};
use ledger_core::employee::{ERASURE_EVENTS, EmployeeAggregate, ErasureOverride};
use ledger_core::organization::{OrganizationAggregate, OrganizationCommand};
use ledger_store::{EventQuery, READ_BATCH_MAX, RecordedEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::employees::ListQuery;
use super::extract::{Path, Query};
use super::schema::{Amounts, Entity, Problems, WrittenView, pad, written};
use super::{AppState, Auth, Command, Consistency, PersonalDataCommand, parse_id};
use crate::error::{AppError, AppResult};
use crate::keys::Permission;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionInput {
    /// Years payroll records are kept after an employee's last day, 1 to 100; their personal
    /// data may be erased from then on.
    #[schema(minimum = 1, maximum = 100, example = 7)]
    years_after_termination: u32,
}

/// `PUT /v1/organization/retention`: how long payroll records are kept after an employee
/// left.
#[utoipa::path(put, path = "/v1/organization/retention", tag = "personal data", request_body = RetentionInput,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = WrittenView), Problems))]
pub async fn set_retention(State(state): State<AppState>, command: Command) -> AppResult<Response> {
    command.require(Permission::Manage)?;
    let input: RetentionInput = command.json()?;
    let organization_id = command.context.organization_id();
    let set = OrganizationCommand::SetRetention { years_after_termination: input.years_after_termination };
    let done = state.ledger.execute::<OrganizationAggregate>(&command.context, organization_id, set).await?;
    Ok(written(StatusCode::OK, Entity::Organization, organization_id, done))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideInput {
    /// Why the data may go before the retention period ends (e.g. `GDPR Art. 17(1)(d): unlawfully processed`).
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    legal_basis: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseInput {
    /// Why (e.g. `retention period passed`, `data subject's request of 2026-11-02`).
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    reason: String,
    /// Erase before the retention period has passed (or without one), on this legal basis.
    #[serde(rename = "override")]
    override_basis: Option<OverrideInput>,
}

/// What an erasure did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErasedView {
    pub employee_id: Uuid,
    /// The day the erasure was decided.
    pub erased_on: NaiveDate,
    /// True when the data was erased before (this request changed nothing).
    pub already_erased: bool,
    /// The erasure event's position (pass as `wait_for_position`); absent when already erased.
    pub position: Option<i64>,
    /// True when this repeats an earlier request with the same `Idempotency-Key`.
    pub replayed: bool,
}

/// `POST /v1/employees/{id}/erase`: erases the employee's personal data (admin or
/// compliance). The data key is destroyed with the erasure event; name, email and address
/// are unreadable from then on in the log, every read table, replay and export, while pay,
/// payments and amounts stay. Refused while employed, and before the retention period has
/// passed (422 naming the day it does) unless an override names its legal basis.
#[utoipa::path(post, path = "/v1/employees/{id}/erase", tag = "personal data", request_body = EraseInput,
    params(("id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200, pattern = "^[ -~]+$", description = "Names the request: a retry with it is answered once")),
    responses((status = 200, body = ErasedView), Problems))]
pub async fn erase(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PersonalDataCommand(command): PersonalDataCommand,
) -> AppResult<Json<ErasedView>> {
    let employee_id = parse_id(&id, "employee id")?;
    let input: EraseInput = command.json()?;
    let request = EraseRequest {
        employee_id,
        reason: input.reason,
        override_basis: input.override_basis.map(|basis| ErasureOverride { legal_basis: basis.legal_basis }),
        today: Utc::now().date_naive(),
        reapplied: false,
    };
    let erased = erase_personal_data(&state.ledger, &command.context, request).await?;
    Ok(Json(ErasedView {
        employee_id,
        erased_on: erased.erased_on,
        already_erased: erased.written.is_none(),
        position: erased.written.as_ref().map(|written| written.position),
        replayed: erased.written.is_some_and(|written| written.replayed),
    }))
}

/// An employee whose retention period has passed and whose data is not erased yet.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ErasureDueView {
    pub employee_id: Uuid,
    /// The last day worked.
    pub end_date: NaiveDate,
    /// The first day the data may be erased (`end_date` plus the retention period).
    pub erasable_from: NaiveDate,
    pub retention_years: i32,
}

impl Amounts for ErasureDueView {}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErasureDuePage {
    pub employees: Vec<ErasureDueView>,
    /// Pass as `after` for the next page; null after the last.
    pub next_after: Option<Uuid>,
}

/// The employees whose data may be erased today, as the read tables say (the API's list and
/// `payroll-ledger erase-due`): of organization `$3` (every one when null), by organization
/// and id, after employee `$1`, at most `$2` (all when null). Columns: organization_id,
/// employee_id, end_date, erasable_from, retention_years.
pub const ERASURE_DUE_SQL: &str = "select e.organization_id, e.employee_id, e.end_date, \
       (e.end_date + make_interval(years => o.retention_years))::date as erasable_from, o.retention_years \
     from employee.employees e join organization.organizations o on o.organization_id = e.organization_id \
     where e.erased_at is null and e.status = 'terminated' and e.end_date is not null and o.retention_years is not null \
       and (e.end_date + make_interval(years => o.retention_years))::date <= current_date \
       and ($3::uuid is null or e.organization_id = $3) and ($1::uuid is null or e.employee_id > $1) \
     order by e.organization_id, e.employee_id limit $2";

/// `GET /v1/compliance/erasure-due`: the people whose retention period has passed and whose
/// data is not erased yet (admin or compliance).
#[utoipa::path(get, path = "/v1/compliance/erasure-due", tag = "personal data", params(ListQuery),
    responses((status = 200, body = ErasureDuePage), Problems))]
pub async fn erasure_due(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Query(query): Query<ListQuery>,
) -> AppResult<Json<ErasureDuePage>> {
    identity.require(Permission::PersonalData)?;
    query.consistency().wait(&state.ledger).await?;
    let mut read = state.ledger.tenant_read(identity.organization_id).await?;
    let employees: Vec<ErasureDueView> = sqlx::query_as(ERASURE_DUE_SQL)
        .bind(query.after)
        .bind(query.limit())
        .bind(identity.organization_id)
        .fetch_all(&mut *read)
        .await?;
    read.commit().await?;
    let next_after =
        if employees.len() as i64 == query.limit() { employees.last().map(|row| row.employee_id) } else { None };
    Ok(Json(ErasureDuePage { employees, next_after }))
}

/// The erasure, as the log records it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErasureRecord {
    pub erased_on: NaiveDate,
    pub reason: String,
    /// When the retention period ended (absent for an override before it, or without one).
    pub erasable_from: Option<NaiveDate>,
    /// The legal basis of an erasure before the retention period ended.
    pub override_legal_basis: Option<String>,
    /// The erasure event's position in the log.
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    /// When the data key was destroyed.
    pub key_destroyed_at: Option<DateTime<Utc>>,
}

/// A pay item of the person, with its run's period.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PayItemRecord {
    pub payroll_run_id: Uuid,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub kind: String,
    pub currency: String,
    #[schema(value_type = String, example = "5000.00")]
    pub gross: Decimal,
    #[schema(value_type = String, example = "1100.00")]
    pub deductions: Decimal,
    #[schema(value_type = String, example = "500.00")]
    pub contributions: Decimal,
    #[schema(value_type = String, example = "3900.00")]
    pub net: Decimal,
    #[schema(value_type = Object)]
    pub earnings: serde_json::Value,
    #[schema(value_type = Object)]
    pub deduction_lines: serde_json::Value,
    #[schema(value_type = Object)]
    pub contribution_lines: serde_json::Value,
    pub status: String,
    pub hold_reason: Option<String>,
    pub transaction_id: Option<Uuid>,
    pub failure_reason: Option<String>,
}

impl Amounts for PayItemRecord {
    fn pad_amounts(&mut self) {
        for amount in [&mut self.gross, &mut self.deductions, &mut self.contributions, &mut self.net] {
            pad(amount, &self.currency);
        }
    }
}

/// A movement of one of the person's wallets.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WalletMovementRecord {
    pub wallet_id: Uuid,
    pub global_position: i64,
    pub transaction_id: Uuid,
    /// `credit` or `debit`.
    pub direction: String,
    pub currency: String,
    #[schema(value_type = String, example = "3900.00")]
    pub amount: Decimal,
    #[schema(value_type = String, example = "3900.00")]
    pub balance_after: Decimal,
    pub recorded_at: DateTime<Utc>,
}

impl Amounts for WalletMovementRecord {
    fn pad_amounts(&mut self) {
        pad(&mut self.amount, &self.currency);
        pad(&mut self.balance_after, &self.currency);
    }
}

/// A payment (or withdrawal) to the person.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PaymentRecord {
    pub transaction_id: Uuid,
    pub status: String,
    pub reference_kind: String,
    pub payroll_run_id: Option<Uuid>,
    pub wallet_id: Option<Uuid>,
    pub failure_reason: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// Everything the ledger holds on one person.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PersonalDataExport {
    pub employee_id: Uuid,
    pub organization_id: Uuid,
    pub generated_at: DateTime<Utc>,
    /// Name, email and address in clear; null once erased.
    #[schema(value_type = Option<super::schema::PersonalData>)]
    pub personal_data: Option<ledger_core::employee::PersonalData>,
    /// The erasure, once erased.
    pub erasure: Option<ErasureRecord>,
    /// Every event of the person's streams (the employee's and their wallets'), in log
    /// order, personal fields opened (or shown erased).
    #[schema(value_type = Vec<super::audit::RecordedEventView>)]
    pub events: Vec<RecordedEvent>,
    pub pay_items: Vec<PayItemRecord>,
    pub wallet_movements: Vec<WalletMovementRecord>,
    pub payments: Vec<PaymentRecord>,
}

/// `GET /v1/employees/{id}/personal-data`: the subject-access export (admin or
/// compliance): one JSON document, or with `Accept: application/x-ndjson` the person's
/// events one per line.
#[utoipa::path(get, path = "/v1/employees/{id}/personal-data", tag = "personal data",
    params(("id" = uuid::Uuid, Path, description = "The employee's id (a UUID)"), Consistency),
    responses((status = 200, description = "The export; with `Accept: application/x-ndjson`, the person's events one per line",
        content((PersonalDataExport = "application/json"), (String = "application/x-ndjson"))), Problems))]
pub async fn personal_data(
    State(state): State<AppState>,
    Auth(identity): Auth,
    Path(id): Path<String>,
    Query(consistency): Query<Consistency>,
    headers: HeaderMap,
) -> AppResult<Response> {
    identity.require(Permission::PersonalData)?;
    let employee_id = parse_id(&id, "employee id")?;
    consistency.wait(&state.ledger).await?;
    let organization_id = identity.organization_id;
    let ledger = &state.ledger;
    if ledger.load::<EmployeeAggregate>(organization_id, employee_id).await?.state.is_none() {
        return Err(AppError::NotFound(format!("no employee {employee_id}")));
    }
    let mut read = ledger.tenant_read(organization_id).await?;
    let wallets: Vec<Uuid> = sqlx::query_scalar("select wallet_id from wallet.wallets where employee_id = $1")
        .bind(employee_id)
        .fetch_all(&mut *read)
        .await?;
    let mut events = Vec::new();
    for stream_id in std::iter::once(employee_id).chain(wallets.iter().copied()) {
        let mut query = EventQuery { stream_id: Some(stream_id), limit: READ_BATCH_MAX, ..EventQuery::default() };
        loop {
            let page = ledger_store::EventStore::query_events_in(&mut read, &query).await?;
            let full = page.len() == READ_BATCH_MAX;
            query.position_after = page.last().map(|event| event.global_position);
            events.extend(page);
            if !full {
                break;
            }
        }
    }
    let mut pay_items: Vec<PayItemRecord> = sqlx::query_as(
        "select i.payroll_run_id, r.period_start, r.period_end, r.kind, r.currency, i.gross, i.deductions, \
           i.contributions, i.net, i.earnings, i.deduction_lines, i.contribution_lines, i.status, i.hold_reason, \
           i.transaction_id, i.failure_reason \
         from payroll.payroll_items i join payroll.payroll_runs r on r.payroll_run_id = i.payroll_run_id \
         where i.employee_id = $1 order by r.period_start, i.payroll_run_id",
    )
    .bind(employee_id)
    .fetch_all(&mut *read)
    .await?;
    let mut wallet_movements: Vec<WalletMovementRecord> = sqlx::query_as(
        "select m.wallet_id, m.global_position, m.transaction_id, m.direction, w.currency, m.amount, m.balance_after, \
           m.recorded_at \
         from wallet.wallet_transactions m join wallet.wallets w on w.wallet_id = m.wallet_id \
         where w.employee_id = $1 order by m.global_position",
    )
    .bind(employee_id)
    .fetch_all(&mut *read)
    .await?;
    let payments: Vec<PaymentRecord> = sqlx::query_as(
        "select transaction_id, status, reference_kind, payroll_run_id, wallet_id, failure_reason, recorded_at \
         from transaction.transactions where employee_id = $1 order by recorded_at, transaction_id",
    )
    .bind(employee_id)
    .fetch_all(&mut *read)
    .await?;
    read.commit().await?;
    events.sort_by_key(|event| (event.transaction_id, event.global_position));
    ledger_store::vault::open(ledger.pool(), &ledger_codec::PERSONAL_DATA, &mut events).await?;
    if super::prefers(&headers, "application/x-ndjson") {
        let mut lines = Vec::with_capacity(events.len() * 512);
        for event in &events {
            serde_json::to_writer(&mut lines, event).expect("events serialize");
            lines.push(b'\n');
        }
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], lines).into_response());
    }
    pay_items.iter_mut().for_each(Amounts::pad_amounts);
    wallet_movements.iter_mut().for_each(Amounts::pad_amounts);
    let personal_data = events
        .iter()
        .find(|event| event.stream_id == employee_id && event.event_type == "EmployeeHired")
        .and_then(|hire| ledger_codec::decode_recorded::<ledger_core::employee::EmployeeEvent>(hire).ok())
        .and_then(|hire| match hire {
            ledger_core::employee::EmployeeEvent::EmployeeHired { personal, .. } => personal.clear().cloned(),
            _ => None,
        });
    let key = ledger_store::vault::Vault::status(ledger.pool(), employee_id).await?;
    let erasure = events
        .iter()
        .find(|event| {
            event.stream_id == employee_id && ERASURE_EVENTS.iter().any(|(_, erasure)| *erasure == event.event_type)
        })
        .and_then(|event| {
            let decoded = ledger_codec::decode_recorded::<ledger_core::employee::EmployeeEvent>(event).ok()?;
            let ledger_core::employee::EmployeeEvent::EmployeePersonalDataErased {
                reason,
                erased_on,
                erasable_from,
                override_basis,
            } = decoded
            else {
                return None;
            };
            Some(ErasureRecord {
                erased_on,
                reason,
                erasable_from,
                override_legal_basis: override_basis.map(|basis| basis.legal_basis),
                position: event.global_position,
                recorded_at: event.recorded_at,
                key_destroyed_at: key.as_ref().and_then(|key| key.erased_at),
            })
        });
    let export = PersonalDataExport {
        employee_id,
        organization_id,
        generated_at: Utc::now(),
        personal_data: if erasure.is_some() { None } else { personal_data },
        erasure,
        events,
        pay_items,
        wallet_movements,
        payments,
    };
    Ok(Json(export).into_response())
}
