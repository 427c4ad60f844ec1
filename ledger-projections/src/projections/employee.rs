use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use ledger_core::employee::{EmployeeEvent, PayRate, Personal};
use ledger_store::RecordedEvent;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::serde_name;
use crate::error::Result;
use crate::projection::Projection;
use ledger_codec::AnyEvent;

/// `employee.employees` (current state) and `employee.employee_history` (one row per
/// effective-dated change, with its validity).
#[derive(Debug, Clone, Copy)]
pub struct EmployeeProjection;

fn basis_name(rate: &PayRate) -> String {
    match serde_json::to_value(rate.basis).expect("bases serialize").get("basis") {
        Some(serde_json::Value::String(name)) => name.clone(),
        _ => "unknown".to_owned(),
    }
}

enum Change<'a> {
    PayRate { rate: &'a PayRate, reason: &'a str },
    Position { position: &'a str, department: &'a str },
}

/// Records a change and the validity it changes: each row of a kind is valid until the day
/// before the next change takes effect (in effective date, then log order), so only the new
/// row and the one before it change (recomputing every row of the employee made a long
/// history quadratic: 10 ms per raise at 65 raises).
async fn record_change(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    valid_from: NaiveDate,
    change: Change<'_>,
) -> Result<()> {
    let (kind, rate_amount, rate_basis, position, department, reason) = match change {
        Change::PayRate { rate, reason } => {
            ("pay_rate", Some(rate.amount.amount()), Some(basis_name(rate)), None, None, Some(reason))
        }
        Change::Position { position, department } => ("position", None, None, Some(position), Some(department), None),
    };
    // One statement (three round trips before: the projection of a steady stream of raises
    // trailed the log by seconds). The new row takes its validity from the next change, the
    // change before it ends the day before, and a raise makes the employee's current rate the
    // latest by effective date then log order, the new row included (the statement's reads do
    // not see its own insert, so the new row's values are added to them).
    sqlx::query(
        "with next as ( \
             select n.valid_from - 1 as valid_to from employee_history n \
             where n.employee_id = $1 and n.change = $4 and (n.valid_from, n.global_position) > ($5::date, $2::int8) \
             order by n.valid_from, n.global_position limit 1), \
         previous as ( \
             select p.global_position from employee_history p \
             where p.employee_id = $1 and p.change = $4 and (p.valid_from, p.global_position) < ($5::date, $2::int8) \
             order by p.valid_from desc, p.global_position desc limit 1), \
         inserted as ( \
             insert into employee_history (employee_id, global_position, organization_id, change, valid_from, valid_to, \
               rate_amount, rate_basis, position, department, reason, recorded_at, last_position) \
             values ($1, $2, $3, $4, $5, (select valid_to from next), $6, $7, $8, $9, $10, $11, $2) \
             returning 1), \
         ended as ( \
             update employee_history h set valid_to = $5::date - 1, last_position = $2 from previous \
             where h.employee_id = $1 and h.change = $4 and h.global_position = previous.global_position \
               and h.valid_to is distinct from $5::date - 1 \
             returning 1), \
         rate as ( \
             select r.rate_amount, r.rate_basis, r.valid_from from ( \
                 (select rate_amount, rate_basis, valid_from, global_position from employee_history \
                  where employee_id = $1 and change = 'pay_rate' \
                  order by valid_from desc, global_position desc limit 1) \
                 union all \
                 select $6::numeric, $7::text, $5::date, $2::int8) r \
             order by r.valid_from desc, r.global_position desc limit 1) \
         update employees e set rate_amount = rate.rate_amount, rate_basis = rate.rate_basis, \
           rate_effective_from = rate.valid_from, last_position = $2 \
         from rate where e.employee_id = $1 and $4 = 'pay_rate'",
    )
    .bind(event.stream_id)
    .bind(event.global_position)
    .bind(event.organization_id)
    .bind(kind)
    .bind(valid_from)
    .bind(rate_amount)
    .bind(rate_basis)
    .bind(position)
    .bind(department)
    .bind(reason)
    .bind(event.recorded_at)
    .execute(connection)
    .await?;
    Ok(())
}

