//! Settling a run's payments with what the payout rail reported, a batch of transactions
//! per append; the next batch is read while one is appended.

use std::collections::HashMap;

use ledger_codec::stream_append;
use ledger_core::Aggregate;
use ledger_core::ids::TransactionId;
use ledger_core::payroll::ItemStatus;
use ledger_core::transaction::{LedgerTransaction, TransactionAggregate, TransactionCommand, TransactionStatus};
use ledger_store::StreamAppend;
use uuid::Uuid;

use super::{BATCH_ATTEMPTS_MAX, load_many, load_run};
use crate::context::Context;
use crate::error::Result;
use crate::ledger::{KeyUse, Ledger, Loaded};
use crate::retry::Attempts;

/// The payout rail's confirmation of one payment: its signature and the block it landed in.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub signature: String,
    pub block_hash: String,
}

type Transactions = HashMap<Uuid, Loaded<Option<LedgerTransaction>>>;

/// Settles every still-pending payment of a run with what `confirm` says the rail reported.
/// Returns how many were settled now.
#[tracing::instrument(name = "settle", skip_all, fields(%run_id))]
pub async fn settle_run(
    ledger: &Ledger,
    context: &Context,
    run_id: Uuid,
    confirm: impl Fn(TransactionId) -> Settlement,
) -> Result<u64> {
    let paid: Vec<Uuid> = load_run(ledger, context, run_id)
        .await?
        .state
        .items
        .values()
        .filter_map(|item| match item.status {
            ItemStatus::Paid { transaction_id } => Some(transaction_id.as_uuid()),
            _ => None,
        })
        .collect();
    let batches: Vec<&[Uuid]> = paid.chunks(ledger.pay_batch_items()).collect();
    let (mut settled, mut read_ahead) = (0, None);
    for (index, batch) in batches.iter().enumerate() {
        let next = batches.get(index + 1).copied();
        let mut attempts = Attempts::up_to(BATCH_ATTEMPTS_MAX);
        let (count, next_read) = loop {
            // Another settler (or a failure, a void) changed one of them: read again.
            let outcome = settle_batch(ledger, context, batch, next, read_ahead.take(), &confirm).await;
            if !attempts.retry(&outcome) {
                break outcome?;
            }
        };
        settled += count;
        read_ahead = next_read;
    }
    Ok(settled)
}

/// Settles the still-pending transactions of `batch` in one append (`read` if it was read
/// ahead); returns how many, and the `next` batch's transactions, read meanwhile.
async fn settle_batch(
    ledger: &Ledger,
    context: &Context,
    batch: &[Uuid],
    next: Option<&[Uuid]>,
    read: Option<Transactions>,
    confirm: &impl Fn(TransactionId) -> Settlement,
) -> Result<(u64, Option<Transactions>)> {
    let organization_id = context.organization_id();
    let transactions = match read {
        Some(read) => read,
        None => load_many::<TransactionAggregate>(ledger, organization_id, batch).await?,
    };
    let streams = decide_settlements(organization_id, batch, &transactions, confirm)?;
    if streams.is_empty() {
        return Ok((0, None));
    }
    let count = streams.len() as u64;
    // The next batch's transactions are read while this one is appended (a first guess: the
    // append checks their versions).
    let read_next = async { load_many::<TransactionAggregate>(ledger, organization_id, next?).await.ok() };
    let (appended, next_read) = tokio::join!(ledger.append(context, streams, KeyUse::Without), read_next);
    appended?;
    Ok((count, next_read))
}

/// The settlement of each still-pending transaction of `batch`. Pure.
fn decide_settlements(
    organization_id: Uuid,
    batch: &[Uuid],
    transactions: &Transactions,
    confirm: &impl Fn(TransactionId) -> Settlement,
) -> Result<Vec<StreamAppend>> {
    let mut streams = Vec::new();
    for id in batch {
        let Some(Loaded { state: Some(transaction), version }) = transactions.get(id) else { continue };
        if transaction.status != TransactionStatus::Pending {
            continue;
        }
        let confirmation = confirm(transaction.id);
        let settle =
            TransactionCommand::Settle { signature: confirmation.signature, block_hash: confirmation.block_hash };
        let events = TransactionAggregate::decide(&Some(transaction.clone()), settle)?;
        streams.push(stream_append::<TransactionAggregate>(organization_id, *id, *version, &events));
    }
    Ok(streams)
}
