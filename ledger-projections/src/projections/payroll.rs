use async_trait::async_trait;
use ledger_core::DomainEvent;
use ledger_core::gross_to_net::{EarningKind, PayrollItem};
use ledger_core::organization::{OrganizationEvent, PaySchedule};
use ledger_core::payroll::{PayrollRunEvent, RunKind, RunTotals};
use ledger_store::RecordedEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{serde_name, to_json};
use crate::decode::AnyEvent;
use crate::error::Result;
use crate::projection::Projection;

/// `payroll.payroll_runs`, `payroll_items`, `payroll_schedules` and `paid_earnings`.
#[derive(Debug, Clone, Copy)]
pub struct PayrollProjection;

async fn set_schedule(connection: &mut PgConnection, event: &RecordedEvent, schedule: &PaySchedule) -> Result<()> {
    sqlx::query(
        "insert into payroll_schedules (organization_id, frequency, anchor_date, last_position) values ($1, $2, $3, $4) \
         on conflict (organization_id) do update set frequency = excluded.frequency, anchor_date = excluded.anchor_date, \
           last_position = excluded.last_position",
    )
    .bind(event.organization_id)
    .bind(serde_name(&schedule.frequency))
    .bind(schedule.anchor_date)
    .bind(event.global_position)
    .execute(connection)
    .await?;
    Ok(())
}

async fn set_run(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    assignments: &str,
    value: Option<&str>,
) -> Result<()> {
    sqlx::query(&format!("update payroll_runs set {assignments}, last_position = $3 where payroll_run_id = $1"))
        .bind(event.stream_id)
        .bind(value)
        .bind(event.global_position)
        .execute(connection)
        .await?;
    Ok(())
}