async fn update(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    assignments: &str,
    value: Option<String>,
    date: Option<NaiveDate>,
) -> Result<()> {
    sqlx::query(&format!("update employees set {assignments}, last_position = $4 where employee_id = $1"))
        .bind(event.stream_id)
        .bind(value)
        .bind(date)
        .bind(event.global_position)
        .execute(connection)
        .await?;
    Ok(())
}

/// Hires and KYC decisions of a batch, written in a few statements (a bulk import hires
/// thousands). A hire is its stream's first event, so its history rows are the employee's
/// first and current ones; KYC decisions follow the inserts, the last one per employee wins.
#[derive(Default)]
struct Hires {
    employees: HireColumns,
    history: HistoryColumns,
    /// employee -> (KYC status, position of the decision)
    kyc: BTreeMap<Uuid, (String, i64)>,
}

#[derive(Default)]
struct HireColumns {
    ids: Vec<Uuid>,
    organizations: Vec<Uuid>,
    names: Vec<Option<String>>,
    emails: Vec<Option<String>>,
    erased: Vec<Option<DateTime<Utc>>>,
    sealed: Vec<Option<String>>,
    positions: Vec<String>,
    departments: Vec<String>,
    currencies: Vec<String>,
    frequencies: Vec<String>,
    schedules: Vec<Option<Uuid>>,
    rates: Vec<Decimal>,
    bases: Vec<String>,
    starts: Vec<NaiveDate>,
    last_positions: Vec<i64>,
}

#[derive(Default)]
struct HistoryColumns {
    employees: Vec<Uuid>,
    positions: Vec<i64>,
    organizations: Vec<Uuid>,
    changes: Vec<&'static str>,
    valid_from: Vec<NaiveDate>,
    rates: Vec<Option<Decimal>>,
    bases: Vec<Option<String>>,
    job_positions: Vec<Option<String>>,
    departments: Vec<Option<String>>,
    reasons: Vec<Option<String>>,
    times: Vec<DateTime<Utc>>,
}

impl Hires {
    fn is_empty(&self) -> bool {
        self.employees.ids.is_empty() && self.kyc.is_empty()
    }

