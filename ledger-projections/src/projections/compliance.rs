use std::collections::HashSet;

use async_trait::async_trait;
use ledger_core::gross_to_net::{HoldReason, PayrollItem};
use ledger_core::money::Money;
use ledger_core::payroll::PayrollRunEvent;
use ledger_core::transaction::{TransactionEvent, TransactionReference};
use ledger_core::{DomainEvent, EVENT_CATALOG};
use ledger_store::RecordedEvent;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::{direction_name, serde_name};
use crate::error::Result;
use crate::projection::Projection;
use ledger_codec::AnyEvent;

/// `compliance.audit_logs` (one row per event, every event type) and
/// `compliance.compliance_reports` (the payroll register and the journal of a run, written
/// when it completes).
#[derive(Debug, Clone, Copy)]
pub struct ComplianceProjection;

/// One audit row per event, for a whole batch in one statement.
async fn audit(connection: &mut PgConnection, events: &[(&RecordedEvent, AnyEvent)]) -> Result<()> {
    let text =
        |event: &RecordedEvent, key: &str| event.metadata.get(key).and_then(|value| value.as_str()).map(str::to_owned);
    let mut columns = AuditColumns::default();
    for (event, _) in events {
        columns.positions.push(event.global_position);
        columns.organizations.push(event.organization_id);
        columns.actors.push(text(event, "actor").unwrap_or_default());
        columns.roles.push(text(event, "role"));
        columns.actions.push(event.event_type.clone());
        columns.resources.push(event.stream_type.clone());
        columns.resource_ids.push(event.stream_id);
        columns.versions.push(event.stream_version as i64);
        columns.correlations.push(text(event, "correlation_id").and_then(|id| id.parse::<Uuid>().ok()));
        columns.idempotency_keys.push(text(event, "idempotency_key"));
        columns.times.push(event.recorded_at);
        columns.transactions.push(i64::try_from(event.transaction_id).expect("transaction ids fit int8"));
    }
    sqlx::query(
        "insert into audit_logs (global_position, organization_id, actor, role, action, resource, resource_id, stream_version, \
           correlation_id, idempotency_key, recorded_at, last_position, transaction_id) \
         select p, o, a, r, ac, re, ri, v, c, k, t, p, x \
         from unnest($1::int8[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::int8[], $9::uuid[], \
                     $10::text[], $11::timestamptz[], $12::int8[]) as rows(p, o, a, r, ac, re, ri, v, c, k, t, x)",
    )
    .bind(&columns.positions)
    .bind(&columns.organizations)
    .bind(&columns.actors)
    .bind(&columns.roles)
    .bind(&columns.actions)
    .bind(&columns.resources)
    .bind(&columns.resource_ids)
    .bind(&columns.versions)
    .bind(&columns.correlations)
    .bind(&columns.idempotency_keys)
    .bind(&columns.times)
    .bind(&columns.transactions)
    .execute(connection)
    .await?;
    Ok(())
}

#[derive(Default)]
struct AuditColumns {
    positions: Vec<i64>,
    transactions: Vec<i64>,
    organizations: Vec<Uuid>,
    actors: Vec<String>,
    roles: Vec<Option<String>>,
    actions: Vec<String>,
    resources: Vec<String>,
    resource_ids: Vec<Uuid>,
    versions: Vec<i64>,
    correlations: Vec<Option<Uuid>>,
    idempotency_keys: Vec<Option<String>>,
    times: Vec<chrono::DateTime<chrono::Utc>>,
}

// Amounts are decimal strings, as everywhere in the API (numeric's text keeps the scale).
const REGISTER: &str = "\
insert into compliance_reports (payroll_run_id, kind, organization_id, content, generated_at, last_position)
select $1, 'payroll_register', $2, jsonb_build_object(
        'payroll_run_id', $1::uuid,
        'status', $3::text,
        'items', count(*),
        'gross', coalesce(sum(gross), 0)::text,
        'deductions', coalesce(sum(deductions), 0)::text,
        'contributions', coalesce(sum(contributions), 0)::text,
        'net', coalesce(sum(net), 0)::text,
        'net_paid', coalesce(sum(net) filter (where status = 'paid'), 0)::text,
        'lines', coalesce(jsonb_agg(jsonb_build_object(
            'employee_id', employee_id, 'status', status, 'transaction_id', transaction_id,
            'gross', gross::text, 'deductions', deductions::text,
            'contributions', contributions::text, 'net', net::text,
            'hold', hold) order by employee_id), '[]'::jsonb)),
    $4, $5
