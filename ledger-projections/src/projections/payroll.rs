use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use ledger_core::DomainEvent;
use ledger_core::gross_to_net::{EarningKind, EarningLine, PayrollItem};
use ledger_core::organization::legacy_default_schedule_id;
use ledger_core::organization::{OrganizationEvent, PaySchedule};
use ledger_core::payroll::{PayrollRunEvent, RunKind, RunTotals};
use ledger_core::schedule::PayCalendarEvent;
use ledger_store::RecordedEvent;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::{serde_name, to_json};
use crate::error::Result;
use crate::projection::Projection;
use ledger_codec::AnyEvent;

/// `payroll.payroll_runs`, `payroll_items`, `pay_schedules`, `pay_period_claims` and
/// `paid_earnings`.
#[derive(Debug, Clone, Copy)]
pub struct PayrollProjection;

/// A schedule's row (a schedule recorded before it was fixed once defined may change: the
/// default one, by `OrganizationSettingsChanged`).
async fn set_schedule(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    (id, name, is_default): (Uuid, &str, bool),
    schedule: &PaySchedule,
) -> Result<()> {
    sqlx::query(
        "insert into pay_schedules (pay_schedule_id, organization_id, name, frequency, anchor_date, is_default, created_at, last_position) \
         values ($1, $2, $3, $4, $5, $6, $7, $8) \
         on conflict (pay_schedule_id) do update set frequency = excluded.frequency, anchor_date = excluded.anchor_date, \
           last_position = excluded.last_position",
    )
    .bind(id)
    .bind(event.organization_id)
    .bind(name)
    .bind(serde_name(&schedule.frequency))
    .bind(schedule.anchor_date)
    .bind(is_default)
    .bind(event.recorded_at)
    .bind(event.global_position)
    .execute(connection)
    .await?;
    Ok(())
}

/// The default schedule of the organization `event` belongs to.
async fn default_schedule_id(connection: &mut PgConnection, event: &RecordedEvent) -> Result<Uuid> {
    let id = sqlx::query_scalar("select pay_schedule_id from pay_schedules where organization_id = $1 and is_default")
        .bind(event.organization_id)
        .fetch_one(connection)
        .await?;
    Ok(id)
}

