use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::Datelike;
use ledger_core::DomainEvent;
use ledger_core::calendar::TaxYearStart;
use ledger_core::gross_to_net::{EarningKind, EarningLine, PayrollItem, RuleLine};
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
           deduction_lines, contribution_lines, status, hold_reason, last_position, calculated_position) \
         select $1, e, $2, g, d, c, n, er, dl, cl, s, h, $3, $3 \
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
        let (counts, earnings, changes) = self.tally(&before);
        let mut totals = YearToDate::load(connection, &changes).await?;
        let snapshots = totals.apply(&changes);
        self.update_items(connection, &snapshots).await?;
        write_run_counts(connection, counts).await?;
        earnings.insert(connection).await?;
        totals.save(connection).await
    }

    /// The changed items as they were: status, amounts and lines, the tax year a payment
    /// counted in, and their run's period, pay date, currency and tax year start.
    async fn items_before(&self, connection: &mut PgConnection) -> Result<HashMap<(Uuid, Uuid), ItemBefore>> {
        let before: Vec<ItemBefore> = sqlx::query_as(
            "select i.payroll_run_id, i.employee_id, i.status, i.earnings, i.deduction_lines, i.contribution_lines, \
                    i.gross, i.deductions, i.contributions, i.net, i.tax_year_start, \
                    r.period_start, r.period_end, r.pay_date, r.currency, \
                    coalesce(t.start_month, 1) as start_month, coalesce(t.start_day, 1) as start_day \
             from unnest($1::uuid[], $2::uuid[]) as rows(r, e) \
             join payroll_items i on i.payroll_run_id = rows.r and i.employee_id = rows.e \
             join payroll_runs r on r.payroll_run_id = rows.r \
             left join tax_years t on t.organization_id = r.organization_id",
        )
        .bind(&self.runs)
        .bind(&self.employees)
        .fetch_all(&mut *connection)
        .await?;
        Ok(before.into_iter().map(|row| ((row.payroll_run_id, row.employee_id), row)).collect())
    }

    /// The items' new status, and for each payment the tax year it counts in and that year's
    /// totals after it.
    async fn update_items(&self, connection: &mut PgConnection, snapshots: &HashMap<usize, Snapshot>) -> Result<()> {
        let (years, totals): (Vec<Option<chrono::NaiveDate>>, Vec<Option<serde_json::Value>>) = (0..self.runs.len())
            .map(|index| match snapshots.get(&index) {
                Some(snapshot) => (Some(snapshot.0), Some(snapshot.1.clone())),
                None => (None, None),
            })
            .unzip();
        sqlx::query(
            "update payroll_items i set status = s, transaction_id = coalesce(t, i.transaction_id), failure_reason = f, last_position = p, \
               tax_year_start = coalesce(y, i.tax_year_start), year_to_date = coalesce(ytd, i.year_to_date) \
             from unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::int8[], $7::date[], $8::jsonb[]) \
               as rows(r, e, s, t, f, p, y, ytd) \
             where i.payroll_run_id = rows.r and i.employee_id = rows.e",
        )
        .bind(&self.runs)
        .bind(&self.employees)
        .bind(&self.statuses)
        .bind(&self.transactions)
        .bind(&self.reasons)
        .bind(&self.positions)
        .bind(&years)
        .bind(&totals)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    /// Per run the change of its paid and failed counts, the earnings lines a payment adds
    /// to (or a reversal takes from) the payment history, and the items that enter or leave
    /// a tax year's totals.
    fn tally<'a>(
        &self,
        before: &'a HashMap<(Uuid, Uuid), ItemBefore>,
    ) -> (BTreeMap<Uuid, CountChange>, EarningColumns, Vec<TotalChange<'a>>) {
        let mut counts: BTreeMap<Uuid, CountChange> = BTreeMap::new();
        let mut earnings = EarningColumns::default();
        let mut changes = Vec::new();
        for index in 0..self.runs.len() {
            let (run, employee, status) = (self.runs[index], self.employees[index], self.statuses[index]);
            let Some(item) = before.get(&(run, employee)) else {
                continue;
            };
            let (was, lines, period_start, period_end, currency) =
                (&item.status, &item.earnings, &item.period_start, &item.period_end, &item.currency);
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
            // A payment counts in the tax year of its run's pay date; leaving paid takes it
            // out of the year it counted in (none for payments from before tax years).
            let tax_year = if sign.is_sign_positive() {
                Some(TaxYearStart { month: item.start_month as u32, day: item.start_day as u32 }.year_of(item.pay_date))
            } else {
                item.tax_year_start
            };
            if let Some(tax_year) = tax_year {
                let organization = self.organizations[index];
                changes.push(TotalChange {
                    index,
                    organization,
                    item,
                    tax_year,
                    sign,
                    position: self.positions[index],
                });
            }
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
        (counts, earnings, changes)
    }
}

