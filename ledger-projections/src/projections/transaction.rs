use async_trait::async_trait;
use ledger_core::transaction::{Direction, Posting, TransactionEvent, TransactionReference};
use ledger_store::RecordedEvent;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::to_json;
use crate::decode::AnyEvent;
use crate::error::Result;
use crate::projection::Projection;

/// `transaction.transactions`, `transaction_logs` (each status change), `postings` and
/// `account_balances`.
#[derive(Debug, Clone, Copy)]
pub struct TransactionProjection;

/// Adds (`sign` 1) or takes out (`sign` -1) postings from the account balances.
async fn move_balances(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    postings: &[(String, String, Decimal, String)],
    sign: Decimal,
) -> Result<()> {
    for (account, direction, amount, currency) in postings {
        let (debit, credit) =
            if direction == "debit" { (*amount * sign, Decimal::ZERO) } else { (Decimal::ZERO, *amount * sign) };
        sqlx::query(
            "insert into account_balances (account, currency, organization_id, debits, credits, balance, last_position) \
             values ($1, $2, $3, $4, $5, $4 - $5, $6) \
             on conflict (account, currency) do update set debits = account_balances.debits + excluded.debits, \
               credits = account_balances.credits + excluded.credits, \
               balance = account_balances.balance + excluded.debits - excluded.credits, last_position = excluded.last_position",
        )
        .bind(account)
        .bind(currency)
        .bind(event.organization_id)
        .bind(debit)
        .bind(credit)
        .bind(event.global_position)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

async fn log(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    status: &str,
    detail: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "insert into transaction_logs (transaction_id, global_position, organization_id, status, detail, recorded_at, last_position) \
         values ($1, $2, $3, $4, $5, $6, $2)",
    )
    .bind(event.stream_id)
    .bind(event.global_position)
    .bind(event.organization_id)
    .bind(status)
    .bind(detail)
    .bind(event.recorded_at)
    .execute(connection)
    .await?;
    Ok(())
}

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

async fn recorded(
    connection: &mut PgConnection,
    event: &RecordedEvent,
    postings: &[Posting],
    reference: &TransactionReference,
) -> Result<()> {
    let (kind, payroll_run_id, employee_id, wallet_id) = reference_columns(reference);
    sqlx::query(
        "insert into transactions (transaction_id, organization_id, status, reference_kind, payroll_run_id, employee_id, wallet_id, recorded_at, last_position) \
         values ($1, $2, 'pending', $3, $4, $5, $6, $7, $8)",
    )
    .bind(event.stream_id)
    .bind(event.organization_id)
    .bind(kind)
    .bind(payroll_run_id)
    .bind(employee_id)
    .bind(wallet_id)
    .bind(event.recorded_at)
    .bind(event.global_position)
    .execute(&mut *connection)
    .await?;
    let mut rows = Vec::with_capacity(postings.len());
    for (line, posting) in postings.iter().enumerate() {
        let direction = match posting.direction {
            Direction::Debit => "debit",
            Direction::Credit => "credit",
        };
        sqlx::query(
            "insert into postings (transaction_id, line, organization_id, account, direction, amount, currency, last_position) \
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(event.stream_id)
        .bind(line as i32)
        .bind(event.organization_id)
        .bind(&posting.account)
        .bind(direction)
        .bind(posting.amount.amount())
        .bind(posting.amount.currency().code())
        .bind(event.global_position)
        .execute(&mut *connection)
        .await?;
        rows.push((
            posting.account.clone(),
            direction.to_owned(),
            posting.amount.amount(),
            posting.amount.currency().code().to_owned(),
        ));
    }
    move_balances(connection, event, &rows, Decimal::ONE).await?;
    log(connection, event, "pending", serde_json::json!({ "reference": to_json(reference) })).await
}

/// A failed or voided transaction no longer counts in the balances.
async fn cancelled(connection: &mut PgConnection, event: &RecordedEvent, status: &str, reason: &str) -> Result<()> {
    let rows: Vec<(String, String, Decimal, String)> = sqlx::query_as(
        "select account, direction, amount, currency from postings where transaction_id = $1 order by line",
    )
    .bind(event.stream_id)
    .fetch_all(&mut *connection)
    .await?;
    move_balances(connection, event, &rows, Decimal::NEGATIVE_ONE).await?;
    sqlx::query(
        "update transactions set status = $2, failure_reason = $3, last_position = $4 where transaction_id = $1",
    )
    .bind(event.stream_id)
    .bind(status)
    .bind(reason)
    .bind(event.global_position)
    .execute(&mut *connection)
    .await?;
    log(connection, event, status, serde_json::json!({ "reason": reason })).await
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
        match transaction_event {
            TransactionEvent::TransactionRecorded { postings, reference, .. } => {
                recorded(connection, event, postings, reference).await
            }
            TransactionEvent::TransactionSettled { signature, block_hash } => {
                sqlx::query("update transactions set status = 'settled', signature = $2, block_hash = $3, last_position = $4 where transaction_id = $1")
                    .bind(event.stream_id)
                    .bind(signature)
                    .bind(block_hash)
                    .bind(event.global_position)
                    .execute(&mut *connection)
                    .await?;
                log(
                    connection,
                    event,
                    "settled",
                    serde_json::json!({ "signature": signature, "block_hash": block_hash }),
                )
                .await
            }
            TransactionEvent::TransactionFailed { reason } => cancelled(connection, event, "failed", reason).await,
            TransactionEvent::TransactionVoided { reason } => cancelled(connection, event, "voided", reason).await,
        }
    }
}