from run_items where payroll_run_id = $1
on conflict (payroll_run_id, kind) do update set content = excluded.content, generated_at = excluded.generated_at,
    last_position = excluded.last_position";

const JOURNAL: &str = "\
insert into compliance_reports (payroll_run_id, kind, organization_id, content, generated_at, last_position)
select $1, 'journal', $2, jsonb_build_object(
        'payroll_run_id', $1::uuid,
        'accounts', coalesce(jsonb_agg(jsonb_build_object('account', account, 'currency', currency,
            'debits', debits::text, 'credits', credits::text) order by account, currency), '[]'::jsonb),
        'total_debits', coalesce(sum(debits), 0)::text,
        'total_credits', coalesce(sum(credits), 0)::text,
        'balanced', coalesce(sum(debits), 0) = coalesce(sum(credits), 0)),
    $3, $4
from (select account, currency,
             sum(amount) filter (where direction = 'debit') as debits,
             sum(amount) filter (where direction = 'credit') as credits
      from run_postings where payroll_run_id = $1 group by account, currency) accounts
on conflict (payroll_run_id, kind) do update set content = excluded.content, generated_at = excluded.generated_at,
    last_position = excluded.last_position";

async fn reports(connection: &mut PgConnection, event: &RecordedEvent, status: &str) -> Result<()> {
    sqlx::query(REGISTER)
        .bind(event.stream_id)
        .bind(event.organization_id)
        .bind(status)
        .bind(event.recorded_at)
        .bind(event.global_position)
        .execute(&mut *connection)
        .await?;
    sqlx::query(JOURNAL)
        .bind(event.stream_id)
        .bind(event.organization_id)
        .bind(event.recorded_at)
        .bind(event.global_position)
        .execute(connection)
        .await?;
    Ok(())
}

/// Report working rows gathered from a batch: run postings (inserts) and item status
/// changes, written before any other run event is applied (a completion's reports read
/// them), and before a second change of the same item.
#[derive(Default)]
struct ReportRows {
    seen: HashSet<(Uuid, Uuid)>,
    item_runs: Vec<Uuid>,
    item_employees: Vec<Uuid>,
    item_statuses: Vec<&'static str>,
    item_transactions: Vec<Option<Uuid>>,
    item_positions: Vec<i64>,
    postings: PostingColumns,
}

#[derive(Default)]
struct PostingColumns {
    runs: Vec<Uuid>,
    transactions: Vec<Uuid>,
    lines: Vec<i32>,
    accounts: Vec<String>,
    directions: Vec<&'static str>,
    amounts: Vec<rust_decimal::Decimal>,
    currencies: Vec<String>,
    positions: Vec<i64>,
}

impl ReportRows {
    /// Gathers `decoded` if it only adds rows (or none); false for a run event that must be
    /// applied on its own.
    fn gather(&mut self, event: &RecordedEvent, decoded: &AnyEvent) -> bool {
        match decoded {
            AnyEvent::PayrollRun(PayrollRunEvent::PayrollItemPaid { employee_id, transaction_id, .. })
                if !self.seen.contains(&(event.stream_id, employee_id.as_uuid())) =>
            {
                self.item(event, employee_id.as_uuid(), "paid", Some(transaction_id.as_uuid()))
            }
            AnyEvent::PayrollRun(PayrollRunEvent::PayrollItemFailed { employee_id, .. })
                if !self.seen.contains(&(event.stream_id, employee_id.as_uuid())) =>
            {
                self.item(event, employee_id.as_uuid(), "failed", None)
            }
            AnyEvent::Transaction(TransactionEvent::TransactionRecorded { postings, reference, .. }) => {
                let (TransactionReference::PayrollItem { payroll_run_id, .. }
                | TransactionReference::PayrollReversal { payroll_run_id, .. }) = reference
                else {
                    return true;
                };
                for (line, posting) in postings.iter().enumerate() {
                    let rows = &mut self.postings;
                    rows.runs.push(payroll_run_id.as_uuid());
                    rows.transactions.push(event.stream_id);
                    rows.lines.push(line as i32);
                    rows.accounts.push(posting.account.clone());
                    rows.directions.push(direction_name(posting.direction));
                    rows.amounts.push(posting.amount.amount());
                    rows.currencies.push(posting.amount.currency().code().to_owned());
                    rows.positions.push(event.global_position);
                }
            }
            AnyEvent::PayrollRun(_)
            | AnyEvent::Transaction(
                TransactionEvent::TransactionFailed { .. } | TransactionEvent::TransactionVoided { .. },
            ) => {
                return false;
            }
            _ => {}
        }
        true
    }