    /// Gathers `decoded` if it is a hire or a KYC decision; false otherwise. Personal data
    /// is kept as the log has it: sealed (the API opens it), or in clear for hires recorded
    /// before sealing.
    fn gather(&mut self, event: &RecordedEvent, decoded: &AnyEvent) -> Result<bool> {
        match decoded {
            AnyEvent::Employee(EmployeeEvent::EmployeeHired {
                employee_id,
                organization_id,
                personal,
                position,
                department,
                rate,
                pay_frequency,
                pay_schedule_id,
                start_date,
            }) => {
                let rows = &mut self.employees;
                rows.schedules.push(pay_schedule_id.map(|id| id.as_uuid()));
                rows.ids.push(employee_id.as_uuid());
                rows.organizations.push(organization_id.as_uuid());
                match personal {
                    Personal::Clear(personal) => {
                        rows.names.push(Some(personal.full_name.clone()));
                        rows.emails.push(personal.email.clone());
                        rows.erased.push(None);
                        rows.sealed.push(None);
                    }
                    Personal::Erased { erased } => {
                        rows.names.push(None);
                        rows.emails.push(None);
                        rows.erased.push(Some(erased.at.unwrap_or(event.recorded_at)));
                        rows.sealed.push(None);
                    }
                    Personal::Sealed { sealed } => {
                        rows.names.push(None);
                        rows.emails.push(None);
                        rows.erased.push(None);
                        rows.sealed.push(Some(serde_json::json!({ "sealed": sealed }).to_string()));
                    }
                }
                rows.positions.push(position.clone());
                rows.departments.push(department.clone());
                rows.currencies.push(rate.amount.currency().code().to_owned());
                rows.frequencies.push(serde_name(pay_frequency));
                rows.rates.push(rate.amount.amount());
                rows.bases.push(basis_name(rate));
                rows.starts.push(*start_date);
                rows.last_positions.push(event.global_position);
                let history = &mut self.history;
                for change in ["pay_rate", "position"] {
                    let is_rate = change == "pay_rate";
                    history.employees.push(event.stream_id);
                    history.positions.push(event.global_position);
                    history.organizations.push(event.organization_id);
                    history.changes.push(change);
                    history.valid_from.push(*start_date);
                    history.rates.push(is_rate.then(|| rate.amount.amount()));
                    history.bases.push(is_rate.then(|| basis_name(rate)));
                    history.job_positions.push((!is_rate).then(|| position.clone()));
                    history.departments.push((!is_rate).then(|| department.clone()));
                    history.reasons.push(is_rate.then(|| "hired".to_owned()));
                    history.times.push(event.recorded_at);
                }
            }
            AnyEvent::Employee(EmployeeEvent::EmployeeKycStatusChanged { status, .. }) => {
                self.kyc.insert(event.stream_id, (serde_name(status), event.global_position));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    async fn write(self, connection: &mut PgConnection) -> Result<()> {
        let Hires { employees, history, kyc } = self;
        if !employees.ids.is_empty() {
            sqlx::query(
                "insert into employees (employee_id, organization_id, full_name, email, position, department, currency, pay_frequency, \
                   rate_amount, rate_basis, rate_effective_from, kyc_status, status, start_date, end_date, last_position, pay_schedule_id, erased_at, personal_sealed) \
                 select id, o, n, e, p, d, c, f, r, b, s, 'pending', 'active', s, null, lp, ps, er, se::jsonb \
                 from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                             $9::numeric[], $10::text[], $11::date[], $12::int8[], $13::uuid[], $14::timestamptz[], $15::text[]) \
                   as rows(id, o, n, e, p, d, c, f, r, b, s, lp, ps, er, se)",
            )
            .bind(&employees.ids)
            .bind(&employees.organizations)
            .bind(&employees.names)
            .bind(&employees.emails)
            .bind(&employees.positions)
            .bind(&employees.departments)
            .bind(&employees.currencies)
            .bind(&employees.frequencies)
            .bind(&employees.rates)
            .bind(&employees.bases)
            .bind(&employees.starts)
            .bind(&employees.last_positions)
            .bind(&employees.schedules)
            .bind(&employees.erased)
            .bind(&employees.sealed)
            .execute(&mut *connection)
            .await?;
            sqlx::query(
                "insert into employee_history (employee_id, global_position, organization_id, change, valid_from, rate_amount, rate_basis, \
                   position, department, reason, recorded_at, last_position) \
                 select e, p, o, c, v, r, b, jp, d, re, t, p \
                 from unnest($1::uuid[], $2::int8[], $3::uuid[], $4::text[], $5::date[], $6::numeric[], $7::text[], $8::text[], \
                             $9::text[], $10::text[], $11::timestamptz[]) as rows(e, p, o, c, v, r, b, jp, d, re, t)",
            )
            .bind(&history.employees)
            .bind(&history.positions)
            .bind(&history.organizations)
            .bind(&history.changes)
            .bind(&history.valid_from)
            .bind(&history.rates)
            .bind(&history.bases)
            .bind(&history.job_positions)
            .bind(&history.departments)
            .bind(&history.reasons)
            .bind(&history.times)
            .execute(&mut *connection)
            .await?;
        }
        if !kyc.is_empty() {
            let (mut ids, mut statuses, mut positions) = (Vec::new(), Vec::new(), Vec::new());
            for (id, (status, position)) in kyc {
                ids.push(id);
                statuses.push(status);
                positions.push(position);
            }
            sqlx::query(
                "update employees e set kyc_status = s, last_position = p \
                 from unnest($1::uuid[], $2::text[], $3::int8[]) as rows(id, s, p) where e.employee_id = rows.id",
            )
            .bind(&ids)
            .bind(&statuses)
            .bind(&positions)
            .execute(connection)
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Projection for EmployeeProjection {
    fn name(&self) -> &'static str {
        "employee"
    }

    fn schema(&self) -> &'static str {
        "employee"
    }

    /// Not the pay records (`EmployeePaid`, `EmployeePayTakenBack`): the payroll projection's
    /// `paid_earnings` shows what was paid, from the runs' events.
    fn event_types(&self) -> Vec<&'static str> {
        let pay_records = ["EmployeePaid", "EmployeePayTakenBack"];
        <EmployeeEvent as ledger_core::DomainEvent>::EVENT_TYPES
            .iter()
            .copied()
            .filter(|event_type| !pay_records.contains(event_type))
            .collect()
    }

    /// Hires and KYC decisions are gathered and written together; any other change first
    /// writes what was gathered before it.
    async fn apply_all(&self, connection: &mut PgConnection, events: &[(&RecordedEvent, AnyEvent)]) -> Result<()> {
        let mut hires = Hires::default();
        for (event, decoded) in events {
            if hires.gather(event, decoded)? {
                continue;
            }
            if !hires.is_empty() {
                std::mem::take(&mut hires).write(connection).await?;
            }
            self.apply(connection, event, decoded).await?;
        }
        hires.write(connection).await
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        let AnyEvent::Employee(employee_event) = decoded else { return Ok(()) };
        match employee_event {
            EmployeeEvent::EmployeePaid { .. } | EmployeeEvent::EmployeePayTakenBack { .. } => {}
            EmployeeEvent::EmployeePersonalDataErased { .. } => {
                sqlx::query(
                    "update employees set full_name = null, email = null, personal_sealed = null, erased_at = $2, \
                       last_position = $3 \
                     where employee_id = $1",
                )
                .bind(event.stream_id)
                .bind(event.recorded_at)
                .bind(event.global_position)
                .execute(&mut *connection)
                .await?;
            }
            EmployeeEvent::EmployeeHired { .. } | EmployeeEvent::EmployeeKycStatusChanged { .. } => {
                let mut hires = Hires::default();
                hires.gather(event, decoded)?;
                hires.write(connection).await?;
            }
            EmployeeEvent::EmployeePayRateChanged { rate, effective_from, reason } => {
                record_change(connection, event, *effective_from, Change::PayRate { rate, reason }).await?;
            }
            EmployeeEvent::EmployeePositionChanged { position, department, effective_from } => {
                sqlx::query(
                    "update employees set position = $2, department = $3, last_position = $4 where employee_id = $1",
                )
                .bind(event.stream_id)
                .bind(position)
                .bind(department)
                .bind(event.global_position)
                .execute(&mut *connection)
                .await?;
                record_change(connection, event, *effective_from, Change::Position { position, department }).await?;
            }
            EmployeeEvent::EmployeeTerminated { end_date, .. } => {
                update(
                    connection,
                    event,
                    "status = $2::text, end_date = $3::date",
                    Some("terminated".to_owned()),
                    Some(*end_date),
                )
                .await?;
            }
            EmployeeEvent::EmployeeRehired { start_date, rate } => {
                update(
                    connection,
                    event,
                    "status = $2::text, start_date = $3::date, end_date = null",
                    Some("active".to_owned()),
                    Some(*start_date),
                )
                .await?;
                if let Some(rate) = rate {
                    record_change(connection, event, *start_date, Change::PayRate { rate, reason: "rehired" }).await?;
                }
            }
        }
        Ok(())
    }
}