/// An item as it was before a batch moved it, with what its run says of it.
#[derive(sqlx::FromRow)]
struct ItemBefore {
    payroll_run_id: Uuid,
    employee_id: Uuid,
    status: String,
    earnings: Json<Vec<EarningLine>>,
    deduction_lines: Json<Vec<RuleLine>>,
    contribution_lines: Json<Vec<RuleLine>>,
    gross: Decimal,
    deductions: Decimal,
    contributions: Decimal,
    net: Decimal,
    tax_year_start: Option<chrono::NaiveDate>,
    period_start: chrono::NaiveDate,
    period_end: chrono::NaiveDate,
    pay_date: chrono::NaiveDate,
    currency: String,
    start_month: i32,
    start_day: i32,
}

/// An item entering (`sign` 1: paid) or leaving (-1) a tax year's totals; `index` is its
/// place in the batch's moves.
struct TotalChange<'a> {
    index: usize,
    organization: Uuid,
    item: &'a ItemBefore,
    tax_year: chrono::NaiveDate,
    sign: Decimal,
    position: i64,
}

/// A payment's tax year and that year's totals just after it (the payslip's year to date).
type Snapshot = (chrono::NaiveDate, serde_json::Value);

/// One employee's totals of a tax year in one currency.
#[derive(Debug, Clone, Default)]
struct Totals {
    organization_id: Uuid,
    tax_year_end: Option<chrono::NaiveDate>,
    items: i32,
    gross: Decimal,
    deductions: Decimal,
    contributions: Decimal,
    net: Decimal,
    /// By (kind, rule id): the rule's name and amount.
    lines: BTreeMap<(String, String), (String, Decimal)>,
    last_position: i64,
}

/// A rule's total in `payroll.year_to_date.lines` and a payslip's year to date.
#[derive(serde::Serialize, serde::Deserialize)]
struct TotalLine {
    kind: String,
    rule_id: String,
    name: String,
    amount: Decimal,
}

impl Totals {
    fn json(&self, tax_year: chrono::NaiveDate) -> serde_json::Value {
        serde_json::json!({
            "tax_year_start": tax_year,
            "tax_year_end": self.tax_year_end,
            "gross": self.gross,
            "deductions": self.deductions,
            "contributions": self.contributions,
            "net": self.net,
            "lines": self.lines_json(),
        })
    }

    fn lines_json(&self) -> serde_json::Value {
        let lines: Vec<TotalLine> = self
            .lines
            .iter()
            .map(|((kind, rule_id), (name, amount))| TotalLine {
                kind: kind.clone(),
                rule_id: rule_id.clone(),
                name: name.clone(),
                amount: *amount,
            })
            .collect();
        to_json(&lines)
    }
}

/// The year-to-date totals a batch touches, loaded, changed in the batch's order and saved.
struct YearToDate {
    totals: BTreeMap<(Uuid, chrono::NaiveDate, String), Totals>,
}

#[derive(sqlx::FromRow)]
struct TotalsRow {
    employee_id: Uuid,
    tax_year_start: chrono::NaiveDate,
    currency: String,
    organization_id: Uuid,
    tax_year_end: chrono::NaiveDate,
    items: i32,
    gross: Decimal,
    deductions: Decimal,
    contributions: Decimal,
    net: Decimal,
    lines: Json<Vec<TotalLine>>,
    last_position: i64,
}