    fn item(&mut self, event: &RecordedEvent, employee: Uuid, status: &'static str, transaction: Option<Uuid>) {
        self.seen.insert((event.stream_id, employee));
        self.item_runs.push(event.stream_id);
        self.item_employees.push(employee);
        self.item_statuses.push(status);
        self.item_transactions.push(transaction);
        self.item_positions.push(event.global_position);
    }

    async fn write(self, connection: &mut PgConnection) -> Result<()> {
        if !self.item_runs.is_empty() {
            sqlx::query(
                "update run_items i set status = s, transaction_id = coalesce(t, i.transaction_id), last_position = p \
                 from unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::int8[]) as rows(r, e, s, t, p) \
                 where i.payroll_run_id = rows.r and i.employee_id = rows.e",
            )
            .bind(&self.item_runs)
            .bind(&self.item_employees)
            .bind(&self.item_statuses)
            .bind(&self.item_transactions)
            .bind(&self.item_positions)
            .execute(&mut *connection)
            .await?;
        }
        let postings = &self.postings;
        if !postings.runs.is_empty() {
            sqlx::query(
                "insert into run_postings (payroll_run_id, transaction_id, line, account, direction, amount, currency, last_position) \
                 select * from unnest($1::uuid[], $2::uuid[], $3::int4[], $4::text[], $5::text[], $6::numeric[], $7::text[], $8::int8[])",
            )
            .bind(&postings.runs)
            .bind(&postings.transactions)
            .bind(&postings.lines)
            .bind(&postings.accounts)
            .bind(&postings.directions)
            .bind(&postings.amounts)
            .bind(&postings.currencies)
            .bind(&postings.positions)
            .execute(connection)
            .await?;
        }
        Ok(())
    }
}

