use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_core::transaction::{Direction, Posting, TransactionEvent, TransactionReference};
use ledger_store::RecordedEvent;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{direction_name, to_json};
use crate::error::Result;
use crate::projection::Projection;
use ledger_codec::AnyEvent;

/// `transaction.transactions`, `transaction_logs` (each status change), `postings` and
/// `account_balances`.
#[derive(Debug, Clone, Copy)]
pub struct TransactionProjection;

/// Adds a row's debits and credits to an account's balance.
const BALANCE_CONFLICT: &str = "on conflict (account, currency) do update set debits = account_balances.debits + excluded.debits, \
     credits = account_balances.credits + excluded.credits, \
     balance = account_balances.balance + excluded.debits - excluded.credits, last_position = excluded.last_position";

fn reference_columns(reference: &TransactionReference) -> (&'static str, Option<Uuid>, Option<Uuid>, Option<Uuid>) {
    match reference {
        TransactionReference::PayrollItem { payroll_run_id, employee_id } => {
            ("payroll_item", Some(payroll_run_id.as_uuid()), Some(employee_id.as_uuid()), None)
        }
        TransactionReference::PayrollReversal { payroll_run_id, employee_id } => {
            ("payroll_reversal", Some(payroll_run_id.as_uuid()), Some(employee_id.as_uuid()), None)
        }
        TransactionReference::Withdrawal { wallet_id } => ("withdrawal", None, None, Some(wallet_id.as_uuid())),
    }
}

/// A failed or voided transaction no longer counts in the balances.
async fn cancelled(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    status: &'static str,
    reason: &str,
) -> Result<()> {
    let postings: Vec<(String, String, Decimal, String)> = sqlx::query_as(
        "select account, direction, amount, currency from postings where transaction_id = $1 order by line",
    )
    .bind(event.stream_id)
    .fetch_all(&mut *connection)
    .await?;
    let mut rows = Rows::default();
    for (account, direction, amount, currency) in postings {
        let direction = if direction == "debit" { Direction::Debit } else { Direction::Credit };
        rows.move_balance(event, account, currency, direction, -amount);
    }
    sqlx::query(
        "update transactions set status = $2, failure_reason = $3, last_position = $4 where transaction_id = $1",
    )
    .bind(event.stream_id)
    .bind(status)
    .bind(reason)
    .bind(event.global_position)
    .execute(&mut *connection)
    .await?;
    rows.log(event, status, serde_json::json!({ "reason": reason }));
    rows.write(connection).await
}

/// The rows of a run of recorded and settled transactions, written in a few statements
/// (a payroll run records and settles thousands). Settlements follow the inserts, so a
/// transaction recorded and settled in the same batch ends settled.
#[derive(Default)]
struct Rows {
    transactions: TransactionColumns,
    postings: PostingColumns,
    /// (account, currency) -> (organization, debits, credits, last position).
    balances: BTreeMap<(String, String), (Uuid, Decimal, Decimal, i64)>,
    settled: SettledColumns,
    logs: LogColumns,
}

#[derive(Default)]
struct TransactionColumns {
    ids: Vec<Uuid>,
    organizations: Vec<Uuid>,
    kinds: Vec<&'static str>,
    runs: Vec<Option<Uuid>>,
    employees: Vec<Option<Uuid>>,
    wallets: Vec<Option<Uuid>>,
    times: Vec<DateTime<Utc>>,
    positions: Vec<i64>,
}

#[derive(Default)]
struct PostingColumns {
    transactions: Vec<Uuid>,
    lines: Vec<i32>,
    organizations: Vec<Uuid>,
    accounts: Vec<String>,
    directions: Vec<&'static str>,
    amounts: Vec<Decimal>,
    currencies: Vec<String>,
    positions: Vec<i64>,
}

#[derive(Default)]
struct SettledColumns {
    ids: Vec<Uuid>,
    signatures: Vec<String>,
    block_hashes: Vec<String>,
    positions: Vec<i64>,
}

#[derive(Default)]
struct LogColumns {
    transactions: Vec<Uuid>,
    positions: Vec<i64>,
    organizations: Vec<Uuid>,
    statuses: Vec<&'static str>,
    details: Vec<serde_json::Value>,
    times: Vec<DateTime<Utc>>,
}

impl Rows {
    /// Every recording, settlement and cancellation logs a row.
    fn is_empty(&self) -> bool {
        self.logs.transactions.is_empty()
    }