async fn apply_calendar(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    calendar: &PayCalendarEvent,
) -> Result<()> {
    match calendar {
        PayCalendarEvent::PayPeriodClaimed { period, payroll_run_id, .. } => {
            sqlx::query(
                "insert into pay_period_claims (pay_schedule_id, period_start, period_end, organization_id, payroll_run_id, \
                   claimed_at, last_position) values ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(event.stream_id)
            .bind(period.start())
            .bind(period.end())
            .bind(event.organization_id)
            .bind(payroll_run_id.as_uuid())
            .bind(event.recorded_at)
            .bind(event.global_position)
            .execute(connection)
            .await?;
        }
        PayCalendarEvent::PayPeriodReleased { period, .. } => {
            sqlx::query("delete from pay_period_claims where pay_schedule_id = $1 and period_start = $2")
                .bind(event.stream_id)
                .bind(period.start())
                .execute(connection)
                .await?;
        }
    }
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

/// A chunk of a calculation's items; the first one replaces the items of an earlier
/// calculation.
async fn items_calculated(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    first: bool,
    items: &[PayrollItem],
) -> Result<()> {
    if first {
        sqlx::query("delete from payroll_items where payroll_run_id = $1")
            .bind(event.stream_id)
            .execute(&mut *connection)
            .await?;
    }
    if items.is_empty() {
        return Ok(());
    }
    let mut columns = ItemColumns::default();
    for item in items {
        columns.employees.push(item.employee_id.as_uuid());
        columns.gross.push(item.gross.amount());
        columns.deductions.push(item.deductions_total.amount());
        columns.contributions.push(item.contributions_total.amount());
        columns.net.push(item.net.amount());
        columns.earnings.push(to_json(&item.earnings));
        columns.deduction_lines.push(to_json(&item.deductions));
        columns.contribution_lines.push(to_json(&item.contributions));
        columns.statuses.push(if item.hold.is_some() { "held" } else { "pending" });
        columns.holds.push(item.hold.as_ref().map(ToString::to_string));
    }
    sqlx::query(
        "insert into payroll_items (payroll_run_id, employee_id, organization_id, gross, deductions, contributions, net, earnings, \
           deduction_lines, contribution_lines, status, hold_reason, last_position) \
         select $1, e, $2, g, d, c, n, er, dl, cl, s, h, $3 \
         from unnest($4::uuid[], $5::numeric[], $6::numeric[], $7::numeric[], $8::numeric[], $9::jsonb[], $10::jsonb[], $11::jsonb[], \
                     $12::text[], $13::text[]) as rows(e, g, d, c, n, er, dl, cl, s, h)",
    )
    .bind(event.stream_id)
    .bind(event.organization_id)
    .bind(event.global_position)
    .bind(&columns.employees)
    .bind(&columns.gross)
    .bind(&columns.deductions)
    .bind(&columns.contributions)
    .bind(&columns.net)
    .bind(&columns.earnings)
    .bind(&columns.deduction_lines)
    .bind(&columns.contribution_lines)
    .bind(&columns.statuses)
    .bind(&columns.holds)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// The header closing a calculation. One recorded before chunks existed carries its items.
async fn calculated(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    items: &[PayrollItem],
    totals: &RunTotals,
    by: &str,
) -> Result<()> {
    if !items.is_empty() {
        items_calculated(connection, event, true, items).await?;
    }
    sqlx::query(
        "update payroll_runs set status = 'calculated', calculated_by = $2, item_count = $3, gross = $4, deductions = $5, \
           contributions = $6, net = $7, employer_cost = $8, \
           held_count = (select count(*) from payroll_items i where i.payroll_run_id = $1 and i.status = 'held'), \
           paid_count = 0, failed_count = 0, last_position = $9 \
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
    .bind(event.global_position)
    .execute(connection)
    .await?;
    Ok(())
}

#[derive(Default)]
struct ItemColumns {
    employees: Vec<Uuid>,
    gross: Vec<Decimal>,
    deductions: Vec<Decimal>,
    contributions: Vec<Decimal>,
    net: Vec<Decimal>,
    earnings: Vec<serde_json::Value>,
    deduction_lines: Vec<serde_json::Value>,
    contribution_lines: Vec<serde_json::Value>,
    statuses: Vec<&'static str>,
    holds: Vec<Option<String>>,
}

/// Items of runs moving to a new status (paid, failed or reversed), gathered from a batch
/// and written in a few statements: the items, the runs' paid and failed counts (moved by
/// the delta against each item's status before, no recount) and what was paid per period.
#[derive(Default)]
struct ItemMoves {
    seen: HashSet<(Uuid, Uuid)>,
    runs: Vec<Uuid>,
    employees: Vec<Uuid>,
    statuses: Vec<&'static str>,
    transactions: Vec<Option<Uuid>>,
    reasons: Vec<Option<String>>,
    positions: Vec<i64>,
    organizations: Vec<Uuid>,
}

impl ItemMoves {
    /// Whether the batch already moves this item (then it is written first: one move per
    /// item per statement).
    /// A payment or failure of an item; other events are not item moves.
    fn item_moved(&mut self, event: &RecordedEvent, run_event: &PayrollRunEvent) -> bool {
        match run_event {
            PayrollRunEvent::PayrollItemPaid { employee_id, transaction_id, .. } => {
                self.push(event, employee_id.as_uuid(), "paid", Some(transaction_id.as_uuid()), None)
            }
            PayrollRunEvent::PayrollItemFailed { employee_id, reason } => {
                self.push(event, employee_id.as_uuid(), "failed", None, Some(reason))
            }
            _ => return false,
        }
        true
    }

    fn has(&self, run: Uuid, employee: Uuid) -> bool {
        self.seen.contains(&(run, employee))
    }

    fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    fn push(
        &mut self,
        event: &RecordedEvent,
        employee: Uuid,
        status: &'static str,
        transaction: Option<Uuid>,
        reason: Option<&str>,
    ) {
        self.seen.insert((event.stream_id, employee));
        self.runs.push(event.stream_id);
        self.employees.push(employee);
        self.statuses.push(status);
        self.transactions.push(transaction);
        self.reasons.push(reason.map(str::to_owned));
        self.positions.push(event.global_position);
        self.organizations.push(event.organization_id);
    }

    /// Writes the gathered status changes: the items, their runs' counts, and the earnings
    /// paid (or taken back by a reversal) per period.
    async fn write(self, connection: &mut PgConnection) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let before = self.items_before(connection).await?;
        self.update_items(connection).await?;
        let (counts, earnings) = self.tally(&before);
        write_run_counts(connection, counts).await?;
        earnings.insert(connection).await
    }

    /// The changed items as they were: status, earnings lines, and their run's period and
    /// currency.
    async fn items_before(&self, connection: &mut PgConnection) -> Result<HashMap<(Uuid, Uuid), ItemBefore>> {
        let before: Vec<ItemBefore> = sqlx::query_as(
            "select i.payroll_run_id, i.employee_id, i.status, i.earnings, r.period_start, r.period_end, r.currency \
             from unnest($1::uuid[], $2::uuid[]) as rows(r, e) \
             join payroll_items i on i.payroll_run_id = rows.r and i.employee_id = rows.e \
             join payroll_runs r on r.payroll_run_id = rows.r",
        )
        .bind(&self.runs)
        .bind(&self.employees)
        .fetch_all(&mut *connection)
        .await?;
        Ok(before.into_iter().map(|row| ((row.0, row.1), row)).collect())
    }

    async fn update_items(&self, connection: &mut PgConnection) -> Result<()> {
        sqlx::query(
            "update payroll_items i set status = s, transaction_id = coalesce(t, i.transaction_id), failure_reason = f, last_position = p \
             from unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::int8[]) as rows(r, e, s, t, f, p) \
             where i.payroll_run_id = rows.r and i.employee_id = rows.e",
        )
        .bind(&self.runs)
        .bind(&self.employees)
        .bind(&self.statuses)
        .bind(&self.transactions)
        .bind(&self.reasons)
        .bind(&self.positions)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    /// Per run the change of its paid and failed counts, and the earnings lines a payment
    /// adds to (or a reversal takes from) the payment history.
    fn tally(&self, before: &HashMap<(Uuid, Uuid), ItemBefore>) -> (BTreeMap<Uuid, CountChange>, EarningColumns) {
        let mut counts: BTreeMap<Uuid, CountChange> = BTreeMap::new();
        let mut earnings = EarningColumns::default();
        for index in 0..self.runs.len() {
            let (run, employee, status) = (self.runs[index], self.employees[index], self.statuses[index]);
            let Some((_, _, was, lines, period_start, period_end, currency)) = before.get(&(run, employee)) else {
                continue;
            };
            if status != "reversed" {
                let count = counts.entry(run).or_default();
                count.paid += i64::from(status == "paid") - i64::from(was == "paid");
                count.failed += i64::from(status == "failed") - i64::from(was == "failed");
                count.held += i64::from(status == "held") - i64::from(was == "held");
                count.position = self.positions[index];
            }
            // Paid adds the lines to the history; leaving paid (reversed, or the payment
            // failed on the rail) takes them back.
            let sign = match (was == "paid", status == "paid") {
                (false, true) => Decimal::ONE,
                (true, false) => Decimal::NEGATIVE_ONE,
                _ => continue,
            };
            for (line, earning) in lines.iter().enumerate() {
                let (start, end) = match &earning.kind {
                    EarningKind::Regular { .. } => (*period_start, *period_end),
                    EarningKind::Retro { period } => (period.start(), period.end()),
                    // Not earnings of a period: no retro correction ever recomputes them.
                    EarningKind::OneOff { .. } => continue,
                };
                earnings.employees.push(employee);
                earnings.positions.push(self.positions[index]);
                earnings.lines.push(line as i32);
                earnings.organizations.push(self.organizations[index]);
                earnings.runs.push(run);
                earnings.starts.push(start);
                earnings.ends.push(end);
                earnings.amounts.push(earning.amount.amount() * sign);
                earnings.currencies.push(currency.clone());
            }
        }
        (counts, earnings)
    }
}

type ItemBefore = (Uuid, Uuid, String, Json<Vec<EarningLine>>, chrono::NaiveDate, chrono::NaiveDate, String);

/// How a run's paid and failed counts change, and the last event that changed them.
#[derive(Default)]
struct CountChange {
    paid: i64,
    failed: i64,
    held: i64,
    position: i64,
}

async fn write_run_counts(connection: &mut PgConnection, counts: BTreeMap<Uuid, CountChange>) -> Result<()> {
    if counts.is_empty() {
        return Ok(());
    }
    let (mut runs, mut paid, mut failed, mut held, mut positions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (run, change) in counts {
        runs.push(run);
        paid.push(change.paid);
        failed.push(change.failed);
        held.push(change.held);
        positions.push(change.position);
    }
    sqlx::query(
        "update payroll_runs r set paid_count = paid_count + pd, failed_count = failed_count + fd, \
           held_count = held_count + hd, last_position = p \
         from unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) as rows(id, pd, fd, hd, p) \
         where r.payroll_run_id = rows.id",
    )
    .bind(&runs)
    .bind(&paid)
    .bind(&failed)
    .bind(&held)
    .bind(&positions)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// A run's row, in draft.
async fn run_created(connection: &mut PgConnection, event: &RecordedEvent, created: &PayrollRunEvent) -> Result<()> {
    let PayrollRunEvent::PayrollRunCreated {
        payroll_run_id,
        organization_id,
        period,
        frequency,
        currency,
        kind,
        pay_schedule_id,
        created_by,
    } = created
    else {
        unreachable!("called with a PayrollRunCreated")
    };
    let reason = match kind {
        RunKind::OffCycle { reason } => Some(reason.as_str()),
        RunKind::Regular => None,
    };
    sqlx::query(
        "insert into payroll_runs (payroll_run_id, organization_id, period_start, period_end, frequency, currency, kind, \
           off_cycle_reason, status, created_by, created_at, last_position, pay_schedule_id) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, 'draft', $9, $10, $11, $12)",
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
    .bind(pay_schedule_id.map(|id| id.as_uuid()))
    .execute(connection)
    .await?;
    Ok(())
}

#[derive(Default)]
struct EarningColumns {
    employees: Vec<Uuid>,
    positions: Vec<i64>,
    lines: Vec<i32>,
    organizations: Vec<Uuid>,
    runs: Vec<Uuid>,
    starts: Vec<chrono::NaiveDate>,
    ends: Vec<chrono::NaiveDate>,
    amounts: Vec<Decimal>,
    currencies: Vec<String>,
}

impl EarningColumns {
    async fn insert(self, connection: &mut PgConnection) -> Result<()> {
        if self.employees.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "insert into paid_earnings (employee_id, global_position, line, organization_id, payroll_run_id, period_start, period_end, \
               amount, currency, last_position) \
             select e, p, l, o, r, s, en, a, c, p \
             from unnest($1::uuid[], $2::int8[], $3::int4[], $4::uuid[], $5::uuid[], $6::date[], $7::date[], $8::numeric[], $9::text[]) \
               as rows(e, p, l, o, r, s, en, a, c)",
        )
        .bind(&self.employees)
        .bind(&self.positions)
        .bind(&self.lines)
        .bind(&self.organizations)
        .bind(&self.runs)
        .bind(&self.starts)
        .bind(&self.ends)
        .bind(&self.amounts)
        .bind(&self.currencies)
        .execute(connection)
        .await?;
        Ok(())
    }
}

impl PayrollProjection {
    async fn apply_run(
        &self,
        connection: &mut PgConnection,
        event: &RecordedEvent,
        run_event: &PayrollRunEvent,
    ) -> Result<()> {
        match run_event {
            PayrollRunEvent::PayrollRunCreated { .. } => run_created(connection, event, run_event).await?,
            // Lines added make a calculated run a draft again.
            PayrollRunEvent::OffCycleLinesAdded { .. } => set_run(connection, event, "status = 'draft'", None).await?,
            PayrollRunEvent::PayrollItemsCalculated { chunk, items } => {
                items_calculated(connection, event, *chunk == 0, items).await?
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
            PayrollRunEvent::PayrollItemPaid { .. } | PayrollRunEvent::PayrollItemFailed { .. } => {
                let mut moves = ItemMoves::default();
                moves.item_moved(event, run_event);
                moves.write(connection).await?;
            }
            PayrollRunEvent::PayrollRunCompleted { status, .. } => {
                set_run(connection, event, "status = $2::text", Some(&serde_name(status))).await?;
            }
            PayrollRunEvent::PayrollRunVoided { .. } => {
                set_run(connection, event, "status = 'voided', approved_by = coalesce($2::text, approved_by)", None)
                    .await?
            }
            PayrollRunEvent::PayrollRunReversalStarted { .. } => {
                set_run(connection, event, "status = 'reversing', approved_by = coalesce($2::text, approved_by)", None)
                    .await?
            }
            PayrollRunEvent::PayrollItemsReversed { items } | PayrollRunEvent::PayrollRunReversed { items, .. } => {
                let mut moves = ItemMoves::default();
                for item in items {
                    moves.push(event, item.employee_id.as_uuid(), "reversed", None, None);
                }
                moves.write(connection).await?;
                if matches!(run_event, PayrollRunEvent::PayrollRunReversed { .. }) {
                    set_run(
                        connection,
                        event,
                        "status = 'reversed', approved_by = coalesce($2::text, approved_by)",
                        None,
                    )
                    .await?;
                }
            }
            PayrollRunEvent::PayrollItemsReleased { employee_ids, .. } => {
                let mut moves = ItemMoves::default();
                for employee_id in employee_ids {
                    moves.push(event, employee_id.as_uuid(), "pending", None, None);
                }
                moves.write(connection).await?;
                set_run(
                    connection,
                    event,
                    "status = 'processing', approved_by = coalesce($2::text, approved_by)",
                    None,
                )
                .await?;
            }
            PayrollRunEvent::PayrollItemPaymentFailed { employee_id, reason, .. } => {
                let mut moves = ItemMoves::default();
                moves.push(event, employee_id.as_uuid(), "failed", None, Some(reason));
                moves.write(connection).await?;
                set_run(
                    connection,
                    event,
                    "status = case status when 'completed' then 'partially_failed' else status end, \
                     approved_by = coalesce($2::text, approved_by)",
                    None,
                )
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
        types.extend(["OrganizationRegistered", "OrganizationSettingsChanged", "PayScheduleAdded"]);
        types.extend(PayCalendarEvent::EVENT_TYPES);
        types
    }

    /// Payments and failures of items are gathered and written together; any other event
    /// first writes what was gathered before it, as does a second move of the same item.
    async fn apply_all(&self, connection: &mut PgConnection, events: &[(&RecordedEvent, AnyEvent)]) -> Result<()> {
        let mut moves = ItemMoves::default();
        for (event, decoded) in events {
            if let AnyEvent::PayrollRun(
                run_event @ (PayrollRunEvent::PayrollItemPaid { employee_id, .. }
                | PayrollRunEvent::PayrollItemFailed { employee_id, .. }),
            ) = decoded
                && !moves.has(event.stream_id, employee_id.as_uuid())
            {
                moves.item_moved(event, run_event);
                continue;
            }
            std::mem::take(&mut moves).write(connection).await?;
            self.apply(connection, event, decoded).await?;
        }
        moves.write(connection).await
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        match decoded {
            AnyEvent::PayrollRun(run_event) => self.apply_run(connection, event, run_event).await,
            AnyEvent::Organization(OrganizationEvent::OrganizationRegistered {
                organization_id,
                pay_schedule,
                default_pay_schedule_id,
                ..
            }) => {
                let id = default_pay_schedule_id.unwrap_or_else(|| legacy_default_schedule_id(*organization_id));
                set_schedule(connection, event, (id.as_uuid(), "Default", true), pay_schedule).await
            }
            AnyEvent::Organization(OrganizationEvent::OrganizationSettingsChanged {
                pay_schedule: Some(pay_schedule),
                ..
            }) => {
                let id = default_schedule_id(connection, event).await?;
                set_schedule(connection, event, (id, "Default", true), pay_schedule).await
            }
            AnyEvent::Organization(OrganizationEvent::PayScheduleAdded { pay_schedule_id, name, schedule }) => {
                set_schedule(connection, event, (pay_schedule_id.as_uuid(), name, false), schedule).await
            }
            AnyEvent::PayCalendar(calendar) => apply_calendar(connection, event, calendar).await,
            _ => Ok(()),
        }
    }
}
