use async_trait::async_trait;
use ledger_core::EVENT_CATALOG;
use ledger_core::payroll::PayrollRunEvent;
use ledger_core::transaction::{Direction, TransactionEvent, TransactionReference};
use ledger_store::RecordedEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{serde_name, to_json};
use crate::decode::AnyEvent;
use crate::error::Result;
use crate::projection::Projection;

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
    }
    sqlx::query(
        "insert into audit_logs (global_position, organization_id, actor, role, action, resource, resource_id, stream_version, \
           correlation_id, idempotency_key, recorded_at, last_position) \
         select p, o, a, r, ac, re, ri, v, c, k, t, p \
         from unnest($1::int8[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::int8[], $9::uuid[], \
                     $10::text[], $11::timestamptz[]) as rows(p, o, a, r, ac, re, ri, v, c, k, t)",
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
    .execute(connection)
    .await?;
    Ok(())
}

#[derive(Default)]
struct AuditColumns {
    positions: Vec<i64>,
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

const REGISTER: &str = "\
insert into compliance_reports (payroll_run_id, kind, organization_id, content, generated_at, last_position)
select $1, 'payroll_register', $2, jsonb_build_object(
        'payroll_run_id', $1::uuid,
        'status', $3::text,
        'items', count(*),
        'gross', coalesce(sum((item->'gross'->>'amount')::numeric), 0),
        'deductions', coalesce(sum((item->'deductions_total'->>'amount')::numeric), 0),
        'contributions', coalesce(sum((item->'contributions_total'->>'amount')::numeric), 0),
        'net', coalesce(sum((item->'net'->>'amount')::numeric), 0),
        'net_paid', coalesce(sum((item->'net'->>'amount')::numeric) filter (where status = 'paid'), 0),
        'lines', coalesce(jsonb_agg(jsonb_build_object(
            'employee_id', employee_id, 'status', status, 'transaction_id', transaction_id,
            'gross', item->'gross'->>'amount', 'deductions', item->'deductions_total'->>'amount',
            'contributions', item->'contributions_total'->>'amount', 'net', item->'net'->>'amount',
            'hold', item->'hold') order by employee_id), '[]'::jsonb)),
    $4, $5
from run_items where payroll_run_id = $1
on conflict (payroll_run_id, kind) do update set content = excluded.content, generated_at = excluded.generated_at,
    last_position = excluded.last_position";

const JOURNAL: &str = "\
insert into compliance_reports (payroll_run_id, kind, organization_id, content, generated_at, last_position)
select $1, 'journal', $2, jsonb_build_object(
        'payroll_run_id', $1::uuid,
        'accounts', coalesce(jsonb_agg(jsonb_build_object('account', account, 'currency', currency,
            'debits', debits, 'credits', credits) order by account, currency), '[]'::jsonb),
        'total_debits', coalesce(sum(debits), 0),
        'total_credits', coalesce(sum(credits), 0),
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

async fn set_item(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    employee_id: Uuid,
    status: &str,
    transaction_id: Option<Uuid>,
) -> Result<()> {
    sqlx::query(
        "update run_items set status = $3, transaction_id = coalesce($4, transaction_id), last_position = $5 \
         where payroll_run_id = $1 and employee_id = $2",
    )
    .bind(event.stream_id)
    .bind(employee_id)
    .bind(status)
    .bind(transaction_id)
    .bind(event.global_position)
    .execute(connection)
    .await?;
    Ok(())
}

async fn apply_run(connection: &mut PgConnection, event: &RecordedEvent, run_event: &PayrollRunEvent) -> Result<()> {
    match run_event {
        PayrollRunEvent::PayrollRunCalculated { items, .. } => {
            sqlx::query("delete from run_items where payroll_run_id = $1")
                .bind(event.stream_id)
                .execute(&mut *connection)
                .await?;
            for item in items {
                sqlx::query(
                    "insert into run_items (payroll_run_id, employee_id, organization_id, item, status, last_position) values ($1, $2, $3, $4, $5, $6)",
                )
                .bind(event.stream_id)
                .bind(item.employee_id.as_uuid())
                .bind(event.organization_id)
                .bind(to_json(item))
                .bind(if item.hold.is_some() { "held" } else { "pending" })
                .bind(event.global_position)
                .execute(&mut *connection)
                .await?;
            }
        }
        PayrollRunEvent::PayrollItemPaid { employee_id, transaction_id, .. } => {
            set_item(connection, event, employee_id.as_uuid(), "paid", Some(transaction_id.as_uuid())).await?;
        }
        PayrollRunEvent::PayrollItemFailed { employee_id, .. } => {
            set_item(connection, event, employee_id.as_uuid(), "failed", None).await?
        }
        PayrollRunEvent::PayrollRunCompleted { status, .. } => reports(connection, event, &serde_name(status)).await?,
        PayrollRunEvent::PayrollRunReversed { items, .. } => {
            for item in items {
                set_item(connection, event, item.employee_id.as_uuid(), "reversed", None).await?;
            }
            reports(connection, event, "reversed").await?;
        }
        _ => {}
    }
    Ok(())
}

/// Keeps the postings of payroll payments and reversals, for the run's journal.
async fn apply_transaction(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    transaction_event: &TransactionEvent,
) -> Result<()> {
    let TransactionEvent::TransactionRecorded { postings, reference, .. } = transaction_event else { return Ok(()) };
    let (TransactionReference::PayrollItem { payroll_run_id, .. }
    | TransactionReference::PayrollReversal { payroll_run_id, .. }) = reference
    else {
        return Ok(());
    };
    for (line, posting) in postings.iter().enumerate() {
        sqlx::query(
            "insert into run_postings (payroll_run_id, transaction_id, line, account, direction, amount, currency, last_position) \
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(payroll_run_id.as_uuid())
        .bind(event.stream_id)
        .bind(line as i32)
        .bind(&posting.account)
        .bind(if posting.direction == Direction::Debit { "debit" } else { "credit" })
        .bind(posting.amount.amount())
        .bind(posting.amount.currency().code())
        .bind(event.global_position)
        .execute(&mut *connection)
        .await?;
    }
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

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        self.apply_all(connection, &[(event, decoded.clone())]).await
    }

    /// The audit rows of the whole batch in one statement, then the reports' working rows.
    async fn apply_all(&self, connection: &mut PgConnection, events: &[(&RecordedEvent, AnyEvent)]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        audit(connection, events).await?;
        for (event, decoded) in events {
            apply_report_rows(connection, event, decoded).await?;
        }
        Ok(())
    }
}

/// The working rows the register and journal are written from.
async fn apply_report_rows(connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
    match decoded {
        AnyEvent::PayrollRun(run_event) => apply_run(connection, event, run_event).await,
        AnyEvent::Transaction(transaction_event) => apply_transaction(connection, event, transaction_event).await,
        _ => Ok(()),
    }
}