    fn log(&mut self, event: &RecordedEvent, status: &'static str, detail: serde_json::Value) {
        let logs = &mut self.logs;
        logs.transactions.push(event.stream_id);
        logs.positions.push(event.global_position);
        logs.organizations.push(event.organization_id);
        logs.statuses.push(status);
        logs.details.push(detail);
        logs.times.push(event.recorded_at);
    }

    fn recorded(&mut self, event: &RecordedEvent, postings: &[Posting], reference: &TransactionReference) {
        let (kind, payroll_run_id, employee_id, wallet_id) = reference_columns(reference);
        let transactions = &mut self.transactions;
        transactions.ids.push(event.stream_id);
        transactions.organizations.push(event.organization_id);
        transactions.kinds.push(kind);
        transactions.runs.push(payroll_run_id);
        transactions.employees.push(employee_id);
        transactions.wallets.push(wallet_id);
        transactions.times.push(event.recorded_at);
        transactions.positions.push(event.global_position);
        for (line, posting) in postings.iter().enumerate() {
            let direction = direction_name(posting.direction);
            let rows = &mut self.postings;
            rows.transactions.push(event.stream_id);
            rows.lines.push(line as i32);
            rows.organizations.push(event.organization_id);
            rows.accounts.push(posting.account.clone());
            rows.directions.push(direction);
            rows.amounts.push(posting.amount.amount());
            rows.currencies.push(posting.amount.currency().code().to_owned());
            rows.positions.push(event.global_position);
            self.move_balance(
                event,
                posting.account.clone(),
                posting.amount.currency().code().to_owned(),
                posting.direction,
                posting.amount.amount(),
            );
        }
        self.log(event, "pending", serde_json::json!({ "reference": to_json(reference) }));
    }

    /// Adds `amount` (negative to take it out) to an account's debits or credits.
    fn move_balance(
        &mut self,
        event: &RecordedEvent,
        account: String,
        currency: String,
        direction: Direction,
        amount: Decimal,
    ) {
        let balance = self.balances.entry((account, currency)).or_insert((
            event.organization_id,
            Decimal::ZERO,
            Decimal::ZERO,
            0,
        ));
        match direction {
            Direction::Debit => balance.1 += amount,
            Direction::Credit => balance.2 += amount,
        }
        balance.3 = event.global_position;
    }

    fn settled(&mut self, event: &RecordedEvent, signature: &str, block_hash: &str) {
        self.settled.ids.push(event.stream_id);
        self.settled.signatures.push(signature.to_owned());
        self.settled.block_hashes.push(block_hash.to_owned());
        self.settled.positions.push(event.global_position);
        self.log(event, "settled", serde_json::json!({ "signature": signature, "block_hash": block_hash }));
    }

    async fn write(self, connection: &mut PgConnection) -> Result<()> {
        let Rows { transactions, postings, balances, settled, logs } = self;
        write_transactions(connection, &transactions).await?;
        write_postings(connection, &postings).await?;
        write_balances(connection, balances).await?;
        write_settled(connection, &settled).await?;
        write_logs(connection, &logs).await
    }
}

/// New transactions, pending.
async fn write_transactions(connection: &mut PgConnection, transactions: &TransactionColumns) -> Result<()> {
    if transactions.ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
            "insert into transactions (transaction_id, organization_id, status, reference_kind, payroll_run_id, employee_id, wallet_id, \
               recorded_at, last_position) \
             select id, o, 'pending', k, r, e, w, t, p \
             from unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::uuid[], $7::timestamptz[], $8::int8[]) \
               as rows(id, o, k, r, e, w, t, p)",
        )
        .bind(&transactions.ids)
        .bind(&transactions.organizations)
        .bind(&transactions.kinds)
        .bind(&transactions.runs)
        .bind(&transactions.employees)
        .bind(&transactions.wallets)
        .bind(&transactions.times)
        .bind(&transactions.positions)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// New transactions' postings.