impl YearToDate {
    async fn load(connection: &mut PgConnection, changes: &[TotalChange<'_>]) -> Result<YearToDate> {
        let mut totals = BTreeMap::new();
        if changes.is_empty() {
            return Ok(YearToDate { totals });
        }
        let employees: Vec<Uuid> = changes.iter().map(|change| change.item.employee_id).collect();
        let years: Vec<chrono::NaiveDate> = changes.iter().map(|change| change.tax_year).collect();
        let currencies: Vec<&str> = changes.iter().map(|change| change.item.currency.as_str()).collect();
        let rows: Vec<TotalsRow> = sqlx::query_as(
            "select y.* from year_to_date y \
             join (select distinct * from unnest($1::uuid[], $2::date[], $3::text[]) as k(e, s, c)) k \
               on y.employee_id = k.e and y.tax_year_start = k.s and y.currency = k.c",
        )
        .bind(&employees)
        .bind(&years)
        .bind(&currencies)
        .fetch_all(&mut *connection)
        .await?;
        for row in rows {
            let lines =
                row.lines.0.into_iter().map(|line| ((line.kind, line.rule_id), (line.name, line.amount))).collect();
            let loaded = Totals {
                organization_id: row.organization_id,
                tax_year_end: Some(row.tax_year_end),
                items: row.items,
                gross: row.gross,
                deductions: row.deductions,
                contributions: row.contributions,
                net: row.net,
                lines,
                last_position: row.last_position,
            };
            totals.insert((row.employee_id, row.tax_year_start, row.currency), loaded);
        }
        Ok(YearToDate { totals })
    }

    /// Adds or takes out each item, in order; the totals after each payment by its index.
    fn apply(&mut self, changes: &[TotalChange<'_>]) -> HashMap<usize, Snapshot> {
        let mut snapshots = HashMap::new();
        for change in changes {
            let item = change.item;
            let key = (item.employee_id, change.tax_year, item.currency.clone());
            let totals = self.totals.entry(key).or_default();
            totals.organization_id = change.organization;
            if totals.tax_year_end.is_none() {
                let start = TaxYearStart { month: change.tax_year.month(), day: change.tax_year.day() };
                totals.tax_year_end = Some(start.end_of(change.tax_year));
            }
            let sign = change.sign;
            totals.items += if sign.is_sign_positive() { 1 } else { -1 };
            totals.gross += item.gross * sign;
            totals.deductions += item.deductions * sign;
            totals.contributions += item.contributions * sign;
            totals.net += item.net * sign;
            for (kind, lines) in [("deduction", &item.deduction_lines.0), ("contribution", &item.contribution_lines.0)]
            {
                for line in lines {
                    let entry = totals
                        .lines
                        .entry((kind.to_owned(), line.rule_id.clone()))
                        .or_insert_with(|| (line.name.clone(), Decimal::ZERO));
                    entry.0.clone_from(&line.name);
                    entry.1 += line.amount.amount() * sign;
                }
            }
            totals.last_position = change.position;
            if sign.is_sign_positive() {
                snapshots.insert(change.index, (change.tax_year, totals.json(change.tax_year)));
            }
        }
        snapshots
    }

    async fn save(self, connection: &mut PgConnection) -> Result<()> {
        if self.totals.is_empty() {
            return Ok(());
        }
        let mut columns = TotalsColumns::default();
        for ((employee, year, currency), totals) in &self.totals {
            columns.employees.push(*employee);
            columns.years.push(*year);
            columns.currencies.push(currency.clone());
            columns.organizations.push(totals.organization_id);
            columns.ends.push(totals.tax_year_end.expect("set when loaded or changed"));
            columns.items.push(totals.items);
            columns.gross.push(totals.gross);
            columns.deductions.push(totals.deductions);
            columns.contributions.push(totals.contributions);
            columns.net.push(totals.net);
            columns.lines.push(totals.lines_json());
            columns.positions.push(totals.last_position);
        }
        sqlx::query(
            "insert into year_to_date (employee_id, tax_year_start, currency, organization_id, tax_year_end, items, gross, deductions, \
               contributions, net, lines, last_position) \
             select * from unnest($1::uuid[], $2::date[], $3::text[], $4::uuid[], $5::date[], $6::int4[], $7::numeric[], \
               $8::numeric[], $9::numeric[], $10::numeric[], $11::jsonb[], $12::int8[]) \
             on conflict (employee_id, tax_year_start, currency) do update set items = excluded.items, gross = excluded.gross, \
               deductions = excluded.deductions, contributions = excluded.contributions, net = excluded.net, \
               lines = excluded.lines, last_position = excluded.last_position",
        )
        .bind(&columns.employees)
        .bind(&columns.years)
        .bind(&columns.currencies)
        .bind(&columns.organizations)
        .bind(&columns.ends)
        .bind(&columns.items)
        .bind(&columns.gross)
        .bind(&columns.deductions)
        .bind(&columns.contributions)
        .bind(&columns.net)
        .bind(&columns.lines)
        .bind(&columns.positions)
        .execute(connection)
        .await?;
        Ok(())
    }
}

#[derive(Default)]
struct TotalsColumns {
    employees: Vec<Uuid>,
    years: Vec<chrono::NaiveDate>,
    currencies: Vec<String>,
    organizations: Vec<Uuid>,
    ends: Vec<chrono::NaiveDate>,
    items: Vec<i32>,
    gross: Vec<Decimal>,
    deductions: Vec<Decimal>,
    contributions: Vec<Decimal>,
    net: Vec<Decimal>,
    lines: Vec<serde_json::Value>,
    positions: Vec<i64>,
}

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
        pay_date,
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
           off_cycle_reason, status, created_by, created_at, last_position, pay_schedule_id, pay_date) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, 'draft', $9, $10, $11, $12, $13)",
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
    .bind(pay_date.unwrap_or(period.end()))
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
        types.extend(["OrganizationRegistered", "OrganizationSettingsChanged", "PayScheduleAdded", "TaxYearStartSet"]);
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
            AnyEvent::Organization(OrganizationEvent::TaxYearStartSet { start }) => {
                sqlx::query(
                    "insert into tax_years (organization_id, start_month, start_day, last_position) values ($1, $2, $3, $4) \
                     on conflict (organization_id) do update set start_month = excluded.start_month, \
                       start_day = excluded.start_day, last_position = excluded.last_position",
                )
                .bind(event.organization_id)
                .bind(start.month as i32)
                .bind(start.day as i32)
                .bind(event.global_position)
                .execute(connection)
                .await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
