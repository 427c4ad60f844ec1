use async_trait::async_trait;
use chrono::NaiveDate;
use ledger_core::employee::{EmployeeEvent, PayRate};
use ledger_store::RecordedEvent;
use sqlx::PgConnection;

use super::serde_name;
use crate::decode::AnyEvent;
use crate::error::Result;
use crate::projection::Projection;

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

/// Records a change and recomputes the validity of that kind's rows: each row is valid
/// until the day before the next change takes effect.
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
    sqlx::query(
        "insert into employee_history (employee_id, global_position, organization_id, change, valid_from, rate_amount, rate_basis, \
           position, department, reason, recorded_at, last_position) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $2)",
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
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "update employee_history h set valid_to = n.next_from - 1, last_position = $3 \
         from (select global_position, lead(valid_from) over (order by valid_from, global_position) as next_from \
               from employee_history where employee_id = $1 and change = $2) n \
         where h.employee_id = $1 and h.change = $2 and h.global_position = n.global_position \
           and h.valid_to is distinct from n.next_from - 1",
    )
    .bind(event.stream_id)
    .bind(kind)
    .bind(event.global_position)
    .execute(&mut *connection)
    .await?;
    if kind == "pay_rate" {
        // The current rate is the one with the latest effective date (the later on a tie).
        sqlx::query(
            "update employees e set rate_amount = h.rate_amount, rate_basis = h.rate_basis, rate_effective_from = h.valid_from, last_position = $2 \
             from (select rate_amount, rate_basis, valid_from from employee_history \
                   where employee_id = $1 and change = 'pay_rate' order by valid_from desc, global_position desc limit 1) h \
             where e.employee_id = $1",
        )
        .bind(event.stream_id)
        .bind(event.global_position)
        .execute(connection)
        .await?;
    }
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

#[async_trait]
impl Projection for EmployeeProjection {
    fn name(&self) -> &'static str {
        "employee"
    }

    fn schema(&self) -> &'static str {
        "employee"
    }

    fn event_types(&self) -> Vec<&'static str> {
        <EmployeeEvent as ledger_core::DomainEvent>::EVENT_TYPES.to_vec()
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        let AnyEvent::Employee(employee_event) = decoded else { return Ok(()) };
        match employee_event {
            EmployeeEvent::EmployeeHired {
                employee_id,
                organization_id,
                personal,
                position,
                department,
                rate,
                pay_frequency,
                start_date,
            } => {
                sqlx::query(
                    "insert into employees (employee_id, organization_id, full_name, email, position, department, currency, pay_frequency, \
                       rate_amount, rate_basis, rate_effective_from, kyc_status, status, start_date, end_date, last_position) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', 'active', $11, null, $12)",
                )
                .bind(employee_id.as_uuid())
                .bind(organization_id.as_uuid())
                .bind(&personal.full_name)
                .bind(&personal.email)
                .bind(position)
                .bind(department)
                .bind(rate.amount.currency().code())
                .bind(serde_name(pay_frequency))
                .bind(rate.amount.amount())
                .bind(basis_name(rate))
                .bind(start_date)
                .bind(event.global_position)
                .execute(&mut *connection)
                .await?;
                record_change(connection, event, *start_date, Change::PayRate { rate, reason: "hired" }).await?;
                record_change(connection, event, *start_date, Change::Position { position, department }).await?;
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
            EmployeeEvent::EmployeeKycStatusChanged { status, .. } => {
                update(
                    connection,
                    event,
                    "kyc_status = $2::text, end_date = coalesce($3::date, end_date)",
                    Some(serde_name(status)),
                    None,
                )
                .await?;
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