async fn calculated(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    items: &[PayrollItem],
    totals: &RunTotals,
    by: &str,
) -> Result<()> {
    sqlx::query("delete from payroll_items where payroll_run_id = $1")
        .bind(event.stream_id)
        .execute(&mut *connection)
        .await?;
    let held = items.iter().filter(|item| item.hold.is_some()).count() as i64;
    for item in items {
        sqlx::query(
            "insert into payroll_items (payroll_run_id, employee_id, organization_id, gross, deductions, contributions, net, earnings, \
               deduction_lines, contribution_lines, status, hold_reason, last_position) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(event.stream_id)
        .bind(item.employee_id.as_uuid())
        .bind(event.organization_id)
        .bind(item.gross.amount())
        .bind(item.deductions_total.amount())
        .bind(item.contributions_total.amount())
        .bind(item.net.amount())
        .bind(to_json(&item.earnings))
        .bind(to_json(&item.deductions))
        .bind(to_json(&item.contributions))
        .bind(if item.hold.is_some() { "held" } else { "pending" })
        .bind(item.hold.as_ref().map(ToString::to_string))
        .bind(event.global_position)
        .execute(&mut *connection)
        .await?;
    }
    sqlx::query(
        "update payroll_runs set status = 'calculated', calculated_by = $2, item_count = $3, gross = $4, deductions = $5, \
           contributions = $6, net = $7, employer_cost = $8, held_count = $9, paid_count = 0, failed_count = 0, last_position = $10 \
         where payroll_run_id = $1",
    )
    .bind(event.stream_id)
    .bind(by)
    .bind(totals.items as i64)
    .bind(totals.gross.amount())
    .bind(totals.deductions.amount())
    .bind(totals.contributions.amount())
    .bind(totals.net.amount())
    .bind(totals.employer_cost.amount())
    .bind(held)
    .bind(event.global_position)
    .execute(connection)
    .await?;
    Ok(())
}

/// Records what an item paid per period (`sign` -1 for a reversal): regular lines for the
/// run's period, retro lines for the period they correct.
async fn record_paid_earnings(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    employee_id: Uuid,
    sign: rust_decimal::Decimal,
) -> Result<()> {
    let (earnings, period_start, period_end, currency): (serde_json::Value, chrono::NaiveDate, chrono::NaiveDate, String) = sqlx::query_as(
        "select i.earnings, r.period_start, r.period_end, r.currency from payroll_items i join payroll_runs r using (payroll_run_id) \
         where i.payroll_run_id = $1 and i.employee_id = $2",
    )
    .bind(event.stream_id)
    .bind(employee_id)
    .fetch_one(&mut *connection)
    .await?;
    let lines: Vec<ledger_core::gross_to_net::EarningLine> =
        serde_json::from_value(earnings).expect("stored earnings decode");
    for (index, line) in lines.iter().enumerate() {
        let (start, end) = match &line.kind {
            EarningKind::Regular { .. } => (period_start, period_end),
            EarningKind::Retro { period } => (period.start(), period.end()),
        };
        sqlx::query(
            "insert into paid_earnings (employee_id, global_position, line, organization_id, payroll_run_id, period_start, period_end, \
               amount, currency, last_position) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $2)",
        )
        .bind(employee_id)
        .bind(event.global_position)
        .bind(index as i32)
        .bind(event.organization_id)
        .bind(event.stream_id)
        .bind(start)
        .bind(end)
        .bind(line.amount.amount() * sign)
        .bind(&currency)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

async fn set_item(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    employee_id: Uuid,
    status: &str,
    transaction_id: Option<Uuid>,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "update payroll_items set status = $3, transaction_id = coalesce($4, transaction_id), failure_reason = $5, last_position = $6 \
         where payroll_run_id = $1 and employee_id = $2",
    )
    .bind(event.stream_id)
    .bind(employee_id)
    .bind(status)
    .bind(transaction_id)
    .bind(reason)
    .bind(event.global_position)
    .execute(connection)
    .await?;
    Ok(())
}

/// Moves an item to `status` and keeps the run's paid and failed counts in step, by the
/// item's status before (one row each: no recount over the run's items).
async fn move_item(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    employee_id: Uuid,
    status: &str,
    transaction_id: Option<Uuid>,
    reason: Option<&str>,
) -> Result<()> {
    let before: Option<String> =
        sqlx::query_scalar("select status from payroll_items where payroll_run_id = $1 and employee_id = $2")
            .bind(event.stream_id)
            .bind(employee_id)
            .fetch_optional(&mut *connection)
            .await?;
    set_item(connection, event, employee_id, status, transaction_id, reason).await?;
    let delta = |wanted: &str| i64::from(status == wanted) - i64::from(before.as_deref() == Some(wanted));
    sqlx::query(
        "update payroll_runs set paid_count = paid_count + $2, failed_count = failed_count + $3, last_position = $4 where payroll_run_id = $1",
    )
    .bind(event.stream_id)
    .bind(delta("paid"))
    .bind(delta("failed"))
    .bind(event.global_position)
    .execute(connection)
    .await?;
    Ok(())
}

impl PayrollProjection {
    async fn apply_run(
        &self,
        connection: &mut PgConnection,
        event: &RecordedEvent,
        run_event: &PayrollRunEvent,
    ) -> Result<()> {
        match run_event {
            PayrollRunEvent::PayrollRunCreated {
                payroll_run_id,
                organization_id,
                period,
                frequency,
                currency,
                kind,
                created_by,
            } => {
                let reason = match kind {
                    RunKind::OffCycle { reason } => Some(reason.as_str()),
                    RunKind::Regular => None,
                };
                sqlx::query(
                    "insert into payroll_runs (payroll_run_id, organization_id, period_start, period_end, frequency, currency, kind, \
                       off_cycle_reason, status, created_by, created_at, last_position) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, 'draft', $9, $10, $11)",
                )
                .bind(payroll_run_id.as_uuid())
                .bind(organization_id.as_uuid())
                .bind(period.start())
                .bind(period.end())
                .bind(serde_name(frequency))
                .bind(currency.code())
                .bind(if reason.is_some() { "off_cycle" } else { "regular" })
                .bind(reason)
                .bind(created_by)
                .bind(event.recorded_at)
                .bind(event.global_position)
                .execute(connection)
                .await?;
            }
            PayrollRunEvent::PayrollRunCalculated { items, totals, calculated_by } => {
                calculated(connection, event, items, totals, calculated_by).await?
            }
            PayrollRunEvent::PayrollRunApproved { approved_by } => {
                set_run(connection, event, "status = 'approved', approved_by = $2::text", Some(approved_by)).await?
            }
            PayrollRunEvent::PayrollRunProcessingStarted { .. } => {
                set_run(connection, event, "status = 'processing', approved_by = coalesce($2::text, approved_by)", None)
                    .await?
            }
            PayrollRunEvent::PayrollItemPaid { employee_id, transaction_id, .. } => {
                move_item(connection, event, employee_id.as_uuid(), "paid", Some(transaction_id.as_uuid()), None)
                    .await?;
                record_paid_earnings(connection, event, employee_id.as_uuid(), rust_decimal::Decimal::ONE).await?;
            }
            PayrollRunEvent::PayrollItemFailed { employee_id, reason } => {
                move_item(connection, event, employee_id.as_uuid(), "failed", None, Some(reason)).await?;
            }
            PayrollRunEvent::PayrollRunCompleted { status, .. } => {
                set_run(connection, event, "status = $2::text", Some(&serde_name(status))).await?;
            }
            PayrollRunEvent::PayrollRunVoided { .. } => {
                set_run(connection, event, "status = 'voided', approved_by = coalesce($2::text, approved_by)", None)
                    .await?
            }
            PayrollRunEvent::PayrollRunReversed { items, .. } => {
                for item in items {
                    set_item(connection, event, item.employee_id.as_uuid(), "reversed", None, None).await?;
                    record_paid_earnings(
                        connection,
                        event,
                        item.employee_id.as_uuid(),
                        rust_decimal::Decimal::NEGATIVE_ONE,
                    )
                    .await?;
                }
                set_run(connection, event, "status = 'reversed', approved_by = coalesce($2::text, approved_by)", None)
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Projection for PayrollProjection {
    fn name(&self) -> &'static str {
        "payroll"
    }

    fn schema(&self) -> &'static str {
        "payroll"
    }

    fn event_types(&self) -> Vec<&'static str> {
        let mut types = PayrollRunEvent::EVENT_TYPES.to_vec();
        types.extend(["OrganizationRegistered", "OrganizationSettingsChanged"]);
        types
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        match decoded {
            AnyEvent::PayrollRun(run_event) => self.apply_run(connection, event, run_event).await,
            AnyEvent::Organization(
                OrganizationEvent::OrganizationRegistered { pay_schedule, .. }
                | OrganizationEvent::OrganizationSettingsChanged { pay_schedule: Some(pay_schedule), .. },
            ) => set_schedule(connection, event, pay_schedule).await,
            _ => Ok(()),
        }
    }
}