/// Applies a run event that does not only add rows.
async fn apply_run(connection: &mut PgConnection, event: &RecordedEvent, run_event: &PayrollRunEvent) -> Result<()> {
    match run_event {
        PayrollRunEvent::PayrollItemsCalculated { chunk, items } => {
            run_items(connection, event, *chunk == 0, items).await?
        }
        // A calculation recorded before chunks existed carries its items.
        PayrollRunEvent::PayrollRunCalculated { items, .. } if !items.is_empty() => {
            run_items(connection, event, true, items).await?
        }
        PayrollRunEvent::PayrollRunCompleted { status, .. } => reports(connection, event, &serde_name(status)).await?,
        PayrollRunEvent::PayrollItemsReversed { items } | PayrollRunEvent::PayrollRunReversed { items, .. } => {
            let mut rows = ReportRows::default();
            for item in items {
                rows.item(event, item.employee_id.as_uuid(), "reversed", None);
            }
            rows.write(connection).await?;
            if matches!(run_event, PayrollRunEvent::PayrollRunReversed { .. }) {
                reports(connection, event, "reversed").await?;
            }
        }
        PayrollRunEvent::PayrollItemsReleased { employee_ids, .. } => {
            let mut rows = ReportRows::default();
            for employee_id in employee_ids {
                rows.item(event, employee_id.as_uuid(), "pending", None);
            }
            rows.write(connection).await?;
        }
        PayrollRunEvent::PayrollItemPaymentFailed { employee_id, .. } => {
            let mut rows = ReportRows::default();
            rows.item(event, employee_id.as_uuid(), "failed", None);
            rows.write(connection).await?;
            // The reports of a completed run follow the payment that failed on the rail.
            let status: Option<String> =
                sqlx::query_scalar("select kind from compliance_reports where payroll_run_id = $1 limit 1")
                    .bind(event.stream_id)
                    .fetch_optional(&mut *connection)
                    .await?;
            if status.is_some() {
                reports(connection, event, "partially_failed").await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A chunk of a calculation's items; the first one replaces an earlier calculation's.
async fn run_items(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    first: bool,
    items: &[PayrollItem],
) -> Result<()> {
    if first {
        sqlx::query("delete from run_items where payroll_run_id = $1")
            .bind(event.stream_id)
            .execute(&mut *connection)
            .await?;
    }
    let amounts =
        |amount: fn(&PayrollItem) -> &Money| items.iter().map(|item| amount(item).amount()).collect::<Vec<_>>();
    let employees: Vec<Uuid> = items.iter().map(|item| item.employee_id.as_uuid()).collect();
    let holds: Vec<Option<Json<&HoldReason>>> = items.iter().map(|item| item.hold.as_ref().map(Json)).collect();
    let statuses: Vec<&str> = items.iter().map(|item| if item.hold.is_some() { "held" } else { "pending" }).collect();
    sqlx::query(
        "insert into run_items (payroll_run_id, employee_id, organization_id, gross, deductions, contributions, net, hold, \
                                status, last_position) \
         select $1, e, $2, g, d, c, n, h, s, $3 \
         from unnest($4::uuid[], $5::numeric[], $6::numeric[], $7::numeric[], $8::numeric[], $9::jsonb[], $10::text[]) \
              as rows(e, g, d, c, n, h, s)",
    )
    .bind(event.stream_id)
    .bind(event.organization_id)
    .bind(event.global_position)
    .bind(&employees)
    .bind(amounts(|item| &item.gross))
    .bind(amounts(|item| &item.deductions_total))
    .bind(amounts(|item| &item.contributions_total))
    .bind(amounts(|item| &item.net))
    .bind(&holds)
    .bind(&statuses)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

#[async_trait]
impl Projection for ComplianceProjection {
    fn name(&self) -> &'static str {
        "compliance"
    }

    fn schema(&self) -> &'static str {
        "compliance"
    }

    /// Every event type of the catalog: the audit log records them all.
    fn event_types(&self) -> Vec<&'static str> {
        EVENT_CATALOG.iter().flat_map(|(_, types)| types.iter().copied()).collect()
    }

    /// The audit row needs only the envelope; the report rows need runs' and transactions'
    /// payloads.
    fn payload_types(&self) -> Vec<&'static str> {
        [PayrollRunEvent::EVENT_TYPES, TransactionEvent::EVENT_TYPES].concat()
    }

    /// The audit row names the actor, role, correlation and idempotency key.
    fn reads_metadata(&self) -> bool {
        true
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        self.apply_all(connection, &[(event, decoded.clone())]).await
    }

    /// The audit rows of the whole batch in one statement, then the reports' working rows
    /// (gathered, and written before any event that reads them).
    async fn apply_all(&self, connection: &mut PgConnection, events: &[(&RecordedEvent, AnyEvent)]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        audit(connection, events).await?;
        let mut rows = ReportRows::default();
        for (event, decoded) in events {
            if rows.gather(event, decoded) {
                continue;
            }
            std::mem::take(&mut rows).write(connection).await?;
            // A second change of an item is gathered anew; other run events apply now.
            if !rows.gather(event, decoded) {
                match decoded {
                    AnyEvent::PayrollRun(run_event) => apply_run(connection, event, run_event).await?,
                    // A payment that failed on the rail (or was voided) moved no money: its
                    // postings leave the run's journal.
                    AnyEvent::Transaction(_) => {
                        sqlx::query("delete from run_postings where transaction_id = $1")
                            .bind(event.stream_id)
                            .execute(&mut *connection)
                            .await?;
                    }
                    _ => {}
                }
            }
        }
        rows.write(connection).await
    }
}