async fn write_postings(connection: &mut PgConnection, postings: &PostingColumns) -> Result<()> {
    if postings.transactions.is_empty() {
        return Ok(());
    }
    sqlx::query(
            "insert into postings (transaction_id, line, organization_id, account, direction, amount, currency, last_position) \
             select * from unnest($1::uuid[], $2::int4[], $3::uuid[], $4::text[], $5::text[], $6::numeric[], $7::text[], $8::int8[])",
        )
        .bind(&postings.transactions)
        .bind(&postings.lines)
        .bind(&postings.organizations)
        .bind(&postings.accounts)
        .bind(&postings.directions)
        .bind(&postings.amounts)
        .bind(&postings.currencies)
        .bind(&postings.positions)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// What the batch adds to (or takes from) each account's debits and credits.
async fn write_balances(
    connection: &mut PgConnection,
    balances: BTreeMap<(String, String), (Uuid, Decimal, Decimal, i64)>,
) -> Result<()> {
    if balances.is_empty() {
        return Ok(());
    }
    let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((account, currency), (organization, debits, credits, position)) in balances {
        columns.0.push(account);
        columns.1.push(currency);
        columns.2.push(organization);
        columns.3.push(debits);
        columns.4.push(credits);
        columns.5.push(position);
    }
    sqlx::query(&format!(
        "insert into account_balances (account, currency, organization_id, debits, credits, balance, last_position) \
         select a, c, o, d, cr, d - cr, p \
         from unnest($1::text[], $2::text[], $3::uuid[], $4::numeric[], $5::numeric[], $6::int8[]) as rows(a, c, o, d, cr, p) \
         {BALANCE_CONFLICT}"
    ))
    .bind(&columns.0)
    .bind(&columns.1)
    .bind(&columns.2)
    .bind(&columns.3)
    .bind(&columns.4)
    .bind(&columns.5)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Settlements: status, signature and block hash.
async fn write_settled(connection: &mut PgConnection, settled: &SettledColumns) -> Result<()> {
    if settled.ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
            "update transactions t set status = 'settled', signature = s, block_hash = b, last_position = p \
             from unnest($1::uuid[], $2::text[], $3::text[], $4::int8[]) as rows(id, s, b, p) where t.transaction_id = rows.id",
        )
        .bind(&settled.ids)
        .bind(&settled.signatures)
        .bind(&settled.block_hashes)
        .bind(&settled.positions)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Each status change, with its detail.
async fn write_logs(connection: &mut PgConnection, logs: &LogColumns) -> Result<()> {
    if logs.transactions.is_empty() {
        return Ok(());
    }
    sqlx::query(
            "insert into transaction_logs (transaction_id, global_position, organization_id, status, detail, recorded_at, last_position) \
             select id, p, o, s, d, t, p \
             from unnest($1::uuid[], $2::int8[], $3::uuid[], $4::text[], $5::jsonb[], $6::timestamptz[]) as rows(id, p, o, s, d, t)",
        )
        .bind(&logs.transactions)
        .bind(&logs.positions)
        .bind(&logs.organizations)
        .bind(&logs.statuses)
        .bind(&logs.details)
        .bind(&logs.times)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

#[async_trait]
impl Projection for TransactionProjection {
    fn name(&self) -> &'static str {
        "transaction"
    }

    fn schema(&self) -> &'static str {
        "transaction"
    }

    fn event_types(&self) -> Vec<&'static str> {
        <TransactionEvent as ledger_core::DomainEvent>::EVENT_TYPES.to_vec()
    }

    async fn apply(&self, connection: &mut PgConnection, event: &RecordedEvent, decoded: &AnyEvent) -> Result<()> {
        let AnyEvent::Transaction(transaction_event) = decoded else { return Ok(()) };
        let mut rows = Rows::default();
        match transaction_event {
            TransactionEvent::TransactionRecorded { postings, reference, .. } => {
                rows.recorded(event, postings, reference)
            }
            TransactionEvent::TransactionSettled { signature, block_hash } => {
                rows.settled(event, signature, block_hash)
            }
            TransactionEvent::TransactionFailed { reason } => {
                return cancelled(connection, event, "failed", reason).await;
            }
            TransactionEvent::TransactionVoided { reason } => {
                return cancelled(connection, event, "voided", reason).await;
            }
        }
        rows.write(connection).await
    }

    /// Recordings and settlements are gathered and written together; a failure or a void
    /// (which reads the postings back) first writes what was gathered before it.
    async fn apply_all(&self, connection: &mut PgConnection, events: &[(&RecordedEvent, AnyEvent)]) -> Result<()> {
        let mut rows = Rows::default();
        for (event, decoded) in events {
            match decoded {
                AnyEvent::Transaction(TransactionEvent::TransactionRecorded { postings, reference, .. }) => {
                    rows.recorded(event, postings, reference)
                }
                AnyEvent::Transaction(TransactionEvent::TransactionSettled { signature, block_hash }) => {
                    rows.settled(event, signature, block_hash)
                }
                _ => {
                    if !rows.is_empty() {
                        std::mem::take(&mut rows).write(connection).await?;
                    }
                    self.apply(connection, event, decoded).await?;
                }
            }
        }
        if !rows.is_empty() {
            rows.write(connection).await?;
        }
        Ok(())
    }
}
